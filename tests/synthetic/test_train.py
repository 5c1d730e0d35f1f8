"""Training for real on a tiny configuration: determinism and the export's equality with torch."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from synthetic.sampler import Sampler
from synthetic.train import train

from _synthetic_fixture import TINY


def test_progress_history_has_c2st(tiny_run):
    steps = [row["step"] for row in tiny_run.history]
    assert steps == [20, 40]
    assert all(0.0 <= row["c2st"] <= 1.0 for row in tiny_run.history)
    assert tiny_run.steps_done == 40 and tiny_run.sampler.info["steps_done"] == 40


def test_same_seed_same_weights_and_rows(tiny_table, tiny_run):
    again = train(tiny_table, dataclasses.replace(TINY, eval_every=0), progress=False)
    for a, b in zip(tiny_run.sampler.weights + tiny_run.sampler.biases, again.sampler.weights + again.sampler.biases):
        assert np.array_equal(a, b)
    np.testing.assert_array_equal(tiny_run.sampler.sample(2000, 5), again.sampler.sample(2000, 5))


def test_other_seed_other_weights(tiny_table, tiny_run):
    other = train(tiny_table, dataclasses.replace(TINY, seed=4, steps=5, eval_every=0), progress=False)
    assert not np.array_equal(tiny_run.sampler.weights[0], other.sampler.weights[0])


def test_export_equals_torch_forward(tiny_run, tmp_path):
    noise = np.random.default_rng(0).standard_normal((10_000, TINY.noise_dim), dtype=np.float32)
    with torch.no_grad():
        expected = tiny_run.torch_generator(torch.from_numpy(noise)).numpy()
    loaded = Sampler.load(tiny_run.sampler.save(tmp_path / "export"))
    for s in (tiny_run.sampler, loaded):
        got = s.generate(noise)
        assert got.dtype == np.float32
        assert np.max(np.abs(got - expected)) <= 1e-5
    np.testing.assert_array_equal(loaded.sample(3000, 9), tiny_run.sampler.sample(3000, 9))


def test_sample_seed_and_shape(tiny_run):
    s = tiny_run.sampler
    a, b = s.sample(1000, 1), s.sample(1000, 2)
    assert a.shape == (1000, 16) and a.dtype == np.float32
    assert not np.array_equal(a, b)
    names = s.columns
    nullable = {"avg_session_minutes", "avg_order_value", "ctr_7d", "refund_rate"}
    big = s.sample(50_000, 3)
    for i, name in enumerate(names):
        assert np.isnan(big[:, i]).any() == (name in nullable), name
    counts = big[:, names.index("sessions_7d")]
    assert np.array_equal(counts, np.round(counts))
