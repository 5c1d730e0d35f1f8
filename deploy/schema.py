"""Offline schema validation: Kubernetes' own OpenAPI schemas (``kubernetes-validate``,
strict: unknown fields are errors) and, for the two Prometheus Operator CRDs we ship, small
schemas of our own, since kubernetes-validate skips CRDs without a word.
"""

from __future__ import annotations

from typing import Any, Iterator

import jsonschema
import kubernetes_validate

from deploy.render import ref

__all__ = ["KUBERNETES_VERSION", "CRD_SCHEMAS", "errors"]

KUBERNETES_VERSION = "1.32"

_RELABEL = {"type": "object", "additionalProperties": False, "properties": {
    "sourceLabels": {"type": "array", "items": {"type": "string"}}, "targetLabel": {"type": "string"},
    "replacement": {"type": "string"}, "regex": {"type": "string"}, "action": {"type": "string"},
    "separator": {"type": "string"}}}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
_META = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}, "namespace": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}

CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {"apiVersion": {}, "kind": {}, "metadata": _META, "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {"type": "object", "required": ["matchLabels"], "properties": {
                    "matchLabels": {"type": "object", "minProperties": 1,
                                    "additionalProperties": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["port"], "additionalProperties": False, "properties": {
                        "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                        "interval": _DURATION, "scrapeTimeout": _DURATION,
                        "relabelings": {"type": "array", "items": _RELABEL}}}}}}}},
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {"apiVersion": {}, "kind": {}, "metadata": _META, "spec": {
            "type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
                "groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "interval": _DURATION, "rules": {
                        "type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["expr"], "additionalProperties": False,
                            "properties": {
                                "alert": {"type": "string"}, "record": {"type": "string"},
                                "expr": {"type": "string", "minLength": 1}, "for": _DURATION,
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "annotations": {"type": "object",
                                                "additionalProperties": {"type": "string"}}}}}}}}}}}},
}


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def errors(objects: list[dict[str, Any]], version: str = KUBERNETES_VERSION) -> Iterator[str]:
    """One message per invalid object: ``Kind/name: field.path: what``."""
    for obj in objects:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        crd = CRD_SCHEMAS.get(key)
        try:
            if crd is not None:
                jsonschema.validate(obj, crd)
            else:
                kubernetes_validate.validate(obj, version, strict=True)
        except jsonschema.ValidationError as exc:   # kubernetes_validate.ValidationError is one too
            yield f"{ref(obj)}: {_path(exc.absolute_path)}: {exc.message}"
        except kubernetes_validate.SchemaNotFoundError:
            yield f"{ref(obj)}: no schema for {key[0]} {key[1]} (Kubernetes {version}, and not a known CRD)"
