"""Offline tool: ``python -m router assign --config FILE --experiment NAME``.

Reads unit ids from stdin (one per line), prints ``unit_id<TAB>variant`` per line -- the same
answer the gateway gives for an unauthenticated request without override header.
"""

from __future__ import annotations

import argparse
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
    return p


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
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
