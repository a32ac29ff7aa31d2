"""From-scratch training of a genotype: the engine every search candidate goes through.

Design (GUIDE section 6): the whole dataset lives on the training device as uint8 and is augmented
per batch there (`prunenas.data.DeviceBatches`), or, for data too large for that, is streamed there in
chunks from the memory-mapped disk cache (`prunenas.data.StreamBatches`); losses and accuracies are
summed on the device and read once per epoch, so there is no host synchronisation per step. On CUDA: channels_last, bf16
autocast and cudnn.benchmark (each switchable); on a CPU with AMX-BF16, bf16 autocast with channels_last, and
threads shared among the training processes of the machine (`resolve_precision`, `prunenas.hardware`).
Every epoch ends with a checkpoint; a run resumes
from it to the same result as an uninterrupted run because the batch order and augmentation of
epoch e depend only on (seed, e) and the RNG states are checkpointed.

Per-epoch callbacks receive an `EpochMetrics`; one may raise `StopTraining(reason)` to end the run
early (recorded), anything else it raises propagates. This module never imports optuna.

A run may distill from a teacher (`Teacher`, `train(..., teacher=...)`): the student still starts from a
fresh init and learns from the loss of Hinton, Vinyals and Dean (2015), `distillation_loss`.

This module holds the training loop; its parts live beside it and their names are importable from here
too: the device and precision of a run in `prunenas.devices`, checkpoint.pt in `prunenas.checkpoints`,
the teacher in `prunenas.teacher`, the run's identity, folder and files (metrics.json, curve.png) in
`prunenas.run_files`, and the result types in `prunenas.train_results`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunenas import distributed
from prunenas.checkpoints import (
    CHECKPOINT,
    load_error,
    load_model_state,
    read_checkpoint,
    resume,
    weights_sha,
    write_checkpoint,
)
from prunenas.config import RunSettings
from prunenas.data import DatasetSplits, DeviceBatches, ImageSet, StreamBatches
from prunenas.devices import apply_precision, data_parallel, resolve_device, resolve_precision
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.masks import apply_masks, masked_layers
from prunenas.progress import epoch_line, make_progress
from prunenas.recipes import Recipe
from prunenas.run_files import (
    CURVE,
    METRICS,
    make_out,
    plot_curve,
    run_folder_name,
    run_id,
    run_identity,
    run_key,
    write_metrics,
)
from prunenas.spaces.base import Space
from prunenas.tasks import CLASSIFICATION, Batches, Task, get_task, paired_task
from prunenas.teacher import Teacher, as_teacher, load_teacher, place_teacher
from prunenas.train_results import Callback, EpochMetrics, StopTraining, TrainResult, summarize

# The loop's names and, re-exported, those of its parts that code importing this module has always found here.
# fmt: off
__all__ = [
    "CHECKPOINT", "CURVE", "METRICS", "Callback", "EpochMetrics", "RunSettings", "StopTraining", "Teacher",
    "TrainResult", "TrainStep", "as_teacher", "distillation_loss", "evaluate", "load_error", "load_model_state",
    "load_teacher", "read_checkpoint", "resolve_device", "resolve_precision", "run_folder_name", "run_id",
    "run_identity", "run_key", "train", "train_epoch", "weights_sha", "write_metrics",
]
# fmt: on


def evaluate(
    model: nn.Module,
    batches: DeviceBatches | StreamBatches | Batches,
    amp: bool,
    task: Task | None = None,
    num_classes: int = 0,
) -> tuple[float, float]:
    """(mean loss, score) of `model` over one pass of `batches`: the task's (default classification: the
    accuracy); the loss is nan where the task's eval mode gives none (detection)."""
    loss, score = (task or get_task(CLASSIFICATION)).evaluate(model, batches, amp, num_classes)
    return (math.nan if loss is None else loss), score


def _make_progress(total: int, quiet: bool, desc: str, initial: int = 0) -> Any:
    """A tqdm bar of training steps on a terminal; one line per epoch in a log (prunenas.progress)."""

    return make_progress(total, desc, unit="step", initial=initial, quiet=quiet)


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    weight: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural
    Network"): w * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - w) * CE(s, y), each term the mean
    over the batch, from student logits `s`, teacher logits `t` and labels `y`. The soft term's gradients
    shrink as 1 / T^2, so the T^2 keeps the two terms on comparable scales whatever T. Computed in fp32
    (logits of a bf16 autocast are upcast); with w = 0 it is exactly the cross-entropy."""
    s, t = student.float(), teacher.float()
    hard = F.cross_entropy(s, targets, label_smoothing=label_smoothing)
    soft = F.kl_div(
        F.log_softmax(s / temperature, dim=1), F.log_softmax(t / temperature, dim=1), reduction="batchmean",
        log_target=True,
    )  # fmt: skip
    return weight * temperature**2 * soft + (1.0 - weight) * hard


class TrainStep:
    """One optimizer step of the trainer: forward (bf16 autocast when `amp`), cross-entropy (with a
    `teacher`: `distillation_loss` from the teacher's logits of the same batch, computed under the same
    autocast without gradients), backward, the network-slimming BN penalty, SGD, re-applied masks.
    Losses and accuracies are summed on the device (`loss_sum`, `correct`, `seen`) and read once per
    epoch, so a step never syncs the host. `benchmarks/train_throughput.py` times this same object."""

    def __init__(
        self,
        model: nn.Module,
        recipe: Recipe,
        *,
        amp: bool,
        compile: bool = False,
        parallel: bool = False,
        teacher: nn.Module | None = None,
        task: Task | None = None,
    ) -> None:
        self.model = model
        self.recipe = recipe
        self.task = task or get_task(CLASSIFICATION)
        self.amp = amp
        self.teacher = teacher.eval() if teacher is not None else None  # eval: BN running stats, no dropout
        self.device = next(model.parameters()).device
        # a data-parallel run (torchrun): gradients averaged over the ranks in backward
        forward = data_parallel(model, self.device) if parallel else model
        self.forward: nn.Module = torch.compile(forward) if compile else forward  # type: ignore[assignment]
        self.masked = any(True for _ in masked_layers(model))
        self.bn_scales = [
            m.weight for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
        ]
        # The Rethinking recipe decays every parameter (BN included).
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov and recipe.momentum > 0,
        )
        self.reset_counts()

    def reset_counts(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.seen = 0  # what the training statistic counts (images; scored pixels for segmentation)
        self.images = 0

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.teacher is None:
                loss, hits, count = self.task.loss(self.forward, x, y, self.recipe.label_smoothing)
            else:
                logits = self.forward(x)
                with torch.no_grad():
                    teacher_logits = self.teacher(x)
                loss = distillation_loss(
                    logits, teacher_logits, y, temperature=self.recipe.kd_temperature, weight=self.recipe.kd_weight,
                    label_smoothing=self.recipe.label_smoothing,
                )  # fmt: skip
                hits, count = (logits.detach().argmax(1) == y).sum(), y.numel()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.bn_l1 > 0:  # subgradient of bn_l1 * sum |gamma| (network slimming)
            for gamma in self.bn_scales:
                if gamma.grad is not None:
                    gamma.grad.add_(torch.sign(gamma.detach()), alpha=self.recipe.bn_l1)
        self.optimizer.step()
        if self.masked:
            apply_masks(self.model)
        self.loss_sum += loss.detach() * count
        self.correct += hits
        self.seen += count
        self.images += x.shape[0]


def train_epoch(
    step: TrainStep, batches: DeviceBatches | StreamBatches, epoch: int, progress: Any = None
) -> EpochMetrics:
    """One epoch of `step` over `batches`, the lr set per step from the recipe's schedule."""
    recipe = step.recipe
    steps_per_epoch = len(batches)
    total_steps = steps_per_epoch * recipe.epochs
    step.model.train()
    step.reset_counts()
    t0 = time.perf_counter()
    lr = recipe.lr
    for i, (x, y) in enumerate(batches.epoch(epoch)):
        lr = recipe.lr_at(epoch * steps_per_epoch + i, total_steps, steps_per_epoch)
        step.set_lr(lr)
        step(x, y)
        if progress is not None:
            progress.update(1)
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)
    seconds = time.perf_counter() - t0

    if distributed.world().parallel:  # the epoch's loss and accuracy over every rank's images
        seen_t = torch.tensor(float(step.seen), device=step.device)
        distributed.all_sum(step.loss_sum, step.correct, seen_t)
        step.seen = int(seen_t.item())
    seen = max(1, step.seen)
    return EpochMetrics(
        epoch=epoch + 1,
        epochs=recipe.epochs,
        train_loss=float(step.loss_sum) / seen,
        train_acc=float(step.correct) / seen,
        lr=lr,
        seconds=seconds,
        images_per_s=step.images / seconds if seconds > 0 else 0.0,
    )


def _data_batches(
    data: DatasetSplits, recipe: Recipe, device: torch.device, seed: int, channels_last: bool,
    shard: tuple[int, int] = (0, 1), keep_last_batch: bool = False, task: Task | None = None,
) -> Any:  # fmt: skip
    """The shuffled, augmented training batches and a factory of evaluation batches: whole splits on the
    device, or streamed from the disk cache (`prunenas.data.make_batches`); crops of the model's input size
    when the images are stored larger. `shard` = (rank, world) of a data-parallel run. An epoch drops its
    last, partial batch unless `keep_last_batch` (the papers' DataLoaders keep it: 782 steps of 64 on 50,000
    images, where dropping it gives 781)."""
    out_size = data.image_shape[1]
    task = task or get_task(data.task)
    train_batches = task.batches(
        data.train, train=True, augment=recipe.augment, batch_size=recipe.batch_size, device=device,
        mean=data.mean, std=data.std, seed=seed, channels_last=channels_last, flip=data.flip, out_size=out_size,
        crop=recipe.crop, shard=shard, drop_last=not keep_last_batch and len(data.train) > recipe.batch_size,
    )  # fmt: skip

    def eval_batches(split: ImageSet) -> Any:
        return task.batches(
            split, train=False, augment=False, batch_size=max(task.eval_batch, recipe.batch_size), device=device,
            mean=data.mean, std=data.std, seed=0, channels_last=channels_last, flip=False, drop_last=False,
            out_size=out_size, crop=recipe.crop, shard=(0, 1),
        )  # fmt: skip

    return train_batches, eval_batches


def _progress_postfix(m: EpochMetrics) -> dict[str, str]:
    post = {"epoch": f"{m.epoch}/{m.epochs}", "loss": f"{m.train_loss:.3f}", "acc": f"{m.train_acc:.3f}"}
    if m.val_acc is not None:
        post["val"] = f"{m.val_acc:.3f}"
    post["img/s"] = f"{m.images_per_s:.0f}"
    return post


def train(
    space: Space,
    genotype: Genotype,
    data: DatasetSplits,
    recipe: Recipe,
    settings: RunSettings | None = None,
    *,
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    init_state: Mapping[str, torch.Tensor] | None = None,
    evaluate_test: bool = True,
    extra_metrics: Mapping[str, Any] | None = None,
    teacher: Teacher | nn.Module | str | Path | None = None,
) -> TrainResult:
    """Build `genotype` fresh (or from `init_state`) and train it with `recipe` on `data`.

    With `out_dir`, writes checkpoint.pt every epoch, metrics.json and curve.png at the end, and
    resumes from an existing checkpoint of the same run (same `run_identity`). Launched by torchrun with
    several processes, it trains data-parallel (`prunenas.distributed`): rank 0 writes the folder.
    With a `teacher` (a model, a `Teacher`, or a checkpoint.pt of the space's reference genotype), the run
    distills from it (`distillation_loss`, the recipe's kd_temperature and kd_weight); the teacher is put
    on the run's device in eval mode, is part of the run identity and is recorded in metrics.json.
    """

    settings = settings or RunSettings()
    genotype = space.validate(genotype)
    if recipe.needs_weights and init_state is None:
        raise PrunenasError(f"recipe {recipe.name!r} starts from trained weights; pass them (--weights CKPT)")
    if len(data.train) == 0:
        raise PrunenasError("the training set is empty; use a larger --train-subset")
    world = distributed.world()
    device = distributed.join(world, settings.device) if world.parallel else resolve_device(settings.device)
    # -- model, exactly as a fresh run builds it (first: how it computes depends on its layers) ----------
    task = paired_task(space, data)
    torch.manual_seed(settings.seed)
    model = space.build(genotype, num_classes=data.num_classes)
    if init_state is not None:
        try:
            model.load_state_dict(init_state, strict=True)
        except RuntimeError as exc:
            raise PrunenasError(f"the given weights do not fit genotype {genotype.key}: {load_error(exc)}") from None
    precision = resolve_precision(device, settings, model)
    if not task.autocast and precision["amp"]:
        precision = {**precision, "amp": False, "dtype": "float32", "why": f"fp32 (the {task.name} task)"}
    amp, channels_last = precision["amp"], precision["channels_last"]
    apply_precision(device, precision)
    if teacher is not None and not task.distills:
        raise PrunenasError(f"--teacher distills class scores; the {task.name} task has none: drop --teacher")
    kd = as_teacher(teacher, space, data.num_classes)  # a bad teacher fails before the run folder is touched
    out = make_out(out_dir) if world.main else (Path(out_dir) if out_dir is not None else None)
    writes = out if world.main else None  # other ranks read the checkpoint, never write
    if not world.main:
        settings = settings.replace(quiet=True, plot=False)
    if writes is not None:
        genotype.save(writes / "genotype.json")  # every run folder says what it trained
    key = run_identity(
        genotype, recipe, settings.seed, data, init_state, keep_last_batch=settings.keep_last_batch, teacher=kd
    )

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if kd is not None:
        place_teacher(kd.model, device, channels_last, data)
    step = TrainStep(
        model, recipe, amp=amp, compile=settings.compile, parallel=world.parallel,
        teacher=kd.model if kd is not None else None, task=task,
    )  # fmt: skip
    train_batches, eval_batches = _data_batches(
        data, recipe, device, settings.seed, channels_last, shard=(world.rank, world.size),
        keep_last_batch=settings.keep_last_batch, task=task,
    )  # fmt: skip
    val_batches = eval_batches(data.val) if len(data.val) else None
    test_batches = eval_batches(data.test) if settings.test_every_epoch and len(data.test) else None

    def finish(history: list[EpochMetrics], stopped: str | None, wall: float, resumed_from: int) -> TrainResult:
        distributed.barrier()
        extra = {
            **(extra_metrics or {}), "precision": precision,
            **({"data_parallel": {"processes": world.size}} if world.parallel else {}),
            **({"teacher": kd.record(recipe)} if kd is not None else {}),
        }  # fmt: skip
        return _finish(
            model, space, genotype, data, recipe, settings, history, stopped, wall, writes,
            evaluate_test=evaluate_test and stopped is None, amp=amp, eval_batches=eval_batches, extra=extra,
            resumed_from=resumed_from,
        )  # fmt: skip

    ckpt_path = out / CHECKPOINT if out is not None else None
    history, start_epoch, elapsed_before, was_stopped = resume(
        ckpt_path, settings, key, step.model, step.optimizer, step.device
    )
    if was_stopped:  # a run stopped on purpose (diverged, pruned by the search) stays stopped
        return finish(history, was_stopped, elapsed_before, start_epoch)

    run_start = time.perf_counter()

    def save_checkpoint(epoch_done: int, stopped: str | None) -> None:
        if ckpt_path is None or not settings.checkpoint or not world.main:
            return
        write_checkpoint(
            ckpt_path, run_key=key, epoch=epoch_done, model=model, optimizer=step.optimizer, device=device,
            history=history, stopped=stopped, elapsed_before=elapsed_before, started=run_start,
            genotype=genotype, space=space, num_classes=data.num_classes,
        )  # fmt: skip

    stopped: str | None = None
    desc = f"{space.name} {genotype.key[:8]} {recipe.name}"

    progress = _make_progress(
        len(train_batches) * recipe.epochs, settings.quiet, desc, initial=start_epoch * len(train_batches)
    )
    if progress is not None and start_epoch:
        done = start_epoch >= recipe.epochs  # a finished run given again: nothing is trained
        resumed = (
            f"already trained ({start_epoch}/{recipe.epochs} epochs), reused"
            if done
            else f"resuming after epoch {start_epoch}/{recipe.epochs}"
        )
        progress.note(f"{desc}: {resumed}")
    try:
        for epoch in range(start_epoch, recipe.epochs):
            metrics = train_epoch(step, train_batches, epoch, progress)
            if not math.isfinite(metrics.train_loss):
                stopped = f"non-finite training loss ({metrics.train_loss}) in epoch {epoch + 1}"
            elif val_batches is not None and (
                (epoch + 1) % (settings.eval_every or 1) == 0 or epoch + 1 == recipe.epochs
            ):
                val_loss, val_acc = evaluate(model, val_batches, amp, task, data.num_classes)
                metrics = dataclasses.replace(metrics, val_loss=val_loss, val_acc=val_acc)
            if test_batches is not None and math.isfinite(metrics.train_loss):
                test_score = evaluate(model, test_batches, False, task, data.num_classes)[1]
                metrics = dataclasses.replace(metrics, test_acc=test_score)
            history.append(metrics)
            if progress is not None:
                progress.report(epoch_line(desc, metrics), _progress_postfix(metrics))
            # Checkpoint before the callbacks: a callback that interrupts (Ctrl-C, a killed trial)
            # leaves this epoch saved; one that stops the run is saved again with its reason.
            save_checkpoint(epoch + 1, stopped)
            if stopped is None:
                try:
                    for cb in callbacks:
                        cb(metrics)
                except StopTraining as exc:
                    stopped = exc.reason
                    save_checkpoint(epoch + 1, stopped)
            if world.parallel:  # rank 0's callbacks decide for the group (a pruned trial stops every rank)
                stopped = distributed.share(stopped)
            if stopped is not None:
                break
    finally:
        if progress is not None:
            progress.close()
    return finish(history, stopped, elapsed_before + time.perf_counter() - run_start, start_epoch)


def _finish(
    model: nn.Module,
    space: Space,
    genotype: Genotype,
    data: DatasetSplits,
    recipe: Recipe,
    settings: RunSettings,
    history: list[EpochMetrics],
    stopped: str | None,
    wall: float,
    out: Path | None,
    *,
    evaluate_test: bool,
    amp: bool,
    eval_batches: Callable[[ImageSet], DeviceBatches | StreamBatches],
    extra: Mapping[str, Any] | None,
    resumed_from: int = 0,
) -> TrainResult:
    test_acc = None
    if evaluate_test and len(data.test):
        # fp32 for the one number that is reported (and that an fp32 ONNX export must match)
        _, test_acc = evaluate(model, eval_batches(data.test), False, get_task(data.task), data.num_classes)
    result = summarize(
        history, genotype_key=genotype.key, recipe=recipe.name, epochs=recipe.epochs, seed=settings.seed,
        test_acc=test_acc, wall_time_s=wall, stopped=stopped, resumed_from=resumed_from,
    )  # fmt: skip
    if out is not None:
        write_metrics(out, result, space, genotype, data, recipe, settings, extra)
        if settings.plot and history:
            plot_curve(out, history, space, genotype, recipe)
    return result
