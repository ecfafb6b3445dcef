"""Banding for MinHash LSH: the S-curve, and how bands × rows are chosen from a Jaccard threshold.

Two documents with Jaccard similarity s agree on one MinHash value with probability s, on a band of r values
with probability s^r, and share at least one of b bands (become a candidate pair) with probability
1 - (1 - s^r)^b: the S-curve.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

S_CURVE_POINTS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
_GRID = np.linspace(0.0, 1.0, 2001)


def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """P(two documents with Jaccard s share a band) = 1 - (1 - s^rows)^bands."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


def _areas(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    """(false-positive area ∫₀ᵗ P(s) ds, false-negative area ∫ₜ¹ 1 - P(s) ds), as datasketch integrates them."""
    p = candidate_probability(_GRID, bands, rows)
    below = _GRID <= threshold
    return float(np.trapezoid(p[below], _GRID[below])), float(np.trapezoid(1.0 - p[~below], _GRID[~below]))


@lru_cache(maxsize=64)  # the stage is built once per task and once per check: search the schemes once
def choose_bands(threshold: float, num_perm: int, min_probability: float | None) -> tuple[int, int]:
    """Bands and rows per band (bands × rows ≤ num_perm).

    With `min_probability` (for verified pairs, where a false candidate costs only one exact comparison): the
    scheme with the smallest false-positive area among those that make a pair at `threshold` a candidate with at
    least that probability. Without it, or if no scheme reaches it: datasketch's choice, the smallest sum of the
    false-positive and false-negative areas."""
    schemes = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    areas = {scheme: _areas(threshold, *scheme) for scheme in schemes}
    if min_probability is not None:
        sure = [s for s in schemes if candidate_probability(threshold, *s) >= min_probability]
        if sure:
            return min(sure, key=lambda s: (areas[s][0], s))
    return min(schemes, key=lambda s: (areas[s][0] + areas[s][1], s))


def s_curve(bands: int, rows: int, points: tuple[float, ...] = S_CURVE_POINTS) -> dict[str, float]:
    """P(candidate) at each similarity in `points`, keyed by the similarity as text."""
    return {f"{s:g}": round(float(candidate_probability(s, bands, rows)), 6) for s in points}


def describe(bands: int, rows: int, threshold: float) -> str:
    curve = "  ".join(f"{s}:{p:.3f}" for s, p in s_curve(bands, rows).items())
    return (f"minhash_dedup: {bands} bands × {rows} rows; P(candidate) at Jaccard s = 1-(1-s^{rows})^{bands}: {curve} "
            f"(threshold {threshold:g})")
