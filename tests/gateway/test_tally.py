"""`gateway/tally.py`: per-request metric updates kept in plain numbers and folded into
prometheus-client at collect time must expose exactly what direct updates expose."""

from __future__ import annotations

import random
import re
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import METRICS_DIR_ENV
from gateway.metrics import GatewayMetrics

_CREATED = re.compile(rb"^\S+_created(\{[^}]*\})? .*\n", re.M)


def _exposition(registry: CollectorRegistry) -> list[bytes]:
    """The scrape's lines without the `_created` timestamps (the two registries are made
    apart) and the process's garbage-collector series (they move between the two scrapes),
    sorted (the children were bound in a different order)."""
    return sorted(line for line in _CREATED.sub(b"", generate_latest(registry)).splitlines()
                  if b"python_gc_" not in line)


def _latencies(n: int) -> list[float]:
    rnd = random.Random(17)
    # Every bucket, its exact bounds (an amount equal to a bound counts in that bucket), 0 and +Inf.
    exact = [0.0, 0.0001, 0.00025, 0.005, 1.0, 5.0, 7.5]
    return [rnd.choice(exact) if rnd.random() < 0.2 else rnd.expovariate(500.0) for _ in range(n)]


def test_a_scrape_after_tallied_updates_equals_one_after_direct_updates() -> None:
    direct_reg, tally_reg = CollectorRegistry(), CollectorRegistry()
    direct, tallied = GatewayMetrics(direct_reg), GatewayMetrics(tally_reg)
    vm = tallied.variant("clf", "b")
    # Sums of binary fractions: exact in any order, so the byte comparison holds for `_sum` too.
    values = [round(v * 1024) / 1024 for v in _latencies(5000)]
    for v in values:
        direct.latency.labels("clf", "b").observe(v)
        direct.stage.labels("clf", "b", "queue").observe(v / 2)
        direct.requests.labels("clf", "b").inc()
        vm.latency.observe(v)
        vm.queue.observe(v / 2)
        vm.requests.inc()
    for _ in range(3):
        direct.errors.labels("clf", "b", "deadline_exceeded").inc()
        direct.rejected.labels("overloaded").inc()
        vm.errors["deadline_exceeded"].inc()
        tallied.rejected_by_code["overloaded"].inc()
    tallied.variant("clf", "a")  # a bound variant with nothing yet: its series at 0, as direct
    for code in direct.rejected_by_code:  # GatewayMetrics binds every code up front
        direct.rejected.labels(code)
    for variant in ("a", "b"):
        direct.requests.labels("clf", variant)
        direct.latency.labels("clf", variant)
        for stage in ("features", "queue", "inference"):
            direct.stage.labels("clf", variant, stage)
        for code in direct.rejected_by_code:
            direct.errors.labels("clf", variant, code)
    assert _exposition(tally_reg) == _exposition(direct_reg)
    assert tally_reg.get_sample_value("infergate_requests_total", {"model": "clf", "variant": "b"}) == 5000


def test_updates_after_a_scrape_show_in_the_next_one_and_get_sees_unfolded_ones() -> None:
    reg = CollectorRegistry()
    vm = GatewayMetrics(reg).variant("m", "a")
    vm.requests.inc()
    assert reg.get_sample_value("infergate_requests_total", {"model": "m", "variant": "a"}) == 1
    vm.requests.inc()
    vm.requests.inc()
    assert vm.requests.get() == 3  # the console's series reads this between scrapes
    assert reg.get_sample_value("infergate_requests_total", {"model": "m", "variant": "a"}) == 3
    vm.latency.observe(0.002)
    assert reg.get_sample_value("infergate_request_duration_seconds_count", {"model": "m", "variant": "a"}) == 1
    assert reg.get_sample_value("infergate_request_duration_seconds_bucket",
                                {"model": "m", "variant": "a", "le": "0.0015"}) == 0
    assert reg.get_sample_value("infergate_request_duration_seconds_bucket",
                                {"model": "m", "variant": "a", "le": "0.002"}) == 1


def test_scrapes_from_other_threads_lose_and_double_nothing() -> None:
    reg = CollectorRegistry()
    vm = GatewayMetrics(reg).variant("m", "a")
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            generate_latest(reg)

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    for t in scrapers:
        t.start()
    n = 200_000
    try:
        for _ in range(n):
            vm.requests.inc()
            vm.latency.observe(0.001)
    finally:
        stop.set()
        for t in scrapers:
            t.join()
    assert reg.get_sample_value("infergate_requests_total", {"model": "m", "variant": "a"}) == n
    assert reg.get_sample_value("infergate_request_duration_seconds_count", {"model": "m", "variant": "a"}) == n


def test_with_workers_a_tally_writes_through_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Another worker's scrape reads the shared files, never this process's memory."""
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path))
    m = GatewayMetrics(CollectorRegistry())
    vm = m.variant("m", "a")
    vm.requests.inc()
    vm.latency.observe(0.003)
    assert m.requests.labels("m", "a")._value.get() == 1  # noqa: SLF001 - no collect in between
    assert m.latency.labels("m", "a")._sum.get() == 0.003  # noqa: SLF001
    assert vm.requests.get() == 1
