"""Pure decode: bit-exact against protobuf's own encoding of feast.types.Value."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.codec import decode_batch, decode_timestamp, decode_value
from features.errors import DecodeError


@pytest.fixture(scope="module")
def pb():
    from google.protobuf.timestamp_pb2 import Timestamp

    from feast.protos.feast.types.Value_pb2 import Value

    return Value, Timestamp


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=16, max_size=16))
def test_fast_path_is_bit_exact(pb, bits):
    Value, _ = pb
    # protobuf round-trips float32 through a Python float; drop NaNs (Feast stores NaN as empty)
    bits = [b for b in bits if not math.isnan(_f32(b))] or [0]
    width = len(bits)
    reply = [Value(float_val=_f32(b)).SerializeToString() for b in bits] + [b"ts"]
    out = decode_batch([reply, reply], width, np.zeros(width, np.float32))
    assert out.values.dtype == np.float32 and out.values.shape == (2, width)
    assert out.values.view(np.uint32)[1].tolist() == bits
    assert out.null_counts == [0, 0] and out.missing == [False, False]


def test_nulls_missing_and_defaults(pb):
    Value, _ = pb
    one = Value(float_val=1.5).SerializeToString()
    defaults = np.array([9, 8, 7], np.float32)
    replies = [
        [one, b"", None, b"ts"],        # a null and an absent field
        [None, None, None, None],       # missing entity
        [b"", b"", b"", b"ts"],         # stored but every value null: not missing
    ]
    out = decode_batch(replies, 3, defaults)
    assert out.values.tolist() == [[1.5, 8, 7], [9, 8, 7], [9, 8, 7]]
    assert out.null_counts == [2, 3, 3]
    assert out.missing == [False, True, False]
    assert out.timestamps == [b"ts", None, b"ts"]


@pytest.mark.parametrize("field,value", [
    ("double_val", 2.5), ("int32_val", -3), ("int64_val", 2**53), ("int64_val", -(2**40)), ("bool_val", True),
])
def test_other_numeric_types(pb, field, value):
    Value, _ = pb
    raw = Value(**{field: value}).SerializeToString()
    assert decode_value(raw) == float(value)
    out = decode_batch([[raw, b"t"]], 1, np.zeros(1, np.float32), all_float32=False)
    assert out.values[0, 0] == np.float32(value)


def test_non_numeric_value_is_refused(pb):
    Value, _ = pb
    with pytest.raises(DecodeError, match="not a numeric"):
        decode_batch([[Value(string_val="x").SerializeToString(), b"t"]], 1, np.zeros(1, np.float32))


@settings(deadline=None)
@given(st.integers(0, 2**34), st.integers(0, 999_999_999))
def test_timestamp(pb, seconds, nanos):
    _, Timestamp = pb
    raw = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
    assert decode_timestamp(raw) == pytest.approx(seconds + nanos / 1e9, abs=1e-6)


def test_mixed_lengths_fall_back_exactly(pb):
    Value, _ = pb
    f, d = Value(float_val=1.25).SerializeToString(), Value(double_val=2.5).SerializeToString()
    i = Value(int64_val=7).SerializeToString()  # 2 bytes: with a double, 11 bytes over 3 values
    out = decode_batch([[f, b"", d, b"t"], [i, f, d, b"t"]], 3, np.full(3, -1, np.float32))
    assert out.values.tolist() == [[1.25, -1.0, 2.5], [7.0, 1.25, 2.5]]
    assert out.null_counts == [1, 0]
