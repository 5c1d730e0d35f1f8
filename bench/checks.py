"""Correctness under load: pure checks on one run's client and server counts.

Each check returns a list of problems (empty = fine); `enforce` turns problems into a
`CorrectnessError`, which makes the harness exit non-zero. The bounds:

- answers: wrk's completed count equals the Lua `response()` count, no socket errors, and
  the requests left unanswered when wrk stopped are at most one per connection (+1 per
  thread: wrk builds one request more than it sends on each thread).
- counts: the gateway counts a request when it finishes, also when wrk abandoned it at the
  end of the run, so per variant gateway >= client, and the total excess is at most the
  unanswered requests plus the non-2xx answers (which carry no variant).
- split: each variant's share is within `sigmas` binomial standard errors of its weight;
  the SRM chi-square p-value is reported, not enforced (4 sigma is the gate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from scipy.stats import chisquare

NO_VARIANT = "_none"


class CorrectnessError(AssertionError):
    """The system under test lost, duplicated or misrouted requests under load."""


@dataclass(frozen=True)
class SplitReport:
    total: int
    shares: dict[str, float]
    weights: dict[str, float]
    z: dict[str, float]
    srm_p_value: float | None

    def to_dict(self) -> dict:
        return {"total": self.total, "shares": {k: round(v, 5) for k, v in self.shares.items()},
                "weights": self.weights, "z": {k: round(v, 3) for k, v in self.z.items()},
                "srm_p_value": self.srm_p_value}


def check_answers(requests: int, responses: int, sent: int, socket_errors: Mapping[str, int],
                  connections: int, threads: int) -> list[str]:
    problems = []
    if requests != responses:
        problems.append(f"wrk completed {requests} requests but the script saw {responses} responses")
    bad = {k: v for k, v in socket_errors.items() if v and k != "status"}
    if bad:
        problems.append(f"socket errors: {bad}")
    unanswered = sent - responses
    if unanswered < 0 or unanswered > connections + threads:
        problems.append(f"{unanswered} requests unanswered at the end (bound 0..{connections + threads})")
    return problems


def check_counts(client: Mapping[str, int], server: Mapping[str, float], unanswered: int,
                 non2xx: int) -> list[str]:
    """Client-seen 2xx answers per variant against the gateway's infergate_requests_total deltas."""
    problems = []
    if client.get(NO_VARIANT):
        problems.append(f"{client[NO_VARIANT]} successful answers named no variant")
    excess_total = 0.0
    for v in sorted(set(client) | set(server)):
        if v == NO_VARIANT:
            continue
        c, s = client.get(v, 0), server.get(v, 0.0)
        if s < c:
            problems.append(f"variant {v!r}: client saw {c} answers but the gateway counted {s:.0f}")
        excess_total += s - c
    if excess_total > unanswered + non2xx:
        problems.append(f"the gateway counted {excess_total:.0f} more requests than the client saw; "
                        f"at most {unanswered + non2xx} (unanswered + non-2xx) can be explained")
    return problems


def split_report(client: Mapping[str, int], weights: Mapping[str, float]) -> SplitReport:
    counts = {v: client.get(v, 0) for v in weights}
    n = sum(counts.values())
    wsum = sum(weights.values())
    w = {v: weights[v] / wsum for v in weights}
    shares = {v: (counts[v] / n if n else 0.0) for v in w}
    z = {}
    for v, p in w.items():
        sigma = math.sqrt(p * (1 - p) / n) if n and 0 < p < 1 else 0.0
        z[v] = (shares[v] - p) / sigma if sigma else 0.0
    p_value = None
    if n and len(w) > 1:
        p_value = float(chisquare([counts[v] for v in w], [n * w[v] for v in w]).pvalue)
    return SplitReport(n, shares, dict(w), z, p_value)


def check_split(client: Mapping[str, int], weights: Mapping[str, float],
                sigmas: float = 4.0) -> tuple[SplitReport, list[str]]:
    rep = split_report(client, weights)
    problems = []
    unknown = sorted(set(client) - set(weights) - {NO_VARIANT})
    if unknown:
        problems.append(f"answers from variants not in the configured weights: {unknown}")
    for v, z in rep.z.items():
        if abs(z) > sigmas:
            problems.append(f"variant {v!r}: share {rep.shares[v]:.4f} vs weight {rep.weights[v]:.4f} "
                            f"is {z:+.1f} sigma (limit {sigmas})")
    return rep, problems


def enforce(where: str, problems: list[str]) -> None:
    if problems:
        raise CorrectnessError(f"{where}: " + "; ".join(problems))
