"""The gateway's own error types; each code's status is in the one list, `httpcommon.errors`.

Modules that talk to Triton, Redis or parse bytes translate foreign exceptions into these at
their edge; `ErrorMap` translates the feature store's and router's errors once, at start-up.
"""

from __future__ import annotations

from typing import Callable

from httpcommon.errors import CODES, RETRY_AFTER_S, render


class GatewayError(Exception):
    """Status, code and `Retry-After` all come from `httpcommon.errors.CODES` (one list)."""

    status = 500
    code = "internal"
    retry_after: int | None = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        known = CODES[cls.code]  # a KeyError here: add the code to httpcommon/errors.py
        cls.status = known.status
        cls.retry_after = RETRY_AFTER_S if known.retry_after else None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> bytes:
        return render(self.code, self.message)[1]


class Internal(GatewayError):
    """A bug: an exception nobody translated. The cause stays chained (`__cause__`) so that
    whoever reports it (`gateway/unexpected.py`) logs the real traceback once."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("internal error")
        self.__cause__ = cause


class BadRequest(GatewayError):
    code = "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidField(BadRequest):
    """A field is missing or has the wrong type, shape or dtype; the message names it."""

    code = "invalid_field"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


class TritonRefused(BadRequest):
    """Triton answered INVALID_ARGUMENT for a request the gateway passed on."""

    code = "triton_refused"


class Unauthorized(GatewayError):
    code = "unauthorized"


class NotFound(GatewayError):
    code = "not_found"


class UnknownModel(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    code = "unsupported_media_type"


class Overloaded(GatewayError):
    """Shed on purpose: the queue or the in-flight limit is full. Answered at once."""

    code = "overloaded"


class Unavailable(GatewayError):
    code = "unavailable"


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
    registered becomes `Internal` (a 500 with a generic message, the cause chained for the log).
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
        return Internal(exc)
