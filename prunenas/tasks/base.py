"""The Task base class: what a kind of problem (classification, segmentation, detection) decides for a run.

A task owns its targets' format (class ids, masks, boxes) and how batches of them are made and augmented,
its loss, its evaluation metric (the search's accuracy objective, stored as a run's ``val_acc`` and
``test_acc`` and named by ``metric``), which of a model's layers are heads (never genes), how a model is traced
for its channel groups, and what a well-formed output looks like (a space's check, an export's parity test).

Built-ins live beside it (``classification``, ``segmentation``, ``detection``); a third-party task subclasses
``Task`` and adds one line under ``[project.entry-points."prunenas.tasks"]``;
``prunenas.testing.TaskContract`` checks every registered one. The task of a run follows from its dataset
(``DatasetSplits.task``); a space's task from its model (``Space.task``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from prunenas.data import ImageSet


class Batches(Protocol):
    """What the trainer iterates: ``len()`` batches per epoch, ``epoch(e)`` yields (inputs, targets)."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


#: A forward used to trace a model's channel groups: (model, example input) -> the tensors that depend on every
#: layer whose channels may change (None: the model's own forward).
TraceForward = Callable[[nn.Module, torch.Tensor], Any]


class Task(ABC):
    """Base class of every task (see the module doc)."""

    name: ClassVar[str] = ""
    #: The metric name of the task's score (``val_acc``, ``val_miou``, ``val_map``): a search's default
    #: accuracy objective; stored in a run's ``val_acc``/``test_acc`` fields.
    metric: ClassVar[str] = ""
    #: Human name of the score ("accuracy", "mean IoU", "mAP@[.5:.95]").
    metric_label: ClassVar[str] = ""
    #: The built-in datasets that pose this task (for messages: "pass --dataset ...").
    datasets: ClassVar[tuple[str, ...]] = ()
    #: Whether knowledge distillation (--teacher) is defined for this task's outputs.
    distills: ClassVar[bool] = False
    #: Whether the trainer may run it under bf16 autocast.
    autocast: ClassVar[bool] = True
    #: Recipe settings a traced space of this task starts from (its TOML [recipe] and flags override them), and
    #: where they come from.
    recipe: ClassVar[Mapping[str, Any]] = {}
    recipe_note: ClassVar[str] = ""
    #: The input pixels of a space of this task when neither its name (@SIZE) nor its model says otherwise.
    default_input_size: ClassVar[int] = 224
    #: The least batch size of evaluation passes (0: the recipe's batch size; large inputs keep memory bounded).
    eval_batch: ClassVar[int] = 256

    # -- models -------------------------------------------------------------------------------------------------
    @abstractmethod
    def check_output(self, out: Any, num_classes: int, input_shape: Sequence[int]) -> str | None:
        """None when `out` (the eval-mode output of a batch-1 input of `input_shape`) is a well-formed output of
        this task for `num_classes` classes, else what is wrong with it, in words."""

    def head_layers(self, model: nn.Module) -> list[str]:
        """The module paths of the Conv2d/Linear layers that are heads: their widths are never genes (the
        classifier of a classification model is found by its space, as the last layer called)."""
        return []

    def trace_forward(self, model: nn.Module) -> TraceForward | None:
        """The forward Torch-Pruning traces (None: the model's own)."""
        return None

    def input_size(self, model: nn.Module) -> int | None:
        """The pixels the model itself resizes its input to (detection models' transforms), else None."""
        return None

    def set_input_size(self, model: nn.Module, size: int) -> None:
        """Make a model that resizes its input itself resize it to `size` pixels (others take any size)."""
        return None

    # -- training -----------------------------------------------------------------------------------------------
    @abstractmethod
    def batches(
        self, split: ImageSet, *, train: bool, augment: bool, batch_size: int, device: torch.device,
        mean: Sequence[float], std: Sequence[float], seed: int, channels_last: bool, flip: bool, drop_last: bool,
        out_size: int, crop: str, shard: tuple[int, int],
    ) -> Batches:  # fmt: skip
        """Batches of `split` on `device`: shuffled (and augmented when `augment`) when `train`, in order and
        whole when not."""

    @abstractmethod
    def loss(
        self, forward: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(loss, a sum of the task's training statistic, the count it is over) of one training batch; the
        statistic's mean is the epoch's ``train_acc`` (accuracy, pixel accuracy; 0 where none is defined)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, batches: Batches, amp: bool, num_classes: int) -> tuple[float | None, float]:
        """(mean loss or None where eval mode gives none, the task's score) of `model` over one pass."""

    # -- export -------------------------------------------------------------------------------------------------
    #: Names of the exported graph's outputs (in the order `export_view` returns them).
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    #: Whether the exported graph takes any batch size (False: one image per call, as torchvision's detectors).
    dynamic_batch: ClassVar[bool] = True
    #: The least mean `agreement` (of `compare`) an export's parity check accepts per input (0: not checked).
    min_agreement: ClassVar[float] = 0.0

    def output_doc(self, num_classes: int, batch: str) -> list[dict[str, Any]]:
        """The exported graph's outputs for model.json: name, shape (names for dynamic dims), dtype, meaning."""
        return [{"name": "logits", "shape": [batch, num_classes], "dtype": "float32",
                 "meaning": "unnormalized class scores: argmax is the class, softmax gives probabilities"}]  # fmt: skip

    def export_view(self, model: nn.Module) -> nn.Module:
        """The module exported to ONNX: `model` itself, or a view of it whose forward returns the tensors of
        `output_names` (no dicts or lists of dicts)."""
        return model

    def compare(self, expected: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> dict[str, float]:
        """How the exported graph's outputs `got` differ from PyTorch's `expected` for one input: {"max_abs_diff",
        "max_abs_value", "agreement"} (agreement: the fraction of equal decisions, e.g. top-1 classes). Raises
        ValueError, saying what differs, when their shapes cannot be compared."""
        diff, top, agree = 0.0, 0.0, 1.0
        for name, e, g in zip(self.output_names, expected, got, strict=True):
            if g.shape != e.shape:
                raise ValueError(f"output {name!r} has shape {list(g.shape)}, PyTorch's {list(e.shape)}")
            if e.size:
                diff = max(diff, float(np.max(np.abs(g.astype(np.float64) - e))))
                top = max(top, float(np.max(np.abs(e))))
                agree = min(agree, float(np.mean(g.argmax(1) == e.argmax(1))))
        return {"max_abs_diff": diff, "max_abs_value": top, "agreement": agree}

    def score_outputs(self, outputs: Sequence[Sequence[np.ndarray]], split: ImageSet, num_classes: int) -> float:
        """The task's score on `split` from an exported graph's outputs, one list of output arrays per batch of
        the split's images in order (`prunenas evaluate`)."""
        labels = split.labels.numpy()
        logits = np.concatenate([o[0] for o in outputs]) if outputs else np.zeros((0, num_classes))
        return float(np.mean(logits.argmax(1) == labels)) if len(labels) else float("nan")
