"""The lifecycle's own errors; the CLI maps each to one exit status and one stderr line."""

from __future__ import annotations


class LifecycleError(Exception):
    """Base: something the operator must be told; `exit_code` is the CLI's status."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(LifecycleError):
    """The request cannot be carried out as given (a field, a signature, a bad version)."""

    exit_code = 2


class NotFound(BadInput):
    """Unknown model, alias, version or experiment."""


class RegistryUnavailable(LifecycleError):
    """MLflow (or the database behind it) did not answer."""


class GatewayUnavailable(LifecycleError):
    """The gateway's admin API did not answer."""


class DeployFailed(BadInput):
    """A version did not load or answered differently from MLflow's pyfunc; nothing changed."""


class RolloutRefused(LifecycleError):
    """Another rollout of the same experiment holds the lock."""

    exit_code = 4
