"""One `Authorization: Bearer` parser for the override header and the admin API (RFC 9110:
the scheme is case-insensitive)."""

from __future__ import annotations

import pytest

from httpcommon.auth import match_token, parse_bearer
from router.admin import authenticate

TOKENS = {"ops": b"s3cret-ops", "ci": b"s3cret-ci"}


@pytest.mark.parametrize("header", ["Bearer s3cret-ops", "bearer s3cret-ops", "BEARER s3cret-ops",
                                    "BeArEr   s3cret-ops ", "Bearer\ts3cret-ops", b"bearer s3cret-ops"])
def test_the_scheme_is_case_insensitive(header: str | bytes) -> None:
    assert parse_bearer(header) == b"s3cret-ops"
    assert match_token(header, TOKENS) == "ops"
    assert authenticate(header if isinstance(header, str) else header.decode(),
                        {k: v.decode() for k, v in TOKENS.items()}) == "ops"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic s3cret-ops", "s3cret-ops",
                                    "Bearers3cret-ops", "Bearer wrong", "Bearer s3cret-ops2"])
def test_anything_else_is_refused(header: str | None) -> None:
    assert match_token(header, TOKENS) is None
