"""A training run's folder and its names: what makes two runs the same run (`run_identity`) and the
default folder name hashed from it (`run_id`, `run_folder_name`); the folder itself (`make_out`), and the
files written into it at the end of a run, metrics.json (`write_metrics`) and curve.png (`plot_curve`).
The run's checkpoint.pt is `prunenas.checkpoints`'.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prunenas.checkpoints import weights_sha
from prunenas.config import RunSettings, fingerprint
from prunenas.data import DatasetSplits
from prunenas.genotype import Genotype
from prunenas.paths import ensure_dir
from prunenas.recipes import KD_FIELDS, Recipe
from prunenas.report import plot_training_curve
from prunenas.spaces.base import Space
from prunenas.train_results import EpochMetrics, TrainResult

if TYPE_CHECKING:
    from prunenas.teacher import Teacher

METRICS = "metrics.json"
CURVE = "curve.png"


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
    """What makes two runs the same run: the genotype, the recipe's identity (`Config.identity`: every
    field), the seed, the data, whether an epoch's last partial batch trains, for runs that start from given
    weights a hash of those weights and, for runs that distill, a hash of the teacher's weights with the
    distillation settings (which act only then, so a run without a teacher leaves them out). Stored in
    checkpoints (compared on resume) and hashed by `run_id` into default run folder names and the search's
    run cache, so a change of any result-changing setting gets a new folder."""
    key: dict[str, Any] = {
        "genotype": genotype.key,
        "recipe": {k: v for k, v in recipe.identity().items() if k not in KD_FIELDS},
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


def make_out(out_dir: str | Path | None) -> Path | None:
    """The run folder `out_dir` (--out), created; None for a run that writes no folder."""
    return None if out_dir is None else ensure_dir(out_dir, "--out")


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


def plot_curve(out: Path, history: Sequence[EpochMetrics], space: Space, genotype: Genotype, recipe: Recipe) -> Path:
    """curve.png of a run's `history` (`prunenas.report.plot_training_curve`)."""

    path = out / CURVE
    plot_training_curve(history, path, title=f"{space.name} {genotype.key} ({recipe.name})")
    return path
