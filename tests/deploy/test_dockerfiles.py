"""The Dockerfiles, checked statically: there is no Docker engine on these machines to build them.

Multi-stage, every base pinned to a version (never latest), a non-root numeric USER in the
final stage matching the pods' runAsUser, COPY sources that exist in the build context (the
repository root), and Triton's runtime pinned exactly as runtime/triton.py pins it (numpy < 2).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from deploy.render import DEPLOY
from runtime.triton import PYTRITON_REQUIREMENTS

ROOT = DEPLOY.parent
IMAGES = {p.parent.name: p for p in sorted((DEPLOY / "images").glob("*/Dockerfile"))}
# image name in the manifests -> Dockerfile directory
MANIFEST_IMAGE = {"gateway": "infergate/gateway", "triton": "infergate/triton-runtime", "mlflow": "infergate/mlflow"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def test_all_three_images_exist() -> None:
    assert set(IMAGES) == set(MANIFEST_IMAGE)


@pytest.mark.parametrize("name", sorted(MANIFEST_IMAGE))
def test_multistage_pinned_bases(name: str) -> None:
    st = stages(IMAGES[name])
    assert len(st) >= 2, f"{IMAGES[name]}: not multi-stage"
    for stage in st:
        image = stage[0][1].split()[0]
        assert "$" not in image, f"{IMAGES[name]}: FROM {image}: resolve build args to a pinned image"
        ref = image.rsplit("/", 1)[-1]
        tag = ref.partition("@")[0].partition(":")[2]
        assert "@sha256:" in image or re.search(r"\d+\.\d+\.\d+", tag), \
            f"{IMAGES[name]}: FROM {image}: pin a full version (x.y.z) or a digest"
        assert tag != "latest", f"{IMAGES[name]}: FROM {image}: never latest"


@pytest.mark.parametrize("name", sorted(MANIFEST_IMAGE))
def test_final_stage_runs_as_the_manifests_non_root_uid(name: str, rendered: dict) -> None:
    final = stages(IMAGES[name])[-1]
    users = [args for ins, args in final if ins == "USER"]
    assert users, f"{IMAGES[name]}: final stage has no USER"
    uid = users[-1].partition(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{IMAGES[name]}: USER {users[-1]}: use a numeric non-zero uid"
    last_user = max(i for i, (ins, _) in enumerate(final) if ins == "USER")
    assert not any(ins == "RUN" for ins, _ in final[last_user:]), f"{IMAGES[name]}: RUN after USER"
    # runAsNonRoot with a named user cannot be verified by the kubelet: the uid must match.
    for obj in rendered["dev"]:
        spec = (obj.get("spec", {}).get("jobTemplate", {}).get("spec", obj.get("spec", {}))
                .get("template", {}).get("spec"))
        for c in (spec or {}).get("containers", []):
            if c["image"].split(":")[0] == MANIFEST_IMAGE[name]:
                want = c.get("securityContext", {}).get("runAsUser", spec["securityContext"]["runAsUser"])
                assert int(uid) == want, f"{obj['kind']}/{obj['metadata']['name']}: runAsUser {want} != image uid {uid}"


@pytest.mark.parametrize("name", sorted(MANIFEST_IMAGE))
def test_copy_sources_exist_in_the_build_context(name: str) -> None:
    for ins, args in instructions(IMAGES[name]):
        if ins != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = shlex.split(args)
        for src in sources:
            assert (ROOT / src).exists(), f"{IMAGES[name]}: COPY {src}: not in the build context (repo root)"


def test_triton_image_pins_the_runtime_like_runtime_triton() -> None:
    text = " ".join(a for ins, a in instructions(IMAGES["triton"]) if ins == "RUN")
    for req in PYTRITON_REQUIREMENTS:   # nvidia-pytriton==0.7.0, numpy<2
        assert f"'{req}'" in text, f"{IMAGES['triton']}: RUN pip install lacks {req!r}"
    stub = re.search(r"python_backend_stubs/(\d+\.\d+)/", text)
    base = re.search(r"python:(\d+\.\d+)\.", stages(IMAGES["triton"])[-1][0][1])
    assert stub and base and stub.group(1) == base.group(1), "the backend stub must match the image's Python"


def test_gateway_image_installs_the_features_extra() -> None:
    text = " ".join(a for ins, a in instructions(IMAGES["gateway"]) if ins == "RUN")
    assert "'.[features]'" in text, "the gateway image runs Feast (CronJob) and the feature reader"
