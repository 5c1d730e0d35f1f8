"""`make serve`: Triton + the gateway on 127.0.0.1:$GATEWAY_PORT (8080) until interrupted,
its KServe v2 gRPC front on $GATEWAY_GRPC_PORT (8081; empty = off).

Extra arguments go to `python -m gateway` (e.g. `--features off`, `--workers 2`).
Everything started here is stopped on Ctrl-C or SIGTERM, and a clean stop exits 0 with one
line. Ctrl-C must reach this process alone: the terminal sends SIGINT to its whole
foreground process group, so the gateway would stop on its own (and `make` would report
`Interrupt`) before this process could stop things in order. So the gateway and Triton run in
sessions of their own, and while it runs this process is the terminal's foreground group
(given back to `make`'s group at exit).
Triton serves the git-ignored working copy `.served/model_repo/` (refreshed from model_repo/
at start), where `python -m registry deploy` may add versions.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from runtime.stack import Stack, served_repository


def _take_terminal() -> tuple[int, int] | None:
    """Make this process the terminal's foreground process group; (fd, old group) or None."""
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return None   # no terminal, or started in the background: nothing to take
        old = os.getpgrp()
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)   # tcsetpgrp from a background group
        os.tcsetpgrp(fd, os.getpgrp())
        return fd, old
    except (OSError, ValueError):
        return None


def _give_back(terminal: tuple[int, int] | None) -> None:
    if terminal is not None:
        try:
            os.tcsetpgrp(*terminal)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    port = int(os.environ.get("GATEWAY_PORT", "8080"))
    grpc_port = os.environ.get("GATEWAY_GRPC_PORT", "8081").strip()
    stop = threading.Event()
    got: list[int] = []

    def on_signal(sig: int, frame: object) -> None:
        got.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    terminal = _take_terminal()
    try:
        with Stack(gateway_args=args, gateway_port=port, repository=served_repository(),
                   gateway_grpc_port=int(grpc_port) if grpc_port else None) as stack:
            print(f"triton  {stack.triton!r}\ngateway {stack.gateway.url}  (logs in {stack.log_dir})")
            if stack.gateway.grpc_url:
                print(f"gateway gRPC (KServe v2) {stack.gateway.grpc_url}")
            print("Ctrl-C to stop", flush=True)
            while not stop.is_set():
                code = stack.gateway.process.poll()
                if code is not None:
                    print(f"gateway exited with {code}; stopping (log: {stack.log_dir}/gateway.log)",
                          file=sys.stderr)
                    return 1
                stop.wait(0.5)
    finally:
        _give_back(terminal)
    print(f"stopped on {signal.Signals(got[0]).name}: gateway and Triton shut down cleanly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
