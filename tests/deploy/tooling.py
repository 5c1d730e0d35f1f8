"""System tools the deploy checks need (kubectl, promtool, prometheus)."""

from __future__ import annotations

import os
import shutil

import pytest


def need(tool: str, how: str) -> str:
    """The tool's path; without it: fail under CI=true, skip elsewhere."""
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} not found: {how}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path
