"""Synthetic but plausible user features, deterministic from a seed. Pure apart from writing parquet.

Three latent factors (engagement, spend, dissatisfaction) drive 16 correlated columns with
lognormal, count-like, rate and zero-inflated shapes; about 2 % of a few columns are missing (NaN).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["FEATURE_NAMES", "SEGMENTS", "generate_frame", "segment_label", "write_parquet", "materialize_window"]

FEATURE_NAMES: tuple[str, ...] = (
    "account_age_days", "sessions_7d", "sessions_30d", "avg_session_minutes",
    "purchases_30d", "spend_30d", "avg_order_value", "cart_adds_7d",
    "cart_abandon_rate", "days_since_last_purchase", "clicks_7d", "ctr_7d",
    "support_tickets_90d", "refund_rate", "loyalty_score", "churn_risk",
)
_NULLABLE = ("avg_session_minutes", "avg_order_value", "ctr_7d", "refund_rate")


def generate_frame(n: int, seed: int = 7, *, first_id: int = 1, anchor: datetime | None = None,
                   null_rate: float = 0.02) -> pd.DataFrame:
    """``n`` users with ids ``first_id..first_id+n-1``; event times within the 7 days before ``anchor``."""
    rng = np.random.default_rng(seed)
    anchor = anchor or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    eng, spend, dis = rng.standard_normal((3, n))
    noise = lambda s=1.0: rng.standard_normal(n) * s  # noqa: E731
    sessions_7d = rng.poisson(np.exp(1.2 + 0.6 * eng))
    sessions_30d = sessions_7d * 3 + rng.poisson(np.exp(1.8 + 0.6 * eng))
    purchases = rng.poisson(np.exp(-0.3 + 0.5 * spend + 0.3 * eng))
    aov = np.exp(3.5 + 0.4 * spend + noise(0.3))
    spend_30d = np.where(purchases > 0, purchases * aov, 0.0)  # zero-inflated
    clicks = rng.poisson(np.exp(2.5 + 0.7 * eng))
    cart_adds = rng.poisson(np.exp(0.5 + 0.4 * eng + 0.3 * spend))
    cols = {
        "account_age_days": np.exp(5.5 + 0.2 * eng + noise(0.8)),
        "sessions_7d": sessions_7d,
        "sessions_30d": sessions_30d,
        "avg_session_minutes": np.exp(1.8 + 0.3 * eng + noise(0.4)),
        "purchases_30d": purchases,
        "spend_30d": spend_30d,
        "avg_order_value": aov,
        "cart_adds_7d": cart_adds,
        "cart_abandon_rate": 1 / (1 + np.exp(-(-0.5 + 0.6 * dis - 0.4 * spend + noise(0.5)))),
        "days_since_last_purchase": np.exp(2.5 - 0.6 * spend - 0.3 * eng + noise(0.6)),
        "clicks_7d": clicks,
        "ctr_7d": np.clip(cart_adds / np.maximum(clicks, 1), 0, 1),
        "support_tickets_90d": rng.poisson(np.exp(-1.0 + 0.8 * dis)),
        "refund_rate": np.clip(rng.beta(1, 12, n) * np.exp(0.5 * dis), 0, 1),
        "loyalty_score": 50 + 15 * eng + 10 * spend - 8 * dis + noise(5),
        "churn_risk": 1 / (1 + np.exp(-(-1.0 - 0.8 * eng + 0.9 * dis + noise(0.3)))),
    }
    frame = pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in cols.items()})
    for name in _NULLABLE:
        frame.loc[rng.random(n) < null_rate, name] = np.nan
    ages = rng.uniform(0, 7 * 86400, n)
    ts = pd.Timestamp(anchor) - pd.to_timedelta(np.round(ages), unit="s")
    frame.insert(0, "user_id", np.arange(first_id, first_id + n, dtype=np.int64))
    frame["event_timestamp"] = ts
    frame["created"] = ts
    return frame


SEGMENTS = ("churn_risk", "high_spender", "engaged", "other")


def segment_label(frame: pd.DataFrame) -> np.ndarray:
    """The demo's label, a customer segment that depends only on the features (int 0..3, see
    ``SEGMENTS``): churn risk in the top quarter, else spend in the top quarter, else more
    sessions than the median, else other. Thresholds are the frame's own quantiles."""
    churn = frame["churn_risk"].to_numpy()
    spend = frame["spend_30d"].to_numpy()
    sessions = frame["sessions_7d"].to_numpy()
    y = np.full(len(frame), 3)
    y[sessions > np.nanmedian(sessions)] = 2
    y[spend > np.nanquantile(spend, 0.75)] = 1
    y[churn > np.nanquantile(churn, 0.75)] = 0
    return y


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def materialize_window(frame: pd.DataFrame) -> tuple[datetime, datetime]:
    """A window that covers every event time in ``frame``."""
    lo = frame["event_timestamp"].min().to_pydatetime() - timedelta(seconds=1)
    hi = frame["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    return lo, hi
