"""wrk + the Lua script against a tiny local server, and the whole harness with 1 s cells."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from bench import wrk as wrkmod

from tests.conftest import require


@pytest.fixture
def needs_wrk_fixture() -> None:
    require(wrkmod.wrk_binary() is not None, "wrk is not installed (make wrk)")


needs_wrk = pytest.mark.usefixtures("needs_wrk_fixture")


class _Echo(BaseHTTPRequestHandler):
    """Answers like the gateway: the variant follows the unit id's counter
    parity, so both variants appear; every 7th request is a 503."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        n = int(body["unit_id"].rsplit("-", 1)[1])
        status = 503 if n % 7 == 0 else 200
        out = json.dumps({"variant": "a" if n % 2 else "b"}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/infer"
    server.shutdown()
    server.server_close()


@needs_wrk
def test_lua_counts_variants_across_threads(echo_url: str) -> None:
    cmd = wrkmod.wrk_command(echo_url, "v1", 4, 1, threads=2, tag="t")
    r = wrkmod.run_wrk(cmd, timeout_s=30)
    assert r.requests > 50 and r.requests == r.responses
    assert r.non2xx > 0
    assert sum(r.variants.values()) + r.non2xx == r.responses
    assert set(r.variants) == {"a", "b"}
    assert 0 <= r.unanswered <= 4 + 2
    assert r.cpu_s > 0


@needs_wrk
def test_harness_smoke(tmp_path: Path) -> None:
    from bench.harness import main

    out = tmp_path / "results"
    rc = main(["--duration", "1", "--warmup", "0", "--runs", "1", "--connections", "1,16",
               "--targets", "triton_direct,gateway_nofeatures", "--out", str(out), "--no-plots"])
    doc = json.loads((out / "latest.json").read_text())
    assert rc == 0, doc["correctness"]
    assert [(c["target"], c["connections"]) for c in doc["cells"]] == [
        ("triton_direct", 1), ("triton_direct", 16), ("gateway_nofeatures", 1), ("gateway_nofeatures", 16)]
    for cell in doc["cells"]:
        assert cell["rps"] > 0 and cell["p50_ms"] > 0 and len(cell["runs"]) == 1
        assert cell["rps_spread"] is None   # one run: nothing to disagree with
        assert cell["cpu_s"]["triton"] > 0 and "wrk" in cell["cpu_s"]
    gw = doc["cells"][3]
    assert gw["avg_batch"] >= 1 and gw["cpu_s"]["gateway"] > 0
    assert set(gw["runs"][0]["split"]["shares"]) == {"a", "b"}
    assert doc["ratios"]["gateway_nofeatures_over_direct_rps_c16"] > 0
    # each side at its own queue delay (bench/queue_delay.py): direct the repository's, the gateway 0
    assert [c["triton_queue_delay_us"] for c in doc["cells"]] == [100, 100, 0, 0]
    assert doc["plan"]["triton_queue_delay_us"] == {"direct": 100, "gateway": 0}
    assert "gateway_over_direct_rps_c64" in doc["ratios"] and doc["correctness"]["ok"]
    assert doc["unsteady"] == []
    assert len(list(out.glob("bench-*.json"))) == 1


@needs_wrk
def test_harness_interleaved(tmp_path: Path) -> None:
    """--interleave: the two targets run by run at each concurrency, each at its own queue delay
    (a reload between them), cells and ratios as in the sequential matrix."""
    from bench.harness import main

    out = tmp_path / "results"
    rc = main(["--duration", "1", "--warmup", "0", "--runs", "2", "--connections", "16",
               "--targets", "triton_direct,gateway_nofeatures", "--interleave", "--out", str(out), "--no-plots"])
    doc = json.loads((out / "latest.json").read_text())
    assert rc == 0, doc["correctness"]
    assert doc["plan"]["interleave"] is True
    assert [(c["target"], c["connections"]) for c in doc["cells"]] == [("triton_direct", 16), ("gateway_nofeatures", 16)]
    direct, gw = doc["cells"]
    assert len(direct["runs"]) == len(gw["runs"]) == 2
    assert (direct["triton_queue_delay_us"], gw["triton_queue_delay_us"]) == (100, 0)
    assert direct["cpu_s"]["triton"] > 0 and "gateway" not in direct["cpu_s"] and gw["cpu_s"]["gateway"] > 0
    assert gw["avg_batch"] >= 1 and set(gw["runs"][0]["split"]["shares"]) == {"a", "b"}
    assert doc["ratios"]["gateway_nofeatures_over_direct_rps_c16"] > 0
    assert doc["pair_ratios"]["rps_c16"] > 0 and doc["pair_ratios"]["p99_c16"] > 0
    # The model (re)loaded at start, for the gateway's start, then before each of the 4 runs
    # (direct 100 µs, gateway 0, direct, gateway): each measured run had its side's delay.
    (log,) = (out / "raw").glob("*/triton.log")
    assert log.read_text().count("successfully loaded 'clf'") == 6


@needs_wrk
def test_harness_direct_ab_splits_between_the_experiments_versions(tmp_path: Path) -> None:
    """triton_direct_ab: Triton loaded as a client splitting 50/50 by itself would load it, every
    other request to clf v2; Triton's own per-version counters must match the answers' versions."""
    from bench.harness import main

    out = tmp_path / "results"
    rc = main(["--duration", "1", "--warmup", "0", "--runs", "1", "--connections", "4",
               "--targets", "triton_direct_ab", "--out", str(out), "--no-plots"])
    doc = json.loads((out / "latest.json").read_text())
    assert rc == 0, doc["correctness"]
    (cell,) = doc["cells"]
    run = cell["runs"][0]
    seen, served = run["wrk"]["variants"], run["server_variants"]
    assert set(seen) == {"1", "2"} and set(served) == {"1", "2"}
    assert abs(seen["1"] - seen["2"]) <= 4   # alternating, at most one per connection apart
    assert served["1"] >= seen["1"] and served["2"] >= seen["2"] and run["violations"] == []
    assert cell["triton_queue_delay_us"] == 100 and "gateway" not in cell["cpu_s"]
