"""The `prunenas fidelity` settings as a config dataclass, and the evaluators it compares (`--evaluators`).

Light: no torch at import (the command line builds its flags from this module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prunenas.config import Config, ConfigError, parse_int, parse_value, setting

#: The option that sets the proxy length of an evaluator that trains with the context's recipe (scratch).
EPOCHS = "epochs"


@dataclass(frozen=True)
class FidelitySettings(Config):
    """How a fidelity study is sized: the candidates (how many, at which MACs levels, from which proposers),
    the truth they are ranked by (from-scratch training, epochs and seeds) and the evaluators it judges.

    The settings that decide the candidates name the default study folder (`identity`); the evaluators, the
    truth's length and its seeds do not, so a rerun with another evaluator, more seeds or longer truth runs
    goes on in the same folder and reuses every run it already has (each run and score is stored under an
    identity of its own)."""

    cli_group: ClassVar[str] = "fidelity"

    evaluators: tuple[str, ...] = setting(
        ("scratch",), "evaluators to judge, comma-separated, each NAME or NAME:OPTION=VALUE[,OPTION=VALUE...] "
        "(see `prunenas evaluators`; `epochs` sets the proxy length of scratch), e.g. "
        "scratch:epochs=2,inherit-bn,inherit-bn:finetune_epochs=1", identity=False, metavar="SPEC",
    )  # fmt: skip
    genotypes: int = setting(16, "candidate genotypes, spread over --levels", low=4, high=100_000, metavar="N")
    levels: tuple[float, ...] = setting(
        (0.3, 0.5, 0.7), "MACs ratios (of the reference) the candidates are drawn at, each in (0, 1]", low=0.0,
        low_open=True, high=1.0, metavar="R,R",
    )  # fmt: skip
    truth_epochs: int = setting(
        40, "epochs of each truth run: the candidate trained from scratch with the proxy recipe's schedule",
        low=1, metavar="E", identity=False,
    )  # fmt: skip
    seeds: int = setting(
        2, "truth runs per candidate, seeds --seed, --seed+1, ...; the truth is their mean, and the agreement of "
        "one seed with another is the ceiling (needs 2)", low=1, high=1000, metavar="S", identity=False,
    )  # fmt: skip
    proposers: tuple[str, ...] = setting(
        (), "proposers whose genotypes join the random samples at each level (default: those that seed a search "
        "and need neither trained weights without a reference nor training of their own)", metavar="P,P",
    )  # fmt: skip
    reference: str | None = setting(
        None, "trained reference (a `prunenas pretrain` checkpoint.pt) for evaluators and proposers that score "
        "trained weights", metavar="CKPT",
    )  # fmt: skip
    pretrain_epochs: int | None = setting(
        None, "train that reference here first, this many epochs with the proxy recipe (instead of --reference)",
        low=1, metavar="N",
    )  # fmt: skip
    bootstrap: int = setting(
        1000, "bootstrap resamples of the candidates for the 90% intervals", low=10, high=1_000_000, metavar="B",
        identity=False,
    )  # fmt: skip
    out: str | None = setting(
        None, "study folder (default runs/fidelity/SPACE-DATASET-HASH); a rerun continues it", metavar="DIR",
        identity=False,
    )  # fmt: skip

    def check(self) -> None:
        if self.reference is not None and self.pretrain_epochs is not None:
            raise ConfigError(
                f"--reference and --pretrain-epochs {self.pretrain_epochs} both give the trained reference; pass one"
            )
        if len(set(self.levels)) != len(self.levels):
            raise ConfigError(f"--levels lists a level twice: {','.join(f'{v:g}' for v in self.levels)}")
        if len(set(self.proposers)) != len(self.proposers):
            raise ConfigError(f"--proposers lists a proposer twice: {','.join(self.proposers)}")
        evaluator_specs(self.evaluators)  # the text is well formed; names and options are checked with the registry


@dataclass(frozen=True)
class EvaluatorSpec:
    """One entry of --evaluators: an evaluator's name and the options given to it, in the order given."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How tables, files and plots name it: `name` or `name:opt=value,...` (options in the order given)."""
        if not self.options:
            return self.name
        return f"{self.name}:" + ",".join(f"{k}={_text(v)}" for k, v in self.options.items())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def evaluator_specs(items: Sequence[str]) -> list[EvaluatorSpec]:
    """--evaluators pieces (split at commas) as specs: `NAME`, `NAME:OPT=VALUE`, and a further `OPT=VALUE`
    adds an option to the evaluator before it. Option names take - or _. Refuses malformed text and an
    evaluator listed twice with the same options, in one line naming --evaluators."""
    specs: list[tuple[str, dict[str, Any]]] = []
    for raw in items:
        piece = raw.strip()
        name, colon, rest = piece.partition(":")
        if colon:
            name = name.strip()
            if not name:
                raise ConfigError(f"--evaluators {piece!r}: give the evaluator's name before ':'")
            specs.append((name, {}))
            if not rest.strip():
                raise ConfigError(f"--evaluators {piece!r}: give OPTION=VALUE after ':' (or drop the ':')")
            piece = rest
        elif "=" not in piece:
            if not piece:
                raise ConfigError("--evaluators lists an empty name")
            specs.append((piece, {}))
            continue
        key, eq, value = piece.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key or not value.strip():
            raise ConfigError(
                f"--evaluators {raw.strip()!r}: options look like NAME:OPTION=VALUE (e.g. scratch:epochs=2)"
            )
        if not specs:
            raise ConfigError(
                f"--evaluators {raw.strip()!r}: an option needs the evaluator's name first (NAME:{piece})"
            )
        options = specs[-1][1]
        if key in options:
            raise ConfigError(f"--evaluators {specs[-1][0]}: option {key} given twice")
        options[key] = parse_value(value.strip())
    out = [EvaluatorSpec(name, options) for name, options in specs]
    labels = [s.label for s in out]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ConfigError(f"--evaluators lists {', '.join(twice)} twice")
    return out


def scratch_epochs(spec: EvaluatorSpec, options_class: type[Config] | None, trains: bool) -> int | None:
    """The `epochs` option of an evaluator that trains with the context's recipe and has no `epochs` of its
    own (scratch): the proxy run's length; None when not given. Refused for an evaluator that trains nothing."""
    if EPOCHS not in spec.options or (options_class is not None and EPOCHS in options_class.setting_names()):
        return None
    if not trains:
        valid = ", ".join(options_class.setting_names()) if options_class is not None else "none"
        raise ConfigError(
            f"--evaluators {spec.name}: option epochs sets the length of a proxy run, and {spec.name} trains none; "
            f"its options: {valid}"
        )
    epochs = parse_int(spec.options[EPOCHS], f"--evaluators {spec.name}:epochs", "an integer >= 1")
    if epochs < 1:
        raise ConfigError(f"--evaluators {spec.name}:epochs must be an integer >= 1, got {epochs}")
    return epochs
