"""``python -m features``: build the demo repo and read from it, for ``make demo`` and operators.

    apply        generate data, write feature_store.yaml (Redis if one answers, else sqlite), apply
    materialize  load the latest rows into the online store (with a progress bar)
    get          print the vector the gateway would use for one entity (a table, or --json);
                 a Redis-backed repo is read without importing Feast once its spec is cached
    ping-redis   exit 0 when Redis answers, 1 otherwise
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["main"]


def _parser(default_url: str) -> argparse.ArgumentParser:
    from features.repo import DEFAULT_WORKDIR

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
    g.add_argument("--json", action="store_true", help="one JSON object on stdout, for scripts")
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
    from features.redis_reader import RedisFeatureReader

    if not (args.workdir / "feature_store.yaml").exists():
        print(f"error: no Feast repo at {args.workdir} (run `python -m features apply` first)", file=sys.stderr)
        return 2
    entity = _parse_entity(args.entity)
    try:
        reader = await open_reader(args.workdir, redis_url=args.redis_url, registry=CollectorRegistry(),
                                   view=args.view, spec_cache=True)
    except FeaturesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = "redis (fast reader)" if isinstance(reader, RedisFeatureReader) else "feast api"
    try:
        row = await reader.get(entity)
    except FeaturesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await reader.close()
    # float(str(float32)): the shortest decimal that reads back as the same float32 (550.00836,
    # not 550.0083618164062).
    values = {name: (None if np.isnan(v) else float(str(np.float32(v))))
              for name, v in zip(reader.names, row.values.tolist())}
    if args.json:
        print(json.dumps({"entity": entity, "reader": kind, "missing_entity": row.missing_entity,
                          "null_count": row.null_count, "defaulted": row.defaulted, "features": values}))
        return 0
    width = max(len("feature"), *(len(n) for n in values))
    print(f"entity   {', '.join(f'{k}={v}' for k, v in entity.items())}")
    print(f"reader   {kind}")
    print(f"row      missing_entity={_yes(row.missing_entity)}  nulls={row.null_count}  "
          f"defaulted={_yes(row.defaulted)}")
    print()
    print(f"{'feature':<{width}}  {'value':>12}")
    print(f"{'-' * width}  {'-' * 12}")
    for name, v in values.items():
        print(f"{name:<{width}}  {'null' if v is None else f'{v:.6g}':>12}")
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


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
