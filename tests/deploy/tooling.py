"""System tools the deploy checks need (kubectl, promtool, prometheus)."""

from __future__ import annotations

import os
import shutil

import pytest


def need(tool: str, how: str) -> str:
    """The tool's path; without it: FAIL under CI=true (a CI run that skipped these checks
    would pass without checking anything), skip on a workstation."""
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} not found: {how}"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"{msg} (CI=true: a missing tool fails the run)", pytrace=False)
        pytest.skip(msg)
    return path
