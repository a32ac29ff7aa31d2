"""Semantic segmentation: a class id per pixel, per-pixel cross-entropy, mean IoU (``val_miou``).

Models return ``{"out": (N, C, H, W)}`` (torchvision's segmentation models; plus ``"aux"`` when built with an
auxiliary head, weighted 0.5 in the loss as torchvision's reference recipe does). Pixels marked
``IGNORE_INDEX`` are neither trained on nor scored. Mean IoU: per-class intersection over union from the
confusion matrix of the whole split, averaged over the classes that occur in the targets or predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunenas.data import ImageSet
from prunenas.data.splits import IGNORE_INDEX
from prunenas.tasks.base import Batches
from prunenas.tasks.batches import DenseTask

AUX_WEIGHT = 0.5


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts [target, prediction] over the pixels whose target is a class (not ignored)."""
    valid = target != IGNORE_INDEX
    valid &= (target >= 0) & (target < num_classes)
    t, p = target[valid], pred[valid].clamp(0, num_classes - 1)
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)


def mean_iou(matrix: torch.Tensor) -> float:
    """Mean over the classes present (in targets or predictions) of TP / (TP + FP + FN); nan with none."""
    m = matrix.to(torch.float64)
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp
    present = union > 0
    if not bool(present.any()):
        return float("nan")
    return float((tp[present] / union[present]).mean())


def _main(out: Any) -> torch.Tensor:
    return out["out"] if isinstance(out, dict) else out


class Segmentation(DenseTask):
    name: ClassVar[str] = "segmentation"
    metric: ClassVar[str] = "val_miou"
    metric_label: ClassVar[str] = "mean IoU"
    datasets: ClassVar[tuple[str, ...]] = ("shapes-seg", "voc-seg")
    default_input_size: ClassVar[int] = 520  # torchvision's evaluation size of its segmentation weights
    recipe: ClassVar[Mapping[str, Any]] = {
        "lr": 0.2, "batch_size": 32, "schedule": "cosine", "warmup_epochs": 0.5, "weight_decay": 1e-4,
    }  # fmt: skip
    recipe_note: ClassVar[str] = (
        "torchvision's segmentation reference trains with SGD, momentum 0.9, weight decay 1e-4, a decaying lr and "
        "the auxiliary loss at 0.5; from scratch on the shapes set here lr 0.2 with a short warm-up and cosine decay "
        "learned where 0.01 and 0.05 did not (LRASPP at 64 px, 10 epochs: mean IoU 0.28 vs 0.19)"
    )

    def check_output(self, out: Any, num_classes: int, input_shape: Sequence[int]) -> str | None:
        main = _main(out)
        want = (1, num_classes, *input_shape[1:])
        if isinstance(main, torch.Tensor) and tuple(main.shape) == want:
            return None
        got = list(main.shape) if isinstance(main, torch.Tensor) else type(out).__name__
        return f"outputs {got}, not {{'out': {list(want)}}} per-pixel class scores"

    def loss(
        self, forward: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        out = forward(x)
        main = _main(out).float()
        loss = F.cross_entropy(main, y, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
        if isinstance(out, dict) and "aux" in out:
            aux = F.cross_entropy(out["aux"].float(), y, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
            loss = loss + AUX_WEIGHT * aux
        valid = y != IGNORE_INDEX
        correct = ((main.detach().argmax(1) == y) & valid).sum()
        return loss, correct, int(valid.sum())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Batches, amp: bool, num_classes: int) -> tuple[float | None, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        matrix = torch.zeros((num_classes, num_classes), dtype=torch.long, device=device)
        count = 0
        for x, y in batches.epoch(0):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                main = _main(model(x)).float()
            loss_sum += F.cross_entropy(main, y, ignore_index=IGNORE_INDEX, reduction="sum")
            count += int((y != IGNORE_INDEX).sum())
            matrix += confusion(main.argmax(1), y, num_classes)
        model.train(was_training)
        if count == 0:
            return float("nan"), float("nan")
        return float(loss_sum) / count, mean_iou(matrix)

    output_names: ClassVar[tuple[str, ...]] = ("out",)

    def output_doc(self, num_classes: int, batch: str) -> list[dict[str, Any]]:
        return [{"name": "out", "shape": [batch, num_classes, "height", "width"], "dtype": "float32",
                 "meaning": "unnormalized per-pixel class scores at the input's size: argmax over axis 1 is the "
                 "class map (the auxiliary head, a training aid, is not exported)"}]  # fmt: skip

    def export_view(self, model: nn.Module) -> nn.Module:
        return MainOutput(model)

    def compare(self, expected: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> dict[str, float]:
        return super().compare(expected, got)  # per-pixel scores: elementwise, agreement of per-pixel classes

    def score_outputs(self, outputs: Sequence[Sequence[np.ndarray]], split: ImageSet, num_classes: int) -> float:
        assert split.masks is not None
        matrix = torch.zeros((num_classes, num_classes), dtype=torch.long)
        start = 0
        for out in outputs:
            pred = torch.from_numpy(out[0]).argmax(1)
            target = split.masks[start : start + len(pred)].long()
            matrix += confusion(pred, target, num_classes)
            start += len(pred)
        return mean_iou(matrix)


class MainOutput(nn.Module):
    """A segmentation model that returns its main per-pixel scores alone (the auxiliary head serves training)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _main(self.model(x))
