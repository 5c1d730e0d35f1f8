"""Feast's Redis layout for one feature view, computed once at start-up.

Key: ``u32 n_join_keys``, per join key (sorted by name) ``u32 2, u32 len, name``, then per value
``u32 value_type, u32 len, bytes``, then the project name. Fields: ``u32 LE mmh3("<view>:<feature>")``
per feature and ``_ts:<view>``. Everything but the entity values is fixed, so it is encoded here once;
``encode_key`` only packs the values. Pure: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Mapping

import mmh3

from features.errors import BadEntity, UnsupportedLayout
from features.spec import JoinKey, ViewSpec

__all__ = ["RedisLayout", "feature_field", "value_packer"]

# feast.types.Value.ValueType numbers used in the key encoding.
_STRING, _INT32, _INT64 = 2, 3, 4
_INT64_HEAD = struct.Struct("<IIq")
_INT32_HEAD = struct.Struct("<IIi")
_U32X2 = struct.Struct("<II")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def feature_field(view: str, feature: str) -> bytes:
    """The hash field Feast uses for ``<view>:<feature>``: murmur3 (seed 0, unsigned) as u32 LE."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", 0, signed=False))


def _int_packer(name: str, head: struct.Struct, value_type: int, size: int, lo: int, hi: int,
                label: str) -> Callable[[object], bytes]:
    pack = head.pack

    def pack_int(v: object) -> bytes:
        if type(v) is not int:
            raise BadEntity(name, f"expected an integer, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise BadEntity(name, f"out of the {label} range")
        return pack(value_type, size, v)

    return pack_int


def value_packer(key: JoinKey) -> Callable[[object], bytes]:
    name = key.name
    if key.value_type == _INT64:
        return _int_packer(name, _INT64_HEAD, _INT64, 8, _INT64_MIN, _INT64_MAX, "INT64")
    if key.value_type == _INT32:
        return _int_packer(name, _INT32_HEAD, _INT32, 4, _INT32_MIN, _INT32_MAX, "INT32")
    if key.value_type == _STRING:
        head = _U32X2.pack

        def pack_string(v: object) -> bytes:
            if type(v) is not str:
                raise BadEntity(name, f"expected a string, got {type(v).__name__}")
            raw = v.encode("utf-8")
            return head(_STRING, len(raw)) + raw

        return pack_string
    raise UnsupportedLayout(
        f"join key {name!r} has value type {key.value_type}; the fast reader encodes "
        "INT64, INT32 and STRING join keys only"
    )


@dataclass(frozen=True, slots=True)
class RedisLayout:
    """Pre-encoded key prefix/suffix, value packers and hash fields for one feature view."""

    key_prefix: bytes
    key_suffix: bytes
    join_keys: tuple[str, ...]          # sorted by name, as Feast serialises them
    packers: tuple[Callable[[object], bytes], ...]
    fields: tuple[bytes, ...]           # one per feature, then the _ts field last
    hmget_head: bytes                   # RESP array header and the HMGET verb
    hmget_tail: bytes                   # the RESP-encoded field names, identical for every key

    @classmethod
    def from_spec(cls, spec: ViewSpec) -> "RedisLayout":
        spec.check_fast_path()
        keys = sorted(spec.join_keys, key=lambda k: k.name)
        prefix = [struct.pack("<I", len(keys))]
        for k in keys:
            raw = k.name.encode("utf-8")
            prefix.append(_U32X2.pack(_STRING, len(raw)) + raw)
        fields = tuple(feature_field(spec.view, f.name) for f in spec.features)
        fields += (f"_ts:{spec.view}".encode("utf-8"),)
        return cls(
            key_prefix=b"".join(prefix),
            key_suffix=spec.project.encode("utf-8"),
            join_keys=tuple(k.name for k in keys),
            packers=tuple(value_packer(k) for k in keys),
            fields=fields,
            hmget_head=b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2),
            hmget_tail=b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields),
        )

    def encode_key(self, entity: Mapping[str, object]) -> bytes:
        """The Redis key of ``entity``; raises BadEntity naming a missing or mistyped join key.

        Fields of ``entity`` that are not join keys are ignored.
        """
        packers = self.packers
        if len(packers) == 1:  # one join key, the common layout: no list, no loop
            return b"".join((self.key_prefix, packers[0](join_key_value(entity, self.join_keys[0])),
                             self.key_suffix))
        parts = [self.key_prefix]
        for name, pack in zip(self.join_keys, packers):
            parts.append(pack(join_key_value(entity, name)))
        parts.append(self.key_suffix)
        return b"".join(parts)

    def hmget_commands(self, keys: list[bytes]) -> bytes:
        """One RESP payload with an ``HMGET key <fields>`` per key, for a single write."""
        head, tail = self.hmget_head, self.hmget_tail
        return b"".join([b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, tail) for k in keys])

    def __repr__(self) -> str:
        return f"<RedisLayout keys={self.join_keys} fields={len(self.fields) - 1}+ts>"


def join_key_value(entity: Mapping[str, object], name: str) -> object:
    """``entity[name]``, or BadEntity naming the join key when it is missing or ``entity``
    is not a mapping."""
    try:
        return entity[name]
    except KeyError:
        raise BadEntity(name, "missing join key") from None
    except TypeError:
        raise BadEntity(name, "entity must be a mapping of join key to value") from None
