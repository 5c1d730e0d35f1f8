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

import uvloop

from gateway.app import Gateway
from gateway.rsgi import RSGIFront, install_front_shedding
from gateway.config import METRICS_DIR_ENV, PROMETHEUS_DIR_ENVS, GatewayConfig

log = logging.getLogger("infergate.server")

_RESTART_EVERY_S = 1.0  # at most one replacement a second


def serve(config: GatewayConfig, log_level: str = "warning", worker: bool = False,
          on_ready: Callable[[], None] | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM, on granian's RSGI front (`gateway.rsgi`).

    Start-up: the admin listener first (it answers 503 until the components are up), then the
    components (the lifespan), then the gRPC front, then the HTTP port; ``on_ready`` is called
    once it listens. A signal stops both listeners from accepting, the requests in flight are
    answered (within ``shutdown_timeout_s``), then the gRPC front stops and every batcher
    drains.

    ``worker`` (under `run_workers`): the ports are shared with the sibling workers. Granian
    binds every listener with SO_REUSEPORT, so the kernel spreads connections across workers
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
    front = RSGIFront(gw, gw, config.max_body_bytes, gw.components.unexpected)
    if config.admission_front_shed:
        install_front_shedding()
    main = _granian(front, config.host, config.port, log_level, config.http_threads)
    admin = None
    if gw.admin_app is not None:
        admin = _granian(RSGIFront(gw.admin_app, None, config.max_body_bytes, gw.components.unexpected),
                         config.host, config.admin_port, log_level, 1)
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
        tasks: list[asyncio.Task] = []
        try:
            if admin is not None:
                tasks.append(await _start(admin, config.admin_port, stopping))
                if stopping.is_set():
                    return
            async with gw._lifespan(gw.app):   # noqa: SLF001 - the Starlette lifespan, run by us
                tasks.append(await _start(main, config.port, stopping))
                if stopping.is_set():
                    return
                if on_ready is not None:
                    on_ready()
                await stopping.wait()
                for server in (main, admin):
                    if server is not None:
                        server.stop()
                # The requests in flight are answered before the batchers drain.
                deadline = loop.time() + config.shutdown_timeout_s
                while gw.admission.limiter.in_flight > 0 and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.wait(tasks, timeout=max(0.1, deadline - loop.time()))
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for server in (main, admin):
                if server is not None:
                    server.stop()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)

    uvloop.run(run())
    if stop["signal"] is not None:
        log.info("gateway stopped cleanly on %s", stop["signal"].name)


def _granian(app: RSGIFront, host: str, port: int, log_level: str, threads: int) -> Any:
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    # HTTP/1.1 only (as before); `threads` Rust I/O threads (config.http_threads). Granian's
    # own log stays quiet below info.
    return Server(app, address=host, port=port, interface=Interfaces.RSGI, http=HTTPModes.http1,
                  websockets=False, backlog=4096, runtime_threads=threads,
                  log_enabled=log_level.lower() in ("debug", "info"), log_access=False)


async def _start(server: Any, port: int, stopping: asyncio.Event) -> asyncio.Task:
    """Start a granian server as a task; return once it listens. A port it cannot take
    ends the process with status 1 and the reason."""
    listening = asyncio.Event()
    server.on_startup(listening.set)
    task = asyncio.ensure_future(server.serve())
    waiter = asyncio.ensure_future(listening.wait())
    await asyncio.wait([task, waiter, asyncio.ensure_future(stopping.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if task.done() and not listening.is_set():
        exc = task.exception()
        log.error("cannot listen on port %d: %s", port, exc)
        raise SystemExit(1)
    waiter.cancel()
    return task


def _check_free(host: str, port: int) -> None:
    """Fail at once when another program holds the port (granian binds with SO_REUSEPORT,
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
    serve(config, log_level, worker=True, on_ready=ready.set)


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
