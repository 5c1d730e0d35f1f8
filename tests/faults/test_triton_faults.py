"""Triton faults under load: latency, resets, refusal, a black hole and `kill -9`, injected
between the gateway and a real Triton (its gRPC port behind `FaultProxy`, and its HTTP port
behind another for the gateway whose inference calls go there: `--triton-http-url`).

The contract checked in every scenario: each request gets exactly one answer (200, or
429/503 with a JSON error body), none later than its deadline + slack, no 500, and the
gateway serves 200s again within 2 s of the fault being lifted, without a restart.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from faults.conftest import DEADLINE_MS, SLACK_S, SLOW, drive, record, start_gateway, v1_requests
from faults.load import contract_violations, summarize
from faults.proxy import FaultProxy
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer

RECOVERY_S = 2.0


@pytest.fixture(scope="module")
def triton_proxy(fault_triton: TritonServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", fault_triton.grpc_port), name="triton") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def http_proxy(fault_triton: TritonServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", fault_triton.http_port), name="triton-http") as proxy:
        yield proxy


@pytest.fixture(scope="module", params=["grpc", "http"], ids=["infer-grpc", "infer-http"])
def gw(request: pytest.FixtureRequest, triton_proxy: FaultProxy, http_proxy: FaultProxy,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    http = ["--triton-http-url", http_proxy.address] if request.param == "http" else []
    gateway = start_gateway([triton_proxy.address], tmp_path_factory.mktemp("gw-triton"),
                            args=["--features", "off", *http])
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def heal(triton_proxy: FaultProxy, http_proxy: FaultProxy) -> Iterator[None]:
    yield
    triton_proxy.pass_through()
    http_proxy.pass_through()


def check(name: str, gw: GatewayProcess, run, t_on: float, t_off: float, *,
          fault_bites: bool) -> dict:
    deadline = DEADLINE_MS / 1e3
    summary = summarize(run, deadline_s=deadline, t_on=t_on, t_off=t_off)
    record(f"triton/{name}", summary)
    bad = contract_violations(run, deadline_s=deadline, slack_s=SLACK_S)
    assert not bad, f"{len(bad)} violations, first: {bad[:8]}\n{summary}"
    assert gw.process is not None and gw.process.poll() is None, "the gateway died"
    rec = summary["recovery_s"]
    assert rec is not None and rec <= RECOVERY_S, f"no 200 within {RECOVERY_S}s of lifting: {summary}"
    late = [o for o in run.outcomes if o.t_start >= t_off + RECOVERY_S and o.status != 200]
    assert not late, f"{len(late)} non-200 answers {RECOVERY_S}s after lifting: {late[:5]}"
    if fault_bites:
        assert summary["during_fault"].get("503", 0) > 0, f"the fault never showed: {summary}"
    else:
        assert set(summary["during_fault"]) == {"200"}, summary
    return summary


SCENARIOS: dict[str, tuple[Callable[[FaultProxy], None], bool]] = {
    # 20 ms each way per chunk: slower, still inside the deadline.
    "latency_20ms": (lambda p: p.latency(0.02), False),
    # Each way slower than the whole deadline: every request must end at its deadline.
    "latency_600ms": (lambda p: p.latency(0.6), True),
    "reset": (lambda p: p.reset(), True),
    "blackhole": (lambda p: p.blackhole(), True),
    "refuse": (lambda p: p.refuse(), True),
}
FAST = ("latency_600ms", "reset", "blackhole")


@pytest.mark.parametrize("name", [n if n in FAST or SLOW else pytest.param(
    n, marks=pytest.mark.skip(reason="RUN_SLOW=1")) for n in SCENARIOS])
async def test_proxy_fault_under_load(name: str, gw: GatewayProcess, triton_proxy: FaultProxy,
                                      http_proxy: FaultProxy) -> None:
    """The fault is Triton's: on both of its ports at once."""
    fault, bites = SCENARIOS[name]

    def on() -> None:
        fault(triton_proxy)
        fault(http_proxy)

    def off() -> None:
        triton_proxy.pass_through()
        http_proxy.pass_through()

    run, t_on, t_off = await drive(gw, v1_requests(), on, off, warm_s=0.5, fault_s=1.2, after_s=2.5)
    check(name if "--triton-http-url" not in gw.args else f"{name}_infer_http", gw, run, t_on, t_off,
          fault_bites=bites)


async def test_kill_9_triton_then_restart_on_the_same_ports(gw: GatewayProcess,
                                                            fault_triton: TritonServer) -> None:
    ports = (fault_triton.http_port, fault_triton.grpc_port, fault_triton.metrics_port)

    def restart() -> None:
        fault_triton.stop()   # reaps the killed server, its stubs and shm files
        fault_triton.start()

    run, t_on, t_off = await drive(gw, v1_requests(), fault_triton.kill, restart,
                                   warm_s=0.5, fault_s=0.5, after_s=2.5)
    assert (fault_triton.http_port, fault_triton.grpc_port, fault_triton.metrics_port) == ports
    check("kill9_restart" if "--triton-http-url" not in gw.args else "kill9_restart_infer_http", gw, run,
          t_on, t_off, fault_bites=True)


async def test_two_replicas_one_blackholed_all_succeed(fault_triton: TritonServer, proxy_factory,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    a = proxy_factory(("127.0.0.1", fault_triton.grpc_port), "replica-a")
    b = proxy_factory(("127.0.0.1", fault_triton.grpc_port), "replica-b")
    gateway = start_gateway([a.address, b.address], tmp_path_factory.mktemp("gw-replicas"),
                            args=["--features", "off"])
    try:
        run, t_on, t_off = await drive(gateway, v1_requests(), a.blackhole, a.pass_through,
                                       warm_s=0.3, fault_s=1.5, after_s=0.5)
        summary = summarize(run, deadline_s=DEADLINE_MS / 1e3, t_on=t_on, t_off=t_off)
        record("triton/two_replicas_one_blackholed", summary)
        bad = contract_violations(run, deadline_s=DEADLINE_MS / 1e3, slack_s=SLACK_S,
                                  allowed=frozenset({200}))
        assert not bad, f"{len(bad)} violations, first: {bad[:8]}\n{summary}"
    finally:
        gateway.stop()
