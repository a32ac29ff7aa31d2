"""A trained run folder (checkpoint.pt, genotype.json, metrics.json) with its model rebuilt."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunenas.errors import PrunenasError, SpaceError
from prunenas.export.common import _read_json, _three_floats
from prunenas.genotype import Genotype
from prunenas.space_files import ORIGIN_KEY
from prunenas.spaces import get_space
from prunenas.spaces.base import Space
from prunenas.spaces.registry import space_for_genotype
from prunenas.train import CHECKPOINT, METRICS, load_error, read_checkpoint


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A run folder written by `prunenas train`, with its model rebuilt (CPU, fp32, eval mode)."""

    run_dir: Path
    space: Space
    genotype: Genotype
    model: nn.Module
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    metrics: Mapping[str, Any]
    checkpoint_epoch: int
    run_key: Mapping[str, Any] | None
    used_cuda: bool

    @property
    def dataset_name(self) -> str | None:
        name = self.metrics.get("dataset", {}).get("name")
        return str(name) if name else None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The exported graph's input: the space's, except for a detector, which resizes images itself and so
        takes them at the size it was trained on."""
        shape = self.metrics.get("dataset", {}).get("image_shape")
        if self.space.task == "detection" and isinstance(shape, list) and len(shape) == 3:
            return (int(shape[0]), int(shape[1]), int(shape[2]))
        return self.space.input_shape


def _space_of_run(genotype: Genotype, state: Mapping[str, Any], run: Path, space: str | None) -> Space:
    """The run's space: `space` (--space) when given, else the one its genotype records (by name, or from
    the files it recorded: see `space_for_genotype`), else (runs written before genotypes recorded
    their files) the .toml path the run recorded."""

    if space is not None:
        return get_space(space)
    try:
        return space_for_genotype(genotype)
    except SpaceError:
        if ORIGIN_KEY in genotype.provenance:
            raise  # the recorded files are changed or gone: that message says what to do
        source = state.get("space_source")
        if not source:
            metrics = run / METRICS
            if metrics.is_file():
                with contextlib.suppress(OSError, ValueError):
                    source = json.loads(metrics.read_text(encoding="utf-8")).get("space_source")
        if isinstance(source, str) and source.endswith(".toml") and Path(source).is_file():
            return get_space(source)
        raise PrunenasError(
            f"the run's space {genotype.space!r} is not a known space here and the run does not say where it is "
            "defined (it was trained before runs recorded that): pass --space with the space it was trained in "
            "(its .toml file or model factory path/to/file.py:callable)"
        ) from None


def _in_space(genotype: Genotype, space: Space) -> Genotype:
    """`genotype` as one of `space` (the same genes under another space name, when --space renames it)."""
    return genotype if genotype.space == space.name else Genotype(space.name, genotype.genes, genotype.provenance)


def load_run(run_dir: str | Path, space: str | None = None) -> TrainedRun:
    """Read a run folder (checkpoint.pt, genotype.json, metrics.json) and rebuild its trained model in
    its own space, or in `space` (a space name, .toml path or model factory: --space).

    Raises PrunenasError (one line: what is wrong and how to fix it) for anything missing or inconsistent.
    """
    run = Path(run_dir)
    layout = "a folder written by `prunenas train` (it holds checkpoint.pt, genotype.json and metrics.json)"
    if not run.exists():
        raise PrunenasError(f"run folder {str(run)!r} does not exist; pass {layout}")
    if not run.is_dir():
        what = {
            ".json": "a JSON file (a genotype is trained first: `prunenas train GENOTYPE --out DIR`, then "
            "`prunenas export DIR`)",
            ".pt": f"a checkpoint: pass the folder that holds it ({str(run.parent)!r})",
            ".onnx": "an exported model already (`prunenas evaluate` checks it)",
            ".toml": "a space definition (export takes a run trained in it; --space names the space)",
        }.get(run.suffix.lower(), "a file")
        raise PrunenasError(f"RUN_DIR {str(run)!r} is {what}, not a run folder; pass {layout}")
    ckpt_path = run / CHECKPOINT
    if not ckpt_path.is_file():
        raise PrunenasError(
            f"run folder {str(run)!r} has no {CHECKPOINT}; train it first (`prunenas train GENOTYPE --out {run}`) "
            f"or pass {layout}"
        )
    _, state = read_checkpoint(ckpt_path, "RUN_DIR's checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping):
        raise PrunenasError(f"{str(ckpt_path)!r} is not a prunenas checkpoint (no model weights); pass {layout}")

    genotype_file = run / "genotype.json"
    ckpt_genotype = state.get("genotype")
    if genotype_file.is_file():
        genotype = Genotype.load(genotype_file)
    elif isinstance(ckpt_genotype, Mapping):
        genotype = Genotype.from_dict(ckpt_genotype, origin=f"{ckpt_path} genotype")
    else:
        raise PrunenasError(f"run folder {str(run)!r} has no genotype.json; pass {layout}")
    run_space = _space_of_run(genotype, state, run, space)
    genotype = run_space.validate(_in_space(genotype, run_space))
    if isinstance(ckpt_genotype, Mapping):
        trained = Genotype.from_dict(ckpt_genotype, origin=f"{ckpt_path} genotype")
        trained = run_space.validate(_in_space(trained, run_space))
        if trained.key != genotype.key:
            raise PrunenasError(
                f"{genotype_file} (genotype {genotype.key}) is not the genotype checkpoint.pt was trained on "
                f"({trained.key}); restore the run's genotype.json or pass the matching run folder"
            )

    metrics_path = run / METRICS
    if not metrics_path.is_file():
        raise PrunenasError(
            f"run folder {str(run)!r} has no {METRICS} (it is written when the run finishes); finish the run with "
            "`prunenas train` (it resumes from checkpoint.pt) and export again"
        )
    metrics = _read_json(metrics_path, "metrics file", "pass the folder of a finished `prunenas train` run")
    dataset = metrics.get("dataset")
    mean = _three_floats(dataset.get("mean")) if isinstance(dataset, Mapping) else None
    std = _three_floats(dataset.get("std")) if isinstance(dataset, Mapping) else None
    if mean is None or std is None or min(std) <= 0:
        raise PrunenasError(
            f"{metrics_path} has no usable dataset.mean/std (3 numbers each, std > 0), so the input normalization "
            "is unknown; pass the folder of a `prunenas train` run"
        )
    assert isinstance(dataset, Mapping)
    num_classes = int(state.get("num_classes") or len(dataset.get("classes") or []) or run_space.num_classes)
    classes = tuple(str(c) for c in dataset.get("classes") or [])
    if len(classes) != num_classes:
        classes = tuple(str(i) for i in range(num_classes))

    model = run_space.build(genotype, num_classes=num_classes)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise PrunenasError(
            f"checkpoint.pt in {str(run)!r} does not fit genotype {genotype.key} ({load_error(exc)}); "
            "genotype.json must be the genotype the run trained"
        ) from None
    model.float().eval()
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise PrunenasError(
            f"the weights in {str(ckpt_path)!r} are not finite (e.g. {bad[0]}); the run diverged "
            f"({state.get('stopped') or 'see metrics.json'}): retrain it with a lower --lr"
        )
    return TrainedRun(
        run_dir=run,
        space=run_space,
        genotype=genotype,
        model=model,
        num_classes=num_classes,
        classes=classes,
        mean=mean,
        std=std,
        metrics=metrics,
        checkpoint_epoch=int(state.get("epoch", 0)),
        run_key=state.get("run_key"),
        used_cuda=state.get("rng_cuda") is not None,
    )
