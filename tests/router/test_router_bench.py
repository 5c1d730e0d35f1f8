"""The benchmark script runs and reports a plausible number (a smoke test, not a timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "router.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench/router_bench.py"), "--units", "5000", "--repeat", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    printed = json.loads(res.stdout)
    assert json.loads(out.read_text()) == printed
    assert 0 < printed["ns_per_decision"] < 100_000
