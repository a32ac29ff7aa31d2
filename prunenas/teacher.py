"""The teacher of a distilling run (`prunenas.train.train(..., teacher=...)`): a trained model of the space's
reference genotype, loaded from a checkpoint with the checks `--reference` gets (`load_teacher`) or given
in memory, put on the run's device in eval mode and never updated (`place_teacher`). The loss it teaches
with is `prunenas.train.distillation_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunenas.checkpoints import load_error, load_model_state, read_checkpoint, weights_sha
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype

if TYPE_CHECKING:
    from prunenas.data import DatasetSplits
    from prunenas.recipes import Recipe
    from prunenas.spaces.base import Space


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


def place_teacher(teacher: nn.Module, device: torch.device, channels_last: bool, data: DatasetSplits) -> None:
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
