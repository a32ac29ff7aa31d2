"""The built-in evaluators.

  scratch     a from-scratch proxy run with the search's proxy recipe (--proxy-epochs): what every search
              did before evaluators existed, and the default
  inherit-bn  adaptive BatchNorm (EagleEye, Li et al., ECCV 2020): the candidate's channels are cut from a
              trained reference by an importance criterion (the space's inheritance rule), its BatchNorm
              statistics re-estimated in train mode without gradients over some hundreds of training
              images, and it is scored on the validation split, in seconds; optionally fine-tuned first
  callable    (Python API) a function of the built model and its budget: `search_architectures(...,
              evaluate=fn)`

Torch and the trainer load when a candidate is judged, not when the command line lists the flags.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from prunenas.config import Config, ConfigError, setting
from prunenas.errors import PrunenasError
from prunenas.evaluators.base import EvaluationContext, Evaluator

if TYPE_CHECKING:
    from torch import nn

    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space
    from prunenas.train_results import TrainResult


class Scratch(Evaluator):
    name = "scratch"
    description = "a from-scratch proxy run with the proxy recipe (--proxy-epochs epochs)"
    trains = True

    def identity(self) -> dict[str, Any]:
        return {}  # the run folders of a proxy run keep the names they had before evaluators existed

    def evaluate(self, genotype: Genotype, ctx: EvaluationContext, out: Path) -> TrainResult:
        return ctx.trainer(
            ctx.space, genotype, ctx.data, ctx.recipe, ctx.settings, out_dir=out, callbacks=list(ctx.callbacks),
            evaluate_test=False, extra_metrics=dict(ctx.extra_metrics), teacher=ctx.teacher,
        )  # fmt: skip


@dataclass(frozen=True)
class InheritBNOptions(Config):
    """The options of the inherit-bn evaluator (`prunenas search --inherit-bn-*`)."""

    cli_group: ClassVar[str] = "evaluator inherit-bn (with --evaluator inherit-bn)"

    criterion: str = setting(
        "l1", "the channels a candidate keeps of the trained reference's: l1 (largest filter L1 norm, Li et al.) or "
        "bn_scale (largest |BatchNorm scale|)", choices=("l1", "bn_scale"),
    )  # fmt: skip
    images: int = setting(
        512, "training images over which BatchNorm statistics are re-estimated (EagleEye: a few batches)", low=1,
        metavar="N",
    )  # fmt: skip
    finetune_epochs: int = setting(
        0, "fine-tune each candidate this many epochs (the finetune recipe) before it is scored; 0: none", low=0,
        metavar="E",
    )  # fmt: skip


def recalibrate_batchnorm(model: nn.Module, batches: Any, images: int) -> int:
    """Re-estimate every BatchNorm's running statistics as the plain average over about `images` training
    images (train-mode forward passes, no gradients, no weight change); returns the images used."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches seen
    was_training = model.training
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for x, _ in batches.epoch(0):
                model(x)
                seen += int(x.shape[0])
                if seen >= images:
                    break
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return seen


class InheritBN(Evaluator):
    name = "inherit-bn"
    description = (
        "adaptive BatchNorm: channels cut from a trained reference, BatchNorm statistics re-estimated on training "
        "images, scored on the validation split (seconds per candidate)"
    )
    options_class = InheritBNOptions
    needs_trained = True

    def __init__(self, options: Config | None = None) -> None:
        super().__init__(options)
        self._reference: tuple[str, Any] | None = None

    def serves(self, space: Space) -> str | None:
        if space.pruned_by_masks:
            return (
                f"{space.name} is a density space: its candidates are masks of the dense model, which inherit-bn "
                "does not cut (use --evaluator scratch)"
            )
        return None

    def fixed_genes(self, space: Space) -> dict[str, Any]:
        """The genes channel pruning keeps (the residual widths of shortcut-A ResNets): no reference weights
        can be inherited for other values, so a search keeps them at the reference's."""
        structured = space.structured_genes()
        if not structured:
            return {}
        return {g.name: g.reference for g in space.genes if g.name not in structured}

    def prepare(self, ctx: EvaluationContext) -> None:
        self._reference_model(ctx)  # a missing, foreign or corrupt checkpoint fails before the first candidate

    def _reference_model(self, ctx: EvaluationContext) -> nn.Module:
        if ctx.reference is None:
            raise PrunenasError(
                "--evaluator inherit-bn scores candidates cut from trained weights: pass --reference CKPT (a "
                f"`prunenas pretrain --space {ctx.space.name}` checkpoint) or --pretrain-epochs N"
            )
        key = f"{ctx.space.name}:{ctx.reference}"
        if self._reference is None or self._reference[0] != key:
            import torch

            from prunenas.proposers.runner import make_context

            with torch.random.fork_rng(devices=[]):
                made = make_context(
                    ctx.space, data=ctx.data, reference=ctx.reference, seed=ctx.seed, device=ctx.settings.device
                )
            self._reference = (key, made.model.eval())
        return self._reference[1]

    def evaluate(self, genotype: Genotype, ctx: EvaluationContext, out: Path) -> TrainResult:
        import torch

        from prunenas.devices import resolve_device
        from prunenas.recipes import make_recipe
        from prunenas.train import _data_batches, evaluate
        from prunenas.train_results import TrainResult

        options: InheritBNOptions = self.options  # type: ignore[assignment]
        start = time.perf_counter()
        reference = self._reference_model(ctx)
        state = ctx.space.initial_state(reference, genotype, criterion=options.criterion)
        if options.finetune_epochs:
            recipe = make_recipe("finetune", ctx.space.recipe, overrides={"epochs": options.finetune_epochs})
            return ctx.trainer(
                ctx.space, genotype, ctx.data, recipe, ctx.settings, out_dir=out, init_state=state,
                callbacks=list(ctx.callbacks), evaluate_test=False, extra_metrics=dict(ctx.extra_metrics),
            )  # fmt: skip
        device = resolve_device(ctx.settings.device)
        torch.manual_seed(ctx.seed)
        model = ctx.space.build(genotype, num_classes=ctx.data.num_classes)
        model.load_state_dict(state)
        model.to(device)
        recipe = ctx.recipe.replace(augment=False)  # statistics of the images as they are, not of crops
        train_batches, eval_batches = _data_batches(ctx.data, recipe, device, ctx.seed, channels_last=False)
        recalibrate_batchnorm(model, train_batches, options.images)
        _, acc = evaluate(model, eval_batches(ctx.data.val), amp=False)
        seconds = time.perf_counter() - start
        return TrainResult(
            genotype_key=genotype.key, recipe=self.name, epochs=0, epochs_run=0, val_acc=acc, best_val_acc=acc,
            best_epoch=None, test_acc=None, wall_time_s=seconds, images_per_s=0.0, seed=ctx.seed, stopped=None,
        )  # fmt: skip


@dataclass(frozen=True)
class Budget:
    """What a `callable` evaluator's function is given beside the model: the search's proxy length, the data
    (train and validation splits; never the test split), the device, the seed and the candidate's genotype."""

    epochs: int
    data: Any
    device: Any
    seed: int
    genotype: Any


def function_label(fn: Any) -> str:
    """A function as a study names it: module.qualified_name."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


@dataclass(frozen=True)
class CallableOptions(Config):
    """What a study records of the function that judges its candidates (set by the Python API)."""

    cli_group: ClassVar[str] = "evaluator callable (Python API only)"

    function: str = setting("", "module.name of the function (search_architectures(evaluate=fn))", cli=False)


class CallableEvaluator(Evaluator):
    """A user's function `fn(model, budget) -> {"val_acc": ..., other metrics}` judges each candidate: their
    own training loop or task around prunenas's spaces, search, cost and export (Python API only: worker
    processes cannot receive a function)."""

    name = "callable"
    description = "a Python function of the candidate's model and budget (search_architectures(evaluate=fn))"
    options_class = CallableOptions

    def __init__(
        self, options: Config | None = None, *, fn: Callable[[Any, Budget], Mapping[str, Any]] | None = None
    ) -> None:
        if fn is not None and not callable(fn):
            raise ConfigError(f"evaluate must be a function of (model, budget), got {type(fn).__name__}")
        if fn is not None and options is None:
            options = CallableOptions(function=function_label(fn))
        super().__init__(options)
        self.fn = fn

    def serves(self, space: Space) -> str | None:
        if self.fn is None:
            return "the callable evaluator is a Python function: pn.search_architectures(..., evaluate=fn)"
        return None

    def evaluate(self, genotype: Genotype, ctx: EvaluationContext, out: Path) -> TrainResult:
        import math

        import torch

        from prunenas.devices import resolve_device
        from prunenas.train_results import TrainResult

        if self.fn is None:
            raise ConfigError("--evaluator callable is for the Python API: search_architectures(..., evaluate=fn)")
        device = resolve_device(ctx.settings.device)
        torch.manual_seed(ctx.seed)
        model = ctx.space.build(genotype, num_classes=ctx.data.num_classes).to(device)
        start = time.perf_counter()
        budget = Budget(epochs=ctx.recipe.epochs, data=ctx.data, device=device, seed=ctx.seed, genotype=genotype)
        try:
            metrics = self.fn(model, budget)
        except Exception as exc:
            raise PrunenasError(f"evaluate function raised {type(exc).__name__}: {exc}") from exc
        acc = metrics.get("val_acc") if isinstance(metrics, Mapping) else None
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not math.isfinite(acc):
            raise PrunenasError(
                f"evaluate function returned {metrics!r}; it must return a dict with a finite 'val_acc' (the score "
                "the search ranks by)"
            )
        return TrainResult(
            genotype_key=genotype.key, recipe=self.name, epochs=budget.epochs, epochs_run=0, val_acc=float(acc),
            best_val_acc=float(acc), best_epoch=None, test_acc=None, wall_time_s=time.perf_counter() - start,
            images_per_s=0.0, seed=ctx.seed, stopped=None,
        )  # fmt: skip
