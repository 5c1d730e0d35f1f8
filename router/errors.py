"""The router package's own exception types.

Parsing, validation and Redis errors are translated into these where they happen
(``config.py``, ``store.py``); the admin API and the gateway map each to one HTTP status.
"""

from __future__ import annotations

__all__ = [
    "RouterError",
    "ConfigError",
    "ModelConflict",
    "UnknownModel",
    "UnknownVariant",
    "StoreUnavailable",
    "VersionConflict",
]


class RouterError(Exception):
    """Base class for every error raised by the router package."""


class ConfigError(RouterError):
    """An experiment config is invalid (admin API: 400).

    ``code`` is a stable machine-readable string (``invalid_config``, ``weights_sum``,
    ``unknown_variant``, ``shadow_is_primary``, ...); ``message`` says what and where.
    """

    def __init__(self, message: str, code: str = "invalid_config") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ModelConflict(ConfigError):
    """Two experiments claim the same public model name (admin API: 409)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="model_conflict")


class VersionConflict(ConfigError):
    """A compare-and-set change (``If-Match``) met another stored version (admin API: 409).

    ``current`` is the stored version, so the caller can re-read and retry.
    """

    def __init__(self, experiment: str, current: int, expected: int) -> None:
        super().__init__(
            f"experiment {experiment!r} is at version {current}, not {expected}: re-read it and retry",
            code="version_conflict",
        )
        self.current = current
        self.expected = expected


class UnknownModel(RouterError, LookupError):
    """No experiment routes this public model name (gateway: 404)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"no experiment routes model {model!r}")
        self.model = model


class UnknownVariant(RouterError, ValueError):
    """An authenticated override names a variant the experiment does not have (gateway: 400)."""

    def __init__(self, experiment: str, variant: str) -> None:
        super().__init__(f"experiment {experiment!r} has no variant {variant!r}")
        self.experiment = experiment
        self.variant = variant


class StoreUnavailable(RouterError):
    """Redis did not answer or refused (admin API: 503; the live router keeps its config)."""
