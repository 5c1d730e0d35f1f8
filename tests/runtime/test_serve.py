"""`make serve` stops cleanly: Ctrl-C in its terminal (or SIGTERM to `runtime.serve`) shuts the
gateway and Triton down and exits 0 with one line, and `make` reports no error.

Ctrl-C is typed into a real pseudo-terminal, so the terminal driver sends SIGINT to its
foreground process group exactly as it would for a person at the keyboard.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import tritonclient.grpc as triton_grpc

from runtime.triton import ROOT, free_port

START_S = 90.0


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} after {timeout}s: {out.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:   # EIO: every process holding the terminal has exited
                break
            if not chunk:
                break
            out += chunk
    return out


def _lines(raw: bytes) -> list[str]:
    text = raw.decode(errors="replace").replace("\r", "").replace("^C", "")   # the terminal echoes ^C
    return [ln.strip() for ln in text.split("\n") if ln.strip()]


def test_ctrl_c_on_make_serve_exits_0_with_one_line() -> None:
    env = {**os.environ, "GATEWAY_PORT": str(free_port()), "GATEWAY_GRPC_PORT": str(free_port())}
    # `-o` the install stamp: the test checks the stop, not whether pyproject changed since install.
    pid, fd = pty.fork()
    if pid == 0:   # the child: `make serve` with the pty as its controlling terminal
        os.chdir(ROOT)
        os.execvpe("make", ["make", "--no-print-directory", "-o", ".venv/.installed", "-o", "triton-runtime",
                            "serve", "ARGS=--features off"], env)
    try:
        _read_until(fd, b"Ctrl-C to stop", START_S)
        os.write(fd, b"\x03")   # the terminal turns it into SIGINT for its foreground group
        rest = _read_until(fd, b"\x00never", 60.0)
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
    lines = _lines(rest)
    assert os.waitstatus_to_exitcode(status) == 0, lines
    assert len(lines) == 1 and lines[0].startswith("stopped on SIGINT"), lines


def test_sigterm_on_runtime_serve_exits_0_with_one_line() -> None:
    grpc_port = free_port()
    env = {**os.environ, "GATEWAY_PORT": str(free_port()), "GATEWAY_GRPC_PORT": str(grpc_port)}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.serve", "--features", "off"], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        head = b""
        deadline = time.monotonic() + START_S
        while b"Ctrl-C to stop" not in head and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            head += line
        assert b"Ctrl-C to stop" in head, head
        # The KServe v2 gRPC front is served beside HTTP (GATEWAY_GRPC_PORT).
        assert f"gateway gRPC (KServe v2) 127.0.0.1:{grpc_port}".encode() in head, head
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        try:
            assert client.is_server_live() and client.is_model_ready("clf")
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert _lines(rest) == [ln for ln in _lines(rest) if ln.startswith("stopped on SIGTERM")]
    assert len(_lines(rest)) == 1, rest
