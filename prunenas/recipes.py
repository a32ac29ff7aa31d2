"""Training recipes: the hyperparameters of a from-scratch (or fine-tune) run, as one frozen object.

Named recipes (CIFAR, GUIDE section 4):
  standard   the space's TOML [recipe] (Rethinking: SGD 0.9, lr 0.1, wd 1e-4, 160 epochs, x0.1 at 50%/75%)
  scratch-e  the standard recipe on the pruned architecture, fresh init
  scratch-b  the same compute as the reference model: epochs = int(E * MACs_ref / MACs_pruned)
  finetune   40 epochs at a constant lr of 0.001, starting from given weights
  proxy      a short run (10 epochs unless set) with the whole lr schedule compressed into it
Every field can be overridden (`--epochs`, `--lr`, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prunenas.errors import PrunenasError

RECIPES = ("standard", "scratch-e", "scratch-b", "finetune", "proxy")
PROXY_EPOCHS = 10


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training run. The lr schedule is evaluated per step, so a 2-epoch
    proxy decays at 50% and 75% of its steps just as a 160-epoch run decays at epochs 80 and 120."""

    name: str = "standard"
    epochs: int = 160
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: Literal["step", "constant", "cosine"] = "step"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the run
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    bn_l1: float = 0.0  # network slimming: L1 penalty on BatchNorm scales (1e-4 VGG, 1e-5 ResNet)
    needs_weights: bool = False  # finetune: starts from given weights instead of a fresh init
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if not self.lr > 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            problems.append("weight_decay must be >= 0 and momentum in [0, 1)")
        if self.schedule not in ("step", "constant", "cosine"):
            problems.append(f"schedule must be step, constant or cosine (got {self.schedule!r})")
        if self.bn_l1 < 0:
            problems.append(f"bn_l1 must be >= 0 (got {self.bn_l1})")
        if any(not 0 < m < 1 for m in self.milestones):
            problems.append(f"milestones are fractions of the run in (0, 1) (got {list(self.milestones)})")
        if problems:
            raise PrunenasError(f"recipe {self.name!r}: " + "; ".join(problems))
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        object.__setattr__(self, "extra", dict(self.extra))

    def lr_at(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
        t = step / max(1, total_steps)
        if self.schedule == "constant":
            lr = self.lr
        elif self.schedule == "cosine":
            import math

            lr = 0.5 * self.lr * (1 + math.cos(math.pi * t))
        else:
            lr = self.lr * self.gamma ** sum(t >= m for m in self.milestones)
        warm = self.warmup_epochs * steps_per_epoch
        if warm > 0 and step < warm:
            lr *= (step + 1) / warm
        return lr

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_FIELDS = {f.name for f in dataclasses.fields(Recipe)}


_INTS = ("epochs", "batch_size")
_FLOATS = ("lr", "momentum", "weight_decay", "gamma", "warmup_epochs", "label_smoothing", "bn_l1")
_BOOLS = ("nesterov", "augment", "needs_weights")


def _typed(name: str, key: str, value: Any) -> Any:
    """A recipe value checked and converted to its field's type (TOML and --set give loose types)."""

    def bad(what: str) -> PrunenasError:
        return PrunenasError(f"recipe {name!r}: {key} must be {what}, got {value!r}")

    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "milestones":
        if not isinstance(value, list | tuple) or any(
            isinstance(m, bool) or not isinstance(m, int | float) for m in value
        ):
            raise bad("a list of fractions like [0.5, 0.75]")
        return tuple(float(m) for m in value)
    if key == "extra":
        if not isinstance(value, Mapping):
            raise bad("a table")
        return dict(value)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def recipe_from_mapping(name: str, values: Mapping[str, Any]) -> Recipe:
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise PrunenasError(f"recipe {name!r}: unknown setting(s) {unknown}; valid: {', '.join(sorted(_FIELDS))}")
    kwargs = {k: _typed(name, k, v) for k, v in values.items() if k != "name"}
    return Recipe(name=name, **kwargs)


def make_recipe(
    name: str,
    space_recipe: Mapping[str, Any] | None = None,
    *,
    macs: int | None = None,
    reference_macs: int | None = None,
    scratch_b_cap: float | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Recipe:
    """A named recipe from the space's [recipe] defaults, with `overrides` (None values ignored) on top.

    scratch-b needs `macs` and `reference_macs`; its epochs are int(E * reference_macs / macs),
    capped at `scratch_b_cap` x E when given (the ImageNet convention caps at 2x).
    """
    if name not in RECIPES:
        raise PrunenasError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    base = recipe_from_mapping("standard", space_recipe or {})
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    if name == "finetune":
        base = base.replace(epochs=40, lr=0.001, schedule="constant", needs_weights=True)
    elif name == "proxy":
        base = base.replace(epochs=PROXY_EPOCHS)
    elif name == "scratch-b":
        if not macs or not reference_macs:
            raise PrunenasError("recipe 'scratch-b' needs the genotype's and the reference's MACs")
        factor = reference_macs / macs
        if scratch_b_cap is not None:
            factor = min(factor, scratch_b_cap)
        epochs = over.pop("epochs", base.epochs)  # --epochs sets E, the budget of the full model
        base = base.replace(epochs=max(1, int(epochs * factor)), extra={"scratch_b_factor": factor})
    return dataclasses.replace(recipe_from_mapping(name, {**base.to_dict(), **over}), name=name)
