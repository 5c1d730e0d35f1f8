"""``python -m router``: the offline assignment tool and the experimenter's commands.

* ``assign --config FILE --experiment NAME``: reads unit ids from stdin (one per line), prints
  ``unit_id<TAB>variant`` per line -- the same answer the gateway gives for an unauthenticated
  request without override header. Offline: no gateway, no Redis.
* ``list``, ``show NAME``, ``history NAME``, ``set-weights NAME a=70 b=30 [--yes]``,
  ``pause|stop|resume NAME``: the gateway's admin API (``--gateway URL``, token from
  ``INFERGATE_ADMIN_TOKENS``), ``--json`` for machine-readable output. ``set-weights`` prints
  the buckets/units the change moves (the gateway's dry run) and asks before saving unless
  ``--yes``; every write is a compare-and-set on the version read (no lost update).

Exit codes: 0 done; 2 bad input or refused (4xx, a stale version, declined); 1 the gateway
did not answer (or answered 5xx).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence, TextIO

from .assign import CompiledExperiment
from .config import default_experiments, load_experiments
from .errors import ConfigError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m router", description="Experiment assignment tools")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assign", help="assign unit ids read from stdin")
    a.add_argument("--config", help="YAML or JSON experiments file (default: the built-in demo)")
    a.add_argument("--experiment", required=True, help="experiment name")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gateway", default=os.environ.get("INFERGATE_GATEWAY_URL", "http://127.0.0.1:8080"),
                        help="the gateway's admin listener (default: $INFERGATE_GATEWAY_URL or %(default)s)")
    common.add_argument("--token-id", help="which entry of INFERGATE_ADMIN_TOKENS (default: the first)")
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--timeout", type=float, default=5.0, help="seconds per HTTP call")
    sub.add_parser("list", parents=[common], help="experiments with status, weights, SRM")
    s = sub.add_parser("show", parents=[common], help="one experiment's live state")
    s.add_argument("name")
    h = sub.add_parser("history", parents=[common], help="stored changes, newest first")
    h.add_argument("name")
    h.add_argument("--limit", type=int, default=20)
    w = sub.add_parser("set-weights", parents=[common], help="change weights: NAME a=70 b=30")
    w.add_argument("name")
    w.add_argument("weights", nargs="+", metavar="VARIANT=PERCENT")
    w.add_argument("--yes", action="store_true", help="do not ask before saving")
    w.add_argument("--reason", help="why (kept in the history)")
    for cmd, what in (("pause", "every unit to control"), ("stop", "end it: every unit to control"),
                      ("resume", "run the split again")):
        x = sub.add_parser(cmd, parents=[common], help=what)
        x.add_argument("name")
        x.add_argument("--reason", help="why (kept in the history)")
    return p


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    if args.command != "assign":
        from .admin_cli import run
        return run(args, stdin, stdout)
    try:
        configs = load_experiments(args.config) if args.config else default_experiments()
    except ConfigError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    match = [c for c in configs if c.name == args.experiment]
    if not match:
        names = ", ".join(c.name for c in configs) or "none"
        print(f"error: no experiment {args.experiment!r} (have: {names})", file=sys.stderr)
        return 2
    exp = CompiledExperiment(match[0])
    assign = exp.assign
    write = stdout.write
    for line in stdin:
        unit = line.rstrip("\r\n")
        if unit:
            write(f"{unit}\t{assign(unit).variant}\n")
    stdout.flush()
    return 0
