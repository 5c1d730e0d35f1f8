"""The gateway's own error types, and the one place each maps to an HTTP status.

Modules that talk to Triton, Redis or parse bytes translate foreign exceptions into these at
their edge; `ErrorMap` translates the feature store's and router's errors once, at start-up.
"""

from __future__ import annotations

from typing import Callable

import orjson


class GatewayError(Exception):
    status = 500
    code = "internal"
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps({"error": self.code, "message": self.message})


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidField(BadRequest):
    """A field is missing or has the wrong type, shape or dtype; the message names it."""

    code = "invalid_field"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class UnknownModel(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status, code = 405, "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status, code = 415, "unsupported_media_type"


class Overloaded(GatewayError):
    """Shed on purpose: the queue or the in-flight limit is full. Answered at once."""

    status, code, retry_after = 429, "overloaded", 1


class Unavailable(GatewayError):
    status, code, retry_after = 503, "unavailable", 1


class ModelUnavailable(Unavailable):
    code = "model_unavailable"


class FeaturesUnavailable(Unavailable):
    code = "features_unavailable"


class DeadlineExceeded(Unavailable):
    code = "deadline_exceeded"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class ErrorMap:
    """Translate errors raised by the adjunct packages (features, router) into ours.

    Built once at start-up from the exception types each package exports; anything not
    registered becomes a 500 with a generic message (never a traceback).
    """

    __slots__ = ("_table",)

    def __init__(self) -> None:
        self._table: dict[type[BaseException], Callable[[BaseException], GatewayError]] = {}

    def register(self, exc_type: type[BaseException], make: Callable[[BaseException], GatewayError]) -> None:
        self._table[exc_type] = make

    def translate(self, exc: BaseException) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        for klass in type(exc).__mro__:
            make = self._table.get(klass)
            if make is not None:
                return make(exc)
        return GatewayError("internal error")
