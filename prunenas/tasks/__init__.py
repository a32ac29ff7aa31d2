"""Tasks: what a run's targets are and how it is trained and scored (``prunenas.tasks.base.Task``).

Built-ins: ``classification`` (class ids, accuracy ``val_acc``), ``segmentation`` (masks, mean IoU
``val_miou``) and ``detection`` (boxes, COCO mAP ``val_map``). Third-party tasks register under the entry-point
group ``prunenas.tasks``. ``get_task`` finds one by name; the task of a run follows from its dataset.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import nn

from prunenas.errors import PrunenasError
from prunenas.plugins import TASKS, named_classes
from prunenas.tasks.base import Batches, Task, TraceForward

__all__ = [
    "CLASSIFICATION",
    "Batches",
    "Task",
    "TraceForward",
    "all_tasks",
    "get_task",
    "paired_task",
    "task_for_dataset",
    "trace_forward_for",
]

CLASSIFICATION = "classification"


@cache
def all_tasks() -> dict[str, Task]:
    """Every registered task (built-ins and entry points), by name."""
    return {name: cls() for name, cls in named_classes(TASKS, Task, "task").items()}  # type: ignore[type-abstract]


def get_task(name: str) -> Task:
    tasks = all_tasks()
    if name not in tasks:
        raise PrunenasError(f"unknown task {name!r}; valid: {', '.join(sorted(tasks))}")
    return tasks[name]


def task_for_dataset(dataset: str) -> str:
    """The task a built-in dataset poses (classification for any name no task lists)."""
    for task in all_tasks().values():
        if dataset in task.datasets:
            return task.name
    return CLASSIFICATION


def trace_forward_for(model: nn.Module) -> TraceForward | None:
    """The forward that traces `model`'s channel groups: the first task's that claims the model (a detector's
    raw tensors), else None (the model's own forward)."""
    for task in all_tasks().values():
        forward = task.trace_forward(model)
        if forward is not None:
            return forward
    return None


def check_pairing(space: Any, dataset: str, task: str | None = None) -> Task:
    """The task of a run of `space` (a Space) on `dataset` (posing `task`, default the one its name says); a
    PrunenasError naming both flags when the space's models solve another task than the dataset poses."""
    want, got = getattr(space, "task", CLASSIFICATION), task or task_for_dataset(dataset)
    if want != got:
        fits = ", ".join(get_task(want).datasets) or f"a {want} dataset"
        raise PrunenasError(
            f"--space {space.name} is a {want} space but --dataset {dataset} is a {got} dataset; pass a {want} "
            f"dataset ({fits}) or a {got} space"
        )
    return get_task(got)


def paired_task(space: Any, data: Any) -> Task:
    """`check_pairing` of a space and loaded splits (DatasetSplits)."""
    return check_pairing(space, data.name, getattr(data, "task", CLASSIFICATION))


def output_classes(model: nn.Module, example: torch.Tensor) -> int:
    """The number of classes `model` scores (eval mode on `example`): a classifier's logits, a segmenter's "out"
    channels, a torchvision detector's class head (background included)."""
    with torch.no_grad():
        out = model(example)
    if isinstance(out, torch.Tensor):
        return int(out.shape[1])
    if isinstance(out, dict) and isinstance(out.get("out"), torch.Tensor):
        return int(out["out"].shape[1])
    head = getattr(getattr(model, "head", None), "classification_head", None)
    for count in (getattr(head, "num_classes", None), getattr(head, "num_columns", None)):
        if isinstance(count, int):
            return count
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    score = getattr(predictor, "cls_score", None)
    if isinstance(score, nn.Linear):
        return int(score.out_features)
    raise PrunenasError(f"cannot tell how many classes a {type(model).__name__} scores from its output")
