"""The serving peers of `bench.harness --peers`: the model they serve, the plan, the ratios,
and (RUN_SLOW=1: builds two venvs on first use, minutes) each peer answering for real."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench import stats
from bench.harness import parse_args
from bench.peers import clf_forward
from bench.peers.launch import PEERS, PeerServer
from runtime.modelgen import INPUT_WIDTH, load_weights, reference_forward
from runtime.triton import DEFAULT_REPOSITORY

SLOW = os.environ.get("RUN_SLOW") == "1"
_X = np.random.default_rng(5).standard_normal((7, INPUT_WIDTH)).astype(np.float32)


def test_the_peers_serve_the_demo_models_weights_and_forward() -> None:
    weights = clf_forward.load(str(DEFAULT_REPOSITORY / "clf" / "1" / "weights.npz"))
    got = clf_forward.forward(weights, _X)
    assert got.dtype == np.float32 and got.shape == (7, 4)
    np.testing.assert_allclose(got, reference_forward(load_weights(1), _X), rtol=1e-5, atol=1e-6)


def test_peers_option() -> None:
    assert parse_args([]).peers == ()
    assert parse_args(["--peers"]).peers == ("mlserver", "kserve")
    assert parse_args(["--peers", "kserve"]).peers == ("kserve",)
    with pytest.raises(SystemExit):
        parse_args(["--peers", "ray"])
    assert {p.venv.parent.name for p in PEERS.values()} == {".peers"}  # git-ignored
    assert (Path(__file__).resolve().parents[2] / ".gitignore").read_text().count(".peers/") == 1


def _cell(target: str, c: int, rps: float, p99: float) -> dict:
    return {"target": target, "connections": c, "rps": rps, "p99_ms": p99, "p50_ms": p99 / 3}


def test_peer_ratios() -> None:
    cells = [_cell("gateway_full", 64, 10_000, 10), _cell("peer_mlserver", 64, 2_000, 80),
             _cell("peer_kserve", 64, 2_500, 0), _cell("gateway_full", 1, 600, 2)]
    r = stats.peer_ratios(cells)
    assert r["gateway_full_over_mlserver_rps_c64"] == 5.0 and r["gateway_full_p99_over_mlserver_c64"] == 0.125
    assert r["gateway_full_over_kserve_rps_c64"] == 4.0 and r["gateway_full_p99_over_kserve_c64"] is None
    assert not any(k.endswith("_c1") for k in r)  # no peer cell at c=1
    runs = [{"cpu_us_per_request": {"gateway": 100.0, "wrk": 9.0}}, {"cpu_us_per_request": {"gateway": 80.0}},
            {"cpu_us_per_request": {"gateway": 120.0, "wrk": 11.0}}]
    assert stats.cpu_per_request(runs) == {"gateway": 100.0, "wrk": 10.0}


@pytest.mark.parametrize("name", [n if SLOW else pytest.param(n, marks=pytest.mark.skip(reason="RUN_SLOW=1"))
                                  for n in PEERS])
def test_a_peer_serves_the_same_answers_and_stops_cleanly(name: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"peer-test-{name}-"))
    server = PeerServer(PEERS[name], work, work / "server.log").start(timeout=300)
    try:
        assert server.process is not None
        pid = server.process.pid
        got = np.array(server.infer(_X.tolist()), dtype=np.float32).reshape(7, 4)
        np.testing.assert_allclose(got, reference_forward(load_weights(1), _X), rtol=1e-5, atol=1e-6)
        family = [pid] + [p.pid for p in psutil.Process(pid).children(recursive=True)]
    finally:
        server.stop()
    assert not [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
