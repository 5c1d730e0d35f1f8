"""Online features for the gateway: Feast repo, fast Redis reader, Feast-API reader.

``open_reader`` picks the reader from the repo's online store; both implement
``OnlineFeatureReader`` and return ``FeatureRow``s. Feast itself is imported only when a
reader is opened or the repo is built, not when this package is imported.
"""

from features.errors import BadEntity, FeatureUnavailable, FeaturesError, UnsupportedLayout
from features.factory import open_reader, redis_answers
from features.policy import FailurePolicy
from features.row import FeatureRow, OnlineFeatureReader

__all__ = [
    "BadEntity",
    "FailurePolicy",
    "FeatureRow",
    "FeatureUnavailable",
    "FeaturesError",
    "OnlineFeatureReader",
    "UnsupportedLayout",
    "open_reader",
    "redis_answers",
]
