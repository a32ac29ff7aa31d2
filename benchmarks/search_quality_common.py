"""What the search-quality benchmark's modules share (benchmarks/search_quality.py runs it; see its docstring):
the space and the three arms, the small statistics (Kendall's tau-b, Welch's t-test, Pareto front and
hypervolume) and the progress line printed after every training run.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

SPACE = "resnet20_channels"
ARMS = ("proposers", "search-tpe", "search-random")
ARM_TITLE = {
    "proposers": "a. proposers only",
    "search-tpe": "b. search (TPE, seeded)",
    "search-random": "c. random search (seeded)",
}


# -- small statistics ---------------------------------------------------------------------------------------
def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else math.nan


def tau_standard_error(n: int) -> float:
    """Standard deviation of Kendall's tau under independence (a yardstick for the noise of n points)."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n > 1 else math.nan


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t statistic and two-sided p value (nan where undefined)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return math.nan, math.nan
    t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    try:
        from scipy import stats

        return t, float(2 * stats.t.sf(abs(t), df))
    except ImportError:
        return t, math.nan


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(cost, accuracy) points not dominated by a cheaper-or-equal, at-least-as-accurate one; by cost."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc))
    return front


def hypervolume(front: list[tuple[float, float]], max_cost: float = 1.0) -> float:
    """Area dominated by a (MACs ratio, accuracy) front up to MACs ratio `max_cost` and accuracy 0."""
    area = 0.0
    for i, (cost, acc) in enumerate(front):
        if cost >= max_cost:
            break
        nxt = front[i + 1][0] if i + 1 < len(front) else max_cost
        area += (min(nxt, max_cost) - cost) * acc
    return area


def fmt_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


# -- progress -------------------------------------------------------------------------------------------
class Progress:
    """One line per finished run: i/N, elapsed, ETA = image-epochs left / measured image-epochs per second."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.i = 0
        self.n = 0
        self.planned = 0.0  # image-epochs of the whole plan
        self.done = 0.0
        self.fresh = 0.0  # image-epochs trained by this process (cached runs excluded)
        self.lock = threading.Lock()

    def plan(self, runs: int, image_epochs: float) -> None:
        self.n, self.planned = runs, image_epochs

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return self.fresh / elapsed if self.fresh and elapsed > 0 else math.nan

    def line(self, what: str, image_epochs: float, cached: bool, detail: str) -> None:
        with self.lock:
            self.i += 1
            self.done += image_epochs
            if not cached:
                self.fresh += image_epochs
            elapsed = time.perf_counter() - self.t0
            rate = self.rate()
            left = max(0.0, self.planned - self.done)
            eta = fmt_s(left / rate) if rate == rate and rate > 0 else "?"
            tag = " (cached)" if cached else ""
            print(
                f"[{self.i}/{max(self.n, self.i)}] {what}{tag}: {detail} | elapsed {fmt_s(elapsed)}, ETA {eta}",
                flush=True,
            )


def proposals_at_levels(
    pn: Any,
    space: Any,
    proposers: Sequence[str],
    levels: Sequence[float],
    reference: Any,
    data: Any,
    device: str,
    log: Callable[[str], None],
) -> list[tuple[str, float, Any]]:
    """(proposer, level, genotype) for each proposer at each MACs level; a target a proposer cannot meet (or
    any other failure of it) is logged and left out, never fatal."""
    out = []
    for name in proposers:
        for level in levels:
            try:
                g = pn.propose(space, name, macs_ratio=level, reference=reference, data=data, seed=0, device=device)
            except Exception as exc:
                log(f"proposal {name} at {level:g}: none ({exc})")
                continue
            out.append((name, level, g))
    return out
