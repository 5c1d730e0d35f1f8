"""``python -m features`` commands against the fixture repos: in process, and `get` as an
operator runs it (a fresh process: < 1 s once the spec is cached, no Feast import)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

from _features_fixture import MISSING_ID
from features.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_get_prints_names_values_and_flags(redis_repo, capsys):
    ws, _, frame = redis_repo
    assert main(["get", "--workdir", str(ws.path), "--entity", "user_id=3"]) == 0
    out = capsys.readouterr().out
    assert "missing_entity=no" in out and "defaulted=no" in out and "reader   redis (fast reader)" in out
    assert "<" not in out, "a repr leaked into the table"
    row = frame[frame.user_id == 3].iloc[0]
    line = next(x for x in out.splitlines() if x.strip().startswith("sessions_30d"))
    assert math.isclose(float(line.split()[1]), float(row.sessions_30d), rel_tol=1e-6)


def test_get_missing_and_bad_entity(sqlite_repo, capsys):
    ws, _, _ = sqlite_repo
    assert main(["get", "--workdir", str(ws.path), "--entity", f"user_id={MISSING_ID}"]) == 0
    assert "missing_entity=yes" in capsys.readouterr().out
    assert main(["get", "--workdir", str(ws.path), "--entity", "user=3"]) == 2
    assert "user_id" in capsys.readouterr().err


def test_ping_redis(own_redis, capsys):
    assert main(["ping-redis", "--redis-url", own_redis.url]) == 0
    assert main(["ping-redis", "--redis-url", "redis://127.0.0.1:1/0"]) == 1


def test_get_json(redis_repo, capsys):
    ws, _, frame = redis_repo
    assert main(["get", "--workdir", str(ws.path), "--entity", "user_id=3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["entity"] == {"user_id": 3} and doc["missing_entity"] is False and doc["defaulted"] is False
    assert math.isclose(doc["features"]["sessions_30d"], float(frame[frame.user_id == 3].iloc[0].sessions_30d),
                        rel_tol=1e-6)


def _timed(code: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return time.perf_counter() - t0, proc


def test_get_answers_fast_without_importing_feast(redis_repo):
    """The second `get` in a fresh process reads the cached spec: Feast is never imported, and
    the whole command costs at most 3x the floor of starting Python with the reader's imports
    (Feast's import alone is ~10x that floor here). The absolute bar (< 1 s) is in the README."""
    ws, _, _ = redis_repo
    get = ("import sys; from features.cli import main; rc = main(['get', '--workdir', %r, '--entity', "
           "'user_id=3', '--json']); assert rc == 0; print('FEAST' if 'feast' in sys.modules else 'NOFEAST')"
           % str(ws.path))
    _timed(get)   # the first read may go through Feast and caches the spec
    floor = min(_timed("import features.cli, features.factory, features.redis_reader")[0] for _ in range(3))
    runs = [_timed(get) for _ in range(3)]
    for _, proc in runs:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().endswith("NOFEAST"), proc.stdout
    best = min(t for t, _ in runs)
    print(f"\nfeatures get: {best * 1e3:.0f} ms; import floor {floor * 1e3:.0f} ms")
    assert best < 3 * floor, (best, floor)
