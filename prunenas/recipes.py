"""Training recipes: the hyperparameters of a from-scratch (or fine-tune) run, as one frozen object.

Named recipes (CIFAR, GUIDE section 4):
  standard   the space's TOML [recipe] (Rethinking: SGD 0.9, lr 0.1, wd 1e-4, 160 epochs, x0.1 at 50%/75%)
  scratch-e  the standard recipe on the pruned architecture, fresh init
  scratch-b  the same compute as the reference model: epochs = int(E * MACs_ref / MACs_pruned)
  finetune   40 epochs at a constant lr of 0.001, starting from given weights
  proxy      a short run (10 epochs unless set) with the whole lr schedule compressed into it
Every field can be overridden (`--epochs`, `--lr`, ...). ImageNet-style presets (`PRESETS`: imagenet-step,
imagenet-cosine, imagenet-short) replace the space's [recipe] values under the flags.

Distillation (`kd_temperature`, `kd_weight`) acts only in a run given a teacher (`prunenas.train.train(...,
teacher=...)`, `--teacher`); the student still starts from a fresh init.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from prunenas.config import Config, ConfigError, check_arg, coerce, flag_of, parse_value, setting
from prunenas.errors import PrunenasError

RECIPES = ("standard", "scratch-e", "scratch-b", "finetune", "proxy")
#: ImageNet-style presets: plain values laid over the space's [recipe] (then --flags over them), chosen with
#: `--preset NAME` or `preset = "NAME"` in a space's [recipe]. "scratch_b_cap" caps Scratch-B at 2 x E, as
#: the Rethinking paper did on ImageNet. lr is per 256 images (lr_batch), scaled to the batch size.
PRESETS: dict[str, dict[str, Any]] = {
    # the classic ResNet schedule (He et al. 2016; the Rethinking ImageNet runs): 90 epochs, x0.1 every 30
    "imagenet-step": {
        "epochs": 90, "batch_size": 256, "lr": 0.1, "lr_batch": 256, "momentum": 0.9, "weight_decay": 1e-4,
        "schedule": "step", "milestones": [1 / 3, 2 / 3], "gamma": 0.1, "warmup_epochs": 0.0,
        "label_smoothing": 0.0, "crop": "rrc", "scratch_b_cap": 2.0,
    },
    # cosine decay after a 5-epoch linear warm-up, label smoothing 0.1
    "imagenet-cosine": {
        "epochs": 90, "batch_size": 256, "lr": 0.1, "lr_batch": 256, "momentum": 0.9, "weight_decay": 1e-4,
        "schedule": "cosine", "warmup_epochs": 5.0, "label_smoothing": 0.1, "crop": "rrc", "scratch_b_cap": 2.0,
    },
    # a short run for search proxies (16 epochs, as fast ImageNet schedules use), cosine with 1 warm-up epoch
    "imagenet-short": {
        "epochs": 16, "batch_size": 256, "lr": 0.1, "lr_batch": 256, "momentum": 0.9, "weight_decay": 5e-5,
        "schedule": "cosine", "warmup_epochs": 1.0, "label_smoothing": 0.1, "crop": "rrc", "scratch_b_cap": 2.0,
    },
    # runs of a few epochs on a few thousand images (the smoke budget's): small batches for enough steps, a
    # gentle rate and half an epoch of warm-up. The papers' CIFAR recipe (batch 64, lr 0.1, steps at 50/75%)
    # leaves ResNet-56 at chance after 3 and 8 epochs on the digits; this one reaches 0.96 and 0.97
    # (benchmarks/results/2026-12-06-cpu-smoke-recipe.md).
    "short": {"batch_size": 32, "lr": 0.02, "schedule": "cosine", "warmup_epochs": 0.5},
}  # fmt: skip
SCHEDULES = ("step", "constant", "cosine")
PROXY_EPOCHS = 10
#: The recipe fields of knowledge distillation: they act only in a run with a teacher, so a run without one
#: leaves them out of its identity (`prunenas.train.run_identity`).
KD_FIELDS = ("kd_temperature", "kd_weight")
#: Help of the --teacher flag of `train`, `search` and `rethink` (each adds what it does with it).
TEACHER_HELP = (
    "distill from this teacher (Hinton et al. 2015): a checkpoint.pt of the space's reference genotype trained on "
    "the same dataset; the student still starts from a fresh init"
)


@dataclass(frozen=True)
class Recipe(Config):
    """Hyperparameters of one training run. The lr schedule is evaluated per step, so a 2-epoch
    proxy decays at 50% and 75% of its steps just as a 160-epoch run decays at epochs 80 and 120.

    Every field is also a command-line flag of `train`, `pretrain` and `search` (`--lr 0.05`,
    `--milestones 0.3,0.6`, `--nesterov`), and a `--set KEY=VALUE` key; all of them change the result
    and so the run's identity, the distillation fields (`KD_FIELDS`) only in a run with a teacher."""

    cli_group: ClassVar[str] = "recipe (defaults from the space's TOML [recipe])"

    name: str = setting("standard", "recipe name", choices=RECIPES, cli=False)
    epochs: int = setting(160, "epochs (scratch-b: the full model's budget E)", low=1)
    batch_size: int = setting(64, "images per step", low=1)
    lr: float = setting(0.1, "initial learning rate", low=0.0, low_open=True)
    momentum: float = setting(0.9, "SGD momentum", low=0.0, high=1.0, high_open=True)
    weight_decay: float = setting(1e-4, "L2 weight decay (every parameter, BN included)", low=0.0)
    nesterov: bool = setting(False, "Nesterov momentum")
    schedule: str = setting("step", "lr schedule", choices=SCHEDULES)
    milestones: tuple[float, ...] = setting(
        (0.5, 0.75), "step schedule: lr x gamma at these fractions of the run", low=0.0, high=1.0, low_open=True,
        high_open=True, metavar="F,F",
    )  # fmt: skip
    gamma: float = setting(0.1, "step schedule: lr factor at each milestone", low=0.0, high=1.0, low_open=True)
    warmup_epochs: float = setting(0.0, "linear lr warm-up over this many epochs", low=0.0)
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy", low=0.0, high=1.0, high_open=True)
    augment: bool = setting(True, "random crop (pad 4) + flip of training images")
    crop: str = setting(
        "pad", "training crop: pad (CIFAR: pad 4, random crop, flip) or rrc (ImageNet: random-resized-crop, flip)",
        choices=("pad", "rrc"), omit_default=True,
    )  # fmt: skip
    lr_batch: int | None = setting(
        None, "lr is per this many images: the lr used is lr x batch_size / lr_batch (ImageNet: 0.1 per 256)",
        low=1, omit_default=True, metavar="N",
    )  # fmt: skip
    bn_l1: float = setting(0.0, "network slimming: L1 penalty on BatchNorm scales (1e-4 VGG, 1e-5 ResNet)", low=0.0)
    preset: str | None = setting(
        None, "preset under the flags: imagenet-step (90 epochs, x0.1 every 30), imagenet-cosine (warm-up, cosine, "
        "label smoothing), imagenet-short (16 epochs, for search proxies) or short (batch 32, lr 0.02, cosine after "
        "half an epoch of warm-up: runs of a few epochs; the smoke budget's)",
        choices=tuple(PRESETS), omit_default=True,
    )  # fmt: skip
    # Distillation (Hinton, Vinyals and Dean 2015); omitted from to_dict at their defaults, so the names of runs
    # made before these fields existed stay as they were.
    kd_temperature: float = setting(
        4.0, "distillation: softmax temperature T of teacher and student (only with a teacher; 4 is the CIFAR "
        "practice of the RepDistiller benchmarks)", low=0.0, low_open=True, omit_default=True, metavar="T",
    )  # fmt: skip
    kd_weight: float = setting(
        0.9, "distillation: weight w of the T^2-scaled KL term; 1 - w weighs the cross-entropy (only with a "
        "teacher)", low=0.0, high=1.0, omit_default=True, metavar="W",
    )  # fmt: skip
    needs_weights: bool = setting(False, "starts from given weights (finetune)", cli=False)
    extra: dict[str, Any] = setting(default_factory=dict, help="derived values (scratch-b factor)", cli=False)

    def check(self) -> None:
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(  # the setting may come from a flag, --set or a space's [recipe]: name all three
                f"--warmup-epochs {self.warmup_epochs:g} must be below --epochs {self.epochs} (recipe {self.name!r}); "
                "lower --warmup-epochs (--set warmup_epochs=N, or warmup_epochs in the space's [recipe]) or raise "
                "--epochs"
            )

    @property
    def peak_lr(self) -> float:
        """The lr at the top of the schedule: `lr`, scaled by batch_size / lr_batch when lr_batch is set."""
        return self.lr * (self.batch_size / self.lr_batch if self.lr_batch else 1.0)

    def lr_at(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
        t = step / max(1, total_steps)
        peak = self.peak_lr
        if self.schedule == "constant":
            lr = peak
        elif self.schedule == "cosine":
            lr = 0.5 * peak * (1 + math.cos(math.pi * t))
        else:
            lr = peak * self.gamma ** sum(t >= m for m in self.milestones)
        warm = self.warmup_epochs * steps_per_epoch
        if warm > 0 and step < warm:
            lr *= (step + 1) / warm
        return lr


if TYPE_CHECKING:
    PartialRecipe = Recipe
else:
    #: Changes to a recipe (every field optional, None: not given): what a search changes in every candidate's
    #: recipe (`prunenas search --lr 0.05`, `search_architectures(..., recipe={"lr": 0.05})`).
    PartialRecipe = Recipe.partial()


#: Where a space's TOML [recipe] values enter (named in their errors).
SPACE_RECIPE = "the space's [recipe]"


def recipe_settings() -> tuple[str, ...]:
    """The recipe settings a user may name (`--set KEY=VALUE`, a TOML [recipe], `train_model(**settings)`):
    the one list that every message about recipe settings offers."""
    return Recipe.setting_names()


def recipe_from_mapping(name: str, values: Mapping[str, Any], where: str = SPACE_RECIPE) -> Recipe:
    """A recipe from a user's mapping (a space's TOML [recipe], --set values): keys and values are checked
    where they enter (`where` names them in the error)."""
    Recipe.check_values(values, where)
    return Recipe.from_dict({**values, "name": name})


def check_kd(overrides: Mapping[str, Any], teacher: str | None) -> None:
    """Refuse distillation settings given without a teacher: they would change nothing, silently."""
    given = [flag_of(Recipe.__dataclass_fields__[k]) for k in KD_FIELDS if overrides.get(k) is not None]
    if given and teacher is None:
        raise PrunenasError(
            f"{' and '.join(given)} set distillation, which needs a teacher: add --teacher CKPT (or --teacher "
            "reference), or leave them out"
        )


def parse_assignments(
    items: Sequence[str] | None, flag: str = "--set", example: str = "KEY=VALUE (e.g. --set label_smoothing=0.1)"
) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE parsed as JSON when it can be (numbers, lists, true/false, null)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PrunenasError(f"{flag} {item!r} must look like {example}")
        out[key.strip()] = parse_value(value)
    return out


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
    if not isinstance(name, str) or name not in RECIPES:
        raise PrunenasError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    macs = check_arg("make_recipe()", "macs", macs, "an integer >= 0", numbers.Integral, low=0, optional=True)
    reference_macs = check_arg(
        "make_recipe()", "reference_macs", reference_macs, "an integer >= 0", numbers.Integral, low=0, optional=True
    )
    scratch_b_cap = check_arg(
        "make_recipe()", "scratch_b_cap", scratch_b_cap, "a number > 0", numbers.Real, low=0, low_open=True,
        optional=True,
    )  # fmt: skip
    check_arg("make_recipe()", "overrides", overrides, "a dict of recipe settings", Mapping, optional=True)
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    Recipe.check_names(over, "make_recipe(): overrides")  # their values name their flags when the recipe is made
    check_arg("make_recipe()", "space_recipe", space_recipe, "a dict (a space's [recipe])", Mapping, optional=True)
    values = dict(space_recipe or {})
    Recipe.check_values(values, SPACE_RECIPE)
    preset = over.get("preset", values.get("preset"))
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise PrunenasError(f"unknown --preset {preset!r}; valid: {', '.join(PRESETS)}")
        chosen = dict(PRESETS[preset])
        cap = chosen.pop("scratch_b_cap", None)
        if scratch_b_cap is None:
            scratch_b_cap = cap
        values = {**values, **chosen, "preset": preset}
    base = recipe_from_mapping("standard", values)
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
        # --epochs sets E, the budget of the full model (a flag's text until checked here)
        epochs = coerce(Recipe, Recipe.__dataclass_fields__["epochs"], over.pop("epochs", base.epochs))
        base = base.replace(epochs=max(1, int(epochs * factor)), extra={"scratch_b_factor": factor})
    return Recipe.from_dict({**base.to_dict(), **over, "name": name})
