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

import uvloop

from gateway.app import Gateway
from gateway.http1 import HTTPFront
from gateway.config import METRICS_DIR_ENV, PROMETHEUS_DIR_ENVS, GatewayConfig

log = logging.getLogger("infergate.server")

_RESTART_EVERY_S = 1.0  # at most one replacement a second


def serve(config: GatewayConfig, worker: bool = False, on_ready: Callable[[], None] | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM, on the event loop's HTTP/1.1 front (`gateway.http1`).

    Start-up: the admin listener first (it answers 503 until the components are up), then the
    components (the lifespan), then the gRPC front, then the HTTP port; ``on_ready`` is called
    once it listens. A signal stops both listeners from accepting, the requests in flight are
    answered (within ``shutdown_timeout_s``), then the gRPC front stops and every batcher
    drains.

    ``worker`` (under `run_workers`): the ports are shared with the sibling workers. Every
    listener is bound with SO_REUSEPORT, so the kernel spreads connections across workers
    (a shared listening socket sent every connection to one worker here), and it binds only
    once this worker's start-up is done: the kernel spreads connections over *listening*
    sockets, so a worker still starting (or a replacement) takes none (a socket listening
    early took its share and held them unanswered for the whole start-up: found by
    tests/gateway/test_lifecycle.py with --workers 2)."""
    gw = Gateway(config)
    if config.grpc_port is not None:
        from gateway.grpc_front import GRPCFront
        # Workers share the gRPC port the same way.
        gw.grpc = GRPCFront(gw, config.host, config.grpc_port, reuse_port=worker)
    if not worker:   # the supervisor checked before the first worker started
        _check_free(config.host, config.port)
        if config.admin_port is not None:
            _check_free(config.host, config.admin_port)
    main = HTTPFront(gw, gw, limit=config.max_body_bytes, unexpected=gw.components.unexpected,
                     shed=config.admission_front_shed, read_timeout_s=config.http_read_timeout_s,
                     keepalive_s=config.http_keepalive_s)
    admin = None
    if gw.admin_app is not None:
        admin = HTTPFront(gw.admin_app, None, limit=config.max_body_bytes, unexpected=gw.components.unexpected,
                          read_timeout_s=config.http_read_timeout_s, keepalive_s=config.http_keepalive_s)
    stop = {"signal": None}

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def on_signal(sig: signal.Signals) -> None:
            if stop["signal"] is None:
                stop["signal"] = sig
                log.info("%s: stopping", sig.name)
            stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        started: list[HTTPFront] = []
        try:
            if admin is not None:
                await _listen(admin, config.host, config.admin_port, worker)
                started.append(admin)
            async with gw._lifespan(gw.app):   # noqa: SLF001 - the Starlette lifespan, run by us
                await _listen(main, config.host, config.port, worker)
                started.append(main)
                if on_ready is not None:
                    on_ready()
                await stopping.wait()
                # Stop accepting; the requests in flight are answered before the batchers drain.
                await asyncio.gather(*(f.shutdown(config.shutdown_timeout_s) for f in started))
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for front in started:
                if not front.closing:
                    await front.shutdown(0.0)

    uvloop.run(run())
    if stop["signal"] is not None:
        log.info("gateway stopped cleanly on %s", stop["signal"].name)


async def _listen(front: HTTPFront, host: str, port: int, worker: bool) -> None:
    """Listen on `port`; a port it cannot take ends the process with status 1 and the reason."""
    try:
        await front.start(host, port, reuse_port=worker)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        raise SystemExit(1) from exc


def _check_free(host: str, port: int) -> None:
    """Fail at once when another program holds the port (workers bind with SO_REUSEPORT,
    which would share it silently with another SO_REUSEPORT listener)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        raise SystemExit(1) from exc
    finally:
        s.close()


def _worker(config: GatewayConfig, log_level: str, ready: Any) -> None:
    """A spawned worker's entry point (module level, so that spawn can find it)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(config, worker=True, on_ready=ready.set)


def run_workers(config: GatewayConfig, workers: int, log_level: str = "warning") -> int:
    """Supervise ``workers`` gateway processes until a signal; returns the exit status."""
    from prometheus_client import multiprocess

    _check_free(config.host, config.port)
    if config.admin_port is not None:
        _check_free(config.host, config.admin_port)
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
                os.kill(proc.pid, signal.SIGTERM)  # graceful in the worker, whatever the parent got

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
