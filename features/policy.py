"""Configuration of what a reader does with nulls, missing entities and store outages.

Policy, documented once:

* A **null** feature (Feast stores a NaN/None source value as an empty ``Value``) is replaced by
  its default; the row's ``null_count`` counts it and ``features_null_values_total`` too.
* A **missing entity** (no row for it in the view) gets every feature's default, with
  ``missing_entity=True`` and ``null_count == width``.
* A **store outage or timeout** either raises ``FeatureUnavailable`` (``on_unavailable="raise"``,
  the default; the gateway answers 503) or returns every feature's default with
  ``defaulted=True`` (``on_unavailable="default"``).
* The default of a feature is ``defaults[name]`` when given, else ``default_value``.
* After ``trip_after`` consecutive failed reads the circuit opens: reads fail at once, without
  touching the store, for ``backoff_s`` (doubling per failed probe up to ``max_backoff_s``);
  then one read probes the store and a success closes the circuit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping

import numpy as np

__all__ = ["FailurePolicy"]


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """How a reader fills gaps and behaves when its store fails. See the module docstring."""

    on_unavailable: Literal["raise", "default"] = "raise"
    default_value: float = 0.0
    defaults: Mapping[str, float] = field(default_factory=dict)
    timeout_s: float = 0.1
    max_batch: int = 256
    trip_after: int = 2
    backoff_s: float = 0.05
    max_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if self.on_unavailable not in ("raise", "default"):
            raise ValueError(f"on_unavailable must be 'raise' or 'default', not {self.on_unavailable!r}")
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ValueError("timeout_s must be a positive number of seconds")
        if self.max_batch < 1 or self.trip_after < 1:
            raise ValueError("max_batch and trip_after must be at least 1")
        if not (0 < self.backoff_s <= self.max_backoff_s):
            raise ValueError("need 0 < backoff_s <= max_backoff_s")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    def default_vector(self, names: tuple[str, ...]) -> np.ndarray:
        """Defaults in ``names`` order as a read-only float32 vector; unknown names are an error."""
        unknown = set(self.defaults) - set(names)
        if unknown:
            raise ValueError(f"defaults name unknown features: {sorted(unknown)}")
        vec = np.array([self.defaults.get(n, self.default_value) for n in names], dtype=np.float32)
        vec.flags.writeable = False
        return vec
