"""Rendering a kustomization offline (``kubectl kustomize``) into plain objects."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEPLOY", "OVERLAYS", "RenderError", "render", "ref"]

DEPLOY = Path(__file__).resolve().parent
OVERLAYS = {name: DEPLOY / "overlays" / name for name in ("dev", "prod")}


class RenderError(RuntimeError):
    """kubectl is missing, or the kustomization does not build (kubectl's message kept)."""


def render(path: Path, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("kubectl not found (it carries kustomize): install kubectl >= 1.27")
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {path} failed: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def ref(obj: dict[str, Any]) -> str:
    """``Kind/name``: how every message names an object."""
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"
