"""FailurePolicy validation and defaults; FeatureRow's summary repr."""

from __future__ import annotations

import numpy as np
import pytest

from features import FailurePolicy, FeatureRow


def test_default_vector_uses_per_feature_defaults():
    p = FailurePolicy(default_value=np.nan, defaults={"b": 2.5})
    v = p.default_vector(("a", "b"))
    assert v.dtype == np.float32 and np.isnan(v[0]) and v[1] == 2.5
    assert not v.flags.writeable
    with pytest.raises(ValueError, match="unknown features"):
        FailurePolicy(defaults={"zzz": 1.0}).default_vector(("a",))


@pytest.mark.parametrize("kw", [
    dict(on_unavailable="ignore"), dict(timeout_s=0), dict(max_batch=0), dict(backoff_s=2, max_backoff_s=1),
])
def test_rejects_bad_policies(kw):
    with pytest.raises(ValueError):
        FailurePolicy(**kw)


def test_policy_is_frozen_and_copies_defaults():
    src = {"a": 1.0}
    p = FailurePolicy(defaults=src)
    src["a"] = 9.0
    assert p.defaults["a"] == 1.0
    with pytest.raises(AttributeError):
        p.timeout_s = 1.0  # type: ignore[misc]


def test_feature_row_repr():
    assert repr(FeatureRow(np.zeros(16, np.float32))) == "<FeatureRow width=16 [ok]>"
    row = FeatureRow(np.zeros(16, np.float32), True, 16, False)
    assert repr(row) == "<FeatureRow width=16 [missing_entity nulls=16]>"
    assert not hasattr(row, "__dict__")
