"""Optional route bundles mounted at start-up: ``--extension module:factory`` (repeatable) or
``INFERGATE_EXTENSIONS=module:factory,...``.

The gateway never imports an extension's package by name: it resolves each spec with importlib
once, when the app is built, and calls ``factory(config)``, which returns an ``Extension`` (its
Starlette routes and their OpenAPI paths). Handlers raise ``gateway.errors`` types, which the
app renders like its own. A spec that cannot be resolved stops start-up with the reason.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from starlette.routing import BaseRoute

__all__ = ["Extension", "ExtensionError", "load_extensions"]


class ExtensionError(RuntimeError):
    """An extension spec that does not resolve to a factory returning an ``Extension``."""


@dataclass(frozen=True)
class Extension:
    name: str
    routes: Sequence[BaseRoute]
    openapi_paths: Mapping[str, Any] = field(default_factory=dict)
    openapi_tags: Sequence[str] = ()

    def __repr__(self) -> str:
        return f"<Extension {self.name} [routes {len(self.routes)}]>"


def load_extensions(specs: Sequence[str], config: Any) -> list[Extension]:
    out = []
    for spec in specs:
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise ExtensionError(f"extension {spec!r}: expected module:factory")
        try:
            factory: Callable[[Any], Extension] = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ExtensionError(f"extension {spec!r}: {exc}") from exc
        ext = factory(config)
        if not isinstance(ext, Extension):
            raise ExtensionError(f"extension {spec!r}: factory returned {type(ext).__name__}, not Extension")
        out.append(ext)
    return out
