"""Small config builders shared by the router tests."""

from __future__ import annotations

from typing import Any

from router.config import ExperimentConfig, parse_experiment


def experiment_dict(weights: dict[str, float], *, name: str = "exp", model: str = "clf",
                    salt: str = "s1", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "salt": salt,
        "variants": [
            {"name": v, "weight": w, "target": {"model": model, "version": str(i + 1)}}
            for i, (v, w) in enumerate(weights.items())
        ],
        **extra,
    }


def experiment(weights: dict[str, float], **kw: Any) -> ExperimentConfig:
    return parse_experiment(experiment_dict(weights, **kw))


def units(n: int, tag: str = "u") -> list[str]:
    return [f"{tag}-{i}" for i in range(n)]
