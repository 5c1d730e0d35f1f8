"""The harness's pure parts: wrk summary parsing, medians, ratios, metric deltas, checks."""

from __future__ import annotations

import os

import pytest

from bench import checks, procstat, promtext, stats
from bench import wrk as wrkmod
from bench.harness import parse_args
from bench.targets import FeatureSetup, target_specs

WRK_STDOUT = """Running 2s test @ http://127.0.0.1:1/v1/infer
  1 threads and 4 connections
  7012 requests in 2.00s, 2.11MB read
Requests/sec:   3498.57
BENCH_JSON {"duration_s":2.004246,"requests":7012,"bytes":2216266,"errors":{"connect":0,"read":0,"write":0,"status":0,"timeout":0},"sent":7016,"responses":7012,"non2xx":0,"variants":{"b":3459,"a":3553},"latency_ms":{"mean":4.8598,"stdev":3.1271,"max":42.4810,"p50":3.9790,"p90":6.8960,"p99":17.9030,"p999":36.2980}}
"""


def test_parse_wrk_summary() -> None:
    r = wrkmod.parse_output(WRK_STDOUT)
    assert r.requests == 7012 and r.sent == 7016 and r.unanswered == 4
    assert r.variants == {"a": 3553, "b": 3459}
    assert r.latency_ms["p999"] == pytest.approx(36.298)
    assert r.rps == pytest.approx(7012 / 2.004246)
    d = r.to_dict()
    assert d["socket_errors"]["timeout"] == 0 and d["rps"] == pytest.approx(3498.57, abs=0.01)


def test_parse_wrk_without_summary_raises() -> None:
    with pytest.raises(wrkmod.WrkError, match="BENCH_JSON"):
        wrkmod.parse_output("Running 1s test\nRequests/sec: 1\n")


def test_wrk_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrkmod, "wrk_binary", lambda: "/usr/bin/wrk")
    cmd = wrkmod.wrk_command("http://h/v1/infer", "v1", 1, 2.0, threads=2, tag="r7")
    assert cmd[:4] == ["/usr/bin/wrk", "-t1", "-c1", "-d2s"]  # threads capped at connections
    assert cmd[-4:] == ["--", "v1", "r7", "10000"]
    pinned = wrkmod.wrk_command("http://h/", "triton", 64, 10, cpus="1")
    assert pinned[1:3] == ["-c", "1"] and "-t1" in pinned
    with pytest.raises(ValueError):
        wrkmod.wrk_command("http://h/", "nope", 1, 1)


def _run(rps: float, p50: float, errors: int = 0, batch: float | None = 4.0) -> dict:
    wrk = {"rps": rps, "non2xx": errors, "socket_errors": {"read": 0, "status": errors},
           "latency_ms": {"p50": p50, "p90": p50 * 2, "p99": p50 * 3, "p999": p50 * 4}}
    return stats.run_record(wrk, batch, 3.0, {"gateway": rps / 1000, "wrk": 0.1})


def test_median_cell_takes_each_figure_median_and_sums_errors() -> None:
    cell = stats.median_cell("gateway_full", 64, [_run(100, 3.0, 1), _run(300, 1.0), _run(200, 2.0, 2)])
    assert cell["rps"] == 200 and cell["p50_ms"] == 2.0 and cell["p999_ms"] == 8.0
    assert cell["errors"] == 3
    assert cell["cpu_s"] == {"gateway": 0.2, "wrk": 0.1}
    assert cell["avg_batch"] == 4.0 and len(cell["runs"]) == 3
    with pytest.raises(ValueError):
        stats.median_cell("x", 1, [])


def test_unsteady_cells_are_the_ones_whose_runs_disagree() -> None:
    steady = stats.median_cell("triton_direct", 16, [_run(9022, 1.6), _run(9317, 1.6), _run(8800, 1.7)])
    swung = stats.median_cell("triton_direct", 1, [_run(880, 0.9), _run(832, 0.9), _run(383, 2.0)])
    single = stats.median_cell("gateway_full", 1, [_run(800, 1.0)])
    assert steady["rps_spread"] == 1.06 and swung["rps_spread"] == 2.3 and single["rps_spread"] is None
    assert stats.unsteady([steady, swung, single]) == ["triton_direct c=1: runs 2.30x apart"]
    at_limit = stats.median_cell("gateway_full", 64, [_run(1000, 1.0), _run(1250, 1.0)])
    assert stats.unsteady([at_limit]) == [] and stats.unsteady([at_limit], limit=1.2) != []


def test_ratios() -> None:
    cells = [stats.median_cell(t, c, [_run(rps, p50)]) for t, c, rps, p50 in (
        ("triton_direct", 1, 1000, 0.8), ("triton_direct", 64, 20000, 3.0),
        ("gateway_full", 1, 800, 1.2), ("gateway_full", 64, 15000, 4.0),
        ("gateway_nofeatures", 64, 16000, 3.5))]
    r = stats.ratios(cells)
    assert r["gateway_over_direct_rps_c64"] == 0.75
    assert r["gateway_added_p50_ms_c1"] == pytest.approx(0.4)
    assert r["gateway_over_direct_rps_c256"] is None  # not run, still present
    assert r["gateway_nofeatures_over_direct_rps_c64"] == 0.8
    assert r["gateway_nofeatures_over_direct_rps_c1"] is None


def test_check_answers() -> None:
    ok = checks.check_answers(1000, 1000, 1005, {"read": 0, "status": 3}, 4, 1)
    assert ok == []
    bad = checks.check_answers(1000, 999, 1100, {"read": 2, "timeout": 0}, 4, 1)
    assert len(bad) == 3
    with pytest.raises(checks.CorrectnessError, match="unanswered"):
        checks.enforce("cell", bad)


def test_check_counts_bounds() -> None:
    # Abandoned requests explain a small excess on the server side, never a deficit.
    assert checks.check_counts({"a": 50, "b": 48}, {"a": 51.0, "b": 49.0}, unanswered=3, non2xx=0) == []
    assert checks.check_counts({"a": 50, "b": 48}, {"a": 50.0, "b": 47.0}, 3, 0)  # lost one
    assert checks.check_counts({"a": 50}, {"a": 60.0}, 3, 2)                       # double counted
    assert checks.check_counts({"a": 50, "_none": 2}, {"a": 50.0}, 0, 0)           # no variant named
    with pytest.raises(checks.CorrectnessError):
        checks.enforce("x", checks.check_counts({"a": 10}, {"a": 9.0}, 0, 0))


def test_check_split() -> None:
    rep, problems = checks.check_split({"a": 5030, "b": 4970}, {"a": 50, "b": 50})
    assert problems == [] and rep.total == 10_000 and rep.srm_p_value > 0.5
    assert rep.to_dict()["weights"] == {"a": 0.5, "b": 0.5}
    rep, problems = checks.check_split({"a": 5400, "b": 4600}, {"a": 50, "b": 50})
    assert problems and rep.srm_p_value < 1e-10 and rep.z["a"] == pytest.approx(8.0)
    _, problems = checks.check_split({"a": 10, "c": 10}, {"a": 50, "b": 50})
    assert any("not in the configured weights" in p for p in problems)


def test_promtext_parse_and_deltas() -> None:
    before = promtext.parse('# HELP x\ninfergate_requests_total{model="clf",variant="a"} 10\n'
                            'infergate_batch_rows_sum{target="clf:1"} 40\n'
                            'infergate_batch_rows_count{target="clf:1"} 10\n'
                            'nv_inference_request_success{model="clf",version="1"} 5\n')
    after = promtext.parse('infergate_requests_total{model="clf",variant="a"} 30\n'
                           'infergate_requests_total{model="clf",variant="b"} 7\n'
                           'infergate_batch_rows_sum{target="clf:1"} 100\n'
                           'infergate_batch_rows_count{target="clf:1"} 20\n'
                           'nv_inference_request_success{model="clf",version="1"} 9 1700000000\n')
    per = promtext.delta(promtext.by_label(after, "infergate_requests_total", "variant"),
                         promtext.by_label(before, "infergate_requests_total", "variant"))
    assert per == {"a": 20.0, "b": 7.0}
    assert promtext.avg_batch(before, after, "infergate_batch_rows_sum", "infergate_batch_rows_count") == 6.0
    assert promtext.avg_batch(after, after, "infergate_batch_rows_sum", "infergate_batch_rows_count") is None
    # Names stay as printed (no `_total` added to Triton's counters).
    assert promtext.total(after, "nv_inference_request_success", version="1") == 9.0


def test_procstat_sees_this_process() -> None:
    sum(i * i for i in range(200_000))
    snap = procstat.snapshot([procstat.Group("me", (os.getpid(),)),
                              procstat.Group("gone", (2 ** 22 + 7,), descendants=True)])
    assert snap["me"] > 0 and snap["gone"] == 0


def test_plan_quick_and_targets() -> None:
    quick = parse_args(["--quick", "--out", "/tmp/x"])
    assert quick.connections == (1, 64) and quick.targets == ("triton_direct", "gateway_full")
    full = parse_args(["--targets", "gateway_nofeatures,triton_direct"])
    assert full.targets == ("triton_direct", "gateway_nofeatures") and full.connections == (1, 16, 64, 256)
    on = {s.name: s for s in target_specs(["gateway_full", "gateway_nobatch"], FeatureSetup("redis", repo=__import__("pathlib").Path("/r")))}
    assert on["gateway_full"].mode == "entity" and "--no-batching" in on["gateway_nobatch"].gateway_args
    assert parse_args(["--targets", "gateway_full,triton_direct", "--interleave"]).interleave
    # either yardstick first, whatever order they were named in
    assert parse_args(["--targets", "gateway_full,triton_direct_ab", "--interleave"]).targets == (
        "triton_direct_ab", "gateway_full")
    assert parse_args(["--targets", "gateway_full,triton_direct_ab,triton_direct"]).targets == (
        "triton_direct", "triton_direct_ab", "gateway_full")
    for bad in ("gateway_full", "triton_direct,gateway_full,gateway_nofeatures", "gateway_full,gateway_nofeatures"):
        with pytest.raises(SystemExit):
            parse_args(["--targets", bad, "--interleave"])
    off = {s.name: s for s in target_specs(["gateway_full"], FeatureSetup("off", note="no redis"))}
    assert off["gateway_full"].mode == "v1" and "no redis" in off["gateway_full"].note


def test_profile_summary_from_folded_stacks() -> None:
    from bench.profile import function_of, layer_of, parse_folded, summarise

    folded = [
        'process 1:"python -m gateway";main (gateway/__main__.py:80);send (uvicorn/protocols/http/httptools_impl.py:500) 30',
        'process 1:"python -m gateway";main (gateway/__main__.py:80);parse (gateway/codec_v1.py:40) 10',
        'process 1:"python -m gateway";main (gateway/__main__.py:81);parse (gateway/codec_v1.py:41) 10',
        "garbage line",
    ]
    stacks = parse_folded(folded)
    assert sum(stacks.values()) == 50
    assert function_of("parse (gateway/codec_v1.py:41)") == "parse (gateway/codec_v1.py)"
    assert layer_of("x (grpc/aio/_call.py:1)") == "grpc" and layer_of("y (foo.py:1)") == "other"
    text = summarise(stacks)
    assert "samples: 50" in text
    assert "60.00%  uvicorn/httptools" in text and "40.00%  parse (gateway/codec_v1.py)" in text
    assert "100.00%  main (gateway/__main__.py)" in text  # inclusive, lines merged
    assert "no samples" in summarise(parse_folded([]))


def test_stages_summary_takes_each_stage_over_the_window() -> None:
    from bench.stages import summarise

    def hist(name: str, labels: str, buckets: dict[str, int], total_s: float) -> str:
        lines = [f'{name}_bucket{{{labels}le="{le}"}} {n}' for le, n in buckets.items()]
        return "\n".join(lines + [f"{name}_count{{{labels.rstrip(',')}}} {max(buckets.values())}",
                                  f"{name}_sum{{{labels.rstrip(',')}}} {total_s}"]) + "\n"
    st = "infergate_stage_duration_seconds"
    before = promtext.parse(hist(st, 'stage="features",', {"0.001": 10, "0.002": 10, "+Inf": 10}, 0.005)
                            + hist("infergate_request_duration_seconds", "", {"0.001": 0, "0.004": 10, "+Inf": 10}, 0.03))
    after = promtext.parse(hist(st, 'stage="features",', {"0.001": 60, "0.002": 110, "+Inf": 110}, 0.105)
                           + hist("infergate_request_duration_seconds", "", {"0.001": 0, "0.004": 110, "+Inf": 110}, 0.33))
    s = summarise(before, after)
    # 100 reads in the window: 50 under 1 ms, 50 between 1 and 2 ms, 0.1 s in all.
    assert s["features"]["mean"] == 1.0 and s["features"]["p50"] == 1.0 and s["features"]["p99"] == 1.98
    assert s["pipeline"]["mean"] == 3.0 and s["pipeline"]["p90"] == 3.7
    assert s["queue"] == {"mean": None, "p50": None, "p90": None, "p99": None}    # nothing observed


def test_pair_ratios_take_the_median_of_each_runs_ratio() -> None:
    from bench.stats import pair_ratios

    def cell(target: str, rps: list[float], p99: list[float]) -> dict:
        return {"target": target, "connections": 16,
                "runs": [{"rps": r, "p99_ms": p} for r, p in zip(rps, p99)]}

    # A slow spell in run 2 halves both sides: the pair keeps its ratio, the cells' medians do not.
    cells = [cell("triton_direct", [10_000, 5_000, 10_000], [2.0, 4.0, 2.0]),
             cell("gateway_full", [6_000, 3_000, 5_000], [3.0, 6.0, 4.0])]
    assert pair_ratios(cells) == {"rps_c16": 0.6, "p99_c16": 1.5}
    assert pair_ratios(cells[1:]) == {}   # no Triton-direct cell: nothing to pair with
