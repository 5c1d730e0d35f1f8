"""Property tests of the request parsers: `V1Codec.parse`, `V2Codec.parse`, `decompress`.

Whatever bytes arrive, the only exceptions allowed out are the gateway's own errors with a
4xx status (anything else would become a 500); valid bodies parse to exactly the tensor
that was sent, and v2 answers render to what the official client decodes.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from typing import Any, Callable

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.backend import ModelSpec
from gateway.codec_v1 import V1Codec
from gateway.codec_v2 import V2Codec, decompress
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.request import FeatureJoin, InferRequest, InferResult, PublicModel
from gateway.tensors import DTYPES, TensorSpec, to_binary

EXAMPLES = 1000 if os.environ.get("RUN_SLOW") == "1" else 150
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The any-model bodies are ~6x larger to draw: fewer examples keep the file under a minute.
ANY_SETTINGS = settings(SETTINGS, max_examples=max(EXAMPLES // 3, 30), suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
WIDTH, REQ_WIDTH, MAX_ROWS, LIMIT = 20, 4, 8, 4096
SPEC = ModelSpec("clf", ("1", "2"), (TensorSpec("INPUT", "FP32", (WIDTH,)),), (TensorSpec("PROBS", "FP32", (4,)),), 256)
JOIN = FeatureJoin("INPUT", "concat", WIDTH - REQ_WIDTH, np.dtype(np.float32))
OFF = PublicModel("clf", SPEC, None, (), MAX_ROWS)                   # features off
ON = PublicModel("clf", SPEC, JOIN, ("user_id",), MAX_ROWS)          # features on


def v1_codecs() -> list[V1Codec]:
    return [V1Codec({"clf": OFF}), V1Codec({"clf": ON})]


def v2_codecs() -> list[V2Codec]:
    return [V2Codec(OFF), V2Codec(ON)]


def only_client_errors(fn: Callable[[], Any]) -> Any:
    """Run `fn`; a GatewayError must be a 4xx; any other exception fails the property."""
    try:
        return fn()
    except GatewayError as exc:
        assert 400 <= exc.status < 500, f"{type(exc).__name__} has status {exc.status}: {exc}"
        assert exc.body() and orjson.loads(exc.body())["error"] == exc.code
        return None


# -- strategies ---------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=30)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
KEYS_V1 = ["model", "unit_id", "entity", "inputs", "timings"]
KEYS_V2 = ["id", "parameters", "inputs", "outputs", "name", "datatype", "shape", "data", "unit_id",
           "user_id", "binary_data_size", "binary_data", "binary_data_output"]


def dumps(doc: Any) -> bytes:
    """JSON as a client might send it: big ints, NaN and Infinity included (orjson refuses them)."""
    return json.dumps(doc).encode()


@st.composite
def valid_v1(draw: st.DrawFn, with_entity: bool = False) -> tuple[dict, np.ndarray]:
    width = REQ_WIDTH if with_entity else WIDTH
    values = draw(st.lists(f32, min_size=width, max_size=width))
    doc: dict[str, Any] = {"model": "clf",
                           "unit_id": draw(st.text(min_size=1, max_size=256) | st.integers(-2**63, 2**63 - 1)),
                           "inputs": values}
    if with_entity:
        doc["entity"] = {"user_id": draw(st.integers(0, 10**6))}
    if draw(st.booleans()):
        doc["timings"] = draw(st.booleans())
    return doc, np.array([values], dtype=np.float32)


@st.composite
def valid_v2(draw: st.DrawFn, with_entity: bool = False) -> tuple[dict, np.ndarray, bytes | None]:
    """(header document, expected rows, binary section or None for JSON data)."""
    width = REQ_WIDTH if with_entity else WIDTH
    n = draw(st.integers(1, MAX_ROWS))
    rows = np.array(draw(st.lists(f32, min_size=n * width, max_size=n * width)), dtype=np.float32).reshape(n, width)
    tensor: dict[str, Any] = {"name": "INPUT", "datatype": "FP32", "shape": [n, width]}
    binary = None
    if draw(st.booleans()):
        binary = rows.tobytes()
        tensor["parameters"] = {"binary_data_size": len(binary)}
    else:
        tensor["data"] = rows.tolist() if draw(st.booleans()) else rows.ravel().tolist()
    params: dict[str, Any] = {"unit_id": draw(st.text(min_size=1, max_size=40) | st.integers(0, 10**9))}
    if with_entity:
        params["user_id"] = draw(st.integers(0, 10**6))
    doc: dict[str, Any] = {"inputs": [tensor], "parameters": params}
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=20))
    if draw(st.booleans()):
        doc["outputs"] = [{"name": "PROBS", "parameters": {"binary_data": draw(st.booleans())}}]
    return doc, rows, binary


@st.composite
def mutated(draw: st.DrawFn, doc: Any, keys: list[str]) -> Any:
    """`doc` with a few random edits anywhere in its tree: delete, replace, insert, retype."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        # Walk to a random container.
        node = doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            child = node[draw(st.sampled_from(sorted(node)))] if isinstance(node, dict) else \
                node[draw(st.integers(0, len(node) - 1))]
            if not isinstance(child, (dict, list)):
                break
            node = child
        op = draw(st.sampled_from(["delete", "replace", "insert", "number"]))
        if isinstance(node, dict):
            key = draw(st.sampled_from(sorted(node) or keys) | st.sampled_from(keys))
            if op == "delete":
                node.pop(key, None)
            elif op == "number":
                node[key] = draw(st.integers() | st.floats() | st.booleans())
            else:
                node[key] = draw(json_values)
        elif isinstance(node, list):
            if op == "delete" and node:
                node.pop(draw(st.integers(0, len(node) - 1)))
            elif op == "number" and node:
                node[draw(st.integers(0, len(node) - 1))] = draw(st.integers() | st.floats() | st.booleans())
            else:
                node.insert(draw(st.integers(0, len(node))), draw(json_values))
    return doc


# -- v1 -------------------------------------------------------------------------------------

@SETTINGS
@given(body=st.binary(max_size=300))
@example(body=b"")
@example(body=b"[]")
@example(body=b"null")
@example(body=b"\xff\xfe")
def test_v1_arbitrary_bytes_only_client_errors(body: bytes) -> None:
    for codec in v1_codecs():
        only_client_errors(lambda: codec.parse(body))


@SETTINGS
@given(doc=json_values | st.dictionaries(st.sampled_from(KEYS_V1), json_values))
def test_v1_arbitrary_json_only_client_errors(doc: Any) -> None:
    for codec in v1_codecs():
        only_client_errors(lambda: codec.parse(dumps(doc)))


@SETTINGS
@given(data=st.data(), with_entity=st.booleans())
def test_v1_mutated_valid_bodies_only_client_errors(data: st.DataObject, with_entity: bool) -> None:
    doc, _ = data.draw(valid_v1(with_entity))
    body = dumps(data.draw(mutated(doc, KEYS_V1)))
    for codec in v1_codecs():
        only_client_errors(lambda: codec.parse(body))


@SETTINGS
@given(data=st.data(), with_entity=st.booleans())
def test_v1_valid_bodies_round_trip(data: st.DataObject, with_entity: bool) -> None:
    doc, rows = data.draw(valid_v1(with_entity))
    codec = v1_codecs()[1 if with_entity else 0]
    req = codec.parse(orjson.dumps(doc))
    assert req.model == "clf" and req.unit_id == str(doc["unit_id"])
    assert req.entity == doc.get("entity") and req.want_timings == doc.get("timings", False)
    assert req.rows.dtype == np.float32 and req.rows.shape == rows.shape
    np.testing.assert_array_equal(req.rows, rows)


# -- v2 -------------------------------------------------------------------------------------

def _v2_parse(codec: V2Codec, body: bytes, header_length: int | None, unit: str | None) -> Any:
    return only_client_errors(lambda: codec.parse("clf", body, header_length, unit))


@SETTINGS
@given(body=st.binary(max_size=300), header_length=st.none() | st.integers(-5, 400),
       unit=st.none() | st.text(max_size=5))
def test_v2_arbitrary_bytes_only_client_errors(body: bytes, header_length: int | None, unit: str | None) -> None:
    for codec in v2_codecs():
        _v2_parse(codec, body, header_length, unit)


@SETTINGS
@given(doc=json_values | st.dictionaries(st.sampled_from(KEYS_V2), json_values), unit=st.none() | st.just("u"))
def test_v2_arbitrary_json_only_client_errors(doc: Any, unit: str | None) -> None:
    for codec in v2_codecs():
        _v2_parse(codec, dumps(doc), None, unit)


@SETTINGS
@given(data=st.data(), with_entity=st.booleans(), unit=st.none() | st.just("u"))
def test_v2_mutated_valid_bodies_only_client_errors(data: st.DataObject, with_entity: bool,
                                                    unit: str | None) -> None:
    doc, _, binary = data.draw(valid_v2(with_entity))
    head = dumps(data.draw(mutated(doc, KEYS_V2)))
    if binary is not None:
        binary = data.draw(st.sampled_from([binary, binary[:-1], binary + b"\0", b""]))
        body, hl = head + binary, data.draw(st.sampled_from([len(head), len(head) - 1, len(head) + 1]))
    else:
        body, hl = head, None
    for codec in v2_codecs():
        _v2_parse(codec, body, hl, unit)


@SETTINGS
@given(data=st.data(), with_entity=st.booleans())
def test_v2_valid_bodies_round_trip(data: st.DataObject, with_entity: bool) -> None:
    doc, rows, binary = data.draw(valid_v2(with_entity))
    codec = v2_codecs()[1 if with_entity else 0]
    head = orjson.dumps(doc)
    req = codec.parse("clf", head + (binary or b""), len(head) if binary is not None else None, None)
    assert isinstance(req, InferRequest)
    np.testing.assert_array_equal(req.rows, rows)
    assert req.unit_id == str(doc["parameters"]["unit_id"]) and req.request_id == doc.get("id")
    assert req.entity == ({"user_id": doc["parameters"]["user_id"]} if with_entity else None)
    # Render an answer and decode it as the official client does.
    out = np.arange(rows.shape[0] * 4, dtype=np.float32).reshape(rows.shape[0], 4) / 7
    body, header_len = codec.render(req, InferResult("exp", "a", "1", {"PROBS": out}, None, None))
    if header_len is None:
        answer = orjson.loads(body)
        got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(answer["outputs"][0]["shape"])
    else:
        answer = orjson.loads(body[:header_len])
        got = np.frombuffer(body[header_len:], dtype=np.float32).reshape(answer["outputs"][0]["shape"])
    assert answer["model_name"] == "clf" and answer.get("id") == doc.get("id")
    np.testing.assert_array_equal(got, out)


# -- any model: several inputs, every datatype, variable dims ------------------------------

MULTI = ModelSpec("multi", ("1",), (
    TensorSpec("IDS", "INT64", (-1,)), TensorSpec("MASK", "BOOL", (-1,)), TensorSpec("TEXT", "BYTES", (2,)),
    TensorSpec("IMG", "FP16", (2, 3)), TensorSpec("U8", "UINT8", (3,)), TensorSpec("F64", "FP64", (1,))),
    (TensorSpec("OUT", "FP32", (2,)), TensorSpec("LABEL", "BYTES", (1,))), 8)
MULTI_CODEC = V2Codec(PublicModel("multi", MULTI, None, (), MAX_ROWS))
NOBATCH = ModelSpec("nb", ("1",), (TensorSpec("X", "INT32", (2, 3)),), (TensorSpec("Y", "INT32", (3, 2)),), 0)
NOBATCH_CODEC = V2Codec(PublicModel("nb", NOBATCH, None, (), 1))
KEYS_MULTI = KEYS_V2 + ["IDS", "MASK", "TEXT", "IMG", "U8", "F64", "OUT", "LABEL"]


def _array(draw: st.DrawFn, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    if datatype == "BYTES":
        vals = draw(st.lists(st.text(max_size=6), min_size=count, max_size=count))
        return np.array([v.encode() for v in vals], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)), dtype=bool).reshape(shape)
    dt = DTYPES[datatype]
    if dt.kind == "f":
        vals = draw(st.lists(st.floats(width=16 if datatype == "FP16" else 32, allow_nan=False, allow_infinity=False),
                             min_size=count, max_size=count))
    else:
        info = np.iinfo(dt)
        vals = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=count, max_size=count))
    return np.array(vals, dtype=dt).reshape(shape)


@st.composite
def valid_multi(draw: st.DrawFn, spec: ModelSpec = MULTI) -> tuple[dict, dict[str, np.ndarray], bytes]:
    """(header, expected arrays, binary section): each input drawn in JSON or binary, in a random order."""
    n = draw(st.integers(1, 2)) if spec.batchable else None
    seq = draw(st.integers(0, 3))
    arrays, tensors, binary = {}, [], b""
    for t in draw(st.permutations(spec.inputs)):
        dims = tuple(seq if d < 0 else d for d in t.dims)
        shape = (n, *dims) if n is not None else dims
        a = _array(draw, t.datatype, shape)
        arrays[t.name] = a
        tensor: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(shape)}
        if draw(st.booleans()):
            raw = to_binary(a)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary += raw
        elif t.datatype == "BYTES":
            tensor["data"] = [v.decode() for v in a.ravel()]
        else:
            tensor["data"] = a.ravel().tolist()
        tensors.append(tensor)
    doc: dict[str, Any] = {"inputs": tensors, "parameters": {"unit_id": "u"}}
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from([t.name for t in spec.outputs]), unique=True, min_size=1))
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": draw(st.booleans())}} for o in names]
    return doc, arrays, binary


@ANY_SETTINGS
@given(data=st.data(), spec=st.sampled_from([MULTI, NOBATCH]))
def test_any_model_valid_bodies_round_trip(data: st.DataObject, spec: ModelSpec) -> None:
    codec = MULTI_CODEC if spec is MULTI else NOBATCH_CODEC
    doc, arrays, binary = data.draw(valid_multi(spec))
    head = orjson.dumps(doc)
    req = codec.parse(spec.name, head + binary, len(head) if binary else None, None)
    assert list(req.inputs) == [t.name for t in spec.inputs]   # the model's order, whatever was sent
    for name, a in arrays.items():
        got = req.inputs[name]
        assert got.dtype == a.dtype and got.shape == a.shape
        assert to_binary(got) == to_binary(a)
    # Render every output and decode it as the official client does (JSON or binary per output).
    n = next(iter(arrays.values())).shape[0] if spec.batchable else None
    outs = {t.name: _array(data.draw, t.datatype, ((n,) if n else ()) + t.dims) for t in spec.outputs}
    body, hl = codec.render(req, InferResult("e", "a", "1", outs, None, None))
    answer = orjson.loads(body if hl is None else body[:hl])
    want = [o["name"] for o in doc["outputs"]] if "outputs" in doc else [t.name for t in spec.outputs]
    assert [o["name"] for o in answer["outputs"]] == want
    offset = hl or 0
    for o in answer["outputs"]:
        a = outs[o["name"]]
        assert o["shape"] == list(a.shape)
        if "data" in o:
            got = (np.array([v.encode() for v in o["data"]], dtype=object) if o["datatype"] == "BYTES"
                   else np.array(o["data"], dtype=a.dtype))
            assert to_binary(got.reshape(a.shape)) == to_binary(a)
        else:
            size = o["parameters"]["binary_data_size"]
            assert body[offset:offset + size] == to_binary(a)
            offset += size
    assert offset == (len(body) if hl is not None else 0)


@ANY_SETTINGS
@given(data=st.data())
def test_any_model_mutated_bodies_only_client_errors(data: st.DataObject) -> None:
    doc, _, binary = data.draw(valid_multi())
    head = dumps(data.draw(mutated(doc, KEYS_MULTI)))
    if binary:
        binary = data.draw(st.sampled_from([binary, binary[:-1], binary + b"\0", b"", binary[:4]]))
    hl = len(head) if binary else None
    _v2_parse_any(MULTI_CODEC, head + binary, hl)
    _v2_parse_any(NOBATCH_CODEC, head + binary, hl)


@ANY_SETTINGS
@given(body=st.binary(max_size=300), header_length=st.none() | st.integers(-5, 400))
def test_any_model_arbitrary_bytes_only_client_errors(body: bytes, header_length: int | None) -> None:
    _v2_parse_any(MULTI_CODEC, body, header_length)


@ANY_SETTINGS
@given(data=st.data())
def test_any_model_v1_named_inputs(data: st.DataObject) -> None:
    """The v1 form of one instance: named inputs without the batch dimension."""
    doc, arrays, _ = data.draw(valid_multi())
    one = {k: v[:1] for k, v in arrays.items()}
    inputs = {k: ([x.decode() for x in v[0].ravel()] if v.dtype == object else v[0].tolist()) for k, v in one.items()}
    codec = V1Codec({"multi": PublicModel("multi", MULTI, None, (), MAX_ROWS)})
    req = codec.parse(orjson.dumps({"model": "multi", "unit_id": "u", "inputs": inputs}))
    for k, v in one.items():
        assert to_binary(req.inputs[k]) == to_binary(v) and req.inputs[k].shape == v.shape
    mutated_doc = data.draw(mutated({"model": "multi", "unit_id": "u", "inputs": inputs}, KEYS_V1 + KEYS_MULTI))
    only_client_errors(lambda: codec.parse(dumps(mutated_doc)))


def _v2_parse_any(codec: V2Codec, body: bytes, header_length: int | None) -> Any:
    return only_client_errors(lambda: codec.parse("multi", body, header_length, "u"))


# -- decompress -----------------------------------------------------------------------------

ENCODINGS = st.sampled_from(["gzip", "deflate", "identity", ""]) | st.text(max_size=8)


@SETTINGS
@given(body=st.binary(max_size=500), encoding=ENCODINGS)
def test_decompress_arbitrary_bytes_only_client_errors(body: bytes, encoding: str) -> None:
    out = only_client_errors(lambda: decompress(body, encoding, LIMIT))
    assert out is None or len(out) <= max(LIMIT, len(body))


@SETTINGS
@given(payload=st.binary(max_size=2 * LIMIT), encoding=st.sampled_from(["gzip", "deflate"]),
       level=st.integers(0, 9))
def test_decompress_round_trips_and_bounds_size(payload: bytes, encoding: str, level: int) -> None:
    packed = gzip.compress(payload, level) if encoding == "gzip" else zlib.compress(payload, level)
    if len(payload) <= LIMIT:
        assert decompress(packed, encoding, LIMIT) == payload
    else:
        with pytest.raises(PayloadTooLarge):
            decompress(packed, encoding, LIMIT)


def test_decompress_refuses_a_bomb_quickly() -> None:
    bomb = gzip.compress(b"\0" * (16 << 20), 9)   # 16 MiB of zeros in ~16 KB
    with pytest.raises(PayloadTooLarge):
        decompress(bomb, "gzip", 1 << 20)


_PAYLOAD = b'{"model": "clf", "unit_id": "u", "inputs": [0.5]}'
_GZ, _ZL = gzip.compress(_PAYLOAD), zlib.compress(_PAYLOAD)


@pytest.mark.parametrize("encoding,body", [
    ("gzip", _GZ[:-8]),          # CRC32 and length trailer missing
    ("gzip", _GZ[:-4]),          # length missing
    ("deflate", _ZL[:-4]),       # Adler-32 missing
    ("gzip", _GZ + b"junk"),     # bytes after the stream
    ("deflate", _ZL + b"junk"),
], ids=["gzip-no-trailer", "gzip-no-length", "deflate-no-adler", "gzip-trailing", "deflate-trailing"])
def test_decompress_refuses_truncated_or_trailing_data(encoding: str, body: bytes) -> None:
    with pytest.raises(BadRequest):
        decompress(body, encoding, LIMIT)
