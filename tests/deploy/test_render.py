"""Both overlays render offline and every object validates (Kubernetes schemas, strict; our CRD schemas)."""

from __future__ import annotations

import copy

import pytest

from deploy import __main__ as generate
from deploy.render import RenderError, render
from deploy.schema import CRD_SCHEMAS, errors


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_and_validates(rendered: dict, overlay: str) -> None:
    objs = rendered[overlay]
    assert objs, f"{overlay} rendered nothing"
    bad = list(errors(objs))
    assert not bad, "\n".join(bad)


def test_every_object_was_checked_against_a_schema(rendered: dict) -> None:
    """kubernetes-validate skips CRDs with rc 0: ours must meet a schema of our own instead."""
    crds = [o for o in rendered["prod"] if (o["apiVersion"], o["kind"]) in CRD_SCHEMAS]
    assert sorted(o["kind"] for o in crds) == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]


def test_schema_errors_name_the_object_and_field(rendered: dict) -> None:
    objs = copy.deepcopy(rendered["prod"])
    gw = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "gateway")
    gw["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    sm = next(o for o in objs if o["kind"] == "ServiceMonitor")
    sm["spec"]["endpoints"][0]["interval"] = "soon"
    objs.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    bad = list(errors(objs))
    assert any(m.startswith("Deployment/gateway: spec.template.spec.containers[0]") and "resourcez" in m for m in bad), bad
    assert any(m.startswith("ServiceMonitor/infergate-gateway: spec.endpoints[0].interval") for m in bad), bad
    assert any(m.startswith("Widget/w: no schema") for m in bad), bad


def test_a_broken_kustomization_fails_with_kubectls_message(kubectl: str, tmp_path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(RenderError, match="missing.yaml"):
        render(tmp_path)


def test_servicemonitors_select_a_rendered_service_port(rendered: dict) -> None:
    objs = rendered["prod"]
    services = [o for o in objs if o["kind"] == "Service"]
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        sel = sm["spec"]["selector"]["matchLabels"]
        hits = [s for s in services if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        assert hits, f"ServiceMonitor/{sm['metadata']['name']}: spec.selector.matchLabels {sel} selects no Service"
        for ep in sm["spec"]["endpoints"]:
            assert any(p.get("name") == ep["port"] for s in hits for p in s["spec"]["ports"]), \
                f"ServiceMonitor/{sm['metadata']['name']}: spec.endpoints.port {ep['port']!r} is on no selected Service"


def test_prometheusrule_carries_the_rule_file_unchanged(rendered: dict) -> None:
    from deploy.promrule import load_rules

    rule = next(o for o in rendered["prod"] if o["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == load_rules()["groups"]


def test_generated_files_are_current() -> None:
    assert generate.main(["--check"]) == 0, "run `python -m deploy` and commit the result"


def test_dev_needs_no_crds_and_prod_has_the_monitoring(rendered: dict) -> None:
    """dev applies to a bare cluster; prod expects the Prometheus Operator's CRDs."""
    assert not [o for o in rendered["dev"] if (o["apiVersion"], o["kind"]) in CRD_SCHEMAS]
    names = {(o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap" else o["metadata"]["name"])
             for o in rendered["prod"]}
    assert {("ServiceMonitor", "infergate-gateway"), ("ServiceMonitor", "infergate-triton"),
            ("PrometheusRule", "infergate"), ("ConfigMap", "grafana-dashboard-infergate")} <= names
