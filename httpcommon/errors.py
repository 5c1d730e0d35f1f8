"""The one list of error codes infergate's HTTP APIs answer with, and the one renderer.

The data plane (`gateway/`) and the admin API (`router/admin.py`) both render their errors
here, so a code means the same status everywhere; the OpenAPI document's `Error.error` enum,
the metrics' `reason` label and the README's table of codes are built from (or checked
against) `CODES`. This package (`httpcommon`) imports nothing from `gateway/` or `router/`, so both can use
it without either depending on the other.

Every error is JSON `{"error": "<code>", "message": "<field>: <what>"}`; every 429 and 503
carries `Retry-After`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import orjson

__all__ = ["Code", "CODES", "DATA_PLANE", "RETRY_AFTER_S", "render", "response", "table"]

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Code:
    status: int
    meaning: str
    plane: str = "both"   # "data" (inference routes), "admin" (the admin API) or "both"

    @property
    def retry_after(self) -> bool:
        """429 and 503 tell the client when to come back."""
        return self.status in (429, 503)


# Ordered by status, then code: the README's table is written in this order.
CODES: Mapping[str, Code] = {
    # 400: the request is wrong; the message names the field.
    "bad_request": Code(400, "the request cannot be read (e.g. a body that does not decompress)"),
    "invalid_json": Code(400, "the body is not JSON"),
    "invalid_field": Code(400, "a field is missing or has the wrong type, shape or dtype "
                               "(`inputs`, `inputs[0].shape`, `entity.user_id`, a header, ...)", "data"),
    "invalid_limit": Code(400, "`limit` is not an integer", "admin"),
    "invalid_header": Code(400, "`if-match` is not a version number, or `x-change-reason` is empty or too long",
                           "admin"),
    "invalid_config": Code(400, "the experiment config is invalid", "admin"),
    "unknown_field": Code(400, "the config has a field it does not know", "admin"),
    "missing_field": Code(400, "the config lacks a required field", "admin"),
    "weight_resolution": Code(400, "a weight is not a multiple of 0.01 %", "admin"),
    "weights_sum": Code(400, "the variants' weights do not add up to 100", "admin"),
    "duplicate_variant": Code(400, "two variants share a name", "admin"),
    "duplicate_experiment": Code(400, "two experiments share a name", "admin"),
    "unknown_variant": Code(400, "`control` or the allowlist names no variant", "admin"),
    "shadow_is_primary": Code(400, "the shadow is also a primary variant", "admin"),
    "name_mismatch": Code(400, "the body's name differs from the URL's", "admin"),
    "unknown_target": Code(400, "Triton cannot serve a target of the config", "admin"),
    "target_mismatch": Code(400, "the targets disagree on their tensors", "admin"),
    "unauthorized": Code(401, "no valid bearer token", "admin"),
    "not_found": Code(404, "no such route or experiment"),
    "model_not_found": Code(404, "no experiment routes this model", "data"),
    "method_not_allowed": Code(405, "the path exists, not for this method (see `Allow`)"),
    "model_conflict": Code(409, "another experiment already routes this model", "admin"),
    "version_conflict": Code(409, "`if-match` names an older version: the body's `current_version` is "
                                  "the stored one (no lost update)", "admin"),
    "payload_too_large": Code(413, "the body, or its decompressed form, is over the limit (1 MiB)"),
    "unsupported_media_type": Code(415, "a content type or encoding the route does not take", "data"),
    "overloaded": Code(429, "shed on purpose: over the adaptive concurrency limit (sheddable traffic first) "
                            "or a variant's queue is full", "data"),
    "internal": Code(500, "a bug: logged with its traceback, counted in "
                          "`infergate_unexpected_errors_total`"),
    "unavailable": Code(503, "the gateway is not ready (starting)"),
    "model_unavailable": Code(503, "Triton did not answer or has no such target", "data"),
    "features_unavailable": Code(503, "the feature store is down (`feature_on_unavailable=raise`)", "data"),
    "deadline_exceeded": Code(503, "the request's deadline passed before Triton answered, or cannot be met "
                                   "(below the gateway's floor or its current round trip: refused at once)", "data"),
    "shutting_down": Code(503, "the gateway is draining", "data"),
    "store_unavailable": Code(503, "the experiments store (Redis) did not answer", "admin"),
}

# The codes the inference routes can answer: the `reason` label of `infergate_errors_total`
# and `infergate_rejected_total` is bound for exactly these at start-up.
DATA_PLANE: tuple[str, ...] = tuple(code for code, c in CODES.items() if c.plane != "admin")

_RETRY_AFTER = (b"retry-after", str(RETRY_AFTER_S).encode())


def render(code: str, message: str, fields: Mapping[str, object] | None = None
           ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """(status, JSON body, extra headers) for one error; `code` must be in `CODES`; `fields`
    adds members to the body (e.g. `current_version` of a `version_conflict`)."""
    c = CODES[code]
    body = orjson.dumps({"error": code, "message": message, **(fields or {})})
    return c.status, body, [_RETRY_AFTER] if c.retry_after else []


def response(code: str, message: str, headers: Mapping[str, str] | None = None,
             fields: Mapping[str, object] | None = None):
    """The same error as a Starlette `Response` (for Starlette routes and handlers)."""
    from starlette.responses import Response

    status, body, extra = render(code, message, fields)
    out = Response(body, status_code=status, media_type="application/json", headers=dict(headers or {}))
    for name, value in extra:
        out.headers[name.decode()] = value.decode()
    return out


def table(codes: Sequence[str] | None = None) -> str:
    """The README's table of codes (a test checks that the README holds exactly this)."""
    rows = ["| status | code | answered by | meaning |", "|---|---|---|---|"]
    where = {"data": "inference", "admin": "admin API", "both": "any route"}
    for code in codes or CODES:
        c = CODES[code]
        extra = " + `Retry-After`" if c.retry_after else ""
        rows.append(f"| {c.status} | `{code}`{extra} | {where[c.plane]} | {c.meaning} |")
    return "\n".join(rows)
