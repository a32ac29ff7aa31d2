"""Training a supernet once (the sandwich rule with in-place distillation) and scoring its sub-networks.

One optimizer step (Yu & Huang 2019, "Universally Slimmable Networks"; BigNAS 2020): the widest sub-network
learns from the labels; the narrowest and `random_widths` random ones learn from the widest's detached soft
outputs (KL divergence at T = 1); the gradients of the passes add up, then SGD steps once with the recipe's
lr schedule, momentum and weight decay. The random widths of step i of epoch e are drawn from (seed, e, i)
and the batches of epoch e depend on (seed, e) only, so a run resumed from its checkpoint (written
atomically after every epoch with the optimizer and RNG states) ends with the weights an uninterrupted run
ends with.

A sub-network is scored as adaptive BatchNorm does (`prunenas.evaluators.builtin.recalibrate_batchnorm`): the
shared running statistics fit no width, so they are re-estimated over training images for the candidate's
masks, the validation accuracy is read, and the trained statistics are put back.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunenas.checkpoints import atomic_save, load_own_checkpoint
from prunenas.config import RunSettings
from prunenas.data import DatasetSplits
from prunenas.devices import apply_precision, resolve_device, resolve_precision
from prunenas.errors import PrunenasError
from prunenas.evaluators.builtin import recalibrate_batchnorm
from prunenas.evaluators.supernet_masks import (
    ChannelMasks,
    random_widths,
    smallest_genotype,
    widest_genotype,
    widths_of,
)
from prunenas.genotype import Genotype
from prunenas.paths import ensure_dir, folder_lock
from prunenas.recipes import Recipe
from prunenas.run_files import run_id, run_identity
from prunenas.spaces.base import Space
from prunenas.train import _data_batches, evaluate

#: The checkpoint of a supernet's folder.
SUPERNET_CHECKPOINT = "supernet.pt"
#: What a supernet checkpoint says it is.
FORMAT = "prunenas-supernet/1"


def supernet_identity(
    space: Space, data: DatasetSplits, recipe: Recipe, seed: int, random_widths: int
) -> dict[str, Any]:
    """What makes two supernets the same: the space, its widest genotype, the recipe, seed and data
    (`prunenas.run_files.run_identity`) and the number of random widths per step. (How many images re-estimate
    BatchNorm changes a score, not the trained supernet.)"""
    return {
        "supernet": FORMAT, "space": space.name, "random_widths": random_widths,
        **run_identity(widest_genotype(space), recipe, seed, data),
    }  # fmt: skip


def supernet_folder(root: Path, space: Space, identity: Mapping[str, Any]) -> Path:
    """The folder of the supernet of `identity` under `root`: SPACE-RUNID."""
    return Path(root) / f"{space.slug}-{run_id(dict(identity))}"


def _read(path: Path, space: Space, identity: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint at `path`, refused in one line when it is damaged or belongs to another supernet."""
    state = load_own_checkpoint(
        path, kind="supernet", format=FORMAT, unreadable_fix="delete it to train the supernet again",
        foreign_fix="delete it, or pass another --out for the supernet",
    )  # fmt: skip
    if state.get("space") != space.name:
        raise PrunenasError(
            f"{str(path)!r} holds the supernet of space {state.get('space')!r}, not {space.name!r}: pass another --out "
            "or delete it"
        )
    if state.get("identity") != dict(identity):
        raise PrunenasError(
            f"{str(path)!r} holds a supernet of {space.name!r} trained otherwise (another recipe, data, seed or "
            "--supernet-random-widths): pass another --out, or delete it (--fresh) to train this one"
        )
    return state


class TrainedSupernet:
    """A trained supernet of a space ready to score sub-networks: the widest model with its channel masks, on
    the device, with the batches that re-estimate BatchNorm and the validation batches."""

    def __init__(
        self,
        space: Space,
        model: nn.Module,
        masks: ChannelMasks,
        data: DatasetSplits,
        recipe: Recipe,
        seed: int,
        folder: Path,
        history: list[dict[str, float]],
        trained_now: int,
    ) -> None:
        self.space, self.model, self.masks, self.folder = space, model.eval(), masks, folder
        self.history, self.trained_now = history, trained_now
        self.device = next(model.parameters()).device
        calibration = recipe.replace(augment=False)  # statistics of the images as they are, not of crops
        self.train_batches, eval_batches = _data_batches(data, calibration, self.device, seed, channels_last=False)
        self.val_batches = eval_batches(data.val)
        self._norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def score(self, genotype: Genotype, images: int) -> float:
        """Validation accuracy of `genotype`'s sub-network, BatchNorm statistics re-estimated over `images`
        training images; the supernet is left as it was."""
        widths = widths_of(self.space, genotype)
        saved = [
            (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())  # type: ignore[union-attr]
            for m in self._norms
        ]
        try:
            self.masks.apply(widths)
            recalibrate_batchnorm(self.model, self.train_batches, images)
            _, acc = evaluate(self.model, self.val_batches, amp=False)
        finally:
            self.masks.apply(None)
            with torch.no_grad():
                for m, (mean, var, tracked) in zip(self._norms, saved, strict=True):
                    m.running_mean.copy_(mean)  # type: ignore[union-attr]
                    m.running_var.copy_(var)  # type: ignore[union-attr]
                    m.num_batches_tracked.copy_(tracked)  # type: ignore[union-attr]
        return acc


def train_supernet(
    space: Space,
    data: DatasetSplits,
    recipe: Recipe,
    settings: RunSettings,
    *,
    seed: int,
    random_count: int,
    folder: Path,
    log: Callable[[str], None] | None = None,
    flag: str = "--out",
) -> TrainedSupernet:
    """The supernet of `space` trained with `recipe` (its epochs) in `folder`: read from its checkpoint when
    it is there and complete, resumed when it is part-trained, else trained from scratch. `log` receives a line
    per epoch (default: stderr). `flag` names the option that chose `folder` in the message of a folder
    that cannot be created."""
    if len(data.val) == 0:
        raise PrunenasError("--evaluator supernet scores candidates on the validation split: use --val-size > 0")
    if len(data.train) == 0:
        raise PrunenasError("the training set is empty; use a larger --train-subset")
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    identity = supernet_identity(space, data, recipe, seed, random_count)
    ensure_dir(folder, flag)
    with folder_lock(folder):  # one process at a time trains or reads a supernet folder
        return _train_locked(space, data, recipe, settings, seed, random_count, folder, identity, say)


def _train_locked(
    space: Space,
    data: DatasetSplits,
    recipe: Recipe,
    settings: RunSettings,
    seed: int,
    random_count: int,
    folder: Path,
    identity: dict[str, Any],
    say: Callable[[str], None],
) -> TrainedSupernet:
    device = resolve_device(settings.device)
    torch.manual_seed(seed)
    widest = widest_genotype(space)
    model = space.build(widest, num_classes=data.num_classes)
    masks = ChannelMasks(space, model)  # traced on the CPU, before the model moves
    precision = resolve_precision(device, settings, model)
    amp, channels_last = bool(precision["amp"]), bool(precision["channels_last"])
    apply_precision(device, precision)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    masks.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )  # fmt: skip
    path = folder / SUPERNET_CHECKPOINT
    history: list[dict[str, float]] = []
    start, wall_before = 0, 0.0
    if settings.resume and path.exists():
        state = _read(path, space, identity)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        history, start, wall_before = list(state["history"]), int(state["epoch"]), float(state["wall_time_s"])
    trained_now = max(0, recipe.epochs - start)
    if start and trained_now:
        say(f"supernet {space.name}: resuming after epoch {start}/{recipe.epochs} ({folder})")
    if trained_now:
        train_batches, _ = _data_batches(data, recipe, device, seed, channels_last)
        smallest = widths_of(space, smallest_genotype(space))
        run_start = time.perf_counter()
        for epoch in range(start, recipe.epochs):
            t0 = time.perf_counter()
            loss, distill, lr = _epoch(model, masks, optimizer, recipe, train_batches, epoch, seed, amp, smallest,
                                       random_count, space)  # fmt: skip
            seconds = time.perf_counter() - t0
            if not math.isfinite(loss) or not math.isfinite(distill):
                raise PrunenasError(
                    f"supernet training diverged (loss {loss}) in epoch {epoch + 1}: lower the learning rate (--lr) "
                    f"and delete {str(path)!r} to train again"
                )
            history.append({"epoch": epoch + 1, "loss": loss, "distill": distill, "lr": lr, "seconds": seconds})
            atomic_save(
                {
                    "format": FORMAT, "identity": identity, "space": space.name, "epoch": epoch + 1,
                    "epochs": recipe.epochs, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "history": history, "wall_time_s": wall_before + time.perf_counter() - run_start,
                    "genotype": widest.to_dict(),
                },
                path,
            )  # fmt: skip
            say(
                f"supernet {space.name}: epoch {epoch + 1}/{recipe.epochs}  loss {loss:.4f}  distill {distill:.4f}  "
                f"lr {lr:.4g}  {seconds:.1f}s"
            )
    if channels_last:  # scored in the layout the evaluation batches have
        model.to(memory_format=torch.contiguous_format)
    return TrainedSupernet(space, model, masks, data, recipe, seed, folder, history, trained_now)


def _epoch(
    model: nn.Module,
    masks: ChannelMasks,
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    batches: Any,
    epoch: int,
    seed: int,
    amp: bool,
    smallest: Mapping[str, int],
    random_count: int,
    space: Space,
) -> tuple[float, float, float]:
    """One epoch of sandwich steps; (mean loss of the widest, mean distillation loss of the others, last lr)."""
    device = next(model.parameters()).device
    steps = len(batches)
    total = steps * recipe.epochs
    loss_sum = torch.zeros((), device=device)
    distill_sum = torch.zeros((), device=device)
    seen = 0
    lr = recipe.lr
    model.train()
    for i, (x, y) in enumerate(batches.epoch(epoch)):
        lr = recipe.lr_at(epoch * steps + i, total, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rng = random.Random(f"prunenas-supernet:{seed}:{epoch}:{i}")
        narrower = [smallest, *(random_widths(space, rng) for _ in range(random_count))]
        optimizer.zero_grad(set_to_none=True)
        masks.apply(None)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
        loss.backward()
        target = F.log_softmax(logits.detach().float(), dim=1)  # in-place distillation: the widest teaches
        for widths in narrower:
            masks.apply(widths)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            soft = F.kl_div(F.log_softmax(out.float(), dim=1), target, reduction="batchmean", log_target=True)
            soft.backward()
            distill_sum += soft.detach() * y.numel() / len(narrower)
        masks.apply(None)
        optimizer.step()
        loss_sum += loss.detach() * y.numel()
        seen += y.numel()
    seen = max(1, seen)
    return float(loss_sum) / seen, float(distill_sum) / seen, lr
