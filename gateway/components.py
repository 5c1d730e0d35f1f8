"""Start-up and shutdown: build every long-lived object the request path looks up.

Decided here, once: the Triton channel, each target's model spec and micro-batcher, the
router service, the online feature reader, the codecs' model shapes, the error map.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from prometheus_client import CollectorRegistry

from gateway import errors as E
from gateway.backend import ModelSpec
from gateway.batcher import BatchInfo, MicroBatcher
from gateway.codec_v1 import V1Codec
from gateway.codec_v2 import V2Codec
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics, multiprocess
from gateway.pipeline import Pipeline
from gateway.pool import ReplicaPool
from gateway.request import ModelShape
from gateway.unexpected import UnexpectedErrors

log = logging.getLogger("infergate")


class Components:
    """Everything the gateway serves with; `start()` in the lifespan, `stop()` at exit."""

    def __init__(self, config: GatewayConfig, registry: CollectorRegistry | None = None, *,
                 router_service: Any | None = None, features: Any | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.errors = self._error_map()
        self.unexpected = UnexpectedErrors(self.registry)
        self.pool: ReplicaPool | None = None   # grpc.aio channels bind to the running loop
        self.redis: aioredis.Redis | None = None
        self.routes = router_service
        self.features = features
        self._own_features = features is None
        self.specs: dict[str, ModelSpec] = {}       # Triton model name -> spec
        self.batchers: dict[Any, MicroBatcher] = {}  # router Target -> batcher
        # Targets no experiment routes to any more: first a grace period (still in `batchers`,
        # for requests assigned just before the change), then drained here, then dropped.
        self._retiring: dict[Any, asyncio.Task] = {}
        self.draining: dict[Any, MicroBatcher] = {}
        self.shapes: dict[str, ModelShape] = {}      # public model -> widths
        self.v1 = V1Codec(self.shapes)
        self.v2: dict[str, V2Codec] = {}
        self.pipeline: Pipeline | None = None
        self.predlog: Any | None = None   # gateway/predlog.PredictionLog (needs the gateway's own Redis)
        self._sampler: asyncio.Future | None = None  # --workers N: gauges sampled into shared files
        self.ready = False

    def __repr__(self) -> str:
        return (f"<Components pool={self.pool!r} targets={len(self.batchers)} "
                f"models={sorted(self.shapes)} ready={self.ready}>")

    @staticmethod
    def _error_map() -> E.ErrorMap:
        import router.errors as R
        m = E.ErrorMap()
        m.register(R.UnknownModel, lambda exc: E.UnknownModel(str(exc)))
        m.register(R.UnknownVariant, lambda exc: E.InvalidField("x-variant-override", str(exc)))
        try:
            import features.errors as F
        except ImportError:  # the features extra is not installed
            return m
        m.register(F.FeatureUnavailable, lambda exc: E.FeaturesUnavailable(str(exc)))
        m.register(F.BadEntity, lambda exc: E.InvalidField(f"entity.{exc.field}", exc.reason))
        return m

    async def start(self, triton_wait_s: float = 60.0) -> None:
        cfg = self.config
        self.pool = ReplicaPool(cfg.triton_urls, self.registry)
        if self.routes is None:
            from router import RouterService, default_experiments, load_experiments
            initial = load_experiments(cfg.experiments_file) if cfg.experiments_file else default_experiments()
            # redis-py's default retry hid an outage for 7-10 s per read here: keep it short.
            self.redis = aioredis.from_url(cfg.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                           retry=Retry(ExponentialBackoff(cap=0.5), 2))
            self.routes = RouterService(self.redis, initial, cfg.admin_tokens, self.registry,
                                        cfg.redis_key_prefix)
        self.routes.target_check = self.check_targets
        await self.routes.start()
        if self.features is None and cfg.features != "off":
            self.features = await self._open_features()
        await self._wait_for_triton(triton_wait_s)
        self.pool.start()
        await self.sync_targets(self.routes.router)
        self.routes.on_change(self.sync_targets)
        self.pipeline = Pipeline(self.routes, self.features, self.batchers, self.metrics, self.errors,
                                 self.unexpected)
        if self.redis is not None and cfg.prediction_log_maxlen > 0:
            from gateway.predlog import PredictionLog
            self.predlog = self.pipeline.predlog = PredictionLog(
                self.redis, cfg.redis_key_prefix, self.registry, maxlen=cfg.prediction_log_maxlen,
                buffer=cfg.prediction_log_buffer)
            self.predlog.start()
        if multiprocess():
            self._sampler = asyncio.ensure_future(self.metrics.sample_forever())
        self.ready = True
        log.info("gateway ready: %r", self)

    async def _open_features(self) -> Any | None:
        """The online feature reader for the configured Feast repo.

        `redis` / `feast` insist on it; `auto` serves without features (callers then send the
        full input vector) when no repo has been applied, and says so.
        """
        from features import FailurePolicy, open_reader
        from features.repo.workspace import DEFAULT_WORKDIR
        cfg = self.config
        repo = cfg.feature_repo or str(DEFAULT_WORKDIR)
        if cfg.features == "auto" and not (Path(repo) / "feature_store.yaml").exists():
            log.warning("features: no Feast repo applied at %s; serving without online features", repo)
            return None
        policy = FailurePolicy(on_unavailable=cfg.feature_on_unavailable,  # type: ignore[arg-type]
                               timeout_s=cfg.feature_timeout_ms / 1e3, trip_after=cfg.feature_trip_after)
        reader = await open_reader(repo, redis_url=cfg.feature_redis_url, policy=policy,
                                   registry=self.registry)
        log.info("features: %r", reader)
        return reader

    async def _wait_for_triton(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await self.pool.any_ready():
            if time.monotonic() > deadline:
                raise E.ModelUnavailable(f"no Triton of {self.config.triton_urls} ready after {timeout}s")
            await asyncio.sleep(0.2)

    async def sync_targets(self, router: Any) -> None:
        """Create batchers and model shapes for targets the router can now send to.

        Called at start-up and after every config swap; existing batchers are kept, so a
        weight change costs nothing on the request path. A target Triton cannot serve is
        logged and skipped (its requests answer 503), never allowed to block other changes.
        Batchers of targets no experiment routes to any more are retired (`_retire`).
        """
        live = router.targets()
        for target in live:
            grace = self._retiring.pop(target, None)
            if grace is not None:   # routed again before its batcher was dropped: keep it
                grace.cancel()
            if target in self.batchers:
                continue
            try:
                spec = self.specs.get(target.model) or await self.pool.model_spec(target.model)
            except E.GatewayError as exc:
                log.error("target %s:%s is not servable: %s", target.model, target.version, exc.message)
                continue
            self.specs[target.model] = spec
            self.batchers[target] = self._make_batcher(spec, target)
        for target in list(self.batchers):
            if target not in live and target not in self._retiring:
                task = asyncio.ensure_future(self._retire(target))
                self._retiring[target] = task
        fw = self.features.width if self.features is not None else 0
        entity_keys = tuple(self.features.entity_keys) if self.features is not None else ()
        for exp in router.experiments().values():
            specs = {self.specs[t.model] for t in exp.targets() if t.model in self.specs}
            shapes = {_tensors(s) for s in specs}
            if len(shapes) != 1:
                log.error("experiment %s: targets missing or disagreeing on tensors: %s",
                          exp.config.name, sorted(shapes))
                continue
            spec = min(specs, key=lambda s: s.max_batch_size)
            model = exp.config.model
            self.shapes[model] = ModelShape(spec.input_width, spec.input_width - fw, spec.output_name)
            self.v2[model] = V2Codec(spec, spec.input_width - fw, entity_keys, self._max_rows(spec))

    async def _retire(self, target: Any) -> None:
        """Grace period, then out of `batchers`, answer what it holds, drop it.

        A request's variant is assigned before its features are fetched, so one assigned by
        the previous snapshot may still look the batcher up for up to the feature timeout;
        the grace period (`retire_grace_s`) covers that. `GET /admin/targets` shows the
        target until its last call is answered: the registry unloads the version only then.
        """
        await asyncio.sleep(self.config.retire_grace_s)
        if self._retiring.get(target) is not asyncio.current_task():
            return
        del self._retiring[target]
        batcher = self.batchers.pop(target, None)
        if batcher is None:
            return
        self.draining[target] = batcher
        try:
            await batcher.drain(self.config.shutdown_timeout_s)
        finally:
            if self.draining.get(target) is batcher:
                del self.draining[target]
        log.info("target %s:%s retired: no experiment routes to it", target.model, target.version)

    def target_states(self) -> list[dict[str, Any]]:
        """Every batcher the gateway holds: serving, retiring (grace) or draining."""
        rows = []
        for state, held in (("serving", self.batchers), ("draining", self.draining)):
            for t, b in held.items():
                rows.append({"model": t.model, "version": t.version,
                             "state": "retiring" if t in self._retiring else state,
                             "queued_rows": b.queued_rows, "in_flight": b.in_flight})
        return sorted(rows, key=lambda r: (r["model"], r["version"], r["state"]))

    async def check_targets(self, cfg: Any) -> None:
        """Refuse (before it is stored) an experiment whose targets Triton cannot serve, or
        whose targets disagree on their tensors: the admin API answers 400 `unknown_target`."""
        from router.errors import ConfigError
        targets = {v.target for v in cfg.variants} | ({cfg.shadow.target} if cfg.shadow else set())
        seen = set()
        for t in sorted(targets, key=lambda t: (t.model, t.version)):
            try:
                spec = self.specs.get(t.model) or await self.pool.model_spec(t.model)
            except E.GatewayError as exc:
                raise ConfigError(f"target {t.model}:{t.version or 'latest'}: {exc.message}",
                                  "unknown_target") from exc
            if not await self.pool.model_ready(t.model, t.version):
                raise ConfigError(f"target {t.model}:{t.version or 'latest'}: Triton has no ready "
                                  f"version {t.version!r} (it serves {list(spec.versions)})", "unknown_target")
            seen.add(_tensors(spec))
        if len(seen) > 1:
            raise ConfigError(f"targets disagree on their tensors: {sorted(seen)}", "target_mismatch")

    def _max_rows(self, spec: ModelSpec) -> int:
        return min(self.config.max_batch_rows, spec.max_batch_size or 1)

    def _make_batcher(self, spec: ModelSpec, target: Any) -> MicroBatcher:
        cfg = self.config
        label = f"{target.model}:{target.version or 'latest'}"
        rows_h = self.metrics.batch_rows.labels(label)
        reqs_h = self.metrics.batch_requests.labels(label)

        def on_batch(info: BatchInfo) -> None:
            rows_h.observe(info.rows)
            reqs_h.observe(info.requests)

        batcher = MicroBatcher(
            label, self.pool.make_infer(spec, target.version),
            max_rows=self._max_rows(spec), max_queue_rows=cfg.max_queue_rows,
            max_in_flight=cfg.max_in_flight_batches * len(cfg.triton_urls) if cfg.batching
            else cfg.max_in_flight_requests,
            max_delay_s=cfg.batch_delay_us / 1e6, max_requests=(1 << 30) if cfg.batching else 1,
            on_batch=on_batch)
        # Read at scrape time (sampled each second with --workers): nothing on the request path.
        self.metrics.track(self.metrics.queued_rows.labels(label), lambda: batcher.queued_rows)
        return batcher

    async def stop(self) -> None:
        """Answer what is queued or in flight, then close every connection."""
        self.ready = False
        if self._sampler is not None:
            self._sampler.cancel()
        timeout = self.config.shutdown_timeout_s
        for task in self._retiring.values():
            task.cancel()
        self._retiring.clear()
        await asyncio.gather(*(b.drain(timeout) for b in [*self.batchers.values(), *self.draining.values()]))
        if self.pipeline is not None:
            await self.pipeline.drain_shadows(1.0)
        if self.predlog is not None:
            await self.predlog.stop()
        if self.routes is not None:
            await self.routes.stop()
        if self.features is not None and self._own_features:
            await self.features.close()
        if self.pool is not None:
            await self.pool.close()
        if self.redis is not None:
            await self.redis.aclose()


def _tensors(spec: ModelSpec) -> tuple:
    return (spec.input_name, spec.input_dtype, spec.input_width, spec.output_name, spec.output_width)
