"""The supernet evaluator: weight sharing, as AutoSlim, BigNAS and Once-for-All rank widths.

One network, the widest model of the space, is trained once per space, data, recipe and seed, and every
candidate is taken out of it: for each structured gene (`Space.structured_genes`) a width w keeps the
leading w output channels of the gene's layer, and channel masks on the layers of its dependency group zero
the others exactly (`prunenas.evaluators.supernet_masks`). Training follows the sandwich rule with in-place
distillation (`prunenas.evaluators.supernet_train`): each step trains the widest widths on the labels, the
narrowest and `--supernet-random-widths` random ones on the widest's soft outputs, and steps once. A
candidate's score is its validation accuracy once its BatchNorm statistics are re-estimated over
`--supernet-images` training images (the shared statistics fit no single width).

Channels are not sorted by importance before training (Once-for-All sorts them when it shrinks a network that
was trained at full width first): trained from scratch with the leading channels as every narrower width,
the supernet puts what the narrow widths need into those channels itself.

Genes no channel mask can narrow (the residual widths of shortcut-A ResNets) stay at the reference
(`fixed_genes`). The supernet lives in `<study>/supernet/SPACE-RUNID` in a search (`runs/supernet/...`
without a study folder; `prunenas supernet` trains one ahead), named by the space, its widest genotype, the
recipe (the proxy recipe with `--supernet-epochs` epochs), data, seed and `--supernet-random-widths`; it
resumes from its checkpoint after every epoch.

Torch loads when a supernet is trained or a candidate judged, not when the command line lists the flags.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from prunenas.config import Config, setting
from prunenas.evaluators.base import EvaluationContext, Evaluator

if TYPE_CHECKING:
    from prunenas.evaluators.supernet_train import TrainedSupernet
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space
    from prunenas.train_results import TrainResult

#: Where a supernet lives when there is no study folder (and `prunenas supernet` puts it by default).
DEFAULT_ROOT = Path("runs") / "supernet"


@dataclass(frozen=True)
class SupernetOptions(Config):
    """The options of the supernet evaluator (`prunenas search --supernet-*`, `prunenas supernet`)."""

    cli_group: ClassVar[str] = "evaluator supernet (with --evaluator supernet)"

    epochs: int = setting(
        10, "epochs the supernet trains, once per space, data and recipe (the proxy recipe's other settings)", low=1,
        metavar="E",
    )  # fmt: skip
    random_widths: int = setting(
        2, "random sub-networks trained at each step beside the widest and the narrowest (the sandwich rule)",
        low=0, high=64, metavar="N",
    )  # fmt: skip
    images: int = setting(
        512, "training images over which a candidate's BatchNorm statistics are re-estimated", low=1, metavar="N"
    )
    dir: str | None = setting(
        None, "the folder supernets are kept in (default: the study's supernet/; `prunenas supernet` keeps them in "
        "runs/supernet): a search given the folder `prunenas supernet` trained into uses that supernet",
        metavar="DIR", identity=False, omit_default=True,
    )  # fmt: skip


class Supernet(Evaluator):
    name = "supernet"
    description = (
        "weight sharing: one supernet trained once (sandwich rule, in-place distillation); a candidate is its "
        "leading channels, BatchNorm re-estimated, scored on the validation split (seconds per candidate)"
    )
    options_class = SupernetOptions

    def __init__(self, options: Config | None = None, *, root: str | Path | None = None) -> None:
        """`root`: the folder the supernet's own folder goes in (default: the study's `supernet/`, else
        runs/supernet)."""
        super().__init__(options)
        self.root = Path(root) if root is not None else None
        self._net: tuple[tuple[str, str], TrainedSupernet] | None = None

    def serves(self, space: Space) -> str | None:
        if space.pruned_by_masks:
            return (
                f"{space.name} is a density space: its candidates are weight masks of the dense model, not widths a "
                "supernet's channels stand for (use --evaluator scratch)"
            )
        structured = space.structured_genes()
        if not structured:
            return (
                f"{space.name} names no channel genes (Space.structured_genes) whose widths a supernet could share "
                "(use --evaluator scratch)"
            )
        floats = [name for name in structured if space.gene(name).kind != "int"]
        if floats:
            return f"genes {floats[:3]} of {space.name} are not channel counts (use --evaluator scratch)"
        return None

    def fixed_genes(self, space: Space) -> dict[str, Any]:
        """The genes no channel mask can narrow (the residual widths of shortcut-A ResNets) stay at the
        reference's value."""
        structured = space.structured_genes()
        if not structured:
            return {}
        return {g.name: g.reference for g in space.genes if g.name not in structured}

    @property
    def settings(self) -> SupernetOptions:
        options = self.options
        assert isinstance(options, SupernetOptions)
        return options

    def folder(self, ctx: EvaluationContext) -> Path:
        """The folder of the supernet `ctx` judges candidates with."""
        from prunenas.evaluators.supernet_train import supernet_folder, supernet_identity

        options = self.settings
        recipe = ctx.recipe.replace(epochs=options.epochs)
        identity = supernet_identity(ctx.space, ctx.data, recipe, ctx.seed, options.random_widths)
        given = self.root or (Path(self.settings.dir) if self.settings.dir else None)
        root = given or (Path(ctx.work_dir) / "supernet" if ctx.work_dir is not None else DEFAULT_ROOT)
        return supernet_folder(root, ctx.space, identity)

    def supernet(self, ctx: EvaluationContext) -> TrainedSupernet:
        """The trained supernet of `ctx` (trained, resumed or read on first use, then kept)."""
        from prunenas.evaluators.supernet_train import train_supernet

        folder = self.folder(ctx)
        key = (str(folder), ctx.settings.device)
        if self._net is None or self._net[0] != key:
            import torch

            options = self.settings
            with torch.random.fork_rng(devices=[]):  # the caller's random state is its own
                net = train_supernet(
                    ctx.space, ctx.data, ctx.recipe.replace(epochs=options.epochs), ctx.settings, seed=ctx.seed,
                    random_count=options.random_widths, folder=folder,
                    flag="--supernet-dir" if self.settings.dir else "--out",
                )  # fmt: skip
            self._net = (key, net)
        return self._net[1]

    def prepare(self, ctx: EvaluationContext) -> None:
        self.supernet(ctx)  # trained (or read) once, before the first candidate

    def output_folders(self, work_dir: Path | None) -> list[tuple[Path, str]]:
        if self.root is not None:
            return [(self.root, "--supernet-dir")]
        if self.settings.dir:
            return [(Path(self.settings.dir), "--supernet-dir")]
        return [(Path(work_dir) / "supernet" if work_dir is not None else DEFAULT_ROOT, "--out")]

    def evaluate(self, genotype: Genotype, ctx: EvaluationContext, out: Path) -> TrainResult:
        from prunenas.train_results import TrainResult

        net = self.supernet(ctx)
        start = time.perf_counter()
        acc = net.score(genotype, self.settings.images)
        seconds = time.perf_counter() - start
        return TrainResult(
            genotype_key=genotype.key, recipe=self.name, epochs=0, epochs_run=0, val_acc=acc, best_val_acc=acc,
            best_epoch=None, test_acc=None, wall_time_s=seconds, images_per_s=0.0, seed=ctx.seed, stopped=None,
        )  # fmt: skip
