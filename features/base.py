"""What both readers share: the fields of the reader protocol, derived from the view and the
failure policy, the circuit, and what the policy says when the store cannot answer."""

from __future__ import annotations

from typing import Callable

from features.circuit import Circuit
from features.errors import FeatureUnavailable
from features.metrics import ReaderMetrics
from features.policy import FailurePolicy
from features.row import FeatureRow
from features.spec import ViewSpec

__all__ = ["ReaderBase"]


class ReaderBase:
    __slots__ = ("width", "names", "entity_keys", "reads", "_spec", "_policy", "_defaults",
                 "_metrics", "_clock", "_circuit")

    def __init__(self, spec: ViewSpec, policy: FailurePolicy, metrics: ReaderMetrics,
                 clock: Callable[[], float]) -> None:
        self._spec = spec
        self.names: tuple[str, ...] = spec.names
        self.width = len(self.names)
        self.entity_keys: tuple[str, ...] = tuple(k.name for k in spec.join_keys)
        self.reads = 0
        self._policy = policy
        self._defaults = policy.default_vector(self.names)
        self._metrics = metrics
        self._clock = clock
        self._circuit = Circuit(policy.trip_after, policy.backoff_s, policy.max_backoff_s, clock)

    def _unavailable(self, n: int, why: str, cause: BaseException | None = None) -> list[FeatureRow]:
        """``n`` rows of flagged defaults (policy "default"); raises FeatureUnavailable (policy "raise")."""
        if self._policy.on_unavailable == "raise":
            raise FeatureUnavailable(f"feature view {self._spec.view!r}: {why}") from cause
        self._metrics.defaulted_rows.inc(n)
        return [FeatureRow(self._defaults.copy(), False, self.width, True) for _ in range(n)]
