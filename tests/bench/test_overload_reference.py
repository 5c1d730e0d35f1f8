"""The overload benchmark's reference probe: the same probe as the gateway's, against Triton's
own HTTP port, must get Triton's instant refusal (404 for an unknown model), or the "floor"
it reports would time something else."""

from __future__ import annotations

import json

from bench.overload import start_reference_probe

from runtime.triton import TritonServer


def test_reference_probe_times_tritons_instant_refusal(triton: TritonServer) -> None:
    proc = start_reference_probe(triton.http_url, 0.5)
    assert proc.stdout is not None
    out = json.loads(proc.stdout.read())
    assert proc.wait(timeout=30) == 0
    assert len(out) >= 20                          # a request every 10 ms, for 0.5 s
    assert {status for status, _ in out} == {404}, out[:5]
    assert all(0 < seconds < 10 for _, seconds in out)   # times, in seconds (speed: the benchmark's)
