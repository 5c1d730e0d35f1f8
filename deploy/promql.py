"""Metric names a PromQL expression reads, found without a full parser.

Good enough for the expressions in our rules and dashboard (checked by their tests): strings,
label matchers, ranges, offsets, grouping clauses and numbers are removed; what is left that
is not a function call or a keyword is a metric name.
"""

from __future__ import annotations

import re

__all__ = ["expand", "metric_names"]

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                       "unless", "offset", "bool", "inf", "nan", "atan2"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9][0-9a-z]*")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])[0-9][0-9a-zA-Z.]*(?:[eE][-+]?[0-9]+)?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    s = _STRING.sub('""', expr)
    s = _MATCHERS.sub(" ", s)
    s = _RANGE.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    s = _OFFSET.sub(" ", s)
    s = _NUMBER.sub(" ", s)
    names: set[str] = set()
    for m in _IDENT.finditer(s):
        word = m.group(0)
        if word.lower() in _KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def expand(expr: str, variables: dict[str, str], rate_interval: str = "1m") -> str:
    """A Grafana query with its variables replaced, so Prometheus can parse and run it."""
    out = expr.replace("$__rate_interval", rate_interval)
    for name in sorted(variables, key=len, reverse=True):
        out = out.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    return out
