"""`python -m bench.harness`: the high-rate benchmark matrix with correctness checks under load.

    python -m bench.harness [--quick] [--duration S] [--warmup S] [--runs 3] [--out bench/results]
                            [--peers [mlserver,kserve]]

One Triton for the whole run; each gateway configuration is started once, measured at every
concurrency (a warm-up, then `--runs` runs per cell; the cell is their median) and stopped.
Each side runs at its own best Triton queue delay (bench/queue_delay.py): Triton-direct and
gateway_nobatch (single-row calls) at the repository's 100 µs, the batching gateway's targets
at 0 (`--gateway-queue-delay-us 100` measures them as before 2026-12-07); every cell records
the delay it ran with (`triton_queue_delay_us`).
`--interleave` (Triton-direct and one gateway target): both are measured at each concurrency
run by run, in turn (the model reloaded at the side's delay, ~1.5 s, and warmed up 1 s whenever
the side changes), so that each ratio compares runs a minute apart, not targets measured one
after the other while a shared VM drifts; `pair_ratios` in the JSON are the medians of each
run's gateway throughput and p99 over those of the Triton-direct run just before it.
Every run is checked (see bench/checks.py); any violation is recorded in the JSON and makes
the command exit with status 1 after the results are written.

`--peers` (`make bench PEERS=1`) also runs the same cells against Seldon MLServer and KServe's
Python model server serving the same model (bench/peers: each in its own venv, built on first
use), so the "gateway / peer" ratios are measured in the same run.

Client placement: wrk uses one thread (-t1) by default. The box has 2 cores shared by wrk,
the gateway, Triton and its stub; a second wrk thread would only take CPU from the system
under test, and one thread of this Lua script is far from its limit at these rates (wrk's
own CPU seconds are in every cell, so check). wrk is unpinned by default, like the
Triton-direct baseline in FACTS; `--wrk-cpus 1` pins it with taskset (recorded in the JSON).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import checks, promtext, procstat, report, stats
from bench.targets import (ALL_TARGETS, DIRECT_TARGETS, EXTRA_TARGETS, TRITON_PATH, FeatureSetup, TargetSpec, TargetStartError,
                           drop_keys, experiment_weights, prepare_features, probe, start_gateway, target_specs)
from bench.peers.launch import PEERS, PeerError, PeerServer
from bench.queue_delay import DIRECT_US, GATEWAY_US, RELOAD_WARMUP_S, QueueDelay, staged_repository
from bench.wrk import run_wrk, wrk_binary, wrk_command
from runtime.stack import GatewayProcess
from runtime.triton import TritonRuntime, TritonServer

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
QUICK_TARGETS = ("triton_direct", "gateway_full")
GATEWAY_COUNTER = "infergate_requests_total"
TRITON_COUNTER = "nv_inference_request_success"


@dataclass(frozen=True)
class Plan:
    targets: tuple[str, ...]
    connections: tuple[int, ...]
    duration_s: float
    warmup_s: float
    runs: int
    threads: int
    wrk_cpus: str | None
    features: str
    redis_url: str
    sigmas: float
    out: Path
    plots: bool
    entities: str = "datagen"   # who the feature store holds: datagen users or synthetic ones
    peers: tuple[str, ...] = ()  # Python serving peers measured after our targets (bench/peers)
    direct_delay_us: int = DIRECT_US    # Triton's queue delay for Triton-direct (bench/queue_delay.py)
    gateway_delay_us: int = GATEWAY_US  # ... and behind the gateway's targets
    interleave: bool = False  # Triton-direct and one gateway target, run by run (Harness.run_interleaved)


def parse_args(argv: list[str] | None = None) -> Plan:
    p = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="c=1 and c=64, triton_direct and gateway_full only, shorter cells (< 3 min)")
    p.add_argument("--duration", type=float, help="seconds per run (default 10, quick 5)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per cell (default 3, quick 2)")
    p.add_argument("--runs", type=int, default=3, help="runs per cell; the cell is their median")
    p.add_argument("--targets", help=f"comma-separated subset of {','.join(ALL_TARGETS + EXTRA_TARGETS)}")
    p.add_argument("--connections", help="comma-separated wrk -c values (default 1,16,64,256)")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (capped at the connections)")
    p.add_argument("--wrk-cpus", help="pin wrk with taskset -c CPUS (e.g. 1); default unpinned")
    p.add_argument("--features", choices=("redis", "off"), default="redis",
                   help="the full path's features (falls back to off when Redis is not usable)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--entities", choices=("datagen", "synthetic"), default="datagen",
                   help="users in the feature store: generated by features/repo/datagen.py, or sampled "
                        "from the synthetic-data generator into a Feast project of their own")
    p.add_argument("--sigmas", type=float, default=4.0, help="split tolerance in binomial std errors")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--peers", nargs="?", const=",".join(PEERS), default="",
                   help=f"also measure these serving peers (default all: {','.join(PEERS)}); their venvs "
                        "are built under .peers/ on first use")
    p.add_argument("--gateway-queue-delay-us", type=int, default=GATEWAY_US, metavar="US",
                   help="the model's Triton queue delay while the gateway's targets run (default "
                        f"%(default)s: the gateway batches; {DIRECT_US} = Triton-direct's setting, as before 2026-12-07)")
    p.add_argument("--direct-queue-delay-us", type=int, default=DIRECT_US, metavar="US",
                   help="... while Triton-direct runs (default %(default)s: the model repository's)")
    p.add_argument("--interleave", action="store_true",
                   help="with --targets triton_direct (or triton_direct_ab),<one other target>: "
                        "alternate the two run by run")
    a = p.parse_args(argv)
    peers = tuple(x for x in a.peers.split(",") if x)
    if any(x not in PEERS for x in peers):
        p.error(f"--peers takes a subset of {','.join(PEERS)}")
    targets = tuple(a.targets.split(",")) if a.targets else (QUICK_TARGETS if a.quick else ALL_TARGETS)
    conns = (tuple(int(c) for c in a.connections.split(",")) if a.connections
             else ((1, 64) if a.quick else (1, 16, 64, 256)))
    duration = a.duration if a.duration is not None else (5.0 if a.quick else 10.0)
    warmup = a.warmup if a.warmup is not None else (2.0 if a.quick else 3.0)
    if a.runs < 1 or duration < 1 or any(c < 1 for c in conns):
        p.error("--runs, --duration and connections must be at least 1")
    if a.gateway_queue_delay_us < 0 or a.direct_queue_delay_us < 0:
        p.error("queue delays must be >= 0 microseconds")
    # Triton first: its cells are the yardstick every ratio divides by.
    targets = tuple(sorted(targets, key=lambda t: (t not in DIRECT_TARGETS,
                                                   ALL_TARGETS.index(t) if t in ALL_TARGETS else 99)))
    if a.interleave and (len(targets) != 2 or targets[0] not in DIRECT_TARGETS):
        p.error(f"--interleave takes two --targets: one of {', '.join(DIRECT_TARGETS)} and one other")
    return Plan(targets, conns, duration, warmup, a.runs, a.threads, a.wrk_cpus, a.features,
                a.redis_url, a.sigmas, a.out, not a.no_plots, a.entities, peers,
                a.direct_queue_delay_us, a.gateway_queue_delay_us, a.interleave)


class Harness:
    """Runs the plan against one Triton; collects cells and correctness violations."""

    def __init__(self, plan: Plan, triton: TritonServer, raw_dir: Path) -> None:
        self.plan = plan
        self.triton = triton
        self.delay = QueueDelay(triton)
        self.raw_dir = raw_dir
        self.cells: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.placement: dict[str, Any] = {}
        self._token = secrets.token_hex(8)
        self._redis_pids = procstat.find_pids("redis-server", f":{_port_of(plan.redis_url)}")
        self._run_no = 0
        # Unit ids differ per harness run too: with the same ids every time, the same cell drew
        # the same (unlucky) set of units in every sitting and failed the 4-sigma split check
        # 3 times in 17 at 4.0-4.5 sigma (gateway_full c=16 run 3, seen by the c16 helper).
        self._tag_salt = secrets.token_hex(3)

    def __repr__(self) -> str:
        return f"<Harness cells={len(self.cells)} violations={len(self.violations)}>"

    def _delay_for(self, spec: TargetSpec) -> int:
        # Each side at its own best setting: Triton batches single-row calls (Triton-direct's,
        # gateway_nobatch's) in its queue delay; a batching gateway's calls are batches already
        # (bench/queue_delay.py).
        return self.plan.gateway_delay_us if spec.batches else self.plan.direct_delay_us

    def _start(self, spec: TargetSpec) -> tuple[GatewayProcess | None, str, dict[str, float], list[procstat.Group]]:
        """The target's gateway (None for Triton-direct), the URL wrk loads, the experiment's
        weights and the process groups whose CPU is counted."""
        gw: GatewayProcess | None = None
        if spec.is_gateway:
            gw = start_gateway(spec, self.triton.grpc_url, self.raw_dir / f"{spec.name}.log", self._token,
                               self.triton.http_url)
        try:
            url = f"{gw.url}/v1/infer" if gw else f"http://{self.triton.http_url}{TRITON_PATH}"
            weights: dict[str, float] = {}
            if gw is not None:
                reason = probe(gw.url, spec.mode)
                if reason:
                    raise TargetStartError(f"{spec.name}: probe request failed: {reason}")
                weights = experiment_weights(gw.url, self._token)
            groups = self._groups(gw)
        except BaseException:
            _stop(gw)
            raise
        self.placement[spec.name] = {g.name: [procstat.affinity(p) for p in g.pids] for g in groups}
        return gw, url, weights, groups

    def run_target(self, spec: TargetSpec) -> None:
        self.delay.set(self._delay_for(spec))
        gw, url, weights, groups = self._start(spec)
        try:
            for conns in self.plan.connections:
                self._cell(spec, url, gw, conns, weights, groups)
        finally:
            _stop(gw)

    def run_interleaved(self, direct: TargetSpec, spec: TargetSpec) -> None:
        """Triton-direct and one gateway target at each concurrency, run by run in turn; the
        model is reloaded at each side's queue delay when the side changes, then warmed up."""
        p = self.plan
        self.delay.set(self._delay_for(spec))
        gw, url, weights, groups = self._start(spec)
        try:
            sides = [(direct, *self._start(direct)[1:]), (spec, url, weights, groups)]
            for conns in p.connections:
                print(f"[bench] {direct.name} / {spec.name} c={conns}: interleaved, warm-up {p.warmup_s:g}s each, "
                      f"{p.runs} x {p.duration_s:g}s each", file=sys.stderr, flush=True)
                runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s, *_ in sides}
                if p.warmup_s > 0:
                    for s, u, _, _ in sides:
                        self.delay.set(self._delay_for(s))
                        self._wrk(s, u, conns, p.warmup_s)
                for i in range(p.runs):
                    for s, u, w, g in sides:
                        if self.delay.set(self._delay_for(s)) and p.warmup_s > 0:
                            self._wrk(s, u, conns, min(p.warmup_s, RELOAD_WARMUP_S))
                        runs[s.name].append(self._run(s, u, gw if s is spec else None, conns, w, g, i))
                for s, *_ in sides:
                    self.cells.append(self._make_cell(s, conns, runs[s.name]))
        finally:
            _stop(gw)

    def run_peer(self, name: str) -> None:
        """The same cells against a Python serving peer (KServe v2 JSON, Triton's body)."""
        peer = PEERS[name]
        spec = TargetSpec(peer.target, "triton", note=peer.label, peer=name)
        server = PeerServer(peer, self.raw_dir / "peers", self.raw_dir / f"{peer.target}.log").start()
        try:
            groups = [procstat.Group("server", (server.process.pid,), descendants=True)]
            self.placement[spec.name] = {g.name: [procstat.affinity(p) for p in g.pids] for g in groups}
            for conns in self.plan.connections:
                self._cell(spec, server.infer_url, None, conns, {}, groups)
        finally:
            server.stop()

    def _groups(self, gw: GatewayProcess | None) -> list[procstat.Group]:
        tpid = self.triton.process.pid
        groups = [procstat.Group("triton", (tpid,)),
                  procstat.Group("triton_stubs", (tpid,), only_descendants=True)]
        if gw is not None and gw.process is not None:
            groups.insert(0, procstat.Group("gateway", (gw.process.pid,), descendants=True))
        if self._redis_pids:
            groups.append(procstat.Group("redis", self._redis_pids))
        return groups

    def _cell(self, spec: TargetSpec, url: str, gw: GatewayProcess | None, conns: int,
              weights: dict[str, float], groups: list[procstat.Group]) -> None:
        p = self.plan
        print(f"[bench] {spec.name} c={conns}: warm-up {p.warmup_s:g}s, {p.runs} x {p.duration_s:g}s",
              file=sys.stderr, flush=True)
        if p.warmup_s > 0:
            self._wrk(spec, url, conns, p.warmup_s)
        runs = []
        for i in range(p.runs):
            runs.append(self._run(spec, url, gw, conns, weights, groups, i))
        self.cells.append(self._make_cell(spec, conns, runs))

    def _make_cell(self, spec: TargetSpec, conns: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
        cell = stats.median_cell(spec.name, conns, runs)
        cell["cpu_us_per_request"] = stats.cpu_per_request(runs)
        cell["loadavg_1m"] = stats.median_of(r["loadavg_1m"] for r in runs)
        cell["features"] = spec.features
        if not spec.peer:
            cell["triton_queue_delay_us"] = self._delay_for(spec)
        if spec.is_gateway:
            cell["triton_infer"] = "http" if spec.triton_http else "grpc"
        if spec.note:
            cell["note"] = spec.note
        return cell

    def _wrk(self, spec: TargetSpec, url: str, conns: int, seconds: float):
        self._run_no += 1
        cmd = wrk_command(url, spec.mode, conns, seconds, threads=self.plan.threads,
                          tag=f"r{self._run_no}{self._tag_salt}-", cpus=self.plan.wrk_cpus)
        return run_wrk(cmd, timeout_s=seconds + 30)

    def _run(self, spec: TargetSpec, url: str, gw: GatewayProcess | None, conns: int,
             weights: dict[str, float], groups: list[procstat.Group], index: int) -> dict[str, Any]:
        metrics_url = f"{gw.url}/metrics" if gw else None
        g0 = _settled(metrics_url, GATEWAY_COUNTER) if metrics_url else {}
        t0 = _settled(self.triton.metrics_url, TRITON_COUNTER)
        load = os.getloadavg()[0]
        cpu0 = procstat.snapshot(groups)
        res = self._wrk(spec, url, conns, self.plan.duration_s)
        cpu1 = procstat.snapshot(groups)
        g1 = _settled(metrics_url, GATEWAY_COUNTER) if metrics_url else {}
        t1 = _settled(self.triton.metrics_url, TRITON_COUNTER)
        cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
        cpu["wrk"] = res.cpu_s

        where = f"{spec.name} c={conns} run {index + 1}"
        threads = max(1, min(self.plan.threads, conns))
        problems = checks.check_answers(res.requests, res.responses, res.sent, res.socket_errors,
                                        conns, threads)
        extra: dict[str, Any] = {"unanswered": res.unanswered, "loadavg_1m": load,
                                 "cpu_us_per_request": {k: round(v * 1e6 / res.requests, 1)
                                                        for k, v in cpu.items()} if res.requests else {}}
        if spec.peer is not None:  # no server-side counter to compare with: every answer a 2xx
            if res.non2xx:
                problems.append(f"{res.non2xx} non-2xx answers")
            avg = None
        elif gw is not None:
            server = promtext.delta(promtext.by_label(g1, "infergate_requests_total", "variant"),
                                    promtext.by_label(g0, "infergate_requests_total", "variant"))
            problems += checks.check_counts(res.variants, server, res.unanswered, res.non2xx)
            split, split_problems = checks.check_split(res.variants, weights, self.plan.sigmas)
            problems += split_problems
            extra.update(server_variants=server, split=split.to_dict(),
                         server_excess=sum(server.values()) - sum(res.variants.values()))
            avg = promtext.avg_batch(g0, g1, "infergate_batch_rows_sum", "infergate_batch_rows_count")
        else:
            ab = spec.mode == "triton_ab"   # the answers counted by their model_version
            served = {v: promtext.total(t1, "nv_inference_request_success", model="clf", version=v)
                      - promtext.total(t0, "nv_inference_request_success", model="clf", version=v)
                      for v in (("1", "2") if ab else ("1",))}
            seen = res.variants if ab else {"1": res.responses - res.non2xx}
            problems += checks.check_counts(seen, served, res.unanswered, res.non2xx)
            if ab:
                extra["server_variants"] = served
            extra["server_requests"] = sum(served.values())
            avg = None
        triton_avg = (promtext.avg_batch(t0, t1, "nv_inference_count", "nv_inference_exec_count")
                      if spec.peer is None else None)
        if problems:
            msg = f"{where}: " + "; ".join(problems)
            self.violations.append(msg)
            print(f"[bench] CORRECTNESS VIOLATION {msg}", file=sys.stderr, flush=True)
        extra["violations"] = problems
        return stats.run_record(res.to_dict(), avg, triton_avg, cpu, extra)


def _stop(gw: GatewayProcess | None) -> None:
    if gw is not None:
        gw.stop()
        drop_keys(gw)


def _settled(url: str, counter: str, timeout: float = 5.0, pause: float = 0.1) -> promtext.Samples:
    """Scrape once the server has finished everything it was sent: no request in flight and
    `counter` unchanged between two scrapes. Requests wrk abandoned at its stop (and the
    warm-up's) are then counted in the interval they belong to, not the next one."""
    deadline = time.monotonic() + timeout
    last = promtext.scrape(url)
    while True:
        time.sleep(pause)
        now = promtext.scrape(url)
        idle = promtext.total(now, "infergate_in_flight_requests") <= 0
        if (idle and promtext.total(now, counter) == promtext.total(last, counter)) \
                or time.monotonic() > deadline:
            return now
        last = now


def _port_of(url: str) -> str:
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    return hostport.rsplit(":", 1)[1] if ":" in hostport else "6379"


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    if wrk_binary() is None:
        print("wrk is not installed: `make wrk` (apt-get install wrk)", file=sys.stderr)
        return 2
    started = time.monotonic()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw_dir = plan.out / "raw" / stamp
    raw_dir.mkdir(parents=True, exist_ok=True)
    machine = report.machine_info()

    wants_features = any(t in ("gateway_full", "gateway_nobatch") for t in plan.targets)
    features = FeatureSetup("off", note="--features off" if wants_features else "no full-path target")
    if plan.features == "redis" and any(t in ("gateway_full", "gateway_nobatch") for t in plan.targets):
        features = prepare_features(raw_dir / "feature-repo", plan.redis_url, raw_dir / "features.log",
                                    entities=plan.entities)
        if features.mode != "redis":
            print(f"[bench] NOTE: full path runs with features off: {features.note}", file=sys.stderr)

    gateway_extra = ("--redis-url", plan.redis_url)
    specs = target_specs(list(plan.targets), features, gateway_extra)
    # A copy of the repository, so that each target's queue delay can be set by a reload.
    repo = staged_repository(raw_dir / "model_repo", delay_us=plan.direct_delay_us)
    triton = TritonServer(TritonRuntime.ensure(), models=["clf"], repository=repo,
                          log_path=raw_dir / "triton.log").start()
    try:
        h = Harness(plan, triton, raw_dir)
        i = 0
        if plan.interleave:
            h.run_interleaved(*specs)
            i = len(specs)
        while i < len(specs):
            spec = specs[i]
            try:
                h.run_target(spec)
            except TargetStartError as exc:
                if spec.features != "redis":
                    raise
                # The feature path is young: measure the rest without it, and say so loudly.
                features = FeatureSetup("off", note=f"the gateway with --features redis did not serve: {exc}")
                print(f"[bench] NOTE: {features.note}; falling back to features off", file=sys.stderr)
                fallback = {s.name: s for s in target_specs(["gateway_full", "gateway_nobatch"], features,
                                                            gateway_extra)}
                specs = [fallback.get(s.name, s) for s in specs]
                continue
            i += 1
        for name in plan.peers:
            try:
                h.run_peer(name)
            except PeerError as exc:
                h.violations.append(f"peer {name}: {exc}")
                print(f"[bench] PEER FAILED {name}: {exc}", file=sys.stderr, flush=True)
    finally:
        triton.stop()

    machine["loadavg_end"] = list(os.getloadavg())
    unsteady = stats.unsteady(h.cells)
    doc = {
        "schema": 1,
        "created_utc": stamp,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "bench.harness",
                                                     *(sys.argv[1:] if argv is None else argv)]),
        "plan": {"targets": list(plan.targets), "peers": {n: PEERS[n].label for n in plan.peers},
                 "connections": list(plan.connections),
                 "duration_s": plan.duration_s, "warmup_s": plan.warmup_s, "runs": plan.runs,
                 "wrk_threads": plan.threads, "wrk_cpus": plan.wrk_cpus, "split_sigmas": plan.sigmas,
                 "triton_queue_delay_us": {"direct": plan.direct_delay_us, "gateway": plan.gateway_delay_us},
                 "interleave": plan.interleave},
        "features": {"mode": features.mode, "note": features.note,
                     "full_path_body": "entity" if features.mode == "redis" else "v1 full input"},
        "machine": {**machine, "placement": h.placement},
        "wall_s": round(time.monotonic() - started, 1),
        "correctness": {"ok": not h.violations, "violations": h.violations},
        "ratios": {**stats.ratios(h.cells), **stats.peer_ratios(h.cells)},
        "unsteady": unsteady,
        # --interleave: each run's gateway figure over the Triton-direct run just before it, median
        **({"pair_ratios": stats.pair_ratios(h.cells, direct=plan.targets[0])} if plan.interleave else {}),
        "cells": h.cells,
    }
    latest, dated = report.write_results(doc, plan.out, stamp)
    plots = report.plot(h.cells, plan.out) if plan.plots else []
    print(report.summary_table(h.cells))
    print(f"ratios: {doc['ratios']}")
    if unsteady:
        print(f"[bench] unsteady cells (fastest run over slowest > {stats.UNSTEADY_SPREAD}; the machine "
              f"swung, so their medians and the ratios built on them are weak): " + "; ".join(unsteady),
              file=sys.stderr)
    if plan.interleave:
        print(f"pair ratios (median of each run over the {plan.targets[0]} run before it): {doc['pair_ratios']}")
    print(f"wrote {latest} and {dated}" + (f"; plots {', '.join(p.name for p in plots)}" if plots else ""))
    if h.violations:
        print(f"[bench] FAILED: {len(h.violations)} correctness violation(s):", file=sys.stderr)
        for v in h.violations:
            print(f"  - {v}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
