"""`PredictionLog.stop` ends within its deadline even when cancelling the writer does not end
it (a shutdown once waited for ever on a writer whose cancel request had been consumed)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.predlog import PredictionLog


class EatsCancel:
    """A Redis stand-in whose XADD swallows a cancellation `times` times: it then answers
    (`hang=False`) or goes on waiting (`hang=True`)."""

    def __init__(self, times: int, hang: bool = False) -> None:
        self.times, self.hang, self.calls = times, hang, 0

    async def xadd(self, *args: object, **kwargs: object) -> bytes:
        self.calls += 1
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if self.times <= 0:
                    raise
                self.times -= 1
                if not self.hang:
                    return b"0-1"


def _fill(log: PredictionLog, n: int) -> None:
    req = SimpleNamespace(request_id="r", unit_id="u")
    a = SimpleNamespace(experiment="e", variant="a", target=SimpleNamespace(version="1"))
    for _ in range(n):
        log.record(req, a, np.zeros((1, 2), np.float32), 0.001)


async def test_a_writer_whose_cancel_is_swallowed_still_stops() -> None:
    redis = EatsCancel(times=1)
    log = PredictionLog(redis, "t:", CollectorRegistry(), interval_s=0.01)
    _fill(log, 3)
    log.start()
    await asyncio.sleep(0.05)                  # the writer is inside XADD
    assert redis.calls == 1
    task = log._task
    t0 = time.monotonic()
    await log.stop(timeout=1.0)
    assert time.monotonic() - t0 < 0.5, "it stopped at its next turn, not at the deadline"
    assert task is not None and task.done()


async def test_a_writer_that_never_ends_costs_the_deadline_not_the_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    redis = EatsCancel(times=10**9, hang=True)
    log = PredictionLog(redis, "t:", CollectorRegistry(), interval_s=0.01)
    _fill(log, 3)
    log.start()
    await asyncio.sleep(0.05)
    task = log._task
    t0 = time.monotonic()
    await log.stop(timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 1.5
    assert "did not stop within" in caplog.text
    redis.times = 0                            # let it go, so the test's loop can close
    assert task is not None
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    assert task.done()
