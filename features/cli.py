"""``python -m features``: build the demo repo and read from it, for ``make demo`` and operators.

    apply        generate data, write feature_store.yaml (Redis if one answers, else sqlite), apply
    materialize  load the latest rows into the online store (with a progress bar)
    get          print the vector the gateway would use for one entity
    ping-redis   exit 0 when Redis answers, 1 otherwise
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["main"]


def _parser(default_url: str) -> argparse.ArgumentParser:
    from features.repo.workspace import DEFAULT_WORKDIR

    p = argparse.ArgumentParser(prog="python -m features", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    # Resolved: Feast resolves the registry path against the repo dir, not the caller's cwd.
    common.add_argument("--workdir", type=lambda v: Path(v).resolve(), default=DEFAULT_WORKDIR,
                        help="repo working dir (default: %(default)s, git-ignored)")
    common.add_argument("--redis-url", default=None,
                        help=f"Redis to use (default for apply/ping-redis: $REDIS_URL or {default_url}; "
                             "for get: the repo's own connection string)")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("apply", parents=[common], help="generate data and apply the repo")
    a.add_argument("--online", choices=("auto", "redis", "sqlite"), default="auto",
                   help="online store; auto = Redis when it answers, else sqlite")
    a.add_argument("--project", default="infergate")
    a.add_argument("--rows", type=int, default=10_000)
    a.add_argument("--seed", type=int, default=7)
    sub.add_parser("materialize", parents=[common], help="materialize into the online store")
    g = sub.add_parser("get", parents=[common], help="print one entity's feature vector")
    g.add_argument("--entity", action="append", required=True, metavar="KEY=VALUE",
                   help="join key and value, e.g. user_id=42 (repeat for composite keys)")
    g.add_argument("--view", default=None)
    sub.add_parser("ping-redis", parents=[common], help="exit 0 when Redis answers")
    return p


def _parse_entity(items: Sequence[str]) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--entity expects KEY=VALUE, got {item!r}")
        try:
            out[key] = int(raw)
        except ValueError:
            out[key] = raw
    return out


def _cmd_apply(args: argparse.Namespace) -> int:
    from features.factory import redis_answers
    from features.repo.workspace import Workspace

    online = args.online
    if online == "auto":
        up = asyncio.run(redis_answers(args.redis_url))
        online = "redis" if up else "sqlite"
        print(f"features: Redis at {args.redis_url} {'answers' if up else 'does not answer'}; "
              f"using the {online} online store")
    ws = Workspace(args.workdir, project=args.project, online=online, redis_url=args.redis_url)
    ws.apply(rows=args.rows, seed=args.seed)
    print(f"features: applied project {args.project!r} ({args.rows} users, {online}) in {args.workdir}")
    return 0


def _cmd_materialize(args: argparse.Namespace) -> int:
    from features.repo.workspace import Workspace

    store = Workspace(args.workdir).materialize()
    print(f"features: materialized into {store.config.online_store.type} online store")
    return 0


async def _get(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from features.errors import FeaturesError
    from features.factory import open_reader

    reader = await open_reader(args.workdir, redis_url=args.redis_url, registry=CollectorRegistry(), view=args.view)
    try:
        row = await reader.get(_parse_entity(args.entity))
    except FeaturesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await reader.close()
    print(f"reader: {reader!r}")
    print(f"entity: {_parse_entity(args.entity)}  missing_entity={row.missing_entity} "
          f"null_count={row.null_count} defaulted={row.defaulted}")
    for name, v in zip(reader.names, row.values.tolist()):
        print(f"  {name:<28} {np.float32(v)!s:>14}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m features``; returns the exit code."""
    default_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    args = _parser(default_url).parse_args(argv)
    if args.command == "get":
        return asyncio.run(_get(args))
    args.redis_url = args.redis_url or default_url
    if args.command == "apply":
        return _cmd_apply(args)
    if args.command == "materialize":
        return _cmd_materialize(args)
    from features.factory import redis_answers

    up = asyncio.run(redis_answers(args.redis_url))
    print(f"Redis at {args.redis_url}: {'up' if up else 'down'}")
    return 0 if up else 1
