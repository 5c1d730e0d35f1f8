"""`gc_threshold`: what the gateway does to the collector once started (its lifespan; the live
effect, collections per request, is in test_e2e.py)."""

from __future__ import annotations

import gc
from typing import Iterator

import pytest

from gateway.config import GatewayConfig
from gateway.app import tune_gc


@pytest.fixture()
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold(collector: None) -> None:
    _, second, third = gc.get_threshold()
    kept = [[i] for i in range(1000)]   # start-up state, alive when serving begins
    tune_gc(20_000)
    assert gc.get_threshold() == (20_000, second, third)
    assert gc.get_freeze_count() >= len(kept)


def test_zero_keeps_pythons_threshold_and_still_freezes(collector: None) -> None:
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() > 0


def test_config_reads_and_checks_the_threshold() -> None:
    assert GatewayConfig().gc_threshold == 20_000
    assert GatewayConfig.from_env({"INFERGATE_GC_THRESHOLD": "0"}).gc_threshold == 0
    with pytest.raises(ValueError, match="gc_threshold"):
        GatewayConfig.from_env({"INFERGATE_GC_THRESHOLD": "-1"})
