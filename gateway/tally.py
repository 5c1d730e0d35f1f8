"""Per-request metric updates without a lock: plain Python numbers folded into prometheus-client.

A prometheus-client child takes a lock for every increment (a histogram observation takes two
and scans its buckets): ~10 locks per request on the gateway's hot path. A tally keeps the
same figures in plain ints and floats, and ``Folder.fold()`` adds what is new to the child
when the registry is collected: a scrape (and ``get_sample_value``) sees every update made
before it, with the metric's own names, labels, types and ``_created``.

The tallies are cumulative and never reset: the request path is their only writer and the
fold only reads them (it keeps what it already folded in its own fields). So a fold from
another thread -- a sync route in Starlette's thread pool, a test reading the registry --
cannot lose an increment; it may miss one made while it runs, which the next fold adds.

With several worker processes the values must reach the shared files at once (any worker
answers a scrape), so there the tallies write through to the child (``multiprocess=True``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any, Iterable

__all__ = ["CounterTally", "HistogramTally", "Folder", "counter_tally", "histogram_tally"]


class CounterTally:
    """What the request path increments in place of a bound `Counter` child."""

    __slots__ = ("n", "_folded", "_child")

    def __init__(self, child: Any) -> None:
        self.n = 0            # every increment so far (the request path writes it)
        self._folded = 0      # how much of it is in the child (the fold writes it)
        self._child = child

    def __repr__(self) -> str:
        return f"<CounterTally {self.n} [{self.n - self._folded} unfolded]>"

    def inc(self, amount: int = 1) -> None:
        self.n += amount

    def get(self) -> float:
        """The child's value with what is not folded yet (the console's series reads this)."""
        return self._child._value.get() + (self.n - self._folded)  # noqa: SLF001

    def fold(self) -> None:
        n = self.n
        d = n - self._folded
        if d:
            self._child.inc(d)
            self._folded = n


class HistogramTally:
    """What the request path observes into in place of a bound `Histogram` child: the same
    buckets (the child's upper bounds, +Inf last), found by bisection instead of a scan."""

    __slots__ = ("counts", "total", "_bounds", "_folded", "_folded_total", "_child")

    def __init__(self, child: Any) -> None:
        self._bounds = tuple(child._upper_bounds)  # noqa: SLF001 - the child's own, +Inf last
        self.counts = [0] * len(self._bounds)
        self.total = 0.0
        self._folded = [0] * len(self._bounds)
        self._folded_total = 0.0
        self._child = child

    def __repr__(self) -> str:
        return f"<HistogramTally count={sum(self.counts)} sum={self.total:.6g}>"

    def observe(self, amount: float) -> None:
        # prometheus-client counts an amount in the first bucket whose bound is >= it.
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.total += amount

    def fold(self) -> None:
        child, counts, folded = self._child, self.counts, self._folded
        for i in range(len(counts)):
            n = counts[i]
            d = n - folded[i]
            if d:
                child._buckets[i].inc(d)  # noqa: SLF001
                folded[i] = n
        total = self.total
        if total != self._folded_total:
            child._sum.inc(total - self._folded_total)  # noqa: SLF001
            self._folded_total = total


class _CounterThrough:
    """A tally that writes through (several workers)."""

    __slots__ = ("_child",)

    def __init__(self, child: Any) -> None:
        self._child = child

    def inc(self, amount: int = 1) -> None:
        self._child.inc(amount)

    def get(self) -> float:
        return self._child._value.get()  # noqa: SLF001


class _HistogramThrough:
    __slots__ = ("observe",)

    def __init__(self, child: Any) -> None:
        self.observe = child.observe


class Folder:
    """Registered on the registry before the metrics it folds: `collect()` folds and yields
    nothing, so the registry's own collection (in registration order) reads folded values."""

    def __init__(self) -> None:
        self._tallies: list[CounterTally | HistogramTally] = []
        self._lock = threading.Lock()   # two scrapes at once must not fold the same delta twice

    def __repr__(self) -> str:
        return f"<Folder tallies={len(self._tallies)}>"

    def add(self, tally: CounterTally | HistogramTally) -> None:
        self._tallies.append(tally)

    def fold(self) -> None:
        with self._lock:
            for t in list(self._tallies):
                t.fold()

    def describe(self) -> Iterable[Any]:
        return ()   # no metric of its own: nothing for the registry's duplicate check

    def collect(self) -> Iterable[Any]:
        self.fold()
        return ()


def counter_tally(child: Any, folder: Folder, multiprocess: bool) -> Any:
    return _tally(child, folder, multiprocess, CounterTally, _CounterThrough)


def histogram_tally(child: Any, folder: Folder, multiprocess: bool) -> Any:
    return _tally(child, folder, multiprocess, HistogramTally, _HistogramThrough)


def _tally(child: Any, folder: Folder, multiprocess: bool, local: type, through: type) -> Any:
    """Folded at collect time in one process; written through with several workers."""
    if multiprocess:
        return through(child)
    t = local(child)
    folder.add(t)
    return t
