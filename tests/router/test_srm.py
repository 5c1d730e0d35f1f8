"""SRM check: flags a 48/52 skew at 100k exposures, quiet on a fair split."""

from __future__ import annotations

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
