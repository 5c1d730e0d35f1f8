"""Encodings of a sample (JSON columns, Arrow IPC stream, CSV) and the request's validation."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import orjson

__all__ = ["MAX_ROWS", "ARROW_TYPE", "SampleRequest", "RequestError", "parse_request",
           "to_json", "to_arrow_table", "to_arrow", "to_csv"]

MAX_ROWS = 100_000
ARROW_TYPE = "application/vnd.apache.arrow.stream"
FORMATS = ("json", "arrow")
_NAN = re.compile(r"(?<![^,\n])nan(?![^,\n])")


class RequestError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True, slots=True)
class SampleRequest:
    rows: int
    seed: int
    format: str


def _integer(doc: dict, field: str, default: int | None, lo: int, hi: int) -> int:
    v = doc.get(field, default)
    if v is None:
        raise RequestError(field, "is required")
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(field, f"must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise RequestError(field, f"must be in {lo}..{hi}, got {v}")
    return v


def parse_request(body: bytes, max_rows: int = MAX_ROWS) -> SampleRequest:
    """``{"rows": n, "seed": s, "format": "json"|"arrow"}``; ``seed`` defaults to 0, format to json."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError as exc:
        raise RequestError("body", f"invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RequestError("body", "must be a JSON object")
    unknown = sorted(set(doc) - {"rows", "seed", "format"})
    if unknown:
        raise RequestError(unknown[0], "unknown field")
    rows = _integer(doc, "rows", None, 1, max_rows)
    seed = _integer(doc, "seed", 0, 0, 2**63 - 1)
    fmt = doc.get("format", "json")
    if fmt not in FORMATS:
        raise RequestError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return SampleRequest(rows, seed, fmt)


def to_json(dataset: str, version: int | None, seed: int, columns: Sequence[str], data: np.ndarray) -> bytes:
    """Column-oriented JSON; a null is ``null`` (orjson writes NaN as null)."""
    doc: dict[str, Any] = {"dataset": dataset, "version": version, "seed": seed, "rows": int(data.shape[0]),
                           "columns": {name: np.ascontiguousarray(data[:, i]) for i, name in enumerate(columns)}}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def to_arrow_table(columns: Sequence[str], data: np.ndarray):
    import pyarrow as pa

    arrays = []
    for i in range(data.shape[1]):
        col = np.ascontiguousarray(data[:, i])
        nan = np.isnan(col)
        arrays.append(pa.array(col, type=pa.float32(), mask=nan if nan.any() else None))
    return pa.Table.from_arrays(arrays, names=list(columns))


def to_arrow(columns: Sequence[str], data: np.ndarray, metadata: dict[str, str] | None = None) -> bytes:
    """An Arrow IPC stream of one record batch; nulls are Arrow nulls."""
    import pyarrow as pa

    table = to_arrow_table(columns, data)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def to_csv(columns: Sequence[str], data: np.ndarray) -> str:
    buf = io.StringIO()
    buf.write(",".join(columns) + "\n")
    np.savetxt(buf, data, delimiter=",", fmt="%.7g")
    return _NAN.sub("", buf.getvalue())  # an empty field is a null
