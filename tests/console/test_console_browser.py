"""The console in a real browser (Debian's headless Chromium via Playwright) against two real
gateway processes, a real Triton and Redis.

One page is signed in for the module, as an experimenter would keep one tab open; the tests run
in file order on it (load, then the weight change, then SRM...). Every test also checks that the
page logged no console error and raised nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any, Iterator

import httpx
import pytest
import yaml

from runtime.modelgen import INPUT_WIDTH
from runtime.triton import ROOT
from tests.console.conftest import (AUTH, EXPERIMENT, TOKEN, Load, Stack, experiment_config, infer,
                                    wait_for)

XSS_NAME = '"><img src=x onerror="window.__xss=1">'


class Page:
    def __init__(self, page: Any, errors: list[str]) -> None:
        self.page, self.errors = page, errors


@pytest.fixture(scope="module")
def page(chromium: Any, console_stack: Stack) -> Iterator[Page]:
    ctx = chromium.new_context(viewport={"width": 1280, "height": 1700})
    p = ctx.new_page()
    errors: list[str] = []
    p.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    p.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    p.goto(f"{console_stack.admin}/console")
    p.fill("#token", TOKEN)
    p.click("#login-form button[type=submit]")
    p.wait_for_selector(f'#experiments tbody tr[data-name="{EXPERIMENT}"]')
    p.click(f'#experiments tbody tr[data-name="{EXPERIMENT}"]')
    p.wait_for_selector("#detail:not([hidden])")
    yield Page(p, errors)
    ctx.close()


def wait_js(p: Any, expr: str, timeout: float = 5.0) -> None:
    """Poll a JS expression from Python: `page.wait_for_function` evaluates it with `eval` inside
    the page, which the console's Content-Security-Policy (rightly) forbids."""
    deadline = time.monotonic() + timeout
    while not p.evaluate(expr):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {expr}")
        time.sleep(0.05)


def _no_errors(pg: Page) -> None:
    assert pg.errors == [], pg.errors


def test_without_a_token_only_the_login_form(chromium: Any, console_stack: Stack) -> None:
    ctx = chromium.new_context()
    p = ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    resp = p.goto(f"{console_stack.admin}/console")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert p.is_visible("#login") and not p.is_visible("#app")
    assert EXPERIMENT not in p.inner_text("body")
    # A wrong token: refused, still nothing but the form, nothing kept.
    p.fill("#token", "not-the-token")
    p.click("#login-form button[type=submit]")
    wait_js(p, "document.getElementById('login-error').textContent.length > 0")
    assert "refused" in p.inner_text("#login-error")
    assert not p.is_visible("#app") and EXPERIMENT not in p.inner_text("body")
    assert p.evaluate("sessionStorage.length") == 0
    # The right one: kept in sessionStorage only, never in the URL or a cookie.
    p.fill("#token", TOKEN)
    p.click("#login-form button[type=submit]")
    p.wait_for_selector(f'#experiments tbody tr[data-name="{EXPERIMENT}"]')
    assert TOKEN not in p.url and p.evaluate("document.cookie") == "" and ctx.cookies() == []
    assert p.evaluate("Object.values(sessionStorage)") == [TOKEN]
    # A token the gateway no longer takes (expired, removed): back to the form, with the reason.
    p.evaluate("sessionStorage.setItem(sessionStorage.key(0), 'expired-t0ken')")
    p.reload()
    p.wait_for_selector("#login:not([hidden])")
    assert "refused" in p.inner_text("#login-error") and not p.is_visible("#app")
    assert EXPERIMENT not in p.inner_text("body") and p.evaluate("sessionStorage.length") == 0
    p.fill("#token", TOKEN)
    p.click("#login-form button[type=submit]")
    p.wait_for_selector(f'#experiments tbody tr[data-name="{EXPERIMENT}"]')
    # The API without the token answers 401 and nothing else.
    assert httpx.get(f"{console_stack.admin}/admin/experiments").status_code == 401
    p.click("#logout")
    assert p.is_visible("#login") and not p.is_visible("#app")
    assert p.evaluate("sessionStorage.length") == 0
    assert errors == []
    ctx.close()


def _points(pg: Page, chart: str, variant: str) -> list[tuple[float, float]]:
    pts = pg.page.get_attribute(f'#{chart} polyline[data-variant="{variant}"]', "points") or ""
    return [tuple(map(float, p.split(","))) for p in pts.split()]  # type: ignore[misc]


_ZERO_Y = 162.0  # the charts' x axis (app.js: H - B)


def _cell(pg: Page, variant: str, cls: str) -> str:
    return pg.page.inner_text(f'#d-live tbody tr[data-variant="{variant}"] td.{cls}')


def test_under_load_counts_and_charts_move(page: Page, console_stack: Stack, screenshots) -> None:
    pg = page
    before = {v: _points(pg, "chart-rps", v) for v in "ab"}
    t_start = time.time()
    with Load(console_stack.gw1.url, threads=2, prefix="load1") as load:
        wait_js(pg.page, 
            "[...document.querySelectorAll('#d-live td.rps')].every(td => parseFloat(td.textContent) > 0)", timeout=10)
        time.sleep(2.5)
    for v in "ab":
        assert float(_cell(pg, v, "rps")) > 0
        rps, p99 = _points(pg, "chart-rps", v), _points(pg, "chart-p99", v)
        assert rps != before[v] and min(y for _, y in rps) < _ZERO_Y - 20   # the line rose off zero
        assert all(y == _ZERO_Y for _, y in before[v][-3:]) or not before[v]  # from an idle start
        assert p99 and min(y for _, y in p99) < _ZERO_Y
    # The page's figures are the gateway's own: the series sums to what was answered.
    time.sleep(1.5)
    doc = httpx.get(f"{console_stack.admin}/admin/experiments/{EXPERIMENT}/series?seconds=300", headers=AUTH).json()
    counted = sum(f["rps"] * doc["interval_s"] for p in doc["points"] if p["t"] > t_start for f in p["variants"].values())
    assert load.sent > 50
    assert round(counted) == load.answered, (counted, load.sent, load.answered)
    units = pg.page.inner_text('#d-live tbody tr[data-variant="a"] td.units-share')
    assert "units" in units
    if screenshots:
        pg.page.screenshot(path=str(screenshots / "console-live.png"), full_page=True)
    _no_errors(pg)


def _offline_assign(config: dict[str, Any], units: list[str], tmp) -> dict[str, str]:
    path = tmp / f"offline-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump({"experiments": [config]}))
    out = subprocess.run([sys.executable, "-m", "router", "assign", "--config", str(path), "--experiment", EXPERIMENT],
                         input="\n".join(units) + "\n", capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return dict(line.split("\t") for line in out.splitlines())


def test_weight_change_in_the_page_reaches_a_second_gateway_within_1s(page: Page, console_stack: Stack,
                                                                     screenshots) -> None:
    pg, st = page, console_stack
    old_cfg = experiment_config(st.salt)
    assert st.state()["config"]["variants"][0]["weight"] == 50
    version = st.state()["version"]
    new_cfg = {**old_cfg, "variants": [{**old_cfg["variants"][0], "weight": 70}, {**old_cfg["variants"][1], "weight": 30}]}
    units = [f"move-{i}" for i in range(3000)]
    before, after = _offline_assign(old_cfg, units, st.tmp), _offline_assign(new_cfg, units, st.tmp)
    moved = [u for u in units if before[u] != after[u]]
    assert moved and all(before[u] == "b" and after[u] == "a" for u in moved)  # 2 variants: b -> a only

    # 50/50 -> 70/30: type 30 for b; the control (a) follows, the sum stays 100.
    pg.page.fill('input[data-field="variants[1].weight"]', "30")
    assert pg.page.input_value('input[data-field="variants[0].weight"]') == "70"
    assert pg.page.inner_text("#e-sum") == "100.00 %"
    pg.page.fill("#e-reason", "ramp a to 70 %")
    pg.page.wait_for_selector('#e-preview[data-buckets="2000"]')
    assert "2000 of 10000 buckets" in pg.page.inner_text("#e-preview")
    pg.page.click("#e-save")
    pg.page.wait_for_selector("#e-confirm:not([hidden])")   # 20 % of units move: > 10 %, confirm
    assert "20.00 %" in pg.page.inner_text("#e-confirm-text")
    if screenshots:
        pg.page.screenshot(path=str(screenshots / "console-confirm.png"), full_page=True)
    assert st.state()["version"] == version  # nothing saved before the confirmation
    with httpx.Client() as c:
        with pg.page.expect_response(lambda r: r.request.method == "PUT") as put:
            pg.page.click("#e-confirm-yes")
        t_put = time.monotonic()
        assert put.value.status == 200
        probe = moved[:25]
        row = [0.0] * INPUT_WIDTH

        def switched() -> bool:
            return all(infer(c, st.gw2.url, u, row)["variant"] == "a" for u in probe)
        try:
            elapsed = wait_for(switched, 1.0, 0.01)
        except AssertionError:
            raise AssertionError(f"the second gateway did not route moved units to a within 1 s of the PUT") from None
        assert time.monotonic() - t_put < 1.0, elapsed
        print(f"\nconsole: moved units routed anew by the second gateway {1e3 * (time.monotonic() - t_put):.0f} ms "
              "after the page's PUT answered (25 probes, sequential)")
        # The offline tool, given the stored config, agrees with the second gateway unit by unit.
        stored = st.state(st.admin2)["config"]
        assert [v["weight"] for v in stored["variants"]] == [70, 30]
        sample = units[:300]
        offline = _offline_assign(stored, sample, st.tmp)
        assert offline == {u: infer(c, st.gw2.url, u, row)["variant"] for u in sample}
        assert offline == {u: after[u] for u in sample}
    wait_js(pg.page, "document.getElementById('e-saved').textContent.includes('Saved as version')")
    hist = pg.page.inner_text("#d-history tbody tr:first-child")
    assert "ops" in hist and "a 70 %, b 30 %" in hist and "ramp a to 70 %" in hist
    _no_errors(pg)


def test_invalid_weights_show_the_server_message_by_the_field(page: Page, console_stack: Stack) -> None:
    pg, st = page, console_stack
    before = st.state()
    pg.page.fill('input[data-field="variants[1].weight"]', "30.005")  # finer than one bucket
    spot = 'td p.field-error[data-field="variants[1].weight"]'
    wait_js(pg.page, f"document.querySelector('{spot}').textContent.length > 0")
    assert "not a multiple of 0.01" in pg.page.inner_text(spot)
    pg.page.click("#e-save")
    time.sleep(0.3)
    assert "not a multiple of 0.01" in pg.page.inner_text(spot)
    # More than 100 % on a treatment: the control would go negative; the server names its field.
    pg.page.fill('input[data-field="variants[1].weight"]', "130")
    spot0 = 'td p.field-error[data-field="variants[0].weight"]'
    wait_js(pg.page, f"document.querySelector('{spot0}').textContent.includes('between 0 and 100 (percent), got -30')")
    assert pg.page.inner_text(spot) == ""
    pg.page.click("#e-save")
    time.sleep(0.3)
    after = st.state()
    assert after["version"] == before["version"] and after["config"] == before["config"]
    pg.page.click("#e-reset")
    wait_js(pg.page, f"document.querySelector('{spot}') && document.querySelector('{spot}').textContent === ''")
    # pageerror-free; the browser logs the refused requests (400) as console errors: expected here.
    assert all("400" in e for e in pg.errors), pg.errors
    pg.errors.clear()


def test_stale_edit_is_refused_with_the_newer_version_shown(page: Page, console_stack: Stack) -> None:
    pg, st = page, console_stack
    cur = st.state()
    pg.page.fill('input[data-field="variants[1].weight"]', "35")   # a draft of version N...
    pg.page.wait_for_selector('#e-preview[data-buckets]')
    body = {k: v for k, v in cur["config"].items() if k != "name"}
    body["variants"] = [{**body["variants"][0], "weight": 75}, {**body["variants"][1], "weight": 25}]
    r = httpx.put(f"{st.admin}/admin/experiments/{EXPERIMENT}", json=body,      # ...someone stores N+1
                  headers={"authorization": "Bearer other-t0ken", "x-change-reason": "someone else", "if-match": str(cur["version"])})
    assert r.status_code == 200
    pg.page.click("#e-save")
    pg.page.wait_for_selector("#e-conflict:not([hidden])")
    text = pg.page.inner_text("#e-conflict")
    assert f"now {cur['version'] + 1}" in text and "ci" in text and "someone else" in text and "a 75.00 %" in text
    assert pg.page.is_hidden("#e-confirm")
    after = st.state()   # no lost update: the other change stands
    assert after["version"] == cur["version"] + 1 and [v["weight"] for v in after["config"]["variants"]] == [75, 25]
    pg.page.click("#e-conflict-load")
    wait_js(pg.page, "document.querySelector('input[data-field=\"variants[1].weight\"]').value === '25'")
    assert all("409" in e for e in pg.errors), pg.errors
    pg.errors.clear()


def test_allowlist_and_pause_from_the_page(page: Page, console_stack: Stack) -> None:
    pg, st = page, console_stack
    v0 = st.state()["version"]
    offline = _offline_assign(st.state()["config"], [f"vip-{i}" for i in range(50)], st.tmp)
    vip = next(u for u, v in offline.items() if v == "a")   # a unit the hash gives to a...
    pg.page.fill("#e-allow-unit", vip)
    pg.page.select_option("#e-allow-variant", "b")          # ...pinned to b
    pg.page.click("#e-allow-add")
    pg.page.wait_for_selector('#e-preview[data-buckets="0"]')
    pg.page.click("#e-save")                                  # moves no bucket: no confirmation
    wait_js(pg.page, "document.getElementById('e-saved').textContent.includes('Saved as version')")
    assert st.state()["config"]["allowlist"] == {vip: "b"} and st.state()["version"] == v0 + 1
    with httpx.Client() as c:
        assert infer(c, st.gw2.url, vip, [0.0] * INPUT_WIDTH)["variant"] == "b"
        pg.page.click("#e-pause")
        pg.page.wait_for_selector('#e-preview[data-buckets="2500"]')   # b's 25 % go to control
        pg.page.click("#e-save")
        pg.page.wait_for_selector("#e-confirm:not([hidden])")
        pg.page.click("#e-confirm-yes")
        wait_js(pg.page, "document.getElementById('d-status').textContent === 'paused'")
        assert st.state()["config"]["status"] == "paused"
        assert infer(c, st.gw2.url, vip, [0.0] * INPUT_WIDTH)["variant"] == "a"   # paused: control only
        pg.page.click("#e-resume")
        pg.page.wait_for_selector('#e-preview[data-buckets="2500"]')
        pg.page.click("#e-save")
        pg.page.click("#e-confirm-yes")
        wait_js(pg.page, "document.getElementById('d-status').textContent === 'running'")
    wait_js(pg.page, "document.querySelector('#d-history tbody tr').textContent.includes('status paused→running')")
    _no_errors(pg)


def test_injected_skew_turns_srm_red(page: Page, console_stack: Stack, screenshots) -> None:
    pg, st = page, console_stack
    cfg = st.state()["config"]
    row = [0.0] * INPUT_WIDTH
    units = [f"skew-{i}" for i in range(2500)]
    offline = _offline_assign(cfg, units, st.tmp)
    # A fair sample first, not flagged: 300 units split exactly as the weights say (the salt is
    # random per run, so 300 units drawn blindly would be flagged in one run of 1,000 at
    # alpha 0.001 by chance alone), sent in their natural mixed order.
    total_w = sum(v["weight"] for v in cfg["variants"])
    quota = {v["name"]: round(300 * v["weight"] / total_w) for v in cfg["variants"]}
    fair = []
    for u in units[:1200]:
        if quota.get(offline[u], 0) > 0:
            quota[offline[u]] -= 1
            fair.append(u)
    assert not any(quota.values()), quota
    with httpx.Client() as c:
        for u in fair:
            infer(c, st.gw1.url, u, row)
        wait_js(pg.page, "Number((document.getElementById('d-srm-box').textContent.match(/over (\\d+) units/) "
                         f"|| [0, 0])[1]) >= {len(fair)}", timeout=5)
        assert "srm-flagged" not in (pg.page.get_attribute("#d-srm-box", "class") or "")
        # The skew: a client that only ever sends units of variant a (a broken caller, a bot).
        for u in [u for u in units[1200:] if offline[u] == "a"][:500]:
            infer(c, st.gw2.url, u, row)
    pg.page.wait_for_selector("#d-srm-box.srm-flagged", timeout=5000)
    assert pg.page.inner_text("#d-srm").strip() == "SRM FLAGGED"
    color = pg.page.evaluate("getComputedStyle(document.getElementById('d-srm-box')).color")
    assert color == "rgb(198, 40, 40)"   # the red of app.css
    assert st.state()["srm"]["flagged"] is True
    if screenshots:
        pg.page.screenshot(path=str(screenshots / "console-srm.png"), full_page=True)
    _no_errors(pg)


def test_an_experiment_name_is_shown_escaped(page: Page, console_stack: Stack, screenshots) -> None:
    pg, st = page, console_stack
    body = {"model": "xss-model", "salt": "xss", "variants": [
        {"name": "<b>bold</b>", "weight": 50, "target": {"model": "clf", "version": "1"}},
        {"name": "b", "weight": 50, "target": {"model": "clf", "version": "1"}}],
        "allowlist": {"<script>alert(1)</script>": "b"},
        "shadow": {"variant": "<i>shadow</i>", "share": 100, "target": {"model": "clf", "version": "2"}}}
    from urllib.parse import quote
    r = httpx.put(f"{st.admin}/admin/experiments/{quote(XSS_NAME, safe='')}", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    row = f'#experiments tbody tr[data-name="{XSS_NAME.replace(chr(34), chr(92) + chr(34))}"]'
    pg.page.wait_for_selector(row, timeout=5000)
    pg.page.click(row)
    wait_js(pg.page, f"document.getElementById('d-title').textContent === {XSS_NAME!r}")
    assert pg.page.inner_text("#d-title") == XSS_NAME
    assert "<b>bold</b>" in pg.page.inner_text("#d-live") and "<script>alert(1)</script>" in pg.page.inner_text("#e-allow")
    assert pg.page.evaluate("document.querySelectorAll('img, b, i, script:not([src])').length") == 0
    assert pg.page.evaluate("window.__xss") is None
    # Shadow figures: every unit mirrored to clf:2; the page shows calls, latency and the diff.
    with httpx.Client() as c:
        for i in range(20):
            r = c.post(f"{st.gw1.url}/v1/infer", json={"model": "xss-model", "unit_id": f"sh-{i}",
                                                      "inputs": [0.5] * INPUT_WIDTH}, timeout=5)
            assert r.status_code == 200, r.text
    wait_js(pg.page, "document.getElementById('d-shadow-box').textContent.includes(': 20 calls')")
    shadow = pg.page.inner_text("#d-shadow-box")
    assert "<i>shadow</i> mirrors 100.00 % of units" in shadow
    diff = float(shadow.rsplit("prediction diff| ", 1)[1])
    assert diff > 0   # v2 is another model than v1: their outputs differ
    if screenshots:
        pg.page.screenshot(path=str(screenshots / "console-escaped.png"), full_page=True)
    pg.page.click(f'#experiments tbody tr[data-name="{EXPERIMENT}"]')
    _no_errors(pg)
