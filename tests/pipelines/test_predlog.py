"""The gateway's prediction log and POST /v1/outcomes against a real Triton and Redis, joined by
the ab-report pipeline; and the log's bounds (buffer, stream length, Redis down)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from gateway.predlog import PredictionLog, parse_outcomes, read_predictions
from pipelines.cli import run_pipeline
from runtime.stack import GatewayProcess
from tests.conftest import gateway_env

pytestmark = pytest.mark.timeout(600)


class _Req:
    request_id, unit_id = "r1", "u1"


class _Assign:
    experiment, variant = "e", "a"

    class target:  # noqa: N801
        version = "1"


def test_outcomes_are_validated_field_by_field() -> None:
    assert parse_outcomes({"request_id": "r", "value": 1})[0]["value"] == "1.0"
    assert parse_outcomes({"outcomes": [{"unit_id": 7, "label": 2, "experiment": "x"}]})[0]["unit"] == "7"
    bad = [
        ([], "body: must be a JSON object"),
        ({"outcomes": []}, "outcomes: must be a non-empty array"),
        ({"outcomes": [{"request_id": "r", "value": 1}] * 1001}, "outcomes: at most 1000"),
        ({"value": 1}, "request_id: a request_id or a unit_id is required"),
        ({"request_id": "r"}, "label: exactly one of label and value"),
        ({"request_id": "r", "label": 1, "value": 1}, "label: exactly one of label and value"),
        ({"request_id": "r", "label": 1.5}, "label: must be an integer"),
        ({"request_id": "r", "value": float("nan")}, "value: must be a finite number"),
        ({"request_id": "r", "value": True}, "value: must be a finite number"),
        ({"request_id": 5, "value": 1}, "request_id: must be a string"),
        ({"unit_id": "", "value": 1}, "unit_id: must be a string or an integer"),
        ({"outcomes": [{"request_id": "r", "value": 1}, {"request_id": "r", "value": 1, "x": 1}]},
         "outcomes[1].x: unknown field"),
    ]
    for doc, says in bad:
        with pytest.raises(ValueError) as exc:
            parse_outcomes(doc)
        assert str(exc.value).startswith(says), (doc, str(exc.value))


async def test_a_full_buffer_drops_and_counts_and_redis_down_never_raises(redis_url: str, prefix: str) -> None:
    reg = CollectorRegistry()
    down = aioredis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5, socket_timeout=0.5)
    log = PredictionLog(down, prefix, reg, buffer=10, batch=4)
    out = np.zeros((1, 4), np.float32)
    for _ in range(15):
        log.record(_Req, _Assign, out, 0.001)       # never blocks, never raises
    assert log.dropped == 5 and len(log._buf) == 10
    assert await log.flush() == 0 and log.dropped == 9     # Redis down: that batch is lost, counted
    assert reg.get_sample_value("infergate_prediction_log_dropped_total") == 9
    await log.stop(timeout=2.0)
    assert log.dropped == 15 and not log._buf
    await down.aclose()

    r = aioredis.from_url(redis_url)
    log = PredictionLog(r, prefix, CollectorRegistry(), maxlen=100, buffer=5000, batch=500, interval_s=0.01)
    log.start()
    for _ in range(3000):
        log.record(_Req, _Assign, out, 0.001)
    deadline = time.monotonic() + 10
    while log.sent < 3000 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await log.stop()
    assert log.sent == 3000 and log.dropped == 0
    # One entry per batch; MAXLEN ~ 100/500 entries: Redis trims by whole macro nodes (100
    # entries), so the stream stays under ~100 entries, far below the 3000 sent (6+ entries).
    n = await r.xlen(f"{prefix}predictions")
    rows = read_predictions(await r.xrange(f"{prefix}predictions"))
    assert 1 <= n <= 101 and len(rows) == sum(int(f[b"n"]) for _, f in await r.xrange(f"{prefix}predictions"))
    assert rows[-1] == {"rid": "r1", "unit": "u1", "exp": "e", "var": "a", "ver": "1", "ts": rows[-1]["ts"],
                        "ms": 1.0, "cls": [0]}
    await r.aclose()


@pytest.fixture
def gw(triton, tmp_path: Path, prefix: str, redis_url: str):
    with GatewayProcess(triton.grpc_url, args=["--features", "off"], env=gateway_env(prefix),
                        log_path=tmp_path / "gateway.log") as g:
        yield g


def test_predictions_and_outcomes_reach_redis_and_the_ab_report(gw: GatewayProcess, prefix: str, redis_url: str,
                                                               tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    tag = uuid.uuid4().hex[:6]
    answers = {}
    t_start = time.time()
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        for i in range(200):
            body = {"id": f"{tag}-{i}", "parameters": {"unit_id": f"user-{i}"},
                    "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 20],
                                "data": rng.standard_normal(20).tolist()}]}
            r = c.post("/v2/models/clf/infer", json=body)
            assert r.status_code == 200, r.text
            doc = r.json()
            answers[body["id"]] = (doc["parameters"]["variant"] if "parameters" in doc else None,
                                   int(np.argmax(doc["outputs"][0]["data"])))
        outcomes = [{"request_id": rid, "value": 1.0 if cls == 0 else 0.0} for rid, (_, cls) in answers.items()]
        r = c.post("/v1/outcomes", json={"outcomes": outcomes[:150]})
        assert r.status_code == 202 and r.json() == {"accepted": 150}
        for o in outcomes[150:]:
            assert c.post("/v1/outcomes", json=o).status_code == 202
        r = c.post("/v1/outcomes", json={"outcomes": [{"request_id": "x", "value": "high"}]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_field"
        assert r.json()["message"].startswith("outcomes[0].value:")
        r = c.post("/v1/outcomes", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_json"
        r = c.post("/v1/outcomes", content=b"a,b", headers={"content-type": "text/csv"})
        assert r.status_code == 415
        r = c.post("/v1/outcomes", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/v1/outcomes").status_code == 405
        spec = c.get("/openapi.json").json()
        assert "post" in spec["paths"]["/v1/outcomes"]

    sync = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    while len(read_predictions(sync.xrange(f"{prefix}predictions"))) < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = read_predictions(sync.xrange(f"{prefix}predictions"))
    assert len(rows) == 200 and sync.xlen(f"{prefix}outcomes") == 200
    by_rid = {row["rid"]: row for row in rows}
    assert set(by_rid) == set(answers)
    for rid, (_, cls) in answers.items():
        row = by_rid[rid]
        assert row["exp"] == "clf-demo" and row["var"] in ("a", "b") and row["ver"] in ("1", "2")
        assert row["cls"] == [cls] and row["unit"] == f"user-{rid.split('-')[1]}" and row["ms"] > 0
    sync.close()

    # The ab-report pipeline joins them: a 50/50 window over these requests.
    wd = tmp_path / "work"
    wd.mkdir()
    (wd / "rollout.json").write_text(json.dumps({
        "experiment": "clf-demo", "redis_url": redis_url, "prefix": prefix,
        "steps": [{"step": 1, "weights": {"a": 50, "b": 50}, "start": t_start - 1, "end": time.time() + 1}]}))
    res = run_pipeline("ab-report", {}, wd, redis_url=redis_url)
    assert res["status"] == "SUCCESS", json.dumps(res, indent=1)[-3000:]
    doc = json.loads(next((wd / "kfp-root").glob("ab-report-*/analyse/analysis/analysis.json")).read_text())
    assert doc["predictions"] == 200 and doc["outcomes_joined"] == 200
    assert sum(v["requests"] for v in doc["variants"].values()) == 200
    assert doc["test"] == "two-sided two-proportion z-test (pooled)" and 0 <= doc["p_value"] <= 1
    for v in doc["variants"].values():
        lo, hi = v["ci95"]
        assert lo <= v["outcome_mean"] <= hi and v["latency_p99_ms"] >= v["latency_p50_ms"] > 0
    assert doc["srm"]["p_value"] is not None and doc["srm"]["flagged"] is False
    md = next((wd / "kfp-root").glob("ab-report-*/report/markdown")).read_text()
    html = next((wd / "kfp-root").glob("ab-report-*/report/html")).read_text()
    assert "two-proportion z-test" in md and "SRM" in md and html.count("data:image/png;base64,") == 2


def test_predicted_classes_in_one_call_match_the_per_record_argmax() -> None:
    from gateway.predlog import _classes_of, predicted_classes

    rng = np.random.default_rng(5)
    batch = rng.random((64, 3)).astype(np.float32)
    one_row = [{"PROBS": batch[i:i + 1]} for i in range(10)]
    assert predicted_classes(one_row) == [[int(np.argmax(batch[i]))] for i in range(10)]
    several = [{"PROBS": batch[0:3]}, {"PROBS": batch[3:4]}, {"PROBS": batch[4:4]}, {"PROBS": batch[4:9]}]
    assert predicted_classes(several) == [np.argmax(batch[a:b], axis=1).tolist()
                                          for a, b in ((0, 3), (3, 4), (4, 4), (4, 9))]
    # records that cannot be joined take the per-record path, with the same answers
    mixed = [{"P": batch[:2]}, {"P": rng.random((2, 5))}, {"P": np.arange(6, dtype=np.int64).reshape(3, 2)},
             {"P": np.array(["a", "b"])[None, :]}, {"P": batch[0]}, {}, {"P": np.zeros((2, 0), np.float32)},
             batch[5:7]]
    expected = [_classes_of(next(iter(o.values()), None) if isinstance(o, dict) else o) for o in mixed]
    assert predicted_classes(mixed) == expected
    assert expected[:3] == [np.argmax(batch[:2], axis=1).tolist(), np.argmax(mixed[1]["P"], axis=1).tolist(),
                            [1, 1, 1]]
    assert expected[3:7] == [[], [], [], []] and expected[7] == np.argmax(batch[5:7], axis=1).tolist()
    assert predicted_classes([{"T": np.array(["x"])[None, :]}] * 3) == [[], [], []]  # not numeric: none
    assert predicted_classes([]) == []
