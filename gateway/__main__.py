"""`python -m gateway`: serve the gateway with uvicorn (uvloop + httptools, no access log)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket

import uvicorn
import uvloop

from gateway.app import Gateway
from gateway.config import GatewayConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--triton-url", action="append", dest="triton_urls",
                   help="Triton gRPC address host:port (repeatable)")
    p.add_argument("--features", choices=["auto", "redis", "feast", "off"])
    p.add_argument("--feature-repo")
    p.add_argument("--redis-url", help="Redis for experiments (store + pub/sub)")
    p.add_argument("--feature-redis-url", help="override the Feast repo's Redis connection")
    p.add_argument("--feature-on-unavailable", choices=["raise", "default"],
                   help="feature store down: 503 (raise) or defaults flagged in the answer")
    p.add_argument("--experiments-file")
    p.add_argument("--admin-port", type=int, help="serve /admin/* only on this port")
    p.add_argument("--no-batching", action="store_true", help="one Triton call per request")
    p.add_argument("--batch-delay-us", type=int)
    p.add_argument("--max-batch-rows", type=int)
    p.add_argument("--max-queue-rows", type=int)
    p.add_argument("--max-in-flight-batches", type=int)
    p.add_argument("--default-timeout-ms", type=int)
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the port through SO_REUSEPORT")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    return GatewayConfig.from_env(
        host=args.host, port=args.port,
        triton_urls=tuple(args.triton_urls) if args.triton_urls else None,
        features=args.features, feature_repo=args.feature_repo, redis_url=args.redis_url,
        feature_redis_url=args.feature_redis_url,
        feature_on_unavailable=args.feature_on_unavailable,
        experiments_file=args.experiments_file, admin_port=args.admin_port, batching=False if args.no_batching else None,
        batch_delay_us=args.batch_delay_us, max_batch_rows=args.max_batch_rows,
        max_queue_rows=args.max_queue_rows, max_in_flight_batches=args.max_in_flight_batches,
        default_timeout_ms=args.default_timeout_ms)


def serve(config: GatewayConfig, log_level: str = "warning", sock: socket.socket | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM: uvicorn stops accepting, in-flight requests are
    answered, then the lifespan drains every batcher and closes the connections."""
    gw = Gateway(config)
    common = dict(loop="uvloop", http="httptools", access_log=False, log_level=log_level,
                  server_header=False, proxy_headers=False, timeout_graceful_shutdown=config.shutdown_timeout_s)
    server = uvicorn.Server(uvicorn.Config(gw, host=config.host, port=config.port, lifespan="on",
                                           backlog=4096, **common))
    if gw.admin_app is None:
        server.run(sockets=[sock] if sock is not None else None)
        return
    admin = uvicorn.Server(uvicorn.Config(gw.admin_app, host=config.host, port=config.admin_port,
                                          lifespan="off", **common))
    # Only the main server takes SIGINT/SIGTERM; the admin listener ends with the process.
    admin.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]

    async def both() -> None:
        # The admin listener first, so that "main port ready" implies "admin port listening";
        # until the components are up it answers 503 (see routes.admin_routes).
        admin_task = asyncio.ensure_future(admin.serve())
        while not admin.started and not admin_task.done():
            await asyncio.sleep(0.02)
        try:
            await server.serve(sockets=[sock] if sock is not None else None)
        finally:
            admin.should_exit = True
            await admin_task

    uvloop.run(both())


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT: the kernel spreads connections across workers
    (uvicorn's --workers shares one socket and one worker took every connection here)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(4096)
    s.set_inheritable(True)
    return s


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = config_from_args(args)
    if args.workers <= 1:
        serve(config, args.log_level)
        return
    import multiprocessing as mp
    procs = []
    for _ in range(args.workers):
        proc = mp.get_context("spawn").Process(
            target=_worker, args=(config, args.log_level), daemon=False)
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()


def _worker(config: GatewayConfig, log_level: str) -> None:
    logging.basicConfig(level=log_level.upper())
    serve(config, log_level, reuseport_socket(config.host, config.port))


if __name__ == "__main__":
    main()
