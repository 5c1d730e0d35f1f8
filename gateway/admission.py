"""Adaptive admission: how many requests this gateway process lets in at once, and who is
refused first when it is full.

`Limiter` is the controller, pure and driven by the clock it is given (tests feed it
synthetic latencies). It learns the **floor** (the mean round trip of a window under light
load) and keeps the in-flight limit where the admitted round trip stays within
`tolerance` × floor: while it does and the limit is in use, the limit grows by about
√limit per window; when the window's mean round trip passes that target (queueing), it shrinks
by the ratio target/mean (to no less than `max_cut` of itself per window; the mean is smoothed
over two windows). The same idea as Envoy's adaptive concurrency filter (a gradient against
a measured minimum) and Netflix's concurrency-limits (Gradient2 / Vegas: a queue allowance of √limit), with two differences
that suit a micro-batching gateway on a CPU-bound event loop: the floor is re-learnt only
when the gateway is nearly idle (never by cutting admitted concurrency, which Envoy does
and which would shed at modest load), and the tolerance is a multiple of the floor, because
batching makes a busy gateway's round trip several times its idle one while throughput still
grows (see BENCHMARKS.md "Overload").

Per request the hot path does a few integer comparisons and additions (`admit`) and, when
the request completes, adds its round trip to the window (`done`); the limit is recomputed
once per window (`window_s`), checked at completion, so an idle gateway does no work.

Priorities: `critical` requests may use the whole limit; `sheddable` ones (load tests,
shadow calls, models configured so) only `sheddable_fraction` of it, so they are refused
first. Deadlines: a request whose timeout is below the floor, or below the current estimate
of an admitted request's round trip, is refused at once (503 `deadline_exceeded`) instead of
queueing into a timeout.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Callable, Mapping

from httpcommon.errors import RETRY_AFTER_S, render

if TYPE_CHECKING:
    from gateway.asgi import Reply
    from gateway.config import GatewayConfig
    from gateway.metrics import GatewayMetrics

CRITICAL, SHEDDABLE = 0, 1
PRIORITIES = ("critical", "sheddable")
_BY_NAME = {b"critical": CRITICAL, b"sheddable": SHEDDABLE}

# What `admit` answers: 0 = admitted, else the reason of the refusal (a metrics label).
ADMITTED, LIMIT, DEADLINE_FLOOR, DEADLINE_QUEUE = 0, 1, 2, 3
REASONS = ("admitted", "limit", "deadline_floor", "deadline_queue")


class Limiter:
    """The adaptive concurrency limit of one gateway process (one event loop).

    `admit()`/`done()` are the only calls on the request path; everything else happens in
    `update()`, once per window.
    """

    __slots__ = ("initial", "min_limit", "max_limit", "tolerance", "window_s", "min_samples", "light_in_flight",
                 "floor_relax", "sheddable_fraction", "max_cut", "clock",
                 "limit", "sheddable_limit", "in_flight", "floor_s", "estimate_s", "updates",
                 "_n", "_sum", "_peak", "_next")

    def __init__(self, *, initial: int = 64, min_limit: int = 32, max_limit: int = 4096,
                 tolerance: float = 10.0, window_s: float = 0.1, min_samples: int = 10,
                 light_in_flight: int = 4, floor_relax: float = 0.05, sheddable_fraction: float = 0.5,
                 max_cut: float = 0.8, clock: Callable[[], float] = time.perf_counter) -> None:
        if not 1 <= min_limit <= initial <= max_limit:
            raise ValueError("need 1 <= min_limit <= initial <= max_limit")
        if tolerance <= 1.0 or window_s <= 0 or not 0 < sheddable_fraction <= 1:
            raise ValueError("need tolerance > 1, window_s > 0 and 0 < sheddable_fraction <= 1")
        self.initial, self.min_limit, self.max_limit = initial, min_limit, max_limit
        self.tolerance, self.window_s, self.min_samples = tolerance, window_s, min_samples
        self.light_in_flight, self.floor_relax = light_in_flight, floor_relax
        self.sheddable_fraction = sheddable_fraction
        self.max_cut = max_cut
        self.clock = clock
        self.limit = initial
        self.sheddable_limit = max(1, int(initial * sheddable_fraction))
        self.in_flight = 0
        self.floor_s = math.inf      # not measured yet: no deadline is refused against it
        self.estimate_s = 0.0        # expected round trip of a request admitted now
        self.updates = 0
        self._n, self._sum, self._peak = 0, 0.0, 0
        self._next = clock() + window_s

    def __repr__(self) -> str:
        floor = "?" if math.isinf(self.floor_s) else f"{self.floor_s * 1e3:.2f}ms"
        return (f"<Limiter limit={self.limit} (sheddable {self.sheddable_limit}, ceiling {self.max_limit}) "
                f"[in flight {self.in_flight} | floor {floor} | estimate {self.estimate_s * 1e3:.2f}ms]>")

    # -- the request path ------------------------------------------------------------------

    def admit(self, priority: int, timeout_s: float) -> int:
        """ADMITTED (and counted in flight: call `done` later) or the reason of a refusal."""
        n = self.in_flight
        if n >= (self.limit if priority == CRITICAL else self.sheddable_limit):
            return LIMIT
        if timeout_s < self.estimate_s:
            return DEADLINE_FLOOR if timeout_s < self.floor_s else DEADLINE_QUEUE
        n += 1
        self.in_flight = n
        if n > self._peak:
            self._peak = n
        return ADMITTED

    def done(self, t0: float, ok: bool) -> None:
        """A request admitted at `t0` (this limiter's clock) has been answered; only answered
        requests (`ok`) say anything about the round trip."""
        self.in_flight -= 1
        if ok:
            now = self.clock()
            self._n += 1
            self._sum += now - t0
            if now >= self._next:
                self.update(now)

    def shadow_allowed(self) -> bool:
        """A shadow call is sheddable traffic: made only below the sheddable limit."""
        return self.in_flight < self.sheddable_limit

    # -- once per window ---------------------------------------------------------------------

    def update(self, now: float) -> None:
        """Recompute the limit from the window that just ended (pure arithmetic)."""
        n, total, peak = self._n, self._sum, self._peak
        self._next = now + self.window_s
        self.updates += 1
        if n < self.min_samples:
            if peak > self.light_in_flight:
                return   # busy but slow: keep adding to this window until it can be judged
            # Nearly idle: nothing is queueing, so expect the floor again, and forget a past
            # overload (back towards the initial limit, as below).
            self._n, self._sum, self._peak = 0, 0.0, self.in_flight
            if not math.isinf(self.floor_s):
                self.estimate_s = self.floor_s
            self._relax()
            return
        self._n, self._sum, self._peak = 0, 0.0, self.in_flight
        raw = total / n
        # Smoothed over two windows: one slow window (a GC pause, a neighbour's burst on a
        # shared host) must not cut the limit by itself.
        mean = raw if self.estimate_s <= 0 else 0.5 * (self.estimate_s + raw)
        self.estimate_s = mean
        if raw < self.floor_s:
            self.floor_s = raw
        elif peak <= self.light_in_flight:
            # Nearly idle and slower than the floor: the path itself got slower (a heavier
            # model, a busier host). Follow it slowly; under load the floor is never raised.
            self.floor_s += (raw - self.floor_s) * self.floor_relax
        target = self.floor_s * self.tolerance
        limit = self.limit
        if mean > target:
            limit = max(self.min_limit, int(limit * max(self.max_cut, target / mean)))
        elif peak * 2 >= limit:
            # Only a limit in use may grow: an idle gateway must not drift to the ceiling.
            limit = min(self.max_limit, limit + max(1, int(math.sqrt(limit))))
        else:
            self._relax()
            return
        self.limit = limit
        self.sheddable_limit = max(1, int(limit * self.sheddable_fraction))

    def _relax(self) -> None:
        """A quiet window: a limit cut below `initial` by a past overload grows back towards
        it (never above), so the next burst after a quiet spell is not refused for a load
        that is gone."""
        if self.limit < self.initial:
            self.limit = min(self.initial, self.limit + max(1, int(math.sqrt(self.limit))))
            self.sheddable_limit = max(1, int(self.limit * self.sheddable_fraction))


def parse_priority(raw: bytes | None, default: int) -> tuple[int, bool]:
    """(priority, malformed) for an `x-priority` header value; a malformed one is ignored."""
    if raw is None:
        return default, False
    p = _BY_NAME.get(raw)
    if p is None:
        p = _BY_NAME.get(raw.strip().lower())
        if p is None:
            return default, True
    return p, False


def priority_code(name: str) -> int:
    if name not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, not {name!r}")
    return PRIORITIES.index(name)


def model_priorities(spec: Mapping[str, str]) -> dict[str, int]:
    """Per-model defaults from the config (`model -> critical|sheddable`), checked at start-up."""
    return {model: priority_code(p) for model, p in spec.items()}


class Admission:
    """The limiter wired to the gateway: priorities from headers and config, metrics bound
    once, and the refusals' bytes rendered once (a shed request costs one pre-built reply)."""

    __slots__ = ("limiter", "default_priority", "by_model", "penalty_s", "retry_after_s", "_admitted", "_shed",
                 "_bad_priority", "_penalised", "overloaded_reply", "_rejected", "_recent", "_older", "_rotate_at")

    def __init__(self, limiter: Limiter, default_priority: int, by_model: Mapping[str, int],
                 metrics: "GatewayMetrics", penalty_s: float = 0.5) -> None:
        self.limiter = limiter
        # A connection that sends again sooner than the Retry-After it was given (a retry
        # storm) gets its next 429 only after `penalty_s`: each such caller then costs the
        # event loop one cheap answer per `penalty_s` instead of one per round trip, and the
        # admitted requests keep the loop. Callers that honour Retry-After never wait.
        self.penalty_s = penalty_s
        self.retry_after_s = float(RETRY_AFTER_S)
        # connection (client address, port) -> when it was last refused; two generations,
        # each one Retry-After long, so the memory is bounded by the refusals of ~2 s.
        self._recent: dict[object, float] = {}
        self._older: dict[object, float] = {}
        self._rotate_at = 0.0
        self.default_priority = default_priority
        self.by_model = dict(by_model)
        m = metrics
        # Tallies (gateway/tally.py): a plain addition per request, folded in at scrape time.
        self._admitted = [m.counter(m.admission_admitted.labels(p)) for p in PRIORITIES]
        self._shed = {(r, p): m.counter(m.admission_shed.labels(REASONS[r], PRIORITIES[p]))
                      for r in (LIMIT, DEADLINE_FLOOR, DEADLINE_QUEUE) for p in (CRITICAL, SHEDDABLE)}
        self._bad_priority = m.admission_bad_priority
        self._penalised = m.admission_penalised
        self._rejected = m.rejected_by_code
        m.track(m.admission_limit, lambda: limiter.limit)
        m.track(m.admission_floor, lambda: 0.0 if math.isinf(limiter.floor_s) else limiter.floor_s)
        m.track(m.admission_estimate, lambda: limiter.estimate_s)
        status, body, extra = render("overloaded", "over the gateway's concurrency limit: retry later")
        self.overloaded_reply = (status, body, b"application/json", extra)

    def __repr__(self) -> str:
        return f"<Admission {self.limiter!r}>"

    def priority(self, raw: bytes | None, model: str | None) -> int:
        if raw is None:
            return self.by_model.get(model, self.default_priority) if model is not None else self.default_priority
        p, bad = parse_priority(raw, self.default_priority)
        if bad:
            self._bad_priority.inc()
        return p

    def admit(self, priority: int, timeout_s: float) -> int:
        r = self.limiter.admit(priority, timeout_s)
        if r:
            self._shed[r, priority].inc()
            self._rejected["overloaded" if r == LIMIT else "deadline_exceeded"].inc()
        else:
            self._admitted[priority].inc()
        return r

    async def refuse(self, reason: int, timeout_s: float, client: object = None) -> "Reply":
        """The answer to a refused request, whose body is never read (a reply tuple of
        `gateway.asgi`: status, body, content type, extra headers; the front sends it)."""
        if reason == LIMIT:
            if client is not None and self.penalty_s > 0 and self.ignored_retry_after(client):
                self._penalised.inc()
                await asyncio.sleep(self.penalty_s)
            return self.overloaded_reply
        lim = self.limiter
        ms = timeout_s * 1e3
        if reason == DEADLINE_FLOOR:
            why = f"x-request-timeout-ms: {ms:g} ms is below this gateway's floor of {lim.floor_s * 1e3:.2f} ms"
        else:
            why = (f"x-request-timeout-ms: {ms:g} ms cannot be met: an admitted request takes "
                   f"{lim.estimate_s * 1e3:.2f} ms now")
        status, body, extra = render("deadline_exceeded", why)
        return status, body, b"application/json", extra

    def ignored_retry_after(self, client: object) -> bool:
        """Record this refusal; True when the same connection was refused less than one
        Retry-After ago (also called by the HTTP front's shedding, gateway/http1.py)."""
        now = time.monotonic()
        if now >= self._rotate_at:
            self._older, self._recent = self._recent, {}
            self._rotate_at = now + self.retry_after_s
        last = self._recent.get(client)
        if last is None:
            last = self._older.get(client)
        self._recent[client] = now
        return last is not None and now - last < self.retry_after_s

    def recheck_model(self, model: str) -> bool:
        """For /v1/infer, whose model is in the body: True when the model's default priority
        is sheddable and the sheddable limit is already full (this request included)."""
        lim = self.limiter
        if self.by_model.get(model) == SHEDDABLE and lim.in_flight > lim.sheddable_limit:
            self._shed[LIMIT, SHEDDABLE].inc()
            self._rejected["overloaded"].inc()
            return True
        return False


def build(config: "GatewayConfig", metrics: "GatewayMetrics") -> Admission:
    """The admission of one gateway process, from its config (`admission=static` keeps the
    fixed cap alone: the limit starts, stays and ends at `max_in_flight_requests`)."""
    ceiling = config.max_in_flight_requests
    if config.admission == "static":
        limiter = Limiter(initial=ceiling, min_limit=ceiling, max_limit=ceiling,
                          sheddable_fraction=config.admission_sheddable_fraction)
    else:
        limiter = Limiter(initial=min(config.admission_initial_limit, ceiling),
                          min_limit=min(config.admission_min_limit, config.admission_initial_limit, ceiling),
                          max_limit=ceiling, tolerance=config.admission_tolerance,
                          window_s=config.admission_window_ms / 1e3,
                          sheddable_fraction=config.admission_sheddable_fraction)
    return Admission(limiter, priority_code(config.default_priority),
                     model_priorities(config.model_priorities), metrics, config.admission_penalty_ms / 1e3)
