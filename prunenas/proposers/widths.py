"""Widths of the structured (channel) proposers: from scores or a uniform ratio, and the ratio r that meets a
target (`prunenas.proposers.structured`).

  local_widths   every gene keeps int(n * (1 - r)) channels
  global_widths  the int(r * N) lowest-scoring channels over all genes go (or network slimming's threshold rule)
  solve_ratio    r given, or found by bisection so that the MACs (or predicted latency) ratio meets the target
  snap_widths    widths moved to what each gene allows (the space's channel divisor)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from prunenas import latency_model
from prunenas.cost import fast_macs
from prunenas.errors import PrunenasError
from prunenas.proposers.base import Target
from prunenas.spaces.base import Space

MACS_TOLERANCE = 0.02  # relative
Widths = dict[str, int]


# -- targets -----------------------------------------------------------------------------------------
def macs_ratio_of(space: Space, genes: Mapping[str, int]) -> float:
    return fast_macs(space, space.make(dict(genes))) / fast_macs(space, space.reference())


def _ratio_measure(space: Space, kind: str) -> Callable[[Mapping[str, int]], float]:
    """The ratio a target of `kind` is met on: MACs (counted) or latency (predicted, `prunenas.latency_model`)."""
    if kind != "latency_ratio":
        return lambda genes: macs_ratio_of(space, genes)

    predictor = latency_model.latency_predictor(space)
    return lambda genes: predictor.ratio(space, space.make(dict(genes)))


def solve_ratio(
    space: Space, widths_for: Callable[[float], Widths], target: Target, reference: Mapping[str, Any]
) -> tuple[float, Widths]:
    """The pruning ratio r and widths that meet `target`: given directly, or by bisection on r so that
    the MACs ratio is within MACS_TOLERANCE (relative) of a macs_ratio target."""
    if target.kind == "ratio":
        return target.value, widths_for(target.value)

    measure = _ratio_measure(space, target.kind)

    def ratio_of(w: Widths) -> float:
        return measure({**reference, **w})

    goal = target.value
    lo, hi = 0.0, 0.999
    best = (math.inf, 0.0, widths_for(0.0))
    for _ in range(40):
        mid = (lo + hi) / 2
        widths = widths_for(mid)
        achieved = ratio_of(widths)
        err = abs(achieved - goal) / goal
        if err < best[0]:
            best = (err, mid, widths)
        if err <= MACS_TOLERANCE / 4:
            break
        if achieved > goal:
            lo = mid
        else:
            hi = mid
    if best[0] > MACS_TOLERANCE and lo < hi:
        best = min(best, _between(widths_for(lo), widths_for(hi), ratio_of, goal, lo), key=lambda b: b[0])
    if best[0] > MACS_TOLERANCE:
        floor = ratio_of(widths_for(0.999))
        closest = ratio_of(best[2])
        if goal < floor:
            why = f"the smallest reachable is about {floor:.3f}; ask for a larger ratio or a lower min_channels"
        else:
            why = f"the widths are too coarse here: the closest is {closest:.3f}; ask for another ratio"
        flag = "--" + target.kind.replace("_", "-")
        raise PrunenasError(f"cannot reach {flag} {goal:g} within 2% in {space.name!r}: {why}")
    return best[1], best[2]


def snap_widths(space: Space, widths: Mapping[str, int]) -> Widths:
    """Each width moved to the nearest value its gene allows (a multiple of the space's channel divisor,
    within the gene's bounds); a no-op for genes of step 1 within bounds."""
    return {g: int(space.gene(g).snap(w)) for g, w in widths.items()}


def _between(
    above: Widths, below: Widths, ratio_of: Callable[[Widths], float], goal: float, ratio: float
) -> tuple[float, float, Widths]:
    """Where widths move in coarse steps (channel divisors), the MACs ratio can jump over the goal
    between two neighbouring ratios r. Walk from the widths just above the goal to those just below,
    one gene at a time (the gene whose move changes MACs least first), and keep the closest point."""
    current = dict(above)
    best = (abs(ratio_of(current) - goal) / goal, ratio, dict(current))
    todo = [g for g in above if above[g] != below[g]]
    while todo:
        trials = {g: ratio_of({**current, g: below[g]}) for g in todo}
        gene = max(todo, key=lambda g: trials[g])  # the smallest drop in MACs
        current[gene] = below[gene]
        todo.remove(gene)
        err = abs(trials[gene] - goal) / goal
        if err < best[0]:
            best = (err, ratio, dict(current))
        if trials[gene] < goal:
            break
    return best


# -- widths from scores ------------------------------------------------------------------------------
def local_widths(sizes: Mapping[str, int], ratio: float, floor: int) -> tuple[Widths, dict[str, int]]:
    """Every gene keeps int(n * (1 - ratio)) channels (Li et al.'s rounding), at least `floor`."""
    widths, clamped = {}, {}
    for gene, n in sizes.items():
        keep = int(n * (1.0 - ratio) + 1e-9)
        if keep < min(floor, n):
            clamped[gene] = keep
            keep = min(floor, n)
        widths[gene] = keep
    return widths, clamped


def global_widths(
    scores: Mapping[str, torch.Tensor], ratio: float, floor: int, *, threshold_rule: bool = False
) -> tuple[Widths, dict[str, int]]:
    """Remove the int(ratio * N) lowest-scoring channels over all genes, none below `floor`.

    `threshold_rule`: network slimming's code instead (resprune.py, vggprune.py, denseprune.py): the
    threshold is the sorted score at index int(ratio * N) and a channel is kept only when its score is
    strictly above it, so int(ratio * N) + 1 channels go (more on ties)."""
    genes = list(scores)
    sizes = [int(scores[g].numel()) for g in genes]
    flat = torch.cat([scores[g].detach().double().flatten().cpu() for g in genes])
    owner = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    to_remove = int(ratio * flat.numel() + 1e-9)
    if threshold_rule and 0 < to_remove + 1 <= flat.numel():
        threshold = torch.sort(flat).values[to_remove]
        to_remove = int((flat <= threshold).sum())
    order = torch.argsort(flat, stable=True)
    # Removing in ascending order, a gene stops losing channels at its floor. Counting the removals
    # per gene among the first k candidates and capping them gives the exact result in one pass
    # once k is grown to cover the capped removals.
    caps = torch.tensor([max(0, n - min(floor, n)) for n in sizes])
    k = to_remove
    while True:
        removed = torch.bincount(owner[order[:k]], minlength=len(genes)).clamp(max=caps)
        total = int(removed.sum())
        if total >= to_remove or k >= flat.numel():
            break
        k += to_remove - total
    widths = {g: sizes[i] - int(removed[i]) for i, g in enumerate(genes)}
    wanted = torch.bincount(owner[order[:to_remove]], minlength=len(genes))
    clamped = {
        g: sizes[i] - int(wanted[i]) for i, g in enumerate(genes) if sizes[i] - int(wanted[i]) < min(floor, sizes[i])
    }
    return widths, clamped
