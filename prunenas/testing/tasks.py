"""The contract of a Task plugin (`prunenas.tasks.base.Task`): `TaskContract`, importable from prunenas.testing.

Subclass it as `Test...` and define `task` (a Task instance), `data` (DatasetSplits of a dataset that poses
the task, a few dozen images) and `model` (an untrained model of the task for those classes, eval-ready on
the CPU). The suite checks the task's attributes, that its batches are deterministic and move targets with
images, that its loss trains and its score is a number in [0, 1], that its export view returns the tensors
it names and that `compare` finds no difference between an output and itself.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from prunenas.data import DatasetSplits
from prunenas.metrics import get_metric
from prunenas.tasks import Task, all_tasks


def _batches(task: Task, data: DatasetSplits, train: bool, seed: int = 0) -> Any:
    return task.batches(
        data.train if train else data.val, train=train, augment=True, batch_size=8, device=torch.device("cpu"),
        mean=data.mean, std=data.std, seed=seed, channels_last=False, flip=data.flip, drop_last=train,
        out_size=data.image_shape[-1], crop="pad", shard=(0, 1),
    )  # fmt: skip


def _first(batches: Any, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(batches.epoch(epoch)))


class TaskContract:
    """What every Task must do. Subclass it as `Test...` and define `task`, `data` and `model`."""

    @pytest.fixture
    def task(self) -> Task:
        pytest.fail(f"{type(self).__name__} must define a `task` fixture returning a Task", pytrace=False)

    @pytest.fixture
    def data(self) -> DatasetSplits:
        pytest.fail(f"{type(self).__name__} must define a `data` fixture returning DatasetSplits", pytrace=False)

    @pytest.fixture
    def model(self) -> nn.Module:
        pytest.fail(f"{type(self).__name__} must define a `model` fixture returning an nn.Module", pytrace=False)

    def test_attributes(self, task: Task, data: DatasetSplits) -> None:
        assert isinstance(task, Task) and task.name and task.metric and task.metric_label
        assert all_tasks()[task.name].__class__ is task.__class__, "the task is registered under its name"
        assert get_metric(task.metric).direction == "maximize", "the task's score is a registered metric"
        assert data.task == task.name, f"the data poses {data.task!r}, not {task.name!r}"
        assert task.check_output(object(), data.num_classes, data.image_shape) is not None
        assert len(task.output_names) >= 1

    def test_batches_are_deterministic(self, task: Task, data: DatasetSplits) -> None:
        a, b = _first(_batches(task, data, True), 0), _first(_batches(task, data, True), 0)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], _first(_batches(task, data, True), 1)[0]), "epochs differ"
        x, _ = _first(_batches(task, data, False), 0)
        assert tuple(x.shape[1:]) == tuple(data.image_shape) and x.dtype == torch.float32

    def test_output_is_well_formed(self, task: Task, data: DatasetSplits, model: nn.Module) -> None:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, *data.image_shape))
        assert task.check_output(out, data.num_classes, data.image_shape) is None

    def test_loss_trains_and_score_is_a_fraction(self, task: Task, data: DatasetSplits, model: nn.Module) -> None:
        model.train()
        x, y = _first(_batches(task, data, True), 0)
        loss, hits, count = task.loss(model, x, y, 0.0)
        assert loss.dim() == 0 and math.isfinite(float(loss.detach())) and count >= 1
        assert 0 <= int(hits) <= count
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        val_loss, score = task.evaluate(model, _batches(task, data, False), False, data.num_classes)
        assert val_loss is None or math.isfinite(val_loss)
        assert 0.0 <= score <= 1.0 or math.isnan(score)
        assert model.training, "evaluate restores the model's mode"

    def test_export_view_and_compare(self, task: Task, data: DatasetSplits, model: nn.Module) -> None:
        view = task.export_view(model).eval()
        with torch.no_grad():
            out = view(torch.rand(1, *data.image_shape))
        outs = [t.numpy() for t in (out if isinstance(out, tuple | list) else (out,))]
        assert len(outs) == len(task.output_names)
        found = task.compare(outs, outs)
        assert found["max_abs_diff"] == 0.0 and found["agreement"] == 1.0
        assert len(task.output_doc(data.num_classes, "batch")) == len(task.output_names)
