"""Triton python-backend model: a small numpy MLP classifier (copied into model_repo/).

Runs inside Triton's stub with the runtime venv's numpy (< 2). Weights live next to this
file in `weights.npz`; every version directory carries its own copy of both.
"""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        with np.load(os.path.join(here, "weights.npz")) as w:
            self.mu, self.sigma, self.w1, self.b1, self.w2, self.b2 = (
                w[k] for k in ("mu", "sigma", "w1", "b1", "w2", "b2"))

    def execute(self, requests):
        # Triton's dynamic batcher hands several requests at once: one matmul for all of them.
        xs = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        x = np.concatenate(xs) if len(xs) > 1 else xs[0]
        # Raw feature values in: standardise, and a missing value (NaN) counts as the mean.
        x = np.nan_to_num((x - self.mu) / self.sigma, nan=0.0)
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        z = h @ self.w2 + self.b2
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        out, start = [], 0
        for x_i in xs:
            n = x_i.shape[0]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("PROBS", probs[start:start + n])]))
            start += n
        return out
