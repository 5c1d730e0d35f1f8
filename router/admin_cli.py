"""The admin commands of ``python -m router`` (see ``cli.py``): list, show, history,
set-weights, pause/stop/resume. Output for people by default, ``--json`` for programs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

from .client import AdminClient, Refused, Unreachable, token_from_env

__all__ = ["run", "parse_weights"]


class BadInput(Exception):
    pass


def parse_weights(pairs: list[str]) -> dict[str, float]:
    """``["a=70", "b=30"]`` -> {"a": 70.0, "b": 30.0}; BadInput names the bad pair."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BadInput(f"{pair!r}: weights look like VARIANT=PERCENT, e.g. a=70")
        try:
            out[name] = float(value)
        except ValueError:
            raise BadInput(f"{pair!r}: {value!r} is not a number (percent)") from None
        if name in list(out)[:-1]:
            raise BadInput(f"{pair!r}: variant {name!r} given twice")
    return out


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _weights(cfg: dict[str, Any]) -> str:
    return " ".join(f"{v['name']}={v['weight']:g}" for v in cfg["variants"])


def _target(t: dict[str, Any]) -> str:
    return f"{t['model']}:{t.get('version') or 'latest'}"


def _p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")


def _show_text(st: dict[str, Any], out: TextIO) -> None:
    c = st["config"]
    w = out.write
    w(f"{st['name']}  model {c['model']}  status {c['status']}  version {st['version']}\n")
    if st.get("updated_at"):
        w(f"  last change by {st['token_id']}" + (f": {st['reason']}" if st.get("reason") else "") + "\n")
    units = st["units"]["counts"]
    total = sum(units.values())
    for v in c["variants"]:
        share = f"{100 * units.get(v['name'], 0) / total:.2f} %" if total else "-"
        ctl = " (control)" if v["name"] == c["control"] else ""
        w(f"  {v['name']}{ctl}: weight {v['weight']:g} %  -> {_target(v['target'])}  "
          f"units {units.get(v['name'], 0)} ({share})  buckets {st['allocation']['buckets'].get(v['name'], 0)}\n")
    srm = st["srm"]
    w(f"  SRM (units): p = {_p(srm['p_value'])}" + ("  FLAGGED" if srm["flagged"] else "") + "\n")
    w(f"  guardrails: {st['guardrails']['state']}\n")
    if c.get("allowlist"):
        w("  allowlist: " + ", ".join(f"{u} -> {v}" for u, v in c["allowlist"].items()) + "\n")


def _moves_text(r: dict[str, Any]) -> str:
    if not r["buckets_moved"]:
        return "this change moves no units"
    ts = ", ".join(f"{t['from']}->{t['to']} {t['buckets']}" for t in r["transitions"])
    return (f"this change moves {r['buckets_moved']} of 10000 buckets ({100 * r['share_moved']:.2f} % of units; "
            f"~{r['units_moved_estimate']} of the {r['units_seen']} units seen so far): {ts}")


def _confirm(prompt: str, stdin: TextIO, out: TextIO) -> bool:
    if not stdin.isatty():
        return False
    out.write(prompt + " [y/N] ")
    out.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    try:
        token = token_from_env(os.environ, args.token_id)
    except ValueError as e:
        _err(str(e))
        return 2
    client = AdminClient(args.gateway, token, args.timeout)
    try:
        return _run(client, args, stdin, stdout)
    except BadInput as e:
        _err(str(e))
        return 2
    except Refused as e:
        extra = f" (stored version is now {e.doc['current_version']})" if "current_version" in e.doc else ""
        _err(f"refused ({e.status} {e.code}): {e.doc.get('message', '')}{extra}")
        return 2
    except Unreachable as e:
        _err(f"gateway unreachable: {e}")
        return 1


def _emit(doc: Any, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _run(client: AdminClient, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    cmd = args.command
    if cmd == "list":
        exps = client.experiments()
        if args.json:
            _emit(exps, True, out)
        else:
            for st in exps:
                c = st["config"]
                flag = " SRM-FLAGGED" if st["srm"]["flagged"] else ""
                out.write(f"{st['name']}\t{c['status']}\t{c['model']}\t{_weights(c)}\tv{st['version']}{flag}\n")
        return 0
    if cmd == "show":
        st = client.show(args.name)
        _emit(st, True, out) if args.json else _show_text(st, out)
        return 0
    if cmd == "history":
        if args.limit < 1:
            raise BadInput("--limit must be at least 1")
        hist = client.history(args.name, args.limit)
        if args.json:
            _emit(hist, True, out)
        else:
            for h in hist:
                out.write(f"v{h['version']}\t{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(h['at']))}\t{h['token_id']}\t{_weights(h['config'])} "
                          f"{h['config']['status']}\t{h.get('reason') or ''}\n")
        return 0
    st = client.show(args.name)
    cfg = dict(st["config"])
    if cmd == "set-weights":
        wanted = parse_weights(args.weights)
        names = [v["name"] for v in cfg["variants"]]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise BadInput(f"unknown variant(s) {', '.join(unknown)} (variants: {', '.join(names)})")
        cfg["variants"] = [{**v, "weight": wanted.get(v["name"], v["weight"])} for v in cfg["variants"]]
    else:
        cfg["status"] = {"pause": "paused", "stop": "stopped", "resume": "running"}[cmd]
    cfg.pop("name", None)
    preview = client.preview(args.name, cfg)
    if cmd == "set-weights" and not args.yes:
        out.write(_moves_text(preview) + "\n")
        if not _confirm(f"save {args.name} version {st['version'] + 1}?", stdin, out):
            _err("not saved (answer y, or pass --yes)")
            return 2
    res = client.put(args.name, cfg, st["version"], args.reason)
    if args.json:
        _emit({"experiment": args.name, "version": res["version"], "moves": preview}, True, out)
    else:
        out.write(_moves_text(preview) + "\n")
        out.write(f"saved {args.name} as version {res['version']}: {_weights(res['state']['config'])} "
                  f"{res['state']['config']['status']}\n")
    return 0
