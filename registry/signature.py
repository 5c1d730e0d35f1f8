"""A model's tensor contract: input/output names, datatypes and per-row shapes.

Read from a version folder's `signature.json`, or from the Triton `config.pbtxt` of the model
directory the folder sits in; compared with the config Triton serves, field by field, so a
version that does not fit is refused with the field named.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import BadInput

# Triton config datatypes (TYPE_FP32) and KServe v2 names (FP32) -> numpy
_NUMPY = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT8": np.int8,
          "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "BOOL": np.bool_}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str              # KServe v2 spelling: FP32, INT64...
    dims: tuple[int, ...]      # per row, without the batch dimension (-1 = any)

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(_NUMPY[self.datatype])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "dims": list(self.dims)}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "signature") -> "Signature":
        if not isinstance(doc, dict):
            raise BadInput(f"{where}: must be an object with inputs and outputs")
        parts = []
        for key in ("inputs", "outputs"):
            items = doc.get(key)
            if not isinstance(items, list) or not items:
                raise BadInput(f"{where}.{key}: must be a non-empty list")
            specs = []
            for i, t in enumerate(items):
                w = f"{where}.{key}[{i}]"
                if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
                    raise BadInput(f"{w}.name: must be a non-empty string")
                dt = _datatype(t.get("datatype", t.get("data_type")), f"{w}.datatype")
                dims = t.get("dims")
                if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                         for d in dims):
                    raise BadInput(f"{w}.dims: must be a list of integers, got {dims!r}")
                specs.append(TensorSpec(t["name"], dt, tuple(dims)))
            parts.append(tuple(specs))
        return cls(parts[0], parts[1])

    @classmethod
    def from_triton_config(cls, config: dict[str, Any]) -> "Signature":
        """From Triton's model config as JSON (`get_model_config(as_json=True)["config"]`)."""
        def specs(items: list[dict]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t["name"], _datatype(t["data_type"], t["name"]),
                                    tuple(int(d) for d in t.get("dims", []))) for t in items)
        return cls(specs(config.get("input", [])), specs(config.get("output", [])))

    @classmethod
    def from_pbtxt(cls, text: str) -> "Signature":
        """The input/output blocks of a `config.pbtxt` (the one-line-per-tensor layout)."""
        def block(key: str) -> list[dict]:
            m = re.search(rf"^{key}\s*\[(.*?)^\]", text, re.S | re.M)
            if not m:
                raise BadInput(f"config.pbtxt: no {key} block")
            out = []
            for t in re.finditer(r"\{(.*?)\}", m.group(1), re.S):
                body = t.group(1)
                name = re.search(r'name:\s*"([^"]+)"', body)
                dt = re.search(r"data_type:\s*(\w+)", body)
                dims = re.search(r"dims:\s*\[([^\]]*)\]", body)
                if not (name and dt and dims):
                    raise BadInput(f"config.pbtxt: cannot read the {key} entry {body.strip()!r}")
                out.append({"name": name.group(1), "data_type": dt.group(1),
                            "dims": [int(d) for d in dims.group(1).split(",") if d.strip()]})
            return out
        return cls.from_triton_config({"input": block("input"), "output": block("output")})

    @classmethod
    def for_folder(cls, folder: Path) -> "Signature":
        """`signature.json` in the version folder, else the model directory's config.pbtxt."""
        own = folder / "signature.json"
        if own.is_file():
            try:
                doc = json.loads(own.read_text())
            except ValueError as exc:
                raise BadInput(f"{own}: not JSON: {exc}") from None
            return cls.from_dict(doc, str(own))
        parent = folder.parent / "config.pbtxt"
        if parent.is_file():
            return cls.from_pbtxt(parent.read_text())
        raise BadInput(f"--path {folder}: no signature.json in it and no config.pbtxt beside it")

    def mismatches(self, served: "Signature", model: str) -> list[str]:
        """Where this version does not fit the model Triton serves (empty when it fits)."""
        problems = []
        for key, mine, theirs in (("inputs", self.inputs, served.inputs), ("outputs", self.outputs, served.outputs)):
            by_name = {t.name: t for t in theirs}
            for i, t in enumerate(mine):
                s = by_name.get(t.name)
                w = f"signature.{key}[{i}]"
                if s is None:
                    problems.append(f"{w}.name: {t.name!r} is not a tensor of the served model {model!r} "
                                    f"(it has {sorted(by_name)})")
                    continue
                if t.datatype != s.datatype:
                    problems.append(f"{w}.datatype: {t.name} is {t.datatype}, served model {model!r} "
                                    f"takes {s.datatype}")
                if t.dims != s.dims:
                    problems.append(f"{w}.dims: {t.name} is {list(t.dims)}, served model {model!r} "
                                    f"has {list(s.dims)}")
            missing = sorted(set(by_name) - {t.name for t in mine})
            if missing:
                problems.append(f"signature.{key}: the served model {model!r} also has {missing}")
        return problems


def _datatype(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise BadInput(f"{where}: must be a datatype such as FP32, got {raw!r}")
    dt = raw.upper().removeprefix("TYPE_")
    if dt not in _NUMPY:
        raise BadInput(f"{where}: unsupported datatype {raw!r} (supported: {sorted(_NUMPY)})")
    return dt
