"""Under `CI=true` a missing service fails the run; elsewhere it skips. Checked on the router's
Redis fixture (pointed at a closed port) in a child pytest, and on every other place that
used to skip for a missing service or tool (none may call pytest.skip/skipif for one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from runtime.triton import free_port

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/router/test_router_admin.py::test_auth_required"


def _run(ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["INFERGATE_TEST_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"   # nothing listens there
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_missing_redis_fails_under_ci_and_skips_elsewhere() -> None:
    ci = _run("true")
    assert ci.returncode != 0 and "1 error" in ci.stdout and "CI=true" in ci.stdout, ci.stdout[-1500:]
    local = _run(None)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-1500:]


def test_no_test_skips_for_a_missing_service_on_its_own() -> None:
    """Skips left: RUN_SLOW variants (not a missing service). Anything else goes through
    tests/conftest.py:missing()/require()."""
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"pytest\.(skip\(|importorskip|mark\.skipif|mark\.skip\()", line) and "RUN_SLOW" not in line \
                    and path not in (ROOT / "tests" / "conftest.py", Path(__file__).resolve()):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders
