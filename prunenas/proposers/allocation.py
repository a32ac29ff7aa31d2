"""How the density proposers keep weights (`prunenas.proposers.unstructured`): the layer table of a context's
model, the rankers that decide each layer's kept count and mask, and the allocation that meets a target.

  GlobalRanking   the weights of highest keys over all layers (one threshold), with per-layer floors
  FormulaRanking  per-layer counts from a formula (ERK, uniform), random positions within each layer
  RankedSubset    a global ranking over some layers (layers=conv), the others kept dense
  solve_allocation  the allocation that meets a density, ratio or MACs-ratio target, with the collapse guard
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from prunenas.cost import fvcore_macs_by_layer
from prunenas.errors import PrunenasError
from prunenas.masks import prunable_layers, weight_of
from prunenas.proposers.base import ProposalContext, Target
from prunenas.spaces.base import Space

MACS_TOLERANCE = 0.02  # relative, as the runner checks it
_NEG_INF = float("-inf")


@dataclass(frozen=True)
class Allocation:
    counts: list[int]  # weights kept per layer, network order
    clamped: dict[str, int]  # layer -> count before the collapse guard raised it


class Ranker(Protocol):
    def allocate(self, kept: int) -> Allocation: ...

    def masks(self, counts: Sequence[int]) -> list[torch.Tensor]: ...


def _descending(key: torch.Tensor, tier: torch.Tensor | None = None) -> torch.Tensor:
    """Indices by (tier, key) descending, ties by position; NaN keys last."""
    key = torch.where(torch.isnan(key), _NEG_INF, key)
    order = torch.sort(key, descending=True, stable=True).indices
    if tier is not None:
        order = order[torch.sort(tier[order], descending=True, stable=True).indices]
    return order


class GlobalRanking:
    """Keeps the weights with the highest keys over all layers (one global threshold), with per-layer
    floors: a layer below its floor keeps its floor's best weights and the threshold rises for the
    others so the total stays the same. `tiers` rank before `keys` (SynFlow's survival step)."""

    def __init__(
        self,
        keys: Sequence[torch.Tensor],
        names: Sequence[str],
        floors: Sequence[int],
        tiers: Sequence[torch.Tensor] | None = None,
    ) -> None:
        self.keys = [k.detach().reshape(-1).to("cpu", torch.float64) for k in keys]
        self.tiers = None if tiers is None else [t.detach().reshape(-1).cpu() for t in tiers]
        self.names = list(names)
        self.floors = list(floors)
        numels = torch.tensor([k.numel() for k in self.keys])
        order = _descending(torch.cat(self.keys), None if self.tiers is None else torch.cat(self.tiers))
        self.sorted_layer = torch.repeat_interleave(torch.arange(len(self.keys)), numels)[order]

    def allocate(self, kept: int) -> Allocation:
        n_layers = len(self.keys)
        unguarded = torch.bincount(self.sorted_layer[:kept], minlength=n_layers).tolist()
        counts = list(unguarded)
        clamped: set[int] = set()
        while True:
            low = [i for i in range(n_layers) if i not in clamped and counts[i] < self.floors[i]]
            if not low:
                break
            clamped.update(low)
            budget = kept - sum(self.floors[i] for i in clamped)
            active = torch.ones(n_layers, dtype=torch.bool)
            active[sorted(clamped)] = False
            rest = self.sorted_layer[active[self.sorted_layer]]
            counts = torch.bincount(rest[: max(budget, 0)], minlength=n_layers).tolist()
            for i in clamped:
                counts[i] = self.floors[i]
        return Allocation(counts, {self.names[i]: int(unguarded[i]) for i in sorted(clamped)})

    def masks(self, counts: Sequence[int]) -> list[torch.Tensor]:
        out = []
        for i, (key, count) in enumerate(zip(self.keys, counts, strict=True)):
            mask = torch.zeros(key.numel(), dtype=torch.bool)
            mask[_descending(key, None if self.tiers is None else self.tiers[i])[:count]] = True
            out.append(mask)
        return out


class FormulaRanking:
    """Kept count of layer L = clip(eps * weight_L, floor_L, numel_L), eps solved so that the counts sum
    to the total (water-filling: layers that would exceed 1 stay dense and the rest are re-scaled),
    rounded by largest remainder; positions within each layer are random (seeded)."""

    def __init__(
        self, weights: Sequence[float], numels: Sequence[int], names: Sequence[str], floors: Sequence[int], seed: int
    ) -> None:
        self.weights = [float(w) for w in weights]
        self.numels = list(numels)
        self.names = list(names)
        self.floors = list(floors)
        self.seed = seed

    def _filled(self, eps: float) -> list[float]:
        return [
            min(float(n), max(float(f), eps * w))
            for w, n, f in zip(self.weights, self.numels, self.floors, strict=True)
        ]

    def allocate(self, kept: int) -> Allocation:
        lo, hi = 0.0, max(n / w for n, w in zip(self.numels, self.weights, strict=True) if w > 0)
        for _ in range(200):
            mid = (lo + hi) / 2
            if sum(self._filled(mid)) < kept:
                lo = mid
            else:
                hi = mid
        real = self._filled(hi)
        counts = [max(f, min(n, math.floor(r))) for r, n, f in zip(real, self.numels, self.floors, strict=True)]
        by_remainder = sorted(range(len(counts)), key=lambda i: (counts[i] - real[i], i))  # largest remainder first
        diff = kept - sum(counts)
        while diff > 0:
            grew = False
            for i in by_remainder:
                if diff and counts[i] < self.numels[i]:
                    counts[i] += 1
                    diff -= 1
                    grew = True
            if not grew:
                break
        while diff < 0:
            shrank = False
            for i in reversed(by_remainder):
                if diff and counts[i] > self.floors[i]:
                    counts[i] -= 1
                    diff += 1
                    shrank = True
            if not shrank:
                break
        clamped = {
            name: round(hi * w) for name, w, f in zip(self.names, self.weights, self.floors, strict=True) if hi * w < f
        }
        return Allocation(counts, clamped)

    def masks(self, counts: Sequence[int]) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        out = []
        for n, count in zip(self.numels, counts, strict=True):
            mask = torch.zeros(n, dtype=torch.bool)
            mask[torch.randperm(n, generator=generator)[:count]] = True
            out.append(mask)
        return out


# --------------------------------------------------------------------------------------------- the layers


@dataclass(frozen=True)
class LayerTable:
    """The prunable layers of a context's model: names (= genes), shapes, floors, MACs and whether
    each is ranked (a layer that is not keeps all its weights)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    floors: tuple[int, ...]
    macs: tuple[int, ...]
    ranked: tuple[bool, ...]

    @property
    def numels(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def total(self) -> int:
        return sum(self.numels)

    def macs_ratio(self, counts: Sequence[int]) -> float:
        """Density-weighted MACs / dense MACs, rounded per layer as `prunenas.cost` does."""
        dense = sum(self.macs)
        if dense == 0:
            return 1.0
        kept = sum(round(m * (k / n)) for m, k, n in zip(self.macs, counts, self.numels, strict=True))
        return kept / dense


_MACS_CACHE: OrderedDict[tuple[Space, tuple[tuple[str, tuple[int, ...]], ...]], tuple[int, ...]] = OrderedDict()


def _layer_macs(space: Space, model: nn.Module, key: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[int, ...]:
    """fvcore MACs per prunable layer, computed once per (space, layer shapes) and memoised."""
    cache_key = (space, key)
    if cache_key not in _MACS_CACHE:
        by_layer = fvcore_macs_by_layer(model, space.input_shape)
        _MACS_CACHE[cache_key] = tuple(int(by_layer[name]) for name, _ in key)
        while len(_MACS_CACHE) > 32:
            _MACS_CACHE.popitem(last=False)
    return _MACS_CACHE[cache_key]


def layer_table(ctx: ProposalContext, min_weights: int, min_density: float, conv_only: bool = False) -> LayerTable:
    """The layer table; with `conv_only` only Conv2d layers are ranked and every other layer's floor is
    its whole weight count (it stays dense)."""
    modules = list(prunable_layers(ctx.model))
    found = [(name, tuple(int(d) for d in weight_of(m).shape)) for name, m in modules]
    genes = [g.name for g in ctx.space.genes]
    if [name for name, _ in found] != genes:
        raise PrunenasError(
            f"the model's prunable layers do not match the genes of space {ctx.space.name!r}; "
            f"score a model built by that space (space.build())"
        )
    ranked = tuple(not conv_only or isinstance(m, nn.Conv2d) for _, m in modules)
    floors = tuple(
        min(math.prod(s), max(min_weights, math.ceil(min_density * math.prod(s) - 1e-9))) if r else math.prod(s)
        for (_, s), r in zip(found, ranked, strict=True)
    )
    return LayerTable(
        names=tuple(genes),
        shapes=tuple(s for _, s in found),
        floors=floors,
        macs=_layer_macs(ctx.space, ctx.model, tuple(found)),
        ranked=ranked,
    )


class RankedSubset:
    """A global ranking over some of the layers (`LayerTable.ranked`); every other layer keeps all its
    weights. Kept counts given to `allocate` are of the whole model."""

    def __init__(self, inner: GlobalRanking, layers: LayerTable) -> None:
        self.inner = inner
        self.ranked = [i for i, r in enumerate(layers.ranked) if r]
        self.numels = layers.numels
        self.fixed = sum(n for n, r in zip(self.numels, layers.ranked, strict=True) if not r)

    def allocate(self, kept: int) -> Allocation:
        inner = self.inner.allocate(kept - self.fixed)
        counts = list(self.numels)
        for i, count in zip(self.ranked, inner.counts, strict=True):
            counts[i] = count
        return Allocation(counts, inner.clamped)

    def masks(self, counts: Sequence[int]) -> list[torch.Tensor]:
        out = [torch.ones(n, dtype=torch.bool) for n in self.numels]
        for i, mask in zip(self.ranked, self.inner.masks([counts[i] for i in self.ranked]), strict=True):
            out[i] = mask
        return out

    def threshold_kept(self, pruned: float) -> int:
        """Weights of the whole model kept by the Rethinking code's rule on the ranked keys: with y the
        keys sorted ascending and n their number, those with key > y[int(n * pruned)] (the ranking keeps
        exactly those: every key above the threshold ranks before every key at or below it)."""
        keys = torch.cat(self.inner.keys)
        threshold = torch.sort(keys).values[int(keys.numel() * pruned)]
        return int((keys > threshold).sum()) + self.fixed


def target_density(target: Target) -> float:
    return target.value if target.kind == "density" else 1.0 - target.value


def _pruned_fraction(target: Target) -> float:
    """The fraction a density or ratio target prunes, as the Rethinking code's `--percent`. 1 - density
    is rounded to 12 decimals so that, e.g., density 0.3 gives the float 0.7 itself (1 - 0.3 is
    0.7000000000000001, which moves int(n * p) by one for some n)."""
    return target.value if target.kind == "ratio" else round(1.0 - target.value, 12)


def solve_allocation(layers: LayerTable, target: Target, ranker: Ranker, options: str) -> Allocation:
    """The allocation meeting `target`: the global kept count from the density, or by bisection on the
    kept count for a MACs ratio (the MACs ratio grows with the kept count)."""
    total, least = layers.total, sum(layers.floors)
    if target.kind != "macs_ratio":
        if isinstance(ranker, RankedSubset):
            kept = ranker.threshold_kept(_pruned_fraction(target))
        else:
            kept = round(target_density(target) * total)
        if kept < least:
            raise PrunenasError(
                f"{target.describe()} keeps {kept} of {total} weights but the collapse guard ({options}) keeps at "
                f"least {least}; ask for a higher density or lower min_weights/min_density"
            )
        return ranker.allocate(kept)
    want = target.value
    lo, hi = least, total
    if layers.macs_ratio(ranker.allocate(lo).counts) >= want:
        hi = lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if layers.macs_ratio(ranker.allocate(mid).counts) >= want:
            hi = mid
        else:
            lo = mid
    best = min((ranker.allocate(k) for k in {lo, hi}), key=lambda a: abs(layers.macs_ratio(a.counts) - want))
    got = layers.macs_ratio(best.counts)
    if abs(got - want) > MACS_TOLERANCE * want:
        raise PrunenasError(
            f"--macs-ratio {want:g} cannot be met within 2% (closest: {got:.4f}) with the collapse guard "
            f"({options}); ask for a larger --macs-ratio or lower min_weights/min_density"
        )
    return best
