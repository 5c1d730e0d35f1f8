"""Per-column transform between a table's values and the generator's normal space (numpy only).

Each modelled column keeps a quantile grid: training values go to normal scores through their
ranks (ties broken at random, so a point mass such as the zeros of a zero-inflated column becomes
a band the generator can learn), and generated scores come back through ``Phi`` and ``np.interp``
on the grid. Integer-valued columns are rounded on the way back. Constant columns are not
modelled but reproduced; nulls are redrawn at each column's training rate (missing completely
at random). An all-null column is refused: the output would hold NaNs the source never had
values for.

A column that is a formula of others (a ``Derived``: ``spend = purchases * order value``) is
not modelled either but computed from the generated columns before nulls are drawn, the way
SDV's constraints work: a GAN approximates such identities only loosely, and a classifier
finds the rows that break them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["ColumnCodec", "Derived", "TableError", "QUANTILES", "OPS"]

QUANTILES = 1025
_Z_CLIP = 5.0


class TableError(ValueError):
    """A training table the codec refuses; the message names the column."""


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


def _ratio_clip01(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip(a / np.maximum(b, 1), 0, 1)


OPS = {"product": _product, "ratio_clip01": _ratio_clip01}


@dataclass(frozen=True)
class Derived:
    """``name = op(*inputs)``; ops: ``product`` (a*b), ``ratio_clip01`` (clip(a / max(b, 1), 0, 1))."""

    name: str
    op: str
    inputs: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise TableError(f"{self.name}: unknown derivation {self.op!r} (known: {', '.join(OPS)})")
        if len(self.inputs) != 2:
            raise TableError(f"{self.name}: {self.op} takes 2 columns, got {len(self.inputs)}")


@dataclass(frozen=True, eq=False)
class ColumnCodec:
    names: tuple[str, ...]
    modelled: tuple[int, ...]          # column indices the generator outputs, in its output order
    levels: np.ndarray                 # (Q,) float64 probabilities 0..1
    grids: np.ndarray                  # (len(modelled), Q) float64 values at ``levels``
    integer: np.ndarray                # (len(modelled),) bool: round after the inverse
    null_rates: np.ndarray             # (len(names),) float64
    constants: Mapping[int, float]     # column index -> the value every non-null row has
    derived: tuple[tuple[int, str, tuple[int, ...]], ...] = ()   # (column, op, input columns)

    def __repr__(self) -> str:
        derived = f" | derived {len(self.derived)}" if self.derived else ""
        return (f"<ColumnCodec {len(self.names)} columns [modelled {len(self.modelled)} | "
                f"constant {len(self.constants)}{derived} | nullable {int((self.null_rates > 0).sum())}]>")

    @property
    def width(self) -> int:
        return len(self.modelled)

    # -- fitting ---------------------------------------------------------------------------

    @classmethod
    def fit(cls, columns: Mapping[str, np.ndarray], quantiles: int = QUANTILES,
            derived: tuple[Derived, ...] = ()) -> "ColumnCodec":
        if not columns:
            raise TableError("table: has no columns")
        names = tuple(columns)
        index = {n: i for i, n in enumerate(names)}
        formulas = {d.name: d for d in derived}
        for d in derived:
            for col in (d.name, *d.inputs):
                if col not in index:
                    raise TableError(f"{col}: named in a derivation but not in the table")
                if col != d.name and col in formulas:
                    raise TableError(f"{col}: a derived column cannot feed another derivation")
        levels = np.linspace(0.0, 1.0, quantiles)
        modelled, grids, integer, constants = [], [], [], {}
        rates = np.zeros(len(names))
        for i, name in enumerate(names):
            x = np.asarray(columns[name])
            if x.dtype.kind not in "fiub":
                raise TableError(f"{name}: not numeric (dtype {x.dtype})")
            x = x.astype(np.float64)
            if np.isinf(x).any():
                raise TableError(f"{name}: holds infinite values")
            ok = ~np.isnan(x)
            if not ok.any():
                raise TableError(f"{name}: every value is null; drop the column before training")
            rates[i] = 1.0 - ok.mean()
            if name in formulas:
                continue
            v = x[ok]
            if v.min() == v.max():
                constants[i] = float(v[0])
                continue
            modelled.append(i)
            grids.append(np.quantile(v, levels))
            integer.append(bool(np.all(v == np.round(v))))
        if not modelled:
            raise TableError("table: every column is constant; nothing to learn")
        steps = tuple((index[d.name], d.op, tuple(index[c] for c in d.inputs)) for d in derived)
        return cls(names, tuple(modelled), levels, np.asarray(grids), np.asarray(integer, bool), rates, constants,
                   steps)

    # -- training direction ----------------------------------------------------------------

    def to_normal(self, columns: Mapping[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Normal scores ``(rows, width)`` float32 of the modelled columns; a null gets NaN."""
        n = len(next(iter(columns.values())))
        out = np.full((n, self.width), np.nan, np.float32)
        for j, i in enumerate(self.modelled):
            x = np.asarray(columns[self.names[i]], np.float64)
            ok = ~np.isnan(x)
            v = x[ok]
            order = np.lexsort((rng.random(v.size), v))  # ties in random order
            ranks = np.empty(v.size)
            ranks[order] = np.arange(v.size)
            out[ok, j] = np.clip(ndtri((ranks + 0.5) / v.size), -_Z_CLIP, _Z_CLIP)
        return out

    def to_uniform(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Deterministic per-column CDF values ``(rows, len(names))`` in [0, 1]; null -> -1.

        The space in which distances between records are measured (privacy check).
        """
        n = len(next(iter(columns.values())))
        out = np.zeros((n, len(self.names)))
        for j, i in enumerate(self.modelled):
            x = np.asarray(columns[self.names[i]], np.float64)
            out[:, i] = np.interp(x, self.grids[j], self.levels)  # mid-rank of ties by interp
        for i, name in enumerate(self.names):
            out[np.isnan(np.asarray(columns[name], np.float64)), i] = -1.0
        return out

    # -- sampling direction ----------------------------------------------------------------

    def from_normal(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Table ``(rows, len(names))`` float32 (column-major) from generator output ``z`` ``(rows, width)``."""
        n = z.shape[0]
        out = np.empty((n, len(self.names)), np.float32, order="F")  # column writes stay contiguous
        u = ndtr(z)
        for j, i in enumerate(self.modelled):
            col = np.interp(u[:, j], self.levels, self.grids[j])
            out[:, i] = np.round(col) if self.integer[j] else col
        for i, value in self.constants.items():
            out[:, i] = value
        for i, op, inputs in self.derived:
            out[:, i] = OPS[op](*(out[:, k] for k in inputs))
        nullable = np.flatnonzero(self.null_rates > 0)
        if nullable.size:
            mask = rng.random((n, nullable.size)) < self.null_rates[nullable]
            for k, i in enumerate(nullable):
                out[mask[:, k], i] = np.nan
        return out

    # -- persistence -----------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codec_levels": self.levels, "codec_grids": self.grids, "codec_integer": self.integer,
                "codec_null_rates": self.null_rates}

    def meta(self) -> dict:
        return {"names": list(self.names), "modelled": list(self.modelled),
                "constants": {self.names[i]: v for i, v in self.constants.items()},
                "null_rates": {n: float(r) for n, r in zip(self.names, self.null_rates) if r > 0},
                "integer": [self.names[i] for j, i in enumerate(self.modelled) if self.integer[j]],
                "derived": [{"name": self.names[i], "op": op, "inputs": [self.names[k] for k in ins]}
                            for i, op, ins in self.derived]}

    @classmethod
    def load(cls, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> "ColumnCodec":
        names = tuple(meta["names"])
        index = {n: i for i, n in enumerate(names)}
        return cls(names, tuple(meta["modelled"]), np.asarray(arrays["codec_levels"], np.float64),
                   np.asarray(arrays["codec_grids"], np.float64), np.asarray(arrays["codec_integer"], bool),
                   np.asarray(arrays["codec_null_rates"], np.float64),
                   {index[k]: float(v) for k, v in meta["constants"].items()},
                   tuple((index[d["name"]], d["op"], tuple(index[c] for c in d["inputs"]))
                         for d in meta.get("derived", ())))
