"""A rollout of a slow version is stopped by the gateway's guardrails: the CLI exits 3.

The version answers correctly (so deploy's check against its pyfunc passes) but sleeps 400 ms
per execution, over the experiment's `max_p99_ms: 250`. Under wrk load the gateway's
guardrail state turns `breached` (and, on the next evaluation, the gateway rolls back by
itself); the rollout reads it during its first hold, rolls back (treatment at 0 %, off the
bad version) and exits 3 without reaching the next step.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from _helpers import admin, cli
from conftest import EXPERIMENT
from bench.wrk import run_wrk, wrk_binary, wrk_command
from runtime.badmodel import write_bad_version
from tests.conftest import require


@pytest.fixture(scope="module")
def slow_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from registry.train import train
    repo = tmp_path_factory.mktemp("slow") / "repo"
    train(repo / "clf" / "1", seed=5, max_iter=30)
    return write_bad_version(repo, from_version=1, version=2, fail_share=0.0, slow_ms=400)


def test_rollout_of_a_slow_version_is_rolled_back_by_the_guardrails_and_exits_3(
        stack2, slow_version, mlflow_sqlite, monkeypatch, capsys):
    require(wrk_binary() is not None, "wrk not installed (make wrk)")
    env = {**stack2.env, "INFERGATE_MLFLOW_URI": mlflow_sqlite}
    code, out, err = cli(monkeypatch, capsys, env, "register", "--model", "clf", "--path", str(slow_version),
                         "--alias", "challenger", "--json")
    assert code == 0, err
    cmd = wrk_command(stack2.url + "/v1/infer", "v1", 32, 40, tag=f"slow{uuid.uuid4().hex[:6]}")
    result: dict = {}
    loader = threading.Thread(target=lambda: result.update(wrk=run_wrk(cmd, 80)), daemon=True)
    loader.start()
    time.sleep(2.0)
    t0 = time.monotonic()
    code, out, err = cli(monkeypatch, capsys, env, "rollout", "--model", "clf", "--alias", "challenger",
                         "--experiment", EXPERIMENT, "--variant", "b", "--plan", "10,100", "--hold", "25",
                         "--gateway", stack2.url, "--json")
    took = time.monotonic() - t0
    loader.join(90)
    assert code == 3, (code, out, err)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert rows[-1]["step"] == "rollback", rows
    assert rows[-1]["guardrails"] in ("breached", "rolled_back"), rows[-1]
    # It never reached the 100 % step: the breach ended the first hold.
    assert [r["weights"] for r in rows if isinstance(r.get("step"), int)] == [{"a": 90, "b": 10}], rows
    assert took < 25 + 15, took
    state = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}")
    weights = {v["name"]: v["weight"] for v in state["config"]["variants"]}
    assert weights == {"a": 100, "b": 0}, state["config"]
    history = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}/history?limit=10")["history"]
    # Whoever acted first (the gateway after two breaching evaluations, or the rollout on the
    # first `breached` it reads), one change after the deploy took b to 0 and says why.
    reasons = [(h["token_id"], h.get("reason")) for h in history]
    print("\nhistory:", reasons)
    after_deploy = reasons[:reasons.index(next(r for r in reasons if "deploy" in (r[1] or "")))]
    assert 1 <= len(after_deploy) <= 2, reasons
    assert any(t == "guardrail" or "guardrail" in (why or "") for t, why in after_deploy), reasons
    assert "wrk" in result, "wrk did not finish"
    print("\n" + "\n".join(json.dumps(r) for r in rows), f"\nrollout took {took:.1f}s; wrk {result['wrk']}")
