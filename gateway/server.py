"""Run the gateway: one process, or ``--workers N`` processes under a small supervisor.

Workers are spawned processes, each with its own event loop, bound to the same port (and admin
port) with SO_REUSEPORT, so the kernel spreads connections across them. They share nothing in
memory: experiments come from Redis, and metrics go to a per-run directory that any worker
sums when scraped (see ``gateway.metrics``).

The supervisor forwards SIGTERM/SIGINT to the workers (each answers what it holds, then exits),
replaces a worker that dies after it was ready (at most one a second), and stops everything with
the worker's exit code if one dies before (a bad port or config fails every worker the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any, Callable

import uvicorn
import uvloop

from gateway.app import Gateway
from gateway.config import METRICS_DIR_ENV, PROMETHEUS_DIR_ENVS, GatewayConfig

log = logging.getLogger("infergate.server")

_RESTART_EVERY_S = 1.0  # at most one replacement a second


def serve(config: GatewayConfig, log_level: str = "warning", sock: socket.socket | None = None,
          admin_sock: socket.socket | None = None, on_ready: Callable[[], None] | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM: uvicorn stops accepting, in-flight requests are
    answered, then the lifespan stops the gRPC front (its calls in flight answered), drains
    every batcher and closes the connections. ``on_ready`` is called once the gateway has
    started and listens (the gRPC front, when configured, listens before the HTTP port)."""
    gw = Gateway(config)
    if config.grpc_port is not None:
        from gateway.grpc_front import GRPCFront
        # Workers (given a SO_REUSEPORT socket) share the gRPC port the same way.
        gw.grpc = GRPCFront(gw, config.host, config.grpc_port, reuse_port=sock is not None)
    common = dict(loop="uvloop", http="httptools", access_log=False, log_level=log_level,
                  server_header=False, proxy_headers=False, timeout_graceful_shutdown=config.shutdown_timeout_s)
    server = uvicorn.Server(uvicorn.Config(gw, host=config.host, port=config.port, lifespan="on",
                                           backlog=4096, **common))
    admin = None
    if gw.admin_app is not None:
        admin = uvicorn.Server(uvicorn.Config(gw.admin_app, host=config.host, port=config.admin_port,
                                              lifespan="off", **common))
        # Only the main server takes SIGINT/SIGTERM; the admin listener ends with the process.
        admin.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]

    async def started(srv: uvicorn.Server, task: asyncio.Future) -> bool:
        while not srv.started and not task.done():
            await asyncio.sleep(0.02)
        return srv.started

    # uvicorn re-raises the signal it stopped on once it has shut down, which would end the
    # process with -SIGTERM (or a KeyboardInterrupt) after a clean drain. Re-raised into this
    # handler it is a no-op, so a signal-initiated clean stop exits 0; before uvicorn takes the
    # signals (while the admin listener starts) the handler still asks the server to stop.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server.handle_exit)

    async def run() -> None:
        admin_task = None
        if admin is not None:
            # The admin listener first, so that "main port ready" implies "admin port listening";
            # until the components are up it answers 503 (see routes.admin_routes).
            admin_task = asyncio.ensure_future(admin.serve(sockets=[admin_sock] if admin_sock else None))
            if not await started(admin, admin_task):  # could not listen: uvicorn said why
                raise SystemExit(1)
        try:
            main_task = asyncio.ensure_future(server.serve(sockets=[sock] if sock is not None else None))
            if await started(server, main_task) and on_ready is not None:
                on_ready()
            await main_task
        finally:
            if admin is not None and admin_task is not None:
                admin.should_exit = True
                await admin_task

    uvloop.run(run())
    if server._captured_signals:   # noqa: SLF001 - uvicorn keeps the signals it stopped on here
        log.info("gateway stopped cleanly on %s", signal.Signals(server._captured_signals[0]).name)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A bound socket with SO_REUSEPORT: the kernel spreads connections across workers
    (uvicorn's --workers shares one socket and one worker took every connection here).

    Not listening yet: uvicorn listens on it once the worker's start-up is done. The kernel
    spreads connections over the *listening* sockets only, so a worker still starting (or a
    replacement) takes none; listening here made it take its share and hold them, unanswered,
    for the whole start-up (found by tests/gateway/test_lifecycle.py with --workers 2)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.set_inheritable(True)
    return s


def _worker(config: GatewayConfig, log_level: str, ready: Any) -> None:
    """A spawned worker's entry point (module level, so that spawn can find it)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    admin = reuseport_socket(config.host, config.admin_port) if config.admin_port is not None else None
    serve(config, log_level, reuseport_socket(config.host, config.port), admin, on_ready=ready.set)


def run_workers(config: GatewayConfig, workers: int, log_level: str = "warning") -> int:
    """Supervise ``workers`` gateway processes until a signal; returns the exit status."""
    from prometheus_client import multiprocess

    metrics_dir = tempfile.mkdtemp(prefix="infergate-metrics-")
    for var in (METRICS_DIR_ENV, PROMETHEUS_DIR_ENVS[0]):  # inherited by the spawned workers
        os.environ[var] = metrics_dir
    ctx = mp.get_context("spawn")
    procs: dict[int, tuple[mp.process.BaseProcess, Any]] = {}  # sentinel -> (process, its ready event)
    stopping = False
    status = 0
    last_restart = 0.0

    def start_one() -> None:
        ready = ctx.Event()
        proc = ctx.Process(target=_worker, args=(config, log_level, ready), name="infergate-worker", daemon=False)
        proc.start()
        procs[proc.sentinel] = (proc, ready)
        log.info("worker %d started", proc.pid)

    def stop_all(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for proc, _ in procs.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)  # graceful in uvicorn, whatever the parent got

    old = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(workers):
            start_one()
        while procs:
            for sentinel in mp.connection.wait(list(procs), timeout=1.0):
                proc, ready = procs.pop(sentinel)  # type: ignore[call-overload]
                proc.join()
                multiprocess.mark_process_dead(proc.pid, metrics_dir)
                if stopping:
                    continue
                code = proc.exitcode or 0
                if not ready.is_set():
                    log.error("worker %d exited with %s before it was ready; stopping the others", proc.pid, code)
                    status = code if code > 0 else 1
                    stop_all()
                else:
                    log.warning("worker %d exited with %s; starting a replacement", proc.pid, code)
                    time.sleep(max(0.0, last_restart + _RESTART_EVERY_S - time.monotonic()))
                    last_restart = time.monotonic()
                    start_one()
    finally:
        stop_all()
        for proc, _ in procs.values():
            proc.join()
        for s, handler in old.items():
            signal.signal(s, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for var in (METRICS_DIR_ENV, PROMETHEUS_DIR_ENVS[0]):
            os.environ.pop(var, None)
    return status
