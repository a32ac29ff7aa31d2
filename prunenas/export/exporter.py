"""ONNX export of a trained run, verified before anything is kept.

`export_run(RUN_DIR)` rebuilds the run's model from genotype.json + checkpoint.pt, exports it with the
dynamo exporter (`torch.onnx.export(dynamo=True)`, one self-contained file, dynamic batch axis) and
falls back to the legacy TorchScript exporter only when dynamo fails (the reason is logged and
stored). The file must pass `onnx.checker` (full check) and the parity check (`prunenas.export.parity`).
Everything is written into a staging folder first and moved into place only after all checks pass, so a
failed export leaves nothing behind (and never clobbers a previous good export).

The model exported is `space.export_model(model)`: spaces with masked weights (density genotypes)
multiply their masks into the weights and remove the mask buffers, so the zeros live in the weights and
no mask appears in the graph; the measured sparsity is recorded. ONNX Runtime runs such layers as
dense convolutions: unstructured zeros give no speed-up.

This module holds `export_run`, its destination and staging folders; the ONNX file is written and checked
by `prunenas.export.writer`, the sidecar and sparsity report come from `prunenas.export.sidecar`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunenas.engines import check_runtime
from prunenas.errors import PrunenasError, exception_line
from prunenas.export.card import model_card
from prunenas.export.common import CARD, ONNX_FILE, SIDECAR
from prunenas.export.parity import (
    PARITY_BATCHES,
    PARITY_TOLERANCE,
    REAL_PARITY_IMAGES,
    _random_inputs,
    _real_inputs,
    check_parity,
    run_dataset,
)
from prunenas.export.precision import (
    CALIBRATION_IMAGES,
    PrecisionRequest,
    check_calibration,
    engine_provider,
    lower_precision,
    precision_file,
    runtime_flags,
)
from prunenas.export.run import TrainedRun, load_run
from prunenas.export.runtime import _check_latency_args, onnx_latency, resolve_providers
from prunenas.export.sidecar import _NORMALIZATION, _sidecar, _sparsity
from prunenas.export.trt_engine import build_engine, check_engine, engine_file
from prunenas.export.writer import DEFAULT_OPSET, _export_onnx, _verify_onnx_file, check_opset
from prunenas.export.writer import MIN_OPSET as MIN_OPSET
from prunenas.export.writer import max_opset as max_opset
from prunenas.latency import machine
from prunenas.paths import why
from prunenas.quantize import PRECISIONS, check_precision
from prunenas.tasks import CLASSIFICATION, get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what its sidecar says."""

    out_dir: Path
    onnx_path: Path
    sidecar: dict[str, Any]


def _same_run(folder: Path, run: TrainedRun) -> bool:
    """Whether `folder` is empty of exports or holds an export of this very run."""
    sidecar = folder / SIDECAR
    if not sidecar.is_file():
        return True
    try:
        previous = json.loads(sidecar.read_text(encoding="utf-8")).get("source", {}).get("run_dir")
    except (OSError, ValueError, AttributeError):
        return False
    return previous == str(run.run_dir.resolve())


def _destination(run: TrainedRun, out_dir: str | Path | None, name: str | None, root: str | Path) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    base = Path(root) / run.space.slug
    if name is not None:
        if not name or Path(name).name != name or name in (".", ".."):
            raise PrunenasError(f"--name {name!r} must be a plain folder name (no '/'); pass e.g. --name resnet56_b")
        return base / name
    # The genotype key; if that folder holds another run's export (same genotype, other seed or
    # recipe), the run folder's name instead.
    for candidate in (base / run.genotype.key, base / run.run_dir.resolve().name):
        if _same_run(candidate, run):
            return candidate
    raise PrunenasError(
        f"{base / run.genotype.key} and {base / run.run_dir.resolve().name} already hold exports of other runs; "
        "pass --name NAME or -o DIR"
    )


def _prepare(dest: Path, out_flag: str = "-o") -> Path:
    """Create the destination's parent and a staging folder next to it; return the staging folder."""
    hint = f"pass another {out_flag}"
    for folder in (dest, *dest.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == dest else f"is below {str(folder)!r}, which is a file"
                raise PrunenasError(f"cannot create export folder {str(dest)!r}: it {where}; {hint}")
            break
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in dest.parent.glob(f".{dest.name}.staging-*"):  # left by an interrupted export
            shutil.rmtree(stale, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    except OSError as exc:
        raise PrunenasError(f"cannot create export folder {str(dest)!r}: {why(exc)}; {hint}") from None


def _move_into_place(staging: Path, dest: Path, files: Sequence[str], out_flag: str = "-o") -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            os.replace(staging / f, dest / f)
    except OSError as exc:
        raise PrunenasError(
            f"cannot write into export folder {str(dest)!r}: {why(exc)}; pass another {out_flag}"
        ) from None


#: Real test images of the parity check of a graph that takes one image per call (a detector).
SINGLE_IMAGE_PARITY = 16


def export_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    name: str | None = None,
    root: str | Path = "exports",
    dataset: str | None = None,
    data_dir: str | None = None,
    benchmark: bool = False,
    latency_batches: Sequence[int] = (1, 64),
    latency_repeats: int = 50,
    latency_warmup: int = 10,
    provider: str | None = None,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    out_flag: str = "-o",
    space: str | None = None,
    precision: str = "fp32",
    runtime: str = "onnxruntime",
    calibration_images: int = CALIBRATION_IMAGES,
    threads: int | None = None,
    engine: str | None = None,
) -> ExportResult:
    """Export the trained model of `run_dir` to ONNX at `opset` (MIN_OPSET..max_opset()), verify it, and
    write model.onnx, model.json, README.md; with `precision` int8 or fp16 also model.<precision>.onnx, measured
    against the FP32 model on `runtime` (`prunenas.export.precision`).

    Output: `out_dir`, else `root/<space>/<name>` (name: `name`, else the genotype key, or the run
    folder's name when the key's folder holds another run's export). `space` (a space name, .toml path or
    model factory) replaces the space the run records, e.g. when its file moved. `runtime` openvino or tensorrt
    also checks the FP32 model's parity in that runtime. `engine` tensorrt writes a serialized TensorRT engine of
    the export at `precision` (`prunenas.export.trt_engine`). Raises PrunenasError for bad input and ExportError (a
    PrunenasError) when the exported model fails a check; then nothing is written. A failed lower-precision step
    raises after the FP32 export is in place, and leaves it as it is.
    """
    check_opset(opset)
    check_precision(precision, "--precision")
    target = engine_provider(runtime, provider)
    check_runtime(target, precision, precision_flag="--precision", spell=runtime_flags)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise PrunenasError(f"--threads {threads!r} must be an integer >= 1 (default: the runtime's own)")
    if precision != "fp32":
        check_calibration(calibration_images)
    check_engine(engine)
    run = load_run(run_dir, space)
    task = get_task(run.space.task)
    if task.name != CLASSIFICATION and (precision != "fp32" or runtime != "onnxruntime" or engine is not None):
        raise PrunenasError(
            f"--precision, --runtime and --engine other than fp32 on onnxruntime export classifiers; this run is a "
            f"{task.name} run: export it at fp32 on onnxruntime (drop those flags)"
        )
    resolve_providers(provider)  # a provider that is not there fails now, not after the export
    if benchmark:  # validate before the slow part
        _check_latency_args(latency_batches, latency_repeats, latency_warmup)
    needs = f"--precision {precision}" if precision != "fp32" else None
    loaded = run_dataset(run, dataset, data_dir, required=needs)  # a bad --dataset fails now, before the export
    real, real_name, skipped = _real_inputs(run, dataset, data_dir, REAL_PARITY_IMAGES, loaded)
    dest = _destination(run, out_dir, name, root)
    export_name = name or dest.name
    staging = _prepare(dest, out_flag)
    try:
        folded = task.export_view(run.space.export_model(run.model))
        onnx_path = staging / ONNX_FILE
        # Defaults are not passed: `_export_onnx(model, path, input_shape)` stays the seam tests replace.
        options: dict[str, Any] = {} if opset == DEFAULT_OPSET else {"opset": opset}
        if task.name != CLASSIFICATION:
            options.update(outputs=task.output_names, dynamic_batch=task.dynamic_batch)
        method = _export_onnx(folded, onnx_path, run.input_shape, **options)
        stamp = {
            "prunenas.key": run.genotype.key,
            "prunenas.space": run.space.name,
            "prunenas.genotype": run.genotype.canonical_json(),
            "prunenas.mean": json.dumps(list(run.mean)),
            "prunenas.std": json.dumps(list(run.std)),
            "prunenas.classes": json.dumps(list(run.classes)),
            "prunenas.normalization": _NORMALIZATION,
            "prunenas.description": f"prunenas {run.space.name} genotype {run.genotype.key}; inputs: {_NORMALIZATION}",
        }
        graph = _verify_onnx_file(onnx_path, stamp, opset, dynamic_batch=task.dynamic_batch)
        inputs = _random_inputs(run.input_shape, PARITY_BATCHES if task.dynamic_batch else (1,))
        if real is not None:  # a graph of one image per call is run on the first few, one by one
            inputs.append(real if task.dynamic_batch else (real[0], real[1][:SINGLE_IMAGE_PARITY]))
        else:
            log.warning("real-input parity check skipped: %s", skipped)
        # Compare against the original (masked) model, not the folded copy: the fold is checked too.
        parity = check_parity(run.model, onnx_path, inputs, tolerance=tolerance, provider=provider, task=task)
        parity["real_inputs"] = real_name if real is not None else None
        parity["real_inputs_skipped"] = skipped
        if target in ("openvino", "tensorrt"):  # the FP32 model's parity in the chosen runtime too
            parity[target] = check_parity(run.model, onnx_path, inputs, tolerance=tolerance, runtime=target)
        sparsity = _sparsity(run, folded, onnx_path) if run.space.folds_masks else None
        latency = None
        if benchmark:
            latency = onnx_latency(
                onnx_path, latency_batches, repeats=latency_repeats, warmup=latency_warmup, provider=provider,
                threads=threads,
            )  # fmt: skip
            latency = {**latency, "machine": machine()}  # the numbers belong to this processor
        sidecar = _sidecar(run, export_name, method, graph, parity, sparsity, latency, onnx_path)
        (staging / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(model_card(sidecar), encoding="utf-8")
        _move_into_place(staging, dest, (ONNX_FILE, SIDECAR, CARD), out_flag)
        for other in PRECISIONS:  # copies and engines of a previous export's model are not this one's
            (dest / precision_file(other)).unlink(missing_ok=True)
            (dest / engine_file(other)).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if precision != "fp32":
        data = loaded[0]
        assert data is not None  # run_dataset raised otherwise
        request = PrecisionRequest(
            precision, target, calibration_images, seed=0, latency_batches=tuple(latency_batches)[:1] or (1,),
            latency_repeats=latency_repeats, threads=threads,
        )  # fmt: skip
        low = precision_file(precision)

        def lower(staging: Path) -> tuple[str, dict[str, Any]]:
            entry = lower_precision(dest / ONNX_FILE, staging / low, request, data, run.mean, run.std, run.input_shape)
            return low, {"precisions": {precision: entry}}

        sidecar = _extend(dest, sidecar, f"the {precision} step", lower, out_flag)
    if engine is not None:
        source = dest / (precision_file(precision) if precision == "int8" else ONNX_FILE)

        def build(staging: Path) -> tuple[str, dict[str, Any]]:
            name = engine_file(precision)
            return name, {"engines": {engine: build_engine(source, staging / name, precision, run.input_shape)}}

        sidecar = _extend(dest, sidecar, f"the {engine} engine", build, out_flag)
    return ExportResult(dest, dest / ONNX_FILE, sidecar)


def _extend(
    dest: Path, sidecar: dict[str, Any], what: str, step: Callable[[Path], tuple[str, dict[str, Any]]], out_flag: str
) -> dict[str, Any]:
    """Add a file made from the verified export in `dest` (a lower-precision copy, an engine): `step` writes it into
    a staging folder and returns its name and what model.json records; the file, model.json and the card are then
    moved into place together. On failure the FP32 export stays as it is, and the one-line error says so."""
    staging = _prepare(dest, out_flag)
    kept = f"the verified FP32 export in {str(dest)!r} is kept as it was"
    try:
        try:
            name, update = step(staging)
        except PrunenasError as exc:
            raise PrunenasError(f"{exc}; {kept}") from None
        except Exception as exc:  # a runtime that cannot run or build what it was given
            raise PrunenasError(f"{what} failed ({exception_line(exc, 200)}); {kept}") from None
        sidecar = {**sidecar, **update}
        (staging / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(model_card(sidecar), encoding="utf-8")
        _move_into_place(staging, dest, (name, SIDECAR, CARD), out_flag)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sidecar
