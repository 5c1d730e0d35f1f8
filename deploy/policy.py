"""Deployment policy over rendered objects: pure functions returning messages that name the
object and the field (``Deployment/gateway: spec.template.spec.containers[gateway].resources.limits.cpu: missing``).

Checked: resource requests and limits on every container, non-root pods, a seccomp profile, no privilege
escalation, dropped capabilities, read-only root filesystems, probes on long-running
workloads, the gateway's health routes and its SIGTERM drain budget, pinned images, no secret
in a ConfigMap or a literal env value, Secrets that are either generated obviously fake (dev)
or created by hand (prod), and the prod-only HPA / PDB wiring.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Iterator

from deploy.render import ref

__all__ = ["EXTERNAL_SECRETS", "WORKLOADS", "drain_budget_s", "pod_spec", "violations", "prod_violations"]

Obj = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")
# Secrets the prod overlay expects to exist (created with `kubectl create secret`, README "Secrets").
EXTERNAL_SECRETS = frozenset({"gateway-secrets", "postgres-credentials"})
# Containers allowed a writable root filesystem, with the reason. None today.
WRITABLE_ROOT: dict[str, str] = {}
SECRET_NAME = re.compile(r"token|passw|secret|salt|api[_-]?key|credential", re.I)
SECRET_TEXT = re.compile(r"(?im)^\s*(salt|admin_tokens|password)\s*:|INFERGATE_ADMIN_TOKENS|://[^/\s:@]+:[^/\s@$]+@")
GATEWAY = "gateway"
PRESTOP_SLEEP = re.compile(r"^sleep$")


def pod_spec(obj: Obj) -> tuple[str, Obj] | None:
    """(field path, pod spec) of a workload, else None."""
    if obj.get("kind") == "CronJob":
        return "spec.jobTemplate.spec.template.spec", obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj.get("kind") in WORKLOADS:
        return "spec.template.spec", obj["spec"]["template"]["spec"]
    return None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _containers(spec: Obj) -> Iterator[tuple[str, Obj]]:
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            yield f"{field}[{c.get('name')}]", c


def _workload(obj: Obj) -> Iterator[str]:
    where, spec = pod_spec(obj)  # type: ignore[misc]
    name = ref(obj)
    pod_sc = spec.get("securityContext") or {}
    for cpath, c in _containers(spec):
        at = f"{name}: {where}.{cpath}"
        seccomp = _get(c, "securityContext", "seccompProfile", "type") or _get(pod_sc, "seccompProfile", "type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            # The namespace enforces Pod Security "restricted", which refuses such a pod.
            yield f"{at}.securityContext.seccompProfile.type: RuntimeDefault (here or in {where}.securityContext)"
    for cpath, c in _containers(spec):
        at = f"{name}: {where}.{cpath}"
        sc = c.get("securityContext") or {}
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if _get(c, "resources", kind, res) is None:
                    yield f"{at}.resources.{kind}.{res}: missing"
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
            yield f"{at}.securityContext.runAsNonRoot: must be true (here or in {where}.securityContext)"
        if sc.get("runAsUser", pod_sc.get("runAsUser")) in (0, None):
            yield f"{at}.securityContext.runAsUser: must be a non-zero uid (here or in {where}.securityContext)"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{at}.securityContext.allowPrivilegeEscalation: must be false"
        if "ALL" not in (_get(sc, "capabilities", "drop") or []):
            yield f"{at}.securityContext.capabilities.drop: must contain ALL"
        if sc.get("readOnlyRootFilesystem") is not True and c.get("name") not in WRITABLE_ROOT:
            yield f"{at}.securityContext.readOnlyRootFilesystem: must be true"
        image = c.get("image") or ""
        tag = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
            yield f"{at}.image: {image!r} is not pinned (a version tag or a digest, never latest)"
        if obj["kind"] in LONG_RUNNING and cpath.startswith("containers"):
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    yield f"{at}.{probe}: missing"
        for i, env in enumerate(c.get("env") or []):
            if SECRET_NAME.search(env.get("name", "")) and "value" in env:
                yield f"{at}.env[{i}] {env['name']}: a secret as a literal value; use valueFrom.secretKeyRef"


def _configmap(obj: Obj) -> Iterator[str]:
    for key, value in (obj.get("data") or {}).items():
        if SECRET_NAME.search(key):
            yield f"{ref(obj)}: data.{key}: looks like a secret; ConfigMaps hold no secrets, use a Secret"
        elif SECRET_TEXT.search(str(value)):
            yield f"{ref(obj)}: data.{key}: holds a secret (salt, token or password); use a Secret"


def _secret(obj: Obj) -> Iterator[str]:
    # Nothing committed is a real secret: a generated one must say it is fake.
    values = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
    values.update(obj.get("stringData") or {})
    for key, value in values.items():
        if "fake" not in value.lower():
            yield f"{ref(obj)}: data.{key}: a committed Secret value must be an obviously fake dev value (contain 'fake')"


def drain_budget_s(objects: list[Obj], default_shutdown_s: float) -> float:
    """Seconds the gateway may need after SIGTERM: the HTTP front's graceful wait, then the batchers'
    drain, each up to INFERGATE_SHUTDOWN_TIMEOUT_S (gateway/server.py, gateway/components.py)."""
    for obj in objects:
        if obj.get("kind") == "ConfigMap" and "INFERGATE_SHUTDOWN_TIMEOUT_S" in (obj.get("data") or {}):
            return 2 * float(obj["data"]["INFERGATE_SHUTDOWN_TIMEOUT_S"])
    return 2 * default_shutdown_s


def _prestop_s(c: Obj) -> float | None:
    pre = _get(c, "lifecycle", "preStop") or {}
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    cmd = _get(pre, "exec", "command") or []
    if len(cmd) == 2 and PRESTOP_SLEEP.match(cmd[0]):
        return float(cmd[1])
    return None


def _gateway(obj: Obj, drain_s: float) -> Iterator[str]:
    spec = obj["spec"]["template"]["spec"]
    at = f"{ref(obj)}: spec.template.spec"
    c = next((c for c in spec.get("containers", []) if c.get("name") == GATEWAY), None)
    if c is None:
        yield f"{at}.containers: no container named {GATEWAY!r}"
        return
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        got = _get(c, probe, "httpGet", "path")
        if got != path:
            yield f"{at}.containers[{GATEWAY}].{probe}.httpGet.path: {got!r}, expected {path!r}"
    pre = _prestop_s(c)
    if pre is None:
        yield f"{at}.containers[{GATEWAY}].lifecycle.preStop: missing (a sleep, so endpoints drop the pod before SIGTERM)"
        pre = 0.0
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < pre + drain_s:
        yield (f"{at}.terminationGracePeriodSeconds: {grace} < preStop {pre:g} s + gateway drain {drain_s:g} s "
               "(2 x INFERGATE_SHUTDOWN_TIMEOUT_S)")


def violations(objects: list[Obj], default_shutdown_s: float) -> list[str]:
    """Every policy violation in one rendered overlay."""
    out: list[str] = []
    drain_s = drain_budget_s(objects, default_shutdown_s)
    secrets = {o["metadata"]["name"] for o in objects if o.get("kind") == "Secret"}
    for obj in objects:
        kind = obj.get("kind")
        if pod_spec(obj) is not None:
            out.extend(_workload(obj))
            out.extend(_secret_refs(obj, secrets))
        if kind == "Deployment" and obj["metadata"]["name"] == GATEWAY:
            out.extend(_gateway(obj, drain_s))
        elif kind == "ConfigMap":
            out.extend(_configmap(obj))
        elif kind == "Secret":
            out.extend(_secret(obj))
    if not any(o.get("kind") == "Deployment" and o["metadata"]["name"] == GATEWAY for o in objects):
        out.append(f"Deployment/{GATEWAY}: missing")
    out.extend(_triton_urls(objects))
    return out


def _triton_urls(objects: list[Obj]) -> Iterator[str]:
    """The gateway must list every Triton replica by its stable name, and nothing else."""
    tri = next((o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "triton"), None)
    cm = next((o for o in objects if o["kind"] == "ConfigMap" and "INFERGATE_TRITON_URLS" in (o.get("data") or {})), None)
    if tri is None or cm is None:
        yield "StatefulSet/triton or the ConfigMap with INFERGATE_TRITON_URLS: missing"
        return
    n = tri["spec"].get("replicas") or 1
    for key, port in (("INFERGATE_TRITON_URLS", 8001), ("INFERGATE_TRITON_HTTP_URLS", 8000)):
        urls = cm["data"].get(key)
        if urls is None and key == "INFERGATE_TRITON_HTTP_URLS":
            continue   # optional: inference calls then go over gRPC
        want = [f"triton-{i}.triton:{port}" for i in range(n)]
        got = urls.split(",")
        if set(got) != set(want):
            yield (f"{ref(cm)}: data.{key}: {urls!r} does not list the {len(want)} Triton "
                   f"replicas of {ref(tri)} ({', '.join(want)})")
        elif key == "INFERGATE_TRITON_HTTP_URLS" and [u.rsplit(':', 1)[0] for u in got] != \
                [u.rsplit(':', 1)[0] for u in cm["data"]["INFERGATE_TRITON_URLS"].split(",")]:
            yield f"{ref(cm)}: data.{key}: not in the order of INFERGATE_TRITON_URLS (one replica each)"


def _secret_refs(obj: Obj, rendered: set[str]) -> Iterator[str]:
    where, spec = pod_spec(obj)  # type: ignore[misc]
    refs: list[tuple[str, str]] = []
    for i, v in enumerate(spec.get("volumes") or []):
        if "secret" in v:
            refs.append((f"{where}.volumes[{i}].secret.secretName", v["secret"]["secretName"]))
    for cpath, c in _containers(spec):
        for i, env in enumerate(c.get("env") or []):
            name = _get(env, "valueFrom", "secretKeyRef", "name")
            if name:
                refs.append((f"{where}.{cpath}.env[{i}].valueFrom.secretKeyRef.name", name))
    for path, name in refs:
        if name not in rendered and name not in EXTERNAL_SECRETS:
            yield f"{ref(obj)}: {path}: Secret {name!r} is neither rendered nor a documented hand-made Secret"


def _selects(selector: Obj, labels: Obj) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def prod_violations(objects: list[Obj], min_triton: int = 3) -> list[str]:
    """What only prod must have: no Secret from git, HPA + PDB on the gateway, Triton x N with a PDB."""
    out: list[str] = []
    by = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    for o in objects:
        if o["kind"] == "Secret":
            out.append(f"{ref(o)}: prod renders no Secret: create it by hand (deploy/README.md)")
    gw = by.get(("Deployment", GATEWAY))
    hpa = by.get(("HorizontalPodAutoscaler", GATEWAY))
    if hpa is None:
        out.append(f"HorizontalPodAutoscaler/{GATEWAY}: missing")
    elif _get(hpa, "spec", "scaleTargetRef", "name") != GATEWAY or _get(hpa, "spec", "scaleTargetRef", "kind") != "Deployment":
        out.append(f"{ref(hpa)}: spec.scaleTargetRef: does not target Deployment/{GATEWAY}")
    for kind, name in (("Deployment", GATEWAY), ("StatefulSet", "triton")):
        wl = by.get((kind, name))
        pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget" and wl is not None
                and _selects(o["spec"].get("selector", {}), wl["spec"]["template"]["metadata"].get("labels", {}))]
        if not pdbs:
            out.append(f"{kind}/{name}: no PodDisruptionBudget selects its pods")
        for pdb in pdbs:
            floor = _get(hpa, "spec", "minReplicas") if kind == "Deployment" and hpa else (wl or {}).get("spec", {}).get("replicas", 1)
            if isinstance(pdb["spec"].get("minAvailable"), int) and pdb["spec"]["minAvailable"] >= (floor or 1):
                out.append(f"{ref(pdb)}: spec.minAvailable: {pdb['spec']['minAvailable']} leaves no pod evictable "
                           f"(replicas {floor}): node drains would block")
    tri = by.get(("StatefulSet", "triton"))
    if tri is None:
        out.append("StatefulSet/triton: missing")
    else:
        if (tri["spec"].get("replicas") or 1) < min_triton:
            out.append(f"{ref(tri)}: spec.replicas: {tri['spec'].get('replicas')} < {min_triton}")
        args = tri["spec"]["template"]["spec"]["containers"][0].get("args") or []
        if "--model-control-mode=explicit" not in args:
            out.append(f"{ref(tri)}: spec.template.spec.containers[triton].args: no --model-control-mode=explicit")
    if gw is None:
        out.append(f"Deployment/{GATEWAY}: missing")
    return out
