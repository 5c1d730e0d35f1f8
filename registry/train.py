"""A trained version: a small scikit-learn MLP fitted on the feature table, exported to the
numpy `model.py` format Triton serves (the same file as `runtime/triton_model.py`).

The label is a customer segment derived from the features (churn risk, high spender,
engaged, other): enough to train a real classifier until the pipelines bring real labels.
The four request-side inputs are N(0, 1) noise the model learns to ignore.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np

from runtime.modelgen import CLASSES, INPUT_WIDTH, REQUEST_WIDTH

TEMPLATE = Path(__file__).resolve().parent.parent / "runtime" / "triton_model.py"
SIGNATURE = {"inputs": [{"name": "INPUT", "datatype": "FP32", "dims": [INPUT_WIDTH]}],
             "outputs": [{"name": "PROBS", "datatype": "FP32", "dims": [CLASSES]}]}


def training_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows as the model sees them (16 features then 4 request inputs) and segment labels."""
    from features.repo.datagen import FEATURE_NAMES, generate_frame, segment_label
    frame = generate_frame(n, seed)[list(FEATURE_NAMES)]
    rng = np.random.default_rng(seed + 1)
    x = np.concatenate([frame.to_numpy(np.float32), rng.standard_normal((n, REQUEST_WIDTH), dtype=np.float32)],
                       axis=1)
    y = segment_label(frame)
    return x, y


def train(out: Path, *, n: int = 20_000, seed: int = 11, hidden: int = 32, max_iter: int = 80) -> dict:
    """Fit, export `out/model.py`, `out/weights.npz`, `out/signature.json`; return the metrics."""
    x, y = training_data(n, seed)
    return fit_export(x, y, out, seed=seed, hidden=hidden, max_iter=max_iter)[0]


def fit_export(x: np.ndarray, y: np.ndarray, out: Path, *, seed: int = 11, hidden: int = 32,
               max_iter: int = 80) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fit on 80 % of (x, y), export to ``out``; returns (metrics, holdout x, holdout y) with
    the holdout rows unscaled (as the model receives them)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    import warnings

    mu = np.nanmean(x, axis=0).astype(np.float32)
    sigma = np.maximum(np.nanstd(x, axis=0), 1e-3).astype(np.float32)
    z = np.nan_to_num((x - mu) / sigma, nan=0.0)   # exactly model.py's preprocessing
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=y)
    z_tr, z_te, y_tr, y_te = z[idx_tr], z[idx_te], y[idx_tr], y[idx_te]
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), activation="relu", max_iter=max_iter,
                        random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(z_tr, y_tr)
    if list(clf.classes_) != list(range(CLASSES)):
        raise RuntimeError(f"expected classes 0..{CLASSES - 1}, got {clf.classes_}")
    weights = {"mu": mu, "sigma": sigma,
               "w1": clf.coefs_[0].astype(np.float32), "b1": clf.intercepts_[0].astype(np.float32),
               "w2": clf.coefs_[1].astype(np.float32), "b2": clf.intercepts_[1].astype(np.float32)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEMPLATE, out / "model.py")
    buf = io.BytesIO()
    np.savez(buf, **weights)
    (out / "weights.npz").write_bytes(buf.getvalue())
    (out / "signature.json").write_text(json.dumps(SIGNATURE, indent=1))
    metrics = {"train_rows": len(y_tr), "test_rows": len(y_te), "test_accuracy": float(clf.score(z_te, y_te)),
               "hidden": hidden, "seed": seed}
    return metrics, x[idx_te], y[idx_te]
