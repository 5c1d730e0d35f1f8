"""``python -m features`` commands, in process, against the fixture repos."""

from __future__ import annotations

import math

from _features_fixture import MISSING_ID
from features.cli import main


def test_get_prints_names_values_and_flags(redis_repo, capsys):
    ws, _, frame = redis_repo
    assert main(["get", "--workdir", str(ws.path), "--entity", "user_id=3"]) == 0
    out = capsys.readouterr().out
    assert "missing_entity=False" in out and "defaulted=False" in out
    row = frame[frame.user_id == 3].iloc[0]
    line = next(x for x in out.splitlines() if x.strip().startswith("sessions_30d"))
    assert math.isclose(float(line.split()[1]), float(row.sessions_30d), rel_tol=1e-6)


def test_get_missing_and_bad_entity(sqlite_repo, capsys):
    ws, _, _ = sqlite_repo
    assert main(["get", "--workdir", str(ws.path), "--entity", f"user_id={MISSING_ID}"]) == 0
    assert "missing_entity=True" in capsys.readouterr().out
    assert main(["get", "--workdir", str(ws.path), "--entity", "user=3"]) == 2
    assert "user_id" in capsys.readouterr().err


def test_ping_redis(own_redis, capsys):
    assert main(["ping-redis", "--redis-url", own_redis.url]) == 0
    assert main(["ping-redis", "--redis-url", "redis://127.0.0.1:1/0"]) == 1
