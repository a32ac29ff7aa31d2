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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunenas.config import RunSettings, fingerprint
from prunenas.data import DatasetSplits, DeviceBatches, ImageSet, StreamBatches, make_batches
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.masks import apply_masks, masked_layers
from prunenas.paths import ensure_dir
from prunenas.recipes import KD_FIELDS, Recipe
from prunenas.spaces.base import Space

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
CURVE = "curve.png"


class StopTraining(Exception):
    """Raised by a callback to end a run early; the reason is recorded in the result."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_acc: float
    lr: float
    seconds: float
    images_per_s: float
    val_loss: float | None = None
    val_acc: float | None = None
    test_acc: float | None = None  # only with RunSettings.test_every_epoch (the papers' test-selected protocol)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced. `val_acc`/`test_acc` are of the final model (test: evaluated once).

    `best_test_acc`/`best_test_epoch` exist only when the test set was evaluated after every epoch
    (`RunSettings.test_every_epoch`): the best epoch chosen BY TEST accuracy, as the Rethinking code reports
    it, an optimistic number kept beside the honest final one."""

    genotype_key: str
    recipe: str
    epochs: int  # epochs planned
    epochs_run: int
    val_acc: float | None
    best_val_acc: float | None
    best_epoch: int | None
    test_acc: float | None
    wall_time_s: float
    images_per_s: float
    seed: int
    stopped: str | None  # None when the run finished; else why it stopped
    history: tuple[EpochMetrics, ...] = field(default_factory=tuple)
    resumed_from: int = 0  # epochs already done in the checkpoint this run resumed from
    best_test_acc: float | None = None  # test-selected (see above)
    best_test_epoch: int | None = None

    @property
    def finished(self) -> bool:
        return self.stopped is None and self.epochs_run >= self.epochs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [h.to_dict() for h in self.history]
        d["finished"] = self.finished
        return d


Callback = Callable[[EpochMetrics], None]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PrunenasError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrunenasError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise PrunenasError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def resolve_precision(device: torch.device, settings: RunSettings, model: nn.Module | None = None) -> dict[str, Any]:
    """How a run computes, recorded in metrics.json ("precision"): bf16 autocast or fp32, the memory format
    and, on a CPU, the threads and the CPU. CUDA: bf16 and channels_last unless switched off. CPU: as
    `prunenas.hardware.cpu_mode` decides for `model`'s layers (bf16 only where the CPU has AMX-BF16 and the
    convolutions are dense; --amp without bf16 instructions is refused; --no-amp and the papers' protocols
    are fp32 in the layout they always had), and --threads or this process's share of the cores."""
    if device.type == "cuda":
        amp = settings.amp is not False
        why = "bf16 autocast on CUDA" if amp else "fp32 (--no-amp or the protocol)"
        channels_last = True if settings.channels_last is None else settings.channels_last
        return {"amp": amp, "dtype": "bfloat16" if amp else "float32", "why": why, "channels_last": channels_last}
    from prunenas import hardware

    grouped = model is not None and any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    amp, channels_last, why = hardware.cpu_mode(settings.amp, grouped=grouped)
    if settings.channels_last is not None:
        channels_last = settings.channels_last
    threads = settings.threads or hardware.share_cores()
    return {
        "amp": amp, "dtype": "bfloat16" if amp else "float32", "why": why, "channels_last": channels_last,
        "threads": threads, "threads_from": "--threads" if settings.threads else "share of the cores",
        "cpu": hardware.cpu_info().to_dict(),
    }  # fmt: skip


def weights_sha(state: Mapping[str, torch.Tensor]) -> str:
    """16 hex digits of a state dict's names and values (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Teacher:
    """A trained model a run distills from: kept in eval mode, never updated. `checkpoint` is the file it
    was loaded from (None: a model given in memory), `given_as` how it was named ("reference" for
    `--teacher reference`, "checkpoint" for a path, "model" for a module), `weights_sha` the hash of its
    weights that the run identity holds."""

    model: nn.Module
    weights_sha: str
    checkpoint: str | None = None
    given_as: str = "model"

    @classmethod
    def of(cls, model: nn.Module, checkpoint: str | None = None, given_as: str = "model") -> Teacher:
        return cls(model, weights_sha(model.state_dict()), checkpoint, given_as)

    def record(self, recipe: Recipe) -> dict[str, Any]:
        """What metrics.json says of the teacher ("teacher")."""
        return {
            "checkpoint": self.checkpoint, "given_as": self.given_as, "weights_sha": self.weights_sha,
            "temperature": recipe.kd_temperature, "weight": recipe.kd_weight,
        }  # fmt: skip


def load_teacher(
    space: Space, path: str | Path, num_classes: int | None, *, flag: str = "--teacher", given_as: str = "checkpoint"
) -> Teacher:
    """The teacher in `path` (a checkpoint.pt of `space`'s reference genotype, or its run folder), with one
    line naming `flag` for a missing, damaged or foreign file, a model of another space or input size
    (the checks `--reference` gets) or of another number of classes than `num_classes` (None: not known
    yet, e.g. a dry run; checked again when the data is loaded)."""
    p, content = read_checkpoint(path, flag)
    saved = content if isinstance(content, dict) else {}
    if "genotype" in saved:
        genotype = Genotype.from_dict(saved["genotype"], origin=str(p))
        if genotype.space != space.name or genotype != space.reference():
            raise PrunenasError(
                f"{flag} {str(p)!r} holds a model of {genotype.space!r} genotype {genotype.key}, not the reference "
                f"of {space.name!r}; pass a checkpoint from `prunenas pretrain --space {space.name}`"
            )
    classes = saved.get("num_classes")
    if num_classes is not None and isinstance(classes, int) and classes != num_classes:
        raise PrunenasError(
            f"{flag} {str(p)!r} was trained on {classes} classes but the data has {num_classes}; pass a teacher "
            "trained on this dataset"
        )
    state = load_model_state(p, flag)
    n = num_classes or (classes if isinstance(classes, int) else space.num_classes)
    with torch.random.fork_rng(devices=[]):  # building draws an init: the caller's RNG stream stays as it was
        model = space.build(space.reference(), num_classes=n)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PrunenasError(
            f"{flag} {str(p)!r} does not fit the reference of {space.name!r} with {n} classes: {load_error(exc)}; "
            "pass a checkpoint of this space's reference trained on the same dataset"
        ) from None
    return Teacher.of(model.eval(), str(p), given_as)


def as_teacher(teacher: Teacher | nn.Module | str | Path | None, space: Space, num_classes: int) -> Teacher | None:
    """`train`'s teacher argument as a `Teacher`: a checkpoint path is loaded (`load_teacher`)."""
    if teacher is None or isinstance(teacher, Teacher):
        return teacher
    if isinstance(teacher, nn.Module):
        return Teacher.of(teacher)
    return load_teacher(space, teacher, num_classes)


def run_identity(
    genotype: Genotype,
    recipe: Recipe,
    seed: int,
    data: DatasetSplits,
    init_state: Mapping[str, torch.Tensor] | None = None,
    *,
    keep_last_batch: bool = False,
    teacher: Teacher | None = None,
) -> dict[str, Any]:
    """What makes two runs the same run: the genotype, every recipe field, the seed, the data, whether an
    epoch's last partial batch trains, for runs that start from given weights a hash of those weights
    and, for runs that distill, a hash of the teacher's weights with the distillation settings (which
    act only then, so a run without a teacher leaves them out). Stored in checkpoints (compared on
    resume) and hashed by `run_id` into default run folder names and the search's run cache, so a
    change of any result-changing setting gets a new folder."""
    key: dict[str, Any] = {
        "genotype": genotype.key,
        "recipe": {k: v for k, v in recipe.to_dict().items() if k not in KD_FIELDS},
        "seed": seed,
        "dataset": data.name,
        "train_size": len(data.train),
        "val_size": len(data.val),
    }
    if data.normalize != "train":  # fixed constants instead of the training split's statistics
        key["normalize"] = data.normalize
    if keep_last_batch:  # only when set, so the names of runs that drop it stay as they were
        key["last_batch"] = "kept"
    if init_state is not None:
        key["init"] = weights_sha(init_state)
    if teacher is not None:
        key["teacher"] = {
            "weights": teacher.weights_sha,
            "temperature": recipe.kd_temperature,
            "weight": recipe.kd_weight,
        }
    return key


#: The name used by earlier versions (checkpoints store this dict under "run_key").
run_key = run_identity


def run_id(identity: Mapping[str, Any]) -> str:
    """8 hex digits naming a run: the hash of its `run_identity` (pinned by a regression test)."""
    return fingerprint(dict(identity))


def run_folder_name(space: Space, genotype: Genotype, recipe: Recipe, identity: Mapping[str, Any]) -> str:
    """Default run folder name: readable parts, then the identity hash that tells runs apart."""
    return f"{space.slug}-{genotype.key}-{recipe.name}-s{identity['seed']}-{run_id(identity)}"


@torch.no_grad()
def evaluate(model: nn.Module, batches: DeviceBatches | StreamBatches, amp: bool) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` over one pass of `batches`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for x, y in batches.epoch(0):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        count += y.numel()
    model.train(was_training)
    if count == 0:
        return math.nan, math.nan
    return float(loss_sum) / count, float(correct) / count


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise PrunenasError(
            f"the run's checkpoint {str(path)!r} is unreadable ({type(exc).__name__}): delete it to start the run "
            "over (`prunenas train` also takes --fresh)"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise PrunenasError(
            f"{str(path)!r} is not a prunenas checkpoint: delete it to start the run over (`prunenas train` also "
            "takes --fresh)"
        )
    return state


def read_checkpoint(path: str | Path, flag: str = "--weights") -> tuple[Path, Any]:
    """(file, content) of a checkpoint given by `flag` (a checkpoint.pt or its run folder), with one line
    naming the flag for a missing, truncated, foreign or non-checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.exists():
        raise PrunenasError(f"{flag} {str(p)!r} does not exist; pass the checkpoint.pt of a prunenas run")
    try:
        with p.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise PrunenasError(f"{flag} {str(p)!r} cannot be read ({exc.strerror})") from None
    if head.lstrip()[:1] in (b"{", b"["):
        raise PrunenasError(f"{flag} {str(p)!r} is a JSON file, not a checkpoint; pass the checkpoint.pt of a run")
    try:
        return p, torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        kind = "truncated or damaged" if isinstance(exc, EOFError | RuntimeError) else "not a PyTorch checkpoint"
        raise PrunenasError(
            f"{flag} {str(p)!r} is {kind} ({type(exc).__name__}); pass an intact checkpoint.pt (retrain the run "
            "if it was cut off while being written)"
        ) from None


def load_model_state(path: str | Path, flag: str = "--weights") -> dict[str, torch.Tensor]:
    """Model weights from a prunenas checkpoint.pt (or a bare state_dict file)."""
    p, state = read_checkpoint(path, flag)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PrunenasError(f"{flag} {str(p)!r} holds no model weights; pass the checkpoint.pt of a prunenas run")
    return state


def load_error(exc: BaseException) -> str:
    """The informative line of a `load_state_dict` error (not its "Error(s) in loading ..." heading)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Error(s) in loading state_dict")]
    text = (useful or lines or [type(exc).__name__])[0]
    return text if len(text) <= 240 else text[:237] + "..."


def _make_progress(total: int, quiet: bool, desc: str, initial: int = 0) -> Any:
    """A tqdm bar of training steps on a terminal; one line per epoch in a log (prunenas.progress)."""
    from prunenas.progress import make_progress

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
    ) -> None:
        self.model = model
        self.recipe = recipe
        self.amp = amp
        self.teacher = teacher.eval() if teacher is not None else None  # eval: BN running stats, no dropout
        self.device = next(model.parameters()).device
        forward = model
        if parallel:  # a data-parallel run (torchrun): gradients averaged over the ranks in backward
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(model, device_ids=ids)
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
        self.seen = 0

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.forward(x)
            if self.teacher is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=self.recipe.label_smoothing)
            else:
                with torch.no_grad():
                    teacher_logits = self.teacher(x)
                loss = distillation_loss(
                    logits, teacher_logits, y, temperature=self.recipe.kd_temperature, weight=self.recipe.kd_weight,
                    label_smoothing=self.recipe.label_smoothing,
                )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.bn_l1 > 0:  # subgradient of bn_l1 * sum |gamma| (network slimming)
            for gamma in self.bn_scales:
                if gamma.grad is not None:
                    gamma.grad.add_(torch.sign(gamma.detach()), alpha=self.recipe.bn_l1)
        self.optimizer.step()
        if self.masked:
            apply_masks(self.model)
        self.loss_sum += loss.detach() * y.numel()
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += y.numel()


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
    from prunenas import distributed

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
        images_per_s=step.seen / seconds if seconds > 0 else 0.0,
    )


def _data_batches(
    data: DatasetSplits, recipe: Recipe, device: torch.device, seed: int, channels_last: bool,
    shard: tuple[int, int] = (0, 1), keep_last_batch: bool = False,
) -> Any:  # fmt: skip
    """The shuffled, augmented training batches and a factory of evaluation batches: whole splits on the
    device, or streamed from the disk cache (`prunenas.data.make_batches`); crops of the model's input size
    when the images are stored larger. `shard` = (rank, world) of a data-parallel run. An epoch drops its
    last, partial batch unless `keep_last_batch` (the papers' DataLoaders keep it: 782 steps of 64 on 50,000
    images, where dropping it gives 781)."""
    out_size = data.image_shape[1]
    train_batches = make_batches(
        data.train, batch_size=recipe.batch_size, device=device, mean=data.mean, std=data.std,
        augment=recipe.augment, shuffle=True, drop_last=not keep_last_batch and len(data.train) > recipe.batch_size,
        seed=seed,
        channels_last=channels_last, dtype=torch.float32, flip=data.flip, out_size=out_size, crop=recipe.crop,
        shard=shard,
    )  # fmt: skip

    def eval_batches(split: ImageSet) -> Any:
        return make_batches(
            split, batch_size=max(256, recipe.batch_size), device=device, mean=data.mean, std=data.std,
            augment=False, shuffle=False, drop_last=False, channels_last=channels_last, dtype=torch.float32,
            out_size=out_size,
        )  # fmt: skip

    return train_batches, eval_batches


def _progress_postfix(m: EpochMetrics) -> dict[str, str]:
    post = {"epoch": f"{m.epoch}/{m.epochs}", "loss": f"{m.train_loss:.3f}", "acc": f"{m.train_acc:.3f}"}
    if m.val_acc is not None:
        post["val"] = f"{m.val_acc:.3f}"
    post["img/s"] = f"{m.images_per_s:.0f}"
    return post


def _make_out(out_dir: str | Path | None) -> Path | None:
    return None if out_dir is None else ensure_dir(out_dir, "--out")


def _resume(
    ckpt_path: Path | None, settings: RunSettings, key: Mapping[str, Any], step: TrainStep
) -> tuple[list[EpochMetrics], int, float, str | None]:
    """(history, epochs done, seconds spent, why it stopped) of the run folder's checkpoint, with the model,
    optimizer and RNG states restored from it; a fresh start when there is none (or resuming is off)."""
    if ckpt_path is None or not settings.resume or not ckpt_path.exists():
        return [], 0, 0.0, None
    state = _load_checkpoint(ckpt_path)
    if state.get("run_key") != key:
        raise PrunenasError(
            f"{str(ckpt_path.parent)!r} holds a different run (other genotype, recipe, seed, data or teacher); "
            "pass another --out or --fresh to overwrite it"
        )
    step.model.load_state_dict(state["model"])
    step.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"])
    if step.device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"], step.device)
    history = [EpochMetrics(**h) for h in state["history"]]
    return history, int(state["epoch"]), float(state.get("wall_time_s", 0.0)), state.get("stopped")


def _place_teacher(teacher: nn.Module, device: torch.device, channels_last: bool, data: DatasetSplits) -> None:
    """The teacher on the run's device and memory format, in eval mode, checked to output one logit per
    class of `data` (a model given in memory has not been checked against the data)."""
    teacher.to(device).eval()
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = teacher(torch.zeros(1, *data.image_shape, device=device))
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise PrunenasError(
            f"the teacher outputs {tuple(out.shape[1:])} per image but the data has {data.num_classes} classes; pass "
            "a teacher trained on this dataset"
        )


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
    from prunenas import distributed

    settings = settings or RunSettings()
    genotype = space.validate(genotype)
    if recipe.needs_weights and init_state is None:
        raise PrunenasError(f"recipe {recipe.name!r} starts from trained weights; pass them (--weights CKPT)")
    if len(data.train) == 0:
        raise PrunenasError("the training set is empty; use a larger --train-subset")
    world = distributed.world()
    device = distributed.join(world, settings.device) if world.parallel else resolve_device(settings.device)
    cuda = device.type == "cuda"
    # -- model, exactly as a fresh run builds it (first: how it computes depends on its layers) ----------
    torch.manual_seed(settings.seed)
    model = space.build(genotype, num_classes=data.num_classes)
    if init_state is not None:
        try:
            model.load_state_dict(init_state, strict=True)
        except RuntimeError as exc:
            raise PrunenasError(f"the given weights do not fit genotype {genotype.key}: {load_error(exc)}") from None
    precision = resolve_precision(device, settings, model)
    amp, channels_last = precision["amp"], precision["channels_last"]
    if device.type == "cpu":
        torch.set_num_threads(precision["threads"])
    if cuda:
        torch.backends.cudnn.benchmark = True
    kd = as_teacher(teacher, space, data.num_classes)  # a bad teacher fails before the run folder is touched
    out = _make_out(out_dir) if world.main else (Path(out_dir) if out_dir is not None else None)
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
        _place_teacher(kd.model, device, channels_last, data)
    step = TrainStep(
        model, recipe, amp=amp, compile=settings.compile, parallel=world.parallel,
        teacher=kd.model if kd is not None else None,
    )  # fmt: skip
    train_batches, eval_batches = _data_batches(
        data, recipe, device, settings.seed, channels_last, shard=(world.rank, world.size),
        keep_last_batch=settings.keep_last_batch,
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
    history, start_epoch, elapsed_before, was_stopped = _resume(ckpt_path, settings, key, step)
    if was_stopped:  # a run stopped on purpose (diverged, pruned by the search) stays stopped
        return finish(history, was_stopped, elapsed_before, start_epoch)

    run_start = time.perf_counter()

    def save_checkpoint(epoch_done: int, stopped: str | None) -> None:
        if ckpt_path is None or not settings.checkpoint or not world.main:
            return
        _atomic_save(
            {
                "run_key": key, "epoch": epoch_done, "model": model.state_dict(),
                "optimizer": step.optimizer.state_dict(), "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if cuda else None,
                "history": [h.to_dict() for h in history], "stopped": stopped,
                "wall_time_s": elapsed_before + time.perf_counter() - run_start,
                "genotype": genotype.to_dict(), "space": space.name, "space_source": space.source,
                "num_classes": data.num_classes,
            },
            ckpt_path,
        )  # fmt: skip

    stopped: str | None = None
    desc = f"{space.name} {genotype.key[:8]} {recipe.name}"
    from prunenas.progress import epoch_line

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
                val_loss, val_acc = evaluate(model, val_batches, amp)
                metrics = dataclasses.replace(metrics, val_loss=val_loss, val_acc=val_acc)
            if test_batches is not None and math.isfinite(metrics.train_loss):
                metrics = dataclasses.replace(metrics, test_acc=evaluate(model, test_batches, amp=False)[1])
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
        _, test_acc = evaluate(model, eval_batches(data.test), amp=False)
    vals = [(h.val_acc, h.epoch) for h in history if h.val_acc is not None]
    best = max(vals) if vals else (None, None)
    tests = [(h.test_acc, h.epoch) for h in history if h.test_acc is not None]
    best_test = max(tests) if tests else (None, None)
    timed = [h for h in history if h.seconds > 0]
    ips = sum(h.images_per_s * h.seconds for h in timed) / sum(h.seconds for h in timed) if timed else 0.0
    result = TrainResult(
        genotype_key=genotype.key,
        recipe=recipe.name,
        epochs=recipe.epochs,
        epochs_run=len(history),
        val_acc=history[-1].val_acc if history else None,
        best_val_acc=best[0],
        best_epoch=best[1],
        test_acc=test_acc,
        wall_time_s=wall,
        images_per_s=ips,
        seed=settings.seed,
        stopped=stopped,
        history=tuple(history),
        resumed_from=resumed_from,
        best_test_acc=best_test[0],
        best_test_epoch=best_test[1],
    )
    if out is not None:
        write_metrics(out, result, space, genotype, data, recipe, settings, extra)
        if settings.plot and history:
            from prunenas.report import plot_training_curve

            plot_training_curve(history, out / CURVE, title=f"{space.name} {genotype.key} ({recipe.name})")
    return result


def write_metrics(
    out: Path,
    result: TrainResult,
    space: Space,
    genotype: Genotype,
    data: DatasetSplits,
    recipe: Recipe,
    settings: RunSettings,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    payload = {
        **result.to_dict(),
        "space": space.name,
        "space_source": space.source,
        "genotype": genotype.to_dict(),
        "recipe_settings": recipe.to_dict(),
        "run_settings": settings.to_dict(),
        "dataset": data.describe(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        **(extra or {}),
    }
    path = out / METRICS
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
