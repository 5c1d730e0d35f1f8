"""`bench/overload.lua` (make overload's load generator) against a tiny local server: in
`honour` mode each connection waits its own Retry-After after a 429, and no other connection
waits for it."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from bench import overload
from bench import wrk as wrkmod

from tests.conftest import require

CONNECTIONS = 48


class _Refuser(BaseHTTPRequestHandler):
    """One instance per connection. The second requests of all connections are answered at
    the same moment (a barrier), as a gateway answers a batch: every other connection gets a
    429 with Retry-After: 1, the rest a 200; every other request gets a 200. Records, per
    connection, the pause before each request after the first and the answer before it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True     # headers and body leave in two writes
    gaps: list[tuple[int, float]] = []   # (status answered before the pause, seconds)
    lock = threading.Lock()
    opened = 0
    barrier = threading.Barrier(CONNECTIONS)

    def setup(self) -> None:
        super().setup()
        self.n, self.last = 0, None
        with self.lock:
            _Refuser.opened += 1
            self.index = _Refuser.opened

    def do_POST(self) -> None:  # noqa: N802
        now = time.monotonic()
        self.rfile.read(int(self.headers["content-length"]))
        if self.last is not None:
            with self.lock:
                self.gaps.append((self.last[0], now - self.last[1]))
        self.n += 1
        status = 200
        if self.n == 2:
            try:
                self.barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass
            status = 429 if self.index % 2 else 200
        out = b'{"error":"overloaded"}' if status == 429 else b'{"outputs":[1]}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        if status == 429:
            self.send_header("retry-after", "1")
        self.end_headers()
        self.wfile.write(out)
        self.wfile.flush()
        self.last = (status, time.monotonic())

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 256           # wrk opens every connection at once
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass                           # wrk resets its connections when it stops


@pytest.fixture
def refuser_url() -> Iterator[str]:
    _Refuser.gaps, _Refuser.opened, _Refuser.barrier = [], 0, threading.Barrier(CONNECTIONS)
    server = _Server(("127.0.0.1", 0), _Refuser)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_honour_mode_gives_each_connection_its_own_back_off(refuser_url: str) -> None:
    require(wrkmod.wrk_binary() is not None, "wrk is not installed (make wrk)")
    cmd = [wrkmod.wrk_binary() or "wrk", "-t1", f"-c{CONNECTIONS}", "-d3s", "--timeout=5s", "-s", str(overload.LUA),
           refuser_url, "--", "honour", "lua"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(overload.MARKER)), None)
    assert line is not None, proc.stdout + proc.stderr
    res = json.loads(line[len(overload.MARKER):])
    after_429 = [g for st, g in _Refuser.gaps if st == 429]
    after_200 = [g for st, g in _Refuser.gaps if st == 200]
    # half the connections got their one 429 and came back after it
    assert res["shed"] == res["backoffs"] == CONNECTIONS // 2, res
    assert len(after_429) == CONNECTIONS // 2, (len(after_429), res)
    # ... after waiting what it was told (1 s, + up to 50 % jitter), and nobody else waited
    assert min(after_429) >= 0.99, sorted(after_429)[:5]
    assert max(after_429) < 1.5 + 0.5, sorted(after_429)[-5:]
    assert after_200 and max(after_200) < 0.5, sorted(after_200)[-5:]
