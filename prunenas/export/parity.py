"""Parity of an exported ONNX file with its PyTorch model: ONNX Runtime must reproduce the fp32 logits
within `PARITY_TOLERANCE` on random batches of two sizes (so the batch axis really is dynamic) and on
real test images when the run's dataset can be loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunenas.data import DatasetSplits, center_crop, load_dataset
from prunenas.engines import make_engine
from prunenas.errors import DataError, PrunenasError
from prunenas.export.common import ExportError, stored_like
from prunenas.export.run import TrainedRun
from prunenas.export.runtime import make_session, normalize_images
from prunenas.tasks import CLASSIFICATION, Task, get_task

#: Largest allowed |logit(PyTorch) - logit(ONNX Runtime)| in fp32.
PARITY_TOLERANCE = 1e-4
PARITY_RELATIVE = 1e-6  # of the largest |logit|, for fp32 rounding of large logits
#: Random-input parity batch sizes: 1 and a size that is neither 1 nor the export example's 2.
PARITY_BATCHES = (1, 7)
#: Real test images used for the parity check (the first N of the test split).
REAL_PARITY_IMAGES = 256


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    inputs: Sequence[tuple[str, np.ndarray]],
    *,
    tolerance: float = PARITY_TOLERANCE,
    provider: str | None = None,
    runtime: str | None = None,
    task: Task | None = None,
) -> dict[str, Any]:
    """Run `model` (PyTorch, CPU, fp32, eval) and the ONNX file on each (label, input); compare logits. The file
    runs in ONNX Runtime with `provider`, or with `runtime` (an engine provider: openvino, tensorrt) in that
    engine at fp32.

    Every output is compared, as the run's `task` compares them (`Task.compare`: classification and
    segmentation elementwise; detection by count, sorted scores and matched boxes).

    Returns {"provider", "tolerance", "checks": [{label, batch, max_abs_diff, max_abs_logit,
    argmax_agreement}], "max_abs_diff", "passed": True}; raises ExportError when any batch differs by
    the allowed difference (`tolerance` + 1e-6 x the largest |logit|) or more (or has a wrong output shape).
    """
    task = task or get_task(CLASSIFICATION)
    if runtime is not None:
        engine = make_engine(onnx_path, runtime, exact=True, flag="--runtime")  # openvino or tensorrt
        used = engine.name

        def run(x: np.ndarray) -> list[np.ndarray]:
            return [engine.run(x)]

    else:
        session = make_session(onnx_path, provider, exact=True)
        used = session.get_providers()[0]
        input_name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> list[np.ndarray]:
            return [np.asarray(o) for o in session.run(None, {input_name: x})]

    model = model.eval()
    device = next(model.parameters()).device
    checks: list[dict[str, Any]] = []
    view = task.export_view(model)
    for label, x in inputs:
        parts = [x] if task.dynamic_batch else [x[i : i + 1] for i in range(len(x))]  # one image per call
        found = {"max_abs_diff": 0.0, "max_abs_value": 0.0, "agreement": 0.0}
        for part in parts:
            with torch.no_grad():
                out = view(torch.from_numpy(part).to(device))
            expected = [t.float().cpu().numpy() for t in (out if isinstance(out, tuple | list) else (out,))]
            try:
                one = task.compare(expected, run(part)[: len(expected)])
            except ValueError as exc:
                raise ExportError(
                    f"ONNX Runtime ({used}) gives other outputs than PyTorch for {label} (batch {part.shape[0]}): "
                    f"{exc}; the export is wrong"
                ) from None
            found["max_abs_diff"] = max(found["max_abs_diff"], one["max_abs_diff"])
            found["max_abs_value"] = max(found["max_abs_value"], one["max_abs_value"])
            found["agreement"] += one["agreement"] / len(parts)
        diff = found["max_abs_diff"]
        check = {
            "input": label,
            "batch": int(x.shape[0]),
            "max_abs_diff": diff,
            "max_abs_logit": found["max_abs_value"],
            "argmax_agreement": found["agreement"],
        }
        # fp32 rounding grows with the size of the logits: on top of the absolute tolerance allow one
        # part in a million of the largest logit (negligible for logits of a trained model, ~10).
        allowed = tolerance + PARITY_RELATIVE * found["max_abs_value"]
        check["allowed"] = allowed
        checks.append(check)
        if found["agreement"] < task.min_agreement:
            raise ExportError(
                f"ONNX Runtime ({used}) agrees with PyTorch on {100 * found['agreement']:.1f}% of the {task.name} "
                f"outputs for {label} (at least {100 * task.min_agreement:.0f}% needed); the exported model is not the "
                "trained one, so nothing was kept"
            )
        if not diff < allowed:  # also catches NaN
            raise ExportError(
                f"ONNX Runtime ({used}) disagrees with PyTorch on {label} (batch {x.shape[0]}): max |logit "
                f"difference| {diff:.3g} >= {allowed:.3g} (logits up to {check['max_abs_logit']:.3g}); "
                "the exported model is not the trained one, so nothing was kept"
            )
    return {
        "provider": used,
        "tolerance": tolerance,
        "checks": checks,
        "max_abs_diff": max((c["max_abs_diff"] for c in checks), default=0.0),
        "passed": True,
    }


def _random_inputs(shape: tuple[int, int, int], batches: Sequence[int], seed: int = 0) -> list[tuple[str, np.ndarray]]:
    gen = torch.Generator().manual_seed(seed)
    return [(f"random batch {b}", torch.randn(b, *shape, generator=gen).numpy()) for b in batches]


def run_dataset(
    run: TrainedRun, dataset: str | None, data_dir: str | None, *, required: str | None = None
) -> tuple[DatasetSplits | None, str | None, str | None]:
    """(the run's dataset, its name, why it is not there). With an explicit `dataset`, or with `required` (what
    needs the images, for the message), a failure to load it is the user's error (raised). Otherwise the run's own
    dataset is tried without downloading, and a failure only returns the reason."""

    explicit = dataset is not None
    name = dataset or run.dataset_name
    if name is None:
        if required:
            raise PrunenasError(
                f"metrics.json of the run names no dataset and {required} needs its images; pass --dataset"
            )
        return None, None, "metrics.json names no dataset; pass --dataset/--data-dir for a real-input check"
    folder = data_dir or os.environ.get("PRUNENAS_DATA") or None
    if folder is None and not explicit:
        source = run.metrics.get("dataset", {}).get("source")
        if isinstance(source, str) and source != "embedded" and Path(source).exists():
            folder = source
    try:
        stored = stored_like(run.metrics.get("dataset"), run.input_shape[1]) if name == run.dataset_name else {}
        data = load_dataset(name, folder, download=explicit, image_size=run.input_shape[1], **stored)
    except DataError as exc:
        if explicit:
            raise
        if required:
            raise PrunenasError(
                f"{required} needs the {name} images the run was trained on, which are not available here ({exc}); "
                "pass --dataset/--data-dir"
            ) from None
        return None, name, f"{name} test images not available ({exc}); pass --data-dir for a real-input check"
    return data, name, None


def _real_inputs(
    run: TrainedRun, dataset: str | None, data_dir: str | None, limit: int,
    loaded: tuple[DatasetSplits | None, str | None, str | None] | None = None,
) -> tuple[tuple[str, np.ndarray] | None, str | None, str | None]:  # fmt: skip
    """(label, normalized test images) for the parity check, the dataset name, and why there are none (`loaded`:
    what `run_dataset` returned, when the caller loaded the data already)."""

    data, name, skipped = loaded if loaded is not None else run_dataset(run, dataset, data_dir)
    if data is None:
        return None, name, skipped
    images = center_crop(data.test.images(torch.arange(min(limit, len(data.test)))), run.input_shape[-1])
    if tuple(images.shape[1:]) != run.input_shape or len(images) == 0:
        raise PrunenasError(
            f"{name} test images have shape {list(images.shape[1:])} but the model takes {list(run.input_shape)}; "
            "pass the dataset the run was trained on with --dataset"
        )
    return (f"{name} test images", normalize_images(images, run.mean, run.std)), name, None
