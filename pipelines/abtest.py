"""The A/B report: the gateway's prediction log joined with reported outcomes, per variant.

* Window: the rollout step (rollout.json) with the most time where every variant had weight,
  so the expected split is known; exposures are the predictions logged in it.
* SRM: router/srm.py's chi-square test on distinct units per variant against the weights.
* Metric: the mean outcome per variant with a 95 % confidence interval — Wilson's interval and a
  pooled two-proportion z-test when outcomes are 0/1, else a t interval and Welch's t-test. The
  test used is named in the report. Outcomes are per request; a unit sending several requests
  makes them slightly dependent (the report gives requests and units side by side).
* Latency: the gateway's own per-request latency from the log (p50/p95/p99).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np


def _window(timeline: dict[str, Any]) -> tuple[float, float, dict[str, float]] | None:
    best = None
    for s in timeline.get("steps", []):
        w = s.get("weights") or {}
        if len([v for v in w.values() if v > 0]) >= 2:
            span = s["end"] - s["start"]
            if best is None or span > best[1] - best[0]:
                best = (s["start"], s["end"], w)
    return best


def _read(r: Any, key: str, *, raw: bool = False) -> list:
    out, start = [], "-"
    while True:
        chunk = r.xrange(key, min=start, max="+", count=500)
        if not chunk:
            return out
        if raw:
            out.extend(chunk)
        else:
            out.extend({k.decode(): v.decode() for k, v in fields.items()} for _, fields in chunk)
        last = chunk[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


def collect(redis_url: str, prefix: str, experiment: str, timeline: dict[str, Any], out: Path) -> dict[str, Any]:
    import pandas as pd
    import redis
    r = redis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    from gateway.predlog import read_predictions
    preds = [p for p in read_predictions(_read(r, f"{prefix}predictions", raw=True)) if p["exp"] == experiment]
    outs = _read(r, f"{prefix}outcomes")
    r.close()
    win = _window(timeline)
    if not preds:
        raise RuntimeError(f"no predictions of experiment {experiment!r} in {prefix}predictions")
    frame = pd.DataFrame(preds)
    frame["cls"] = frame["cls"].map(lambda c: ",".join(map(str, c)))
    weights: dict[str, float]
    if win is not None:
        lo, hi, weights = win
        frame = frame[(frame["ts"] >= lo) & (frame["ts"] <= hi)]
    else:   # no rollout timeline: every record, variants assumed equal
        weights = {v: 1.0 for v in sorted(frame["var"].unique())}
    by_rid = {o["rid"]: float(o.get("value", o.get("label", "nan"))) for o in outs if o.get("rid")}
    frame["value"] = frame["rid"].map(by_rid)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "joined.parquet", index=False)
    meta = {"experiment": experiment, "weights": weights, "window": [win[0], win[1]] if win else None,
            "predictions": int(len(frame)), "outcomes_joined": int(frame["value"].notna().sum()),
            "outcomes_total": len(outs)}
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(c - h), float(c + h))


def analyse(dataset: Path, alpha: float, out: Path) -> dict[str, Any]:
    import pandas as pd
    from scipy import stats

    from router.srm import srm_check
    frame = pd.read_parquet(dataset / "joined.parquet")
    meta = json.loads((dataset / "meta.json").read_text())
    weights = meta["weights"]
    names = sorted(weights)
    vals = frame["value"].dropna()
    binary = bool(len(vals)) and set(np.unique(vals)) <= {0.0, 1.0}
    variants: dict[str, dict[str, Any]] = {}
    samples: dict[str, np.ndarray] = {}
    for v in names:
        f = frame[frame["var"] == v]
        y = f["value"].dropna().to_numpy(np.float64)
        samples[v] = y
        s: dict[str, Any] = {"requests": int(len(f)), "units": int(f["unit"].nunique()),
                             "versions": sorted(f["ver"].unique().tolist()), "outcomes": int(len(y)),
                             "outcome_mean": float(y.mean()) if len(y) else None}
        if binary:
            s["ci95"] = _wilson(int(y.sum()), len(y))
        elif len(y) > 1:
            h = stats.t.ppf(0.975, len(y) - 1) * y.std(ddof=1) / np.sqrt(len(y))
            s["ci95"] = (float(y.mean() - h), float(y.mean() + h))
        lat = f["ms"].to_numpy(np.float64)
        for q in (50, 95, 99):
            s[f"latency_p{q}_ms"] = float(np.percentile(lat, q)) if len(lat) else None
        variants[v] = s
    srm = srm_check([variants[v]["units"] for v in names], [weights[v] for v in names], alpha)
    doc: dict[str, Any] = {"experiment": meta["experiment"], "window": meta["window"], "weights": weights,
                           "variants": variants, "srm": {**srm.to_dict(), "alpha": alpha,
                                                         "test": "chi-square goodness of fit on distinct units"},
                           "alpha": alpha, "predictions": meta["predictions"],
                           "outcomes_joined": meta["outcomes_joined"]}
    control, rest = names[0], names[1:]
    if rest and all(len(samples[v]) > 1 for v in names):
        a, b = samples[control], samples[rest[0]]
        if binary:
            doc["test"] = "two-sided two-proportion z-test (pooled)"
            p1, p2, n1, n2 = a.mean(), b.mean(), len(a), len(b)
            pp = (a.sum() + b.sum()) / (n1 + n2)
            se = np.sqrt(pp * (1 - pp) * (1 / n1 + 1 / n2))
            z = (p2 - p1) / se if se > 0 else 0.0
            doc["statistic"] = float(z)
            doc["p_value"] = float(2 * stats.norm.sf(abs(z))) if se > 0 else 1.0
            se_d = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        else:
            doc["test"] = "Welch's two-sided t-test"
            t = stats.ttest_ind(b, a, equal_var=False)
            doc["statistic"], doc["p_value"] = float(t.statistic), float(t.pvalue)
            se_d = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        diff = float(b.mean() - a.mean())
        doc["comparison"] = f"{rest[0]} - {control}"
        doc["difference"] = diff
        doc["difference_ci95"] = (diff - 1.959964 * se_d, diff + 1.959964 * se_d)
        doc["significant"] = bool(doc["p_value"] < 0.05)
    else:
        doc["test"] = "none (fewer than two outcomes in a variant)"
        doc["p_value"] = None
    out.mkdir(parents=True, exist_ok=True)
    _plots(doc, frame, names, out)
    (out / "analysis.json").write_text(json.dumps(doc, indent=1))
    return {k: doc[k] for k in ("experiment", "test", "p_value", "srm")}


def _plots(doc: dict[str, Any], frame: Any, names: list[str], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for i, v in enumerate(names):
        s = doc["variants"][v]
        if s["outcome_mean"] is None:
            continue
        lo, hi = s.get("ci95", (s["outcome_mean"], s["outcome_mean"]))
        ax.errorbar([i], [s["outcome_mean"]], yerr=[[s["outcome_mean"] - lo], [hi - s["outcome_mean"]]],
                    fmt="o", capsize=6)
    ax.set_xticks(range(len(names)), [f"{v}\n(n={doc['variants'][v]['outcomes']})" for v in names])
    ax.set_ylabel("mean outcome (95 % CI)")
    ax.set_title(doc["experiment"])
    fig.tight_layout()
    fig.savefig(out / "outcome.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for v in names:
        lat = np.sort(frame[frame["var"] == v]["ms"].to_numpy(np.float64))
        if len(lat):
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=v)
    ax.set_xscale("log")
    ax.set_xlabel("gateway latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    plt.close(fig)


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def render(doc: dict[str, Any], analysis_dir: Path, md_out: Path, html_out: Path) -> list[Path]:
    """Markdown and a self-contained HTML page (PNG plots inlined) of the analysis."""
    rows = ["| variant | weight | requests | units | outcomes | mean outcome | 95 % CI | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|---|---|"]
    for v, s in doc["variants"].items():
        ci = s.get("ci95")
        rows.append(f"| {v} ({', '.join(s['versions'])}) | {doc['weights'][v]:g} | {s['requests']} | {s['units']} | "
                    f"{s['outcomes']} | {_fmt(s['outcome_mean'])} | "
                    f"{'n/a' if not ci else f'[{ci[0]:.4f}, {ci[1]:.4f}]'} | "
                    f"{_fmt(s['latency_p50_ms'], '.2f')} | {_fmt(s['latency_p99_ms'], '.2f')} |")
    srm = doc["srm"]
    lines = [f"# A/B report: {doc['experiment']}", "",
             f"{doc['predictions']} predictions in the window, {doc['outcomes_joined']} with an outcome.", "",
             *rows, "",
             f"**SRM** ({srm['test']}): p = {_fmt(srm['p_value'], '.4g')}, "
             f"{'FLAGGED: the split does not match the weights, do not trust the comparison' if srm['flagged'] else 'not flagged'} "
             f"(alpha {srm['alpha']}).", "",
             f"**Test**: {doc['test']}."]
    if doc.get("p_value") is not None:
        lo, hi = doc["difference_ci95"]
        lines.append(f"Difference {doc['comparison']} = {doc['difference']:+.4f} (95 % CI [{lo:+.4f}, {hi:+.4f}]), "
                     f"statistic {doc['statistic']:.3f}, p = {doc['p_value']:.4g}"
                     f"{' (significant at 0.05)' if doc['significant'] else ''}.")
    lines += ["", "![outcome](outcome.png)", "", "![latency](latency.png)", ""]
    md = "\n".join(lines)
    md_out.parent.mkdir(parents=True, exist_ok=True)
    md_out.write_text(md)
    html = md
    for name in ("outcome.png", "latency.png"):
        b64 = base64.b64encode((analysis_dir / name).read_bytes()).decode()
        html = html.replace(f"![{name[:-4]}]({name})", f'<img alt="{name}" src="data:image/png;base64,{b64}">')
    body = []
    for line in html.splitlines():
        if line.startswith("# "):
            body.append(f"<h1>{line[2:]}</h1>")
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tag = "th" if line.startswith("| variant") else "td"
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
        elif line:
            body.append(f"<p>{line.replace('**', '')}</p>")
    html_doc = ("<!doctype html><html><head><meta charset='utf-8'><title>A/B report</title>"
                "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}</style>"
                "</head><body>" + "\n".join(_tables(body)) + "</body></html>")
    html_out.parent.mkdir(parents=True, exist_ok=True)
    html_out.write_text(html_doc)
    report_md = analysis_dir / "report.md"
    report_md.write_text(md)
    report_html = analysis_dir / "report.html"
    report_html.write_text(html_doc)
    return [report_md, report_html, analysis_dir / "outcome.png", analysis_dir / "latency.png",
            analysis_dir / "analysis.json"]


def _tables(lines: list[str]) -> list[str]:
    out, open_ = [], False
    for line in lines:
        if line.startswith("<tr>") and not open_:
            out.append("<table>")
            open_ = True
        elif not line.startswith("<tr>") and open_:
            out.append("</table>")
            open_ = False
        out.append(line)
    if open_:
        out.append("</table>")
    return out
