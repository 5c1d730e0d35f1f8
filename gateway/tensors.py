"""KServe v2 tensors: datatypes, shapes, and the JSON and binary forms of their data.

One table (`DTYPES`) maps every KServe v2 datatype to numpy; the codecs read and write
tensors only through the functions here, so a datatype is handled in one place. BYTES
tensors are numpy object arrays of `bytes`; their binary form is Triton's: each element
a 4-byte little-endian length, then its bytes. In JSON a BYTES element is a string.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from math import prod

import numpy as np

from gateway.errors import InvalidField

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
FLOATS = frozenset({"FP16", "FP32", "FP64"})
_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model. `dims` excludes the batch dimension of a batchable
    model (as in Triton's config); -1 marks a variable dimension."""

    name: str
    datatype: str
    dims: tuple[int, ...]

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.datatype]

    @property
    def variable(self) -> bool:
        return any(d < 0 for d in self.dims)

    def shape(self, batchable: bool) -> list[int]:
        """The shape as Triton's model metadata shows it."""
        return [-1, *self.dims] if batchable else list(self.dims)


def check_shape(where: str, shape: object, dims: tuple[int, ...], batchable: bool, max_rows: int) -> tuple[int, ...]:
    """A request's shape against the model's: returns it as a tuple of ints."""
    want = ([-1] if batchable else []) + list(dims)
    if (not isinstance(shape, list) or len(shape) != len(want)
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise InvalidField(f"{where}.shape", f"expected {_fmt(want, batchable, max_rows)}, got {shape!r}")
    for i, (got, exp) in enumerate(zip(shape, want)):
        if batchable and i == 0:
            if not 1 <= got <= max_rows:
                raise InvalidField(f"{where}.shape", f"batch dimension must be 1 to {max_rows}, got {got}")
        elif exp >= 0 and got != exp:
            raise InvalidField(f"{where}.shape", f"expected {_fmt(want, batchable, max_rows)}, got {shape!r}")
    return tuple(shape)


def _fmt(want: list[int], batchable: bool, max_rows: int) -> str:
    dims = ["n" if batchable and i == 0 else ("any" if d < 0 else str(d)) for i, d in enumerate(want)]
    return f"[{', '.join(dims)}]" + (f" with 1 <= n <= {max_rows}" if batchable else "")


def from_json(where: str, datatype: str, data: object, shape: tuple[int, ...]) -> np.ndarray:
    """JSON data (flat or nested lists, row-major) of `shape` as an array of `datatype`."""
    if not isinstance(data, list):
        raise InvalidField(f"{where}.data", "required: a list of values (or binary_data_size)")
    count = prod(shape)
    if datatype == "BYTES":
        flat = _flatten(data, where)
        if len(flat) != count:
            raise InvalidField(f"{where}.data", f"expected {count} strings for shape {list(shape)}, got {len(flat)}")
        out = np.empty(count, dtype=object)
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise InvalidField(f"{where}.data", "BYTES elements must be strings")
            try:
                out[i] = v.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidField(f"{where}.data", "BYTES strings must be valid UTF-8") from None
        return out.reshape(shape)
    try:
        raw = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidField(f"{where}.data", f"must be a flat or nested list of {datatype} values") from None
    if raw.size != count:
        raise InvalidField(f"{where}.data", f"expected {count} values for shape {list(shape)}, got {raw.size}")
    kind = raw.dtype.kind
    target = DTYPES[datatype]
    if datatype == "BOOL":
        if kind != "b" and raw.size:
            raise InvalidField(f"{where}.data", "BOOL values must be true or false")
        return raw.astype(target).reshape(shape)
    if datatype in FLOATS:
        if kind not in "iuf" and raw.size:
            raise InvalidField(f"{where}.data", f"{datatype} values must be numbers")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = raw.astype(target)
        if not np.isfinite(arr).all():
            raise InvalidField(f"{where}.data", f"values must be finite and within {datatype} range")
        return arr.reshape(shape)
    if kind not in "iu" and raw.size:
        # Past int64 (UINT64 values >= 2**63) numpy gives floats or objects: keep Python ints.
        flat = _flatten(data, where)
        if not all(type(v) is int for v in flat):
            raise InvalidField(f"{where}.data", f"{datatype} values must be integers")
        raw, kind = np.array(flat, dtype=object), "O"
    if raw.size:
        info = np.iinfo(target)
        lo, hi = int(raw.min()), int(raw.max())
        if lo < info.min or hi > info.max:
            raise InvalidField(f"{where}.data", f"values must be within {datatype} range [{info.min}, {info.max}]")
    if kind == "O":
        return np.array(raw.tolist(), dtype=target).reshape(shape)
    return raw.astype(target).reshape(shape)


def _flatten(data: list, where: str) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                if len(stack) > 32:
                    raise InvalidField(f"{where}.data", "nested too deeply")
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def from_binary(where: str, datatype: str, raw: memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Raw tensor bytes (Triton's binary tensor extension) as an array of `shape`."""
    count = prod(shape)
    if datatype == "BYTES":
        return parse_bytes(where, raw, count).reshape(shape)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidField(f"{where}", f"{datatype} {list(shape)} takes {count * dtype.itemsize} bytes, "
                           f"got {len(raw)}")
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and arr.size and arr.view(np.uint8).max() > 1:
        raise InvalidField(f"{where}", "BOOL bytes must be 0 or 1")
    return arr


def parse_bytes(where: str, raw: memoryview | bytes, count: int) -> np.ndarray:
    """Length-prefixed elements; every byte accounted for, no element past the end."""
    pos, end = 0, len(raw)
    if count * 4 > end:  # before allocating: every element takes at least its 4-byte length
        raise InvalidField(f"{where}", f"{count} BYTES elements need at least {count * 4} bytes, got {end}")
    out = np.empty(count, dtype=object)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidField(f"{where}", f"BYTES element {i}: length prefix runs past the data")
        (n,) = _LEN.unpack_from(raw, pos)
        pos += 4
        if pos + n > end:
            raise InvalidField(f"{where}", f"BYTES element {i}: length {n} runs past the data")
        out[i] = bytes(raw[pos:pos + n])
        pos += n
    if pos != end:
        raise InvalidField(f"{where}", f"{end - pos} bytes left after {count} BYTES elements")
    return out


def to_binary(arr: np.ndarray) -> bytes:
    """An array's raw form: row-major bytes, or length-prefixed elements for BYTES."""
    if arr.dtype.kind != "O":
        return arr.tobytes()
    parts = []
    for v in arr.ravel():
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def to_json(arr: np.ndarray) -> object:
    """An array's JSON data (flat, row-major): numpy for orjson, strings for BYTES."""
    if arr.dtype.kind != "O":
        return arr.ravel()
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel()]


def to_nested_json(arr: np.ndarray) -> object:
    """An array as nested lists (the v1 protocol's answer)."""
    if arr.dtype.kind != "O":
        return arr
    return np.vectorize(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
                        otypes=[object])(arr).tolist() if arr.ndim else to_json(arr)[0]
