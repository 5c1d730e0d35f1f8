"""Start-up and shutdown: build every long-lived object the request path looks up.

Decided here, once: the Triton channel, each target's model contract (ModelSpec) and
micro-batcher, the router service, the online feature reader, each public model's contract
and feature join (PublicModel, refused here with the reason when it cannot be served), the
default routes of models no experiment names, the error map.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
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
from gateway.request import FeatureJoin, PublicModel
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
        self.models: dict[str, PublicModel] = {}     # public model -> contract + join
        self.joins: dict[str, FeatureJoin] = {}      # public model -> feature join
        # Triton models no experiment names: one route each, to the latest version.
        self.defaults: dict[str, Any] = {}
        self.v1 = V1Codec(self.models)
        self.v2: dict[str, V2Codec] = {}
        self.pipeline: Pipeline | None = None
        self.predlog: Any | None = None   # gateway/predlog.PredictionLog (needs the gateway's own Redis)
        self._sampler: asyncio.Future | None = None  # --workers N: gauges sampled into shared files
        self.ready = False

    def __repr__(self) -> str:
        return (f"<Components pool={self.pool!r} targets={len(self.batchers)} "
                f"models={sorted(self.models)} ready={self.ready}>")

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
        self.pool = ReplicaPool(cfg.triton_urls, self.registry, http_urls=cfg.triton_http_urls)
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
                                 self.unexpected, joins=self.joins, defaults=self.defaults)
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
        defaults = await self._default_routes(router)
        live = router.targets() | {a.target for a in defaults.values()}
        fresh: dict[str, ModelSpec] = {}
        for target in live:
            grace = self._retiring.pop(target, None)
            if grace is not None:   # routed again before its batcher was dropped: keep it
                grace.cancel()
            if target in self.batchers:
                continue
            try:
                # Read again for every new target: a (re)loaded version may change the contract.
                spec = fresh.get(target.model) or await self._read_spec(target.model)
            except E.GatewayError as exc:
                log.error("target %s:%s is not servable: %s", target.model, target.version, exc.message)
                continue
            fresh[target.model] = spec
            self.specs[target.model] = spec
            self.batchers[target] = self._make_batcher(spec, target)
        for target in list(self.batchers):
            if target not in live and target not in self._retiring:
                task = asyncio.ensure_future(self._retire(target))
                self._retiring[target] = task
        entity_keys = tuple(self.features.entity_keys) if self.features is not None else ()
        public: list[tuple[str, str, set]] = [(e.config.model, e.config.name, e.targets())
                                              for e in router.experiments().values()]
        public += [(m, "default", {a.target}) for m, a in defaults.items()]
        for model, name, targets in public:
            specs = {self.specs[t.model] for t in targets if t.model in self.specs}
            shapes = {s.tensors() for s in specs}
            if len(shapes) != 1:
                log.error("experiment %s: targets missing or disagreeing on tensors: %s", name, sorted(shapes))
                continue
            spec = min(specs, key=lambda s: s.max_batch_size)
            pm = PublicModel(model, spec, self._join_for(spec), entity_keys, self._max_rows(spec))
            self.models[model] = pm
            self.v2[model] = V2Codec(pm)
            if pm.join is not None:
                self.joins[model] = pm.join
            else:
                self.joins.pop(model, None)
        # Swapped in place: the pipeline holds this dict.
        for model in [m for m in self.defaults if m not in defaults]:
            del self.defaults[model]
        self.defaults.update(defaults)

    async def _default_routes(self, router: Any) -> dict[str, Any]:
        """Every model Triton has loaded that no experiment names (as public model or as a
        target) gets one route: its latest version, experiment and variant `default`."""
        from router.types import Assignment, Target
        try:
            index = await self.pool.repository_index()
        except E.GatewayError as exc:
            log.warning("repository index: %s; no default routes", exc.message)
            return dict(self.defaults)
        named = router.models() | {t.model for t in router.targets()}
        out: dict[str, Any] = {}
        for m in index:
            if m["state"] == "READY" and m["name"] not in named and m["name"] not in out:
                prev = self.defaults.get(m["name"])
                out[m["name"]] = prev or Assignment("default", "default", Target(m["name"], ""))
        return out

    async def _read_spec(self, model: str) -> ModelSpec:
        """A model's contract, refused (ModelUnavailable, with the reason) when the gateway
        cannot serve it, the declared feature join included."""
        spec = await self.pool.model_spec(model)
        self._join_for(spec)
        return spec

    def _join_for(self, spec: ModelSpec) -> FeatureJoin | None:
        """Where the online features go for this model: declared in `feature_joins`
        (`INPUT:concat`, `INPUT:own`, `none`); undeclared, today's demo shape (one FP32 input
        of fixed width) takes them in front of the caller's columns. Off without features."""
        fw = int(self.features.width) if self.features is not None else None
        declared = self.config.feature_joins.get(spec.name)
        if declared is None:
            if fw is None or not spec.simple or spec.inputs[0].dims[0] <= fw:
                return None
            declared = f"{spec.inputs[0].name}:concat"
        if declared == "none":
            return None
        name, _, mode = declared.partition(":")
        t = spec.input(name)
        why = None
        # A declared join is checked even with features off: the config is wrong either way.
        if t is None:
            why = f"it has no input {name!r} (inputs: {[x.name for x in spec.inputs]})"
        elif t.datatype not in ("FP32", "FP16"):
            why = f"input {name} is {t.datatype}; features join into FP32 or FP16 inputs only"
        elif not spec.batchable or len(t.dims) != 1 or t.dims[0] < 0:
            why = f"input {name} must be [-1, width] of a batchable model, not {t.shape(spec.batchable)}"
        elif mode not in ("own", "concat"):
            why = f"join mode {mode!r} is not concat or own"
        elif fw is not None and mode == "own" and t.dims[0] != fw:
            why = f"input {name} is {t.dims[0]} wide; the features are {fw}"
        elif fw is not None and mode == "concat" and not t.dims[0] > fw:
            why = f"input {name} is {t.dims[0]} wide; concat needs more than the {fw} feature columns"
        if why is not None:
            raise E.ModelUnavailable(f"model {spec.name!r}: feature join {declared!r} refused: {why}")
        if fw is None:
            return None
        return FeatureJoin(name, mode, fw, np.dtype(np.float16 if t.datatype == "FP16" else np.float32))

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
                spec = self.specs.get(t.model) or await self._read_spec(t.model)
            except E.GatewayError as exc:
                raise ConfigError(f"target {t.model}:{t.version or 'latest'}: {exc.message}",
                                  "unknown_target") from exc
            if not await self.pool.model_ready(t.model, t.version):
                raise ConfigError(f"target {t.model}:{t.version or 'latest'}: Triton has no ready "
                                  f"version {t.version!r} (it serves {list(spec.versions)})", "unknown_target")
            seen.add(spec.tensors())
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
            on_batch=on_batch, batchable=spec.batchable,
            keyed=any(t.variable for t in spec.inputs),
            join_window_s=spec.queue_delay_s * cfg.batch_join_window, max_joined=cfg.max_joined_batches if cfg.batching else 0)
        # Read at scrape time (sampled each second with --workers): nothing on the request path.
        self.metrics.track(self.metrics.queued_rows.labels(label), lambda: batcher.queued_rows)
        if cfg.batching and spec.batchable and spec.queue_delay_s > 0 and not cfg.max_joined_batches:
            log.info("%s: Triton holds each of the gateway's calls up to %d µs for company "
                     "(max_queue_delay_microseconds); the gateway sends batches, so 0 answers sooner "
                     "(README: Triton's queue delay)", label, round(spec.queue_delay_s * 1e6))
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

