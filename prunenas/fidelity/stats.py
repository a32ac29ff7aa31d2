"""Rank agreement of two score vectors over the same candidates, with numpy only.

  kendall_tau_b   Kendall's tau-b: (concordant - discordant pairs) / sqrt((n0 - ties in x) (n0 - ties in y)),
                  n0 = n (n - 1) / 2; a pair tied in x counts in neither concordant nor discordant
  spearman_rho    Pearson's correlation of the average ranks (ties share the mean of their ranks)
  within_groups   a statistic over the pairs inside each group only (candidates at one MACs level), the
                  groups' values weighted by their pairs: how well a ranking orders candidates of one size
  bootstrap       a statistic's percentile interval over resamples of the candidates (with replacement)

Both statistics are None where they are undefined: fewer than two candidates, or every score of one side
equal (no pair is ordered). Bootstrap resamples where the statistic is undefined are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray, np.ndarray], "float | None"]


def _pair(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"two score vectors of the same length are needed, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite numbers")
    return a, b


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span: [10, 20, 20, 5] -> [2, 3.5, 3.5, 1]."""
    x = np.asarray(values, dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # the last rank of each distinct value, in ascending order
    mean_rank = ends - (counts - 1) / 2.0
    return np.asarray(mean_rank[inverse.reshape(-1)], dtype=float)


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Kendall's tau-b of `x` and `y` (None when undefined)."""
    a, b = _pair(x, y)
    n = len(a)
    if n < 2:
        return None
    sx = np.sign(a[:, None] - a[None, :])
    sy = np.sign(b[:, None] - b[None, :])
    pairs = n * (n - 1) / 2.0
    s = float((sx * sy).sum()) / 2.0  # each unordered pair appears twice, with the same product
    ties_x = (float((sx == 0).sum()) - n) / 2.0  # the diagonal is n zeros
    ties_y = (float((sy == 0).sum()) - n) / 2.0
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    if denominator == 0.0:
        return None
    return max(-1.0, min(1.0, s / denominator))


def spearman_rho(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Spearman's rho of `x` and `y` with average ranks for ties (None when undefined)."""
    a, b = _pair(x, y)
    if len(a) < 2:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    if denominator == 0.0:
        return None
    return max(-1.0, min(1.0, float((ra * rb).sum()) / denominator))


def mean_pairwise(rows: Sequence[Sequence[float]] | np.ndarray, statistic: Statistic = kendall_tau_b) -> float | None:
    """The mean of `statistic` over every pair of rows (runs of the same candidates under different seeds):
    how well a ranking agrees with itself. None with fewer than two rows or where every pair is undefined."""
    m = np.asarray(rows, dtype=float)
    values = [statistic(m[i], m[j]) for i in range(len(m)) for j in range(i + 1, len(m))]
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def within_groups(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    groups: Sequence[object],
    statistic: Statistic = kendall_tau_b,
) -> float | None:
    """`statistic(x, y)` inside each group of candidates (same `groups` label), averaged with weights n(n-1)/2,
    the group's pairs; groups where it is undefined are left out. None when no group defines it."""
    a, b = _pair(x, y)
    if len(groups) != len(a):
        raise ValueError(f"one group per candidate is needed, got {len(groups)} for {len(a)}")
    total = weight = 0.0
    for label in dict.fromkeys(groups):
        idx = [i for i, g in enumerate(groups) if g == label]
        value = statistic(a[idx], b[idx]) if len(idx) >= 2 else None
        if value is not None:
            pairs = len(idx) * (len(idx) - 1) / 2.0
            total += value * pairs
            weight += pairs
    return total / weight if weight else None


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval and how many resamples defined the statistic."""

    low: float
    high: float
    level: float
    resamples: int
    defined: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "low": self.low, "high": self.high, "level": self.level, "resamples": self.resamples,
            "defined": self.defined,
        }  # fmt: skip


def bootstrap(
    statistic: Callable[[np.ndarray], float | None],
    n: int,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.9,
) -> Interval | None:
    """The `level` percentile interval of `statistic(indices)` over `resamples` draws of `n` candidate
    indices with replacement (a fixed `seed`: the same interval every time). None when fewer than half the
    resamples define the statistic."""
    if n < 2 or resamples < 1:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    values = [v for idx in draws if (v := statistic(idx)) is not None]
    if len(values) * 2 < resamples:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(np.asarray(values), [tail, 100.0 - tail])
    return Interval(float(low), float(high), level, resamples, len(values))


def paired_interval(
    statistic: Statistic, x: Sequence[float], y: Sequence[float], resamples: int = 1000, seed: int = 0
) -> Interval | None:
    """`bootstrap` of `statistic(x, y)` over the candidates."""
    a, b = _pair(x, y)
    return bootstrap(lambda idx: statistic(a[idx], b[idx]), len(a), resamples, seed)
