"""Unstructured proposers: magnitude pruning and pruning at initialization as density proposers.

Each score-based proposer scores every weight of every prunable layer (each Conv2d and Linear,
shortcut convs and the classifier included; with `layers=conv` only the Conv2d layers), ranks the
scores GLOBALLY and keeps the best ones; the genotype it proposes is the per-layer density vector
(kept_L / numel_L). The mask it chose comes back in `Proposal.masks` for the ablations of Frankle et
al. (ICLR 2021): shuffle it within each layer (`prunenas.surgery.shuffle_masks`), apply it to a
freshly built model (`prunenas.surgery.apply_masks_to_model`, "reinitialize"), or invert the scores
(option `invert`).

Scores (their formulas and code are in `prunenas.proposers.at_init_scores`):
  magnitude  |w| of trained weights
  snip       |w * dL/dw|                                    (Lee et al. 2019)
  grasp      -w * (H g), logits divided by T = 200 (Wang et al. 2020). The original prunes the
             HIGHEST scores, i.e. keeps the lowest, and so does "grasp".
  graspabs   |grasp score|, keeps the highest
  synflow    |w * dR/dw|, data-free, float64; K = 100 iterations, step k pruning to density d^(k/K)
             (Tanaka et al. 2020)
  random     uniform random scores
Allocation rules without scores (random positions within each layer):
  erk        Erdős–Rényi-Kernel: layer density proportional to sum(shape) / prod(shape), capped at 1
  uniform    the same density in every layer

Targets: `density` d (fraction of prunable weights kept, met to one weight), `ratio` (1 - d), or
`macs_ratio` (the global kept count is found by bisection so that the density-weighted MACs ratio is
within 2%). Collapse guard: every layer keeps at least `min_weights` weights and `min_density` of its
weights; the extra weights are taken from the other layers, so the overall target still holds, and
the guarded layers are reported in `Proposal.info["clamped"]` (layer -> count before the guard).
`min_weights=0` (with `min_density=0`) lets a layer lose every weight (gene 0.0).

Options (`prunenas proposers --json` lists them with their defaults):
  min_weights, min_density   the collapse guard above (every density proposer)
  layers     (score-based proposers except synflow, whose iterations rank every layer)
             "all"  every Conv2d and Linear is ranked (the default)
             "conv" only Conv2d layers are ranked; every Linear keeps all its weights (gene 1.0). As in
                    the Rethinking paper's weight-level code (cifar/weight-level/cifar_prune.py), a
                    density or ratio target then counts conv weights only and is met by that code's
                    threshold rule rather than by rounding: with n conv weights, p the pruned fraction
                    (the ratio, or 1 - density) and y their keys sorted ascending, the weights kept are
                    those with key > y[int(n * p)] (int(n * p) + 1 pruned when the keys are distinct,
                    ties at the threshold pruned with it), which can empty a layer when
                    min_weights=0; a --macs-ratio target counts the whole model (dense Linear layers
                    included). With d = 1 - p that keeps floor(d * n) weights, d * n - 1 when d * n
                    is whole: one fewer than round(d * n), the count of layers=all, whenever d * n is
                    whole or rounds up.
  invert     keep the other end of the ranking (score-based proposers)
  samples_per_class, temperature, iterations   as listed under the scores above
"""

from __future__ import annotations

import copy
import math
import time
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from prunenas.config import parse_bool
from prunenas.cost import fvcore_macs_by_layer
from prunenas.errors import PrunenasError
from prunenas.masks import prunable_layers, weight_of
from prunenas.proposers.at_init_scores import (
    Scores,
    SynflowRun,
    class_balanced_batch,
    erk_weights,
    grasp_scores,
    magnitude_scores,
    snip_scores,
    synflow_iterative,
    synflow_scores,
)
from prunenas.proposers.base import Proposal, ProposalContext, Proposer, Target, TargetKind
from prunenas.spaces.base import Space

__all__ = [
    "ERKProposer",
    "GraspAbsProposer",
    "GraspProposer",
    "MagnitudeProposer",
    "RandomDensityProposer",
    "SnipProposer",
    "SynflowProposer",
    "UniformDensityProposer",
]

MACS_TOLERANCE = 0.02  # relative, as the runner checks it
_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------- allocation


@dataclass(frozen=True)
class _Allocation:
    counts: list[int]  # weights kept per layer, network order
    clamped: dict[str, int]  # layer -> count before the collapse guard raised it


class _Ranker(Protocol):
    def allocate(self, kept: int) -> _Allocation: ...

    def masks(self, counts: Sequence[int]) -> list[torch.Tensor]: ...


def _descending(key: torch.Tensor, tier: torch.Tensor | None = None) -> torch.Tensor:
    """Indices by (tier, key) descending, ties by position; NaN keys last."""
    key = torch.where(torch.isnan(key), _NEG_INF, key)
    order = torch.sort(key, descending=True, stable=True).indices
    if tier is not None:
        order = order[torch.sort(tier[order], descending=True, stable=True).indices]
    return order


class _GlobalRanking:
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

    def allocate(self, kept: int) -> _Allocation:
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
        return _Allocation(counts, {self.names[i]: int(unguarded[i]) for i in sorted(clamped)})

    def masks(self, counts: Sequence[int]) -> list[torch.Tensor]:
        out = []
        for i, (key, count) in enumerate(zip(self.keys, counts, strict=True)):
            mask = torch.zeros(key.numel(), dtype=torch.bool)
            mask[_descending(key, None if self.tiers is None else self.tiers[i])[:count]] = True
            out.append(mask)
        return out


class _FormulaRanking:
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

    def allocate(self, kept: int) -> _Allocation:
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
        return _Allocation(counts, clamped)

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
class _Layers:
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


def _layer_table(ctx: ProposalContext, min_weights: int, min_density: float, conv_only: bool = False) -> _Layers:
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
    return _Layers(
        names=tuple(genes),
        shapes=tuple(s for _, s in found),
        floors=floors,
        macs=_layer_macs(ctx.space, ctx.model, tuple(found)),
        ranked=ranked,
    )


class _RankedSubset:
    """A global ranking over some of the layers (`_Layers.ranked`); every other layer keeps all its
    weights. Kept counts given to `allocate` are of the whole model."""

    def __init__(self, inner: _GlobalRanking, layers: _Layers) -> None:
        self.inner = inner
        self.ranked = [i for i, r in enumerate(layers.ranked) if r]
        self.numels = layers.numels
        self.fixed = sum(n for n, r in zip(self.numels, layers.ranked, strict=True) if not r)

    def allocate(self, kept: int) -> _Allocation:
        inner = self.inner.allocate(kept - self.fixed)
        counts = list(self.numels)
        for i, count in zip(self.ranked, inner.counts, strict=True):
            counts[i] = count
        return _Allocation(counts, inner.clamped)

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


def _target_density(target: Target) -> float:
    return target.value if target.kind == "density" else 1.0 - target.value


def _pruned_fraction(target: Target) -> float:
    """The fraction a density or ratio target prunes, as the Rethinking code's `--percent`. 1 - density
    is rounded to 12 decimals so that, e.g., density 0.3 gives the float 0.7 itself (1 - 0.3 is
    0.7000000000000001, which moves int(n * p) by one for some n)."""
    return target.value if target.kind == "ratio" else round(1.0 - target.value, 12)


def _solve(layers: _Layers, target: Target, ranker: _Ranker, options: str) -> _Allocation:
    """The allocation meeting `target`: the global kept count from the density, or by bisection on the
    kept count for a MACs ratio (the MACs ratio grows with the kept count)."""
    total, least = layers.total, sum(layers.floors)
    if target.kind != "macs_ratio":
        if isinstance(ranker, _RankedSubset):
            kept = ranker.threshold_kept(_pruned_fraction(target))
        else:
            kept = round(_target_density(target) * total)
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


# --------------------------------------------------------------------------------------------- helpers


def _as_bool(proposer: str, name: str, value: Any) -> bool:
    return parse_bool(value, f"proposer {proposer!r}: option {name}")


def _as_number(proposer: str, name: str, value: Any, kind: type, low: float, high: float, text: str) -> Any:
    try:
        number = kind(value)
        if isinstance(value, bool) or (kind is int and float(value) != number):
            raise ValueError
    except (TypeError, ValueError):
        number = None
    if number is None or not (low <= number <= high):
        raise PrunenasError(f"proposer {proposer!r}: option {name}={value!r} must be {text}")
    return number


# --------------------------------------------------------------------------------------------- proposers

_DENSITY_TARGETS: tuple[TargetKind, ...] = ("density", "ratio", "macs_ratio")
#: Values of the `layers` option: which layers are ranked (the others keep all their weights).
LAYER_CHOICES = ("all", "conv")


class _DensityProposer(Proposer):
    """The shared pipeline: layer table -> a ranker -> the allocation meeting the target (with the
    collapse guard) -> masks, genotype and info. Subclasses provide `_ranker`."""

    kind = "density"
    targets = _DENSITY_TARGETS
    options: ClassVar[Mapping[str, Any]] = {"min_weights": 1, "min_density": 0.0}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        s, name = self.settings, self.name
        s["min_weights"] = _as_number(name, "min_weights", s["min_weights"], int, 0, math.inf, "an integer >= 0")
        s["min_density"] = _as_number(name, "min_density", s["min_density"], float, 0.0, 1.0, "a number in [0, 1]")
        if "invert" in s:
            s["invert"] = _as_bool(name, "invert", s["invert"])
        if "samples_per_class" in s:
            s["samples_per_class"] = _as_number(
                name, "samples_per_class", s["samples_per_class"], int, 1, math.inf, "an integer >= 1"
            )
        if "temperature" in s:
            s["temperature"] = _as_number(name, "temperature", s["temperature"], float, 1e-12, math.inf, "a number > 0")
        if "iterations" in s:
            s["iterations"] = _as_number(name, "iterations", s["iterations"], int, 1, 100_000, "an integer >= 1")
        if "layers" in s and s["layers"] not in LAYER_CHOICES:
            raise PrunenasError(
                f"proposer {name!r}: option layers={s['layers']!r} must be all (conv and linear layers ranked) or "
                "conv (conv layers only, linear layers kept dense)"
            )

    @abstractmethod
    def _ranker(self, ctx: ProposalContext, target: Target, layers: _Layers) -> tuple[_Ranker, dict[str, Any]]:
        """What ranks the weights (and extra info for `Proposal.info`)."""

    def _guard(self) -> str:
        return f"min_weights={self.settings['min_weights']}, min_density={self.settings['min_density']:g}"

    def _conv_only(self) -> bool:
        """Whether only Conv2d layers are ranked (option layers=conv, where the proposer has it)."""
        return bool(self.settings.get("layers", "all") == "conv")

    def propose(self, ctx: ProposalContext, target: Target) -> Proposal:
        """Rank the weights, meet `target` with the collapse guard, return genotype, masks and info."""
        self.check(ctx.space, target, ctx.trained)
        start = time.perf_counter()
        layers = _layer_table(ctx, self.settings["min_weights"], self.settings["min_density"], self._conv_only())
        ranker, extra = self._ranker(ctx, target, layers)
        allocation = _solve(layers, target, ranker, self._guard())
        masks = ranker.masks(allocation.counts)
        clamped = dict(extra.pop("clamped", {}))
        for layer, count in allocation.clamped.items():
            clamped[layer] = min(count, clamped.get(layer, count))
        kept = sum(allocation.counts)
        genes = {name: count / n for name, count, n in zip(layers.names, allocation.counts, layers.numels, strict=True)}
        genotype = ctx.space.make(genes, proposer=self.name)
        info: dict[str, Any] = {
            "density": kept / layers.total,
            "macs_ratio": layers.macs_ratio(allocation.counts),
            "kept_weights": kept,
            "prunable_weights": layers.total,
            "clamped": {name: clamped[name] for name in layers.names if name in clamped},
            "target": target.to_dict(),
            "options": dict(self.settings),
            **self._ranked_info(layers, allocation.counts),
            **extra,
            "time_s": round(time.perf_counter() - start, 3),
        }
        shaped = {
            name: mask.view(shape).to(torch.float32)
            for name, mask, shape in zip(layers.names, masks, layers.shapes, strict=True)
        }
        return Proposal(genotype=genotype, masks=shaped, info=info)

    def _ranked_info(self, layers: _Layers, counts: Sequence[int]) -> dict[str, Any]:
        """With layers=conv: the kept fraction and weight count of the ranked layers (what the target counts)."""
        if not self._conv_only():
            return {}
        numels = layers.numels
        ranked = [i for i, r in enumerate(layers.ranked) if r]
        total = sum(numels[i] for i in ranked)
        kept = sum(counts[i] for i in ranked)
        return {"ranked_density": kept / total if total else 1.0, "ranked_weights": total}


class _ScoreProposer(_DensityProposer):
    """Ranks `scores(ctx)` globally: keeps the highest (or, with `keep_highest=False`, the lowest);
    the option `invert` flips which end is kept, the option `layers` which layers are ranked (the
    module docstring gives the threshold rule of layers=conv)."""

    options: ClassVar[Mapping[str, Any]] = {**_DensityProposer.options, "layers": "all", "invert": False}
    keep_highest: ClassVar[bool] = True

    @abstractmethod
    def scores(self, ctx: ProposalContext) -> Scores:
        """One score per weight of every prunable layer (layer path -> tensor shaped like the weight)."""

    def _sign(self) -> float:
        """+1 when the highest scores are kept, -1 when the lowest are."""
        return 1.0 if self.keep_highest != self.settings["invert"] else -1.0

    def _ranker(self, ctx: ProposalContext, target: Target, layers: _Layers) -> tuple[_Ranker, dict[str, Any]]:
        scores = self.scores(ctx)
        if not self._conv_only():
            keys = [self._sign() * scores[name].to(torch.float64) for name in layers.names]
            return _GlobalRanking(keys, layers.names, layers.floors), {}
        ranked = [i for i, r in enumerate(layers.ranked) if r]
        if not ranked:
            raise PrunenasError(
                f"proposer {self.name!r}: option layers=conv ranks no layer of space {ctx.space.name!r} (it has no "
                "Conv2d layer); use layers=all"
            )
        keys = [self._sign() * scores[layers.names[i]].to(torch.float64) for i in ranked]
        inner = _GlobalRanking(keys, [layers.names[i] for i in ranked], [layers.floors[i] for i in ranked])
        return _RankedSubset(inner, layers), {}


class _DataProposer(_ScoreProposer):
    """Scores on a class-balanced batch of training images, on a train-mode copy of the model
    (batch statistics in BatchNorm, as the original implementations run a freshly built model)."""

    needs_data = True
    options: ClassVar[Mapping[str, Any]] = {**_ScoreProposer.options, "samples_per_class": 10}

    def _net_and_batch(self, ctx: ProposalContext) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        if ctx.data is None:
            raise PrunenasError(
                f"proposer {self.name!r} scores weights on training images; pass --dataset (e.g. digits)"
            )
        last = list(prunable_layers(ctx.model))[-1][1]
        if isinstance(last, nn.Linear) and last.out_features < ctx.data.num_classes:
            raise PrunenasError(
                f"dataset {ctx.data.name!r} has {ctx.data.num_classes} classes but the model has {last.out_features} "
                "outputs; build the model for the dataset's classes"
            )
        net = copy.deepcopy(ctx.model).train()
        x, y = class_balanced_batch(ctx.data, self.settings["samples_per_class"], ctx.seed, ctx.device)
        dtype = next(net.parameters()).dtype
        return net, x.to(dtype), y


class MagnitudeProposer(_ScoreProposer):
    name = "magnitude"
    needs_trained = True
    summary = "global |w| of trained weights over conv+linear layers (layers=conv: convs only, as Rethinking's code)"

    def scores(self, ctx: ProposalContext) -> Scores:
        return magnitude_scores(ctx.model)


class MagnitudeInitProposer(_ScoreProposer):
    """Magnitude at initialization (a baseline of Frankle et al. 2021): global |w| of the seeded initial
    weights, never of trained ones (a --reference is not used)."""

    name = "magnitude-init"
    needs_trained = False
    summary = "global |w| at initialization (Frankle et al. 2021 baseline; scores the seeded init, not --reference)"

    def scores(self, ctx: ProposalContext) -> Scores:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            model = ctx.space.build(ctx.space.reference(), num_classes=_num_classes(ctx.model))
        return magnitude_scores(model)


def _num_classes(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 10


class SnipProposer(_DataProposer):
    name = "snip"
    summary = "SNIP |w * dL/dw| on a class-balanced batch at initialization (Lee et al. 2019)"

    def scores(self, ctx: ProposalContext) -> Scores:
        net, x, y = self._net_and_batch(ctx)
        return snip_scores(net, x, y)


class GraspProposer(_DataProposer):
    """GraSP as published: the score is -w * Hg and the HIGHEST scores are pruned (the lowest kept)."""

    name = "grasp"
    keep_highest = False
    summary = "GraSP -w * Hg (logits / T, T = 200); prunes the highest scores as the original (Wang et al. 2020)"
    options: ClassVar[Mapping[str, Any]] = {**_DataProposer.options, "temperature": 200.0}

    def scores(self, ctx: ProposalContext) -> Scores:
        net, x, y = self._net_and_batch(ctx)
        return grasp_scores(net, x, y, self.settings["temperature"])


class GraspAbsProposer(GraspProposer):
    """GraSP magnitude variant (Frankle et al. 2021): prunes the lowest |-w * Hg|."""

    name = "graspabs"
    keep_highest = True
    summary = "GraSP with |score|: keeps the highest |w * Hg| (Frankle et al. 2021's variant)"

    def scores(self, ctx: ProposalContext) -> Scores:
        return {name: s.abs() for name, s in super().scores(ctx).items()}


class SynflowProposer(_ScoreProposer):
    """Iterative SynFlow (data-free).

    For a `macs_ratio` target the density to iterate to is not known in advance: it is estimated by
    bisection on the single-shot (first-iteration) scores, the K iterations run to it, and the kept
    count is found by bisection on the final-iteration scores (weights pruned at earlier steps rank
    below the survivors, later-pruned first), so the MACs target is met by the last step. When that
    count is more than 2% away from the density iterated to, the iterations run once more to the
    new estimate and the bisection is repeated on that run (at most `MACS_PASSES` runs).
    """

    name = "synflow"
    gpu_only_seeding = True  # 100 float64 iterations
    summary = "SynFlow |w * dR/dw|, data-free, float64, 100 iterations (Tanaka et al. 2020)"
    # no `layers` option: its iterations score and prune every layer
    options: ClassVar[Mapping[str, Any]] = {
        **{k: v for k, v in _ScoreProposer.options.items() if k != "layers"},
        "iterations": 100,
    }
    MACS_PASSES: ClassVar[int] = 2

    def scores(self, ctx: ProposalContext) -> Scores:
        """Single-shot (first-iteration) scores."""
        return synflow_scores(ctx.model, ctx.space.input_shape)

    def _run(self, ctx: ProposalContext, layers: _Layers, density: float) -> tuple[_GlobalRanking, SynflowRun]:
        run = synflow_iterative(
            ctx.model,
            ctx.space.input_shape,
            density,
            iterations=self.settings["iterations"],
            invert=bool(self.settings["invert"]),
            min_counts=layers.floors,
        )
        keys = [self._sign() * run.scores[name] for name in layers.names]
        tiers = [run.survived[name] for name in layers.names]
        return _GlobalRanking(keys, layers.names, layers.floors, tiers), run

    def _ranker(self, ctx: ProposalContext, target: Target, layers: _Layers) -> tuple[_Ranker, dict[str, Any]]:
        passes = 1
        if target.kind != "macs_ratio":
            density = _target_density(target)
            ranking, run = self._run(ctx, layers, density)
        else:
            single, _ = super()._ranker(ctx, target, layers)
            density = sum(_solve(layers, target, single, self._guard()).counts) / layers.total
            ranking, run = self._run(ctx, layers, density)
            while passes < self.MACS_PASSES:
                found = sum(_solve(layers, target, ranking, self._guard()).counts) / layers.total
                if abs(found - density) <= 0.02 * density:
                    break
                density = found
                ranking, run = self._run(ctx, layers, density)
                passes += 1
        extra = {
            "synflow_density": density,
            "synflow_passes": passes,
            "guarded_steps": run.guarded_steps,
            "clamped": run.clamped,
        }
        return ranking, extra


class RandomDensityProposer(_ScoreProposer):
    name = "random"
    quick = True
    summary = "random scores ranked globally (seeded): about the same density in every layer"

    def scores(self, ctx: ProposalContext) -> Scores:
        generator = torch.Generator().manual_seed(ctx.seed)
        return {
            name: torch.rand(weight_of(m).shape, generator=generator, dtype=torch.float64)
            for name, m in prunable_layers(ctx.model)
        }


class _FormulaProposer(_DensityProposer):
    """Per-layer kept counts from a formula (no scores); random positions within each layer."""

    @abstractmethod
    def layer_weights(self, layers: _Layers) -> list[float]:
        """Kept count of each layer is proportional to its weight (before the caps and floors)."""

    def _ranker(self, ctx: ProposalContext, target: Target, layers: _Layers) -> tuple[_Ranker, dict[str, Any]]:
        ranker = _FormulaRanking(self.layer_weights(layers), layers.numels, layers.names, layers.floors, ctx.seed)
        return ranker, {}


class ERKProposer(_FormulaProposer):
    name = "erk"
    quick = True
    summary = "Erdős–Rényi-Kernel densities ∝ sum(shape)/prod(shape), dense where >1 (Evci et al. 2020)"

    def layer_weights(self, layers: _Layers) -> list[float]:
        return erk_weights(layers.shapes)


class UniformDensityProposer(_FormulaProposer):
    name = "uniform"
    quick = True
    summary = "the same density in every conv+linear layer"

    def layer_weights(self, layers: _Layers) -> list[float]:
        return [float(n) for n in layers.numels]
