"""The exported generator: numpy float32 weights + the column codec; sampling needs no torch.

An export is a directory with ``generator.npz`` (layer weights and codec arrays) and
``generator.json`` (column names, layer layout, training facts). ``Sampler.sample(n, seed)`` is
a pure function of (export, n, seed): the noise and the null masks come from one
``numpy.random.Generator`` seeded with ``seed``, and the MLP runs in fixed-size chunks so the
memory held is bounded whatever ``n`` is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthetic.codec import ColumnCodec

__all__ = ["Sampler", "NPZ", "META", "FORMAT"]

NPZ, META = "generator.npz", "generator.json"
FORMAT = 1
_CHUNK = 8192
_SLOPE = np.float32(0.2)  # LeakyReLU, as in training


@dataclass(frozen=True, eq=False)
class Sampler:
    codec: ColumnCodec
    weights: tuple[np.ndarray, ...]   # W0 (in, h), W1, ..., each float32, x @ W + b
    biases: tuple[np.ndarray, ...]
    noise_dim: int
    info: dict[str, Any]

    def __repr__(self) -> str:
        dims = [self.noise_dim] + [w.shape[1] for w in self.weights]
        return f"<Sampler {'-'.join(map(str, dims))} {self.codec!r}>"

    @property
    def columns(self) -> tuple[str, ...]:
        return self.codec.names

    def generate(self, noise: np.ndarray) -> np.ndarray:
        """The generator's forward pass on ``noise`` (rows, noise_dim): normal-space output."""
        out = np.empty((noise.shape[0], self.weights[-1].shape[1]), np.float32)
        last = len(self.weights) - 1
        for start in range(0, noise.shape[0], _CHUNK):
            h = noise[start:start + _CHUNK]
            for k, (w, b) in enumerate(zip(self.weights, self.biases)):
                h = h @ w
                h += b
                if k < last:
                    np.maximum(h, h * _SLOPE, out=h)
            out[start:start + _CHUNK] = h
        return out

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` synthetic rows ``(n, len(columns))`` float32; NaN marks a null."""
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((n, self.noise_dim), dtype=np.float32)
        return self.codec.from_normal(self.generate(noise), rng)

    # -- persistence -----------------------------------------------------------------------

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = dict(self.codec.arrays())
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"w{k}"], arrays[f"b{k}"] = w, b
        np.savez_compressed(directory / NPZ, **arrays)
        meta = {"format": FORMAT, "noise_dim": self.noise_dim, "layers": len(self.weights),
                "activation": "leaky_relu(0.2)", "codec": self.codec.meta(), "info": self.info}
        (directory / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path) -> "Sampler":
        directory = Path(directory)
        meta = json.loads((directory / META).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory / META}: export format {meta.get('format')!r}, expected {FORMAT}")
        with np.load(directory / NPZ) as z:
            arrays = {k: z[k] for k in z.files}
        layers = int(meta["layers"])
        return cls(ColumnCodec.load(meta["codec"], arrays),
                   tuple(np.ascontiguousarray(arrays[f"w{k}"], np.float32) for k in range(layers)),
                   tuple(np.ascontiguousarray(arrays[f"b{k}"], np.float32) for k in range(layers)),
                   int(meta["noise_dim"]), dict(meta.get("info", {})))

    @classmethod
    def from_layers(cls, codec: ColumnCodec, layers: Sequence[tuple[np.ndarray, np.ndarray]],
                    noise_dim: int, info: dict[str, Any]) -> "Sampler":
        """From torch-style ``(weight (out, in), bias)`` pairs."""
        return cls(codec, tuple(np.ascontiguousarray(w.T, np.float32) for w, _ in layers),
                   tuple(np.ascontiguousarray(b, np.float32) for _, b in layers), noise_dim, dict(info))
