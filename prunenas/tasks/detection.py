"""Object detection: boxes per image, the model's own losses, COCO mAP@[.5:.95] (``val_map``) by pycocotools.

Models follow torchvision's detection API: in train mode ``model(images, targets)`` returns a dict of losses
(their sum is the loss), in eval mode a list of ``{"boxes", "labels", "scores"}``. Class 0 is the background.
Images reach the model as 0..1 floats (its own transform normalizes and resizes them: ``input_size``).
Targets travel padded, ``(B, K, 5)`` rows (label, x1, y1, x2, y2) with label -1 on padding rows.

Tracing for channel groups runs the backbone (and neck) and the heads on raw tensors, without the
transform and post-processing (anchors, NMS): for two-stage models the RoI head runs on two fixed
proposals, so that the box head's input follows the neck's width. Every layer outside ``backbone`` is a head.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from prunenas.data import ImageSet
from prunenas.errors import PrunenasError
from prunenas.tasks.base import Batches, TraceForward
from prunenas.tasks.batches import DenseTask


def targets_of(y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Padded (B, K, 5) rows -> torchvision's per-image targets (padding rows dropped)."""
    out = []
    for rows in y:
        keep = rows[:, 0] >= 0
        out.append({"boxes": rows[keep, 1:5].float(), "labels": rows[keep, 0].long()})
    return out


def _features(model: Any, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
    feats = model.backbone(x)
    return OrderedDict([("0", feats)]) if isinstance(feats, torch.Tensor) else feats


def trace_detector(model: Any, x: torch.Tensor) -> list[torch.Tensor]:
    """The raw tensors of a torchvision-style detector for input `x` (no transform, no post-processing)."""
    feats = _features(model, x)
    levels = list(feats.values())
    if hasattr(model, "rpn") and hasattr(model, "roi_heads"):
        objectness, deltas = model.rpn.head(levels)
        h, w = x.shape[-2:]
        proposals = [torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w * 3 / 4, h * 3 / 4]], device=x.device)]
        pooled = model.roi_heads.box_roi_pool(feats, proposals, [(h, w)])
        scores, boxes = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
        return [*objectness, *deltas, scores, boxes]
    out = model.head(levels)
    return list(out.values()) if isinstance(out, dict) else list(out)


def coco_map(gts: list[torch.Tensor], preds: list[dict[str, torch.Tensor]], num_classes: int) -> float:
    """COCO AP@[.5:.95] (pycocotools COCOeval, bbox) of per-image predictions against padded ground truth; nan
    when the split has no box."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for i, (rows, pred) in enumerate(zip(gts, preds, strict=True)):
        images.append({"id": i + 1})
        for r in rows[rows[:, 0] >= 0].tolist():
            w, h = r[3] - r[1], r[4] - r[2]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(r[0]), "bbox": [r[1], r[2], w, h],
                         "area": w * h, "iscrowd": 0})  # fmt: skip
        for box, label, score in zip(
            pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist(), strict=True
        ):
            dets.append({"image_id": i + 1, "category_id": int(label), "score": float(score),
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
    if not anns:
        return math.nan
    if not dets:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": c} for c in range(1, num_classes)]}  # fmt: skip
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(0.0, float(ev.stats[0]))


class Detection(DenseTask):
    name: ClassVar[str] = "detection"
    metric: ClassVar[str] = "val_map"
    metric_label: ClassVar[str] = "mAP@[.5:.95]"
    datasets: ClassVar[tuple[str, ...]] = ("shapes-det", "coco")
    autocast: ClassVar[bool] = False  # torchvision's box ops (roi_align, nms) are fp32 on the CPU
    recipe: ClassVar[Mapping[str, Any]] = {
        "lr": 0.01, "batch_size": 16, "schedule": "cosine", "warmup_epochs": 0.5, "weight_decay": 4e-5,
    }  # fmt: skip
    recipe_note: ClassVar[str] = (
        "torchvision's detection reference (SSDLite: SGD momentum 0.9, weight decay 4e-5, cosine decay after a "
        "warm-up; batch 24 x 8 GPUs at lr 0.15): here batch 16 at lr 0.01 on the CPU"
    )

    def check_output(self, out: Any, num_classes: int, input_shape: Sequence[int]) -> str | None:
        one = isinstance(out, list | tuple) and len(out) == 1 and isinstance(out[0], dict)
        if one and {"boxes", "labels", "scores"} <= set(out[0]):
            return None
        return f"outputs {type(out).__name__}, not a list of {{'boxes', 'labels', 'scores'}} per image"

    def trace_forward(self, model: nn.Module) -> TraceForward | None:
        parts = ("backbone", "transform")
        if all(isinstance(getattr(model, p, None), nn.Module) for p in parts) and (
            hasattr(model, "head") or hasattr(model, "roi_heads")
        ):
            return trace_detector
        return None

    def input_size(self, model: nn.Module) -> int | None:
        transform = getattr(model, "transform", None)
        if transform is None:
            return None
        fixed = getattr(transform, "fixed_size", None)
        if fixed:
            return int(fixed[0])
        return int(transform.min_size[0])

    def set_input_size(self, model: nn.Module, size: int) -> None:
        """Make the model's transform resize images to `size` x `size` (square inputs)."""
        transform = getattr(model, "transform", None)
        if transform is None:
            raise PrunenasError(f"this detection model has no resizing transform; its input size {size} cannot be set")
        if getattr(transform, "fixed_size", None):
            transform.fixed_size = (size, size)
        else:
            transform.min_size = (size,)
            transform.max_size = size

    def loss(
        self, forward: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        losses = forward(list(x), targets_of(y))
        loss = sum(losses.values(), torch.zeros((), device=x.device))
        return loss, torch.zeros((), device=x.device, dtype=torch.long), int(x.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Batches, amp: bool, num_classes: int) -> tuple[float | None, float]:
        was_training = model.training
        model.eval()
        gts: list[torch.Tensor] = []
        preds: list[dict[str, torch.Tensor]] = []
        for x, y in batches.epoch(0):
            out = model(list(x))
            preds.extend({k: v.detach().cpu() for k, v in o.items()} for o in out)
            gts.extend(r.cpu() for r in y)
        model.train(was_training)
        return None, coco_map(gts, preds, num_classes)

    output_names: ClassVar[tuple[str, ...]] = ("boxes", "labels", "scores")
    dynamic_batch: ClassVar[bool] = False
    min_agreement: ClassVar[float] = 0.9

    def output_doc(self, num_classes: int, batch: str) -> list[dict[str, Any]]:
        inside = ("one image (batch 1) in 0..1; resize, normalization, box decoding, score threshold, NMS and "
                  "top-k run inside the graph")  # fmt: skip
        return [
            {"name": "boxes", "shape": ["boxes_count", 4], "dtype": "float32",
             "meaning": f"x1, y1, x2, y2 in input pixels ({inside})"},
            {"name": "labels", "shape": ["labels_count"], "dtype": "int64",
             "meaning": f"class ids 1..{num_classes - 1} (0 is the background)"},
            {"name": "scores", "shape": ["scores_count"], "dtype": "float32", "meaning": "confidence, descending"},
        ]  # fmt: skip

    def export_view(self, model: nn.Module) -> nn.Module:
        return OneImage(model)

    def compare(self, expected: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> dict[str, float]:
        """Detections of the same input: each graph detection matched to a PyTorch one of the same label and box
        (within 1e-3 of the box scale), their scores compared (max_abs_diff); agreement is the share matched of the
        larger of the two sets. Equal scores that tie at the top-k cut-off or in NMS may keep other boxes of the same
        score in either runtime (seen on under-trained models: 5 of 300 on one image), hence `min_agreement`."""
        boxes_e, labels_e, scores_e = expected
        boxes_g, labels_g, scores_g = got
        if boxes_g.ndim != 2 or boxes_g.shape[1:] != (4,) or not len(labels_g) == len(scores_g) == len(boxes_g):
            raise ValueError(
                f"boxes {list(boxes_g.shape)}, labels {list(labels_g.shape)}, scores {list(scores_g.shape)}"
            )
        if not len(scores_e) or not len(scores_g):
            one = float(len(scores_e) == len(scores_g))
            return {"max_abs_diff": 0.0 if one else float("inf"), "max_abs_value": 0.0, "agreement": one}
        far = np.abs(boxes_g[:, None, :].astype(np.float64) - boxes_e[None, :, :]).max(-1)  # (graph, torch)
        same = (far <= 1e-3 * (1.0 + np.abs(boxes_e).max())) & (labels_g[:, None] == labels_e[None, :])
        gap = np.where(same, np.abs(scores_g[:, None].astype(np.float64) - scores_e[None, :]), np.inf).min(1)
        matched = np.isfinite(gap)
        diff = float(gap[matched].max()) if matched.any() else float("inf")
        return {
            "max_abs_diff": diff,
            "max_abs_value": float(np.max(np.abs(scores_e))),
            "agreement": float(matched.mean()),
        }

    def score_outputs(self, outputs: Sequence[Sequence[np.ndarray]], split: ImageSet, num_classes: int) -> float:
        assert split.boxes is not None
        preds = [{"boxes": torch.from_numpy(o[0]), "labels": torch.from_numpy(o[1]), "scores": torch.from_numpy(o[2])}
                 for o in outputs]  # fmt: skip
        return coco_map(list(split.boxes[: len(preds)]), preds, num_classes)


class OneImage(nn.Module):
    """A detector as an exported graph: one (1, 3, H, W) image in 0..1 -> its boxes (x1, y1, x2, y2 pixels),
    labels and scores; the model's resize and normalization and its post-processing (box decoding,
    score threshold, NMS, top-k) are inside the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(list(x))[0]
        return out["boxes"], out["labels"], out["scores"]
