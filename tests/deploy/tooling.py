"""System tools the deploy checks need (kubectl, promtool, prometheus)."""

from __future__ import annotations

import shutil

from tests.conftest import missing


def need(tool: str, how: str) -> str:
    """The tool's path; without it the test fails under CI=true and skips on a workstation
    (`tests.conftest.missing`, the one rule for every missing service or tool)."""
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} not found: {how}")
    return path
