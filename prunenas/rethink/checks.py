"""The checks of a Rethinking study's configuration before anything runs: --ablation, the settings and
the budget (`check_config`), distillation and its teacher (`check_teacher`)."""

from __future__ import annotations

from prunenas.config import flag_of
from prunenas.errors import PrunenasError
from prunenas.proposers.base import Proposer, get_proposer
from prunenas.protocols import code_model, get_protocol
from prunenas.recipes import KD_FIELDS, Recipe, make_recipe
from prunenas.rethink.config import _KNOWN_CLASSES, ABLATIONS, RethinkConfig
from prunenas.rethink.settings import BUDGETS
from prunenas.train import load_teacher


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

    unknown = sorted(set(config.kd) - set(KD_FIELDS))
    if unknown:
        raise PrunenasError(f"unknown distillation setting(s) {unknown}; valid: {', '.join(KD_FIELDS)}")
    if config.kd and config.teacher is None:
        flags = " and ".join(flag_of(Recipe.__dataclass_fields__[k]) for k in config.kd)
        raise PrunenasError(f"{flags} set the scratch-e-kd arm's distillation: add --teacher reference (or CKPT)")
    make_recipe("scratch-e", config.space.recipe, overrides=dict(config.kd))
    if config.teacher is not None and config.teacher != "reference":
        load_teacher(config.space, config.teacher, _KNOWN_CLASSES.get(config.dataset.lower()))
