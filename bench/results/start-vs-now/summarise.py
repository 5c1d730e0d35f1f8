"""Medians over the ABAB rounds of abab.sh: gateway_full against its own run's Triton-direct.

    python bench/results/start-vs-now/summarise.py [DIR] [--base LABEL --main LABEL --title T --png NAME]
DIR holds base-roundN.json and main-roundN.json. Writes summary.json and the PNG (three panels:
throughput and p99 against Triton-direct, the gateway's CPU per request) beside the inputs.
"""
import argparse
import json
import statistics
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("dir", nargs="?", type=Path, default=Path(__file__).parent)
ap.add_argument("--base", default="c4be410, issue 17 filed")
ap.add_argument("--main", default="acb1ae9, main now")
ap.add_argument("--title", default="issue 17: its starting tree vs now, same sitting, medians of 3 rounds")
ap.add_argument("--png", default="start-vs-now.png")
args = ap.parse_args()
here = args.dir
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

LABEL = {"base": args.base, "main": args.main}
PANELS = (("vs_direct", "throughput / Triton-direct (same run)"), ("p99_vs_direct", "p99 / Triton-direct's"),
          ("gateway_cpu_us_per_req", "gateway CPU µs per request"))
conns = sorted({n for _, n in runs})
fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4))
for tree, colour in (("base", "tab:grey"), ("main", "tab:blue")):
    xs = [i + (-0.2 if tree == "base" else 0.2) for i in range(len(conns))]
    for ax, (key, _) in zip(axes, PANELS):
        ax.bar(xs, [medians[f"{tree} c={n}"][key] for n in conns], 0.4, color=colour, label=LABEL[tree])
for ax, (_, title) in zip(axes, PANELS):
    ax.set_xticks(range(len(conns)), [f"c={n}" for n in conns])
    ax.set_title(title)
    ax.legend()
fig.suptitle(args.title)
fig.tight_layout()
fig.savefig(here / args.png, dpi=100)
