"""Experiment configuration: the schema, its validation, and loading it from YAML or JSON.

Units of the config, documented once:

* ``weight`` and ``shadow.share`` are **percent** of units, each a multiple of 0.01 (one
  bucket of 10,000); the variants' weights must add up to exactly 100.
* ``control`` is the variant every unit gets while ``status`` is ``paused`` or ``stopped``
  (no shadowing then either); it defaults to the first variant listed. It also owns every
  bucket no other variant claims (see ``allocate.py``).
* ``bucket_version`` (default 0) re-randomises the assignment when bumped, like a new salt.
* ``allowlist`` maps a unit id to a variant; honoured only while ``running``.

Validation happens once, at load; every message names the offending field's path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from .errors import ConfigError
from .types import Target

__all__ = [
    "Status",
    "Variant",
    "Shadow",
    "Guardrails",
    "ExperimentConfig",
    "parse_experiment",
    "parse_document",
    "load_experiments",
    "default_experiments",
    "BUCKETS",
]

BUCKETS = 10_000
Status = Literal["running", "paused", "stopped"]
_STATUSES = ("running", "paused", "stopped")


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float  # percent
    target: Target

    @property
    def buckets(self) -> int:
        return round(self.weight * BUCKETS / 100)


@dataclass(frozen=True, slots=True)
class Shadow:
    variant: str
    share: float  # percent of units mirrored to the shadow target
    target: Target

    @property
    def buckets(self) -> int:
        return round(self.share * BUCKETS / 100)


@dataclass(frozen=True, slots=True)
class Guardrails:
    max_error_rate: float | None = None  # fraction in [0, 1]
    max_p99_ms: float | None = None
    # Per-experiment overrides of the service's defaults (None = the service's).
    window_s: float | None = None  # sliding window the figures are summed over
    min_requests: int | None = None  # per variant in the window before it is judged

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_error_rate": self.max_error_rate, "max_p99_ms": self.max_p99_ms}
        if self.window_s is not None:
            out["window_s"] = self.window_s
        if self.min_requests is not None:
            out["min_requests"] = self.min_requests
        return out

    def breaches(self, error_rate: float, p99_ms: float) -> list[str]:
        """Which guardrails the observed numbers break (the caller decides what to do)."""
        out = []
        if self.max_error_rate is not None and error_rate > self.max_error_rate:
            out.append(f"error rate {error_rate:.4f} > {self.max_error_rate}")
        if self.max_p99_ms is not None and p99_ms > self.max_p99_ms:
            out.append(f"p99 {p99_ms:.1f} ms > {self.max_p99_ms} ms")
        return out


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    name: str
    model: str  # public model name clients ask for
    salt: str
    status: Status
    variants: tuple[Variant, ...]
    control: str
    bucket_version: int = 0
    allowlist: tuple[tuple[str, str], ...] = ()  # sorted (unit id, variant) pairs
    shadow: Shadow | None = None
    guardrails: Guardrails | None = None

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form ``parse_experiment`` accepts back (round-trips exactly)."""
        out: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "salt": self.salt,
            "status": self.status,
            "bucket_version": self.bucket_version,
            "control": self.control,
            "variants": [
                {"name": v.name, "weight": v.weight, "target": _target_dict(v.target)}
                for v in self.variants
            ],
        }
        if self.allowlist:
            out["allowlist"] = dict(self.allowlist)
        if self.shadow is not None:
            s = self.shadow
            out["shadow"] = {"variant": s.variant, "share": s.share, "target": _target_dict(s.target)}
        if self.guardrails is not None:
            out["guardrails"] = self.guardrails.to_dict()
        return out


def _target_dict(t: Target) -> dict[str, str]:
    return {"model": t.model, "version": t.version}


# -- validation -------------------------------------------------------------------------


def _mapping(obj: Any, where: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {type(obj).__name__}")
    unknown = sorted(set(map(str, obj)) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}", "unknown_field")
    missing = sorted(required - set(obj))
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}", "missing_field")
    return obj


def _name(obj: Any, where: str) -> str:
    if not isinstance(obj, str) or not obj.strip() or len(obj) > 200:
        raise ConfigError(f"{where}: must be a non-empty string (at most 200 chars), got {obj!r}")
    return obj


def _percent(obj: Any, where: str) -> float:
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
        raise ConfigError(f"{where}: must be a number (percent), got {obj!r}")
    if not 0 <= obj <= 100:
        raise ConfigError(f"{where}: must be between 0 and 100 (percent), got {obj!r}")
    scaled = obj * BUCKETS / 100
    if abs(scaled - round(scaled)) > 1e-6:
        raise ConfigError(
            f"{where}: {obj!r} is not a multiple of 0.01 (one bucket of {BUCKETS})", "weight_resolution"
        )
    return float(obj)


def _target(obj: Any, where: str) -> Target:
    m = _mapping(obj, where, {"model", "version"}, {"model"})
    version = m.get("version", "")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)  # YAML reads `version: 2` as an int
    if not isinstance(version, str):
        raise ConfigError(f"{where}.version: must be a string, got {version!r}")
    return Target(_name(m["model"], f"{where}.model"), version)


def _positive(obj: Any, where: str) -> float | None:
    if obj is None:
        return None
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj) or obj < 0:
        raise ConfigError(f"{where}: must be a non-negative number, got {obj!r}")
    return float(obj)


_EXP_FIELDS = {
    "name", "model", "salt", "status", "variants", "control", "bucket_version",
    "allowlist", "shadow", "guardrails",
}


def parse_experiment(obj: Any, where: str = "experiment") -> ExperimentConfig:
    """Validate one experiment given as plain data; raises ``ConfigError`` with a path."""
    m = _mapping(obj, where, _EXP_FIELDS, {"name", "model", "salt", "variants"})
    name = _name(m["name"], f"{where}.name")
    model = _name(m["model"], f"{where}.model")
    salt = _name(m["salt"], f"{where}.salt")
    status = m.get("status", "running")
    if status not in _STATUSES:
        raise ConfigError(f"{where}.status: must be one of {', '.join(_STATUSES)}, got {status!r}")
    bv = m.get("bucket_version", 0)
    if isinstance(bv, bool) or not isinstance(bv, int) or bv < 0:
        raise ConfigError(f"{where}.bucket_version: must be a non-negative integer, got {bv!r}")

    raw = m["variants"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}.variants: must be a non-empty list")
    variants: list[Variant] = []
    for i, v in enumerate(raw):
        vw = f"{where}.variants[{i}]"
        vm = _mapping(v, vw, {"name", "weight", "target"}, {"name", "weight", "target"})
        variants.append(Variant(
            _name(vm["name"], f"{vw}.name"),
            _percent(vm["weight"], f"{vw}.weight"),
            _target(vm["target"], f"{vw}.target"),
        ))
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}.variants: duplicate variant name(s) {', '.join(dupes)}", "duplicate_variant")
    total = sum(v.buckets for v in variants)
    if total != BUCKETS:
        weights = " + ".join(f"{v.weight:g}" for v in variants)
        raise ConfigError(
            f"{where}.variants: weights must add up to 100, got {weights} = {total * 100 / BUCKETS:g}",
            "weights_sum",
        )

    control = m.get("control", names[0])
    if control not in names:
        raise ConfigError(
            f"{where}.control: unknown variant {control!r} (variants: {', '.join(names)})", "unknown_variant"
        )

    allow_raw = m.get("allowlist") or {}
    if not isinstance(allow_raw, Mapping):
        raise ConfigError(f"{where}.allowlist: must be a mapping of unit id to variant")
    allow: list[tuple[str, str]] = []
    for unit, variant in allow_raw.items():
        if variant not in names:
            raise ConfigError(
                f"{where}.allowlist[{unit!r}]: unknown variant {variant!r} (variants: {', '.join(names)})",
                "unknown_variant",
            )
        allow.append((str(unit), variant))

    shadow = None
    if m.get("shadow") is not None:
        sw = f"{where}.shadow"
        sm = _mapping(m["shadow"], sw, {"variant", "share", "target"}, {"variant", "share", "target"})
        sname = _name(sm["variant"], f"{sw}.variant")
        if sname in names:
            raise ConfigError(f"{sw}.variant: {sname!r} is also a primary variant", "shadow_is_primary")
        shadow = Shadow(sname, _percent(sm["share"], f"{sw}.share"), _target(sm["target"], f"{sw}.target"))

    guard = None
    if m.get("guardrails") is not None:
        gw = f"{where}.guardrails"
        gm = _mapping(m["guardrails"], gw, {"max_error_rate", "max_p99_ms", "window_s", "min_requests"}, set())
        rate = _positive(gm.get("max_error_rate"), f"{gw}.max_error_rate")
        if rate is not None and rate > 1:
            raise ConfigError(f"{gw}.max_error_rate: must be a fraction in [0, 1], got {rate!r}")
        window = _positive(gm.get("window_s"), f"{gw}.window_s")
        if window is not None and not 1 <= window <= 3600:
            raise ConfigError(f"{gw}.window_s: must be between 1 and 3600 seconds, got {window!r}")
        min_req = gm.get("min_requests")
        if min_req is not None and (isinstance(min_req, bool) or not isinstance(min_req, int) or min_req < 1):
            raise ConfigError(f"{gw}.min_requests: must be a positive integer, got {min_req!r}")
        guard = Guardrails(rate, _positive(gm.get("max_p99_ms"), f"{gw}.max_p99_ms"), window, min_req)

    return ExperimentConfig(
        name=name, model=model, salt=salt, status=status, variants=tuple(variants),
        control=control, bucket_version=bv, allowlist=tuple(sorted(allow)),
        shadow=shadow, guardrails=guard,
    )


def parse_document(obj: Any) -> list[ExperimentConfig]:
    """Validate a whole config document: ``{"experiments": [...]}`` (or a bare list)."""
    if isinstance(obj, Mapping):
        _mapping(obj, "document", {"experiments"}, {"experiments"})
        obj = obj["experiments"]
    if not isinstance(obj, list):
        raise ConfigError("document: must hold a list of experiments")
    out = [parse_experiment(e, f"experiments[{i}]") for i, e in enumerate(obj)]
    seen: dict[str, str] = {}
    for e in out:
        if e.name in seen:
            raise ConfigError(f"experiments: duplicate experiment name {e.name!r}", "duplicate_experiment")
        seen[e.name] = e.model
    models = [e.model for e in out]
    clash = sorted({x for x in models if models.count(x) > 1})
    if clash:
        raise ConfigError(
            f"experiments: model(s) {', '.join(clash)} routed by more than one experiment", "model_conflict"
        )
    return out


def load_experiments(path: str | Path) -> list[ExperimentConfig]:
    """Read and validate a YAML (``.yaml``/``.yml``) or JSON file of experiments."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}", "unreadable") from None
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}", "unparsable") from None
    return parse_document(data)


def default_experiments() -> list[ExperimentConfig]:
    """The demo experiment: model "clf", salt "demo-1", a -> clf v1 (50%), b -> clf v2 (50%)."""
    return [
        parse_experiment(
            {
                "name": "clf-demo",
                "model": "clf",
                "salt": "demo-1",
                "variants": [
                    {"name": "a", "weight": 50, "target": {"model": "clf", "version": "1"}},
                    {"name": "b", "weight": 50, "target": {"model": "clf", "version": "2"}},
                ],
            },
            "default",
        )
    ]
