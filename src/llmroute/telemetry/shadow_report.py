"""`llmroute report shadow`: how often routing lost quality against the reference model.

A shadowed request was also sent to the reference model and a judge compared the two
answers. Per route: the judged pairs, the share where the routed answer was judged worse
(``routed_ok`` False) with a Wilson 95% interval, and, apart, the pairs the judge failed
on (``judge_error``) or that were not judged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmroute.telemetry.record import ShadowRecord

__all__ = ["ShadowReport", "ShadowRouteStats", "shadow_report", "wilson_interval"]

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial share; None when `n` is 0."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # exactly 0 at none and 1 at all: in floats center - half came out 5.6e-17 (n = 7)
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


@dataclass(frozen=True, slots=True)
class ShadowRouteStats:
    route: str
    pairs: int  # shadowed requests
    judged: int  # with a verdict
    lost: int  # routed answer judged worse than the reference
    judge_errors: int
    unjudged: int  # no verdict and no judge error (no judge configured, still pending)

    @property
    def lost_share(self) -> float | None:
        return self.lost / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.lost, self.judged)

    def to_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {
            "route": self.route,
            "pairs": self.pairs,
            "judged": self.judged,
            "lost": self.lost,
            "lost_share": self.lost_share,
            "ci95": list(interval) if interval is not None else None,
            "judge_errors": self.judge_errors,
            "unjudged": self.unjudged,
        }


@dataclass(frozen=True, slots=True)
class ShadowReport:
    routes: list[ShadowRouteStats]
    overall: ShadowRouteStats

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "routes": [r.to_dict() for r in self.routes],
        }


def _stats(route: str, records: Sequence[ShadowRecord]) -> ShadowRouteStats:
    judged = [r for r in records if r.routed_ok is not None]
    errors = sum(1 for r in records if r.routed_ok is None and r.judge_error is not None)
    return ShadowRouteStats(
        route=route,
        pairs=len(records),
        judged=len(judged),
        lost=sum(1 for r in judged if r.routed_ok is False),
        judge_errors=errors,
        unjudged=len(records) - len(judged) - errors,
    )


def shadow_report(records: Sequence[ShadowRecord]) -> ShadowReport:
    """Per-route figures (routes by name) and the overall one."""
    by_route: dict[str, list[ShadowRecord]] = {}
    for record in records:
        by_route.setdefault(record.route, []).append(record)
    routes = [_stats(name, by_route[name]) for name in sorted(by_route)]
    return ShadowReport(routes=routes, overall=_stats("(all)", records))
