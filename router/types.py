"""Messages the router hands to the gateway: where a request goes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "Assignment"]


@dataclass(frozen=True, slots=True)
class Target:
    """One Triton model version a request can be sent to."""

    model: str  # Triton model name
    version: str  # Triton version string, "" = latest


@dataclass(frozen=True, slots=True)
class Assignment:
    """The routing decision for one request.

    Instances are built once per config load and shared; the hot path returns one of them.
    ``shadow`` is ``(shadow variant name, its target)`` when the request should also be
    mirrored to the shadow variant, else ``None``.
    """

    experiment: str
    variant: str
    target: Target
    shadow: tuple[str, Target] | None = None
