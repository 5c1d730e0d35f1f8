"""`python -m gateway`: serve the gateway on its HTTP/1.1 front (gateway/http1.py, uvloop, no access log)."""

from __future__ import annotations

import argparse
import logging
import sys

from gateway.config import parse_joins, GatewayConfig, drop_inherited_metrics_dir

drop_inherited_metrics_dir()  # before gateway.server imports prometheus-client
from gateway.server import run_workers, serve  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--triton-url", action="append", dest="triton_urls",
                   help="Triton gRPC address host:port (repeatable)")
    p.add_argument("--triton-http-url", action="append", dest="triton_http_urls",
                   help="the same replica's HTTP address host:port (repeatable, same order): inference "
                        "calls go over HTTP, the rest over gRPC")
    p.add_argument("--features", choices=["auto", "redis", "feast", "off"])
    p.add_argument("--feature-repo")
    p.add_argument("--redis-url", help="Redis for experiments (store + pub/sub)")
    p.add_argument("--feature-redis-url", help="override the Feast repo's Redis connection")
    p.add_argument("--feature-on-unavailable", choices=["raise", "default"],
                   help="feature store down: 503 (raise) or defaults flagged in the answer")
    p.add_argument("--feature-join", action="append", dest="feature_joins", metavar="MODEL=INPUT:MODE",
                   help="where MODEL's online features go: INPUT:concat, INPUT:own or none (repeatable)")
    p.add_argument("--experiments-file")
    p.add_argument("--admin-port", type=int, help="serve /admin/* only on this port")
    p.add_argument("--grpc-port", type=int, help="serve the KServe v2 gRPC API on this port too")
    p.add_argument("--no-batching", action="store_true", help="one Triton call per request")
    p.add_argument("--batch-delay-us", type=int)
    p.add_argument("--max-batch-rows", type=int)
    p.add_argument("--max-queue-rows", type=int)
    p.add_argument("--max-in-flight-batches", type=int)
    p.add_argument("--default-timeout-ms", type=int)
    p.add_argument("--model-repository", help="the Triton replicas' model repository (for registry/)")
    p.add_argument("--extension", action="append", dest="extensions",
                   help="mount the routes of module:factory at start-up (repeatable), e.g. synthetic.routes:extension")
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the port through SO_REUSEPORT")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    return GatewayConfig.from_env(
        host=args.host, port=args.port,
        triton_urls=tuple(args.triton_urls) if args.triton_urls else None,
        triton_http_urls=tuple(args.triton_http_urls) if args.triton_http_urls else None,
        features=args.features, feature_repo=args.feature_repo, redis_url=args.redis_url,
        feature_redis_url=args.feature_redis_url,
        feature_on_unavailable=args.feature_on_unavailable,
        feature_joins=parse_joins(",".join(args.feature_joins)) if args.feature_joins else None,
        experiments_file=args.experiments_file, admin_port=args.admin_port, grpc_port=args.grpc_port,
        batching=False if args.no_batching else None,
        batch_delay_us=args.batch_delay_us, max_batch_rows=args.max_batch_rows,
        max_queue_rows=args.max_queue_rows, max_in_flight_batches=args.max_in_flight_batches,
        default_timeout_ms=args.default_timeout_ms, model_repository=args.model_repository,
        extensions=tuple(args.extensions) if args.extensions else None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = config_from_args(args)
    if args.workers <= 1:
        serve(config)
        return
    sys.exit(run_workers(config, args.workers, args.log_level))


if __name__ == "__main__":
    main()
