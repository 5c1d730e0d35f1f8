"""`python -m router list|show|history|set-weights|pause|resume` against a real gateway (its
admin listener), Redis and Triton: output, --json, exit codes, and that a refused command
changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from router.allocate import BUCKETS
from router.assign import CompiledExperiment
from router.config import parse_experiment
from runtime.triton import ROOT
from tests.console.conftest import AUTH, TOKEN, Stack

NAME = "cli-exp"


def run(st: Stack, *args: str, token: str | None = TOKEN, gateway: str | None = None,
        stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "INFERGATE_ADMIN_TOKENS"}
    if token is not None:
        env["INFERGATE_ADMIN_TOKENS"] = f"ops:{token}"
    return subprocess.run([sys.executable, "-m", "router", *args, "--gateway", gateway or st.admin],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=30)


def _body(a: float, b: float, status: str = "running") -> dict[str, Any]:
    return {"model": "cli-model", "salt": "cli-salt", "status": status, "control": "a", "variants": [
        {"name": "a", "weight": a, "target": {"model": "clf", "version": "1"}},
        {"name": "b", "weight": b, "target": {"model": "clf", "version": "2"}}]}


@pytest.fixture(scope="module")
def st(console_stack: Stack) -> Stack:
    r = httpx.put(f"{console_stack.admin}/admin/experiments/{NAME}", json=_body(50, 50), headers=AUTH)
    assert r.status_code == 200, r.text
    return console_stack


def test_list_and_show(st: Stack) -> None:
    r = run(st, "list", "--json")
    assert r.returncode == 0, r.stderr
    names = {x["name"]: x for x in json.loads(r.stdout)}
    assert names[NAME]["config"]["model"] == "cli-model"
    r = run(st, "list")
    line = next(l for l in r.stdout.splitlines() if l.startswith(NAME + "\t"))
    assert line.split("\t")[1:4] == ["running", "cli-model", "a=50 b=50"]
    r = run(st, "show", NAME)
    assert r.returncode == 0 and "a (control): weight 50 %  -> clf:1" in r.stdout and "SRM (units)" in r.stdout
    r = run(st, "show", "no-such", "--json")
    assert r.returncode == 2 and "not_found" in r.stderr and r.stdout == ""


def test_bad_input_is_refused_with_exit_2_and_changes_nothing(st: Stack) -> None:
    version = st.state(name=NAME)["version"]
    cases = {("a=70", "b=20"): "weights must add up to 100",
             ("a=70", "c=30"): "unknown variant(s) c (variants: a, b)",
             ("a=seventy",): "is not a number",
             ("a=70.005", "b=29.995"): "not a multiple of 0.01",
             ("a70",): "VARIANT=PERCENT"}
    for weights, message in cases.items():
        r = run(st, "set-weights", NAME, *weights, "--yes")
        assert r.returncode == 2, (weights, r.stdout, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # Not a terminal and no --yes: it shows what would move, then refuses.
    r = run(st, "set-weights", NAME, "a=30", "b=70")
    assert r.returncode == 2 and "moves 2000 of 10000 buckets" in r.stdout and "not saved" in r.stderr
    assert st.state(name=NAME)["version"] == version


def test_set_weights_prints_the_units_that_move_then_saves(st: Stack) -> None:
    before = st.state(name=NAME)
    r = run(st, "set-weights", NAME, "a=80", "b=20", "--yes", "--reason", "ramp down b")
    assert r.returncode == 0, r.stderr
    # The move the router makes: every bucket whose variant differs between the two tables.
    old = CompiledExperiment(parse_experiment({**_body(50, 50), "name": NAME}))
    new = CompiledExperiment(parse_experiment({**_body(80, 20), "name": NAME}))
    moved = sum(o != n for o, n in zip(old.owner, new.owner))
    assert moved == 3000 and f"moves {moved} of {BUCKETS} buckets (30.00 % of units" in r.stdout
    assert f"saved {NAME} as version {before['version'] + 1}: a=80 b=20 running" in r.stdout
    after = st.state(name=NAME)
    assert [v["weight"] for v in after["config"]["variants"]] == [80, 20]
    h = run(st, "history", NAME, "--json")
    first = json.loads(h.stdout)[0]
    assert first["token_id"] == "ops" and first["reason"] == "ramp down b" and first["version"] == after["version"]
    j = run(st, "set-weights", NAME, "a=80", "b=20", "--yes", "--json")
    assert j.returncode == 0 and json.loads(j.stdout)["moves"]["buckets_moved"] == 0


def test_pause_and_resume(st: Stack) -> None:
    r = run(st, "pause", NAME, "--reason", "investigating")
    assert r.returncode == 0, r.stderr
    assert st.state(name=NAME)["config"]["status"] == "paused"
    assert "paused" in run(st, "history", NAME).stdout.splitlines()[0]
    r = run(st, "resume", NAME)
    assert r.returncode == 0 and st.state(name=NAME)["config"]["status"] == "running"


def test_unreachable_and_unauthorised(st: Stack) -> None:
    r = run(st, "list", gateway="http://127.0.0.1:9")
    assert r.returncode == 1 and "gateway unreachable" in r.stderr
    r = run(st, "list", token="wrong-token")
    assert r.returncode == 2 and "unauthorized" in r.stderr
    r = run(st, "list", token=None)
    assert r.returncode == 2 and "INFERGATE_ADMIN_TOKENS is not set" in r.stderr


def test_preview_route_matches_the_router_tables_and_stores_nothing(st: Stack) -> None:
    state = st.state(name=NAME)
    body = {**state["config"], "status": "paused"}
    r = httpx.post(f"{st.admin}/admin/experiments/{NAME}/preview", json=body, headers=AUTH)
    assert r.status_code == 200
    doc = r.json()
    # Paused: every unit of b goes to the control a.
    b_buckets = state["allocation"]["buckets"]["b"]
    assert doc["buckets_moved"] == b_buckets and doc["transitions"] == [{"from": "b", "to": "a", "buckets": b_buckets}]
    assert doc["confirm"] is True and doc["version"] == state["version"]
    bad = httpx.post(f"{st.admin}/admin/experiments/{NAME}/preview", json={**body, "control": "zz"}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"] == "unknown_variant"
    assert httpx.post(f"{st.admin}/admin/experiments/{NAME}/preview", json=body).status_code == 401
    assert st.state(name=NAME) ["version"] == state["version"]


def test_set_weights_asks_on_a_terminal(st: Stack) -> None:
    import pty

    def ask(answer: str) -> tuple[int, str]:
        master, slave = pty.openpty()
        env = {**os.environ, "INFERGATE_ADMIN_TOKENS": f"ops:{TOKEN}"}
        proc = subprocess.Popen([sys.executable, "-m", "router", "set-weights", NAME, "a=60", "b=40",
                                 "--gateway", st.admin], stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        os.close(slave)
        os.write(master, answer.encode())
        out, err = proc.communicate(timeout=30)
        os.close(master)
        return proc.returncode, out + err

    version = st.state(name=NAME)["version"]
    rc, out = ask("n\n")
    assert rc == 2 and "moves" in out and f"save {NAME} version {version + 1}? [y/N]" in out and "not saved" in out
    assert st.state(name=NAME)["version"] == version
    rc, out = ask("y\n")
    assert rc == 0 and f"saved {NAME} as version {version + 1}: a=60 b=40" in out, out
