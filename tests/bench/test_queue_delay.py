"""Triton's queue delay set per benchmark target (bench/queue_delay.py), against a real Triton."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from bench.queue_delay import DIRECT_US, QueueDelay, _rewrite, staged_repository
from runtime.triton import DEFAULT_REPOSITORY, TritonRuntime, TritonServer


def _delay_served(triton: TritonServer) -> int:
    """The delay Triton itself runs the model with (its config endpoint, not our file)."""
    with urllib.request.urlopen(f"http://{triton.http_url}/v2/models/clf/config", timeout=5) as r:
        return int(json.load(r)["dynamic_batching"].get("max_queue_delay_microseconds", 0))


@pytest.fixture(scope="module")
def staged(triton_runtime: TritonRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repo = staged_repository(tmp_path_factory.mktemp("repo"))
    with TritonServer(triton_runtime, models=["clf"], repository=repo,
                      log_path=tmp_path_factory.mktemp("triton") / "triton.log") as server:
        yield server


def test_set_reloads_the_model_with_the_new_delay(staged: TritonServer) -> None:
    delay = QueueDelay(staged)
    assert delay.current_us == DIRECT_US == _delay_served(staged)
    assert delay.set(0) is True
    assert delay.current_us == 0 == _delay_served(staged)
    assert delay.set(0) is False            # unchanged: no reload
    assert delay.set(250) is True and _delay_served(staged) == 250
    delay.set(DIRECT_US)
    assert _delay_served(staged) == DIRECT_US
    # the committed repository was never written
    assert f"max_queue_delay_microseconds: {DIRECT_US}" in (DEFAULT_REPOSITORY / "clf" / "config.pbtxt").read_text()


def test_the_committed_repository_is_refused(triton_runtime: TritonRuntime) -> None:
    with pytest.raises(ValueError, match="staged copy"):
        QueueDelay(TritonServer(triton_runtime, models=["clf"]))   # not started: refused before any I/O


def test_staged_copy_takes_a_delay(tmp_path: Path) -> None:
    repo = staged_repository(tmp_path / "r", delay_us=0)
    assert "{ max_queue_delay_microseconds: 0 }" in (repo / "clf" / "config.pbtxt").read_text()
    assert (repo / "clf" / "1" / "weights.npz").read_bytes() == (DEFAULT_REPOSITORY / "clf" / "1" / "weights.npz").read_bytes()


@pytest.mark.parametrize("text, why", [
    ("name: \"m\"\n", "found 0"),
    ("dynamic_batching { max_queue_delay_microseconds: 1 }\ndynamic_batching { max_queue_delay_microseconds: 2 }\n",
     "found 2"),
])
def test_a_config_without_exactly_one_delay_is_refused(tmp_path: Path, text: str, why: str) -> None:
    cfg = tmp_path / "config.pbtxt"
    cfg.write_text(text)
    with pytest.raises(ValueError, match=why):
        _rewrite(cfg, 0)
    assert cfg.read_text() == text


def test_a_negative_delay_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "config.pbtxt"
    cfg.write_text("dynamic_batching { max_queue_delay_microseconds: 100 }\n")
    with pytest.raises(ValueError, match=">= 0"):
        _rewrite(cfg, -1)
