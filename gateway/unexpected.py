"""Unexpected exceptions (bugs): logged once with their traceback, rate-limited, counted.

An exception no module translated into a `GatewayError` answers 500 `internal` and reaches
`UnexpectedErrors.report` from the place that knows the request (the pipeline, with model and
variant; the ASGI front for a codec; the Starlette handler for the other routes). Each
exception object is logged at most once, however many requests it failed (a batch shares
one), and at most `burst` tracebacks are written per `window_s`: a hot bug cannot flood the
log, and the number left out is logged when the window ends. Every one is counted in
`infergate_unexpected_errors_total`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter

from gateway.errors import GatewayError, Internal

_SEEN = "_infergate_reported"


class UnexpectedErrors:
    __slots__ = ("_log", "_counter", "_burst", "_window_s", "_clock", "_window_start", "_logged", "_suppressed")

    def __init__(self, registry: CollectorRegistry, log: logging.Logger | None = None, *,
                 burst: int = 10, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log or logging.getLogger("infergate")
        self._counter = Counter("infergate_unexpected_errors", "Exceptions nobody translated (bugs): "
                                "answered 500 internal, logged with their traceback", registry=registry)
        self._burst, self._window_s, self._clock = burst, window_s, clock
        self._window_start = clock()
        self._logged = self._suppressed = 0

    def __repr__(self) -> str:
        return f"<UnexpectedErrors [logged {self._logged} | suppressed {self._suppressed} this window]>"

    @staticmethod
    def reported(exc: BaseException) -> bool:
        """Whether `exc` was already logged here (Starlette re-raises what its handler answered)."""
        return bool(getattr(exc, _SEEN, False))

    def report(self, exc: BaseException, where: str, model: str | None = None,
               variant: str | None = None) -> None:
        """Log (once per exception, rate-limited) and count `exc`, an `Internal` or a raw
        exception; other `GatewayError`s are the gateway's own answers and are ignored."""
        if isinstance(exc, Internal):
            cause = exc.__cause__ or exc
        elif isinstance(exc, GatewayError):
            return
        else:
            cause = exc
        if getattr(cause, _SEEN, False):
            return
        try:
            setattr(cause, _SEEN, True)
        except AttributeError:  # an exception type with __slots__: may be logged twice, never lost
            pass
        self._counter.inc()
        now = self._clock()
        if now - self._window_start >= self._window_s:
            if self._suppressed:
                self._log.error("%d more unexpected errors in the last %.0f s were not logged",
                                self._suppressed, now - self._window_start)
            self._window_start, self._logged, self._suppressed = now, 0, 0
        if self._logged >= self._burst:
            self._suppressed += 1
            return
        self._logged += 1
        self._log.error("unexpected error in %s (model=%s variant=%s): %s: %s", where, model, variant,
                        type(cause).__name__, cause, exc_info=(type(cause), cause, cause.__traceback__))
