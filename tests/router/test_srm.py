"""SRM check: flags a 48/52 skew at 100k exposures, quiet on a fair split."""

from __future__ import annotations

import pytest

from router.assign import CompiledExperiment
from router.srm import srm_check

from _router_helpers import experiment, units


def test_flags_injected_skew() -> None:
    res = srm_check([48_000, 52_000], [50, 50])
    assert res.flagged and res.p_value is not None and res.p_value < 1e-10 and res.total == 100_000


def test_quiet_on_fair_split_from_real_assignments() -> None:
    for salt in ("s1", "s2", "s3"):
        exp = CompiledExperiment(experiment({"a": 50, "b": 30, "c": 20}, salt=salt))
        for u in units(100_000):
            exp.assign(u)
        res = srm_check(exp.variant_exposures(), [50, 30, 20])
        assert not res.flagged, res
        assert res.total == 100_000


def test_edge_cases() -> None:
    assert srm_check([0, 0], [50, 50]).p_value is None
    assert not srm_check([10], [100]).flagged  # one variant: nothing to compare
    assert srm_check([5, 1], [100, 0]).flagged  # exposures on a zero-weight variant


def test_same_numbers_as_scipy_chisquare() -> None:
    """The statistic and p-value are computed directly (scipy.special.chdtrc); they must be
    scipy.stats.chisquare's, over splits of 2-5 variants and counts from 0 to 10^7."""
    import numpy as np
    from scipy.stats import chisquare

    rng = np.random.default_rng(7)
    for _ in range(500):
        k = int(rng.integers(2, 6))
        weights = list(rng.uniform(0.01, 1.0, k))
        observed = [int(x) for x in rng.integers(0, 10 ** int(rng.integers(1, 8)), k)]
        total = sum(observed)
        r = srm_check(observed, weights)
        if total == 0:
            assert r.p_value is None
            continue
        stat, p = chisquare(observed, [total * w / sum(weights) for w in weights])
        assert r.chi2 == pytest.approx(float(stat), rel=1e-12, abs=1e-12)
        assert r.p_value == pytest.approx(float(p), rel=1e-9, abs=1e-300)
        assert r.flagged == bool(p < 0.001)
