"""Training tables by name: the project's feature table, or any parquet/CSV file.

A dataset gives two disjoint sets of rows: ``train`` (what the GAN sees) and ``holdout`` (real
rows the GAN never saw, against which quality and privacy are measured).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthetic.codec import Derived, TableError

__all__ = ["Table", "load_dataset", "DATASETS", "check_name"]

Columns = dict[str, np.ndarray]
DATASETS = ("user_features",)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Columns of features/repo/datagen.py that are formulas of others, computed after sampling.
USER_FEATURES_DERIVED = (Derived("spend_30d", "product", ("purchases_30d", "avg_order_value")),
                         Derived("ctr_7d", "ratio_clip01", ("cart_adds_7d", "clicks_7d")))


@dataclass(frozen=True, eq=False)
class Table:
    name: str
    train: Columns
    holdout: Columns
    source: str
    derived: tuple[Derived, ...] = ()

    def __repr__(self) -> str:
        return (f"<Table {self.name} [{len(self.train)} columns | derived {len(self.derived)} | train {_rows(self.train)} | "
                f"holdout {_rows(self.holdout)}]>")


def _rows(cols: Columns) -> int:
    return len(next(iter(cols.values()))) if cols else 0


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TableError(f"dataset: {name!r} must match {_NAME.pattern}")
    return name


def _split(cols: Columns, holdout: int, seed: int) -> tuple[Columns, Columns]:
    n = _rows(cols)
    if not 0 < holdout < n:
        raise TableError(f"holdout: {holdout} rows, the table has {n}")
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[:holdout], perm[holdout:]
    return {k: v[train] for k, v in cols.items()}, {k: v[test] for k, v in cols.items()}


def load_dataset(name: str, *, rows: int = 60_000, holdout: int = 10_000, seed: int = 7,
                 table: Path | None = None, derive: bool = False) -> Table:
    """``user_features``: ``rows`` rows of features/repo/datagen.py from ``seed``; else ``table``.

    ``derive``: compute the built-in dataset's formula columns after sampling (else, the default,
    the GAN models all 16).
    """
    check_name(name)
    if table is None:
        if name != "user_features":
            raise TableError(f"dataset: {name!r} is not built in ({', '.join(DATASETS)}); pass --table FILE")
        from features.repo.datagen import FEATURE_NAMES, generate_frame

        frame = generate_frame(rows, seed)
        cols = {k: frame[k].to_numpy(np.float32) for k in FEATURE_NAMES}
        source = f"features.repo.datagen.generate_frame({rows}, seed={seed})"
        derived = USER_FEATURES_DERIVED if derive else ()
    else:
        import pandas as pd

        path = Path(table)
        if not path.is_file():
            raise TableError(f"table: {path} is not a file")
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        cols = {}
        for k in frame.columns:
            if frame[k].dtype.kind not in "fiub":
                raise TableError(f"{k}: not numeric (dtype {frame[k].dtype}); drop it before training")
            cols[str(k)] = frame[k].to_numpy(np.float64)
        source = str(path)
        derived = ()
    train, test = _split(cols, holdout, seed)
    return Table(name, train, test, source, derived)
