"""Gateway configuration: one frozen object, resolved once at start-up.

Sources, later wins: the defaults below, `INFERGATE_*` environment variables, CLI flags.
Nothing here is read at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, MutableMapping

# Multiprocess metrics (`--workers N`): the supervisor sets METRICS_DIR_ENV for its workers and
# that decides; prometheus-client reads its own variables (listed here to set or clear them).
METRICS_DIR_ENV = "INFERGATE_METRICS_DIR"
PROMETHEUS_DIR_ENVS = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def drop_inherited_metrics_dir(environ: MutableMapping[str, str] = os.environ) -> None:
    """Outside a ``--workers`` worker, forget prometheus-client's multiprocess directory.

    Call it before prometheus-client is imported: one inherited from the parent (Feast sets it
    in ``os.environ`` when imported) would put every metric of this process in mmap'd files,
    slower on the request path and summed by nobody.
    """
    if not environ.get(METRICS_DIR_ENV):
        for var in PROMETHEUS_DIR_ENVS:
            environ.pop(var, None)


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    triton_urls: tuple[str, ...] = ("127.0.0.1:8001",)
    # The same replicas' HTTP addresses (host:port, same order): when given, inference calls
    # go over Triton's HTTP port (gateway/triton_http.py: ~90 µs less gateway CPU and ~0.24 ms
    # less latency per call than grpc.aio here); metadata and health stay on gRPC.
    triton_http_urls: tuple[str, ...] = ()
    # The HTTP front's deadlines (gateway/http1.py): a request must arrive whole within
    # http_read_timeout_s of its first byte; an idle keep-alive connection is closed after
    # http_keepalive_s. Checked once a second.
    http_read_timeout_s: float = 30.0
    http_keepalive_s: float = 60.0
    # The collector's young-generation threshold once the gateway has started (Python's is
    # 700; start-up objects are frozen out of collection either way, `app.tune_gc`). With 700,
    # ~190 collections a second took ~2.4 µs of the Python thread per request at c=64; with
    # 20,000, none in 10 s (BENCHMARKS.md). 0: Python's.
    gc_threshold: int = 20_000
    # Request limits
    max_body_bytes: int = 1 << 20
    default_timeout_ms: int = 1000
    max_timeout_ms: int = 10_000
    max_in_flight_requests: int = 4096
    # Micro-batching, per Triton target (model + version)
    batching: bool = True
    max_batch_rows: int = 128
    max_queue_rows: int = 2048
    # Triton calls in flight per target and per replica. 1 measured best here: the python
    # backend runs one batch at a time, so a second call only costs gRPC work and halves
    # the batch the gateway could have formed meanwhile (0.65x vs 0.42x Triton-direct at
    # c=64 for 1 vs 8). Raise it for backends that overlap calls (GPU, several instances).
    max_in_flight_batches: int = 1
    # Beyond those, calls that may join one still inside the model's dynamic-batching queue
    # delay (sent within `batch_join_window` of it, so that they reach Triton's queue before
    # the first leaves it): Triton runs them in one execution instead of making each small
    # batch wait the whole delay in turn. Off by default: with the demo model's old 500 µs
    # delay, 1 or 3 joins within 0.5 or 0.8 of it rarely found a request to send at c=16
    # (Triton's rows per execution 4.26 vs 4.05 per gateway call) and gained nothing; a lower
    # delay did (runtime/modelgen.py). For models with a long delay (GPU, several ms).
    max_joined_batches: int = 0
    batch_join_window: float = 0.5   # the join window, as a fraction of the model's queue delay
    batch_delay_us: int = 0
    # Online features
    features: str = "auto"            # auto (use the repo if applied) | redis | feast | off
    feature_repo: str | None = None   # a Feast repo dir (feature_store.yaml); None = the demo repo
    feature_redis_url: str | None = None  # overrides the repo's Redis connection string
    # One feature read (a whole coalesced batch). Under CPU saturation on 2 shared cores a
    # Redis answer waited > 100 ms here at c=256 (the server was descheduled), and a timeout
    # aborts every batch pipelined on the connection: keep it well above the p99.
    feature_timeout_ms: int = 250
    feature_trip_after: int = 5           # consecutive failed reads before the circuit opens
    feature_on_unavailable: str = "raise"  # raise (-> 503) | default (defaults, flagged)
    # Where each Triton model's online features go: model -> "INPUT:concat" (in front of the
    # caller's columns of a [-1, width] FP32/FP16 input), "INPUT:own" (the whole input) or
    # "none". Undeclared: a one-FP32-input model takes them by concat (the demo's `clf`).
    # Env/CLI: `clf=INPUT:concat,ranker=FEATS:own`.
    feature_joins: Mapping[str, str] = field(default_factory=dict)
    redis_url: str = "redis://127.0.0.1:6379/0"   # experiments store and pub/sub
    # Experiments
    experiments_file: str | None = None   # None = the embedded default experiment
    redis_key_prefix: str = "infergate:"
    admin_tokens: Mapping[str, str] = field(default_factory=dict)   # token id -> token
    admin_port: int | None = None   # serve /admin/* (and only it) on this port instead
    grpc_port: int | None = None    # the KServe v2 gRPC front (gateway/grpc_front.py); None = off
    shutdown_timeout_s: float = 10.0
    # Model lifecycle (registry/): where the Triton replicas' model repository is (reported by
    # GET /admin/triton, never read here), and how long a target no experiment routes to keeps
    # its batcher for requests assigned just before the change, before it drains and is dropped.
    model_repository: str | None = None
    retire_grace_s: float = 2.0
    # Route bundles mounted at start-up, `module:factory` each (gateway/extensions.py)
    extensions: tuple[str, ...] = ()
    # Admission (gateway/admission.py): `adaptive` keeps the in-flight limit where the admitted
    # round trip stays within `admission_tolerance` x its light-load floor, between
    # `admission_min_limit` and `max_in_flight_requests` (the hard ceiling); `static` is the
    # fixed cap alone. Beyond the limit: 429 + Retry-After before the body is read.
    admission: str = "adaptive"
    admission_initial_limit: int = 256
    admission_min_limit: int = 32
    admission_tolerance: float = 10.0
    admission_window_ms: int = 100
    # At the limit, plain 429s are answered by the HTTP front as the request is parsed,
    # before a task is made for it (gateway/http1.py); false: every refusal goes to the handler
    admission_front_shed: bool = True
    # A connection that resends sooner than Retry-After gets its next 429 this much later (0: never)
    admission_penalty_ms: int = 500
    # `sheddable` requests (x-priority, shadow calls, models below) get this share of the limit
    admission_sheddable_fraction: float = 0.5
    default_priority: str = "critical"
    model_priorities: Mapping[str, str] = field(default_factory=dict)   # model -> critical|sheddable
    # Prediction log (gateway/predlog.py): each answered prediction to the Redis stream
    # `<redis_key_prefix>predictions`, outcomes (POST /v1/outcomes) to `<prefix>outcomes`,
    # both capped at about `prediction_log_maxlen` entries; 0 turns both off.
    prediction_log_maxlen: int = 100_000
    prediction_log_buffer: int = 10_000   # records waiting in memory; more are dropped and counted

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "GatewayConfig":
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"INFERGATE_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        cfg = replace(cls(), **values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.features not in ("auto", "redis", "feast", "off"):
            raise ValueError(f"features must be auto, redis, feast or off, not {self.features!r}")
        if self.feature_on_unavailable not in ("raise", "default"):
            raise ValueError("feature_on_unavailable must be raise or default")
        for name in ("max_body_bytes", "default_timeout_ms", "feature_timeout_ms", "feature_trip_after", "max_timeout_ms", "max_batch_rows",
                     "max_queue_rows", "max_in_flight_batches", "max_in_flight_requests", "prediction_log_buffer", "http_read_timeout_s",
                     "http_keepalive_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.gc_threshold < 0:
            raise ValueError("gc_threshold must be 0 (Python's own) or more")
        if self.max_joined_batches < 0:
            raise ValueError("max_joined_batches must be 0 or more")
        if not 0 <= self.batch_join_window <= 1:
            raise ValueError("batch_join_window must be in [0, 1] (a fraction of the model's queue delay)")
        if not self.triton_urls:
            raise ValueError("at least one Triton URL is needed")
        if self.triton_http_urls and len(self.triton_http_urls) != len(self.triton_urls):
            raise ValueError("triton_http_urls: one HTTP address per Triton gRPC URL, in the same order")
        if self.admission not in ("adaptive", "static"):
            raise ValueError(f"admission must be adaptive or static, not {self.admission!r}")
        if self.admission_initial_limit <= 0 or self.admission_min_limit <= 0 or self.admission_window_ms <= 0:
            raise ValueError("admission limits and window must be positive")
        if self.admission_tolerance <= 1.0:
            raise ValueError("admission_tolerance must be above 1 (a multiple of the floor)")
        if not 0 < self.admission_sheddable_fraction <= 1:
            raise ValueError("admission_sheddable_fraction must be in (0, 1]")
        for name, p in {"default_priority": self.default_priority, **self.model_priorities}.items():
            if p not in ("critical", "sheddable"):
                raise ValueError(f"priority of {name} must be critical or sheddable, not {p!r}")

    def __repr__(self) -> str:
        # Never print tokens.
        return (f"<GatewayConfig {self.host}:{self.port} triton={','.join(self.triton_urls)} "
                f"features={self.features} batching={self.batching} tokens={len(self.admin_tokens)}>")


def parse_tokens(raw: str) -> dict[str, str]:
    """`id1:token1,id2:token2` -> {id: token}; a token id names a token in logs and history."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in raw.split(","))):
        tid, sep, token = item.partition(":")
        if not sep or not tid or not token:
            raise ValueError("admin tokens are `id:token` pairs separated by commas")
        out[tid] = token
    return out


def parse_priorities(raw: str) -> dict[str, str]:
    """`model1:sheddable,model2:critical` -> {model: priority} (checked by `validate`)."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in raw.split(","))):
        model, sep, prio = item.partition(":")
        if not sep or not model or not prio:
            raise ValueError("model priorities are `model:priority` pairs separated by commas")
        out[model.strip()] = prio.strip()
    return out


def parse_joins(raw: str) -> dict[str, str]:
    """`model=INPUT:concat,other=FEATS:own,third=none` -> {model: join}."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in raw.split(","))):
        model, sep, join = item.partition("=")
        if not sep or not model or not join or (join != "none" and not join.endswith((":concat", ":own"))):
            raise ValueError(f"feature joins are `model=INPUT:concat|INPUT:own|none`, not {item!r}")
        out[model.strip()] = join.strip()
    return out


def _parse(name: str, raw: str) -> object:
    default = getattr(GatewayConfig(), name)
    if name == "admin_tokens":
        return parse_tokens(raw)
    if name == "model_priorities":
        return parse_priorities(raw)
    if name == "feature_joins":
        return parse_joins(raw)
    if name in ("triton_urls", "triton_http_urls", "extensions"):
        return tuple(u.strip() for u in raw.split(",") if u.strip())
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name in ("admin_port", "grpc_port") or isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw or None
