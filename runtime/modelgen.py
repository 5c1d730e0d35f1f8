"""Generate `model_repo/` deterministically: one classifier, two versions (the A and B).

`python -m runtime.modelgen [--out DIR]` rewrites the repository byte for byte the same
from the fixed seeds below. `reference_forward` is the numpy reference the tests compare
Triton's answers with.

`python -m runtime.modelgen --test-models DIR` writes the any-model test models instead
(`runtime/anymodels.py`: several inputs and outputs, every datatype, variable dims, not
batchable) into DIR; they are never part of the demo's repository.
"""

from __future__ import annotations

import argparse
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.triton import DEFAULT_REPOSITORY

MODEL_NAME = "clf"
FEATURE_WIDTH = 16   # online features joined by the gateway
REQUEST_WIDTH = 4    # inputs the caller sends with the request
INPUT_WIDTH = FEATURE_WIDTH + REQUEST_WIDTH
CLASSES = 4
MAX_BATCH_SIZE = 256


@dataclass(frozen=True)
class VersionSpec:
    version: int
    seed: int
    hidden: int


VERSIONS = (VersionSpec(1, seed=1001, hidden=32), VersionSpec(2, seed=2002, hidden=48))

# Triton's dynamic batcher holds a lone request this long for company. Behind the gateway
# (one call in flight per target, already a batch) every call paid all of it: 500 µs capped
# the full path at c=16 (4.3 rows per call, ~1 ms per round). Triton still batches whatever
# queues while its instance is busy, which is most of what it forms at c>=64 direct; 0 lost
# direct clients much of that (rows per execution 25 -> 14 at c=64), 100 µs kept it.
QUEUE_DELAY_US = 100

CONFIG = f"""name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
version_policy: {{ all {{ }} }}
input [
  {{ name: "INPUT", data_type: TYPE_FP32, dims: [ {INPUT_WIDTH} ] }}
]
output [
  {{ name: "PROBS", data_type: TYPE_FP32, dims: [ {CLASSES} ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
"""


def input_scaling() -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of the inputs the model sees: the demo feature data (the same
    generator and seed the feature repo materialises), then the request-side inputs ~ N(0, 1).
    Baked into the weights so raw feature values go in and the softmax does not saturate."""
    from features.repo.datagen import FEATURE_NAMES, generate_frame
    frame = generate_frame(10_000, 7)[list(FEATURE_NAMES)]
    mu = np.concatenate([frame.mean().to_numpy(), np.zeros(REQUEST_WIDTH)]).astype(np.float32)
    sigma = np.concatenate([frame.std().to_numpy(), np.ones(REQUEST_WIDTH)]).astype(np.float32)
    return mu, np.maximum(sigma, 1e-3)


def make_weights(spec: VersionSpec, scaling: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    mu, sigma = scaling if scaling is not None else input_scaling()
    rng = np.random.default_rng(spec.seed)
    return {
        "mu": mu, "sigma": sigma,
        "w1": (rng.standard_normal((INPUT_WIDTH, spec.hidden)) / np.sqrt(INPUT_WIDTH)).astype(np.float32),
        "b1": (0.1 * rng.standard_normal(spec.hidden)).astype(np.float32),
        "w2": (rng.standard_normal((spec.hidden, CLASSES)) / np.sqrt(spec.hidden)).astype(np.float32),
        "b2": (0.1 * rng.standard_normal(CLASSES)).astype(np.float32),
    }


def reference_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """float64 reference of the model's forward pass (float32 Triton agrees to ~1e-6)."""
    x = (np.asarray(x, dtype=np.float64) - weights["mu"]) / weights["sigma"]
    x = np.nan_to_num(x, nan=0.0)
    h = np.maximum(x @ weights["w1"].astype(np.float64) + weights["b1"], 0.0)
    z = h @ weights["w2"].astype(np.float64) + weights["b2"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def load_weights(version: int, repository: Path = DEFAULT_REPOSITORY) -> dict[str, np.ndarray]:
    with np.load(Path(repository) / MODEL_NAME / str(version) / "weights.npz") as w:
        return {k: w[k] for k in w.files}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # zip entries carry a fixed 1980 timestamp: deterministic bytes
    return buf.getvalue()


def generate(out: Path = DEFAULT_REPOSITORY) -> Path:
    model_dir = Path(out) / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    template = Path(__file__).with_name("triton_model.py")
    scaling = input_scaling()
    for spec in VERSIONS:
        vdir = model_dir / str(spec.version)
        vdir.mkdir(exist_ok=True)
        shutil.copyfile(template, vdir / "model.py")
        (vdir / "weights.npz").write_bytes(_npz_bytes(make_weights(spec, scaling)))
    return model_dir


_TRITON_TYPES = {"BYTES": "TYPE_STRING", **{t: f"TYPE_{t}" for t in (
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64")}}


@dataclass(frozen=True)
class TestModel:
    """A test model's contract: (name, KServe datatype, dims) per tensor."""

    name: str
    max_batch_size: int
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]

    def config(self) -> str:
        def tensors(ts: tuple) -> str:
            return ",\n".join(f'  {{ name: "{n}", data_type: {_TRITON_TYPES[t]}, dims: [ {", ".join(map(str, d))} ] }}'
                              for n, t, d in ts)
        batching = (f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}\n"
                    if self.max_batch_size else "")
        return (f'name: "{self.name}"\nbackend: "python"\nmax_batch_size: {self.max_batch_size}\n'
                f"input [\n{tensors(self.inputs)}\n]\noutput [\n{tensors(self.outputs)}\n]\n{batching}"
                "instance_group [ { count: 1, kind: KIND_CPU } ]\n")


def _test_models() -> tuple[TestModel, ...]:
    from runtime.anymodels import ECHO_TYPES
    return (
        TestModel("text_ids", 8, (("INPUT_IDS", "INT64", (-1,)), ("ATTENTION_MASK", "INT64", (-1,))),
                  (("POOLED", "FP32", (4,)),)),
        TestModel("image_fp16", 8, (("IMAGE", "FP16", (3, 8, 8)),), (("MEAN", "FP16", (3,)), ("MAX", "FP16", (3,)))),
        TestModel("bytes_len", 8, (("TEXT", "BYTES", (1,)),), (("SCORE", "FP32", (1,)),)),
        TestModel("two_out", 8, (("X", "FP32", (4,)),),
                  (("SCORES", "FP32", (4,)), ("TOP", "INT64", (1,)), ("LABEL", "BYTES", (1,)))),
        TestModel("nobatch", 0, (("X", "INT32", (2, 3)),), (("Y", "INT32", (3, 2)), ("POSITIVE", "BOOL", (2, 3)))),
        TestModel("echo", 8, tuple((f"IN_{t}", t, (2,)) for t in ECHO_TYPES),
                  tuple((f"OUT_{t}", t, (2,)) for t in ECHO_TYPES)),
    )


def anymodel_specs() -> tuple[TestModel, ...]:
    """The test models' contracts (their forward functions: `runtime.anymodels.FORWARD`)."""
    return _test_models()


def generate_test_models(out: Path) -> list[Path]:
    """Write every test model (version 1) into `out`; the demo's repository is not touched."""
    template = Path(__file__).with_name("anymodels.py")
    written = []
    for m in _test_models():
        vdir = Path(out) / m.name / "1"
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir.parent / "config.pbtxt").write_text(m.config())
        shutil.copyfile(template, vdir / "model.py")
        written.append(vdir.parent)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--test-models", type=Path, metavar="DIR",
                        help="write the any-model test models into DIR instead of the demo repository")
    args = parser.parse_args(argv)
    if args.test_models is not None:
        for d in generate_test_models(args.test_models):
            print(f"wrote {d}")
        return
    print(f"wrote {generate(args.out)}")


if __name__ == "__main__":
    main()
