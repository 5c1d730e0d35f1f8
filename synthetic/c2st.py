"""Classifier two-sample test: can a gradient-boosted classifier tell synthetic rows from real ones?

ROC AUC on a held-out half: 0.5 means indistinguishable, 1.0 means always told apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["c2st_auc"]


def c2st_auc(real: np.ndarray, synthetic: np.ndarray, seed: int = 0, max_iter: int = 200) -> float:
    """AUC of HistGradientBoosting trained on half of ``real`` ∪ ``synthetic`` (equal sizes)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    n = min(len(real), len(synthetic))
    x = np.concatenate([real[:n], synthetic[:n]]).astype(np.float64)
    y = np.r_[np.zeros(n), np.ones(n)]
    xa, xb, ya, yb = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    clf = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed).fit(xa, ya)
    return float(roc_auc_score(yb, clf.predict_proba(xb)[:, 1]))
