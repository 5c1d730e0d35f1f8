"""The locustfile: its pure split maths in-process, and a short headless run in a subprocess
(locust monkey-patches with gevent on import, so it never runs inside pytest's process)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.split import SplitTally, ZipfSampler, format_summary, parse_weights, split_summary
from runtime.stack import GatewayProcess
from tests.conftest import require

LOCUSTFILE = Path(__file__).resolve().parents[2] / "bench" / "locustfile.py"


def test_zipf_is_skewed_and_bounded() -> None:
    z = ZipfSampler(1000, 1.1, seed=1)
    draws = Counter(z.draw() for _ in range(20_000))
    assert min(draws) >= 1 and max(draws) <= 1000
    top = sum(c for _, c in draws.most_common(10))
    assert top > 0.3 * 20_000          # ten units out of 1000 send a third of the traffic
    flat = ZipfSampler(1000, 0.0, seed=1)
    uniform = Counter(flat.draw() for _ in range(20_000))
    assert sum(c for _, c in uniform.most_common(10)) < 0.03 * 20_000


def test_split_summary_counts_units_once() -> None:
    t = SplitTally()
    for i in range(1000):
        t.add("a" if i % 2 else "b", f"u{i}")
    for _ in range(5000):                 # one heavy unit: skews requests, not units
        t.add("a", "u1")
    s = split_summary(t, parse_weights("a=50,b=50"), alpha=0.001)
    assert s["units"] == {"a": 500, "b": 500} and s["srm_p_value"] == pytest.approx(1.0)
    assert s["request_shares"]["a"] > 0.9 and not s["srm_flagged"]
    assert "SRM chi-square on distinct units" in format_summary(s)


def test_split_summary_flags_srm_and_broken_stickiness() -> None:
    t = SplitTally()
    for i in range(1000):
        t.add("a" if i % 10 else "b", f"u{i}")
    t.add("b", "u1")                      # u1 answered by a and by b
    s = split_summary(t, {"a": 1, "b": 1}, alpha=0.001)
    assert s["srm_flagged"] and s["units_in_several_variants"] == 1
    merged = SplitTally()
    merged.merge(t.drain())
    assert sum(merged.requests.values()) == 1001 and not t.requests


def test_parse_weights_rejects_nonsense() -> None:
    assert parse_weights("a=90, b=10") == {"a": 90.0, "b": 10.0}
    with pytest.raises(ValueError):
        parse_weights("")


def test_locust_headless(gateway: GatewayProcess, tmp_path: Path) -> None:
    require(importlib.util.find_spec("locust") is not None, "locust is not installed")
    prefix = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "-H", gateway.url, "--headless",
         "-u", "4", "-r", "4", "-t", "3s", "--csv", str(prefix), "--only-summary",
         "--units", "5000", "--v2-share", "0.5", "--srm-fail"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s = json.loads(Path(f"{prefix}_split.json").read_text())
    assert set(s["requests"]) == {"a", "b"} and sum(s["requests"].values()) > 50
    assert s["units_in_several_variants"] == 0 and not s["unexpected_variants"]
    assert "SRM chi-square" in proc.stdout + proc.stderr
    stats = Path(f"{prefix}_stats.csv").read_text()
    assert "/v1/infer" in stats and "/v2/models/[model]/infer" in stats
