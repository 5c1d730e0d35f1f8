"""Medians over the ABAB rounds of abab.sh: gateway_full against its own run's Triton-direct.

    python bench/results/start-vs-now/summarise.py [DIR]   # DIR holds base-*-roundN.json, main-*-roundN.json
Writes summary.json and start-vs-now.png beside the inputs.
"""
import json
import statistics
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
runs: dict[tuple[str, int], list[dict]] = {}
for path in sorted(here.glob("*-round*.json")):
    tree = path.name.split("-")[0]
    doc = json.loads(path.read_text())
    direct = {c["connections"]: c for c in doc["cells"] if c["target"] == "triton_direct"}
    for c in doc["cells"]:
        if c["target"] == "gateway_full":
            n = c["connections"]
            runs.setdefault((tree, n), []).append({
                "file": path.name, "commit": doc["machine"].get("git_commit"),
                "rps": round(c["rps"]), "vs_direct": round(c["rps"] / direct[n]["rps"], 3),
                "p99_ms": c["p99_ms"], "p99_vs_direct": round(c["p99_ms"] / direct[n]["p99_ms"], 2),
                "gateway_cpu_us_per_req": c["cpu_us_per_request"]["gateway"]})
keys = ("rps", "vs_direct", "p99_ms", "p99_vs_direct", "gateway_cpu_us_per_req")
medians = {f"{t} c={n}": {k: statistics.median(r[k] for r in rs) for k in keys} for (t, n), rs in sorted(runs.items())}
doc = {"rounds": {f"{t} c={n}": rs for (t, n), rs in sorted(runs.items())}, "medians": medians}
(here / "summary.json").write_text(json.dumps(doc, indent=1))
for k, m in medians.items():
    print(k, m)

LABEL = {"base": "c4be410, issue 17 filed", "main": "acb1ae9, main now"}
conns = sorted({n for _, n in runs})
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
for tree, colour in (("base", "tab:grey"), ("main", "tab:blue")):
    xs = [i + (-0.2 if tree == "base" else 0.2) for i in range(len(conns))]
    a1.bar(xs, [medians[f"{tree} c={n}"]["vs_direct"] for n in conns], 0.4, color=colour, label=LABEL[tree])
    a2.bar(xs, [medians[f"{tree} c={n}"]["gateway_cpu_us_per_req"] for n in conns], 0.4, color=colour, label=LABEL[tree])
for ax, title in ((a1, "throughput / Triton-direct (same run)"), (a2, "gateway CPU µs per request")):
    ax.set_xticks(range(len(conns)), [f"c={n}" for n in conns])
    ax.set_title(title)
    ax.legend()
fig.suptitle("issue 17: its starting tree vs now, same sitting, medians of 3 rounds")
fig.tight_layout()
fig.savefig(here / "start-vs-now.png", dpi=100)
