"""End to end: a bad model version at 10 % behind two real gateways and a real Triton is rolled
back by the guardrails alone, within 10 s of the breach's onset, once, with the reason in the
history, while ≤ 0.5 % of all requests in the run fail. The healthy treatment before it is
never rolled back.

The bad version (runtime/badmodel.py) fails every request with a row whose last input is in
the top 10 % of N(0, 1); it is served from a temporary copy of the model repository by this
test's own Triton. Load: two closed-loop clients (one per gateway), each request a new unit.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import orjson
import pytest
import yaml

from faults.load import http_request, run_load
from runtime.badmodel import write_bad_version
from runtime.modelgen import INPUT_WIDTH
from runtime.stack import GatewayProcess
from runtime.triton import DEFAULT_REPOSITORY, TritonRuntime, TritonServer

TOKEN = "guard-t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}
GUARDS = {"max_error_rate": 0.02, "max_p99_ms": 250}
HEALTHY_S = 8.0  # b -> v2 (healthy) at 10 % first
AFTER_ONSET_S = 24.0  # then b -> v3 (bad), and the run goes on this long
CONCURRENCY = 6  # per gateway
THINK_S = 0.04  # per connection: ~250-300 req/s in all on an idle machine


def experiment(b_version: str) -> dict:
    return {"name": "clf-demo", "model": "clf", "salt": "guard-e2e", "control": "a",
            "variants": [{"name": "a", "weight": 90, "target": {"model": "clf", "version": "1"}},
                         {"name": "b", "weight": 10, "target": {"model": "clf", "version": b_version}}],
            "guardrails": GUARDS}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    tmp = tmp_path_factory.mktemp("guard-e2e")
    repo = tmp / "models"
    shutil.copytree(DEFAULT_REPOSITORY, repo)
    write_bad_version(repo, from_version=2, version=3, fail_share=0.1)
    exp_file = tmp / "experiments.yaml"
    exp_file.write_text(yaml.safe_dump({"experiments": [experiment("2")]}))
    env = {"INFERGATE_REDIS_KEY_PREFIX": f"test-guard-{uuid.uuid4().hex[:8]}:",
           "INFERGATE_ADMIN_TOKENS": f"ops:{TOKEN}"}
    with TritonServer(TritonRuntime.ensure(), models=["clf"], repository=repo, log_path=tmp / "triton.log") as triton:
        gws = [GatewayProcess(triton.grpc_url, args=["--features", "off", "--experiments-file", str(exp_file)],
                              env=env, log_path=tmp / f"gateway-{i}.log") for i in (1, 2)]
        try:
            for gw in gws:
                gw.start()
            yield gws[0], gws[1]
        finally:
            for gw in gws:
                gw.stop()


def _request_maker(seed: int):
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((4096, INPUT_WIDTH)).astype(np.float32).tolist()

    def make(i: int) -> bytes:
        body = orjson.dumps({"model": "clf", "unit_id": f"unit-{seed}-{i}", "inputs": rows[i % len(rows)]})
        return http_request("/v1/infer", body)
    return make


def _rollbacks_counted(metrics_text: str) -> float:
    m = re.search(r'^router_guardrail_rollbacks_total\{experiment="clf-demo",variant="b"\} (\S+)$',
                  metrics_text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_bad_version_is_rolled_back_within_10s_once(stack) -> None:
    one, two = stack
    t0 = time.perf_counter()
    marks: dict[str, float] = {}
    done = asyncio.Event()

    async def operator() -> dict:
        async with httpx.AsyncClient(base_url=one.url, headers=AUTH, timeout=5.0) as admin:
            await asyncio.sleep(HEALTHY_S)
            healthy = (await admin.get("/admin/experiments/clf-demo")).json()["guardrails"]
            res = await admin.put("/admin/experiments/clf-demo", json=experiment("3"),
                                  headers={"x-change-reason": "deploy v3 to b", "if-match": "0"})
            assert res.status_code == 200, res.text
            marks["onset"] = time.perf_counter() - t0
            while time.perf_counter() - t0 < marks["onset"] + 15:
                state = (await admin.get("/admin/experiments/clf-demo")).json()
                if state["config"]["variants"][1]["weight"] == 0:
                    marks["rolled_back_seen"] = time.perf_counter() - t0
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(max(0.0, marks["onset"] + AFTER_ONSET_S - (time.perf_counter() - t0)))
            done.set()
            return healthy

    loads = [run_load("127.0.0.1", gw.port, _request_maker(i), concurrency=CONCURRENCY, give_up_s=5.0,
                      stop=done.is_set, t0=t0, think_s=THINK_S, max_requests=200_000)
             for i, gw in enumerate((one, two))]
    healthy, *runs = await asyncio.gather(operator(), *loads)
    outcomes = [o for r in runs for o in r.outcomes]
    failed = [o for o in outcomes if o.status != 200]
    failed_share = len(failed) / len(outcomes)

    async with httpx.AsyncClient(headers=AUTH, timeout=5.0) as c:
        hist = (await c.get(f"{one.url}/admin/experiments/clf-demo/history")).json()["history"]
        state = (await c.get(f"{two.url}/admin/experiments/clf-demo")).json()
        counted = sum([_rollbacks_counted((await c.get(f"{gw.url}/metrics")).text) for gw in (one, two)])

    report = {"requests": len(outcomes), "req_per_s": round(len(outcomes) / outcomes[-1].t_end, 1),
              "failed": len(failed), "failed_share_pct": round(100 * failed_share, 3),
              "by_error": dict(Counter(f"{o.status}:{o.error}" for o in failed)),
              "onset_to_rollback_s": round(hist[0]["at"] - hist[1]["at"], 2),
              "onset_to_rollback_seen_s": round(marks.get("rolled_back_seen", float("nan")) - marks["onset"], 2),
              "last_failure_after_onset_s": round(max((o.t_end for o in failed), default=marks["onset"])
                                                  - marks["onset"], 2),
              "figures": hist[0].get("figures", {}).get("variants")}
    print("guardrail e2e:", json.dumps(report))

    assert healthy["state"] == "ok", healthy  # the healthy treatment was judged, and kept
    assert [h["token_id"] for h in hist] == ["guardrail", "ops"]  # one rollback, none before the bad deploy
    assert hist[1]["reason"] == "deploy v3 to b"
    assert "b: error rate" in hist[0]["reason"] and hist[0]["figures"]["variants"]["b"]["errors"] > 0
    assert report["onset_to_rollback_s"] <= 10.0, report
    assert report["last_failure_after_onset_s"] <= 10.5, report  # includes the other gateway's reload
    assert failed_share <= 0.005, report
    assert set(report["by_error"]) == {"503:model_unavailable"}, report
    assert [v["weight"] for v in state["config"]["variants"]] == [100, 0]  # the other gateway has it too
    assert state["guardrails"]["state"] == "rolled_back" and state["guardrails"]["last_rollback"]["variant"] == "b"
    assert counted == 1.0  # counted once, by the replica that applied it
