"""Model control on every Triton replica (gRPC): which versions are ready, load a set, infer.

Triton's explicit model control loads versions through the model's `version_policy`: loading
with a config whose policy names {1, 3} adds 3 and keeps 1; a version left out is unloaded
once its in-flight requests are done. Re-loading with an unchanged config does nothing, so
every call here sends the policy it wants. Errors become `DeployFailed` naming the replica.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Sequence

import numpy as np

from registry.errors import DeployFailed, GatewayUnavailable
from registry.signature import Signature


class TritonReplicas:
    """The Triton replicas one gateway sends to (their gRPC addresses from `GET /admin/triton`)."""

    def __init__(self, urls: Sequence[str], timeout_s: float = 60.0) -> None:
        import tritonclient.grpc as grpcclient
        if not urls:
            raise GatewayUnavailable("the gateway reports no Triton replica")
        self.urls = tuple(urls)
        self.timeout_s = timeout_s
        self._grpc = grpcclient
        self._clients = {u: grpcclient.InferenceServerClient(u) for u in self.urls}
        self._pool = ThreadPoolExecutor(max_workers=len(self.urls), thread_name_prefix="triton-control")

    def __repr__(self) -> str:
        return f"<TritonReplicas {', '.join(self.urls)}>"

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for c in self._clients.values():
            c.close()

    def _each(self, what: str, fn: Any) -> dict[str, Any]:
        """Run fn(url, client) on every replica at once; the first failure names its replica."""
        from tritonclient.utils import InferenceServerException
        futures = {u: self._pool.submit(fn, u, c) for u, c in self._clients.items()}
        out, errors = {}, []
        for u, f in futures.items():
            try:
                out[u] = f.result()
            except InferenceServerException as exc:
                errors.append(f"{u}: {exc.message() or exc}")
        if errors:
            raise DeployFailed(f"{what}: " + "; ".join(errors))
        return out

    def ready_versions(self, model: str) -> dict[str, set[str]]:
        def index(u: str, c: Any) -> set[str]:
            rows = c.get_model_repository_index(as_json=True).get("models", [])
            return {r["version"] for r in rows if r.get("name") == model and r.get("state") == "READY"
                    and r.get("version")}
        return self._each(f"repository index of {model}", index)

    def served_signature(self, model: str) -> Signature:
        return Signature.from_triton_config(self.config(model))

    def config(self, model: str) -> dict[str, Any]:
        cfgs = self._each(f"config of {model}", lambda u, c: c.get_model_config(model, as_json=True)["config"])
        return next(iter(cfgs.values()))

    def load(self, model: str, versions: Iterable[str]) -> None:
        """Make exactly `versions` loaded on every replica; returns when each replica answered."""
        wanted = sorted({int(v) for v in versions})
        if not wanted:
            self._each(f"unload {model}", lambda u, c: c.unload_model(model, client_timeout=self.timeout_s))
            return
        cfg = dict(self.config(model))
        cfg["version_policy"] = {"specific": {"versions": wanted}}
        body = json.dumps(cfg)
        self._each(f"load {model} versions {wanted}",
                   lambda u, c: c.load_model(model, config=body, client_timeout=self.timeout_s))

    def wait_ready(self, model: str, version: str, timeout_s: float) -> float:
        """Seconds until every replica says `model` `version` is ready."""
        t0 = time.monotonic()
        while True:
            ready = self._each(f"ready {model}:{version}", lambda u, c: c.is_model_ready(model, version))
            if all(ready.values()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                late = sorted(u for u, ok in ready.items() if not ok)
                raise DeployFailed(f"{model}:{version} not ready on {late} after {timeout_s:g}s")
            time.sleep(0.05)

    def infer(self, model: str, version: str, signature: Signature, x: np.ndarray) -> dict[str, np.ndarray]:
        """The same rows through every replica: {url: first output}."""
        spec, out_name = signature.inputs[0], signature.outputs[0].name

        def call(u: str, c: Any) -> np.ndarray:
            inp = self._grpc.InferInput(spec.name, list(x.shape), spec.datatype)
            inp.set_data_from_numpy(np.ascontiguousarray(x, dtype=spec.numpy_dtype))
            res = c.infer(model, [inp], model_version=version,
                          outputs=[self._grpc.InferRequestedOutput(out_name)], client_timeout=10.0)
            return res.as_numpy(out_name)
        return self._each(f"infer {model}:{version}", call)
