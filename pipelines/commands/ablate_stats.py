"""Statistics of an ablation over seeds: means with 95 % t-intervals, and paired t-tests between recipes.

Student's t is computed exactly for whole degrees of freedom (seeds − 1), by the closed forms of Abramowitz and
Stegun 26.7.3–4, so that no statistics package is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean, stdev


def t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` (a whole number ≥ 1) degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/π)(θ + sinθ cosθ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + …))
        term, series = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            series += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    term, series = 1.0, 1.0  # even: sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + …)
    for k in range(1, df // 2):
        term *= cos2 * (2 * k - 1) / (2 * k)
        series += term
    return math.sin(theta) * series


def t_p_value(t: float, df: int) -> float:
    """Two-sided p-value of a t statistic."""
    return max(0.0, 1.0 - t_two_sided_mass(t, df))


def t_quantile(df: int, confidence: float = 0.95) -> float:
    """The t with P(|T| < t) = confidence (bisection: the mass grows with t)."""
    low, high = 0.0, 1.0
    while t_two_sided_mass(high, df) < confidence:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if t_two_sided_mass(middle, df) < confidence else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    """Mean over seeds ± half-width of its 95 % t-interval (None with a single seed: no spread to measure)."""

    mean: float
    half_width: float | None
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n}

    def contains_zero(self) -> bool:
        return self.half_width is None or abs(self.mean) <= self.half_width


def interval(values: list[float]) -> Interval:
    if not values:
        raise ValueError("no values: an interval needs at least one seed")
    if len(values) == 1:
        return Interval(values[0], None, 1)
    return Interval(fmean(values), t_quantile(len(values) - 1) * stdev(values) / math.sqrt(len(values)), len(values))


@dataclass(frozen=True)
class PairedTest:
    """B − A improvement over the same seeds: `difference` is the interval of (a − b) per seed, positive when B
    has the lower value (lower is better for losses); `p` the two-sided paired t-test's p-value."""

    difference: Interval
    p: float | None

    def as_dict(self) -> dict:
        return {**self.difference.as_dict(), "p": self.p}


def paired_test(a: list[float], b: list[float]) -> PairedTest:
    """Paired t-test of a[i] − b[i] (seed i trained both)."""
    if len(a) != len(b):
        raise ValueError(f"paired test needs the same seeds on both sides ({len(a)} vs {len(b)})")
    differences = [x - y for x, y in zip(a, b)]
    spread = interval(differences)
    if spread.n < 2:
        return PairedTest(spread, None)
    sd = stdev(differences)
    if sd == 0:
        return PairedTest(spread, 1.0 if spread.mean == 0 else 0.0)
    return PairedTest(spread, t_p_value(spread.mean / (sd / math.sqrt(spread.n)), spread.n - 1))
