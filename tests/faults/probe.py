"""A latency probe in its own process: one keep-alive connection, one request every
`interval` seconds, each timed with a blocking socket.

The overload test's load generator runs 512 connections on one asyncio loop, so the times it
records include its own queueing; this probe, alone in its process, times how fast the gateway
itself answers (a 429 above all). Prints one JSON list of [status, seconds] per request.

    python -m faults.probe HOST PORT DURATION_S INTERVAL_S [--fresh] < request-bytes

`--fresh` opens a new connection for each request (connecting is not timed): the gateway
holds back the 429s of a connection that resends sooner than Retry-After (1 s), so a probe
that keeps one connection and sends every 10 ms would time that penalty, not a well-behaved
caller's 429.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def _read_response(sock: socket.socket, buf: bytes) -> tuple[int, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return status, rest[length:]


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def probe(host: str, port: int, duration_s: float, interval_s: float, request: bytes,
          fresh: bool = False) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    sock = _connect(host, port)
    buf = b""
    end = time.monotonic() + duration_s
    try:
        while time.monotonic() < end:
            t_start = time.perf_counter()
            if fresh and out:
                sock.close()
                sock, buf = _connect(host, port), b""
            t0 = time.perf_counter()
            sock.sendall(request)
            status, buf = _read_response(sock, buf)
            out.append((status, time.perf_counter() - t0))
            time.sleep(max(0.0, interval_s - (time.perf_counter() - t_start)))
    finally:
        sock.close()
    return out


if __name__ == "__main__":
    host, port, duration, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(probe(host, port, duration, interval, sys.stdin.buffer.read(), "--fresh" in sys.argv[5:])))
