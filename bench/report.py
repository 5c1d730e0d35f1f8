"""Results on disk: machine facts, latest.json plus a dated copy, and PNG plots."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from runtime.triton import ROOT


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(), "platform": platform.platform(),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        info["mem_total_kb"] = int(mem.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    info["wrk"] = _first_line(["wrk", "-v"])
    info["git_commit"] = _first_line(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    dirty = _first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    info["git_dirty"] = bool(dirty)
    return info


def _first_line(cmd: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def write_results(doc: Mapping[str, Any], out_dir: Path, stamp: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    latest = out_dir / "latest.json"
    dated = out_dir / f"bench-{stamp}.json"
    dated.write_text(text)
    tmp = latest.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(latest)
    return latest, dated


def plot(cells: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """throughput.png (req/s vs connections) and latency.png (p50/p99/p99.9 per target).

    Returns the files written; none when matplotlib is missing (the JSON is the result).
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    targets = list(dict.fromkeys(c["target"] for c in cells))
    series = {t: sorted((c for c in cells if c["target"] == t), key=lambda c: c["connections"])
              for t in targets}
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t, cs in series.items():
        ax.plot([c["connections"] for c in cs], [c["rps"] or 0 for c in cs], marker="o", label=t)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("connections (wrk -c)")
    ax.set_ylabel("requests/s (median of runs)")
    ax.set_title("Throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out_dir / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    keys = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))
    fig, axes = plt.subplots(1, len(keys), figsize=(13, 4.2), sharey=False)
    for ax, (key, label) in zip(axes, keys):
        for t, cs in series.items():
            ax.plot([c["connections"] for c in cs], [c[key] or 0 for c in cs], marker="o", label=t)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("connections")
        ax.set_ylabel(f"{label} latency (ms)")
        ax.set_title(label)
        ax.grid(True, alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def summary_table(cells: Sequence[Mapping[str, Any]]) -> str:
    head = (f"{'target':<20}{'c':>5}{'req/s':>10}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'err':>6}{'batch':>7}"
            f"{'us/req':>8}")
    lines = [head, "-" * len(head)]
    for c in cells:
        batch = f"{c['avg_batch']:.1f}" if c.get("avg_batch") is not None else "-"
        # CPU per request of the server under test: the gateway, a peer, or Triton itself.
        per = c.get("cpu_us_per_request") or {}
        own = ("triton",) if c["target"].startswith("triton") else ("gateway", "server")
        us = next((per[k] for k in own if per.get(k) is not None), None)
        lines.append(f"{c['target']:<20}{c['connections']:>5}{c['rps'] or 0:>10.0f}"
                     f"{c['p50_ms'] or 0:>8.2f}{c['p90_ms'] or 0:>8.2f}{c['p99_ms'] or 0:>8.2f}"
                     f"{c['p999_ms'] or 0:>8.2f}{c['errors']:>6}{batch:>7}{us if us is not None else '-':>8}")
    return "\n".join(lines)
