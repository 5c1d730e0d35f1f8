"""`python -m router assign`: the gateway's answers, and a start-up an operator does not wait on
(no Redis client, no scipy: `router/__init__.py` imports RouterService on first use)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

from router import default_experiments
from router.assign import CompiledExperiment
from router.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_assign_matches_the_router() -> None:
    units = [f"user-{i}" for i in range(200)]
    out = io.StringIO()
    assert main(["assign", "--experiment", "clf-demo"], io.StringIO("\n".join(units) + "\n"), out) == 0
    exp = CompiledExperiment(default_experiments()[0])
    assert out.getvalue().splitlines() == [f"{u}\t{exp.assign(u).variant}" for u in units]


def test_unknown_experiment_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "router", "assign", "--experiment", "nope"], cwd=ROOT,
                          input="u\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no experiment 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def _timed(code: str, stdin: str = "") -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=60)
    return time.perf_counter() - t0, proc


def test_assign_starts_fast() -> None:
    """Within 3x the floor of a Python that imports only the assignment code; importing scipy
    and redis (what `import router` cost before) was ~10x that floor here."""
    run = ("import sys; from router.cli import main; rc = main(['assign', '--experiment', 'clf-demo']); "
           "print('HEAVY' if {'scipy', 'redis'} & set(sys.modules) else 'LIGHT')")
    floor = min(_timed("import router.assign, router.config")[0] for _ in range(3))
    runs = [_timed(run, "u1\nu2\n") for _ in range(3)]
    for _, proc in runs:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == "LIGHT", proc.stdout
    best = min(t for t, _ in runs)
    print(f"\nrouter assign: {best * 1e3:.0f} ms; import floor {floor * 1e3:.0f} ms")
    assert best < 3 * floor, (best, floor)
