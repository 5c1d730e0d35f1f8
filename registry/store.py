"""MLflow Model Registry as the store of record (the only module that talks to MLflow).

A registered version is a pyfunc model whose artifact `triton/` is the Triton python-backend
version folder (model.py, weights, signature.json). MLflow's own errors are translated here:
unknown names become `NotFound`, anything that looks like a dead server or database becomes
`RegistryUnavailable`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from registry.errors import BadInput, NotFound, RegistryUnavailable
from registry.settings import EXPERIMENT, artifact_root, mlflow_uri, quiet_mlflow
from registry.signature import Signature

T = TypeVar("T")
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
TRITON_ARTIFACT = "triton"
_UNREACHABLE = ("NewConnectionError", "Max retries", "Connection refused", "timed out", "OperationalError")


@dataclass(frozen=True)
class VersionRef:
    """One registered version, as far as the lifecycle cares."""

    model: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "run_id": self.run_id,
                "aliases": list(self.aliases), "tags": self.tags}


class ModelStore:
    """Register, resolve and fetch versions; move aliases."""

    def __init__(self, uri: str | None = None) -> None:
        quiet_mlflow()
        import mlflow
        from mlflow.tracking import MlflowClient
        self.uri = uri or mlflow_uri()
        self._mlflow = mlflow
        if self.uri.startswith(("postgresql", "mysql", "mssql")):
            self._probe_database()
        self.client = self._call("open the registry",
                                 lambda: MlflowClient(tracking_uri=self.uri, registry_uri=self.uri))

    def _probe_database(self, timeout_s: int = 3) -> None:
        """MLflow retries a dead database for ~100 s before it says so; one quick try first."""
        import sqlalchemy
        args = {"connect_timeout": timeout_s} if self.uri.startswith("postgresql") else {}
        engine = sqlalchemy.create_engine(self.uri, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect():
                pass
        except Exception as exc:
            raise RegistryUnavailable(f"registry database {_redact(self.uri)} unreachable: "
                                      f"{type(exc).__name__}: {_first_line(str(exc))}") from None
        finally:
            engine.dispose()

    def __repr__(self) -> str:
        return f"<ModelStore {self.uri}>"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from mlflow.exceptions import MlflowException
        try:
            return fn()
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise NotFound(f"{what}: {_first_line(exc.message)}") from None
            if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
                raise BadInput(f"{what}: {_first_line(exc.message)}") from None
            text = str(exc)
            how = "unreachable" if any(k in text for k in _UNREACHABLE) else "failed"
            raise RegistryUnavailable(f"{what}: MLflow at {_redact(self.uri)} {how}: {_first_line(text)}") from exc
        except (BadInput, NotFound):
            raise
        except Exception as exc:  # connection refused, database down, timeouts: one message
            raise RegistryUnavailable(f"{what}: MLflow at {_redact(self.uri)} unreachable: "
                                      f"{type(exc).__name__}: {_first_line(str(exc))}") from exc

    # -- writing -------------------------------------------------------------------------

    def register(self, model: str, folder: Path, signature: Signature, alias: str | None = None,
                 tags: dict[str, str] | None = None) -> VersionRef:
        """Log `folder` (a Triton version folder) as a pyfunc model and register a new version."""
        mlflow = self._mlflow
        from mlflow.models import ModelSignature
        from mlflow.types import Schema
        from mlflow.types import TensorSpec as MLTensorSpec

        def schema(specs):
            return Schema([MLTensorSpec(t.numpy_dtype, (-1, *t.dims), t.name) for t in specs])
        sig = ModelSignature(inputs=schema(signature.inputs), outputs=schema(signature.outputs))

        with tempfile.TemporaryDirectory(prefix="infergate-register-") as tmp:
            staged = Path(tmp) / TRITON_ARTIFACT
            shutil.copytree(folder, staged, ignore=shutil.ignore_patterns("__pycache__", "registry.json"))
            (staged / "signature.json").write_text(json.dumps(signature.to_dict(), indent=1))

            def log() -> VersionRef:
                mlflow.set_tracking_uri(self.uri)
                mlflow.set_registry_uri(self.uri)
                exp = self.client.get_experiment_by_name(EXPERIMENT)
                exp_id = exp.experiment_id if exp else self.client.create_experiment(
                    EXPERIMENT, artifact_location=artifact_root(self.uri))
                with mlflow.start_run(experiment_id=exp_id, run_name=f"register-{model}") as run:
                    info = mlflow.pyfunc.log_model(
                        name="model", python_model=str(PYFUNC_CODE),
                        artifacts={TRITON_ARTIFACT: str(staged)}, signature=sig,
                        pip_requirements=["numpy", "mlflow-skinny"])
                    mv = mlflow.register_model(info.model_uri, model, tags=tags or {})
                    del run
                if alias:
                    self.client.set_registered_model_alias(model, alias, mv.version)
                return self._ref(self.client.get_model_version(model, mv.version))
            # MLflow prints "View run ... at URL" on stdout: keep stdout for our answer.
            with contextlib.redirect_stdout(sys.stderr):
                return self._call(f"register {model}", log)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._call(f"alias {model}@{alias}",
                   lambda: self.client.set_registered_model_alias(model, alias, version))

    def set_tag(self, ref: VersionRef, key: str, value: str) -> None:
        self._call(f"tag {ref.model}/{ref.version}",
                   lambda: self.client.set_model_version_tag(ref.model, ref.version, key, value))

    # -- reading -------------------------------------------------------------------------

    def resolve(self, model: str, alias: str | None = None, version: str | None = None) -> VersionRef:
        """A version by alias or number; `NotFound` names what is unknown."""
        if not model:
            raise BadInput("--model: must be a non-empty name")
        self._call(f"model {model!r}", lambda: self.client.get_registered_model(model))
        if version:
            if not str(version).isdigit():
                raise BadInput(f"--version: must be a version number, got {version!r}")
            return self._ref(self._call(f"version {model}/{version}",
                                        lambda: self.client.get_model_version(model, str(version))))
        if alias:
            try:
                return self._ref(self._call(f"alias {model}@{alias}",
                                            lambda: self.client.get_model_version_by_alias(model, alias)))
            except BadInput as exc:   # MLflow answers INVALID_PARAMETER_VALUE for an unknown alias
                raise NotFound(exc.message) from None
        raise BadInput("give --alias or --version")

    def versions(self, model: str) -> list[VersionRef]:
        found = self._call(f"model {model!r}",
                           lambda: self.client.search_model_versions(f"name = '{model}'"))
        return sorted((self._ref(v) for v in found), key=lambda r: int(r.version))

    def aliases(self, model: str) -> dict[str, str]:
        rm = self._call(f"model {model!r}", lambda: self.client.get_registered_model(model))
        return {a: str(v) for a, v in (rm.aliases or {}).items()}

    def download(self, ref: VersionRef, dst: Path) -> Path:
        """The version's MLflow model directory (MLmodel, code, artifacts/triton/), under `dst`."""
        from mlflow.artifacts import download_artifacts
        path = Path(self._call(f"download {ref.model}/{ref.version}", lambda: download_artifacts(
            artifact_uri=ref.uri, dst_path=str(dst), tracking_uri=self.uri)))
        if not (triton_folder(path) / "model.py").is_file():
            raise BadInput(f"{ref.uri}: not a Triton version (no artifacts/{TRITON_ARTIFACT}/model.py)")
        return path

    def load_pyfunc(self, ref: VersionRef, local: Path | None = None) -> Any:
        """MLflow's pyfunc of the version (from a downloaded copy when given). A version whose
        own code fails to load is a bad version, not a registry outage."""
        from registry.errors import DeployFailed
        if local is None:
            local = self.download(ref, Path(tempfile.mkdtemp(prefix="infergate-pyfunc-")))
        try:
            return self._mlflow.pyfunc.load_model(str(local))
        except Exception as exc:
            raise DeployFailed(f"{ref.uri}: its pyfunc does not load: {type(exc).__name__}: "
                               f"{_first_line(str(exc))}") from exc

    def _ref(self, mv: Any) -> VersionRef:
        return VersionRef(mv.name, str(mv.version), mv.run_id, tuple(getattr(mv, "aliases", []) or ()),
                          dict(mv.tags or {}))


def triton_folder(model_dir: Path) -> Path:
    """Where a downloaded version keeps its Triton version folder."""
    return Path(model_dir) / "artifacts" / TRITON_ARTIFACT


def _redact(uri: str) -> str:
    """A database URI without its password."""
    import re
    return re.sub(r"://([^:/@]+):[^@]*@", lambda m: f"://{m.group(1)}:***@", uri)


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0][:300] if (text or "").strip() else "(no message)"
