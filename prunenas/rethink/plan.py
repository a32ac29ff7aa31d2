"""The plan of a Rethinking study: its arms (what trains, how long, with which seeds, in which run
folder), without training anything (`make_plan`, `dry_run`).

The configuration and its epochs are `prunenas.rethink.config`, its checks `prunenas.rethink.checks`, the
tags of the runs' starting weights and the study folder `prunenas.rethink.identity`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunenas.config import DataConfig, fingerprint
from prunenas.cost import genotype_cost
from prunenas.data import load_dataset
from prunenas.genotype import Genotype
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.recipes import Recipe, make_recipe
from prunenas.rethink.checks import check_config
from prunenas.rethink.config import (
    _KNOWN_CLASSES,
    ABLATIONS,
    KD_ARM,
    LABELS,
    REINIT_OFFSET,
    RethinkConfig,
    finetune_source,
    resolve_epochs,
    scores_each_seed,
    with_protocol,
)
from prunenas.rethink.identity import default_study_dir, source_tags, teacher_source

# Training images of the CIFAR sets (the default validation split keeps 10% of them apart).
_CIFAR_TRAIN = 50_000


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
    identity: str = ""  # hash of the recipe, genotype, data and tag of the runs (see `make_plan`)

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    @property
    def trains(self) -> bool:
        return self.runs_of == self.name and bool(self.seeds)

    def run_dir(self, study: Path, seed: int) -> Path:
        """The one place rethink names run folders: arm, epochs and seed for people, then the hash of
        everything else that changes the runs' result (recipe, genotype, data, starting weights), so a
        changed setting (e.g. --batch-size) gets new folders instead of a clash."""
        return study / (f"{self.runs_of}-e{self.epochs}-s{seed}" + (f"-{self.identity}" if self.identity else ""))


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
    protocol: Mapping[str, Any] = field(default_factory=dict)  # RethinkConfig.protocol_settings()

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
            "protocol": dict(self.protocol),
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
    density = space.pruned_by_masks
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
            "scratch-b", space.recipe, macs=macs, reference_macs=ref_cost.macs,
            scratch_b_cap=config.effective_scratch_b_cap,
            overrides={**overrides, "epochs": E},
        )  # fmt: skip
        b_epochs = scratch_b.epochs
    elif config.target is not None and config.target.kind == "macs_ratio":
        factor = 1.0 / config.target.value
        if config.effective_scratch_b_cap is not None:
            factor = min(factor, config.effective_scratch_b_cap)
        b_epochs, estimated = max(1, int(E * factor)), True

    given = config.reference is not None
    trained_by = finetune_source(config)
    ref_from = f"the given reference {config.reference}" if given else f"the unpruned seed-{seeds[0]} model"
    if trained_by is not None:
        ref_from = f"{trained_by.name}'s own trained seed-{seeds[0]} model (the one it decided on)"
    if density:
        inherit = f"{ref_from}'s weights under {mask_source}, finetune recipe (lr {finetune.lr:g}, constant)"
        scratch_what = f"{mask_source} on a fresh init (seed k), standard schedule"
    else:
        rule = space.inheritance_by(trained_by.inherits_by if trained_by is not None else None)
        inherit = f"the {rule} of {ref_from}, finetune recipe (lr {finetune.lr:g}, constant)"
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
    cap = config.effective_scratch_b_cap
    capped = "" if cap is None else f", capped at {cap:g} x E"
    b_what = scratch_what.replace("standard schedule", f"epochs E x MACs_reference / MACs_pruned{capped}")
    # int(E x factor) == E (small E, or a genotype close to the reference): the very Scratch-E training
    b_runs = "scratch-e" if b_epochs == E and not estimated else "scratch-b"
    arms = [
        unpruned,
        ArmPlan("finetune", inherit, genotype, finetune, F, seeds, "finetune", macs, params, executed),
        ArmPlan("scratch-e", scratch_what, genotype, scratch_e, E, seeds, "scratch-e", macs, params, executed),
        ArmPlan("scratch-b", b_what, genotype, scratch_b, b_epochs, seeds, b_runs, macs, params, executed, estimated),
    ]
    ablations = [a for a in ABLATIONS if a == "mask" or a in config.ablations] if config.ablations else []
    own = scores_each_seed(config)
    if own:
        scratch_what = scratch_what.replace("the proposer's mask", "seed k's own mask (scored on seed k's init)")
        arms = [
            dataclasses.replace(a, what=a.what.replace("the proposer's mask", "seed k's own mask"))
            if a.name in ("scratch-e", "scratch-b") else a
            for a in arms
        ]  # fmt: skip
    if config.teacher is not None:
        kd = make_recipe("scratch-e", space.recipe, overrides={**overrides, "epochs": E, **dict(config.kd)})
        if config.teacher != "reference":
            teacher = f"the teacher {config.teacher}"
        elif given:
            teacher = f"the given reference {config.reference}"
        else:
            teacher = "the unpruned seed-k model"
        kd_what = (
            f"{scratch_what}, distilled from {teacher} (T {kd.kd_temperature:g}, weight {kd.kd_weight:g}, "
            "Hinton et al. 2015)"
        )
        arms.append(ArmPlan(KD_ARM, kd_what, genotype, kd, E, seeds, KD_ARM, macs, params, executed))
    for name in ablations:
        if name == "mask":
            what = (
                "the proposer's mask on the very init it scored (seed k)"
                if own
                else ("the proposer's mask on a fresh init (seed k)")
            )
            arms.append(ArmPlan(name, what, genotype, scratch_e, E, seeds, "scratch-e", macs, params, dense_macs))
        elif name == "shuffle":
            what = "the mask shuffled within each layer: the density genotype as the space builds it (seed k)"
            arms.append(ArmPlan(name, what, genotype, scratch_e, E, seeds, name, macs, params, dense_macs))
        elif name == "reinit":
            what = f"{'seed k' if own else 'the proposer'}'s mask on another init (seed k + {REINIT_OFFSET})"
            arms.append(ArmPlan(name, what, genotype, scratch_e, E, seeds, name, macs, params, dense_macs))
        elif name == "invert":
            inv_macs, inv_params = cost_of(inverted)
            what = "the proposer with invert=True (keeps the lowest scores), its mask on a fresh init (seed k)"
            arms.append(ArmPlan(name, what, inverted, scratch_e, E, seeds, name, inv_macs, inv_params, dense_macs))
    ref_tag, mask_tag = source_tags(config, E)
    tags = {"finetune": mask_tag if density else ref_tag}
    if density:
        tags.update({name: mask_tag for name in ("scratch-e", "scratch-b", "mask", "reinit", "invert")})
    if config.teacher is not None:  # Scratch-E's starting weights, and the teacher
        tags[KD_ARM] = fingerprint({"init": tags.get("scratch-e", ""), "teacher": teacher_source(config, E)}, length=6)
    arms = [dataclasses.replace(a, tag=tags.get(a.name, "")) for a in arms]
    data = (config.data or DataConfig(dataset=config.dataset)).identity()
    owners = {a.name: a for a in arms}

    def identity(arm: ArmPlan) -> str:
        owner = owners.get(arm.runs_of, arm)
        if owner.recipe is None or owner.genotype is None:
            return ""
        parts: list[Any] = [owner.recipe.to_dict(), owner.genotype.key, owner.tag, data]
        if config.protocol != "prunenas":  # init and shortcut of the space change with the preset
            parts.append(config.protocol)
        return fingerprint(*parts)

    arms = [dataclasses.replace(a, identity=identity(a)) for a in arms]
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
        protocol=config.protocol_settings(),
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
    config = with_protocol(config)
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
        study = Path("runs") / "rethink" / f"{config.space.slug}-<genotype key>-{config.dataset}"
    return make_plan(
        config, num_classes=num_classes, train_images=train_images, genotype=genotype, inverted=inv_genotype,
        study_dir=study,
    )  # fmt: skip
