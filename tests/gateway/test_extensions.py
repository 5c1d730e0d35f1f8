"""gateway/extensions.py: specs resolved at start-up, refused with the reason."""

from __future__ import annotations

import pytest

from gateway.config import GatewayConfig
from gateway.extensions import Extension, ExtensionError, load_extensions


def factory(config):
    return Extension("demo", [], {"/x": {}}, ("demo",))


def not_an_extension(config):
    return []


def test_resolves_module_factory():
    [ext] = load_extensions([f"{__name__}:factory"], GatewayConfig())
    assert ext.name == "demo" and repr(ext) == "<Extension demo [routes 0]>"


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "expected module:factory"),
    ("no_such_module_xyz:f", "No module named"),
    (f"{__name__}:missing", "has no attribute 'missing'"),
    (f"{__name__}:not_an_extension", "returned list, not Extension"),
])
def test_bad_spec_refused_with_the_reason(spec, message):
    with pytest.raises(ExtensionError, match=message):
        load_extensions([spec], GatewayConfig())


def test_env_and_flag():
    cfg = GatewayConfig.from_env({"INFERGATE_EXTENSIONS": "a.b:c, d.e:f"})
    assert cfg.extensions == ("a.b:c", "d.e:f")
    from gateway.__main__ import config_from_args, parse_args

    assert config_from_args(parse_args(["--extension", "x.y:z"])).extensions == ("x.y:z",)
