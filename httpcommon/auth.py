"""The one `Authorization: Bearer` parser and token check (override header and admin API)."""

from __future__ import annotations

import hmac
from typing import Mapping

__all__ = ["parse_bearer", "match_token"]


def parse_bearer(header: str | bytes | None) -> bytes | None:
    """The credentials of an `Authorization: Bearer <token>` header, or None.

    The scheme is case-insensitive (RFC 9110 §11.1: `bearer`, `BEARER` and `Bearer` are one
    scheme) and is separated from the token by spaces or tabs; the token is returned without
    surrounding whitespace. Anything else (another scheme, no token) is None.
    """
    if not header:
        return None
    raw = header.encode("latin-1") if isinstance(header, str) else header
    parts = raw.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return None
    token = parts[1].strip()
    return token or None


def match_token(header: str | bytes | None, tokens: Mapping[str, bytes]) -> str | None:
    """The id of the token a Bearer header presents, or None.

    Compared with `hmac.compare_digest` against every configured token, whatever matched
    first, so the time taken does not say which token (or how much of one) was right.
    """
    presented = parse_bearer(header)
    if presented is None:
        return None
    found = None
    for token_id, token in tokens.items():
        if hmac.compare_digest(presented, token) and found is None:
            found = token_id
    return found
