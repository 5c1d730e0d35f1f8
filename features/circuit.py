"""A small circuit breaker so a store outage costs one timeout, not one per request. Pure: clock passed in."""

from __future__ import annotations

from typing import Callable

__all__ = ["Circuit"]


class Circuit:
    """Closed until ``trip_after`` consecutive failures; then open for a backoff that doubles
    (up to ``max_backoff_s``) after each failed probe. When the backoff has passed, ``allow``
    lets exactly one read through as a probe; its success closes the circuit.
    """

    __slots__ = ("_trip_after", "_base", "_max", "_clock", "_failures", "_open_until", "_backoff", "_probing")

    def __init__(self, trip_after: int, backoff_s: float, max_backoff_s: float, clock: Callable[[], float]) -> None:
        self._trip_after = trip_after
        self._base = backoff_s
        self._max = max_backoff_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._backoff = backoff_s
        self._probing = False

    @property
    def state(self) -> str:
        if self._failures < self._trip_after:
            return "closed"
        return "half-open" if self._probing or self._clock() >= self._open_until else "open"

    def allow(self) -> bool:
        """Whether a read may go to the store now."""
        if self._failures < self._trip_after:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._backoff = self._base
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self._failures >= self._trip_after:
            self._open_until = self._clock() + self._backoff
            self._backoff = min(self._backoff * 2, self._max)

    def __repr__(self) -> str:
        return f"<Circuit {self.state} failures={self._failures} backoff={self._backoff:.3f}s>"
