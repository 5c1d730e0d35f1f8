"""Messages the router hands to the gateway: where a request goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .outcomes import VariantOutcomes

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
    mirrored to the shadow variant, else ``None``. ``outcome`` is the variant's outcome
    counter (``router.outcomes.VariantOutcomes``) the gateway records each finished request
    into, for the guardrails; ``None`` on assignments built by hand.
    """

    experiment: str
    variant: str
    target: Target
    shadow: tuple[str, Target] | None = None
    outcome: "VariantOutcomes | None" = field(default=None, compare=False, repr=False)
