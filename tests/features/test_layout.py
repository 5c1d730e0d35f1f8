"""Keys and fields equal Feast's own helpers; bad entities name the field."""

from __future__ import annotations

import pytest

from features.errors import BadEntity, UnsupportedLayout
from features.layout import RedisLayout, feature_field
from features.spec import FeatureSpec, JoinKey, ViewSpec


def spec(**kw) -> ViewSpec:
    base = dict(
        project="proj_a", view="user_features",
        features=(FeatureSpec("a", "Float32"), FeatureSpec("b", "Float32")),
        join_keys=(JoinKey("user_id", 4),), serialization_version=3, versioning=False,
        online_store="redis", connection_string="127.0.0.1:6379", redis_type="redis",
    )
    base.update(kw)
    return ViewSpec(**base)


@pytest.fixture(scope="module")
def feast_helpers():
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return _redis_key, _mmh3, EntityKey, Value


@pytest.mark.parametrize("uid", [0, 1, 42, -7, 2**63 - 5, 2**63 - 1, -(2**63)])
def test_int64_key_matches_feast(feast_helpers, uid):
    _redis_key, _, EntityKey, Value = feast_helpers
    expected = _redis_key("proj_a", EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=uid)]))
    assert RedisLayout.from_spec(spec()).encode_key({"user_id": uid}) == expected


def test_composite_key_sorted_like_feast(feast_helpers):
    _redis_key, _, EntityKey, Value = feast_helpers
    s = spec(join_keys=(JoinKey("user_id", 4), JoinKey("country", 2), JoinKey("shard", 3)))
    ek = EntityKey(join_keys=["user_id", "country", "shard"],
                   entity_values=[Value(int64_val=5), Value(string_val="NZ"), Value(int32_val=-2)])
    key = RedisLayout.from_spec(s).encode_key({"shard": -2, "user_id": 5, "country": "NZ", "extra": 1})
    assert key == _redis_key("proj_a", ek)


def test_fields_match_feast(feast_helpers):
    _, _mmh3, _, _ = feast_helpers
    layout = RedisLayout.from_spec(spec())
    assert layout.fields == (_mmh3("user_features:a"), _mmh3("user_features:b"), b"_ts:user_features")
    assert feature_field("v", "x") == _mmh3("v:x")
    assert "fields=2+ts" in repr(layout)


@pytest.mark.parametrize("entity,reason", [
    ({}, "missing join key"),
    ({"user_id": "42"}, "expected an integer"),
    ({"user_id": True}, "expected an integer"),
    ({"user_id": 4.0}, "expected an integer"),
    ({"user_id": 2**63}, "out of the INT64 range"),
])
def test_bad_entity_names_the_field(entity, reason):
    with pytest.raises(BadEntity, match=reason) as info:
        RedisLayout.from_spec(spec()).encode_key(entity)
    assert info.value.field == "user_id"


@pytest.mark.parametrize("kw,what", [
    (dict(serialization_version=2), "entity_key_serialization_version is 2"),
    (dict(versioning=True), "enable_online_feature_view_versioning is on"),
    (dict(features=(FeatureSpec("name", "String"),)), "feature 'name' has type String"),
    (dict(redis_type="redis_cluster"), "redis_cluster"),
    (dict(online_store="sqlite"), "not redis"),
    (dict(join_keys=(JoinKey("blob", 1),)), "join key 'blob' has value type 1"),
])
def test_refuses_unsupported_layouts(kw, what):
    with pytest.raises(UnsupportedLayout, match=what):
        RedisLayout.from_spec(spec(**kw))
