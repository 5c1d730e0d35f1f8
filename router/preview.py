"""What a proposed config would move: buckets (and so units) changing variant, computed the
way the router assigns them (``allocate.py``), without storing anything.

Used by the admin API's dry run (``POST /admin/experiments/{name}/preview``), the console and
``python -m router set-weights``. Pure: configs in, counts out.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .allocate import BUCKETS, allocate
from .config import ExperimentConfig

__all__ = ["effective_owners", "moves"]

# A change moving more than this share of units asks for a confirmation (console and CLI).
CONFIRM_SHARE = 0.10


def effective_owners(cfg: ExperimentConfig) -> list[str]:
    """The variant name each bucket's units get from the hash (paused/stopped: control)."""
    if cfg.status != "running":
        return [cfg.control] * BUCKETS
    names = [v.name for v in cfg.variants]
    owner = allocate(cfg.salt, cfg.bucket_version, [(v.name, v.buckets) for v in cfg.variants], cfg.control)
    return [names[i] for i in owner]


def moves(old: ExperimentConfig | None, new: ExperimentConfig, units_seen: int = 0) -> dict[str, Any]:
    """Buckets whose variant changes from ``old`` to ``new``, by (from, to), and the share.

    ``units_seen`` (distinct units of the current allocation, all replicas) gives an estimate
    of how many already-exposed units move: share x units_seen.
    """
    after = effective_owners(new)
    before = effective_owners(old) if old is not None else after
    pairs = Counter((a, b) for a, b in zip(before, after) if a != b)
    moved = sum(pairs.values())
    share = moved / BUCKETS
    return {
        "buckets_moved": moved,
        "share_moved": share,
        "units_seen": units_seen,
        "units_moved_estimate": round(share * units_seen),
        "transitions": [{"from": a, "to": b, "buckets": n} for (a, b), n in sorted(pairs.items())],
        "confirm": share > CONFIRM_SHARE,
        "resets_counts": old is not None and _alloc_key(old) != _alloc_key(new),
    }


def _alloc_key(cfg: ExperimentConfig) -> tuple:
    return (cfg.salt, cfg.bucket_version, cfg.control, cfg.status, tuple((v.name, v.buckets) for v in cfg.variants))
