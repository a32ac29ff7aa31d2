"""The configuration of a Rethinking study: the names of its arms and ablations, `RethinkConfig` with its
protocol preset (`with_protocol`), what its proposer implies for the arms (`finetune_source`,
`scores_each_seed`) and the epochs of its budget (`resolve_epochs`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunenas.config import DataConfig, RunSettings
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.proposers.base import Proposer, Target, get_proposer
from prunenas.protocols import apply_protocol, code_model, get_protocol, resolved_settings
from prunenas.recipes import make_recipe
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
_KNOWN_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "shapes-seg": 4, "shapes-det": 4}


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

        if self.scratch_b_cap is not None:
            return self.scratch_b_cap
        if get_protocol(self.protocol).uncapped_scratch_b:
            return None
        return self.space.scratch_b_cap

    def protocol_settings(self) -> dict[str, Any]:
        """The protocol's name and the settings its runs use (recorded in every run's metrics)."""
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
