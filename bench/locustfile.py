"""Locust load for SREs: skewed users, a mix of /v1/infer and KServe v2, and an SRM verdict.

    locust -f bench/locustfile.py -H http://127.0.0.1:8080                 # web UI on :8089
    locust -f bench/locustfile.py -H http://127.0.0.1:8080 --headless -u 50 -r 10 -t 60s \
           --csv bench/results/locust --units 100000 --zipf-s 1.1 --v2-share 0.3 --features on

Every option is also an environment variable (LOCUST_UNITS, LOCUST_ZIPF_S, ...), shown in the
web UI's start form. Unit ids and entity ids are drawn from bounded Zipf distributions (rank
1 is the heaviest user), so a few units send most requests, as real traffic does.

At the end (and with --csv, into <prefix>_split.json) it prints the split it observed next
to the configured weights, twice: per request (what the traffic looked like) and per
distinct unit. The SRM chi-square p-value is computed on distinct units: with skewed
traffic, requests of one unit are not independent draws (a heavy unit lands all its
requests in one variant), so a request-level chi-square would cry wolf. A unit answered by
two variants breaks stickiness and is counted separately (it should be 0).
Locust's FastHttpUser cannot saturate this gateway from one core (see FACTS); for rates
use `python -m bench.harness` (wrk).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from locust import FastHttpUser, events, task
from locust.env import Environment

from bench.split import SplitTally, ZipfSampler, format_summary, parse_weights, split_summary

INPUTS20 = [round(0.1 * i, 1) for i in range(1, 21)]
INPUTS4 = [0.5, 1.0, 1.5, 2.0]


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # Straight on the parser: options added to an argument group do not reach the web UI.
    g = parser
    g.add_argument("--units", type=int, default=100_000, env_var="LOCUST_UNITS",
                   help="distinct unit ids (experiment units)")
    g.add_argument("--entities", type=int, default=10_000, env_var="LOCUST_ENTITIES",
                   help="distinct entity ids (user_id 1..N must exist in the feature store)")
    g.add_argument("--zipf-s", type=float, default=1.1, env_var="LOCUST_ZIPF_S",
                   help="Zipf exponent of both populations (0 = uniform)")
    g.add_argument("--v2-share", type=float, default=0.3, env_var="LOCUST_V2_SHARE",
                   help="share of requests sent as KServe v2 (the rest as /v1/infer)")
    g.add_argument("--features", choices=["on", "off"], default="off", env_var="LOCUST_FEATURES",
                   help="on: send an entity and 4 request floats; off: the full 20-float input")
    g.add_argument("--model", default="clf", env_var="LOCUST_MODEL")
    g.add_argument("--weights", default="a=50,b=50", env_var="LOCUST_WEIGHTS",
                   help="the experiment's configured weights, variant=weight,...")
    g.add_argument("--srm-alpha", type=float, default=0.001, env_var="LOCUST_SRM_ALPHA",
                   help="flag SRM when the unit-level p-value is below this")
    g.add_argument("--srm-fail", action="store_true", env_var="LOCUST_SRM_FAIL",
                   help="exit non-zero on an SRM flag or a unit seen in two variants")


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    """One tally per process; in distributed runs workers ship theirs with every stats report."""
    tally = SplitTally()
    environment.infergate_tally = tally  # type: ignore[attr-defined]

    def to_master(client_id: str, data: dict[str, Any], **__: Any) -> None:
        data["infergate_split"] = tally.drain()

    def from_worker(client_id: str, data: dict[str, Any], **__: Any) -> None:
        if "infergate_split" in data:
            tally.merge(data["infergate_split"])

    environment.events.report_to_master.add_listener(to_master)
    environment.events.worker_report.add_listener(from_worker)


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    from locust.runners import WorkerRunner
    if isinstance(environment.runner, WorkerRunner):
        return
    opts = environment.parsed_options
    weights = parse_weights(opts.weights if opts else "a=50,b=50")
    s = split_summary(environment.infergate_tally, weights, opts.srm_alpha if opts else 0.001)  # type: ignore[attr-defined]
    print("\n" + format_summary(s), flush=True)
    prefix = getattr(opts, "csv_prefix", None)
    if prefix:
        with open(f"{prefix}_split.json", "w") as f:
            json.dump(s, f, indent=2)
    bad = s["srm_flagged"] or s["units_in_several_variants"] or s["unexpected_variants"]
    if opts is not None and opts.srm_fail and bad:
        environment.process_exit_code = 1


class InferUser(FastHttpUser):
    """One client: draws a unit (and an entity) per request, from the skewed populations."""

    def on_start(self) -> None:
        o = self.environment.parsed_options
        seed = id(self) & 0xFFFF_FFFF
        self._units = ZipfSampler(o.units, o.zipf_s, seed)
        self._entities = ZipfSampler(o.entities, o.zipf_s, seed ^ 0x5EED)
        self._features = o.features == "on"
        self._v2_share = o.v2_share
        self._model = o.model
        self._rng = np.random.default_rng(seed)
        self._tally: SplitTally = self.environment.infergate_tally  # type: ignore[attr-defined]

    @task
    def infer(self) -> None:
        unit = f"u{self._units.draw()}"
        if self._rng.random() < self._v2_share:
            self._v2(unit)
        else:
            self._v1(unit)

    def _v1(self, unit: str) -> None:
        body: dict[str, Any] = {"model": self._model, "unit_id": unit}
        if self._features:
            body["entity"] = {"user_id": self._entities.draw()}
        body["inputs"] = INPUTS4 if self._features else INPUTS20
        with self.client.post("/v1/infer", json=body, name="/v1/infer", catch_response=True) as r:
            self._count(r, unit, lambda doc: doc.get("variant"))

    def _v2(self, unit: str) -> None:
        data = INPUTS4 if self._features else INPUTS20
        body: dict[str, Any] = {"inputs": [{"name": "INPUT", "datatype": "FP32",
                                            "shape": [1, len(data)], "data": data}]}
        if self._features:
            body["parameters"] = {"user_id": self._entities.draw()}
        with self.client.post(f"/v2/models/{self._model}/infer", json=body, headers={"x-unit-id": unit},
                              name="/v2/models/[model]/infer", catch_response=True) as r:
            self._count(r, unit, lambda doc: (doc.get("parameters") or {}).get("variant"))

    def _count(self, r: Any, unit: str, variant_of: Any) -> None:
        if not 200 <= (r.status_code or 0) < 300:
            r.failure(f"HTTP {r.status_code}")
            return
        try:
            variant = variant_of(r.json())
        except (ValueError, AttributeError):
            r.failure("answer is not JSON")
            return
        if not variant:
            r.failure("answer names no variant")
            return
        self._tally.add(variant, unit)
        r.success()
