"""Write a deliberately bad version of a python-backend model: for guardrail tests and demos.

`python -m runtime.badmodel --repo DIR [--model clf] [--from-version 2] [--version 3]
[--fail-share 0.1] [--slow-ms 0]` copies version `--from-version` of the model in `DIR`
(weights and code) into `DIR/<model>/<version>/` and wraps it: a request whose rows include
one with a last input above the normal quantile `1 - fail_share` is answered with an error
(so with N(0, 1) inputs about `fail_share` of single-row requests fail), and every execution
first sleeps `slow_ms`. Everything else is answered exactly like the original version.
Never run it on the committed `model_repo/`: point it at a temporary copy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from statistics import NormalDist

WRAPPER = '''"""A deliberately bad version, written by runtime/badmodel.py: wraps good_model.py."""

import importlib.util
import os
import time

import triton_python_backend_utils as pb_utils

THRESHOLD = {threshold}  # a request with a row whose last input is above this fails
SLOW_S = {slow_s!r}


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        spec = importlib.util.spec_from_file_location("good_model", os.path.join(here, "good_model.py"))
        good = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(good)
        self.good = good.TritonPythonModel()
        self.good.initialize(args)

    def execute(self, requests):
        if SLOW_S:
            time.sleep(SLOW_S)
        bad = set()
        for i, r in enumerate(requests):
            x = pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy()
            if (x[:, -1] > THRESHOLD).any():
                bad.add(i)
        ok = [r for i, r in enumerate(requests) if i not in bad]
        answers = iter(self.good.execute(ok) if ok else [])
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("bad version: input rejected"))
                if i in bad else next(answers) for i in range(len(requests))]
'''


def write_bad_version(repo: Path | str, *, model: str = "clf", from_version: int = 2, version: int = 3,
                      fail_share: float = 0.1, slow_ms: float = 0.0) -> Path:
    """Create ``repo/model/version`` from ``from_version``; returns the new version folder."""
    if not 0 <= fail_share < 1:
        raise ValueError(f"fail_share: must be in [0, 1), got {fail_share!r}")
    if slow_ms < 0:
        raise ValueError(f"slow_ms: must be >= 0, got {slow_ms!r}")
    src = Path(repo) / model / str(from_version)
    if not (src / "model.py").is_file():
        raise FileNotFoundError(f"{src}/model.py: no such model version to copy")
    dst = Path(repo) / model / str(version)
    if dst.exists():
        raise FileExistsError(f"{dst}: already exists")
    shutil.copytree(src, dst)
    (dst / "model.py").rename(dst / "good_model.py")
    threshold = NormalDist().inv_cdf(1 - fail_share) if fail_share > 0 else float("inf")
    # repr(inf) is 'inf', not Python: spell an endless threshold as an expression.
    source = repr(threshold) if threshold != float("inf") else 'float("inf")'
    (dst / "model.py").write_text(WRAPPER.format(threshold=source, slow_s=slow_ms / 1e3))
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.badmodel", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="model repository to add the version to (a copy)")
    ap.add_argument("--model", default="clf")
    ap.add_argument("--from-version", type=int, default=2)
    ap.add_argument("--version", type=int, default=3)
    ap.add_argument("--fail-share", type=float, default=0.1)
    ap.add_argument("--slow-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    try:
        out = write_bad_version(args.repo, model=args.model, from_version=args.from_version,
                                version=args.version, fail_share=args.fail_share, slow_ms=args.slow_ms)
    except (ValueError, OSError) as e:
        print(f"badmodel: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
