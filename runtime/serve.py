"""`make serve`: Triton + the gateway on 127.0.0.1:$GATEWAY_PORT (8080) until interrupted.

Extra arguments go to `python -m gateway` (e.g. `--features off`, `--workers 2`).
Everything started here is stopped on Ctrl-C or SIGTERM. Triton serves the git-ignored working
copy `.served/model_repo/` (refreshed from model_repo/ at start), where `python -m registry
deploy` may add versions.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from runtime.stack import Stack, served_repository


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    port = int(os.environ.get("GATEWAY_PORT", "8080"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Stack(gateway_args=args, gateway_port=port, repository=served_repository()) as stack:
        print(f"triton  {stack.triton!r}\ngateway {stack.gateway.url}  (logs in {stack.log_dir})")
        print("Ctrl-C to stop", flush=True)
        while not stop.is_set():
            if stack.gateway.process.poll() is not None:
                print("gateway exited; stopping", file=sys.stderr)
                return 1
            stop.wait(0.5)
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
