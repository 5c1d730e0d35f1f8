"""Deterministic experiment routing: which Triton target serves a request.

See router/README.md for the config format, the assignment algorithm and its guarantees.
"""

from .assign import CompiledExperiment, Router
from .config import ExperimentConfig, default_experiments, load_experiments, parse_experiment
from .errors import (
    ConfigError,
    ModelConflict,
    RouterError,
    StoreUnavailable,
    UnknownModel,
    UnknownVariant,
    VersionConflict,
)
from .outcomes import VariantOutcomes
from .types import Assignment, Target

__all__ = [
    "Router",
    "RouterService",
    "Assignment",
    "Target",
    "ExperimentConfig",
    "CompiledExperiment",
    "load_experiments",
    "parse_experiment",
    "default_experiments",
    "RouterError",
    "ConfigError",
    "ModelConflict",
    "UnknownModel",
    "UnknownVariant",
    "StoreUnavailable",
    "VersionConflict",
    "VariantOutcomes",
]


def __getattr__(name: str):
    # RouterService (Redis, SRM: scipy) is imported on first use, so that `python -m router
    # assign` starts in a fraction of a second.
    if name == "RouterService":
        from .service import RouterService

        return RouterService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
