"""`python -m bench.anymodel`: one bench cell for a 2-input INT64 model (`text_ids`: token ids +
attention mask, [1, 8] each, KServe v2 JSON), gateway vs Triton-direct, wrk at c=64.

    python -m bench.anymodel [--connections 64] [--duration 5] [--runs 3] [--json]

Starts Triton with the any-model test models (`runtime.modelgen --test-models`, a temp dir)
and a features-off gateway, which routes `text_ids` by its default route; runs are
interleaved (Triton, gateway, Triton, ...) and each side's cell is the median of its runs.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.wrk import wrk_binary
from runtime.modelgen import generate_test_models
from runtime.stack import GatewayProcess
from runtime.triton import TritonRuntime, TritonServer

BODY = json.dumps({"inputs": [
    {"name": "INPUT_IDS", "datatype": "INT64", "shape": [1, 8], "data": [101, 7592, 2088, 2003, 1037, 3231, 999, 102]},
    {"name": "ATTENTION_MASK", "datatype": "INT64", "shape": [1, 8], "data": [1, 1, 1, 1, 1, 1, 1, 0]}]})
LUA = """wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-unit-id"] = "bench"
""" % BODY
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict:
    done = subprocess.run([wrk_binary() or "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                           "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 30)
    out = done.stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk against {url} printed no rate: {out[-500:]} {done.stderr[-500:]}")
    rps = float(found.group(1))
    lat = {p: float(v) * _UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "non2xx": int(non2xx.group(1)) if non2xx else 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.anymodel", description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if wrk_binary() is None:
        print("wrk is not installed: `make wrk`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="anymodel-bench-") as tmp:
        repo, script = Path(tmp) / "repo", Path(tmp) / "body.lua"
        generate_test_models(repo)
        script.write_text(LUA)
        with TritonServer(TritonRuntime.ensure(), models=["text_ids"], repository=repo,
                          log_path=Path(tmp) / "triton.log") as triton, \
                GatewayProcess(triton.grpc_url, args=["--features", "off"],
                               env={"INFERGATE_REDIS_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:"},
                               log_path=Path(tmp) / "gateway.log") as gw:
            urls = {"triton_direct": f"http://{triton.http_url}/v2/models/text_ids/infer",
                    "gateway": f"{gw.url}/v2/models/text_ids/infer"}
            cells: dict[str, list[dict]] = {k: [] for k in urls}
            for name, url in urls.items():  # warm-up
                run_wrk(url, script, a.connections, 2)
            for i in range(a.runs):
                for name, url in urls.items():
                    print(f"[bench] {name} c={a.connections} run {i + 1}/{a.runs}", file=sys.stderr)
                    cells[name].append(run_wrk(url, script, a.connections, a.duration))
    result = {name: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
              | {"non2xx": sum(r["non2xx"] for r in runs)} for name, runs in cells.items()}
    result["gateway_over_direct_rps"] = round(result["gateway"]["rps"] / result["triton_direct"]["rps"], 3)
    if a.json:
        print(json.dumps(result))
    else:
        for name in urls:
            r = result[name]
            print(f"{name:14s} c={a.connections}  {r['rps']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                  f"p99 {r['p99_ms']:.2f} ms  non-2xx {r['non2xx']}")
        print(f"gateway / direct: {result['gateway_over_direct_rps']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
