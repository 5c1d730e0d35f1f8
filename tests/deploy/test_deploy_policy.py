"""Policy over the rendered overlays, and proof that each check can fail with the object and field named."""

from __future__ import annotations

import base64
import copy

import pytest

from deploy.policy import prod_violations, violations
from gateway.config import GatewayConfig

DRAIN = GatewayConfig().shutdown_timeout_s


def _find(objs: list, kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_meets_policy(rendered: dict, overlay: str) -> None:
    bad = violations(rendered[overlay], DRAIN)
    assert not bad, "\n".join(bad)


def test_prod_has_hpa_pdbs_three_tritons_and_no_committed_secret(rendered: dict) -> None:
    bad = prod_violations(rendered["prod"])
    assert not bad, "\n".join(bad)


def test_dev_secrets_are_generated_and_obviously_fake(rendered: dict) -> None:
    secrets = [o for o in rendered["dev"] if o["kind"] == "Secret"]
    assert {o["metadata"]["name"].rsplit("-", 1)[0] for o in secrets} == {"gateway-secrets", "postgres-credentials"}
    for s in secrets:
        for key, value in s["data"].items():
            assert "fake" in base64.b64decode(value).decode().lower(), f"Secret/{s['metadata']['name']}: data.{key}"


def test_grace_period_covers_prestop_and_two_drains(rendered: dict) -> None:
    gw = _find(rendered["prod"], "Deployment", "gateway")["spec"]["template"]["spec"]
    cm = next(o for o in rendered["prod"] if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("gateway-config"))
    drain = float(cm["data"]["INFERGATE_SHUTDOWN_TIMEOUT_S"])
    pre = float(gw["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    assert gw["terminationGracePeriodSeconds"] >= pre + 2 * drain


def _mutate(rendered: dict, overlay: str = "dev") -> list:
    return copy.deepcopy(rendered[overlay])


def test_policy_names_object_and_field_for_each_kind_of_break(rendered: dict) -> None:
    objs = _mutate(rendered)
    gw = _find(objs, "Deployment", "gateway")
    spec = gw["spec"]["template"]["spec"]
    c = spec["containers"][0]
    del c["resources"]["limits"]["memory"]
    del c["readinessProbe"]
    c["securityContext"]["readOnlyRootFilesystem"] = False
    spec["securityContext"]["runAsNonRoot"] = False
    spec["terminationGracePeriodSeconds"] = 12
    c["image"] = "infergate/gateway:latest"
    c["env"].append({"name": "INFERGATE_ADMIN_TOKENS", "value": "ops:hunter2"})
    redis_spec = _find(objs, "StatefulSet", "redis")["spec"]["template"]["spec"]
    redis = redis_spec["containers"][0]
    redis["image"] = "redis"
    del redis_spec["securityContext"]["seccompProfile"]
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    cm["data"]["experiments.yaml"] = "experiments:\n  - name: x\n    salt: s3cret\n"
    cm["data"]["ADMIN_TOKEN"] = "abc"
    sec = next(o for o in objs if o["kind"] == "Secret")
    sec["data"]["real"] = base64.b64encode(b"correct horse battery staple").decode()
    cron = _find(objs, "CronJob", "feature-materialize")
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resources"].pop("requests")
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"].append(
        {"name": "x", "secret": {"secretName": "unheard-of"}})

    bad = "\n".join(violations(objs, DRAIN))
    at = "Deployment/gateway: spec.template.spec.containers[gateway]"
    for expected in (
        f"{at}.resources.limits.memory: missing",
        f"{at}.readinessProbe: missing",
        f"{at}.securityContext.readOnlyRootFilesystem: must be true",
        f"{at}.securityContext.runAsNonRoot: must be true",
        f"{at}.image: 'infergate/gateway:latest' is not pinned",
        f"{at}.env[2] INFERGATE_ADMIN_TOKENS: a secret as a literal value",
        "Deployment/gateway: spec.template.spec.terminationGracePeriodSeconds: 12 < preStop 5 s + gateway drain 20 s",
        "StatefulSet/redis: spec.template.spec.containers[redis].image: 'redis' is not pinned",
        "StatefulSet/redis: spec.template.spec.containers[redis].securityContext.seccompProfile.type: RuntimeDefault",
        f"ConfigMap/{cm['metadata']['name']}: data.experiments.yaml: holds a secret",
        f"ConfigMap/{cm['metadata']['name']}: data.ADMIN_TOKEN: looks like a secret",
        f"Secret/{sec['metadata']['name']}: data.real: a committed Secret value must be an obviously fake",
        "CronJob/feature-materialize: spec.jobTemplate.spec.template.spec.containers[materialize].resources.requests.cpu: missing",
        "CronJob/feature-materialize: spec.jobTemplate.spec.template.spec.volumes[2].secret.secretName: Secret 'unheard-of'",
    ):
        assert expected in bad, f"expected {expected!r} in:\n{bad}"


def test_wrong_health_paths_missing_prestop_and_triton_urls_are_named(rendered: dict) -> None:
    objs = _mutate(rendered)
    c = _find(objs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    c["livenessProbe"]["httpGet"]["path"] = "/healthz"
    del c["lifecycle"]
    _find(objs, "StatefulSet", "triton")["spec"]["replicas"] = 2
    bad = "\n".join(violations(objs, DRAIN))
    assert "containers[gateway].livenessProbe.httpGet.path: '/healthz', expected '/v2/health/live'" in bad, bad
    assert "containers[gateway].lifecycle.preStop: missing" in bad, bad
    assert "data.INFERGATE_TRITON_URLS: 'triton-0.triton:8001' does not list the 2 Triton replicas" in bad, bad
    assert "data.INFERGATE_TRITON_HTTP_URLS: 'triton-0.triton:8000' does not list the 2 Triton replicas" in bad, bad


def test_prod_checks_fail_without_hpa_pdb_or_with_a_secret(rendered: dict) -> None:
    objs = [o for o in _mutate(rendered, "prod") if o["kind"] not in ("HorizontalPodAutoscaler", "PodDisruptionBudget")]
    objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gateway-secrets"}, "data": {}})
    _find(objs, "StatefulSet", "triton")["spec"]["template"]["spec"]["containers"][0]["args"].remove(
        "--model-control-mode=explicit")
    bad = "\n".join(prod_violations(objs))
    for expected in ("HorizontalPodAutoscaler/gateway: missing",
                     "Deployment/gateway: no PodDisruptionBudget selects its pods",
                     "StatefulSet/triton: no PodDisruptionBudget selects its pods",
                     "Secret/gateway-secrets: prod renders no Secret",
                     "StatefulSet/triton: spec.template.spec.containers[triton].args: no --model-control-mode=explicit"):
        assert expected in bad, f"expected {expected!r} in:\n{bad}"
