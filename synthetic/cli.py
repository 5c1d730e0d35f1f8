"""``python -m synthetic``: train, import, report, publish, sample, list, entities.

Exit status: 0 done, 2 bad input (unknown dataset or version, a table the codec refuses, a
publish the gate refuses: the message names the failed check), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["main"]


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--mlflow-uri", help="tracking/registry URI (default: $INFERGATE_MLFLOW_URI or .mlflow/mlflow.db)")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a generator, evaluate it, register a version")
    t.add_argument("--dataset", default="user_features")
    t.add_argument("--table", type=Path, help="parquet/CSV file to train on (default: the built-in dataset)")
    t.add_argument("--rows", type=int, default=60_000, help="rows generated for the built-in dataset")
    t.add_argument("--holdout", type=int, default=10_000, help="real rows kept out of training for the report")
    t.add_argument("--data-seed", type=int, default=7)
    t.add_argument("--derive", action="store_true",
                   help="compute the built-in dataset's formula columns (spend_30d, ctr_7d) after sampling "
                        "instead of modelling them with the GAN")
    t.add_argument("--steps", type=int, default=4000, help="generator steps (the reproducible stop; the demo: 4000)")
    t.add_argument("--max-seconds", type=float, help="stop earlier after this much training time")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--hidden", type=int, default=256)
    t.add_argument("--noise-dim", type=int, default=64)
    t.add_argument("--batch", type=int, default=512)
    t.add_argument("--eval-every", type=int, default=500, help="progress C2ST every N steps (0: never)")
    t.add_argument("--out", type=Path, help="also keep the export + report + plots in this directory")
    t.add_argument("--no-register", action="store_true", help="do not log to MLflow (needs --out)")
    t.add_argument("--publish", action="store_true", help="publish the new version if it passes the gate")

    i = sub.add_parser("import", help="register an exported generator directory (e.g. synthetic/demo)")
    i.add_argument("directory", type=Path)
    i.add_argument("--dataset", default="user_features")
    i.add_argument("--publish", action="store_true")

    r = sub.add_parser("report", help="print a version's quality report")
    r.add_argument("--dataset", default="user_features")
    r.add_argument("--version", type=int, help="default: the latest")
    r.add_argument("--json", action="store_true")

    pb = sub.add_parser("publish", help="set the 'published' alias; refused if the report fails the gate")
    pb.add_argument("--dataset", default="user_features")
    pb.add_argument("--version", type=int, required=True)

    s = sub.add_parser("sample", help="sample rows (no torch needed)")
    s.add_argument("--dataset", default="user_features")
    s.add_argument("--version", type=int, help="default: the published version")
    s.add_argument("--export", type=Path, help="sample from an export directory instead of MLflow")
    s.add_argument("--rows", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--format", choices=("csv", "json", "arrow", "parquet"), default="csv")
    s.add_argument("--out", type=Path, help="file to write (default: stdout; arrow/parquet need --out)")

    e = sub.add_parser("entities", help="fill a separate Feast project (Redis) with synthetic users for load tests")
    e.add_argument("--workdir", type=Path, required=True, help="the Feast repo directory to create")
    e.add_argument("--rows", type=int, default=10_000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--project", default="infergate_synthetic")
    e.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    e.add_argument("--export", type=Path, default=Path(__file__).resolve().parent / "demo",
                   help="generator export to sample from (default: the shipped demo)")
    e.add_argument("--version", type=int, help="sample from this registry version of user_features instead")

    ls = sub.add_parser("list", help="datasets and versions in the registry")
    ls.add_argument("--json", action="store_true")
    return p


def _store(args: argparse.Namespace):
    from synthetic.store import Store

    return Store(args.mlflow_uri)


def _print_report(rep: dict[str, Any]) -> None:
    sd, pv = rep["sdmetrics"], rep["privacy"]
    bars = rep["bars"]
    lines = [
        f"dataset {rep['dataset']} ({rep['source']})",
        f"rows: train {rep['rows']['train']}, holdout {rep['rows']['holdout']}, synthetic {rep['rows']['synthetic']}",
        f"C2ST ROC AUC           {rep['c2st_auc']:.4f}  (bar <= {bars['c2st_auc_max']}; real vs real {rep['c2st_auc_real_vs_real']:.4f})",
        f"sdmetrics overall      {sd['overall']:.4f}  (bar >= {bars['quality_min']}; shapes {sd['column_shapes']:.4f}, "
        f"pair trends {sd['column_pair_trends']:.4f} over {sd['pairs_scored']} pairs)",
        f"privacy close fraction {pv['close_fraction']:.4%} (bar < {bars['close_fraction_max']:.0%}; "
        f"threshold {pv['real_to_train_p1']:.5f}, exact copies {pv['exact_copies']})",
        "column shapes: " + ", ".join(f"{k} {v:.3f}" for k, v in sd["columns"].items()),
        "worst pairs: " + ", ".join(f"{'/'.join(p['columns'])} {p['score']:.3f}" for p in sd["worst_pairs"]),
    ]
    tr = rep.get("training") or {}
    if tr.get("steps_done") is not None:
        lines.append(f"training: {tr['steps_done']} steps, {tr['train_seconds']} s, torch {tr.get('torch')}")
    gate = rep["gate"]
    lines.append("gate: PASSED" if gate["passed"] else "gate: FAILED: " + "; ".join(gate["failures"]))
    print("\n".join(lines))


def _evaluate_and_files(sampler, table, directory: Path) -> dict[str, Any]:
    from synthetic.plots import write_plots
    from synthetic.quality import evaluate

    rep = evaluate(sampler, table)
    data = sampler.sample(rep["rows"]["synthetic"], rep["sample_seed"])
    write_plots({k: table.holdout[k] for k in sampler.columns},
                {k: data[:, i] for i, k in enumerate(sampler.columns)}, directory / "plots", table.name)
    (directory / "report.json").write_text(json.dumps(rep, indent=1, sort_keys=True) + "\n")
    return rep


def _cmd_train(args: argparse.Namespace) -> int:
    from synthetic.datasets import load_dataset
    from synthetic.train import TrainConfig, train

    if args.no_register and args.out is None:
        raise UsageError("--no-register: needs --out, or the trained generator is lost")
    try:
        cfg = TrainConfig(steps=args.steps, max_seconds=args.max_seconds, seed=args.seed, threads=args.threads,
                          hidden=args.hidden, noise_dim=args.noise_dim, batch=args.batch, eval_every=args.eval_every)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    table = load_dataset(args.dataset, rows=args.rows, holdout=args.holdout, seed=args.data_seed, table=args.table,
                         derive=args.derive)
    result = train(table, cfg, progress=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "export"
        result.sampler.save(out)
        (out / "history.json").write_text(json.dumps(list(result.history), indent=1) + "\n")
        rep = _evaluate_and_files(result.sampler, table, out)
        _print_report(rep)
        if not args.no_register:
            store = _store(args)
            version = store.add_version(args.dataset, out, rep, list(result.history))
            print(f"registered synthetic-{args.dataset} version {version} at {store.uri}")
            if args.publish:
                store.publish(args.dataset, version)
                print(f"published synthetic-{args.dataset} version {version}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from synthetic.sampler import Sampler

    directory = args.directory
    if not (directory / "generator.json").is_file():
        raise UsageError(f"directory: {directory} holds no generator.json")
    Sampler.load(directory)  # refuse a broken export before it is registered
    report_file = directory / "report.json"
    if not report_file.is_file():
        raise UsageError(f"directory: {directory} holds no report.json (train writes one)")
    rep = json.loads(report_file.read_text())
    history_file = directory / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else None
    store = _store(args)
    version = store.add_version(args.dataset, directory, rep, history)
    print(f"registered synthetic-{args.dataset} version {version} at {store.uri}")
    if args.publish:
        store.publish(args.dataset, version)
        print(f"published synthetic-{args.dataset} version {version}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    store = _store(args)
    info = store.info(args.dataset, args.version)
    rep = store.report(args.dataset, info.version)
    if args.json:
        print(json.dumps({"version": info.version, "aliases": list(info.aliases), "report": rep}, indent=1))
    else:
        print(f"synthetic-{args.dataset} version {info.version} aliases {list(info.aliases)}")
        _print_report(rep)
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    _store(args).publish(args.dataset, args.version)
    print(f"published synthetic-{args.dataset} version {args.version}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from synthetic.encode import MAX_ROWS, to_arrow_table, to_csv, to_json
    from synthetic.sampler import Sampler
    from synthetic.store import PUBLISHED

    if not 0 < args.rows <= 10 * MAX_ROWS:
        raise UsageError(f"rows: must be in 1..{10 * MAX_ROWS}, got {args.rows}")
    if args.format in ("arrow", "parquet") and args.out is None:
        raise UsageError(f"--out: needed for --format {args.format}")
    if args.export is not None:
        if not (args.export / "generator.json").is_file():
            raise UsageError(f"export: {args.export} holds no generator.json")
        sampler, version = Sampler.load(args.export), None
    else:
        info, sampler = _store(args).sampler(args.dataset, args.version,
                                             None if args.version is not None else PUBLISHED)
        version = info.version
    data = sampler.sample(args.rows, args.seed)
    if args.format == "csv":
        text = to_csv(sampler.columns, data)
    elif args.format == "json":
        text = to_json(args.dataset, version, args.seed, sampler.columns, data).decode()
    else:
        table = to_arrow_table(sampler.columns, data)
        if args.format == "arrow":
            import pyarrow as pa

            with pa.OSFile(str(args.out), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, args.out)
        print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)
        return 0
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_entities(args: argparse.Namespace) -> int:
    from synthetic.entities import populate
    from synthetic.sampler import Sampler

    if not 0 < args.rows <= 10_000_000:
        raise UsageError(f"rows: must be in 1..10000000, got {args.rows}")
    if args.version is not None:
        _, sampler = _store(args).sampler("user_features", args.version)
    elif (args.export / "generator.json").is_file():
        sampler = Sampler.load(args.export)
    else:
        raise UsageError(f"export: {args.export} holds no generator.json")
    populate(sampler, args.workdir, rows=args.rows, seed=args.seed, project=args.project, redis_url=args.redis_url)
    print(f"synthetic: {args.rows} synthetic users in Feast project {args.project!r} ({args.workdir})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = [v.summary() for ds in store.datasets() for v in store.versions(ds)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no synthetic datasets at {store.uri}")
    for r in rows:
        print(f"{r['dataset']:<20} v{r['version']:<4} {','.join(r['aliases']) or '-':<10} "
              f"c2st {r['c2st_auc']}  quality {r['quality']}  close {r['close_fraction']}  gate {r['gate']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from synthetic.codec import TableError
    from synthetic.store import GateFailed, NotFound

    args = _parser().parse_args(argv)
    cmds = {"train": _cmd_train, "import": _cmd_import, "report": _cmd_report, "publish": _cmd_publish,
            "sample": _cmd_sample, "list": _cmd_list, "entities": _cmd_entities}
    try:
        return cmds[args.cmd](args)
    except GateFailed as exc:
        print(f"publish refused: {exc}", file=sys.stderr)
        return 2
    except (UsageError, TableError, NotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
