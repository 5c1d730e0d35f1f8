"""A resolved `ViewSpec` kept beside the repo, so that a command-line read need not import Feast.

Importing Feast and reading its registry take seconds; an operator's `python -m features get`
should answer in well under one. The spec read from the registry is written to
`<repo>/.infergate-viewspec.json`, keyed by the bytes of `feature_store.yaml` and the size and
modification time of the registry file it names; any change to either (an `apply`, an edited
config) makes the entry stale and the next read goes through Feast again. A registry that is
not a local file (SQL, S3, ...) is never cached. Only the command-line tool uses it; the
gateway reads the registry at start-up, where seconds do not matter.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import yaml

from features.spec import FeatureSpec, JoinKey, ViewSpec

__all__ = ["load", "store", "CACHE_NAME"]

CACHE_NAME = ".infergate-viewspec.json"


def _key(repo: Path, view: str | None) -> str | None:
    """What the cached spec depends on, or None when it cannot be told without Feast."""
    cfg_path = repo / "feature_store.yaml"
    try:
        raw = cfg_path.read_bytes()
        cfg = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError):
        return None
    registry = cfg.get("registry") if isinstance(cfg, dict) else None
    if isinstance(registry, dict):
        registry = registry.get("path") if registry.get("registry_type", "file") == "file" else None
    if not isinstance(registry, str) or "://" in registry:
        return None
    reg = Path(registry) if os.path.isabs(registry) else repo / registry
    try:
        st = reg.stat()
    except OSError:
        return None
    h = hashlib.sha256(raw)
    h.update(f"{reg.resolve()}|{st.st_size}|{st.st_mtime_ns}|{view}".encode())
    return h.hexdigest()


def load(repo: str | Path, view: str | None = None) -> ViewSpec | None:
    """The cached spec of `view` for the repo, or None when absent or stale."""
    repo = Path(repo)
    key = _key(repo, view)
    if key is None:
        return None
    try:
        doc = json.loads((repo / CACHE_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != key:
        return None
    s = doc["spec"]
    return ViewSpec(**{**s, "features": tuple(FeatureSpec(**f) for f in s["features"]),
                       "join_keys": tuple(JoinKey(**k) for k in s["join_keys"])})


def store(repo: str | Path, view: str | None, spec: ViewSpec) -> None:
    """Remember `spec` (best effort: a read-only repo just is not cached)."""
    repo = Path(repo)
    key = _key(repo, view)
    if key is None:
        return
    tmp = repo / f"{CACHE_NAME}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps({"key": key, "spec": asdict(spec)}))
        tmp.replace(repo / CACHE_NAME)
    except OSError:
        tmp.unlink(missing_ok=True)
