"""The Rethinking comparison (Liu et al., ICLR 2019) end to end, plus Frankle et al.'s mask ablations.

One study compares, for one pruned genotype of a space, N seeds of each arm:

  unpruned    the space's reference genotype trained with the standard recipe (or a given checkpoint)
  fine-tuned  the base reference pruned to the genotype, then the finetune recipe (40 epochs, lr 0.001):
              channel spaces inherit the reference's surviving weights (`inherit_weights`: per layer, the
              channels with the largest filter L1 norm, as Li et al.); density spaces keep the reference's
              weights under the proposer's mask (a genotype file: per-layer magnitude masks)
  scratch-E   the pruned genotype from a fresh init, standard epochs E
  scratch-B   the same with epochs int(E * MACs_reference / MACs_pruned) (same compute as the reference)

Density spaces train Scratch-E/B with the pruned model's mask on a fresh init (the Rethinking protocol for
unstructured pruning). `ablations` add Frankle et al.'s (ICLR 2021) arms, all with E epochs:

  mask        the proposer's mask on a fresh init: the Scratch-E runs themselves (for the base seed that
              init is the very one an at-init proposer scored)
  shuffle     the mask shuffled within each layer = the density genotype as the space builds it (same
              per-layer counts, seeded random positions)
  reinit      the proposer's mask on another seeded init (never the one the proposer scored)
  invert      the proposer run with invert=True (keeps the lowest scores), on a fresh init

The proposer runs once, on the base seed's context (the base reference when it scores trained weights,
else the seeded init). Every fine-tune seed starts from that one pruned model (seed k varies the
fine-tuning's batch order and augmentation); every other arm's seed k varies the init too.

Each run lives in its own folder under the study folder (`<arm>-e<epochs>-s<seed>[-<tag>]/`, as written
by `prunenas.train.train`; the tag names what the starting weights came from, see `source_tags`); a run
whose metrics.json says it is done is not trained again, and one that was interrupted resumes from its
checkpoint, so running the same command again finishes the study.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunenas.cost import genotype_cost
from prunenas.data import DatasetSplits, DeviceBatches, load_dataset
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.proposers.base import Proposal, Proposer, Target, get_proposer
from prunenas.proposers.runner import load_reference, make_context, run_proposer
from prunenas.recipes import Recipe, make_recipe
from prunenas.spaces.base import Space
from prunenas.spaces.density import mask_count, prunable_layers, weight_of
from prunenas.train import CHECKPOINT, METRICS, EpochMetrics, RunSettings, TrainResult, evaluate, train

BUDGETS = ("smoke", "fast", "paper")
SMOKE_EPOCHS = 2  # every arm, so a CPU run on digits takes a minute or two
FAST_FRACTION = 4  # fast = 1/4 of the paper's epochs
ARMS = ("unpruned", "finetune", "scratch-e", "scratch-b")
ABLATIONS = ("mask", "shuffle", "reinit", "invert")
LABELS = {
    "unpruned": "unpruned",
    "finetune": "fine-tuned",
    "scratch-e": "scratch-E",
    "scratch-b": "scratch-B",
    "mask": "mask",
    "shuffle": "shuffle",
    "reinit": "reinit",
    "invert": "invert",
}
REINIT_OFFSET = 1_000_003  # reinit's init seed = run seed + this (never the seed the proposer scored)
# Training images of the CIFAR sets (the default validation split keeps 10% of them apart).
_CIFAR_TRAIN = 50_000
_KNOWN_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}
TABLE_JSON, TABLE_TXT, TABLE_PNG = "rethink.json", "rethink.txt", "rethink.png"
GENOTYPE_FILE, MASKS_FILE = "genotype.json", "masks.pt"

Log = Callable[[str], None]


# -- weight inheritance (channel spaces) ------------------------------------------------------------------
def _is_out_channels(item: Any) -> bool:
    return getattr(item.dep.handler, "__name__", "") == "prune_out_channels"


def inherit_weights(space: Space, reference_model: nn.Module, genotype: Genotype) -> dict[str, torch.Tensor]:
    """The weights of `genotype` cut out of a trained reference model of `space` (a state_dict).

    For every gene that pruning narrows (`space.structured_genes()`), the channels kept are those with the
    largest L1 norm of the reference's filters (Li et al. 2017), summed over the convolutions whose
    outputs are coupled with it (a residual width is shared by every conv that writes into that stream);
    each conv, BatchNorm and linear layer of the dependency group (Torch-Pruning's, e.g. conv1 -> bn1 ->
    conv2's input channels) then keeps exactly those slices, in their original order. Genes that channel
    pruning does not change (the residual widths of shortcut-A ResNets) must keep the reference's value.
    `reference_model` is not modified.
    """
    import torch_pruning as tp

    if space.kind != "channels":
        raise PrunenasError(f"inherit_weights prunes channels; space {space.name!r} is a {space.kind} space")
    genotype = space.validate(genotype)
    reference = space.reference()
    structured = space.structured_genes()
    changed = [g.name for g in space.genes if genotype.genes[g.name] != reference.genes[g.name]]
    fixed = [g for g in changed if g not in structured]
    if fixed:
        raise PrunenasError(
            f"genotype {genotype.key} changes gene(s) {fixed[:5]} that channel pruning keeps in {space.name!r} "
            "(e.g. the residual widths of shortcut-A ResNets), so no reference weights can be inherited for them; "
            "use a genotype that only narrows the prunable genes (`prunenas spaces show` lists them)"
        )
    wider = [g for g in changed if int(genotype.genes[g]) > int(reference.genes[g])]
    if wider:
        raise PrunenasError(
            f"genotype {genotype.key} is wider than the reference at {wider[:5]}: a pruned model keeps a subset of "
            "the reference's channels"
        )
    model = copy.deepcopy(reference_model).to("cpu").eval()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    num_classes = linears[-1].out_features if linears else space.num_classes
    if changed:
        for p in model.parameters():
            p.requires_grad_(True)  # Torch-Pruning traces the graph through autograd
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *space.input_shape))
        modules = dict(model.named_modules())
        for gene in changed:
            root = modules[structured[gene]]
            if not isinstance(root, nn.Conv2d):
                raise RuntimeError(f"gene {gene} of {space.name} maps to {type(root).__name__}, not a Conv2d")
            width = root.out_channels
            group = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(width)))
            score = torch.zeros(width, dtype=torch.float64)
            for item in group:
                target = item.dep.target.module
                if _is_out_channels(item) and isinstance(target, nn.Conv2d):
                    norms = target.weight.detach().abs().flatten(1).sum(1).double()
                    score += norms[torch.as_tensor(list(item.idxs), dtype=torch.long)]
            order = torch.argsort(score, descending=True, stable=True)
            drop = sorted(order[int(genotype.genes[gene]) :].tolist())
            graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=drop).prune()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        space.build(genotype, num_classes=num_classes).load_state_dict(state, strict=True)
    except RuntimeError as exc:  # the pruned shapes must be exactly the genotype's
        first = str(exc).strip().splitlines()[0]
        raise RuntimeError(f"inherited weights do not fit genotype {genotype.key} of {space.name}: {first}") from None
    return state


# -- masks (density spaces) -----------------------------------------------------------------------------
def magnitude_masks(
    space: Space, state: Mapping[str, torch.Tensor], genotype: Genotype, num_classes: int
) -> dict[str, torch.Tensor]:
    """Per layer, the genotype's number of weights with the largest |w| in `state` (layer-wise magnitude
    pruning to the genotype's densities; ties broken by position)."""
    genotype = space.validate(genotype)
    model = space.build(space.reference(), num_classes=num_classes)
    model.load_state_dict(state, strict=True)
    masks = {}
    for name, module in prunable_layers(model):
        w = weight_of(module).detach().abs().reshape(-1)
        keep = mask_count(float(genotype.genes[name]), w.numel())
        mask = torch.zeros(w.numel())
        mask[torch.sort(w, descending=True, stable=True).indices[:keep]] = 1.0
        masks[name] = mask.view(weight_of(module).shape)
    return masks


def masked_state(
    space: Space,
    masks: Mapping[str, torch.Tensor],
    num_classes: int,
    *,
    init_seed: int | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A state_dict of the density space's model with `masks` applied (as `weight_mask` buffers and zeros):
    to `weights` (trained weights, kept as they are), or to a fresh init built with `init_seed` exactly as
    `make_context` builds the model a proposer scores (kept weights rescaled by 1/sqrt(density))."""
    from prunenas.proposers.unstructured import apply_masks_to_model

    if (init_seed is None) == (weights is None):
        raise ValueError("give exactly one of init_seed and weights")
    if init_seed is not None:
        torch.manual_seed(init_seed)
    model = space.build(space.reference(), num_classes=num_classes)
    if weights is not None:
        model.load_state_dict(weights, strict=True)
    apply_masks_to_model(model, {k: v.cpu() for k, v in masks.items()}, rescale=weights is None)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- configuration ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RethinkConfig:
    """What to compare. Exactly one of `genotype` and `proposer` (with `target`)."""

    space: Space
    dataset: str = "cifar10"
    genotype: Genotype | None = None
    proposer: str | None = None
    proposer_options: Mapping[str, Any] = field(default_factory=dict)
    target: Target | None = None
    reference: str | None = None  # a trained reference checkpoint instead of training the unpruned arm
    seeds: int = 1
    budget: str = "paper"
    epochs: int | None = None  # base E (unpruned, scratch-E, ablations; scratch-B scales it)
    finetune_epochs: int | None = None
    batch_size: int | None = None
    scratch_b_cap: float | None = None
    ablations: tuple[str, ...] = ()
    out: Path | None = None
    settings: RunSettings = field(default_factory=RunSettings)  # its seed is the base seed

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(self.settings.seed + i for i in range(self.seeds))


def parse_ablations(text: str | None) -> tuple[str, ...]:
    """'shuffle,reinit' -> ('mask', 'shuffle', 'reinit'): the proposer's own mask always comes along."""
    if text is None:
        return ()
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown or not names:
        raise PrunenasError(
            f"unknown ablation(s) {unknown or [text]}; valid: {', '.join(ABLATIONS)} (comma-separated, e.g. "
            "--ablation shuffle,reinit,invert)"
        )
    return tuple(a for a in ABLATIONS if a == "mask" or a in names)


def check_config(config: RethinkConfig) -> tuple[Proposer | None, Proposer | None]:
    """Raise PrunenasError for bad input; return the proposer and its inverted twin (when asked for)."""
    space = config.space
    if config.genotype is None and config.proposer is None:
        raise PrunenasError(
            "say what to prune: --proposer P with a target (--ratio R, --macs-ratio R or --density D), "
            "or --genotype FILE"
        )
    if config.genotype is not None and config.proposer is not None:
        raise PrunenasError("give either --proposer (the method decides the genotype) or --genotype FILE, not both")
    if isinstance(config.seeds, bool) or not isinstance(config.seeds, int) or config.seeds < 1:
        raise PrunenasError(f"--seeds must be >= 1 (got {config.seeds}); the paper used 5")
    if config.budget not in BUDGETS:
        raise PrunenasError(f"unknown budget {config.budget!r}; valid: {', '.join(BUDGETS)}")
    for flag, value in (
        ("--epochs", config.epochs),
        ("--finetune-epochs", config.finetune_epochs),
        ("--batch-size", config.batch_size),
    ):
        if value is not None and value < 1:
            raise PrunenasError(f"{flag} must be >= 1 (got {value})")
    if config.scratch_b_cap is not None and not config.scratch_b_cap > 0:
        raise PrunenasError(f"--scratch-b-cap must be > 0 (got {config.scratch_b_cap})")
    if space.kind not in ("channels", "density"):
        raise PrunenasError(
            f"space {space.name!r} is a {space.kind} space; rethink compares channel or density genotypes "
            "(e.g. resnet56_channels, resnet20_density)"
        )
    if config.ablations:
        unknown = [a for a in config.ablations if a not in ABLATIONS]
        if unknown:
            raise PrunenasError(f"unknown ablation(s) {unknown}; valid: {', '.join(ABLATIONS)}")
        if space.kind != "density":
            raise PrunenasError(
                f"--ablation shuffles, re-initialises or inverts a weight mask: it needs a density space, and "
                f"{space.name!r} is a {space.kind} space (try resnet20_density)"
            )
        if config.proposer is None:
            raise PrunenasError("--ablation compares a proposer's own mask with its ablations: pass --proposer P")
    if config.genotype is not None:
        if config.target is not None:
            raise PrunenasError("--ratio/--macs-ratio/--density set a proposer's target; a --genotype is fixed")
        if config.genotype.space != space.name:
            raise PrunenasError(
                f"the genotype is for space {config.genotype.space!r}, not {space.name!r}; pass --space "
                f"{config.genotype.space}"
            )
        space.validate(config.genotype)
        return None, None
    assert config.proposer is not None
    if config.target is None:
        raise PrunenasError("give exactly one target: --ratio R, --macs-ratio R or --density D")
    proposer = get_proposer(config.proposer, space.kind, **dict(config.proposer_options))
    # A proposer that scores trained weights gets the unpruned arm's (or the given) reference.
    proposer.check(space, config.target, trained=True)
    inverted = None
    if "invert" in config.ablations:
        if "invert" not in proposer.options:
            raise PrunenasError(
                f"--ablation invert keeps a proposer's lowest scores, but {proposer.name!r} ranks no scores (it has no "
                "invert option); use magnitude, snip, grasp, graspabs, synflow or random"
            )
        inverted = get_proposer(config.proposer, space.kind, **{**dict(config.proposer_options), "invert": True})
    return proposer, inverted


def resolve_epochs(config: RethinkConfig) -> tuple[int, int]:
    """(E, F): the base epochs of the unpruned/scratch-E arms and the fine-tuning epochs for the budget;
    explicit epochs override the budget."""
    standard = make_recipe("standard", config.space.recipe).epochs
    finetune = make_recipe("finetune", config.space.recipe).epochs
    if config.budget == "smoke":
        base, fine = SMOKE_EPOCHS, SMOKE_EPOCHS
    elif config.budget == "fast":
        base, fine = max(1, standard // FAST_FRACTION), max(1, finetune // FAST_FRACTION)
    else:
        base, fine = standard, finetune
    return config.epochs or base, config.finetune_epochs or fine


def source_tags(config: RethinkConfig, base_epochs: int) -> tuple[str, str]:
    """6-hex tags of what a run's starting weights depend on beyond its genotype, recipe and seed:
    (the reference the pruned model is cut from, that reference plus the mask's source). They are part
    of the run folder names of the arms that depend on them (fine-tuning; density arms under the mask),
    so two studies of the same genotype (another --reference, proposer or base seed) never share such
    runs: `train` identifies a run by genotype, recipe, seed and data, not by its initial weights."""
    if config.reference is not None:
        reference: dict[str, Any] = {"checkpoint": str(Path(config.reference).resolve())}
    else:
        reference = {"unpruned": {"epochs": base_epochs, "seed": config.settings.seed}}
    if config.genotype is not None:
        source: dict[str, Any] = {"masks": "layer-wise magnitude of the reference"}
    else:
        source = {
            "proposer": config.proposer,
            "options": dict(config.proposer_options),
            "target": config.target.to_dict() if config.target is not None else None,
            "seed": config.settings.seed,
        }

    def tag(obj: Any) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:6]

    return tag(reference), tag({"reference": reference, "source": source})


def default_study_dir(config: RethinkConfig, genotype: Genotype | None) -> Path:
    """runs/rethink/<space>-<genotype key>-<dataset>/. When the genotype is only known after the reference is
    trained (a proposer that scores trained weights and no --reference), the proposer and what its decision
    depends on name it instead: <space>-<proposer>-<target>[-<options hash>]-s<base seed>-<dataset>/."""
    if genotype is not None:
        return Path("runs") / "rethink" / f"{config.space.name}-{genotype.key}-{config.dataset}"
    assert config.proposer is not None and config.target is not None
    name = f"{config.proposer}-{config.target.kind.replace('_', '')}{config.target.value:g}"
    if config.proposer_options:
        blob = json.dumps(dict(config.proposer_options), sort_keys=True, default=str)
        name += "-" + hashlib.sha256(blob.encode()).hexdigest()[:6]
    return Path("runs") / "rethink" / f"{config.space.name}-{name}-s{config.settings.seed}-{config.dataset}"


# -- the plan ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmPlan:
    """One arm: what it trains, how long, with which seeds; `runs_of` names the arm whose run folders hold
    its runs (itself, or another arm whose runs are exactly these)."""

    name: str
    what: str
    genotype: Genotype | None  # None: not decided yet (a dry run before the proposer ran)
    recipe: Recipe | None
    epochs: int | None  # None: unknown until the genotype is decided
    seeds: tuple[int, ...]  # seeds trained (empty: nothing to train, e.g. a given reference)
    runs_of: str
    macs: int | None
    params: int | None
    compute_macs: int | None  # MACs a dense device executes per image (density arms: the dense model's)
    estimated: bool = False  # epochs estimated from a --macs-ratio target (dry run)
    tag: str = ""  # what the starting weights depend on beyond genotype and seed (see `source_tags`)

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    @property
    def trains(self) -> bool:
        return self.runs_of == self.name and bool(self.seeds)

    def run_dir(self, study: Path, seed: int) -> Path:
        return study / (f"{self.runs_of}-e{self.epochs}-s{seed}" + (f"-{self.tag}" if self.tag else ""))


@dataclass(frozen=True)
class Plan:
    space: str
    kind: str
    dataset: str
    budget: str
    seeds: tuple[int, ...]
    base_epochs: int
    finetune_epochs: int
    genotype: Genotype | None
    decided_by: str
    reference: str | None
    reference_macs: int
    train_images: int | None
    study_dir: Path
    arms: tuple[ArmPlan, ...]

    def arm(self, name: str) -> ArmPlan:
        return next(a for a in self.arms if a.name == name)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for a in self.arms:
            runs = len(a.seeds) if a.trains else 0
            epochs = None if a.epochs is None else a.epochs * runs
            images = None if epochs is None or self.train_images is None else epochs * self.train_images
            pflop = None if images is None or a.compute_macs is None else 6 * images * a.compute_macs / 1e15
            out.append(
                {
                    "arm": a.name,
                    "label": a.label,
                    "recipe": a.recipe.name if a.recipe is not None else None,
                    "epochs": a.epochs,
                    "estimated": a.estimated,
                    "seeds": list(a.seeds),
                    "runs": runs,
                    "shared_with": None if a.runs_of == a.name else a.runs_of,
                    "training_epochs": epochs,
                    "image_epochs": images,
                    "train_pflop": pflop,
                    "genotype_key": a.genotype.key if a.genotype is not None else None,
                    "macs": a.macs,
                    "params": a.params,
                    "what": a.what,
                }
            )
        return out

    def totals(self) -> dict[str, Any]:
        rows = self.rows()
        unknown = [r["label"] for r in rows if r["runs"] and r["training_epochs"] is None]
        images = [r["image_epochs"] for r in rows if r["runs"]]
        pflop = [r["train_pflop"] for r in rows if r["runs"]]
        return {
            "runs": sum(r["runs"] for r in rows),
            "training_epochs": sum(r["training_epochs"] or 0 for r in rows),
            "image_epochs": None if any(v is None for v in images) else sum(images),
            "train_pflop": None if any(v is None for v in pflop) else sum(pflop),
            "unknown": unknown,
            "estimated": [r["label"] for r in rows if r["estimated"]],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "kind": self.kind,
            "dataset": self.dataset,
            "budget": self.budget,
            "seeds": list(self.seeds),
            "base_epochs": self.base_epochs,
            "finetune_epochs": self.finetune_epochs,
            "genotype": self.genotype.to_dict() if self.genotype is not None else None,
            "genotype_key": self.genotype.key if self.genotype is not None else None,
            "decided_by": self.decided_by,
            "reference": self.reference,
            "reference_macs": self.reference_macs,
            "train_images": self.train_images,
            "study_dir": str(self.study_dir),
            "arms": self.rows(),
            "totals": self.totals(),
        }


def make_plan(
    config: RethinkConfig,
    *,
    num_classes: int,
    train_images: int | None,
    genotype: Genotype | None,
    inverted: Genotype | None = None,
    study_dir: Path | None = None,
    mask_source: str = "the proposer's mask",
) -> Plan:
    """The arms of a study. `genotype` None: the proposer has not decided yet (epochs of scratch-B are then
    estimated from a --macs-ratio target, or unknown)."""
    space = config.space
    density = space.kind == "density"
    E, F = resolve_epochs(config)
    seeds = config.seed_list
    overrides = {"batch_size": config.batch_size}
    ref_cost = genotype_cost(space, space.reference(), num_classes=num_classes)
    dense_macs = ref_cost.macs if density else None

    def cost_of(g: Genotype | None) -> tuple[int | None, int | None]:
        if g is None:
            return None, None
        c = genotype_cost(space, g, num_classes=num_classes)
        return c.macs, c.params

    macs, params = cost_of(genotype)
    standard = make_recipe("standard", space.recipe, overrides={**overrides, "epochs": E})
    scratch_e = make_recipe("scratch-e", space.recipe, overrides={**overrides, "epochs": E})
    finetune = make_recipe("finetune", space.recipe, overrides={**overrides, "epochs": F})
    scratch_b: Recipe | None = None
    b_epochs: int | None = None
    estimated = False
    if macs is not None:
        scratch_b = make_recipe(
            "scratch-b", space.recipe, macs=macs, reference_macs=ref_cost.macs, scratch_b_cap=config.scratch_b_cap,
            overrides={**overrides, "epochs": E},
        )  # fmt: skip
        b_epochs = scratch_b.epochs
    elif config.target is not None and config.target.kind == "macs_ratio":
        factor = 1.0 / config.target.value
        if config.scratch_b_cap is not None:
            factor = min(factor, config.scratch_b_cap)
        b_epochs, estimated = max(1, int(E * factor)), True

    given = config.reference is not None
    ref_from = f"the given reference {config.reference}" if given else f"the unpruned seed-{seeds[0]} model"
    if density:
        inherit = f"{ref_from}'s weights under {mask_source}, finetune recipe (lr {finetune.lr:g}, constant)"
        scratch_what = f"{mask_source} on a fresh init (seed k), standard schedule"
    else:
        inherit = (
            f"{ref_from}'s channels with the largest filter L1 norm, finetune recipe (lr {finetune.lr:g}, constant)"
        )
        scratch_what = "the pruned genotype from a fresh init (seed k), standard schedule"
    executed = dense_macs or macs  # a dense device multiplies masked weights too
    if given:
        unpruned = ArmPlan(
            "unpruned", f"given checkpoint {config.reference} (evaluated, not trained)", space.reference(),
            standard, None, (), "unpruned", ref_cost.macs, ref_cost.params, ref_cost.macs,
        )  # fmt: skip
    else:
        unpruned = ArmPlan(
            "unpruned", "the reference genotype from a fresh init (seed k), standard recipe", space.reference(),
            standard, E, seeds, "unpruned", ref_cost.macs, ref_cost.params, ref_cost.macs,
        )  # fmt: skip
    b_what = scratch_what.replace("standard schedule", "epochs E x MACs_reference / MACs_pruned")
    # int(E x factor) == E (small E, or a genotype close to the reference): the very Scratch-E training
    b_runs = "scratch-e" if b_epochs == E and not estimated else "scratch-b"
    arms = [
        unpruned,
        ArmPlan("finetune", inherit, genotype, finetune, F, seeds, "finetune", macs, params, executed),
        ArmPlan("scratch-e", scratch_what, genotype, scratch_e, E, seeds, "scratch-e", macs, params, executed),
        ArmPlan("scratch-b", b_what, genotype, scratch_b, b_epochs, seeds, b_runs, macs, params, executed, estimated),
    ]
    ablations = [a for a in ABLATIONS if a == "mask" or a in config.ablations] if config.ablations else []
    for name in ablations:
        if name == "mask":
            what = "the proposer's mask on a fresh init (seed k)"
            arms.append(ArmPlan(name, what, genotype, scratch_e, E, seeds, "scratch-e", macs, params, dense_macs))
        elif name == "shuffle":
            what = "the mask shuffled within each layer: the density genotype as the space builds it (seed k)"
            arms.append(ArmPlan(name, what, genotype, scratch_e, E, seeds, name, macs, params, dense_macs))
        elif name == "reinit":
            what = f"the proposer's mask on another init (seed k + {REINIT_OFFSET})"
            arms.append(ArmPlan(name, what, genotype, scratch_e, E, seeds, name, macs, params, dense_macs))
        elif name == "invert":
            inv_macs, inv_params = cost_of(inverted)
            what = "the proposer with invert=True (keeps the lowest scores), its mask on a fresh init (seed k)"
            arms.append(ArmPlan(name, what, inverted, scratch_e, E, seeds, name, inv_macs, inv_params, dense_macs))
    ref_tag, mask_tag = source_tags(config, E)
    tags = {"finetune": mask_tag if density else ref_tag}
    if density:
        tags.update({name: mask_tag for name in ("scratch-e", "scratch-b", "mask", "reinit", "invert")})
    arms = [dataclasses.replace(a, tag=tags.get(a.name, "")) for a in arms]
    if config.genotype is not None:
        decided_by = "the given genotype"
    elif genotype is not None:
        decided_by = f"proposer {config.proposer} ({config.target.describe() if config.target else ''})"
    else:
        decided_by = f"proposer {config.proposer} ({config.target.describe() if config.target else ''}), when it runs"
    return Plan(
        space=space.name,
        kind=space.kind,
        dataset=config.dataset,
        budget=config.budget,
        seeds=seeds,
        base_epochs=E,
        finetune_epochs=F,
        genotype=genotype,
        decided_by=decided_by,
        reference=config.reference,
        reference_macs=ref_cost.macs,
        train_images=train_images,
        study_dir=study_dir or config.out or default_study_dir(config, genotype),
        arms=tuple(arms),
    )


def known_train_images(
    dataset: str, *, train_subset: int | None = None, val_size: int | None = None, seed: int = 0
) -> int | None:
    """Training images per epoch without decoding CIFAR (digits is embedded: loaded); None when unknown."""
    if train_subset is not None:
        return train_subset
    name = dataset.lower()
    if name == "digits":
        return len(load_dataset("digits", val_size=val_size, seed=seed).train)
    if name in ("cifar10", "cifar100"):
        return _CIFAR_TRAIN - (val_size if val_size is not None else round(_CIFAR_TRAIN / 10))
    return None


def dry_run(config: RethinkConfig, *, train_images: int | None = None) -> Plan:
    """The plan without training. The genotype is decided here only when that is cheap and needs nothing
    trained and no images (a --genotype file; uniform, random, l1-paper, erk, synflow, ...)."""
    proposer, inverted = check_config(config)
    num_classes = _KNOWN_CLASSES.get(config.dataset.lower(), config.space.num_classes)
    genotype = config.genotype
    inv_genotype = None
    if proposer is not None and not proposer.needs_trained and not proposer.needs_data:
        assert config.target is not None
        ctx = make_context(config.space, seed=config.settings.seed, device=config.settings.device)
        genotype = run_proposer(proposer, ctx, config.target).genotype
        if inverted is not None:
            inv_genotype = run_proposer(inverted, ctx, config.target).genotype
    study = config.out
    if study is None and genotype is None and proposer is not None and not proposer.needs_trained:
        # decided up front when the study runs: named by the key it will have
        study = Path("runs") / "rethink" / f"{config.space.name}-<genotype key>-{config.dataset}"
    return make_plan(
        config, num_classes=num_classes, train_images=train_images, genotype=genotype, inverted=inv_genotype,
        study_dir=study,
    )  # fmt: skip


# -- results -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    seed: int
    run_dir: str
    test_acc: float | None
    val_acc: float | None
    epochs_run: int
    wall_time_s: float
    stopped: str | None
    trained: bool  # False: found finished (or evaluated only) and not trained again

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ArmResult:
    plan: ArmPlan
    runs: tuple[RunRecord, ...]

    def values(self, attr: str = "test_acc") -> list[float]:
        return [float(v) for r in self.runs if (v := getattr(r, attr)) is not None and math.isfinite(float(v))]

    def mean(self, attr: str = "test_acc") -> float | None:
        values = self.values(attr)
        return statistics.fmean(values) if values else None

    def std(self, attr: str = "test_acc") -> float | None:
        values = self.values(attr)
        if not values:
            return None
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.plan.name,
            "label": self.plan.label,
            "what": self.plan.what,
            "recipe": self.plan.recipe.name if self.plan.recipe is not None else None,
            "epochs": self.plan.epochs,
            "shared_with": None if self.plan.runs_of == self.plan.name else self.plan.runs_of,
            "genotype_key": self.plan.genotype.key if self.plan.genotype is not None else None,
            "macs": self.plan.macs,
            "params": self.plan.params,
            "n": len(self.values("test_acc")),
            "test_acc_mean": self.mean(),
            "test_acc_std": self.std(),
            "val_acc_mean": self.mean("val_acc"),
            "val_acc_std": self.std("val_acc"),
            "runs": [r.to_dict() for r in self.runs],
        }


@dataclass(frozen=True)
class RethinkOutcome:
    plan: Plan
    arms: tuple[ArmResult, ...]
    files: Mapping[str, str]
    trained: int  # runs trained (or resumed) by this call
    skipped: int  # runs found finished
    wall_time_s: float

    def arm(self, name: str) -> ArmResult:
        return next(a for a in self.arms if a.plan.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_dir": str(self.plan.study_dir),
            "plan": self.plan.to_dict(),
            "arms": [a.to_dict() for a in self.arms],
            "paper_row": paper_row(self),
            "files": dict(self.files),
            "trained": self.trained,
            "skipped": self.skipped,
            "wall_time_s": self.wall_time_s,
        }


def _finished_result(
    out: Path, genotype: Genotype, recipe: Recipe, seed: int, data: DatasetSplits
) -> TrainResult | None:
    """The result recorded in `out`/metrics.json when it is this very run and it is over (finished or
    stopped on purpose); None otherwise (then `train` runs or resumes it)."""
    path = out / METRICS
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        same = (
            d["genotype"]["space"] == genotype.space
            and Genotype.from_dict(d["genotype"]).key == genotype.key
            and d["recipe_settings"] == json.loads(json.dumps(recipe.to_dict()))
            and d["seed"] == seed
            and d["dataset"]["name"] == data.name
            and d["dataset"]["sizes"] == {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
        )
        if not same or not (d.get("finished") or d.get("stopped")):
            return None
        names = {f.name for f in dataclasses.fields(TrainResult)}
        values = {k: v for k, v in d.items() if k in names and k != "history"}
        return TrainResult(**values, history=tuple(EpochMetrics(**h) for h in d["history"]))
    except (KeyError, TypeError, ValueError):
        return None  # an unreadable or foreign metrics.json: let train() decide


def _evaluate_reference(
    space: Space, state: Mapping[str, torch.Tensor], data: DatasetSplits, device: str
) -> tuple[float | None, float | None]:
    """(val, test) accuracy of given reference weights (fp32)."""
    from prunenas.train import resolve_device

    dev = resolve_device(device)
    model = space.build(space.reference(), num_classes=data.num_classes)
    model.load_state_dict(state, strict=True)
    model.to(dev)
    accs: list[float | None] = []
    for split in (data.val, data.test):
        if not len(split):
            accs.append(None)
            continue
        batches = DeviceBatches(
            split, batch_size=256, device=dev, mean=data.mean, std=data.std, augment=False, shuffle=False,
            drop_last=False,
        )  # fmt: skip
        accs.append(evaluate(model, batches, amp=False)[1])
    return accs[0], accs[1]


def _load_reference_state(space: Space, path: str | Path, num_classes: int) -> dict[str, torch.Tensor]:
    state = load_reference(space, path)
    try:
        space.build(space.reference(), num_classes=num_classes).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PrunenasError(
            f"reference {str(path)!r} does not fit {space.name!r} with {num_classes} classes: {first}"
        ) from None
    return state


def _propose(
    config: RethinkConfig,
    proposer: Proposer,
    inverted: Proposer | None,
    data: DatasetSplits,
    reference: Path | str | None,
) -> tuple[Proposal, Proposal | None]:
    assert config.target is not None
    ctx = make_context(
        config.space, data=data, reference=reference if proposer.needs_trained else None,
        seed=config.settings.seed, device=config.settings.device,
    )  # fmt: skip
    provenance = {"reference": str(reference) if proposer.needs_trained else "random init", "dataset": data.name}
    proposal = run_proposer(proposer, ctx, config.target, **provenance)
    inv = run_proposer(inverted, ctx, config.target, **provenance) if inverted is not None else None
    return proposal, inv


def run_rethink(config: RethinkConfig, data: DatasetSplits, log: Log = print) -> RethinkOutcome:
    """Train (or find finished) every run of the study and write rethink.json/.txt/.png in its folder."""
    t0 = time.perf_counter()
    proposer, inverted = check_config(config)
    if config.dataset != data.name:
        config = dataclasses.replace(config, dataset=data.name)
    space = config.space
    num_classes = data.num_classes
    seeds = config.seed_list
    s0 = seeds[0]
    ref_state: dict[str, torch.Tensor] | None = None
    if config.reference is not None:
        ref_state = _load_reference_state(space, config.reference, num_classes)
    counts = {"trained": 0, "skipped": 0}

    # 1. The genotype, up front unless the proposer scores the reference that this study trains.
    reference_first = proposer is not None and proposer.needs_trained and config.reference is None
    proposal: Proposal | None = None
    inv_proposal: Proposal | None = None
    genotype = config.genotype
    if proposer is not None and not reference_first:
        proposal, inv_proposal = _propose(config, proposer, inverted, data, config.reference)
        genotype = proposal.genotype
    study = config.out or default_study_dir(config, genotype)
    try:
        study.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrunenasError(
            f"cannot create the study folder {str(study)!r}: {exc.strerror}; pass another --out"
        ) from None

    def plan_now() -> Plan:
        return make_plan(
            config, num_classes=num_classes, train_images=len(data.train), genotype=genotype, study_dir=study,
            inverted=inv_proposal.genotype if inv_proposal is not None else None,
            mask_source="the proposer's mask" if config.genotype is None else "per-layer magnitude masks",
        )  # fmt: skip

    plan = plan_now()
    total_runs = sum(len(a.seeds) for a in plan.arms if a.trains)
    done = 0

    def run_arm(arm: ArmPlan, init_for: Callable[[int], Mapping[str, torch.Tensor] | None]) -> list[RunRecord]:
        nonlocal done
        assert arm.genotype is not None and arm.recipe is not None
        records = []
        for seed in arm.seeds:
            done += 1
            out = arm.run_dir(study, seed)
            prefix = f"[{done}/{total_runs}] {arm.label} seed {seed}"
            result = _finished_result(out, arm.genotype, arm.recipe, seed, data)
            trained = result is None
            if result is None:
                log(f"{prefix}: {arm.recipe.epochs} epochs ({arm.recipe.name}) -> {out}")
                result = train(
                    space,
                    arm.genotype,
                    data,
                    arm.recipe,
                    dataclasses.replace(config.settings, seed=seed),
                    out_dir=out,
                    init_state=init_for(seed),
                    extra_metrics={
                        "rethink": {"arm": arm.name, "what": arm.what, "study": str(study)},
                        "cost": genotype_cost(space, arm.genotype, num_classes=num_classes).to_dict(),
                    },
                )
                counts["trained"] += 1
            else:
                counts["skipped"] += 1
                log(f"{prefix}: finished before ({out}), not trained again")
            records.append(
                RunRecord(
                    seed=seed,
                    run_dir=str(out),
                    test_acc=result.test_acc,
                    val_acc=result.val_acc,
                    epochs_run=result.epochs_run,
                    wall_time_s=result.wall_time_s,
                    stopped=result.stopped,
                    trained=trained,
                )
            )
        return records

    # 2. The unpruned arm (or the given reference).
    runs: dict[str, list[RunRecord]] = {}
    unpruned = plan.arm("unpruned")
    if config.reference is not None:
        assert ref_state is not None
        val_acc, test_acc = _evaluate_reference(space, ref_state, data, config.settings.device)
        runs["unpruned"] = [RunRecord(s0, str(config.reference), test_acc, val_acc, 0, 0.0, None, False)]
        reference_path: Path | str = config.reference
    else:
        runs["unpruned"] = run_arm(unpruned, lambda _seed: None)
        reference_path = unpruned.run_dir(study, s0) / CHECKPOINT
        ref_state = _load_reference_state(space, reference_path, num_classes)

    # 3. The proposer, if it scores the trained reference.
    if proposer is not None and reference_first:
        assert config.target is not None
        log(f"proposer {proposer.name} scores the unpruned seed-{s0} model ({config.target.describe()})")
        proposal, inv_proposal = _propose(config, proposer, inverted, data, reference_path)
        genotype = proposal.genotype
        plan = plan_now()
        total_runs = sum(len(a.seeds) for a in plan.arms if a.trains)
    assert genotype is not None and ref_state is not None
    genotype.save(study / GENOTYPE_FILE)

    # 4. Initial states: the pruned model (fine-tune) and, for density spaces, masked fresh inits.
    masks: dict[str, torch.Tensor] | None = None
    if space.kind == "density":
        if proposal is not None and proposal.masks is not None:
            masks = {k: v.detach().cpu().float() for k, v in proposal.masks.items()}
        else:  # a genotype file (or a proposer that returns no mask): layer-wise magnitude on the reference
            masks = magnitude_masks(space, ref_state, genotype, num_classes)
        saved: dict[str, Any] = {"masks": masks, "genotype": genotype.key}
        if inv_proposal is not None and inv_proposal.masks is not None:
            saved["invert_masks"] = {k: v.detach().cpu().float() for k, v in inv_proposal.masks.items()}
        torch.save(saved, study / MASKS_FILE)
        pruned = masked_state(space, masks, num_classes, weights=ref_state)
    else:
        ref_model = space.build(space.reference(), num_classes=num_classes)
        ref_model.load_state_dict(ref_state, strict=True)
        pruned = inherit_weights(space, ref_model, genotype)

    def fresh(mask_set: Mapping[str, torch.Tensor] | None, offset: int = 0) -> Callable[[int], Any]:
        if mask_set is None:
            return lambda _seed: None  # train() builds the genotype fresh (channels; shuffle = the space's masks)
        return lambda seed: masked_state(space, mask_set, num_classes, init_seed=seed + offset)

    inits: dict[str, Callable[[int], Mapping[str, torch.Tensor] | None]] = {
        "finetune": lambda _seed: pruned,
        "scratch-e": fresh(masks),
        "scratch-b": fresh(masks),
        "shuffle": fresh(None),
        "reinit": fresh(masks, REINIT_OFFSET),
    }
    if inv_proposal is not None:
        inv_masks = inv_proposal.masks
        inits["invert"] = fresh({k: v.detach().cpu().float() for k, v in inv_masks.items()} if inv_masks else None)
    for arm in plan.arms:
        if arm.name != "unpruned" and arm.trains:
            runs[arm.name] = run_arm(arm, inits[arm.name])
    results = tuple(ArmResult(arm, tuple(runs.get(arm.runs_of, []))) for arm in plan.arms)
    outcome = RethinkOutcome(plan, results, {}, counts["trained"], counts["skipped"], time.perf_counter() - t0)
    files = write_outputs(outcome)
    return dataclasses.replace(outcome, files=files, wall_time_s=time.perf_counter() - t0)


# -- tables and plot ---------------------------------------------------------------------------------------
def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def _human(n: float | None) -> str:
    from prunenas.report import human

    return "?" if n is None else human(n)


def genotype_name(genotype: Genotype | None) -> str:
    if genotype is None:
        return "?"
    name = genotype.provenance.get("name")
    return f"{name} ({genotype.key})" if name else genotype.key


def paper_row(outcome: RethinkOutcome) -> dict[str, Any]:
    """One row of Liu et al.'s Table 1: dataset, model, unpruned, pruned model, fine-tuned, scratch-E/B."""
    plan = outcome.plan

    def cell(name: str) -> dict[str, Any]:
        a = outcome.arm(name)
        return {"mean": a.mean(), "std": a.std(), "n": len(a.values("test_acc")), "epochs": a.plan.epochs}

    return {
        "dataset": plan.dataset,
        "model": plan.space,
        "unpruned": cell("unpruned"),
        "pruned_model": genotype_name(plan.genotype),
        "fine_tuned": cell("finetune"),
        "scratch_e": cell("scratch-e"),
        "scratch_b": cell("scratch-b"),
    }


def format_plan(plan: Plan) -> str:
    from prunenas.report import format_table

    g = plan.genotype
    pruned = next((a.macs for a in plan.arms if a.name == "scratch-e"), None)
    ratio = "" if pruned is None else f" ({_human(pruned)} MACs, {pruned / plan.reference_macs:.3f} of the reference)"
    lines = [
        f"rethink plan: space {plan.space} ({plan.kind}), pruned genotype {genotype_name(g)}{ratio} by "
        f"{plan.decided_by}; dataset {plan.dataset} "
        f"({'?' if plan.train_images is None else f'{plan.train_images:,}'} training images); budget {plan.budget}; "
        f"{len(plan.seeds)} seed(s) {', '.join(map(str, plan.seeds))}"
    ]
    rows = []
    for r in plan.rows():
        epochs = "?" if r["epochs"] is None else ("~" if r["estimated"] else "") + str(r["epochs"])
        runs = str(r["runs"]) if not r["shared_with"] else f"0 (= {LABELS[r['shared_with']]})"
        total = "-" if r["training_epochs"] is None else ("~" if r["estimated"] else "") + str(r["training_epochs"])
        rows.append(
            [
                r["label"],
                r["recipe"] or "?",
                epochs,
                runs,
                total,
                _human(r["image_epochs"]) if r["runs"] else "0",
                "?" if r["train_pflop"] is None else f"{r['train_pflop']:.2f}",
                _human(r["macs"]),
                r["what"],
            ]
        )
    t = plan.totals()
    rows.append(
        [
            "total",
            "",
            "",
            str(t["runs"]),
            str(t["training_epochs"]) + (" + ?" if t["unknown"] else ""),
            _human(t["image_epochs"]),
            "?" if t["train_pflop"] is None else f"{t['train_pflop']:.2f}",
            "",
            "",
        ]
    )
    header = ["arm", "recipe", "epochs", "runs", "train epochs", "image-epochs", "PFLOP", "MACs", "what"]
    lines.append(format_table(rows, header, "llrrrrrrl"))
    notes = [f"reference: {_human(plan.reference_macs)} MACs; PFLOP = 6 x MACs executed per image x image-epochs"]
    if t["estimated"]:
        notes.append(f"~: estimated from the --macs-ratio target (met within 2%): {', '.join(t['estimated'])}")
    if t["unknown"]:
        notes.append(f"?: known once the proposer has decided: {', '.join(t['unknown'])} (not in the totals)")
    notes.append(f"study folder: {plan.study_dir}")
    return "\n".join(lines + notes)


def format_results(outcome: RethinkOutcome) -> str:
    from prunenas.report import format_table

    plan = outcome.plan
    head = (
        f"rethink: {plan.space} / {genotype_name(plan.genotype)} on {plan.dataset}, budget {plan.budget}, "
        f"{len(plan.seeds)} seed(s); test accuracy of the final model (%), mean ± std over seeds"
    )
    rows = []
    for a in outcome.arms:
        n = len(a.values("test_acc"))
        stopped = sum(1 for r in a.runs if r.stopped)
        shared = "" if a.plan.runs_of == a.plan.name else f" (= {LABELS[a.plan.runs_of]} runs)"
        rows.append(
            [
                a.plan.label,
                _pct(a.mean(), a.std()),
                _pct(a.mean("val_acc"), a.std("val_acc")),
                f"{n}" + (f" ({stopped} stopped)" if stopped else ""),
                "-" if a.plan.epochs is None else str(a.plan.epochs),
                _human(a.plan.macs),
                _human(a.plan.params),
                a.plan.what + shared,
            ]
        )
    table = format_table(rows, ["arm", "test acc", "val acc", "n", "epochs", "MACs", "params", "what"], "lrrrrrrl")
    p = paper_row(outcome)

    def cell(c: Mapping[str, Any]) -> str:
        return "-" if c["mean"] is None else f"{100 * c['mean']:.2f} (±{100 * (c['std'] or 0):.2f})"

    paper = format_table(
        [
            [
                p["dataset"],
                p["model"],
                cell(p["unpruned"]),
                p["pruned_model"],
                cell(p["fine_tuned"]),
                cell(p["scratch_e"]),
                cell(p["scratch_b"]),
            ]
        ],
        ["dataset", "model", "unpruned", "pruned model", "fine-tuned", "scratch-E", "scratch-B"],
        "lllllll",
    )
    epochs = (
        f"epochs: unpruned {outcome.arm('unpruned').plan.epochs or '-'} / fine-tuned "
        f"{outcome.arm('finetune').plan.epochs} / scratch-E {outcome.arm('scratch-e').plan.epochs} / scratch-B "
        f"{outcome.arm('scratch-b').plan.epochs}"
    )
    return "\n".join([head, table, "", "Liu et al. (ICLR 2019) Table 1 format:", paper, epochs])


def plot_arms(outcome: RethinkOutcome, path: Path) -> Path:
    """Bar chart: mean test accuracy per arm with ± std error bars, epochs and MACs under each bar."""
    from prunenas.report import pyplot as _pyplot

    plt = _pyplot()
    arms = [a for a in outcome.arms if a.mean() is not None]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(outcome.arms) + 1.5), 4.2))
    colors = {"unpruned": "tab:gray", "finetune": "tab:blue", "scratch-e": "tab:orange", "scratch-b": "tab:green"}
    xs = list(range(len(arms)))
    means = [100 * (a.mean() or 0.0) for a in arms]
    stds = [100 * (a.std() or 0.0) for a in arms]
    ax.bar(xs, means, yerr=stds, capsize=4, color=[colors.get(a.plan.name, "tab:purple") for a in arms])
    for x, m in zip(xs, means, strict=True):
        ax.annotate(f"{m:.2f}", (x, m), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{a.plan.label}\n{a.plan.epochs or '-'} ep, {_human(a.plan.macs)}" for a in arms], fontsize=8)
    if means:
        low = min(m - s for m, s in zip(means, stds, strict=True))
        high = max(m + s for m, s in zip(means, stds, strict=True))
        pad = max(1.0, 0.15 * (high - low))
        ax.set_ylim(max(0.0, low - 4 * pad), min(100.0, high + 2 * pad))
    ax.set_ylabel("test accuracy (%), mean ± std")
    plan = outcome.plan
    ax.set_title(
        f"{plan.space} {genotype_name(plan.genotype)} on {plan.dataset} ({len(plan.seeds)} seed(s))", fontsize=9
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(outcome: RethinkOutcome) -> dict[str, str]:
    study = outcome.plan.study_dir
    files = {
        "table_json": str(study / TABLE_JSON),
        "table_txt": str(study / TABLE_TXT),
        "plot_png": str(study / TABLE_PNG),
        "genotype": str(study / GENOTYPE_FILE),
    }
    if (study / MASKS_FILE).exists():
        files["masks"] = str(study / MASKS_FILE)
    payload = {**outcome.to_dict(), "files": files}
    _atomic_text(study / TABLE_JSON, json.dumps(payload, indent=2) + "\n")
    _atomic_text(study / TABLE_TXT, format_results(outcome) + "\n")
    plot_arms(outcome, study / TABLE_PNG)
    return files


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
