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
from .service import RouterService
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
