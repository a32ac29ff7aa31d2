"""Classification: one class id per image, cross-entropy, top-1 accuracy (``val_acc``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunenas.data import ImageSet, make_batches
from prunenas.tasks.base import Batches, Task


class Classification(Task):
    """Image classification: outputs (batch, num_classes) logits; the classifier (the last layer called) is
    never a gene; batches are the data layer's own (`prunenas.data.make_batches`: in memory or streamed)."""

    name: ClassVar[str] = "classification"
    metric: ClassVar[str] = "val_acc"
    metric_label: ClassVar[str] = "accuracy"
    datasets: ClassVar[tuple[str, ...]] = ("cifar10", "cifar100", "digits", "imagefolder")
    distills: ClassVar[bool] = True
    recipe_note: ClassVar[str] = "the papers' CIFAR recipes (GUIDE: Li et al., Liu et al. 'Rethinking')"

    def check_output(self, out: Any, num_classes: int, input_shape: Sequence[int]) -> str | None:
        if isinstance(out, torch.Tensor) and out.dim() == 2 and tuple(out.shape) == (1, num_classes):
            return None
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return f"outputs {got}, not [batch, {num_classes}] class scores"

    def batches(
        self, split: ImageSet, *, train: bool, augment: bool, batch_size: int, device: torch.device,
        mean: Sequence[float], std: Sequence[float], seed: int, channels_last: bool, flip: bool, drop_last: bool,
        out_size: int, crop: str, shard: tuple[int, int],
    ) -> Batches:  # fmt: skip
        if train:
            return make_batches(
                split, batch_size=batch_size, device=device, mean=mean, std=std, augment=augment, shuffle=True,
                drop_last=drop_last, seed=seed, channels_last=channels_last, dtype=torch.float32, flip=flip,
                out_size=out_size, crop=crop, shard=shard,
            )  # fmt: skip
        return make_batches(
            split, batch_size=batch_size, device=device, mean=mean, std=std, augment=False, shuffle=False,
            drop_last=False, channels_last=channels_last, dtype=torch.float32, out_size=out_size,
        )  # fmt: skip

    def loss(
        self, forward: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        logits = forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        return loss, (logits.detach().argmax(1) == y).sum(), y.numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Batches, amp: bool, num_classes: int) -> tuple[float | None, float]:
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
