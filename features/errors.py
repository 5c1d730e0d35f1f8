"""The features package's own exception types.

Redis, Feast and parsing errors are translated into these at the module that
talks to that system; the gateway maps each to one HTTP status.
"""

from __future__ import annotations

__all__ = [
    "FeaturesError",
    "FeatureUnavailable",
    "BadEntity",
    "UnsupportedLayout",
    "DecodeError",
]


class FeaturesError(Exception):
    """Base class for every error raised by the features package."""


class FeatureUnavailable(FeaturesError):
    """The online store did not answer in time or is down (gateway: 503)."""


class BadEntity(FeaturesError):
    """A request's entity is missing a join key or has one of the wrong type (gateway: 400).

    ``field`` names the offending join key so the answer can point at it.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"entity field {field!r}: {reason}")
        self.field = field
        self.reason = reason


class UnsupportedLayout(FeaturesError):
    """The Feast repo uses a layout the fast reader cannot decode exactly; raised at start-up."""


class DecodeError(FeaturesError):
    """A stored value is not what the registry promised (e.g. a string in a Float32 feature)."""
