"""Structured (channel) proposers: how many channels each gene keeps.

Score-based methods get one importance per output channel of every prunable gene from an importance
criterion (`prunenas.surgery.Importance`) applied to the gene's dependency group (`prunenas.surgery.channel_scores`;
importance kept apart from structure: nothing is pruned in place, so Torch-Pruning's option-A corruption
cannot occur; the genotype is rebuilt from scratch). The criteria proposers are the rows of `CRITERIA`
(one class each, holding a registered criterion); a third party's proposer subclasses `CriterionProposer` and
sets `importance` to a criterion of its own (an `Importance` subclass in plain torch). Then:

  local  (global_ranking=False): every gene keeps int(n * (1 - r)) channels: the same multiplier
         everywhere, so every criterion gives the same widths (as the GUIDE warns);
  global (default): the r-fraction of lowest-scoring channels over all prunable genes is removed,
         with scores normalised per group (Torch-Pruning's default) except for slimming, which
         uses ONE threshold over the raw |gamma| as in the paper.

No gene falls below `min_channels` (default 1); clamped genes are reported. A `macs_ratio` target is
met within 2% by bisection on r. `l1-paper` reproduces Li et al.'s skip lists and per-stage ratios.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from prunenas import recipes
from prunenas import train as training  # the module: a test may replace its train()
from prunenas.config import RunSettings
from prunenas.cost import genotype_cost
from prunenas.errors import PrunenasError
from prunenas.proposers.base import Proposal, ProposalContext, Proposer, Target, TargetKind
from prunenas.proposers.widths import Widths, global_widths, local_widths, snap_widths, solve_ratio
from prunenas.spaces.base import Space
from prunenas.surgery import Importance, channel_scores, get_importance
from prunenas.tasks import CLASSIFICATION, get_task


# -- scores through Torch-Pruning (prunenas.surgery) ----------------------------------------------------
def _channel_scores(ctx: ProposalContext, model: nn.Module, importance: Importance) -> dict[str, torch.Tensor]:
    """Importance per output channel of every structured gene of the context's space, by the criterion
    (from the gene's Torch-Pruning dependency group)."""
    space = ctx.space
    wanted = space.structured_genes()
    if not wanted:
        raise PrunenasError(f"space {space.name!r} does not declare which genes channel pruning may change")
    return channel_scores(model, wanted, importance, _example(ctx), what=space.name, ignored=space.output_layers())


def _example(ctx: ProposalContext) -> torch.Tensor:
    return torch.zeros(1, *ctx.space.input_shape, device=ctx.device)


def _batch(ctx: ProposalContext, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, normalised, unaugmented batch of training images."""
    if ctx.data is None:
        raise PrunenasError("this proposer needs data; pass --dataset (e.g. --dataset digits)")

    g = torch.Generator().manual_seed(ctx.seed)
    n = len(ctx.data.train)
    idx = torch.randperm(n, generator=g)[: min(size, n)]
    part = ctx.data.train.take(idx)
    batches = get_task(ctx.data.task).batches(
        part, train=False, augment=False, batch_size=len(part), device=torch.device(ctx.device), mean=ctx.data.mean,
        std=ctx.data.std, seed=ctx.seed, channels_last=False, flip=False, drop_last=False,
        out_size=ctx.data.image_shape[1], crop="pad", shard=(0, 1),
    )  # fmt: skip
    return next(iter(batches.epoch(0)))


# -- proposers -------------------------------------------------------------------------------------------
class _ChannelProposer(Proposer):
    """Shared flow: scores per gene -> widths for a ratio -> target met -> genotype with provenance."""

    kind = "channels"
    targets: ClassVar[tuple[TargetKind, ...]] = ("ratio", "macs_ratio", "latency_ratio")
    options: ClassVar[Mapping[str, Any]] = {"global_ranking": True, "min_channels": 1}
    uses_scores: ClassVar[bool] = True

    #: Network slimming's threshold rule (see `global_widths`) instead of removing exactly int(ratio * N).
    threshold_rule: ClassVar[bool] = False

    def scores(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def scores_and_source(
        self, ctx: ProposalContext
    ) -> tuple[dict[str, torch.Tensor], Mapping[str, torch.Tensor] | None]:
        """The scores and the weights they were read from when the proposer trained them (`Proposal.source`)."""
        return self.scores(ctx), None

    def prunable(self, space: Space) -> dict[str, str]:
        """The genes this proposer narrows -> the module each one is scored through."""
        return space.structured_genes()

    def propose(self, ctx: ProposalContext, target: Target) -> Proposal:
        t0 = time.perf_counter()
        space = ctx.space
        reference = dict(space.reference().genes)
        prunable = self.prunable(space)
        if not prunable:
            raise PrunenasError(f"space {space.name!r} does not support channel proposers")
        sizes = {g: int(reference[g]) for g in prunable}
        floor = int(self.settings["min_channels"])
        if floor < 1:
            raise PrunenasError(f"proposer {self.name!r}: min_channels must be >= 1 (got {floor})")
        scored = self.uses_scores and bool(self.settings.get("global_ranking", False))
        scores, source = self.scores_and_source(ctx) if scored else ({}, None)
        clamp_log: dict[str, int] = {}
        # the code's threshold rule reads a pruned fraction; a cost target is met by bisection on r instead,
        # where removing every tie at once (all |gamma| equal at init) would leave no ratio in between
        threshold_rule = self.threshold_rule and target.kind == "ratio"

        def widths_for(r: float) -> Widths:
            widths, clamped = (
                global_widths(scores, r, floor, threshold_rule=threshold_rule)
                if scored
                else local_widths(sizes, r, floor)
            )
            clamp_log.clear()
            clamp_log.update(clamped)
            return snap_widths(space, widths)

        ratio, widths = solve_ratio(space, widths_for, target, reference)
        widths_for(ratio)  # leaves the clamping of the chosen ratio in clamp_log
        genotype = space.make({**reference, **widths})
        cost = genotype_cost(space, genotype)
        info = {
            "ratio": ratio,
            "ranking": "global" if scored else "local",
            "achieved_macs_ratio": cost.macs_ratio,
            "channels_kept": sum(widths.values()) / sum(sizes.values()),
            "clamped": dict(clamp_log),
            "time_s": time.perf_counter() - t0,
        }
        return Proposal(genotype, None, info, source=source)


class UniformProposer(_ChannelProposer):
    name = "uniform"
    quick = True
    summary = "same keep ratio in every prunable layer (int(n * (1 - r)))"
    uses_scores = False
    options: ClassVar[Mapping[str, Any]] = {"min_channels": 1}


@dataclass(frozen=True)
class Criterion:
    """One row of CRITERIA: a structured proposer that ranks channels by a registered importance criterion."""

    proposer: str  # the proposer's name (`--proposer`)
    cls: str  # the class name it is importable under (plugins.BUILTINS names it)
    importance: Importance  # the criterion (one of prunenas.surgery.IMPORTANCES)
    needs_trained: bool  # scores trained weights (else a seeded random init will do)
    gradient: bool  # needs dL/dw on a batch of training images before scoring (so: data)
    quick: bool  # among the few a smoke-budget search seeds with
    summary: str


CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "random", "RandomProposer", get_importance("random"), False, False, True,
        "random channel scores ranked globally (seeded): a random but target-meeting architecture",
    ),
    Criterion(
        "l1", "L1Proposer", get_importance("l1"), True, False, True,
        "filter L1 norm (Li et al. 2017), group-aggregated by Torch-Pruning",
    ),
    Criterion(
        "l2", "L2Proposer", get_importance("l2"), True, False, False,
        "filter L2 norm, group-aggregated by Torch-Pruning",
    ),
    Criterion(
        "fpgm", "FPGMProposer", get_importance("fpgm"), True, False, False,
        "filter pruning via geometric median (He et al. 2019)",
    ),
    Criterion(
        "lamp", "LAMPProposer", get_importance("lamp"), True, False, False,
        "layer-adaptive magnitude pruning scores (Lee et al. 2021)",
    ),
    Criterion(
        "taylor", "TaylorProposer", get_importance("taylor"), True, True, False,
        "first-order Taylor |w * dL/dw| on a batch of training images (Molchanov et al.)",
    ),
)  # fmt: skip


class CriterionProposer(_ChannelProposer):
    """An importance criterion on the context's model: a row of CRITERIA, or a subclass that sets `importance`
    to its own criterion (with `name`, `summary` and, when it scores a random init, `needs_trained = False`)."""

    needs_trained = True
    #: The criterion that scores every structured gene's channels.
    importance: ClassVar[Importance]
    #: A gradient pass on a batch of training images comes before scoring (option `batch_size`).
    gradient: ClassVar[bool] = False

    def prepare(self, ctx: ProposalContext, model: nn.Module) -> None:
        """Leave dL/dw in `model` for the criteria that read gradients."""
        if not self.gradient:
            return
        x, y = _batch(ctx, int(self.settings["batch_size"]))
        model.zero_grad(set_to_none=True)
        task = get_task(ctx.data.task if ctx.data is not None else CLASSIFICATION)
        if task.name != CLASSIFICATION:
            model.train()  # a detector computes its losses in train mode only
        task.loss(model, x, y, 0.0)[0].backward()  # the task's loss (cross-entropy for a classifier)

    def scores(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(ctx.model).to(ctx.device).eval()
        torch.manual_seed(ctx.seed)
        self.prepare(ctx, model)
        return _channel_scores(ctx, model, self.importance)


def _criterion_proposer(row: Criterion) -> type[CriterionProposer]:
    """The proposer class of a CRITERIA row."""
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": row.cls,
        "__doc__": row.summary,
        "name": row.proposer,
        "importance": row.importance,
        "needs_trained": row.needs_trained,
        "gradient": row.gradient,
        "needs_data": row.gradient,
        "quick": row.quick,
        "summary": row.summary,
    }
    if row.gradient:
        attrs["options"] = {**_ChannelProposer.options, "batch_size": 128}
    return type(row.cls, (CriterionProposer,), attrs)


_BY_CLASS = {row.cls: _criterion_proposer(row) for row in CRITERIA}
RandomProposer = _BY_CLASS["RandomProposer"]
L1Proposer = _BY_CLASS["L1Proposer"]
L2Proposer = _BY_CLASS["L2Proposer"]
FPGMProposer = _BY_CLASS["FPGMProposer"]
LAMPProposer = _BY_CLASS["LAMPProposer"]
TaylorProposer = _BY_CLASS["TaylorProposer"]


class SlimmingProposer(_ChannelProposer):
    """Network slimming (Liu et al. 2017): train with an L1 penalty on BN scales, then ONE global
    threshold over all |gamma| decides the channels kept per BN (no per-layer normalisation). As in the
    paper's code, a `ratio` target p keeps the channels whose |gamma| is above the sorted value at index
    int(p x N); a cost target is met by bisection on the fraction removed, as for the other criteria.
    The sparsity-trained model is the proposal's `source`: prune-then-fine-tune cuts the genotype out of
    it, keeping each BN's channels of largest |gamma| (the ones above the threshold)."""

    name = "slimming"
    needs_data = True
    summary = "BN |gamma| after L1-sparsity training (lambda 1e-4 VGG / 1e-5 ResNet), one global threshold"
    options: ClassVar[Mapping[str, Any]] = {
        "global_ranking": True,
        "min_channels": 1,
        "sparsity_epochs": None,  # default: the space's standard epochs, the whole run as the paper trains it
        "lam": None,  # default: the space's `slimming_l1` (1e-4 VGG, 1e-5 ResNet)
        "train_subset": None,
    }
    threshold_rule: ClassVar[bool] = True
    inherits_by: ClassVar[str | None] = "bn_scale"
    #: Raw |gamma| (no normalizer), mean over the BNs of a coupled group: one global threshold.
    importance: ClassVar[Importance] = get_importance("bn_scale")

    def _epochs(self, space: Space) -> int:
        # The paper trains with the L1 penalty over the whole standard run (Liu et al. 2017: 160 CIFAR
        # epochs); a shorter run compresses the same lr schedule into fewer epochs.
        chosen = self.settings["sparsity_epochs"]
        return recipes.recipe_from_mapping("standard", space.recipe).epochs if chosen is None else int(chosen)

    def trains_source(self) -> bool:
        """It trains the sparsity model itself unless told to score given weights (sparsity_epochs=0) or to
        keep the same fraction everywhere (global_ranking=false: no scores)."""
        return bool(self.settings.get("global_ranking", True)) and self.settings["sparsity_epochs"] != 0

    def sparsity_train(self, ctx: ProposalContext) -> nn.Module:
        epochs = self._epochs(ctx.space)
        model = copy.deepcopy(ctx.model)
        if epochs <= 0:
            if not ctx.trained:
                raise PrunenasError("slimming with sparsity_epochs=0 needs trained weights: pass --reference CKPT")
            return model
        if ctx.data is None:
            raise PrunenasError("slimming trains with an L1 penalty on BN scales; pass --dataset")
        lam = self.settings["lam"]
        if lam is None:  # the space's default: 1e-4 for VGG, 1e-5 for ResNet (Liu et al. 2017)
            lam = ctx.space.slimming_l1
        recipe = recipes.make_recipe("standard", ctx.space.recipe, overrides={"epochs": epochs, "bn_l1": float(lam)})
        data = ctx.data
        # the caller's precision and batching (a protocol's fp32, last partial batch), never its test-set reports
        settings = (ctx.run or RunSettings()).replace(
            device=str(ctx.device), seed=ctx.seed, quiet=True, plot=False, test_every_epoch=False
        )
        with tempfile.TemporaryDirectory() as tmp:
            training.train(
                ctx.space,
                ctx.space.reference(),
                data,
                recipe,
                settings,
                out_dir=tmp,
                init_state=model.state_dict() if ctx.trained else None,
                evaluate_test=False,
            )
            state = torch.load(f"{tmp}/{training.CHECKPOINT}", map_location="cpu", weights_only=False)["model"]
        model.load_state_dict(state)
        return model

    def prunable(self, space: Space) -> dict[str, str]:
        """Every gene with a BatchNorm of its own (the channel-selection genes of PreResNet and DenseNet too,
        as network slimming prunes them), else the structured genes."""
        bns = space.gene_batchnorms()
        return dict(bns) if bns is not None else space.structured_genes()

    def scores(self, ctx: ProposalContext) -> dict[str, torch.Tensor]:
        return self.scores_and_source(ctx)[0]

    def scores_and_source(
        self, ctx: ProposalContext
    ) -> tuple[dict[str, torch.Tensor], Mapping[str, torch.Tensor] | None]:
        model = self.sparsity_train(ctx).to(ctx.device).eval()
        source = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if self.trains_source() else None
        bns = ctx.space.gene_batchnorms()
        if bns is not None:  # each gene keeps channels of one BatchNorm: rank its |gamma| directly
            modules = dict(model.named_modules())
            return {g: modules[p].weight.detach().abs().float().cpu() for g, p in bns.items()}, source
        return _channel_scores(ctx, model, self.importance), source


# -- Li et al. 2017 exactly (each family's skip list and ratios: `Space.li2017_profile`) -------------------
class LiPaperProposer(Proposer):
    """Li et al.'s hand-set rule: per-stage prune ratios on each block's first conv, except the
    sensitive convs of the variant's skip list; keep = int(out * (1 - ratio)).

    The variant fixes the skip list and the ratio profile; `--ratio R` scales the profile so that its
    largest ratio is R (the paper's own R: 56-A 0.1, 56-B 0.6, 110-A 0.5, 110-B 0.5, VGG-16-A 0.5),
    and `--macs-ratio` finds R by bisection. Only the counts matter, so no trained weights are needed.
    """

    name = "l1-paper"
    seeds_search = False  # a fixed rule for a few spaces
    kind = "channels"
    targets: ClassVar[tuple[TargetKind, ...]] = ("ratio", "macs_ratio")
    summary = "Li et al. 2017 skip lists + per-stage ratios (ResNet-56/110 A/B, VGG-16-A), exactly"
    options: ClassVar[Mapping[str, Any]] = {"variant": "A"}

    def _profile(self, space: Space) -> tuple[list[float], Callable[[float], Widths]]:
        variant = str(self.settings["variant"]).upper()
        found = space.li2017_profile(variant)
        if found is None:
            raise PrunenasError(
                f"l1-paper covers ResNet-56/110 (variants A, B) and VGG-16 (variant A), not {space.name!r} "
                f"variant {variant!r}"
            )
        return found

    def propose(self, ctx: ProposalContext, target: Target) -> Proposal:
        t0 = time.perf_counter()
        space = ctx.space
        profile, widths_at = self._profile(space)
        top = max(profile)
        reference = dict(space.reference().genes)

        def widths_for(r: float) -> Widths:
            # scale 1 reproduces the paper exactly; r == top is the paper's own setting.
            return snap_widths(space, widths_at(1.0 if abs(r - top) < 1e-12 else min(r / top, 0.999 / top)))

        ratio, widths = solve_ratio(space, widths_for, target, reference)
        genotype = space.make({**reference, **widths})
        info = {
            "variant": str(self.settings["variant"]).upper(),
            "stage_ratios": [p * (ratio / top) for p in profile],
            "achieved_macs_ratio": genotype_cost(space, genotype).macs_ratio,
            "clamped": {},
            "time_s": time.perf_counter() - t0,
        }
        return Proposal(genotype, None, info)
