"""The committed YAMLs are what `python -m pipelines compile` writes, and load back with kfp
as the task graphs the pipelines declare."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kfp import components

from pipelines.cli import CONFIGMAP, DEPLOY_DIR, compile_all
from pipelines.definitions import PIPELINES

GRAPHS = {
    "features": {"load-source": [], "validate": ["load-source"], "apply-materialize": ["load-source", "validate"],
                 "check-online": ["apply-materialize", "load-source"]},
    "train": {"training-set": [], "train": ["training-set"], "evaluate-register": ["train"]},
    "synthetic": {"feature-table": [], "train-gan": ["feature-table"], "gate-publish": ["train-gan"]},
    "rollout": {"preflight": [], "deploy": ["preflight"], "ramp": ["deploy"], "promote-or-rollback": ["ramp"]},
    "ab-report": {"collect": [], "analyse": ["collect"], "report": ["analyse"]},
}


def test_compiled_yamls_are_current_and_reproducible(tmp_path: Path) -> None:
    first = compile_all(tmp_path / "a", tmp_path / "cm.yaml")
    second = compile_all(tmp_path / "b", None)
    assert [p.name for p in first] == [f"{n}.yaml" for n in PIPELINES]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), f"{a.name}: two compiles differ"
        committed = DEPLOY_DIR / a.name
        assert committed.is_file(), f"{committed} is missing: run `python -m pipelines compile`"
        assert committed.read_bytes() == a.read_bytes(), \
            f"{committed} is stale: run `python -m pipelines compile` and commit it"
    assert CONFIGMAP.read_bytes() == (tmp_path / "cm.yaml").read_bytes(), \
        f"{CONFIGMAP} is stale: run `python -m pipelines compile` and commit it"
    cm = yaml.safe_load(CONFIGMAP.read_text())
    assert {k: v for k, v in cm["data"].items()} == {p.name: p.read_text() for p in first}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_yaml_loads_back_with_its_task_graph(name: str) -> None:
    path = DEPLOY_DIR / f"{name}.yaml"
    comp = components.load_component_from_file(str(path))
    assert comp.name == name
    doc = yaml.safe_load(path.read_text())
    tasks = doc["root"]["dag"]["tasks"]
    graph = {t: sorted(spec.get("dependentTasks", [])) for t, spec in tasks.items()}
    assert graph == GRAPHS[name]
    for t, spec in tasks.items():   # every task runs the project's image and calls its step
        executor = doc["deploymentSpec"]["executors"][spec["componentRef"]["name"].replace("comp-", "exec-")]
        assert executor["container"]["image"].startswith("infergate/")
        assert "from pipelines.steps import" in "".join(executor["container"]["command"])
    params = set(doc["root"]["inputDefinitions"]["parameters"])
    assert "workdir" in params
