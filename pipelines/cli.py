"""``python -m pipelines``: run, compile and soak the five Kubeflow pipelines.

    run NAME [--param k=v ...]   run one pipeline locally (kfp.local, SubprocessRunner, no venv,
                                 offline); prints each task's status and duration
    run all                      features, train, synthetic, rollout, ab-report in order
    compile                      write deploy/pipelines/NAME.yaml (byte-for-byte reproducible)
    soak --runs N                run all five N times, each time in a fresh work dir; a table of
                                 runs, successes, rate, p50/max duration; exit 1 below 95 %

Local defaults: work dir ``.pipelines/`` (git-ignored), MLflow ``sqlite:///<workdir>/mlflow/mlflow.db``,
Redis ``$REDIS_URL`` or 127.0.0.1:6379, Feast's sqlite online store. ``rollout`` without
``--param gateway=URL`` starts its own Triton + gateway (runtime/stack.py) for the run, with a
Redis key prefix ``pipelines:<id>:`` that ``ab-report`` then reads (from ``<workdir>/rollout.json``).

Exit status: 0 every pipeline succeeded, 1 a task failed (stderr names it and its error) or the
soak's rate is under 95 %, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DIR = ROOT / "deploy" / "pipelines"
DEFAULT_WORKDIR = ROOT / ".pipelines"
SOAK_BAR = 0.95


class UsageError(Exception):
    pass


def _pipelines() -> dict[str, Any]:
    from pipelines.definitions import PIPELINES
    return PIPELINES


def pipeline_defaults(name: str) -> dict[str, Any]:
    fn = _pipelines()[name]
    sig = inspect.signature(fn.pipeline_func)
    return {k: p.default for k, p in sig.parameters.items()}


def parse_params(name: str, raw: Sequence[str]) -> dict[str, Any]:
    defaults = pipeline_defaults(name)
    out: dict[str, Any] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param: expected KEY=VALUE, got {item!r}")
        if key not in defaults:
            raise UsageError(f"--param {key}: {name} has no such parameter (it has {', '.join(defaults)})")
        kind = type(defaults[key])
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            else:
                out[key] = kind(value)
        except ValueError:
            raise UsageError(f"--param {key}: expected {kind.__name__}, got {value!r}") from None
    return out


# -- the embedded stack for rollout ----------------------------------------------------------

EXPERIMENTS = """experiments:
  - name: clf-demo
    model: clf
    salt: clf-demo-1
    control: a
    variants:
      - {name: a, weight: 100, target: {model: clf, version: "1"}}
      - {name: b, weight: 0, target: {model: clf, version: "1"}}
    guardrails: {max_error_rate: 0.05, max_p99_ms: 1000}
"""


class EmbeddedStack:
    """One Triton (a copy of model_repo/ in the work dir) and one gateway, for a local rollout."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        self.workdir, self.redis_url = workdir, redis_url
        self.prefix = f"pipelines:{uuid.uuid4().hex[:8]}:"
        self.token = uuid.uuid4().hex
        self.triton = self.gateway = None
        self._env_before: dict[str, str | None] = {}

    def __enter__(self) -> "EmbeddedStack":
        from pipelines.context import ServiceMissing, require_redis
        from runtime.stack import GatewayProcess
        from runtime.triton import DEFAULT_REPOSITORY, TritonRuntime, TritonServer
        require_redis(self.redis_url)
        d = self.workdir / "stack"
        if d.exists():
            shutil.rmtree(d)
        (d / "model_repo").mkdir(parents=True)
        shutil.copytree(DEFAULT_REPOSITORY / "clf", d / "model_repo" / "clf")
        (d / "experiments.yaml").write_text(EXPERIMENTS)
        env = {"INFERGATE_ADMIN_TOKENS": f"pipelines:{self.token}", "INFERGATE_REDIS_KEY_PREFIX": self.prefix,
               "INFERGATE_REDIS_URL": self.redis_url}
        for k, v in env.items():
            self._env_before[k] = os.environ.get(k)
            os.environ[k] = v
        try:
            self.triton = TritonServer(TritonRuntime.ensure(), models=["clf"], repository=d / "model_repo",
                                       log_path=d / "triton.log").start()
            self.gateway = GatewayProcess(self.triton.grpc_url, args=[
                "--features", "off", "--experiments-file", str(d / "experiments.yaml"),
                "--model-repository", str(d / "model_repo")], env=env, log_path=d / "gateway.log").start()
        except Exception as exc:
            self.__exit__(None, None, None)
            raise ServiceMissing(f"embedded Triton + gateway did not start: {exc}") from None
        return self

    @property
    def url(self) -> str:
        return self.gateway.url

    def __exit__(self, *exc: object) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.triton is not None:
            self.triton.stop()
        for k, v in self._env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def drop_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (a run's own ``pipelines:<id>:``); returns how many."""
    import redis
    if not prefix.startswith("pipelines:"):
        raise ValueError(f"refusing to delete keys outside pipelines: ({prefix!r})")
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        r.delete(*keys)
    r.close()
    return len(keys)


# -- running ---------------------------------------------------------------------------------

def run_pipeline(name: str, params: dict[str, Any], workdir: Path, *, redis_url: str,
                 log: Path | None = None) -> dict[str, Any]:
    """Run one pipeline with kfp.local; returns {pipeline, status, seconds, tasks, error}."""
    from kfp import local

    from pipelines.context import read_tasks
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    defaults = pipeline_defaults(name)
    args: dict[str, Any] = {"workdir": str(workdir)}
    for key, value in (("redis_url", redis_url),):
        if key in defaults and name != "ab-report":
            args[key] = value
    if name == "features":
        args["project"] = "pipelines"
    args.update(params)
    seen = len(read_tasks(workdir))
    log = log or workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    stack: EmbeddedStack | None = None
    t0 = time.monotonic()
    error = None
    try:
        with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            if name == "rollout" and "gateway" not in params:
                stack = EmbeddedStack(workdir, args.get("redis_url", redis_url)).__enter__()
                args.update(gateway=stack.url, prefix=stack.prefix)
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "kfp-root"),
                       raise_on_error=True)
            _pipelines()[name](**args)
    except Exception as exc:  # noqa: BLE001 - reported below with the failed task's own error
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        if stack is not None:
            stack.__exit__(None, None, None)
    seconds = time.monotonic() - t0
    tasks = [{k: t[k] for k in ("task", "status", "seconds", "error", "result") if k in t}
             for t in read_tasks(workdir)[seen:]]
    failed = next((t for t in tasks if t["status"] == "FAILURE"), None)
    out: dict[str, Any] = {"pipeline": name, "status": "FAILURE" if error or failed else "SUCCESS",
                           "seconds": round(seconds, 2), "tasks": tasks, "log": str(log)}
    if failed:
        out["failed_task"] = failed["task"]
        out["error"] = failed["error"]
    elif error:
        out["error"] = error
    return out


def _print_run(res: dict[str, Any]) -> None:
    print(f"pipeline {res['pipeline']}: {res['status']} in {res['seconds']:.1f}s")
    for t in res["tasks"]:
        brief = json.dumps(t.get("result"), default=str) if t.get("result") else ""
        print(f"  {t['task']:<22} {t['status']:<8} {t['seconds']:>7.2f}s  {brief[:110]}")


def _report_failure(res: dict[str, Any]) -> None:
    where = f"task {res['failed_task']}" if "failed_task" in res else "before any task"
    print(f"error: pipeline {res['pipeline']} failed at {where}: {res.get('error')} (log: {res['log']})",
          file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    names = list(_pipelines()) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in _pipelines():
        raise UsageError(f"NAME: one of {', '.join(_pipelines())} or all, got {args.name!r}")
    if args.name == "all" and args.param:
        raise UsageError("--param: give parameters to one pipeline at a time")
    params = parse_params(args.name, args.param) if args.name != "all" else {}
    results = []
    code = 0
    t0 = time.monotonic()
    for name in names:
        if not args.json:
            print(f"running {name} ...", flush=True)
        res = run_pipeline(name, params, args.workdir, redis_url=args.redis_url)
        results.append(res)
        if not args.json:
            _print_run(res)
        if res["status"] != "SUCCESS":
            _report_failure(res)
            code = 1
            break
    if args.json:
        print(json.dumps(results if args.name == "all" else results[0], indent=1))
    elif len(names) > 1:
        print(f"total {time.monotonic() - t0:.1f}s")
    return code


CONFIGMAP = ROOT / "deploy" / "components" / "pipelines" / "pipelines-configmap.yaml"


def compile_all(out_dir: Path = DEPLOY_DIR, configmap: Path | None = CONFIGMAP) -> list[Path]:
    """Compile every pipeline to ``out_dir/NAME.yaml``; also the kustomize component's ConfigMap
    holding them (``configmap``; None: not written)."""
    from kfp import compiler
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in _pipelines().items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline_func=fn, package_path=str(path))
        paths.append(path)
    if configmap is not None:
        configmap.write_text(configmap_text(paths))
    return paths


def configmap_text(paths: list[Path]) -> str:
    """A ConfigMap with each compiled pipeline as a key (for the KFP API server to upload)."""
    import yaml

    class _Literal(str):
        pass

    def literal(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    dumper = type("Dumper", (yaml.SafeDumper,), {})
    dumper.add_representer(_Literal, literal)
    doc = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "infergate-pipelines", "labels": {"app.kubernetes.io/name": "infergate",
                                                                  "app.kubernetes.io/component": "pipelines"}},
           "data": {p.name: _Literal(p.read_text()) for p in paths}}
    head = "# Generated by `python -m pipelines compile` from deploy/pipelines/*.yaml: do not edit.\n"
    return head + yaml.dump(doc, Dumper=dumper, sort_keys=False, width=1000)


def cmd_compile(args: argparse.Namespace) -> int:
    paths = compile_all(args.out)
    if args.json:
        print(json.dumps([str(p) for p in paths]))
    else:
        for p in paths:
            print(f"wrote {p}")
    return 0


SOAK_PARAMS: dict[str, dict[str, Any]] = {
    # Brief on purpose (the bar is the success rate): smaller tables, a short GAN, short holds.
    "features": {"rows": 4000, "sample": 100},
    "train": {},
    "synthetic": {"steps": 150, "hidden": 64, "holdout": 1000, "rows": 2000},
    "rollout": {"hold_s": 3.0, "rps": 30.0},
    "ab-report": {},
}


def soak(runs: int, base: Path, redis_url: str, *, progress: bool = True, keep: bool = False) -> dict[str, Any]:
    names = list(_pipelines())
    durations: dict[str, list[float]] = {n: [] for n in names}
    ok: dict[str, int] = {n: 0 for n in names}
    attempts: dict[str, int] = {n: 0 for n in names}
    failures: list[dict[str, Any]] = []
    for i in range(runs):
        wd = Path(tempfile.mkdtemp(prefix=f"soak-{i:03d}-", dir=base))
        for name in names:
            res = run_pipeline(name, SOAK_PARAMS.get(name, {}), wd, redis_url=redis_url)
            attempts[name] += 1
            durations[name].append(res["seconds"])
            if res["status"] == "SUCCESS":
                ok[name] += 1
            else:
                failures.append({"run": i, "pipeline": name, "task": res.get("failed_task"),
                                 "error": res.get("error"), "log": res["log"]})
            if progress:
                print(f"run {i + 1}/{runs} {name:<10} {res['status']:<8} {res['seconds']:.1f}s", file=sys.stderr,
                      flush=True)
        timeline = wd / "rollout.json"
        if timeline.is_file():
            with contextlib.suppress(Exception):
                drop_prefix(redis_url, json.loads(timeline.read_text())["prefix"])
        if not keep and not any(f["run"] == i for f in failures):
            shutil.rmtree(wd, ignore_errors=True)
        (base / "soak.json").write_text(json.dumps(_soak_table(i + 1, names, attempts, ok, durations, failures),
                                                   indent=1))
    return _soak_table(runs, names, attempts, ok, durations, failures)


def _soak_table(runs: int, names: list[str], attempts: dict, ok: dict, durations: dict,
                failures: list) -> dict[str, Any]:
    table = []
    for n in names:
        d = durations[n]
        table.append({"pipeline": n, "runs": attempts[n], "successes": ok[n],
                      "rate": round(ok[n] / attempts[n], 4) if attempts[n] else 0.0,
                      "p50_s": round(statistics.median(d), 2) if d else None, "max_s": round(max(d), 2) if d else None})
    return {"runs": runs, "table": table, "failures": failures,
            "passed": all(r["rate"] >= SOAK_BAR for r in table)}


def cmd_soak(args: argparse.Namespace) -> int:
    if args.runs <= 0:
        raise UsageError(f"--runs: must be positive, got {args.runs}")
    base = args.workdir.resolve() / "soak"
    base.mkdir(parents=True, exist_ok=True)
    res = soak(args.runs, base, args.redis_url, progress=not args.json, keep=args.keep)
    res["load_avg"] = os.getloadavg()
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{'pipeline':<10} {'runs':>5} {'ok':>5} {'rate':>7} {'p50 s':>7} {'max s':>7}")
        for r in res["table"]:
            print(f"{r['pipeline']:<10} {r['runs']:>5} {r['successes']:>5} {r['rate']:>7.1%} "
                  f"{r['p50_s']:>7.1f} {r['max_s']:>7.1f}")
        for f in res["failures"]:
            print(f"failed: run {f['run']} {f['pipeline']} task {f['task']}: {f['error']}", file=sys.stderr)
        print("load average: " + " ".join(f"{x:.2f}" for x in res["load_avg"]))
    if not res["passed"]:
        print(f"error: a pipeline is under the {SOAK_BAR:.0%} success bar", file=sys.stderr)
    return 0 if res["passed"] else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")
    common.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="default: %(default)s")
    common.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", parents=[common], help="run one pipeline (or all) locally")
    r.add_argument("name", help="features, train, synthetic, rollout, ab-report, or all")
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    c = sub.add_parser("compile", parents=[common], help="write the compiled YAMLs")
    c.add_argument("--out", type=Path, default=DEPLOY_DIR)
    s = sub.add_parser("soak", parents=[common], help="run all five N times on fresh work dirs")
    s.add_argument("--runs", type=int, default=20)
    s.add_argument("--keep", action="store_true", help="keep the work dirs of successful runs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        return {"run": cmd_run, "compile": cmd_compile, "soak": cmd_soak}[args.cmd](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
