"""Config validation: clear messages at load, round trips, and hypothesis properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.config import default_experiments, load_experiments, parse_document, parse_experiment
from router.errors import ConfigError

from _router_helpers import experiment_dict


def test_default_demo_experiment() -> None:
    (exp,) = default_experiments()
    assert exp.model == "clf" and exp.salt == "demo-1" and exp.status == "running"
    assert [(v.name, v.weight, v.target.version) for v in exp.variants] == [("a", 50, "1"), ("b", 50, "2")]
    assert exp.control == "a"


@pytest.mark.parametrize(
    "change, code, fragment",
    [
        ({"variants": [{"name": "a", "weight": 60, "target": {"model": "m"}},
                       {"name": "b", "weight": 30, "target": {"model": "m"}}]},
         "weights_sum", "must add up to 100, got 60 + 30 = 90"),
        ({"allowlist": {"u1": "zzz"}}, "unknown_variant", "allowlist['u1']: unknown variant 'zzz'"),
        ({"control": "zzz"}, "unknown_variant", "control: unknown variant 'zzz'"),
        ({"shadow": {"variant": "b", "share": 10, "target": {"model": "m"}}}, "shadow_is_primary",
         "shadow.variant: 'b' is also a primary variant"),
        ({"status": "live"}, "invalid_config", "status: must be one of running, paused, stopped"),
        ({"colour": "red"}, "unknown_field", "unknown field(s) colour"),
        ({"variants": [{"name": "a", "weight": 33.333, "target": {"model": "m"}},
                       {"name": "b", "weight": 66.667, "target": {"model": "m"}}]},
         "weight_resolution", "variants[0].weight: 33.333 is not a multiple of 0.01"),
        ({"variants": [{"name": "a", "weight": 50, "target": {"model": "m"}},
                       {"name": "a", "weight": 50, "target": {"model": "m"}}]},
         "duplicate_variant", "duplicate variant name(s) a"),
        ({"variants": [{"name": "a", "weight": "50", "target": {"model": "m"}}]},
         "invalid_config", "variants[0].weight: must be a number (percent), got '50'"),
        ({"guardrails": {"max_error_rate": 2}}, "invalid_config", "max_error_rate: must be a fraction"),
        ({"bucket_version": -1}, "invalid_config", "bucket_version: must be a non-negative integer"),
    ],
)
def test_rejections_are_clear(change: dict, code: str, fragment: str) -> None:
    body = {**experiment_dict({"a": 50, "b": 50}), **change}
    with pytest.raises(ConfigError) as info:
        parse_experiment(body)
    assert info.value.code == code
    assert fragment in info.value.message


def test_missing_fields_named() -> None:
    with pytest.raises(ConfigError, match=r"missing field\(s\) salt") as info:
        parse_experiment({"name": "x", "model": "m", "variants": []})
    assert info.value.code == "missing_field"


def test_document_rejects_two_experiments_on_one_model() -> None:
    doc = {"experiments": [experiment_dict({"a": 100}, name="e1"), experiment_dict({"a": 100}, name="e2")]}
    with pytest.raises(ConfigError, match="routed by more than one experiment"):
        parse_document(doc)


def test_load_yaml_and_json(tmp_path) -> None:
    yml = tmp_path / "exp.yaml"
    yml.write_text(
        """
experiments:
  - name: rollout
    model: clf
    salt: s-42
    status: paused
    control: b
    variants:
      - {name: a, weight: 90, target: {model: clf, version: 1}}
      - {name: b, weight: 10, target: {model: clf_v2}}
    allowlist: {qa-user: b}
    shadow: {variant: c, share: 5.5, target: {model: clf, version: "3"}}
    guardrails: {max_error_rate: 0.02, max_p99_ms: 250}
"""
    )
    (exp,) = load_experiments(yml)
    assert exp.status == "paused" and exp.control == "b"
    assert exp.variants[0].target.version == "1" and exp.variants[1].target.version == ""
    assert exp.shadow is not None and exp.shadow.buckets == 550
    assert exp.guardrails is not None and exp.guardrails.breaches(0.03, 100) == ["error rate 0.0300 > 0.02"]
    js = tmp_path / "exp.json"
    js.write_text(json.dumps({"experiments": [exp.to_dict()]}))
    assert load_experiments(js) == [exp]
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiments(bad)


names = st.text(alphabet="abcdefghij", min_size=1, max_size=6)


@st.composite
def bucket_splits(draw, max_variants: int = 5) -> list[int]:
    """Bucket counts (summing to 10,000) for 1..max_variants variants."""
    k = draw(st.integers(1, max_variants))
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=k - 1, max_size=k - 1)))
    edges = [0, *cuts, 10_000]
    return [b - a for a, b in zip(edges, edges[1:])]


@settings(max_examples=150, deadline=None)
@given(split=bucket_splits(), salt=st.text(min_size=1, max_size=20).filter(str.strip))
def test_valid_configs_round_trip(split: list[int], salt: str) -> None:
    weights = {f"v{i}": n / 100 for i, n in enumerate(split)}
    cfg = parse_experiment(experiment_dict(weights, salt=salt))
    assert sum(v.buckets for v in cfg.variants) == 10_000
    assert [v.buckets for v in cfg.variants] == split
    assert parse_experiment(cfg.to_dict()) == cfg


@settings(max_examples=150, deadline=None)
@given(weights=st.lists(st.integers(0, 10_000), min_size=1, max_size=5).filter(lambda w: sum(w) != 10_000))
def test_wrong_sums_always_rejected(weights: list[int]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_experiment(experiment_dict({f"v{i}": w / 100 for i, w in enumerate(weights)}))
    assert info.value.code == "weights_sum"


@settings(max_examples=100, deadline=None)
@given(junk=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                         max_leaves=10))
def test_arbitrary_input_raises_only_config_error(junk) -> None:
    try:
        parse_experiment(junk)
    except ConfigError as e:
        assert e.message and e.code
