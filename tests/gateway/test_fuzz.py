"""Schemathesis against a running gateway, driven by the gateway's own OpenAPI document.

The schema is built at import from `openapi_document()` (not fetched: the gateway is a
subprocess started by a fixture, and `schemathesis.pytest.from_fixture` crashes under
pytest 9.2), and every generated case is sent to the live gateway with
`case.call(base_url=...)`. Checks: no 5xx (but a 503 deadline_exceeded for a fuzzed deadline
under 50 ms), status codes and
content types as documented, bodies and headers match their schemas. Positive and negative
(schema-violating) data; `FUZZ_EXAMPLES` per operation (100; 500 with RUN_SLOW=1).
The gateway runs with an admin token so the admin routes are exercised past the 401.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from gateway.openapi import openapi_document
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer

SLOW = os.environ.get("RUN_SLOW") == "1"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500" if SLOW else "100"))
TOKEN = "fuzz-admin-token"
SHORT_DEADLINE_MS = 50


def no_server_error(ctx, response, case) -> None:
    """`not_a_server_error`, except the documented 503 deadline_exceeded for a deadline the
    case itself made too short to meet (`x-request-timeout-ms` is fuzzed down to 1 ms)."""
    if response.status_code == 503:
        raw = (case.headers or {}).get("x-request-timeout-ms")
        try:
            short = raw is not None and int(raw) < SHORT_DEADLINE_MS
        except (TypeError, ValueError):
            short = False
        try:
            code = response.json().get("error")
        except Exception:
            code = None
        if short and code == "deadline_exceeded":
            return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_dict(copy.deepcopy(openapi_document()))
# Security parameters are ours to send (a valid token), not generated: otherwise nearly every
# admin case stops at the 401.
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=EXAMPLES, with_security_parameters=False)
CASES: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()


def _gateway(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory, tag: str) -> GatewayProcess:
    """A features-off gateway with its own Redis key prefix and the fuzz admin token."""
    log = tmp_path_factory.mktemp(f"gw-{tag}") / "gateway.log"
    env = {"INFERGATE_REDIS_KEY_PREFIX": f"{tag}-{uuid.uuid4().hex[:8]}:",
           "INFERGATE_ADMIN_TOKENS": f"fuzz:{TOKEN}"}
    return GatewayProcess(triton.grpc_url, args=["--features", "off"], env=env, log_path=Path(log))


@pytest.fixture(scope="module")
def fuzz_gateway(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with _gateway(triton, tmp_path_factory, "fuzz") as gw:
        yield gw
        assert gw.process is not None and gw.process.poll() is None, "the gateway died while fuzzed"
    print(f"\n[fuzz] {sum(CASES.values())} cases: {dict(CASES)}; statuses {dict(sorted(STATUSES.items()))}")


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_gateway_conforms_to_its_openapi_document(case, fuzz_gateway: GatewayProcess,
                                                  http: requests.Session) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"} if case.path.startswith("/admin") else None
    response = case.call(base_url=fuzz_gateway.url, session=http, headers=headers, timeout=10)
    CASES[case.operation.label] += 1
    STATUSES[str(response.status_code)] += 1
    if case.path.startswith("/admin"):
        STATUSES[f"admin {response.status_code}"] += 1
    case.validate_response(response, checks=CHECKS)


# -- bugs the fuzzing led to (fixed; kept as regression tests) ------------------------------

@pytest.fixture
def fresh_gateway(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway of the test's own (these tests leave experiments behind)."""
    with _gateway(triton, tmp_path_factory, "fuzzbug") as gw:
        yield gw


def _experiment(model: str, target_model: str, version: str = "1") -> dict:
    return {"model": model, "salt": "s", "variants": [
        {"name": "a", "weight": 100, "target": {"model": target_model, "version": version}}]}


def test_an_experiment_with_an_unknown_target_does_not_block_later_ones(fresh_gateway: GatewayProcess) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    with requests.Session() as s:
        url = fresh_gateway.url
        bad = s.put(f"{url}/admin/experiments/ghost", json=_experiment("ghost", "no-such-model"),
                    headers=auth, timeout=10)
        good = s.put(f"{url}/admin/experiments/second", json=_experiment("clf-second", "clf"),
                     headers=auth, timeout=10)
        assert good.status_code == 200, good.text
        r = s.post(f"{url}/v1/infer", json={"model": "clf-second", "unit_id": "u", "inputs": [0.0] * 20},
                   timeout=10)
        # Either the bad PUT is refused (4xx), or at least it must not poison later changes.
        assert r.status_code == 200, f"bad PUT answered {bad.status_code}; infer: {r.status_code} {r.text}"
        assert 400 <= bad.status_code < 500, f"a config routing to an unknown model was accepted: {bad.text}"


def test_other_methods_on_infer_paths_get_405(fuzz_gateway: GatewayProcess) -> None:
    with requests.Session() as s:
        for path in ("/v1/infer", "/v2/models/clf/infer"):
            r = s.get(f"{fuzz_gateway.url}{path}", timeout=10)
            assert r.status_code == 405, f"GET {path}: {r.status_code} {r.text}"
            assert "POST" in r.headers.get("allow", "")
            assert r.json()["error"] == "method_not_allowed"


# -- the document itself --------------------------------------------------------------------

def test_served_document_is_the_module_document(fuzz_gateway: GatewayProcess) -> None:
    r = requests.get(f"{fuzz_gateway.url}/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == openapi_document()


def test_every_route_is_documented_with_its_methods() -> None:
    from starlette.routing import Route

    from gateway.app import Gateway
    from gateway.config import GatewayConfig

    app = Gateway(GatewayConfig()).app
    served = {("/v1/infer", "post"), ("/v2/models/{model}/infer", "post")}  # the raw ASGI fast paths
    for route in app.routes:
        assert isinstance(route, Route)
        served |= {(route.path, m.lower()) for m in (route.methods or ()) if m != "HEAD"}
    documented = {(path, m) for path, ops in openapi_document()["paths"].items() for m in ops}
    assert served == documented
    for path, ops in openapi_document()["paths"].items():
        for method, op in ops.items():
            assert "405" in op["responses"] and any(c.startswith("2") for c in op["responses"]), (path, method)
            if path.startswith("/admin"):
                assert {"401", "503"} <= set(op["responses"]), (path, method)
            if path.endswith("infer"):
                assert {"400", "404", "413", "415", "429", "503"} <= set(op["responses"]), (path, method)
