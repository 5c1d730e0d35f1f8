"""Triton replicas behind one target: pick, retry within the deadline, eject outliers.

Anchored on Envoy's outlier detection: a replica that fails `eject_after` calls in a row
is ejected for a time that doubles with each ejection; an active health check (gRPC
ServerReady) marks replicas down and up again, so a restarted Triton is picked up without
a gateway restart. A failed call is retried once on another replica when the request's
remaining budget allows: with an alternative at hand, the first try gets half the budget,
and no more than `hedge_factor` times a normal call (smoothed), at least `min_try_s`, so a
black-holed replica holds a batch for tens of milliseconds, not half a second.
With every replica out, the pool still tries one (panic mode) rather than refusing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, Callable, Sequence

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.backend import RETRYABLE, ModelSpec, RequestTemplate, TritonBackend, translate
from gateway.batcher import InferFn
from gateway.errors import DeadlineExceeded, ModelUnavailable
from gateway.triton_http import HTTPInfer, HTTPTemplate

log = logging.getLogger("infergate.pool")


class Replica:
    __slots__ = ("backend", "http", "healthy", "failures", "ejected_until", "ejections", "up", "calls")

    def __init__(self, backend: TritonBackend, up: Gauge, http: HTTPInfer | None = None) -> None:
        self.backend, self.up, self.http = backend, up, http
        self.healthy, self.failures, self.ejected_until, self.ejections = True, 0, 0.0, 0
        self.calls = 0

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until

    def __repr__(self) -> str:
        state = "up" if self.healthy else "down"
        return f"<Replica {self.backend.url} {state} failures={self.failures} ejections={self.ejections}>"


class ReplicaPool:
    def __init__(self, urls: Sequence[str], registry: CollectorRegistry, *, eject_after: int = 3,
                 base_ejection_s: float = 1.0, max_ejection_s: float = 10.0,
                 health_interval_s: float = 0.5, health_timeout_s: float = 0.3,
                 hedge_factor: float = 8.0, min_try_s: float = 0.05, http_urls: Sequence[str] = ()) -> None:
        """`http_urls` (one per gRPC url, same order): the replicas' HTTP addresses; when given,
        inference calls go over HTTP (`gateway.triton_http`), everything else over gRPC."""
        if http_urls and len(http_urls) != len(urls):
            raise ValueError("give one Triton HTTP address per gRPC address, in the same order")
        up = Gauge("infergate_triton_replica_up", "1 when a Triton replica is taking traffic",
                   ["replica"], registry=registry, multiprocess_mode="livemin")
        self._retries = Counter("infergate_triton_retries_total", "Calls retried on another replica",
                                registry=registry)
        self._ejections = Counter("infergate_triton_ejections_total", "Replicas ejected after failures",
                                  ["replica"], registry=registry)
        self.replicas = [Replica(TritonBackend(u), up.labels(u), HTTPInfer(h) if h else None)
                         for u, h in zip(urls, http_urls or [None] * len(urls))]
        self.http = bool(http_urls)
        for r in self.replicas:
            r.up.set(1)
            self._ejections.labels(r.backend.url)  # a 0 series per replica from the start, for dashboards
        self._rr = itertools.cycle(range(len(self.replicas)))
        self.eject_after, self.base_ejection_s, self.max_ejection_s = eject_after, base_ejection_s, max_ejection_s
        self.health_interval_s, self.health_timeout_s = health_interval_s, health_timeout_s
        self.hedge_factor, self.min_try_s = hedge_factor, min_try_s
        self.call_ewma_s = 0.0   # smoothed duration of a successful call, any replica
        self._task: asyncio.Task | None = None

    def __repr__(self) -> str:
        now = time.monotonic()
        n = sum(r.available(now) for r in self.replicas)
        return f"<ReplicaPool [{n}/{len(self.replicas)} available] {', '.join(r.backend.url for r in self.replicas)}>"

    @property
    def primary(self) -> TritonBackend:
        return self.replicas[0].backend

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._health_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(r.backend.close() for r in self.replicas),
                             *(r.http.close() for r in self.replicas if r.http is not None))

    async def any_ready(self) -> bool:
        return any(await asyncio.gather(*(r.backend.is_ready(self.health_timeout_s) for r in self.replicas)))

    async def model_spec(self, model: str) -> ModelSpec:
        last: Exception | None = None
        for r in self._order(time.monotonic()):
            try:
                return await r.backend.model_spec(model)
            except ModelUnavailable as exc:
                last = exc
        raise last or ModelUnavailable(f"no replica knows model {model!r}")

    async def repository_index(self) -> list[dict]:
        """The first answering replica's repository index (Triton's own shape)."""
        last: Exception | None = None
        for r in self._order(time.monotonic()):
            try:
                return await r.backend.repository_index()
            except ModelUnavailable as exc:
                last = exc
        raise last or ModelUnavailable("no replica answered the repository index")

    async def model_ready(self, model: str, version: str) -> bool:
        return any([await r.backend.model_ready(model, version, self.health_timeout_s)
                    for r in self._order(time.monotonic())])

    def _order(self, now: float) -> list[Replica]:
        """Available replicas in round-robin order, then the rest (panic mode)."""
        n = len(self.replicas)
        start = next(self._rr)
        ring = [self.replicas[(start + i) % n] for i in range(n)]
        return [r for r in ring if r.available(now)] + [r for r in ring if not r.available(now)]

    def make_infer(self, spec: ModelSpec, version: str) -> InferFn:
        template = RequestTemplate(spec, version)
        if self.http:   # inference over each replica's HTTP port (gateway/triton_http.py)
            http = HTTPTemplate(spec.name, version, spec.inputs, spec.outputs)
            build: Callable[[dict[str, np.ndarray]], Any] = http.build

            async def call(replica: Replica, payload: Any, timeout: float) -> dict[str, np.ndarray]:
                header_len, body = await replica.http.infer(payload, timeout)  # type: ignore[union-attr]
                return http.decode(header_len, body)
        else:
            build = template.build

            async def call(replica: Replica, payload: Any, timeout: float) -> dict[str, np.ndarray]:
                return template.decode(await replica.backend.infer(payload, timeout))

        async def infer(x: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
            t0 = time.monotonic()
            deadline = t0 + timeout
            payload = build(x)
            order = self._order(t0)
            for attempt, replica in enumerate(order[:2]):
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    raise DeadlineExceeded(f"{template.label}: no time left for inference")
                alternative = attempt == 0 and len(order) > 1 and order[1].available(now)
                per_try = remaining
                if alternative:
                    per_try = min(remaining / 2, max(self.min_try_s, self.hedge_factor * self.call_ewma_s))
                try:
                    out = await call(replica, payload, per_try)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # the request, not the replica
                        raise translate(exc, template.label) from exc
                    self._failed(replica, time.monotonic())
                    if exc.code() not in RETRYABLE or not alternative:
                        raise translate(exc, template.label) from exc
                    self._retries.inc()
                    continue
                replica.failures = 0
                self.call_ewma_s += 0.05 * ((time.monotonic() - now) - self.call_ewma_s)
                return out
            raise ModelUnavailable(f"{template.label}: no replica answered")

        return infer

    def _failed(self, r: Replica, now: float) -> None:
        r.failures += 1
        if r.failures >= self.eject_after and now >= r.ejected_until:
            r.ejections += 1
            r.ejected_until = now + min(self.max_ejection_s, self.base_ejection_s * 2 ** (r.ejections - 1))
            r.failures = 0
            self._ejections.labels(r.backend.url).inc()
            log.warning("ejected %r until +%.1fs", r, r.ejected_until - now)

    async def _health_loop(self) -> None:
        while True:
            results = await asyncio.gather(*(r.backend.is_ready(self.health_timeout_s) for r in self.replicas))
            for r, ok in zip(self.replicas, results):
                if ok != r.healthy:
                    log.warning("replica %s is %s", r.backend.url, "ready again" if ok else "not ready")
                    if ok:  # back from a restart: forget its ejection history
                        r.ejected_until, r.ejections, r.failures = 0.0, 0, 0
                r.healthy = ok
                r.up.set(1 if ok else 0)
            await asyncio.sleep(self.health_interval_s)
