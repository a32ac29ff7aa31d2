"""What an evaluator is: how a search judges one candidate genotype, returning its validation accuracy.

An evaluator is a plugin (entry-point group `prunenas.evaluators`): one `Evaluator` subclass with a `name`,
the options it takes as a small Config of its own (`options_class`; `prunenas search` gets one flag per
option under the evaluator's name, e.g. `--inherit-bn-images`), and `evaluate`. `prunenas.testing.
EvaluatorContract` checks every registered one.

This module imports no torch at load time: the command line builds the evaluators' flags from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from prunenas.config import Config, ConfigError, RunSettings
from prunenas.plugins import EVALUATORS, named_classes

if TYPE_CHECKING:
    from prunenas.data import DatasetSplits
    from prunenas.genotype import Genotype
    from prunenas.recipes import Recipe
    from prunenas.spaces.base import Space
    from prunenas.train_results import EpochMetrics, TrainResult


@dataclass(frozen=True)
class EvaluationContext:
    """What an evaluator may use: the space, the data (it scores on the validation split, never the test
    split), the proxy recipe and run settings of the search, its seed, the trained reference checkpoint
    (--reference, or the one trained with --pretrain-epochs; None without), a teacher to distill from, the
    folder where the evaluator may keep what it computes once (a trained supernet, a reference), and the
    callbacks that receive per-epoch metrics of an evaluator that trains (a search's pruner)."""

    space: Space
    data: DatasetSplits
    recipe: Recipe
    settings: RunSettings
    seed: int = 0
    reference: Path | None = None
    teacher: Any = None
    work_dir: Path | None = None
    callbacks: Sequence[Callable[[EpochMetrics], None]] = ()
    extra_metrics: Mapping[str, Any] = field(default_factory=dict)
    #: The trainer an evaluator that trains calls (`prunenas.train.train` unless the search gives its own).
    train_fn: Callable[..., TrainResult] | None = None

    @property
    def trainer(self) -> Callable[..., TrainResult]:
        if self.train_fn is not None:
            return self.train_fn
        from prunenas.train import train

        return train


class Evaluator(ABC):
    """Base class of every evaluator. Subclasses set `name` and `description` and implement `evaluate`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: The evaluator's options, a Config subclass (None: it takes none).
    options_class: ClassVar[type[Config] | None] = None
    #: It scores candidates from trained weights: a search needs --reference CKPT or --pretrain-epochs N.
    needs_trained: ClassVar[bool] = False
    #: Its score comes from training the candidate epoch by epoch (a pruner can stop it early).
    trains: ClassVar[bool] = False

    def __init__(self, options: Config | None = None) -> None:
        if options is None and self.options_class is not None:
            options = self.options_class()
        if options is not None and (self.options_class is None or not isinstance(options, self.options_class)):
            raise ConfigError(
                f"evaluator {self.name!r}: options must be a {getattr(self.options_class, '__name__', 'None')}"
            )
        self.options = options

    def serves(self, space: Space) -> str | None:
        """None when this evaluator can judge candidates of `space`, else why not (one line)."""
        return None

    def fixed_genes(self, space: Space) -> dict[str, Any]:
        """Genes this evaluator cannot judge changed, by name -> the value a search keeps them at (a search in
        genes mode samples only the others). Default: none."""
        return {}

    def identity(self) -> dict[str, Any]:
        """What makes its scores of a genotype differ from another evaluator's: part of the run folder's name
        (empty: the name of a from-scratch proxy run, as before evaluators existed)."""
        return {"evaluator": self.name, **(self.options.identity() if self.options is not None else {})}

    def prepare(self, ctx: EvaluationContext) -> None:
        """Work done once before the first candidate (load or train a reference, a supernet). Default: none."""
        return None

    def output_folders(self, work_dir: Path | None) -> list[tuple[Path, str]]:
        """The folders this evaluator writes besides the candidates' own (study folder `work_dir`), each with the
        flag that chooses it: a search creates them, or refuses in one line, before its study exists. Default:
        none."""
        return []

    @abstractmethod
    def evaluate(self, genotype: Genotype, ctx: EvaluationContext, out: Path) -> TrainResult:
        """Judge `genotype`; `out` is its own folder. The result's `val_acc` is the score a search ranks by;
        `wall_time_s` what it cost."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "needs_trained": self.needs_trained,
            "options": self.options.to_dict() if self.options is not None else {},
        }


# -- registry -------------------------------------------------------------------------------------------------
@cache
def _registry() -> dict[str, type[Evaluator]]:
    return named_classes(EVALUATORS, Evaluator, "evaluator")  # type: ignore[type-abstract]


def evaluator_names() -> list[str]:
    return sorted(_registry())


def evaluator_class(name: str, flag: str = "--evaluator") -> type[Evaluator]:
    cls = _registry().get(name)
    if cls is None:
        raise ConfigError(f"{flag}: unknown evaluator {name!r}; valid evaluators: {', '.join(evaluator_names())}")
    return cls


def get_evaluator(name: str, options: Config | Mapping[str, Any] | None = None) -> Evaluator:
    """The evaluator `name` with `options` (its options Config, or a table of them)."""
    cls = evaluator_class(name)
    if isinstance(options, Mapping):
        if cls.options_class is None:
            if options:
                raise ConfigError(f"evaluator {name!r} takes no options, got {sorted(options)}")
            options = None
        else:
            options = cls.options_class.from_dict(options, where=f"evaluator {name}")
    assert options is None or isinstance(options, Config)
    return cls(options)


def evaluator_options() -> dict[str, type[Config]]:
    """The options class of every registered evaluator that takes options, by name."""
    return {name: cls.options_class for name, cls in _registry().items() if cls.options_class is not None}


def clear_cache() -> None:
    _registry.cache_clear()
