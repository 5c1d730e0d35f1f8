"""Deploy, promote, roll back: the registry's moves, each safe to interrupt before its switch.

Order of a deploy (nothing routed changes until the last step): resolve the version in
MLflow, check its signature against the model Triton serves, write its folder into the
served repository (temp dir + rename), load it on every replica keeping the versions still
loaded, wait until all say ready, compare their answers with MLflow's pyfunc on fixed rows,
then point the variant at it with one admin `PUT` (the gateway refuses targets Triton has not
got ready, and spreads the change through Redis). A replaced version is unloaded only once the
gateway holds no batcher for it (`GET /admin/targets`).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from registry.errors import BadInput, DeployFailed, LifecycleError, NotFound
from registry.gateway_client import GatewayAdmin
from registry.signature import Signature
from registry.store import ModelStore, VersionRef, triton_folder
from registry.triton_control import TritonReplicas

TRITON_VERSION_TAG = "infergate.triton_version"
DEPLOYED_TAG = "infergate.deployed"
MARKER = "registry.json"   # in an installed version folder: which registered version it holds
CHECK_ROWS = 64


def fixed_rows(sig: Signature, n: int = CHECK_ROWS, seed: int = 20261129) -> np.ndarray:
    spec = sig.inputs[0]
    rng = np.random.default_rng(seed)
    return (3.0 * rng.standard_normal((n, *spec.dims))).astype(spec.numpy_dtype)


@dataclass
class Lifecycle:
    store: ModelStore
    gateway: GatewayAdmin
    repository: Path | None = None        # overrides what the gateway reports
    report: Callable[[str], None] = lambda line: None
    ready_timeout_s: float = 60.0
    up_wait_s: float = 15.0
    drain_timeout_s: float = 30.0
    # Only the gateway process that answers is watched; the other replicas / --workers got the
    # same change within ~20 ms through Redis and retire on the same schedule: a margin for them.
    settle_s: float = 1.0
    atol: float = 1e-6
    rtol: float = 1e-5
    timings: dict[str, float] = field(default_factory=dict)

    # -- what the gateway knows ------------------------------------------------------------

    def replicas(self) -> tuple[TritonReplicas, Path]:
        # Triton says "not ready" while a model of it loads or unloads (strict readiness), so a
        # replica that just swapped versions reads as down for a moment: wait that out.
        deadline = time.monotonic() + self.up_wait_s
        while True:
            doc = self.gateway.triton()
            urls = [r["url"] for r in doc.get("replicas", [])]
            down = [r["url"] for r in doc.get("replicas", []) if not r.get("up")]
            if not down:
                break
            if time.monotonic() > deadline:
                raise LifecycleError(f"Triton replica(s) {down} are down: a version must load on every replica")
            time.sleep(0.2)
        repo = self.repository or doc.get("model_repository")
        if not repo:
            raise BadInput("the gateway does not report its model repository "
                           "(start it with --model-repository) and no --model-repository was given")
        return TritonReplicas(urls, timeout_s=self.ready_timeout_s), Path(repo)

    def experiment(self, name: str) -> tuple[dict[str, Any], int | None]:
        state = self.gateway.experiment(name)
        return state["config"], state.get("version")

    @staticmethod
    def variant(cfg: dict[str, Any], name: str) -> dict[str, Any]:
        for v in cfg["variants"]:
            if v["name"] == name:
                return v
        raise NotFound(f"--variant: experiment {cfg['name']!r} has no variant {name!r} "
                       f"(it has {[v['name'] for v in cfg['variants']]})")

    @staticmethod
    def control(cfg: dict[str, Any]) -> dict[str, Any]:
        name = cfg.get("control") or cfg["variants"][0]["name"]
        return next(v for v in cfg["variants"] if v["name"] == name)

    def _put(self, name: str, cfg: dict[str, Any], reason: str, version: int | None) -> dict[str, Any]:
        body = {k: v for k, v in cfg.items() if k != "name"}
        return self.gateway.put_experiment(name, body, reason, if_match=version)

    def routed_versions(self, model: str) -> set[str]:
        """Versions of `model` some experiment still routes to, or a gateway batcher still holds."""
        out = set()
        for state in self.gateway.experiments():
            cfg = state["config"]
            targets = [v["target"] for v in cfg["variants"]]
            if cfg.get("shadow"):
                targets.append(cfg["shadow"]["target"])
            out |= {str(t.get("version", "")) for t in targets if t["model"] == model}
        out |= {t["version"] for t in self.gateway.targets() if t["model"] == model}
        return out

    # -- install ---------------------------------------------------------------------------

    def install(self, ref: VersionRef, folder: Path, model_dir: Path) -> tuple[str, bool]:
        """Put the version folder into the served repository under a free Triton version number,
        atomically (a complete copy renamed into place). Reuses an earlier install."""
        if not model_dir.is_dir():
            raise BadInput(f"model repository has no {model_dir.name!r} directory: {model_dir}")
        marker = {"registry": self.store.uri, "model": ref.model, "version": ref.version}
        numbers = []
        for d in model_dir.iterdir():
            if not d.name.isdigit():
                continue
            numbers.append(int(d.name))
            try:
                if json.loads((d / MARKER).read_text()) == marker:
                    return d.name, False
            except (OSError, ValueError):
                pass
        tmp = model_dir / f".incoming-{uuid.uuid4().hex[:8]}"
        shutil.copytree(folder, tmp)
        (tmp / MARKER).write_text(json.dumps(marker))
        n = max(numbers, default=0) + 1
        while True:
            try:
                os.rename(tmp, model_dir / str(n))   # fails if a concurrent deploy took n
                return str(n), True
            except OSError:
                if not (model_dir / str(n)).exists():
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                n += 1

    # -- deploy ----------------------------------------------------------------------------

    def deploy(self, ref: VersionRef, experiment: str, variant: str, weight: float) -> dict[str, Any]:
        t0 = time.monotonic()
        if not 0 <= weight <= 100:
            raise BadInput(f"--weight: must be between 0 and 100 (percent), got {weight:g}")
        cfg, cfg_version = self.experiment(experiment)
        v = self.variant(cfg, variant)
        control = self.control(cfg)
        if control["name"] == variant:
            raise BadInput(f"--variant: {variant!r} is the control of {experiment!r}; deploy to a treatment "
                           "and promote it")
        model = v["target"]["model"]
        replicas, repo = self.replicas()
        try:
            served = replicas.served_signature(model)
            with tempfile.TemporaryDirectory(prefix="infergate-deploy-") as tmp:
                local = self.store.download(ref, Path(tmp))
                folder = triton_folder(local)
                sig = Signature.for_folder(folder)
                problems = sig.mismatches(served, model)
                if problems:
                    raise BadInput(f"{ref.uri} does not fit the served model {model!r}: " + "; ".join(problems))
                pyfunc = self.store.load_pyfunc(ref, local)
                try:
                    expected = pyfunc.predict(fixed_rows(sig))
                except Exception as exc:
                    raise DeployFailed(f"{ref.uri}: its pyfunc fails on {CHECK_ROWS} fixed rows: "
                                       f"{type(exc).__name__}: {exc}") from exc
                t_fetched = time.monotonic()
                before = set().union(*replicas.ready_versions(model).values())
                routed = self.routed_versions(model)
                if "" in routed:
                    raise BadInput(f"an experiment routes {model} without a version (latest): a new "
                                   "version would change what it serves; pin its version first")
                tv, created = self.install(ref, folder, repo / model)
                self.report(f"deploy: {ref.uri} -> {repo / model / tv} ({'written' if created else 'already there'})")
            t_written = time.monotonic()
            try:
                if tv not in before:
                    # Triton reloads every version it keeps (one stub start each): keep only
                    # the routed ones, plus the new one.
                    replicas.load(model, (before & routed) | {tv})
                ready_s = replicas.wait_ready(model, tv, self.ready_timeout_s)
                self.report(f"deploy: {model}:{tv} ready on {len(replicas.urls)} replica(s)")
                for url, got in replicas.infer(model, tv, sig, fixed_rows(sig)).items():
                    diff = float(np.max(np.abs(got - expected)))
                    if not np.allclose(got, expected, rtol=self.rtol, atol=self.atol):
                        raise DeployFailed(f"{url} answers {model}:{tv} differently from MLflow's pyfunc "
                                           f"(max |diff| {diff:.3g} on {CHECK_ROWS} fixed rows)")
            except LifecycleError:
                self._undo(replicas, model, before, tv, created, repo)
                raise
            t_loaded = time.monotonic()
            old = dict(v["target"])
            new = copy.deepcopy(cfg)
            nv = self.variant(new, variant)
            nv["target"] = {"model": model, "version": tv}
            nv["weight"] = weight
            try:
                self._rebalance(new, experiment)
                self._put(experiment, new, f"registry: deploy {ref.uri} as {variant} at {weight:g}%", cfg_version)
            except LifecycleError:   # refused or lost: the new version must not stay behind
                self._undo(replicas, model, before, tv, created, repo)
                raise
            t_live = time.monotonic()
            self.report(f"deploy: {experiment}/{variant} -> {model}:{tv} at {weight:g}%")
            self.store.set_tag(ref, TRITON_VERSION_TAG, tv)
            self.store.set_tag(ref, DEPLOYED_TAG, f"{experiment}/{variant}")
            timings = {"fetch_check_s": t_fetched - t0, "write_s": t_written - t_fetched,
                       "load_ready_s": t_loaded - t_written, "ready_wait_s": ready_s,
                       "switch_s": t_live - t_loaded, "total_s": t_live - t0}
            if str(old.get("version", "")) != tv:
                self.retire(replicas, model, str(old.get("version", "")))
            return {"model": ref.model, "version": ref.version, "triton_version": tv, "experiment": experiment,
                    "variant": variant, "weight": weight, "replicas": list(replicas.urls),
                    "timings_s": {k: round(x, 3) for k, x in timings.items()}}
        finally:
            replicas.close()

    def _undo(self, replicas: TritonReplicas, model: str, before: set[str], tv: str, created: bool,
              repo: Path) -> None:
        """A deploy failed before its switch: back to the versions that were loaded."""
        if tv not in before and before:
            try:
                replicas.load(model, before)
            except LifecycleError as exc:
                self.report(f"deploy: could not unload {model}:{tv} again: {exc.message}")
        if created:
            shutil.rmtree(repo / model / tv, ignore_errors=True)

    @staticmethod
    def _rebalance(cfg: dict[str, Any], experiment: str) -> None:
        control = Lifecycle.control(cfg)
        rest = round(sum(v["weight"] for v in cfg["variants"] if v is not control), 2)
        if rest > 100:
            raise BadInput(f"--weight: treatments of {experiment!r} would take {rest:g}% (> 100)")
        control["weight"] = round(100 - rest, 2)

    # -- weight, promote, rollback -------------------------------------------------------------

    def set_weight(self, experiment: str, variant: str, weight: float, reason: str) -> dict[str, Any]:
        cfg, version = self.experiment(experiment)
        new = copy.deepcopy(cfg)
        self.variant(new, variant)["weight"] = weight
        self._rebalance(new, experiment)
        self._put(experiment, new, reason, version)
        return {v["name"]: v["weight"] for v in new["variants"]}

    def promote(self, ref: VersionRef, experiment: str, variant: str | None = None,
                alias: str = "champion") -> dict[str, Any]:
        tv = ref.tags.get(TRITON_VERSION_TAG)
        if not tv:
            raise BadInput(f"{ref.uri} was never deployed (no {TRITON_VERSION_TAG} tag): run deploy first")
        cfg, version = self.experiment(experiment)
        control = self.control(cfg)
        model = control["target"]["model"]
        treatments = [v for v in cfg["variants"] if v is not control
                      and (v["name"] == variant if variant else str(v["target"].get("version")) == tv)]
        if not treatments:
            raise BadInput(f"no treatment of {experiment!r} serves {model}:{tv}; deploy it first")
        old = str(control["target"].get("version", ""))
        new = copy.deepcopy(cfg)
        nc = self.control(new)
        nc["target"] = {"model": model, "version": tv}
        for t in treatments:
            self.variant(new, t["name"])["weight"] = 0
        self._rebalance(new, experiment)
        self._put(experiment, new, f"registry: promote {ref.uri} to control {nc['name']}", version)
        self.store.set_alias(ref.model, alias, ref.version)
        self.report(f"promote: {experiment}/{nc['name']} -> {model}:{tv}; {ref.model}@{alias} = {ref.version}")
        replicas, _ = self.replicas()
        try:
            if old != tv:
                self.retire(replicas, model, old)
        finally:
            replicas.close()
        return {"experiment": experiment, "control": nc["name"], "triton_version": tv,
                "alias": alias, "version": ref.version, "unloaded": old if old != tv else None}

    def rollback(self, experiment: str, variant: str, reason: str = "registry: rollback") -> dict[str, Any]:
        """Treatment to 0 % and back onto the control's target; its version unloads after drain."""
        cfg, version = self.experiment(experiment)
        control = self.control(cfg)
        v = self.variant(cfg, variant)
        if v is control:
            raise BadInput(f"--variant: {variant!r} is the control; nothing to roll back")
        old = str(v["target"].get("version", ""))
        model = v["target"]["model"]
        changed = v["weight"] != 0 or v["target"] != control["target"]
        if changed:
            new = copy.deepcopy(cfg)
            nv = self.variant(new, variant)
            nv["weight"], nv["target"] = 0, dict(control["target"])
            self._rebalance(new, experiment)
            self._put(experiment, new, reason, version)
            self.report(f"rollback: {experiment}/{variant} at 0%, off {model}:{old}")
        replicas, _ = self.replicas()
        try:
            if old != str(control["target"].get("version", "")):
                self.retire(replicas, model, old)
        finally:
            replicas.close()
        return {"experiment": experiment, "variant": variant, "changed": changed, "unloaded": old}

    def retire(self, replicas: TritonReplicas, model: str, version: str) -> bool:
        """Unload `model` `version` once nothing routes to it and no batcher holds it."""
        if not version:
            return False
        deadline = time.monotonic() + self.drain_timeout_s
        while version in self.routed_versions(model):
            if any(version == str(v["target"].get("version")) for s in self.gateway.experiments()
                   for v in s["config"]["variants"] if v["target"]["model"] == model):
                self.report(f"unload: {model}:{version} is still routed; kept")
                return False
            if time.monotonic() > deadline:
                self.report(f"unload: {model}:{version} still held after {self.drain_timeout_s:g}s; kept")
                return False
            time.sleep(0.1)
        time.sleep(self.settle_s)
        loaded = set().union(*replicas.ready_versions(model).values())
        if version not in loaded:
            return False
        replicas.load(model, loaded - {version})
        self.report(f"unload: {model}:{version} drained and unloaded on {len(replicas.urls)} replica(s)")
        return True
