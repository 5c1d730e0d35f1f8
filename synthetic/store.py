"""Versions of synthetic-data generators in the MLflow model registry.

One registered model per dataset, ``synthetic-<dataset>``; a version's files (``generator.npz``,
``generator.json``, ``report.json``, ``plots/``) are the artifacts of one run, and the alias
``published`` marks the version the gateway serves. ``publish`` refuses a version whose stored
report fails the gate. The tracking URI is ``INFERGATE_MLFLOW_URI``, by default a sqlite file
under ``<repo>/.mlflow/`` (git-ignored), with artifacts beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from synthetic.datasets import check_name
from synthetic.quality import BARS, Bars, gate_failures
from synthetic.sampler import Sampler

__all__ = ["Store", "VersionInfo", "GateFailed", "NotFound", "PUBLISHED", "PREFIX", "URI_ENV", "default_uri"]

URI_ENV = "INFERGATE_MLFLOW_URI"
PREFIX = "synthetic-"
PUBLISHED = "published"
EXPERIMENT = "synthetic"
REPORT = "report.json"
ROOT = Path(__file__).resolve().parent.parent


class NotFound(LookupError):
    """No such dataset or version in the registry."""


class GateFailed(ValueError):
    """``publish`` refused: the report fails one or more checks (listed)."""

    def __init__(self, name: str, version: int, failures: list[str]) -> None:
        super().__init__(f"{name} version {version} fails the gate: " + "; ".join(failures))
        self.failures = failures


@dataclass(frozen=True)
class VersionInfo:
    dataset: str
    version: int
    aliases: tuple[str, ...]
    tags: Mapping[str, str]
    source: str
    run_id: str | None

    def summary(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "version": self.version, "aliases": list(self.aliases),
                "c2st_auc": _num(self.tags.get("c2st_auc")), "quality": _num(self.tags.get("quality")),
                "close_fraction": _num(self.tags.get("close_fraction")), "gate": self.tags.get("gate")}


def _num(v: str | None) -> float | None:
    return None if v is None else float(v)


def default_uri(root: Path = ROOT) -> str:
    return f"sqlite:///{root / '.mlflow' / 'mlflow.db'}"


class Store:
    """The registry for synthetic versions at one tracking URI."""

    def __init__(self, uri: str | None = None, artifact_root: Path | None = None) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.uri = uri or os.environ.get(URI_ENV) or default_uri()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.artifact_root = artifact_root or (
            Path(self.uri[len("sqlite:///"):]).parent / "artifacts" if self.uri.startswith("sqlite:///")
            else ROOT / ".mlflow" / "artifacts")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def __repr__(self) -> str:
        return f"<Store {self.uri}>"

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        return self.client.create_experiment(EXPERIMENT, artifact_location=self.artifact_root.resolve().as_uri())

    # -- writing -------------------------------------------------------------------------

    def add_version(self, dataset: str, export_dir: Path, report: Mapping[str, Any],
                    history: list[dict] | None = None) -> int:
        """Log ``export_dir`` (generator files, plots) and ``report`` as a run; register it."""
        from mlflow.exceptions import MlflowException

        name = PREFIX + check_name(dataset)
        run = self.client.create_run(self._experiment_id(), run_name=f"{name}-train")
        rid = run.info.run_id
        try:
            cfg = (report.get("training") or {}).get("config") or {}
            for k, v in cfg.items():
                self.client.log_param(rid, k, v)
            self.client.log_metric(rid, "c2st_auc", float(report["c2st_auc"]))
            self.client.log_metric(rid, "sdmetrics_overall", float(report["sdmetrics"]["overall"]))
            self.client.log_metric(rid, "close_fraction", float(report["privacy"]["close_fraction"]))
            for row in history or []:
                self.client.log_metric(rid, "progress_c2st", float(row["c2st"]), step=int(row["step"]))
            with tempfile.TemporaryDirectory() as tmp:
                files = Path(tmp) / "synthetic"
                shutil.copytree(export_dir, files)
                (files / REPORT).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
                self.client.log_artifacts(rid, str(files), "synthetic")
            self.client.set_terminated(rid)
        except (Exception, KeyboardInterrupt):
            self.client.set_terminated(rid, status="FAILED")
            raise
        try:
            self.client.create_registered_model(name, description=f"Synthetic-data generator for {dataset}")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        failures = gate_failures(report)
        tags = {"c2st_auc": str(report["c2st_auc"]), "quality": str(report["sdmetrics"]["overall"]),
                "close_fraction": str(report["privacy"]["close_fraction"]),
                "gate": "failed" if failures else "passed"}
        mv = self.client.create_model_version(name, f"{run.info.artifact_uri}/synthetic", run_id=rid, tags=tags)
        return int(mv.version)

    def publish(self, dataset: str, version: int, bars: Bars = BARS) -> None:
        """Point the ``published`` alias at ``version`` if its stored report passes the gate."""
        failures = gate_failures(self.report(dataset, version), bars)
        if failures:
            raise GateFailed(PREFIX + dataset, version, failures)
        self.client.set_registered_model_alias(PREFIX + dataset, PUBLISHED, str(version))

    # -- reading -------------------------------------------------------------------------

    def _version(self, dataset: str, version: int | None, alias: str | None = None):
        from mlflow.exceptions import MlflowException

        check_name(dataset)  # also keeps quotes out of the registry's filter strings
        name = PREFIX + dataset
        try:
            if alias is not None:
                return self.client.get_model_version_by_alias(name, alias)
            if version is None:
                found = self.client.search_model_versions(f"name = '{name}'")
                if not found:
                    raise NotFound(f"dataset: no versions of {dataset!r}")
                return max(found, key=lambda v: int(v.version))
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            what = f"alias {alias!r}" if alias else f"version {version}"
            raise NotFound(f"dataset: {dataset!r} has no {what}") from exc

    def info(self, dataset: str, version: int | None = None, alias: str | None = None) -> VersionInfo:
        mv = self._version(dataset, version, alias)
        return VersionInfo(dataset, int(mv.version), tuple(mv.aliases or ()), dict(mv.tags or {}),
                           mv.source, mv.run_id)

    def files(self, dataset: str, version: int | None = None, alias: str | None = None,
              dest: Path | None = None) -> tuple[VersionInfo, Path]:
        """Download a version's files; returns its info and the local directory."""
        import mlflow.artifacts

        info = self.info(dataset, version, alias)
        dest = Path(dest or tempfile.mkdtemp(prefix=f"synthetic-{dataset}-"))
        path = mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=str(dest),
                                                   tracking_uri=self.uri)
        return info, Path(path)

    def report(self, dataset: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            _, path = self.files(dataset, version, alias, Path(tmp))
            return json.loads((path / REPORT).read_text())

    def sampler(self, dataset: str, version: int | None = None, alias: str | None = None) -> tuple[VersionInfo, Sampler]:
        with tempfile.TemporaryDirectory() as tmp:
            info, path = self.files(dataset, version, alias, Path(tmp))
            return info, Sampler.load(path)

    def datasets(self) -> list[str]:
        models = self.client.search_registered_models(f"name LIKE '{PREFIX}%'")
        return sorted(m.name[len(PREFIX):] for m in models)

    def versions(self, dataset: str) -> list[VersionInfo]:
        check_name(dataset)
        found = self.client.search_model_versions(f"name = '{PREFIX + dataset}'")
        return sorted((VersionInfo(dataset, int(v.version), tuple(v.aliases or ()), dict(v.tags or {}),
                                   v.source, v.run_id) for v in found), key=lambda v: v.version)

    def published(self) -> list[VersionInfo]:
        out = []
        for ds in self.datasets():
            try:
                out.append(self.info(ds, alias=PUBLISHED))
            except NotFound:
                pass
        return out
