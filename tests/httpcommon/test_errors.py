"""One list of codes, one renderer: the gateway's classes, the admin API's config errors, the
metrics' `reason` label, the OpenAPI document and the README's table all agree with
`httpcommon.errors.CODES`."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from gateway import errors as E
from gateway.metrics import ERROR_CODES
from gateway.openapi import openapi_document
from httpcommon.errors import CODES, DATA_PLANE, render, table

ROOT = Path(__file__).resolve().parents[2]
# ConfigError codes raised only while the process starts (a bad experiments file or token
# variable): never an HTTP answer, so not in the list.
START_UP_ONLY = {"unreadable", "unparsable", "invalid_tokens"}


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_gateway_error_takes_its_status_and_retry_after_from_the_list() -> None:
    for cls in {E.GatewayError} | _subclasses(E.GatewayError):
        known = CODES[cls.code]
        assert cls.status == known.status, cls
        assert bool(cls.retry_after) == (known.status in (429, 503)), cls


def test_every_code_the_admin_api_can_answer_is_in_the_list() -> None:
    raised: set[str] = set()
    for path in [*ROOT.glob("router/*.py"), ROOT / "gateway/components.py"]:
        src = path.read_text()
        raised |= set(re.findall(r'ConfigError\((?:[^()]|\([^()]*\))*?,\s*"([a-z_]+)",?\s*\)', src, re.S))
        raised |= set(re.findall(r'_error\((?:\d{3},\s*)?"([a-z_]+)"', src))
        raised |= set(re.findall(r'super\(\).__init__\(message, code="([a-z_]+)"\)', src))
    assert {"weights_sum", "model_conflict", "unknown_field", "payload_too_large", "store_unavailable"} <= raised
    assert raised - START_UP_ONLY <= set(CODES), sorted(raised - START_UP_ONLY - set(CODES))
    assert "invalid_config" in CODES  # ConfigError's default code


def test_the_renderer_is_the_only_shape_and_429_503_carry_retry_after() -> None:
    for code, c in CODES.items():
        status, body, headers = render(code, "x: y")
        assert status == c.status and orjson.loads(body) == {"error": code, "message": "x: y"}
        assert (dict(headers).get(b"retry-after") == b"1") == (c.status in (429, 503))


def test_metrics_openapi_and_readme_use_the_list() -> None:
    assert ERROR_CODES == DATA_PLANE and set(DATA_PLANE) <= set(CODES)
    assert {"overloaded", "internal", "deadline_exceeded"} <= set(ERROR_CODES)
    assert "store_unavailable" not in ERROR_CODES
    doc = openapi_document()
    assert doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"] == list(CODES)
    for name in ("Overloaded", "Unavailable", "StoreUnavailable"):
        assert "Retry-After" in doc["components"]["responses"][name]["headers"], name
    assert table() in (ROOT / "README.md").read_text(), "README's table of codes: paste httpcommon.errors.table()"
