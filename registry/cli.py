"""`python -m registry`: register, deploy, rollout, promote, rollback, status (and train).

Exit status: 0 done (rollout: promoted), 2 bad input (nothing changed), 3 rollout rolled
back, 4 another rollout of the experiment is running, 1 anything else (MLflow, the gateway
or Redis unreachable). Progress goes to stderr, results to stdout (`--json`: one JSON
document, or one JSON line per rollout step).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from registry.errors import BadInput, LifecycleError

log = logging.getLogger("infergate.registry")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m registry", description=__doc__.splitlines()[0])
    p.add_argument("--mlflow-uri", help="tracking/registry URI (default: $INFERGATE_MLFLOW_URI or the "
                                        "embedded sqlite store in .mlflow/)")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, gateway: bool = True) -> None:
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        if gateway:
            from registry.gateway_client import DEFAULT_GATEWAY
            sp.add_argument("--gateway", default=DEFAULT_GATEWAY, help="gateway URL (admin API)")
            sp.add_argument("--token-id", help="which INFERGATE_ADMIN_TOKENS entry to use (default: first)")
            sp.add_argument("--model-repository", type=Path,
                            help="Triton's model repository (default: what the gateway reports)")

    r = sub.add_parser("register", help="register a Triton version folder; prints the version")
    r.add_argument("--model", required=True)
    r.add_argument("--path", required=True, type=Path, help="a Triton version folder (model.py + weights)")
    r.add_argument("--alias")
    common(r, gateway=False)

    t = sub.add_parser("train", help="fit a small classifier on the feature table into a version folder")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--seed", type=int, default=11)
    common(t, gateway=False)

    d = sub.add_parser("deploy", help="load a version on every Triton replica and route a variant to it")
    _version_args(d)
    d.add_argument("--experiment", required=True)
    d.add_argument("--variant", required=True)
    d.add_argument("--weight", type=float, required=True, help="percent of units")
    common(d)

    ro = sub.add_parser("rollout", help="deploy, ramp through --plan holding each step, promote or roll back")
    _version_args(ro)
    ro.add_argument("--experiment", required=True)
    ro.add_argument("--variant", default="b")
    ro.add_argument("--plan", default="10,50,100")
    ro.add_argument("--hold", type=float, default=5.0, help="seconds per step")
    common(ro)

    pr = sub.add_parser("promote", help="make a deployed version the control and alias it champion")
    _version_args(pr)
    pr.add_argument("--experiment", required=True)
    pr.add_argument("--variant", help="the treatment serving it (default: found by version)")
    pr.add_argument("--to-alias", default="champion")
    common(pr)

    rb = sub.add_parser("rollback", help="treatment to 0 %% and off its version (alias kept)")
    rb.add_argument("--experiment", required=True)
    rb.add_argument("--variant", default="b")
    common(rb)

    st = sub.add_parser("status", help="versions, aliases, experiment weights, Triton and batchers")
    st.add_argument("--model", required=True)
    st.add_argument("--experiment")
    common(st)
    return p


def _version_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, help="registered model name")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--alias")
    g.add_argument("--version")


def _out(args: argparse.Namespace, doc: Any, text: str) -> None:
    print(json.dumps(doc, default=str) if args.json else text, flush=True)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _lifecycle(args: argparse.Namespace, store: Any) -> Any:
    from registry.gateway_client import GatewayAdmin, token_from_env
    from registry.lifecycle import Lifecycle
    gw = GatewayAdmin(args.gateway, token_from_env(token_id=args.token_id))
    return Lifecycle(store, gw, repository=args.model_repository, report=_progress)


def format_row(row: dict[str, Any]) -> str:
    weights = " ".join(f"{k}={v:g}%" for k, v in row["weights"].items())
    cells = []
    for name, f in row["variants"].items():
        p99 = f"{f['p99_ms']:g}ms" if f["p99_ms"] is not None else "-"
        cells.append(f"{name}: {f['rps']:>8.1f} req/s {f['errors']:>4} err p99 {p99:>7}")
    return f"step {row['step']}  {weights:<16} guardrails={row['guardrails']:<17} " + " | ".join(cells)


def run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from registry.train import train
        metrics = train(args.out, seed=args.seed)
        _out(args, {"path": str(args.out), **metrics},
             f"{args.out}  (test accuracy {metrics['test_accuracy']:.4f})")
        return 0

    from registry.store import ModelStore
    store = ModelStore(args.mlflow_uri)

    if args.command == "register":
        from registry.signature import Signature
        folder = args.path
        if not (folder / "model.py").is_file():
            raise BadInput(f"--path: {folder} is not a Triton version folder (no model.py)")
        sig = Signature.for_folder(folder)
        ref = store.register(args.model, folder, sig, alias=args.alias)
        _out(args, ref.to_dict(), ref.version)
        return 0

    if args.command == "status":
        return _status(args, store)

    lc = _lifecycle(args, store)
    if args.command == "deploy":
        ref = store.resolve(args.model, alias=args.alias, version=args.version)
        res = lc.deploy(ref, args.experiment, args.variant, args.weight)
        _out(args, res, f"{ref.uri} serves {args.experiment}/{args.variant} at {args.weight:g}% as "
                        f"Triton version {res['triton_version']} ({res['timings_s']['total_s']}s)")
        return 0
    if args.command == "promote":
        ref = store.resolve(args.model, alias=args.alias, version=args.version)
        res = lc.promote(ref, args.experiment, args.variant, alias=args.to_alias)
        _out(args, res, f"{ref.uri} is {args.experiment}'s control; {ref.model}@{args.to_alias} = {ref.version}")
        return 0
    if args.command == "rollback":
        res = lc.rollback(args.experiment, args.variant)
        _out(args, res, f"{args.experiment}/{args.variant} at 0%" + ("" if res["changed"] else " (already)"))
        return 0
    if args.command == "rollout":
        from registry.rollout import Rollout, RolloutLock, parse_plan
        plan = parse_plan(args.plan)
        if args.hold <= 0:
            raise BadInput(f"--hold: must be positive seconds, got {args.hold:g}")
        ref = store.resolve(args.model, alias=args.alias, version=args.version)
        ttl = max(30.0, 3 * args.hold)
        ro = Rollout(lc, ref, args.experiment, args.variant, plan, args.hold, RolloutLock(args.experiment, ttl_s=ttl),
                     row=lambda row: print(json.dumps(row) if args.json else format_row(row), flush=True))
        code, rows = ro.run()
        last = rows[-1]
        if not args.json:
            print("promoted" if code == 0 else f"rolled back (guardrails {last.get('guardrails')})", flush=True)
        else:
            print(json.dumps(last, default=str), flush=True)
        return code
    raise BadInput(f"unknown command {args.command!r}")


def _status(args: argparse.Namespace, store: Any) -> int:
    doc: dict[str, Any] = {"model": args.model, "aliases": store.aliases(args.model),
                           "versions": [v.to_dict() for v in store.versions(args.model)]}
    lines = [f"{args.model}: aliases " + (", ".join(f"{a}={v}" for a, v in sorted(doc["aliases"].items())) or "-")]
    for v in doc["versions"]:
        tv = v["tags"].get("infergate.triton_version", "-")
        lines.append(f"  version {v['version']:>3}  triton {tv:>3}  {' '.join(v['aliases'])}")
    if args.experiment:
        lc = _lifecycle(args, store)
        state = lc.gateway.experiment(args.experiment)
        guard = state.get("guardrails") or {"state": "off"}
        replicas = lc.gateway.triton()
        targets = lc.gateway.targets()
        doc.update({"experiment": {"name": args.experiment, "version": state.get("version"),
                                   "variants": state["config"]["variants"], "guardrails": guard},
                    "triton": replicas, "targets": targets})
        lines.append(f"{args.experiment} (config v{state.get('version')}), guardrails {guard.get('state')}")
        for v in state["config"]["variants"]:
            lines.append(f"  {v['name']}: {v['weight']:g}% -> {v['target']['model']}:{v['target'].get('version')}")
        lines.append("triton: " + ", ".join(f"{r['url']} {'up' if r['up'] else 'DOWN'}" for r in replicas["replicas"]))
        for t in targets:
            lines.append(f"  batcher {t['model']}:{t['version']} {t['state']} queued {t['queued_rows']} "
                         f"in flight {t['in_flight']}")
    _out(args, doc, "\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except LifecycleError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        log.exception("unexpected error")
        return 1
