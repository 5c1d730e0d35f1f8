"""The benchmark's targets: what each one starts, which body wrk sends, and the features set-up.

`gateway_full` is the whole path (online features from Redis + routing + batching). Its
ablations each drop one thing from it: `gateway_nobatch` keeps the features but turns
micro-batching off; `gateway_nofeatures` keeps batching but turns features off. When the
Redis feature path cannot be prepared, the full path (and the no-batch ablation) fall back to
features off and say so in the results.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from runtime.stack import GatewayProcess
from runtime.triton import ROOT, TritonStartError

TRITON_PATH = "/v2/models/clf/versions/1/infer"
ALL_TARGETS = ("triton_direct", "gateway_full", "gateway_nobatch", "gateway_nofeatures")
EXTRA_TARGETS = ("gateway_workers2", "gateway_grpc", "triton_direct_ab")  # only when named in --targets
# Triton loaded without a gateway, the yardsticks: v1 alone, or split 50/50 between v1 and v2
# by the client itself.
DIRECT_TARGETS = ("triton_direct", "triton_direct_ab")
FEATURE_PROJECT = "infergate_bench"


class TargetStartError(RuntimeError):
    """A gateway configuration did not start or did not answer its probe request."""


@dataclass(frozen=True)
class TargetSpec:
    name: str
    mode: str                          # wrk script mode: triton | triton_ab | v1 | entity | v2
    gateway_args: tuple[str, ...] = ()  # empty for triton_direct
    features: str = "off"
    note: str = ""
    peer: str | None = None            # a Python serving peer (bench/peers), not ours
    # Inference calls over Triton's HTTP port (--triton-http-url), as `make serve` runs it;
    # False: over gRPC, the other transport (gateway_grpc).
    triton_http: bool = True

    @property
    def is_gateway(self) -> bool:
        return self.name not in DIRECT_TARGETS and self.peer is None

    @property
    def batches(self) -> bool:
        """The gateway batches this target's calls (so Triton's queue delay only adds latency)."""
        return self.is_gateway and "--no-batching" not in self.gateway_args


@dataclass(frozen=True)
class FeatureSetup:
    """How the full path gets its features, decided once per harness run."""

    mode: str                 # "redis" or "off"
    repo: Path | None = None
    note: str = ""

    def gateway_args(self) -> tuple[str, ...]:
        if self.mode == "redis" and self.repo is not None:
            return ("--features", "redis", "--feature-repo", str(self.repo))
        return ("--features", "off")


def target_specs(names: list[str], features: FeatureSetup, extra_args: tuple[str, ...] = ()) -> list[TargetSpec]:
    on = features.mode == "redis"
    fallback = "" if on else f"features off (fallback: {features.note or 'not requested'})"
    full = TargetSpec("gateway_full", "entity" if on else "v1", features.gateway_args() + extra_args,
                      features.mode, fallback)
    table = {
        "triton_direct": TargetSpec("triton_direct", "triton"),
        # What a client splitting 50/50 between the experiment's versions itself would get
        # from Triton: two model versions, each its own queue and python stub, half the load each.
        "triton_direct_ab": TargetSpec("triton_direct_ab", "triton_ab",
                                       note="Triton itself, requests alternating between clf v1 and v2"),
        "gateway_full": full,
        "gateway_nobatch": TargetSpec("gateway_nobatch", full.mode,
                                      (*full.gateway_args, "--no-batching"), full.features, fallback),
        "gateway_nofeatures": TargetSpec("gateway_nofeatures", "v1", ("--features", "off", *extra_args)),
        "gateway_workers2": TargetSpec("gateway_workers2", full.mode, (*full.gateway_args, "--workers", "2"),
                                       full.features, fallback),
        "gateway_grpc": TargetSpec("gateway_grpc", full.mode, full.gateway_args, full.features,
                                   "the full path with inference calls over Triton's gRPC port", triton_http=False),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; known: {list(table)}")
    return [table[n] for n in names]


def prepare_features(workdir: Path, redis_url: str, log_path: Path, timeout_s: float = 180.0,
                     entities: str = "datagen") -> FeatureSetup:
    """Build a private Feast repo (own project name) and materialize it into Redis.

    ``entities="synthetic"``: the users are sampled from the shipped synthetic-data generator
    (``python -m synthetic entities``) into a project of their own, so no real user is needed.

    Any failure returns a features-off set-up with the reason, never raises: the rest of
    the matrix is still worth running.
    """
    if not _redis_answers(redis_url):
        return FeatureSetup("off", note=f"Redis at {redis_url} does not answer")
    workdir = workdir.resolve()
    steps = (["apply", "--workdir", str(workdir), "--online", "redis", "--project", FEATURE_PROJECT,
              "--redis-url", redis_url],
             ["materialize", "--workdir", str(workdir), "--redis-url", redis_url])
    if entities == "synthetic":
        steps = (["-m", "synthetic", "entities", "--workdir", str(workdir), "--project", FEATURE_PROJECT + "_synthetic",
                  "--rows", "10000", "--redis-url", redis_url],)
    else:
        steps = tuple(["-m", "features", *step] for step in steps)
    with open(log_path, "ab") as log:
        for step in steps:
            try:
                proc = subprocess.run([sys.executable, *step], cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout_s)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return FeatureSetup("off", note=f"`python {' '.join(step[:3])}` failed: {exc}")
            if proc.returncode != 0:
                return FeatureSetup("off", note=f"`python {' '.join(step[:3])}` exited with "
                                                f"{proc.returncode} (log: {log_path})")
    return FeatureSetup("redis", workdir)


def _redis_answers(url: str) -> bool:
    try:
        import redis
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means "not usable here"
        return False


def start_gateway(spec: TargetSpec, triton_grpc: str, log_path: Path, admin_token: str,
                  triton_http: str | None = None, extra_env: dict[str, str] | None = None) -> GatewayProcess:
    # The matrix measures the path's capacity at each concurrency: the fixed cap alone, as
    # before issue 18 (adaptive admission would shed past the knee; `make overload` measures it).
    env = {"INFERGATE_REDIS_KEY_PREFIX": bench_prefix(spec.name),
           "INFERGATE_ADMIN_TOKENS": f"bench:{admin_token}", "INFERGATE_ADMISSION": "static", **(extra_env or {})}
    try:
        args = spec.gateway_args
        if triton_http and spec.triton_http:
            args = (*args, "--triton-http-url", triton_http)
        return GatewayProcess(triton_grpc, args=args, env=env, log_path=log_path).start()
    except TritonStartError as exc:
        raise TargetStartError(f"{spec.name}: {exc}") from None


BENCH_PREFIX = "bench-"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def bench_prefix(kind: str) -> str:
    """A Redis key prefix of a benchmark gateway's own (`drop_keys` removes its keys after)."""
    return f"{BENCH_PREFIX}{kind}-{uuid.uuid4().hex[:8]}:"


def _redis_url_of(gw: GatewayProcess) -> str:
    """The Redis the gateway itself was told to use (its flag, else its environment)."""
    args = list(gw.args)
    if "--redis-url" in args[:-1]:
        return args[args.index("--redis-url") + 1]
    return gw.env.get("INFERGATE_REDIS_URL", DEFAULT_REDIS_URL)


def drop_keys(gw: GatewayProcess) -> int:
    """Delete what a benchmark gateway wrote to Redis under its own prefix (the router's
    distinct-unit sets, the prediction stream): load with a new unit id per request leaves
    ~100 bytes per request there for the sets' 7-day TTL otherwise (580 MB after a few
    `make overload`s). Only a `bench-` prefix is ever dropped. Returns the keys removed."""
    import redis

    prefix = gw.env.get("INFERGATE_REDIS_KEY_PREFIX", "")
    if not prefix.startswith(BENCH_PREFIX):
        return 0
    r = redis.Redis.from_url(_redis_url_of(gw), socket_timeout=10)
    removed, batch = 0, []
    try:
        for key in r.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += r.unlink(*batch)
                batch = []
        if batch:
            removed += r.unlink(*batch)
    except redis.RedisError as exc:
        print(f"could not drop the benchmark's Redis keys {prefix}*: {exc}", file=sys.stderr)
    finally:
        r.close()
    return removed


def probe(url: str, mode: str) -> str | None:
    """One request of the kind wrk will send; None when it answers 2xx, else the reason."""
    if mode == "entity":
        body = {"model": "clf", "unit_id": "probe", "entity": {"user_id": 42}, "inputs": [0.5, 1.0, 1.5, 2.0]}
    else:
        body = {"model": "clf", "unit_id": "probe", "inputs": [0.1] * 20}
    req = urllib.request.Request(f"{url}/v1/infer", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:300]!r}"
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)


def experiment_weights(url: str, admin_token: str, name: str = "clf-demo") -> dict[str, float]:
    """The live experiment's configured weights, read from the gateway's admin API."""
    req = urllib.request.Request(f"{url}/admin/experiments/{name}",
                                 headers={"authorization": f"Bearer {admin_token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc = json.loads(resp.read())
    return {v["name"]: float(v["weight"]) for v in doc["config"]["variants"]}
