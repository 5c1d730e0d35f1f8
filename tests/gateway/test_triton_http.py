"""Inference calls over Triton's HTTP port (`--triton-http-url`, gateway/triton_http.py).

Against a real Triton: every test model byte-identical to Triton-direct through the gateway
(the any-model suite's checks, on a gateway whose calls go over HTTP), the model's own
refusals, unknown versions, and the replica pool's failover. With small fake servers, what
a real Triton does not do on demand: a black hole (the deadline), a connection dropped
mid-answer, bytes nobody asked for.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Iterator

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.backend import translate
from gateway.errors import DeadlineExceeded, ModelUnavailable, TritonRefused
from gateway.pool import ReplicaPool
from gateway.triton_http import HTTPInfer, HTTPTemplate
from runtime.stack import GatewayProcess
from runtime.triton import TritonRuntime, TritonServer, free_port
from tests.gateway import test_anymodel as anymodel

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def http_stack(triton_runtime: TritonRuntime, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[TritonServer, GatewayProcess]]:
    with anymodel.serve_test_models(triton_runtime, tmp_path_factory.mktemp("httprepo"), infer_http=True) as served:
        yield served


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", sorted(anymodel.MODELS))
def test_every_model_byte_identical_over_http(http_stack: tuple[TritonServer, GatewayProcess], model: str,
                                              binary: bool) -> None:
    anymodel.test_byte_identical_to_triton_direct(http_stack, model, binary)


def test_refusals_and_variable_lengths_over_http(http_stack: tuple[TritonServer, GatewayProcess]) -> None:
    anymodel.test_triton_refusals_are_400_in_the_same_shape_and_blame_only_the_refused_request(http_stack)
    anymodel.test_variable_lengths_batch_only_with_their_shape(http_stack)
    anymodel.test_outputs_selection_and_mixed_binary(http_stack)


async def _pool(triton: TritonServer, http_urls: list[str]) -> ReplicaPool:
    return ReplicaPool([triton.grpc_url] * len(http_urls), CollectorRegistry(), http_urls=http_urls,
                       health_interval_s=60)


async def test_pool_answers_like_grpc_and_translates_triton_errors(triton: TritonServer) -> None:
    grpc_pool = ReplicaPool([triton.grpc_url], CollectorRegistry())
    http_pool = await _pool(triton, [triton.http_url])
    try:
        spec = await grpc_pool.model_spec("clf")
        x = {spec.inputs[0].name: np.random.default_rng(3).random((5, spec.inputs[0].dims[0]), dtype=np.float32)}
        for version in ("1", "2"):
            want = await grpc_pool.make_infer(spec, version)(x, 2.0)
            got = await http_pool.make_infer(spec, version)(x, 2.0)
            assert want.keys() == got.keys()
            for k in want:
                assert want[k].dtype == got[k].dtype and want[k].tobytes() == got[k].tobytes()
        # A version Triton has not loaded: unavailable (503), and counted against the replica,
        # as over gRPC.
        for pool in (grpc_pool, http_pool):
            with pytest.raises(ModelUnavailable):
                await pool.make_infer(spec, "9")(x, 2.0)
        assert http_pool.replicas[0].failures == grpc_pool.replicas[0].failures == 1
        # A batch Triton refuses (wrong width): the request's fault (400), not the replica's.
        bad = {spec.inputs[0].name: np.zeros((2, spec.inputs[0].dims[0] + 1), np.float32)}
        for pool in (grpc_pool, http_pool):
            with pytest.raises(TritonRefused):
                await pool.make_infer(spec, "1")(bad, 2.0)
        assert http_pool.replicas[0].failures == grpc_pool.replicas[0].failures == 1
    finally:
        await grpc_pool.close()
        await http_pool.close()


async def test_a_dead_replica_fails_over_to_the_other(triton: TritonServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    pool = await _pool(triton, [dead, triton.http_url])
    try:
        spec = await pool.model_spec("clf")
        infer = pool.make_infer(spec, "1")
        x = {spec.inputs[0].name: np.ones((1, spec.inputs[0].dims[0]), np.float32)}
        for _ in range(6):
            out = await infer(x, 2.0)
            assert next(iter(out.values())).shape[0] == 1
        assert pool._retries._value.get() >= 1   # noqa: SLF001 - the retry counter
        assert pool.replicas[0].ejections >= 1   # three failures in a row eject it
    finally:
        await pool.close()


class _Fake:
    """A TCP server on a free port whose behaviour per connection is `handler`."""

    def __init__(self, handler):  # type: ignore[no-untyped-def]
        self.handler, self.server, self.port = handler, None, 0

    async def __aenter__(self) -> "_Fake":
        self.server = await asyncio.start_server(self.handler, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def _payload() -> bytes:
    from gateway.tensors import TensorSpec
    t = HTTPTemplate("m", "1", (TensorSpec("X", "FP32", (2,)),), (TensorSpec("Y", "FP32", (2,)),))
    return t.build({"X": np.zeros((1, 2), np.float32)})


async def test_a_black_hole_ends_at_the_deadline_and_its_connection_is_dropped() -> None:
    conns = []

    async def hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        await reader.read(1 << 16)
        await asyncio.sleep(30)

    async with _Fake(hole) as fake:
        client = HTTPInfer(f"127.0.0.1:{fake.port}")
        t0 = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.infer(_payload(), 0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.19 <= time.perf_counter() - t0 < 0.5
        assert isinstance(translate(err.value, "m:1"), DeadlineExceeded)
        assert client._idle == []   # noqa: SLF001 - a late answer must not reach the next call


async def test_a_dropped_or_garbled_answer_is_unavailable_and_the_next_call_reconnects() -> None:
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"partial\"",            # then closed
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}EXTRA",                  # bytes nobody asked for
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",                 # not Triton's way
               b"HTTP/1.1 400 Bad Request\r\nContent-Length: 27\r\n\r\n{\"error\":\"X must be small\"}"]
    served = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        served.append(1)
        writer.write(answers[len(served) - 1])
        await writer.drain()
        if len(served) == 1:
            writer.close()
            return
        await asyncio.sleep(5)

    async with _Fake(serve) as fake:
        client = HTTPInfer(f"127.0.0.1:{fake.port}")
        codes = []
        for _ in answers:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.infer(_payload(), 1.0)
            codes.append((err.value.code(), err.value.details()))
        assert [c for c, _ in codes[:3]] == [grpc.StatusCode.UNAVAILABLE] * 3
        assert codes[3] == (grpc.StatusCode.INVALID_ARGUMENT, "HTTP 400: X must be small")
        assert isinstance(translate(err.value, "m:1"), TritonRefused)
        assert len(served) == 4   # each failure above cost its connection; the 400 kept its own
        assert len(client._idle) == 1   # noqa: SLF001
        await client.close()


async def test_no_listener_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # bound, never listening: connections are refused
        client = HTTPInfer(f"127.0.0.1:{port}")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.infer(_payload(), 1.0)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "cannot connect" in err.value.details()
    assert isinstance(translate(err.value, "m:1"), ModelUnavailable)


def test_addresses_are_checked() -> None:
    with pytest.raises(ValueError, match="host:port"):
        HTTPInfer("grpc://127.0.0.1:8000")
    with pytest.raises(ValueError, match="one Triton HTTP address per gRPC address"):
        ReplicaPool(["a:1", "b:2"], CollectorRegistry(), http_urls=["a:3"])


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    served = []

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()   # no keep-alive

    async with _Fake(once) as fake:
        client = HTTPInfer(f"127.0.0.1:{fake.port}")
        for _ in range(3):
            assert await client.infer(_payload(), 1.0) == (2, b"{}")
            await asyncio.sleep(0.05)   # the close reaches the idle connection
        assert len(served) == 3
        await client.close()


async def test_a_reused_connection_closed_before_answering_is_retried_once_on_a_new_one() -> None:
    conns = []
    ok = b"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        first = len(conns) == 1
        await reader.read(1 << 16)
        writer.write(ok)
        await writer.drain()
        await reader.read(1 << 16)
        if first:          # the second call on the first connection: closed unanswered
            writer.close()
            return
        writer.write(ok)
        await writer.drain()
        await asyncio.sleep(1)

    async with _Fake(serve) as fake:
        client = HTTPInfer(f"127.0.0.1:{fake.port}")
        assert await client.infer(_payload(), 1.0) == (2, b"{}")
        assert await client.infer(_payload(), 1.0) == (2, b"{}")   # retried on a new connection
        assert len(conns) == 2
        await client.close()
