"""MLflow pyfunc wrapper around a Triton python-backend version folder (models from code).

This file is logged with every version and must stay self-contained (no infergate imports):
`mlflow.pyfunc.load_model("models:/clf@challenger")` runs the folder's own `model.py`, the very
code Triton runs, against a small stand-in for `triton_python_backend_utils`. The offline
answer therefore equals Triton's up to float rounding (batch composition can change the last
bit of a float32 matmul).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import mlflow
import numpy as np


class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _Request:
    def __init__(self, tensors):
        self._tensors = tensors

    def inputs(self):
        return list(self._tensors)


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self._outputs, self._error = list(output_tensors or []), error

    def output_tensors(self):
        return self._outputs

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


class TritonError(Exception):
    def message(self):
        return str(self)


def _shim() -> types.ModuleType:
    """What a python-backend model.py imports, enough for models that compute with numpy."""
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor, m.InferenceRequest, m.InferenceResponse = _Tensor, _Request, _Response
    m.TritonError = m.TritonModelException = TritonError
    m.get_input_tensor_by_name = lambda r, name: next((t for t in r.inputs() if t.name() == name), None)
    m.get_output_tensor_by_name = lambda r, name: next((t for t in r.output_tensors() if t.name() == name), None)
    m.get_input_config_by_name = lambda cfg, name: next((t for t in cfg.get("input", []) if t["name"] == name), None)
    m.get_output_config_by_name = lambda cfg, name: next((t for t in cfg.get("output", []) if t["name"] == name), None)
    m.triton_string_to_numpy = lambda s: np.dtype(s.removeprefix("TYPE_").lower().replace("fp", "float"))
    return m


class TritonVersionModel(mlflow.pyfunc.PythonModel):
    """Loads `artifacts["triton"]` (model.py + weights) as Triton would and calls `execute`."""

    def load_context(self, context):
        folder = Path(context.artifacts["triton"])
        sig = json.loads((folder / "signature.json").read_text())
        self._inputs = sig["inputs"]
        self._outputs = [t["name"] for t in sig["outputs"]]
        sys.modules.setdefault("triton_python_backend_utils", _shim())
        spec = importlib.util.spec_from_file_location(f"_triton_model_{id(self)}", folder / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._model = module.TritonPythonModel()
        config = {"input": [{"name": t["name"], "data_type": "TYPE_" + t["datatype"], "dims": t["dims"]}
                            for t in sig["inputs"]],
                  "output": [{"name": t["name"], "data_type": "TYPE_" + t["datatype"], "dims": t["dims"]}
                             for t in sig["outputs"]]}
        if hasattr(self._model, "initialize"):
            self._model.initialize({"model_repository": str(folder.parent), "model_version": folder.name,
                                    "model_name": folder.parent.name, "model_config": json.dumps(config)})

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, dict):
            arrays = model_input
        elif hasattr(model_input, "to_numpy"):      # a DataFrame: its columns are one tensor's
            arrays = {self._inputs[0]["name"]: model_input.to_numpy()}
        else:
            arrays = {self._inputs[0]["name"]: model_input}
        tensors = [_Tensor(t["name"], np.ascontiguousarray(arrays[t["name"]], dtype=t["datatype"]
                                                          .lower().replace("fp", "float")))
                   for t in self._inputs]
        (resp,) = self._model.execute([_Request(tensors)])
        if resp.has_error():
            raise TritonError(str(resp.error()))
        out = {t.name(): t.as_numpy() for t in resp.output_tensors()}
        return out[self._outputs[0]] if len(self._outputs) == 1 else out


mlflow.models.set_model(TritonVersionModel())
