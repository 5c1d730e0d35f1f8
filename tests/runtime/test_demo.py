"""`make demo`'s burst and report: wrk drives the burst (the Python client was the bottleneck),
and the gateway's own figures come first, per variant, from its histogram over the burst."""

from __future__ import annotations

import re

from bench import promtext
from bench.wrk import wrk_binary
from runtime.demo import gateway_table, wrk_burst
from runtime.stack import GatewayProcess
from tests.conftest import require


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    def page(counts: list[int]) -> promtext.Samples:
        les = ["0.001", "0.002", "0.005", "+Inf"]
        return promtext.parse("\n".join(f'h_bucket{{variant="a",le="{le}"}} {c}' for le, c in zip(les, counts)))
    before, after = page([10, 10, 10, 10]), page([10, 60, 110, 110])   # 100 new: 50 in (1,2], 50 in (2,5] ms
    assert abs(promtext.quantile(before, after, "h", 0.5, variant="a") - 0.002) < 1e-12
    assert abs(promtext.quantile(before, after, "h", 0.25, variant="a") - 0.0015) < 1e-12
    assert abs(promtext.quantile(before, after, "h", 0.99, variant="a") - (0.002 + 0.003 * 49 / 50)) < 1e-12
    assert promtext.quantile(after, after, "h", 0.5, variant="a") is None


def test_the_burst_is_wrk_and_the_gateways_figures_come_first(gateway: GatewayProcess) -> None:
    require(wrk_binary() is not None, "wrk is not installed (make wrk)")
    before = promtext.scrape(f"{gateway.url}/metrics")
    client = wrk_burst(gateway.url, "v1", 8, 1.0)
    after = promtext.scrape(f"{gateway.url}/metrics")
    assert client["client"].startswith("wrk") and client["requests"] > 100 and client["errors"] == 0, client
    table = gateway_table(before, after)
    assert table[0].split() == ["variant", "requests", "share", "p50", "ms", "p99", "ms", "errors"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == {"a", "b"}
    served = sum(int(r[1].replace(",", "")) for r in rows.values())
    assert served >= client["requests"]   # wrk's count excludes what was in flight when it stopped
    for r in rows.values():
        p50, p99 = float(r[3]), float(r[4])
        assert 0 < p50 <= p99 and r[5] == "0"
        assert re.fullmatch(r"\d+\.\d%", r[2])
