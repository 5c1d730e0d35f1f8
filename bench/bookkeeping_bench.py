"""Per-request bookkeeping of the full path, in-process, without HTTP, gRPC or Redis.

    .venv/bin/python bench/bookkeeping_bench.py [ROOT]        # ROOT: a checkout to import (A/B)

Times, in process CPU per request (best of 5 blocks of 20,000), what one `/v1/infer` request
with an entity costs in the parts issue 17's lever 3 is about: admission's count, the v1 parse,
the feature key, the feature join, the per-variant metrics (four histograms and a counter, and
one scrape per block), the prediction log (a record, and one flush per 500) and the v1 render.
Then each part alone. Run it against two checkouts alternately (e.g. main and a branch) on the
same machine: the absolute figures move with the VM and its load, the difference does not.
"""

from __future__ import annotations

import asyncio
import sys
import time
import timeit
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]).resolve()
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

import gateway  # noqa: E402
from features.layout import RedisLayout, value_packer  # noqa: E402
from features.row import FeatureRow  # noqa: E402
from features.spec import JoinKey  # noqa: E402
from gateway import admission  # noqa: E402
from gateway.backend import ModelSpec  # noqa: E402
from gateway.codec_v1 import V1Codec  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.predlog import PredictionLog  # noqa: E402
from gateway.request import FeatureJoin, InferResult, PublicModel  # noqa: E402
from gateway.tensors import TensorSpec  # noqa: E402

assert Path(gateway.__file__).resolve().is_relative_to(ROOT), gateway.__file__
BODY = b'{"model":"clf","unit_id":"u123","entity":{"user_id":42},"inputs":[0.5,1.0,1.5,2.0]}'
N = 20_000


class _NoRedis:
    async def xadd(self, *args: object, **kwargs: object) -> None:
        return None


def main() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    adm = admission.build(GatewayConfig(), metrics)
    spec = ModelSpec("clf", ("1", "2"), (TensorSpec("INPUT", "FP32", (20,)),), (TensorSpec("PROBS", "FP32", (2,)),), 64)
    join = FeatureJoin("INPUT", "concat", 16, np.dtype(np.float32))
    codec = V1Codec({"clf": PublicModel("clf", spec, join, ("user_id",), 64)})
    layout = RedisLayout(b"\x01\x00\x00\x00key", b"proj", ("user_id",), (value_packer(JoinKey("user_id", 4)),),
                         (b"f",), b"h", b"t")
    predlog = PredictionLog(_NoRedis(), "bench:", registry, buffer=100_000)
    feats = FeatureRow(np.arange(16, dtype=np.float32) / 7)
    batch_out = np.random.default_rng(0).random((64, 2)).astype(np.float32)
    a = SimpleNamespace(experiment="clf-demo", variant="b", target=SimpleNamespace(version="2"))
    loop = asyncio.new_event_loop()
    admitted = adm._admitted[1]  # noqa: SLF001 - what Admission.admit increments per request

    def one(i: int) -> bytes:
        admitted.inc()
        req = codec.parse(BODY)
        layout.encode_key(req.entity)
        join.apply(req.inputs, feats.values)
        vm = metrics.variant(req.model, a.variant)
        vm.features.observe(0.0003)
        vm.queue.observe(0.0021)
        vm.inference.observe(0.0009)
        vm.latency.observe(0.0034)
        out = {"PROBS": batch_out[i % 64:i % 64 + 1]}
        predlog.record(req, a, out, 0.0034)
        body = codec.render(req, InferResult(a.experiment, a.variant, "2", out, feats, None))
        vm.requests.inc()
        return body

    def block() -> None:
        for i in range(N):
            one(i)
            if i % 500 == 499:
                loop.run_until_complete(predlog.flush())
        generate_latest(registry)

    total = min(timeit.repeat(block, number=1, repeat=5, timer=time.process_time)) / N
    req = codec.parse(BODY)
    out = {"PROBS": batch_out[:1]}
    res = InferResult(a.experiment, a.variant, "2", out, feats, None)
    vm = metrics.variant("clf", "b")

    def count() -> None:
        admitted.inc()
        vm.features.observe(0.0003)
        vm.queue.observe(0.0021)
        vm.inference.observe(0.0009)
        vm.latency.observe(0.0034)
        vm.requests.inc()

    def log500() -> None:
        for _ in range(500):
            predlog.record(req, a, out, 0.0034)
        loop.run_until_complete(predlog.flush())

    parts = {"metrics": (count, 1), "parse": (lambda: codec.parse(BODY), 1),
             "feature_key": (lambda: layout.encode_key(req.entity), 1),
             "join": (lambda: join.apply(req.inputs, feats.values), 1),
             "render": (lambda: codec.render(req, res), 1), "predlog": (log500, 500)}
    alone = {name: min(timeit.repeat(f, number=N // per, repeat=5, timer=time.process_time)) / N * 1e6
             for name, (f, per) in parts.items()}
    print(f"{ROOT}: {total * 1e6:.2f} us/request; alone: " + " ".join(f"{k}={v:.2f}" for k, v in alone.items()))


if __name__ == "__main__":
    main()
