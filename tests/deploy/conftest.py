"""Fixtures for deploy/ checks: tools (kubectl, promtool, prometheus) and rendered overlays."""

from __future__ import annotations

import os
import shutil

import pytest

from deploy.render import OVERLAYS, render


def need(tool: str, how: str) -> str:
    """The tool's path; without it: fail under CI=true, skip elsewhere."""
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} not found: {how}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def kubectl() -> str:
    return need("kubectl", "install kubectl (it carries kustomize)")


@pytest.fixture(scope="session")
def promtool() -> str:
    return need("promtool", "`make promtool` (Debian's prometheus package)")


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict]]:
    return {name: render(path) for name, path in OVERLAYS.items()}
