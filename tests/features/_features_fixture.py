"""Edge-case fixture data for the features tests (a helper module; conftest imports it)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.repo.datagen import FEATURE_NAMES, generate_frame

BIG_ID = 2**63 - 5
MISSING_ID = 10**12
NAN_ID, ZERO_ID = 7, 8


def fixture_frame() -> pd.DataFrame:
    """300 users plus edge cases: NaN and +-0.0 values, an id near 2**63, extreme magnitudes."""
    frame = generate_frame(300, seed=11)
    frame.loc[frame.user_id == NAN_ID, "sessions_7d"] = math.nan
    frame.loc[frame.user_id == NAN_ID, "churn_risk"] = math.nan
    frame.loc[frame.user_id == ZERO_ID, "spend_30d"] = 0.0
    frame.loc[frame.user_id == ZERO_ID, "loyalty_score"] = -0.0
    big = frame.iloc[[0]].copy()
    big["user_id"] = np.int64(BIG_ID)
    big[list(FEATURE_NAMES[:4])] = np.array([3.4e38, -1.4e-45, 1e-40, np.float32(1 / 3)], dtype=np.float32)
    return pd.concat([frame, big], ignore_index=True)
