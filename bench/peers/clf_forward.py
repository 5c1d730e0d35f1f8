"""The demo model's forward pass in numpy, for the peers (copied next to their model files).

The same float32 arithmetic as `runtime/triton_model.py`, which Triton runs: standardise,
missing values to the mean, ReLU layer, softmax. Imports numpy only: it runs inside the
peers' own venvs, which do not have infergate installed.
"""

from __future__ import annotations

import numpy as np

KEYS = ("mu", "sigma", "w1", "b1", "w2", "b2")


def load(path: str) -> tuple[np.ndarray, ...]:
    with np.load(path) as w:
        return tuple(w[k] for k in KEYS)


def forward(weights: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    mu, sigma, w1, b1, w2, b2 = weights
    x = np.nan_to_num((x - mu) / sigma, nan=0.0)
    h = np.maximum(x @ w1 + b1, 0.0)
    z = h @ w2 + b2
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
