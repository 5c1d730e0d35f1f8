"""Alert rules: promtool check + unit tests, a firing and a quiet case per alert, runbook links
that resolve, and every dashboard query accepted by Prometheus' own parser."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from deploy.dashboard import queries
from deploy.promql import expand
from deploy.promrule import RULES, load_rules
from deploy.render import DEPLOY

TESTS = DEPLOY / "prometheus" / "rules_test.yaml"
README = DEPLOY / "README.md"


def _alerts() -> list[dict]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in proc.stdout


def test_promtool_unit_tests(promtool: str) -> None:
    proc = subprocess.run([promtool, "test", "rules", str(TESTS)], capture_output=True, text=True,
                          cwd=TESTS.parent, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for t in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - fires == set(), f"alerts never tested firing: {sorted(names - fires)}"
    assert names - quiet == set(), f"alerts never tested quiet: {sorted(names - quiet)}"


def _anchors(markdown: str) -> set[str]:
    # GitHub's slugs: lower case, punctuation dropped, spaces to dashes.
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+\s+(.*)$", markdown, flags=re.M)}


def test_every_alert_has_runbook_text_that_exists() -> None:
    anchors = _anchors(README.read_text())
    for a in _alerts():
        ann = a.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), f"{a['alert']}: annotations.summary/description"
        link = ann.get("runbook", "")
        assert link.startswith("deploy/README.md#"), f"{a['alert']}: annotations.runbook {link!r}"
        assert link.split("#", 1)[1] in anchors, f"{a['alert']}: annotations.runbook {link!r}: no such heading"


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """promtool has no parse command; a recording rule per query makes it parse each one."""
    rules = [{"record": f"dashboard:q{i}", "expr": expand(q, {"experiment": "e", "model": "m"})} for i, q in enumerate(queries())]
    f = tmp_path / "dashboard_rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _server_error_codes() -> set[str]:
    from gateway import errors as E

    seen, todo = set(), [E.GatewayError]
    while todo:
        cls = todo.pop()
        seen.add(cls)
        todo.extend(cls.__subclasses__())
    return {c.code for c in seen if c.status >= 500}


def test_server_error_reasons_are_the_gateways_5xx_codes() -> None:
    """The error-rate alert and the dashboard's error ratio count exactly the gateway's 5xx codes."""
    from deploy.dashboard import SERVER_ERRORS

    rule = next(a for a in _alerts() if a["alert"] == "InfergateVariantErrorRateHigh")
    in_rule = set(re.search(r'reason=~"([^"]+)"', rule["expr"]).group(1).split("|"))
    codes = _server_error_codes()
    assert "model_unavailable" in codes and "overloaded" not in codes
    assert in_rule == codes, f"InfergateVariantErrorRateHigh: expr reason=~ {sorted(in_rule)} != 5xx codes {sorted(codes)}"
    assert set(SERVER_ERRORS.split("|")) == codes, f"deploy/dashboard.py SERVER_ERRORS != 5xx codes {sorted(codes)}"
