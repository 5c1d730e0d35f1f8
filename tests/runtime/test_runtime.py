"""The Triton runtime manager and the generated model repository."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc

from runtime.modelgen import INPUT_WIDTH, generate, load_weights, reference_forward
from runtime.triton import DEFAULT_REPOSITORY, SHM_DIR, TritonRuntime, TritonServer


def test_model_repo_is_regenerated_byte_for_byte(tmp_path: Path) -> None:
    generate(tmp_path)
    cmp = filecmp.dircmp(DEFAULT_REPOSITORY / "clf", tmp_path / "clf")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in cmp.subdirs.values():
        assert not sub.diff_files and not sub.left_only and not sub.right_only


def test_versions_differ(triton: TritonServer) -> None:
    x = np.random.default_rng(3).standard_normal((5, INPUT_WIDTH)).astype(np.float32)
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    outs = {}
    for version in ("1", "2"):
        inp = triton_grpc.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        outs[version] = client.infer("clf", [inp], model_version=version).as_numpy("PROBS")
        np.testing.assert_allclose(outs[version], reference_forward(load_weights(int(version)), x),
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(outs["1"], outs["2"])
    client.close()


def test_stop_removes_shared_memory_and_process(triton_runtime: TritonRuntime, tmp_path: Path) -> None:
    server = TritonServer(triton_runtime, models=["clf"], log_path=tmp_path / "t.log").start()
    assert server.is_ready()
    assert list(SHM_DIR.glob(f"{server.shm_prefix}*")), "the python backend should hold shm regions"
    proc = server.process
    server.stop()
    assert proc.poll() is not None
    assert not list(SHM_DIR.glob(f"{server.shm_prefix}*"))
    assert repr(server).endswith("[stopped]>")


def test_a_crashed_server_is_cleaned_up(triton_runtime: TritonRuntime, tmp_path: Path) -> None:
    server = TritonServer(triton_runtime, models=["clf"], log_path=tmp_path / "t.log").start()
    server.kill()
    server.stop()
    assert not list(SHM_DIR.glob(f"{server.shm_prefix}*"))
