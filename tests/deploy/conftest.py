"""Fixtures for deploy/ checks: tools (kubectl, promtool, prometheus) and rendered overlays."""

from __future__ import annotations

import pytest

from deploy.render import OVERLAYS, render
from tests.deploy.tooling import need


@pytest.fixture(scope="session")
def kubectl() -> str:
    return need("kubectl", "install kubectl (it carries kustomize)")


@pytest.fixture(scope="session")
def promtool() -> str:
    return need("promtool", "`make promtool` (Debian's prometheus package)")


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict]]:
    return {name: render(path) for name, path in OVERLAYS.items()}
