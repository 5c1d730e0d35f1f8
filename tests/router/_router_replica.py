"""A separate gateway replica for the hot-reload test: prints one JSON line per config swap.

Usage: python tests/router/_router_replica.py KEY_PREFIX   (stops when stdin closes)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from router import Router, RouterService
from router.config import default_experiments


def _line(event: str, router: Router) -> None:
    weights = {e.config.name: {v.name: v.weight for v in e.config.variants} for e in router.experiments().values()}
    print(json.dumps({"event": event, "t": time.monotonic(), "weights": weights}), flush=True)


async def main(prefix: str) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=6379, socket_timeout=2.0)
    svc = RouterService(client, default_experiments(), {}, CollectorRegistry(), key_prefix=prefix,
                        flush_interval_s=0.2)
    svc.on_change(lambda r: _line("change", r))
    await svc.start()
    _line("ready", svc.router)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await svc.stop()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
