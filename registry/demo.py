"""`make rollout-demo`: a trained version from register to champion under wrk load (c=64).

Two Triton replicas share a temporary copy of model_repo/, one gateway sends to both, MLflow
is a fresh embedded sqlite store. The demo trains and registers a version, then runs the
rollout (deploy at 10 %, hold each step, promote) while wrk drives the gateway. It prints one
row per step and fails (exit 1) unless every request was answered 2xx and the gateway counted
each exactly once (bench/checks.py, the benchmark harness's own checks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from bench.checks import check_answers, check_counts
from bench.wrk import run_wrk, wrk_command
from registry.cli import format_row
from registry.gateway_client import GatewayAdmin
from registry.lifecycle import Lifecycle
from registry.rollout import Rollout, RolloutLock, parse_plan
from registry.signature import Signature
from registry.store import ModelStore
from registry.train import train
from runtime.stack import GatewayProcess
from runtime.triton import DEFAULT_REPOSITORY, TritonRuntime, TritonServer

EXPERIMENTS = """experiments:
  - name: clf-demo
    model: clf
    salt: clf-demo-1
    control: a
    variants:
      - {name: a, weight: 100, target: {model: clf, version: "1"}}
      - {name: b, weight: 0, target: {model: clf, version: "1"}}
    guardrails: {max_error_rate: 0.02, max_p99_ms: 250}
"""


def served_counts(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "infergate_requests_total" and s.labels.get("model") == "clf":
                out[s.labels["variant"]] = out.get(s.labels["variant"], 0.0) + s.value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m registry.demo", description=__doc__.splitlines()[0])
    p.add_argument("--plan", default="10,50,100")
    p.add_argument("--hold", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    plan = parse_plan(args.plan)
    base = Path(tempfile.mkdtemp(prefix="infergate-rollout-demo-"))
    repo = base / "model_repo"
    shutil.copytree(DEFAULT_REPOSITORY, repo)
    (base / "experiments.yaml").write_text(EXPERIMENTS)
    token = uuid.uuid4().hex
    prefix = f"rollout-demo-{uuid.uuid4().hex[:8]}:"
    os.environ.update({"INFERGATE_ADMIN_TOKENS": f"demo:{token}", "INFERGATE_REDIS_KEY_PREFIX": prefix})
    print(f"demo dir {base}", flush=True)
    runtime = TritonRuntime.ensure()
    tritons: list[TritonServer] = []
    try:
        for i in range(2):
            tritons.append(TritonServer(runtime, models=["clf"], repository=repo,
                                        log_path=base / f"triton{i}.log").start())
        gw_args = ["--features", "off", "--experiments-file", str(base / "experiments.yaml"),
                   "--model-repository", str(repo), "--triton-url", tritons[1].grpc_url]
        with GatewayProcess(tritons[0].grpc_url, args=gw_args, log_path=base / "gateway.log") as gw:
            return _run(args, plan, base, gw, token)
    finally:
        for t in tritons:
            t.stop()


def _run(args: argparse.Namespace, plan: list[float], base: Path, gw: GatewayProcess, token: str) -> int:
    metrics = train(base / "trained")
    print(f"trained: test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_rows']} rows", flush=True)
    store = ModelStore(f"sqlite:///{base / 'mlflow.db'}")
    store.client.search_registered_models()   # creates the tables: not part of the timing
    admin = GatewayAdmin(gw.url, token)
    lc = Lifecycle(store, admin, report=lambda line: print(f"  {line}", flush=True))

    duration = args.hold * len(plan) + 25
    cmd = wrk_command(gw.url + "/v1/infer", "v1", args.connections, duration, tag=f"demo{uuid.uuid4().hex[:6]}")
    before = served_counts(gw.url)
    result: dict = {}
    loader = threading.Thread(target=lambda: result.update(wrk=run_wrk(cmd, duration + 30)), daemon=True)
    loader.start()
    time.sleep(3.0)   # load running before anything changes

    t0 = time.monotonic()
    ref = store.register("clf", base / "trained", Signature.for_folder(base / "trained"), alias="challenger")
    t_registered = time.monotonic() - t0
    print(f"registered clf/{ref.version} in {t_registered:.2f}s", flush=True)
    rollout = Rollout(lc, ref, "clf-demo", "b", plan, args.hold, RolloutLock("clf-demo"),
                      row=lambda row: print(format_row(row), flush=True))
    code, rows = rollout.run()
    loader.join(duration + 40)
    wrk = result.get("wrk")
    if wrk is None:
        print("wrk did not finish", flush=True)
        return 1
    after = served_counts(gw.url)
    server = {v: after.get(v, 0.0) - before.get(v, 0.0) for v in after}
    deploy = next(r for r in rows if r.get("step") == "deploy")
    problems = check_answers(wrk.requests, wrk.responses, wrk.sent, wrk.socket_errors, args.connections, 1)
    problems += check_counts(wrk.variants, server, wrk.unanswered, wrk.non2xx)
    if wrk.non2xx:
        problems.append(f"{wrk.non2xx} requests answered non-2xx")
    figures = {
        "register_s": round(t_registered, 3),
        "deploy_s": deploy["timings_s"],
        "register_to_taking_traffic_s": round(t_registered + deploy["timings_s"]["total_s"], 3),
        "replicas": len(deploy["replicas"]),
        "steps": [r for r in rows if isinstance(r.get("step"), int)],
        "outcome": "promoted" if code == 0 else "rolled back",
        "wrk": wrk.to_dict(), "gateway_counted": server, "problems": problems,
    }
    print(f"register -> loaded on {figures['replicas']} Triton replicas -> taking traffic: "
          f"{figures['register_to_taking_traffic_s']:.2f}s (register {t_registered:.2f}s, "
          f"fetch+check {deploy['timings_s']['fetch_check_s']:.2f}s, load+ready+verify "
          f"{deploy['timings_s']['load_ready_s']:.2f}s, switch {deploy['timings_s']['switch_s']:.3f}s)")
    print(f"wrk: {wrk.requests} requests, {wrk.rps:.0f} req/s, non-2xx {wrk.non2xx}, socket errors "
          f"{wrk.socket_errors}; client per variant {wrk.variants}; gateway counted "
          f"{ {k: int(v) for k, v in server.items()} } (unanswered at stop {wrk.unanswered})")
    print(f"outcome: {figures['outcome']}; checks: {'ok' if not problems else problems}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1, default=str))
    return 0 if code == 0 and not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
