"""Unstructured proposers: magnitude pruning and pruning at initialization as density proposers.

Each score-based proposer scores every weight of every prunable layer (each Conv2d and Linear,
shortcut convs and the classifier included; with `layers=conv` only the Conv2d layers), ranks the
scores GLOBALLY and keeps the best ones; the genotype it proposes is the per-layer density vector
(kept_L / numel_L). The mask it chose comes back in `Proposal.masks` for the ablations of Frankle et
al. (ICLR 2021): shuffle it within each layer (`prunenas.masking.shuffle_masks`), apply it to a
freshly built model (`prunenas.masking.apply_masks_to_model`, "reinitialize"), or invert the scores
(option `invert`). The rankers and the allocation that meets a target are `prunenas.proposers.allocation`'s.

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
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from prunenas.config import parse_bool
from prunenas.errors import PrunenasError
from prunenas.masks import prunable_layers, weight_of
from prunenas.proposers.allocation import (
    FormulaRanking,
    GlobalRanking,
    LayerTable,
    RankedSubset,
    Ranker,
    layer_table,
    solve_allocation,
    target_density,
)
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
    def _ranker(self, ctx: ProposalContext, target: Target, layers: LayerTable) -> tuple[Ranker, dict[str, Any]]:
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
        layers = layer_table(ctx, self.settings["min_weights"], self.settings["min_density"], self._conv_only())
        ranker, extra = self._ranker(ctx, target, layers)
        allocation = solve_allocation(layers, target, ranker, self._guard())
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

    def _ranked_info(self, layers: LayerTable, counts: Sequence[int]) -> dict[str, Any]:
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

    def _ranker(self, ctx: ProposalContext, target: Target, layers: LayerTable) -> tuple[Ranker, dict[str, Any]]:
        scores = self.scores(ctx)
        if not self._conv_only():
            keys = [self._sign() * scores[name].to(torch.float64) for name in layers.names]
            return GlobalRanking(keys, layers.names, layers.floors), {}
        ranked = [i for i, r in enumerate(layers.ranked) if r]
        if not ranked:
            raise PrunenasError(
                f"proposer {self.name!r}: option layers=conv ranks no layer of space {ctx.space.name!r} (it has no "
                "Conv2d layer); use layers=all"
            )
        keys = [self._sign() * scores[layers.names[i]].to(torch.float64) for i in ranked]
        inner = GlobalRanking(keys, [layers.names[i] for i in ranked], [layers.floors[i] for i in ranked])
        return RankedSubset(inner, layers), {}


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

    def _run(self, ctx: ProposalContext, layers: LayerTable, density: float) -> tuple[GlobalRanking, SynflowRun]:
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
        return GlobalRanking(keys, layers.names, layers.floors, tiers), run

    def _ranker(self, ctx: ProposalContext, target: Target, layers: LayerTable) -> tuple[Ranker, dict[str, Any]]:
        passes = 1
        if target.kind != "macs_ratio":
            density = target_density(target)
            ranking, run = self._run(ctx, layers, density)
        else:
            single, _ = super()._ranker(ctx, target, layers)
            density = sum(solve_allocation(layers, target, single, self._guard()).counts) / layers.total
            ranking, run = self._run(ctx, layers, density)
            while passes < self.MACS_PASSES:
                found = sum(solve_allocation(layers, target, ranking, self._guard()).counts) / layers.total
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
    def layer_weights(self, layers: LayerTable) -> list[float]:
        """Kept count of each layer is proportional to its weight (before the caps and floors)."""

    def _ranker(self, ctx: ProposalContext, target: Target, layers: LayerTable) -> tuple[Ranker, dict[str, Any]]:
        ranker = FormulaRanking(self.layer_weights(layers), layers.numels, layers.names, layers.floors, ctx.seed)
        return ranker, {}


class ERKProposer(_FormulaProposer):
    name = "erk"
    quick = True
    summary = "Erdős–Rényi-Kernel densities ∝ sum(shape)/prod(shape), dense where >1 (Evci et al. 2020)"

    def layer_weights(self, layers: LayerTable) -> list[float]:
        return erk_weights(layers.shapes)


class UniformDensityProposer(_FormulaProposer):
    name = "uniform"
    quick = True
    summary = "the same density in every conv+linear layer"

    def layer_weights(self, layers: LayerTable) -> list[float]:
        return [float(n) for n in layers.numels]
