"""Pure parts: signatures and their mismatches, the rollout plan, per-step figures, the
pyfunc wrapper running a python-backend model.py without Triton."""

from __future__ import annotations

import numpy as np
import pytest

from registry.errors import BadInput
from registry.rollout import parse_plan, sample_metrics, step_figures
from registry.signature import Signature
from runtime.triton import DEFAULT_REPOSITORY


def test_signature_from_the_served_config_and_mismatches_name_the_field():
    served = Signature.from_pbtxt((DEFAULT_REPOSITORY / "clf" / "config.pbtxt").read_text())
    assert served.to_dict() == {"inputs": [{"name": "INPUT", "datatype": "FP32", "dims": [20]}],
                                "outputs": [{"name": "PROBS", "datatype": "FP32", "dims": [4]}]}
    assert Signature.for_folder(DEFAULT_REPOSITORY / "clf" / "2") == served
    assert served.mismatches(served, "clf") == []
    other = Signature.from_dict({"inputs": [{"name": "X", "datatype": "FP64", "dims": [20]}],
                                 "outputs": [{"name": "PROBS", "datatype": "FP32", "dims": [3]}]})
    problems = other.mismatches(served, "clf")
    assert any(p.startswith("signature.inputs[0].name: 'X'") for p in problems)
    assert any(p.startswith("signature.outputs[0].dims: PROBS is [3]") for p in problems)
    assert any("also has ['INPUT']" in p for p in problems)


@pytest.mark.parametrize("doc, where", [
    ({}, "signature.inputs"),
    ({"inputs": [{"name": "X", "datatype": "FP99", "dims": [1]}], "outputs": [{"name": "Y", "datatype": "FP32",
                                                                              "dims": [1]}]}, "datatype"),
    ({"inputs": [{"name": "X", "datatype": "FP32", "dims": "20"}], "outputs": [{"name": "Y", "datatype": "FP32",
                                                                               "dims": [1]}]}, "dims"),
])
def test_bad_signatures_are_refused(doc, where):
    with pytest.raises(BadInput, match=where.replace("[", r"\[")):
        Signature.from_dict(doc)


@pytest.mark.parametrize("raw", ["", "50,10,100", "10,50", "0,100", "10,x", "10,150"])
def test_bad_plans(raw):
    with pytest.raises(BadInput, match="--plan"):
        parse_plan(raw)


def test_plan():
    assert parse_plan("10,50,100") == [10, 50, 100]
    assert parse_plan("100") == [100]


METRICS = """# TYPE infergate_requests_total counter
infergate_requests_total{{model="clf",variant="a"}} {a}
infergate_requests_total{{model="clf",variant="b"}} {b}
infergate_errors_total{{model="clf",variant="b",reason="unavailable"}} {e}
infergate_request_duration_seconds_bucket{{model="clf",variant="b",le="0.005"}} {b5}
infergate_request_duration_seconds_bucket{{model="clf",variant="b",le="0.01"}} {b}
infergate_request_duration_seconds_bucket{{model="clf",variant="b",le="+Inf"}} {b}
infergate_requests_total{{model="other",variant="a"}} 99
"""


def test_step_figures_from_two_scrapes():
    first = sample_metrics(METRICS.format(a=10, b=100, e=0, b5=100), "clf")
    last = sample_metrics(METRICS.format(a=210, b=300, e=3, b5=297), "clf")
    rows = step_figures(first, last, 2.0)
    assert rows["a"] == {"requests": 200, "rps": 100.0, "errors": 0, "p99_ms": None}
    # 197 of 200 within 5 ms (98.5 %): the 99th percentile is in the 10 ms bucket
    assert rows["b"] == {"requests": 200, "rps": 100.0, "errors": 3, "p99_ms": 10.0}


def test_pyfunc_wrapper_runs_the_version_model_py(tmp_path):
    """The wrapper's stand-in for triton_python_backend_utils runs model.py as Triton would."""
    import shutil
    from types import SimpleNamespace
    from registry.pyfunc_model import TritonVersionModel
    from runtime.modelgen import load_weights, reference_forward
    folder = tmp_path / "triton"
    shutil.copytree(DEFAULT_REPOSITORY / "clf" / "1", folder)
    sig = Signature.for_folder(DEFAULT_REPOSITORY / "clf" / "1")
    (folder / "signature.json").write_text(__import__("json").dumps(sig.to_dict()))
    model = TritonVersionModel()
    model.load_context(SimpleNamespace(artifacts={"triton": str(folder)}))
    x = np.random.default_rng(1).standard_normal((9, 20)).astype(np.float32)
    got = model.predict(None, x)
    assert got.dtype == np.float32 and got.shape == (9, 4)
    np.testing.assert_allclose(got, reference_forward(load_weights(1), x), atol=1e-6)


def test_install_is_atomic_numbered_and_reused(tmp_path):
    """A version folder lands under the next free number by rename; the same registered
    version installs once."""
    from types import SimpleNamespace
    from registry.lifecycle import Lifecycle
    from registry.store import VersionRef
    model_dir = tmp_path / "clf"
    for v in ("1", "2"):
        (model_dir / v).mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.py").write_text("# model\n")
    lc = Lifecycle(SimpleNamespace(uri="sqlite:///x.db"), gateway=None)  # type: ignore[arg-type]
    one, two = VersionRef("clf", "1", None), VersionRef("clf", "2", None)
    assert lc.install(one, src, model_dir) == ("3", True)
    assert lc.install(one, src, model_dir) == ("3", False)
    assert lc.install(two, src, model_dir) == ("4", True)
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "3", "4"]
    assert (model_dir / "4" / "model.py").read_text() == "# model\n"
    with pytest.raises(BadInput, match="no 'other' directory"):
        lc.install(one, src, tmp_path / "other")
