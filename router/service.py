"""RouterService: owns the live ``Router`` snapshot, keeps it in sync with Redis across
replicas, and aggregates exposure counts for the SRM check.

* ``start()`` loads stored configs (stored ones win over ``initial`` by name; an initial
  experiment whose model a stored one claims is dropped), then runs two background tasks:
  a pub/sub subscriber that re-reads the stored configs on every notification (and every
  ``resync_interval_s`` as a safety net), reconnecting with exponential backoff, and a
  flusher that every ``flush_interval_s`` sends exposures and distinct units (SRM) and
  outcome counts (guardrails), and applies a guardrail rollback when one is due.
* A reload builds a complete new ``Router`` and swaps one attribute, so a request sees the
  old or the new snapshot, never a mix. Any failure keeps the last good snapshot.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Mapping

import prometheus_client
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .assign import Router
from .config import ExperimentConfig, parse_experiment
from .errors import ConfigError, ModelConflict, StoreUnavailable, VersionConflict
from .exposures import ExposureAggregator
from .guardrails import GUARDRAIL_TOKEN, GuardrailMonitor, Rollback
from .metrics import RouterMetrics
from .srm import SrmResult
from .store import ExperimentStore, StoredExperiment
from .types import Assignment

__all__ = ["RouterService"]

log = logging.getLogger(__name__)
ChangeCallback = Callable[[Router], "None | Awaitable[None]"]


class RouterService:
    """Owns the live ``Router``, its Redis store, the pub/sub subscriber and exposure counts.

    ``initial`` configs serve until (and unless) Redis holds others; ``admin_tokens`` maps a
    token id (recorded in history) to its secret (never logged, stored or shown).
    """

    def __init__(
        self,
        redis: Redis,
        initial: list[ExperimentConfig] | None,
        admin_tokens: Mapping[str, str],
        registry: prometheus_client.CollectorRegistry = prometheus_client.REGISTRY,
        key_prefix: str = "infergate:",
        *,
        flush_interval_s: float = 1.0,
        resync_interval_s: float = 30.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        srm_alpha: float = 0.001,
        history_limit: int = 1000,
        units_ttl_s: int = 7 * 24 * 3600,
        max_pending_units: int = 500_000,
        units_resend_after_s: float = 60.0,
        guardrail_window_s: float = 10.0,
        guardrail_min_requests: int = 100,
        guardrail_sustain: int = 2,
        guardrail_slot_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._store = ExperimentStore(redis, key_prefix, history_limit)
        self._initial = {c.name: c for c in (initial or [])}
        self.admin_tokens = dict(admin_tokens)  # token id -> token; never logged or shown
        self._metrics = RouterMetrics(registry)
        self._flush_interval_s = flush_interval_s
        self._resync_interval_s = resync_interval_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._router = Router.from_configs(self._initial.values())
        self._meta: dict[str, StoredExperiment] = {}
        self._exposures = ExposureAggregator(self._store, self._metrics, srm_alpha, units_ttl_s=units_ttl_s,
                                             max_pending_units=max_pending_units,
                                             resend_after_s=units_resend_after_s)
        self._guard = GuardrailMonitor(self._store, self._metrics, window_s=guardrail_window_s,
                                       min_requests=guardrail_min_requests, sustain=guardrail_sustain,
                                       slot_s=guardrail_slot_s, clock=clock)
        self._callbacks: list[ChangeCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.connected = False
        self.reloads = 0
        # Set by the gateway: refuses, before storing, a config whose targets cannot serve.
        self.target_check: Callable[[ExperimentConfig], Awaitable[None]] | None = None

    # -- the snapshot --------------------------------------------------------------------

    @property
    def router(self) -> Router:
        """The current snapshot; read it once per request."""
        return self._router

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(new_router)`` for every change of config, just before the new
        snapshot is swapped in (awaited when it returns an awaitable)."""
        self._callbacks.append(callback)

    def record_shadow(self, assignment: Assignment, latency_s: float, diff: float | None = None) -> None:
        """Record one shadow call: its latency and |shadow - primary| prediction difference."""
        if assignment.shadow is not None:
            self._metrics.record_shadow(assignment.experiment, assignment.shadow[0], latency_s, diff)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load stored configs (Redis down: keep ``initial``), then start the background tasks."""
        self._stopping.clear()
        try:
            await self.resync()
        except StoreUnavailable as e:
            log.warning("router: Redis unavailable at start (%s); serving initial configs", e)
        for coro in (self._subscribe_loop(), self._flush_loop()):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Stop the background tasks and flush the last exposure counts (best effort)."""
        # Ask the loops to finish rather than cancel them: redis-py's pub/sub read can swallow
        # a cancellation and wait on (observed with redis 7.4), so cancel is only the fallback.
        self._stopping.set()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=3.0)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        final = asyncio.create_task(self.flush_exposures())  # last counts, best effort
        done, _ = await asyncio.wait({final}, timeout=1.0)
        if not done:
            final.cancel()
        elif final.exception() is not None and not isinstance(final.exception(), StoreUnavailable):
            log.error("router: final exposure flush failed: %r", final.exception())

    # -- applying stored configs -----------------------------------------------------------

    async def resync(self) -> bool:
        """Re-read every stored config and swap in a new snapshot; True when it changed."""
        # Serialised, so a slow read of older state cannot be applied after a newer one.
        async with self._sync_lock:
            stored = await self._store.load_all()
            self.connected = True
            return await self._apply(stored)

    async def _apply(self, stored: dict[str, StoredExperiment]) -> bool:
        current = self._router
        configs: dict[str, ExperimentConfig] = {}
        claimed: set[str] = set()
        # Newest first, so a (racy) model clash between stored experiments resolves the same
        # way on every replica.
        for rec in sorted(stored.values(), key=lambda r: (-r.updated_at, r.name)):
            try:
                cfg = parse_experiment(rec.config, f"stored[{rec.name!r}]")
            except ConfigError as e:
                log.error("router: ignoring invalid stored experiment: %s", e.message)
                old = current.experiment(rec.name)
                if old is None:
                    continue
                cfg = old.config
            if cfg.model in claimed:
                log.error("router: stored experiment %r skipped: model %r claimed by a newer one", cfg.name, cfg.model)
                continue
            claimed.add(cfg.model)
            configs[cfg.name] = cfg
        for name, cfg in self._initial.items():
            if name not in configs and cfg.model not in claimed:
                claimed.add(cfg.model)
                configs[name] = cfg
        try:
            new = Router.from_configs(sorted(configs.values(), key=lambda c: c.name), previous=current)
        except ConfigError as e:
            log.error("router: keeping last good config: %s", e.message)
            return False
        self._meta = {n: r for n, r in stored.items() if n in configs}
        changed = new.configs() != current.configs()
        if changed:
            # Before the swap: the gateway builds the batchers of new targets here, so no
            # request is assigned to a target it has no batcher for yet (a deploy's first
            # requests got 503 "no backend" while the model's spec was read: 1 in 3,077 in
            # tests/registry/test_deploy.py). Callers of `router` keep the old snapshot meanwhile.
            for cb in list(self._callbacks):
                try:
                    res = cb(new)
                    if inspect.isawaitable(res):
                        await res
                except Exception:
                    log.exception("router: on_change callback failed")
        self._router = new
        if changed:
            self.reloads += 1
            for name in configs:
                self._metrics.config_version.labels(name).set(self.version(name))
        return changed

    def version(self, name: str) -> int:
        """Stored version of an experiment (0 = from the initial config, never stored)."""
        rec = self._meta.get(name)
        return rec.version if rec is not None else 0

    async def put_experiment(self, name: str, body: Any, token_id: str, *, reason: str | None = None,
                             figures: dict[str, Any] | None = None,
                             expected_version: int | None = None) -> int:
        """Validate, store, notify, apply locally; returns the new version.

        ``reason`` and ``figures`` go into the history entry. ``expected_version`` makes the
        write a compare-and-set (0 = never stored). Raises ConfigError / ModelConflict /
        VersionConflict / StoreUnavailable.
        """
        return await self._put(name, body, token_id, reason=reason, figures=figures,
                               expected_version=expected_version)

    async def validate(self, name: str, body: Any, *, check_targets: bool = True) -> ExperimentConfig:
        """Everything a PUT checks before storing (schema, name, model conflict, Triton
        targets); raises ConfigError / ModelConflict. Also the admin API's dry run."""
        if isinstance(body, Mapping) and "name" not in body:
            body = {**body, "name": name}
        cfg = parse_experiment(body, "body")
        if cfg.name != name:
            raise ConfigError(f"body.name: {cfg.name!r} differs from the URL's {name!r}", "name_mismatch")
        for other in self._router.configs():
            if other.name != name and other.model == cfg.model:
                raise ModelConflict(f"model {cfg.model!r} is already routed by experiment {other.name!r}")
        if check_targets and self.target_check is not None:
            await self.target_check(cfg)  # e.g. the gateway asks Triton; raises ConfigError
        return cfg

    async def _put(self, name: str, body: Any, token_id: str, *, reason: str | None,
                   figures: dict[str, Any] | None, expected_version: int | None,
                   rollback: dict[str, Any] | None = None, check_targets: bool = True) -> int:
        cfg = await self.validate(name, body, check_targets=check_targets)
        version = await self._store.put(name, cfg.to_dict(), token_id, reason=reason, figures=figures,
                                        expected_version=expected_version, rollback=rollback)
        try:
            await self.resync()
        except StoreUnavailable:
            pass  # the subscriber catches up when Redis answers again
        return version

    async def history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self._store.history(name, limit)

    # -- exposures, SRM and guardrails ---------------------------------------------------

    async def flush_exposures(self) -> None:
        """Push this replica's new exposures and units to Redis and refresh the aggregated SRM."""
        await self._exposures.flush(self._router)

    async def evaluate_guardrails(self) -> list[str]:
        """Send outcome counts, judge every experiment over the window of all replicas, and
        apply due rollbacks; returns the experiments this replica rolled back."""
        done = []
        router = self._router  # the versions judged are this snapshot's: a later change wins
        versions = {name: self.version(name) for name in router.experiments()}
        for rb in await self._guard.evaluate(router, versions):
            if await self._apply_rollback(rb):
                done.append(rb.experiment)
        return done

    async def _apply_rollback(self, rb: Rollback) -> bool:
        """Store one rollback, compare-and-set on the version that was judged: when another
        replica (or a person) changed the experiment first, this is a no-op."""
        record = {"at": time.time(), "variant": rb.variants[0], "variants": list(rb.variants),
                  "reason": rb.reason, "figures": rb.figures}
        try:
            version = await self._put(rb.experiment, rb.body, GUARDRAIL_TOKEN, reason=rb.reason,
                                      figures=rb.figures, expected_version=rb.version,
                                      rollback=record, check_targets=False)
        except VersionConflict as e:
            log.info("router: guardrail rollback of %r not needed: %s", rb.experiment, e.message)
            return False
        self._guard.applied(rb, {**record, "version": version})
        log.warning("router: %s rolled back to version %d: %s", rb.experiment, version, rb.reason)
        return True

    def srm(self, name: str) -> SrmResult | None:
        exp = self._router.experiment(name)
        return self._exposures.srm(exp) if exp is not None else None

    def state(self, name: str) -> dict[str, Any] | None:
        """Live state of one experiment, as the admin API shows it."""
        exp = self._router.experiment(name)
        if exp is None:
            return None
        source, counts = self._exposures.counts(exp)
        usource, units = self._exposures.unit_counts(exp)
        res = self._exposures.srm(exp)
        meta = self._meta.get(name)
        return {
            "name": name,
            "version": self.version(name),
            "source": "redis" if meta is not None else "initial",
            "updated_at": meta.updated_at if meta else None,
            "token_id": meta.token_id if meta else None,
            "reason": meta.reason if meta else None,
            "config": exp.config.to_dict(),
            "allocation": {"id": exp.alloc_id, "buckets": exp.bucket_counts()},
            "exposures": {"source": source, "counts": counts},
            "units": {"source": usource, "counts": units, "dropped": self._exposures.dropped.get(name, 0)},
            "srm": {**res.to_dict(), "alpha": self._exposures.alpha, "basis": "units"},
            "srm_requests": {**self._exposures.srm_requests(exp).to_dict(), "alpha": self._exposures.alpha},
            "guardrails": self._guard.state(exp, meta is not None and meta.token_id == GUARDRAIL_TOKEN),
            "shadow": ({"variant": exp.config.shadow.variant, "share": exp.config.shadow.share,
                        **self._metrics.shadow_figures(name, exp.config.shadow.variant)}
                       if exp.config.shadow is not None else None),
            "redis_connected": self.connected,
        }

    # -- background tasks -----------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when ``stop()`` is called."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _subscribe_loop(self) -> None:
        delay = self._backoff[0]
        while not self._stopping.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._store.channel)
                await self.resync()  # after subscribing, so no change falls in the gap
                delay = self._backoff[0]
                last = time.monotonic()
                while not self._stopping.is_set():
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    if msg is not None or time.monotonic() - last >= self._resync_interval_s:
                        await self.resync()
                        last = time.monotonic()
            except (RedisError, OSError, RuntimeError, StoreUnavailable) as e:
                # RuntimeError: uvloop's "handler is closed" when a reset beats the first write.
                self.connected = False
                log.warning("router: Redis subscription lost (%s); retrying in %.1fs", type(e).__name__, delay)
                await self._pause(delay)
                delay = min(delay * 2, self._backoff[1])
            except Exception:
                # A bug must not silently end config sync for the life of the process.
                self.connected = False
                log.exception("router: subscriber failed; retrying in %.1fs", delay)
                await self._pause(delay)
                delay = min(delay * 2, self._backoff[1])
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # closing a broken connection may raise anything; it is gone
                    pass

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            await self._pause(self._flush_interval_s)
            for step in (self.flush_exposures, self.evaluate_guardrails):
                try:
                    await step()
                except StoreUnavailable as e:
                    log.debug("router: %s skipped: %s", step.__name__, e)
                except Exception:
                    # A bug or an unforeseen client error must not end SRM counting or the
                    # guardrails for good.
                    log.exception("router: %s failed; retrying next interval", step.__name__)

    def __repr__(self) -> str:
        names = ",".join(f"{n}@{self.version(n)}" for n in sorted(self._router.experiments()))
        return f"<RouterService [{names}] redis={'up' if self.connected else 'down'} reloads={self.reloads}>"
