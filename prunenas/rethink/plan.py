"""The plan of a Rethinking study: its configuration, checks, epochs and arms (what trains, how long,
with which seeds, in which run folder), without training anything."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunenas.config import DataConfig, RunSettings, fingerprint
from prunenas.cost import genotype_cost
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.proposers.base import Proposer, Target, get_proposer
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.recipes import KD_FIELDS, Recipe, make_recipe
from prunenas.rethink.settings import BUDGETS
from prunenas.spaces.base import Space

SMOKE_EPOCHS = 2  # every arm, so a CPU run on digits takes a minute or two
FAST_FRACTION = 4  # fast = 1/4 of the paper's epochs
ARMS = ("unpruned", "finetune", "scratch-e", "scratch-b")
KD_ARM = "scratch-e-kd"  # Scratch-E distilled from the unpruned model: an arm only with --teacher
ABLATIONS = ("mask", "shuffle", "reinit", "invert")
LABELS = {
    "unpruned": "unpruned",
    "finetune": "fine-tuned",
    "scratch-e": "scratch-E",
    "scratch-b": "scratch-B",
    KD_ARM: "scratch-E+KD",
    "mask": "mask",
    "shuffle": "shuffle",
    "reinit": "reinit",
    "invert": "invert",
}
REINIT_OFFSET = 1_000_003  # reinit's init seed = run seed + this (never the seed the proposer scored)
#: Scratch-B's default cap on density spaces, in multiples of E: a dense device executes a masked model at
#: the dense model's cost, so "the same compute" by sparse MACs (20x at 5% density) is no fair budget; 2x
#: is the cap the Rethinking paper used on ImageNet. --scratch-b-cap overrides it.
DENSITY_SCRATCH_B_CAP = 2.0
# Training images of the CIFAR sets (the default validation split keeps 10% of them apart).
_CIFAR_TRAIN = 50_000
_KNOWN_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}


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
    # the teacher of the scratch-e-kd arm: a checkpoint, or "reference" (`reference`, else the unpruned arm's
    # seed-s model); None: no such arm
    teacher: str | None = None
    kd: Mapping[str, Any] = field(default_factory=dict)  # kd_temperature / kd_weight of that arm's recipe
    seeds: int = 1
    budget: str = "paper"
    epochs: int | None = None  # base E (unpruned, scratch-E, ablations; scratch-B scales it)
    finetune_epochs: int | None = None
    batch_size: int | None = None
    scratch_b_cap: float | None = None
    ablations: tuple[str, ...] = ()
    out: Path | None = None
    settings: RunSettings = field(default_factory=RunSettings)  # its seed is the base seed
    data: DataConfig | None = None  # the images (default: `dataset` as it comes); part of each run's identity
    protocol: str = "prunenas"  # the preset applied to space, data and settings (`prunenas.protocols`)

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(self.settings.seed + i for i in range(self.seeds))

    @property
    def effective_scratch_b_cap(self) -> float | None:
        """--scratch-b-cap, else none where the protocol's code has none (Rethinking's CIFAR code), else the
        density spaces' default cap."""
        from prunenas.protocols import get_protocol

        if self.scratch_b_cap is not None:
            return self.scratch_b_cap
        if get_protocol(self.protocol).uncapped_scratch_b:
            return None
        return self.space.scratch_b_cap

    def protocol_settings(self) -> dict[str, Any]:
        """The protocol's name and the settings its runs use (recorded in every run's metrics)."""
        from prunenas.protocols import code_model, get_protocol, resolved_settings

        data = self.data or DataConfig(dataset=self.dataset)
        cap = self.effective_scratch_b_cap
        protocol = get_protocol(self.protocol)
        code = code_model(self.space, protocol)
        options = protocol.proposer_options.get(self.proposer or "")
        return {
            "protocol": self.protocol,
            **resolved_settings(self.space, data, self.settings),
            "model": None if code is None else (
                ", ".join(f"{k} = {v}" for k, v in code.settings.items()) + f" ({code.why})"
            ),
            "proposer options": None if not options else ", ".join(
                f"{k}={dict(self.proposer_options).get(k, v)}" for k, v in options.items()
            ),
            "scratch-B cap": "none" if cap is None else f"{cap:g} x E",
            "mask scoring (at-init proposers)": None if not self.space.pruned_by_masks else (
                "each seed scores its own init" if scores_each_seed(self) else "one mask, from the base seed's context"
            ),
        }  # fmt: skip


def with_protocol(config: RethinkConfig) -> RethinkConfig:
    """The config with its protocol preset applied to space, data and run settings (settings already
    changed from prunenas's defaults keep their value); the same config again when there is nothing to do."""
    from prunenas.protocols import apply_protocol, get_protocol

    protocol = get_protocol(config.protocol)
    data = config.data or DataConfig(dataset=config.dataset)
    run, plain_data, plain_run = config.settings, DataConfig(dataset=data.dataset), RunSettings()
    given = {f.name for f in dataclasses.fields(data) if getattr(data, f.name) != getattr(plain_data, f.name)}
    given |= {f.name for f in dataclasses.fields(run) if getattr(run, f.name) != getattr(plain_run, f.name)}
    space, data, settings = apply_protocol(protocol, config.space, data, config.settings, given=frozenset(given))
    # the options the paper's code runs the proposer with, under those the user gave
    options = {**protocol.proposer_options.get(config.proposer or "", {}), **dict(config.proposer_options)}
    if (
        space is config.space and data == (config.data or data) and settings == config.settings
        and options == dict(config.proposer_options)
    ):  # fmt: skip
        return config
    return dataclasses.replace(config, space=space, data=data, settings=settings, proposer_options=options)


def _proposer_of(config: RethinkConfig) -> Proposer | None:
    """The study's proposer (None: a genotype file, or options it refuses: `check_config` says why)."""
    if config.proposer is None or config.space.proposer_kind is None:
        return None
    try:
        return get_proposer(config.proposer, config.space.proposer_kind, **dict(config.proposer_options))
    except PrunenasError:
        return None


def finetune_source(config: RethinkConfig) -> Proposer | None:
    """The proposer whose own trained model the fine-tuned arm starts from (network slimming prunes and
    fine-tunes its sparsity-trained model), None when that arm starts from the unpruned reference."""
    proposer = _proposer_of(config)
    return proposer if proposer is not None and proposer.trains_source() else None


def scores_each_seed(config: RethinkConfig) -> bool:
    """Whether every seed's proposer scores that seed's own init (a density space and a proposer that
    scores the init, not trained weights): the mask arm of seed s is then the paper's."""
    proposer = _proposer_of(config)
    if not config.space.pruned_by_masks or proposer is None:
        return False
    return not proposer.needs_trained


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
    check_teacher(config)
    if space.proposer_kind is None:  # no pruned genotype to compare (e.g. stage ratios)
        raise PrunenasError(
            f"space {space.name!r} is a {space.kind} space; rethink compares channel or density genotypes "
            "(e.g. resnet56_channels, resnet20_density)"
        )
    if config.ablations:
        unknown = [a for a in config.ablations if a not in ABLATIONS]
        if unknown:
            raise PrunenasError(f"unknown ablation(s) {unknown}; valid: {', '.join(ABLATIONS)}")
        if not space.pruned_by_masks:
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
        try:
            space.validate(config.genotype)
        except PrunenasError as exc:
            from prunenas.protocols import code_model, get_protocol

            code = code_model(space, get_protocol(config.protocol))
            if code is None:
                raise
            raise PrunenasError(
                f"{exc}; --protocol {config.protocol} builds {space.name!r} as its paper's code does ({code.why}): "
                "pass a genotype of that model (e.g. from --proposer under the same --protocol)"
            ) from None
        return None, None
    assert config.proposer is not None
    if config.target is None:
        raise PrunenasError("give exactly one target: --ratio R, --macs-ratio R or --density D")
    proposer = get_proposer(config.proposer, space.proposer_kind, **dict(config.proposer_options))
    # A proposer that scores trained weights gets the unpruned arm's (or the given) reference.
    proposer.check(space, config.target, trained=True)
    inverted = None
    if "invert" in config.ablations:
        if "invert" not in proposer.options:
            raise PrunenasError(
                f"--ablation invert keeps a proposer's lowest scores, but {proposer.name!r} ranks no scores (it has no "
                "invert option); use magnitude, snip, grasp, graspabs, synflow or random"
            )
        options = {**dict(config.proposer_options), "invert": True}
        inverted = get_proposer(config.proposer, space.proposer_kind, **options)
    return proposer, inverted


def check_teacher(config: RethinkConfig) -> None:
    """Refuse distillation settings without --teacher and out-of-range ones (the recipe's checks); check a
    teacher checkpoint (`prunenas.train.load_teacher`; its classes when the dataset's are known)."""
    from prunenas.config import flag_of

    unknown = sorted(set(config.kd) - set(KD_FIELDS))
    if unknown:
        raise PrunenasError(f"unknown distillation setting(s) {unknown}; valid: {', '.join(KD_FIELDS)}")
    if config.kd and config.teacher is None:
        flags = " and ".join(flag_of(Recipe.__dataclass_fields__[k]) for k in config.kd)
        raise PrunenasError(f"{flags} set the scratch-e-kd arm's distillation: add --teacher reference (or CKPT)")
    make_recipe("scratch-e", config.space.recipe, overrides=dict(config.kd))
    if config.teacher is not None and config.teacher != "reference":
        from prunenas.train import load_teacher

        load_teacher(config.space, config.teacher, _KNOWN_CLASSES.get(config.dataset.lower()))


def teacher_source(config: RethinkConfig, base_epochs: int) -> dict[str, Any] | None:
    """What the scratch-e-kd arm's teacher is, for its runs' tag: the given checkpoint, the given reference,
    or the unpruned arm's runs (each seed's own model); None without --teacher."""
    if config.teacher is None:
        return None
    if config.teacher != "reference":
        return {"checkpoint": str(Path(config.teacher).resolve())}
    if config.reference is not None:
        return {"reference": str(Path(config.reference).resolve())}
    return {"unpruned": {"epochs": base_epochs, "seed": "each run's own"}}


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
    trained_by = finetune_source(config)
    if trained_by is not None:  # the proposer's own trained model (the fine-tuned arm's starting weights)
        reference: dict[str, Any] = {
            "trained by the proposer": {
                "proposer": config.proposer, "options": dict(config.proposer_options),
                "target": config.target.to_dict() if config.target is not None else None,
                "seed": config.settings.seed,
            }
        }  # fmt: skip
    elif config.reference is not None:
        reference = {"checkpoint": str(Path(config.reference).resolve())}
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
        return fingerprint(obj, length=6)

    return tag(reference), tag({"reference": reference, "source": source})


def default_study_dir(config: RethinkConfig, genotype: Genotype | None) -> Path:
    """runs/rethink/<space>-<genotype key>-<dataset>/. When the genotype is only known after the reference is
    trained (a proposer that scores trained weights and no --reference), the proposer and what its decision
    depends on name it instead: <space>-<proposer>-<target>[-<options hash>]-s<base seed>-<dataset>/."""
    if genotype is not None:
        return Path("runs") / "rethink" / f"{config.space.slug}-{genotype.key}-{config.dataset}"
    assert config.proposer is not None and config.target is not None
    name = f"{config.proposer}-{config.target.kind.replace('_', '')}{config.target.value:g}"
    if config.proposer_options:
        name += "-" + fingerprint(dict(config.proposer_options), length=6)
    return Path("runs") / "rethink" / f"{config.space.slug}-{name}-s{config.settings.seed}-{config.dataset}"


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
