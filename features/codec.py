"""Decoding HMGET replies of Feast's Redis layout into a float32 matrix. Pure: no I/O.

Each stored value is a serialized ``feast.types.Value`` holding one field of a oneof. For
Float32 that is 5 bytes: tag ``0x35`` (field 6, fixed32) then the little-endian float, so a batch
whose values are all 5 bytes with that tag is decoded with one ``join`` and one ``frombuffer``:
the float bits are copied, never converted, hence bit-exact. Anything else (nulls, missing
entities, other numeric types) goes through a small exact decoder of the few tags involved,
without protobuf.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import chain, compress
from operator import not_
from typing import Sequence

import numpy as np

from features.errors import DecodeError

__all__ = ["BatchDecoder", "DecodedBatch", "decode_batch", "decode_value", "decode_timestamp"]

Reply = Sequence[bytes | None]

_FLOAT_TAG = 0x35
_FLOAT_TAG_BYTE = bytes([_FLOAT_TAG])
_F4 = struct.Struct("<f")
_F8 = struct.Struct("<d")


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    values: np.ndarray            # float32 [n, width], defaults filled in
    null_counts: list[int]        # per row: features null or absent, replaced by defaults
    missing: list[bool]           # per row: no stored row for the entity at all
    timestamps: list[bytes | None]  # per row: the raw _ts field (None when missing)

    @property
    def clean(self) -> bool:
        """Every value stored: no nulls, hence no missing rows."""
        return not any(self.null_counts)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


def decode_value(raw: bytes) -> float | None:
    """One serialized numeric ``feast.types.Value`` as a Python float; None for an empty (null) Value.

    Float32 values are returned exactly (float32 -> float is exact); ints and bools are converted.
    """
    if not raw:
        return None
    tag = raw[0]
    if tag == _FLOAT_TAG and len(raw) == 5:
        return _F4.unpack_from(raw, 1)[0]
    if tag == 0x29 and len(raw) == 9:  # double_val: field 5, fixed64
        return _F8.unpack_from(raw, 1)[0]
    if tag in (0x18, 0x20, 0x38):  # int32_val, int64_val, bool_val: varints
        v, end = _varint(raw, 1)
        if end != len(raw):
            raise DecodeError("trailing bytes after a numeric value")
        return float(v - (1 << 64) if v >= 1 << 63 else v)
    raise DecodeError(f"stored value with tag 0x{tag:02x} ({len(raw)} bytes) is not a numeric scalar")


def decode_timestamp(raw: bytes) -> float:
    """A serialized ``google.protobuf.Timestamp`` as Unix seconds."""
    seconds = nanos = 0
    pos = 0
    while pos < len(raw):
        tag = raw[pos]
        v, pos = _varint(raw, pos + 1)
        if tag == 0x08:
            seconds = v - (1 << 64) if v >= 1 << 63 else v
        elif tag == 0x10:
            nanos = v
        else:
            raise DecodeError(f"unexpected tag 0x{tag:02x} in a Timestamp")
    return seconds + nanos / 1e9


def _fast_float32(flat: list, n: int, width: int) -> np.ndarray | None:
    """The [n, width] matrix when every value in ``flat`` is a stored Float32, else None.

    Exact for what Feast writes: a Value that starts with tag 0x35 is a float_val and is
    exactly 5 bytes, so if the joined bytes are 5 per value and every 5th byte from 0 is the
    tag, each value is one 5-byte float (by induction from the first). A None fails the join;
    an empty value shortens the total.
    """
    try:
        joined = b"".join(flat)
    except TypeError:  # a None: an absent field or entity
        return None
    if len(joined) != 5 * len(flat) or joined[::5] != _FLOAT_TAG_BYTE * len(flat):
        return None
    # A strided view over the float bytes (skipping each tag), copied out as native float32.
    view = np.ndarray((n, width), dtype="<f4", buffer=joined, offset=1, strides=(5 * width, 5))
    return view.astype(np.float32)


def _slow_row(reply: Reply, width: int, out: np.ndarray) -> tuple[int, bool]:
    """Decode one row into ``out`` (pre-filled with defaults); returns (null_count, missing)."""
    nulls = 0
    for j in range(width):
        raw = reply[j]
        if raw is None or (v := decode_value(raw)) is None:
            nulls += 1
        elif raw[0] == _FLOAT_TAG:
            out[j] = np.frombuffer(raw, dtype="<f4", count=1, offset=1)[0]  # bits, not a float round trip
        else:
            out[j] = v
    missing = reply[width] is None and nulls == width
    return nulls, missing


@dataclass(frozen=True, slots=True)
class BatchDecoder:
    """Decodes HMGET replies (``width`` feature fields then the ``_ts`` field, per entity).

    Nulls and absent fields take ``defaults`` (float32 ``[width]``) and are counted per row.
    For an all-Float32 view a null is swapped for its default's 5-byte encoding, so rows with
    nulls stay on the vectorised path.
    """

    width: int
    defaults: np.ndarray
    all_float32: bool = True
    cells: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        cells = tuple(bytes([_FLOAT_TAG]) + np.float32(d).astype("<f4").tobytes() for d in self.defaults)
        object.__setattr__(self, "cells", cells)

    def decode(self, replies: Sequence[Reply]) -> DecodedBatch:
        width = self.width
        n = len(replies)
        timestamps = [r[width] for r in replies]
        if self.all_float32 and n:
            flat = replies[0][:width] if n == 1 else list(chain.from_iterable([r[:width] for r in replies]))
            values = _fast_float32(flat, n, width)
            if values is not None:  # the common case: every value stored
                return DecodedBatch(values, [0] * n, [False] * n, timestamps)
            # Nulls (b"") and absent fields (None) take their default's encoding: one pass finds them.
            flat = list(flat)
            null_counts = [0] * n
            cells = self.cells
            for i in compress(range(len(flat)), map(not_, flat)):
                flat[i] = cells[i % width]
                null_counts[i // width] += 1
            missing = [c == width and t is None for c, t in zip(null_counts, timestamps)]
            values = _fast_float32(flat, n, width)
            if values is not None:
                return DecodedBatch(values, null_counts, missing, timestamps)
        values = np.empty((n, width), dtype=np.float32)
        values[:] = self.defaults
        null_counts = []
        missing = []
        for i, reply in enumerate(replies):
            if len(reply) != width + 1:
                raise DecodeError(f"HMGET reply has {len(reply)} fields, expected {width + 1}")
            nc, miss = _slow_row(reply, width, values[i])
            null_counts.append(nc)
            missing.append(miss)
        return DecodedBatch(values, null_counts, missing, timestamps)


def decode_batch(
    replies: Sequence[Reply], width: int, defaults: np.ndarray, all_float32: bool = True
) -> DecodedBatch:
    """One-off ``BatchDecoder(width, defaults, all_float32).decode(replies)``."""
    return BatchDecoder(width, np.asarray(defaults, dtype=np.float32), all_float32).decode(replies)
