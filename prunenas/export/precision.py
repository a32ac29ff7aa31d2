"""A lower-precision copy of a verified FP32 export (`prunenas export RUN_DIR --precision int8|fp16`), measured
against the FP32 model on the same runtime.

INT8: static post-training quantization of model.onnx (`prunenas.quantize.quantize_int8`: QDQ, per-channel int8
weights, uint8 activations), calibrated on a seeded sample of the run's training images (`--calibration-images`,
normalized as the model expects). fp16: the graph in half precision (`prunenas.quantize.convert_fp16`).

Measured on the runtime chosen with `--runtime` (ONNX Runtime, OpenVINO or TensorRT), FP32 and the copy on the
same test images: both test accuracies and the drop in points, top-1 agreement, the largest |logit difference|
(an elementwise tolerance is the wrong test for a quantized model; these are recorded, not asserted), and both
latencies timed in alternating blocks (`compare_latency`). The result goes into model.json under
`precisions.<precision>` and into the model card.

The FP32 export is the verified reference and is already in place when this runs: a failure here raises a
one-line PrunenasError and leaves model.onnx, model.json and README.md as they were.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunenas.data import DatasetSplits, center_crop
from prunenas.engines import Engine, make_engine
from prunenas.errors import PrunenasError
from prunenas.export.runtime import normalize_images, resolve_providers
from prunenas.quantize import convert_fp16, quantize_int8

#: Default number of training images INT8 calibration sees (`--calibration-images`).
CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32
EVAL_BATCH = 256
#: Runtimes of `prunenas export/evaluate --runtime` and the engine provider each one means.
RUNTIMES = ("onnxruntime", "openvino", "tensorrt")


def precision_file(precision: str) -> str:
    """The file a precision's copy is written to, beside model.onnx."""
    return f"model.{precision}.onnx"


def engine_provider(runtime: str, provider: str | None) -> str:
    """The engine provider for `--runtime` (with ONNX Runtime, `--provider` auto/cpu/cuda chooses)."""
    if runtime not in RUNTIMES:
        raise PrunenasError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}; pass e.g. --runtime openvino")
    if runtime != "onnxruntime":
        return runtime
    # the providers export and evaluate use (auto: CUDA only where torch sees a GPU and onnxruntime has CUDA)
    first = resolve_providers(provider)[0]
    engines = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}
    if first not in engines:
        raise PrunenasError(f"--provider {provider!r} is not one of auto, cpu, cuda; pass --provider cpu")
    return engines[first]


def runtime_flags(provider: str) -> str:
    """The flags of `prunenas export/evaluate` that choose an engine provider."""
    return {"cpu": "--runtime onnxruntime --provider cpu", "cuda": "--runtime onnxruntime --provider cuda"}.get(
        provider, f"--runtime {provider}"
    )


def check_calibration(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise PrunenasError(
            f"--calibration-images {count!r} must be an integer >= 1 (training images INT8 calibration sees; "
            f"default {CALIBRATION_IMAGES})"
        )
    return count


@dataclass(frozen=True)
class PrecisionRequest:
    """What `export --precision` asks for, checked before the export starts."""

    precision: str
    provider: str  # the engine provider both models are measured on (cpu, cuda, tensorrt, openvino)
    calibration_images: int = CALIBRATION_IMAGES
    seed: int = 0
    latency_batches: tuple[int, ...] = (1,)
    latency_repeats: int = 50
    threads: int | None = None


def calibration_batches(
    data: DatasetSplits, mean: Sequence[float], std: Sequence[float], count: int, seed: int, size: int
) -> list[np.ndarray]:
    """`count` training images drawn without replacement by `seed`, center-cropped to `size` pixels where they
    are stored larger, normalized, in batches."""
    n = len(data.train)
    if n == 0:
        raise PrunenasError(f"{data.name} has no training images to calibrate INT8 with; pass another --dataset")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(count, n)]
    return [
        normalize_images(center_crop(data.train.images(order[i : i + CALIBRATION_BATCH]), size), mean, std)
        for i in range(0, len(order), CALIBRATION_BATCH)
    ]


def _outputs(engine: Engine, data: DatasetSplits, mean: Sequence[float], std: Sequence[float], size: int) -> np.ndarray:
    """The engine's logits for every test image (center-cropped to `size` pixels where they are stored larger)."""
    test = data.test
    chunks = []
    for start in range(0, len(test), EVAL_BATCH):
        images = center_crop(test.images(torch.arange(start, min(start + EVAL_BATCH, len(test)))), size)
        chunks.append(engine.run(normalize_images(images, mean, std)))
    return np.concatenate(chunks)


def compare_latency(
    engines: Mapping[str, Engine], input_shape: Sequence[int], batch_sizes: Sequence[int], repeats: int,
    warmup: int = 10, block: int = 10,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Median and p90 ms per batch size of each engine, timed in alternating blocks of `block` runs (drift on a
    shared machine then hits all of them alike), `repeats` timed runs each."""
    out: dict[str, dict[str, Any]] = {name: {} for name in engines}
    rng = np.random.default_rng(0)
    for b in batch_sizes:
        x = rng.standard_normal((b, *input_shape)).astype(np.float32)
        times: dict[str, list[float]] = {name: [] for name in engines}
        for engine in engines.values():
            for _ in range(warmup):
                engine.run(x)
        while min(len(t) for t in times.values()) < repeats:
            for name, engine in engines.items():
                for _ in range(min(block, repeats - len(times[name]))):
                    t0 = time.perf_counter()
                    engine.run(x)
                    times[name].append((time.perf_counter() - t0) * 1e3)
        for name, t in times.items():
            median = statistics.median(t)
            out[name][str(b)] = {
                "median_ms": median,
                "p90_ms": float(np.percentile(t, 90)),
                "images_per_s": b / (median / 1e3) if median > 0 else math.inf,
            }
    return out


def lower_precision(
    fp32_path: Path, out_path: Path, request: PrecisionRequest, data: DatasetSplits,
    mean: Sequence[float], std: Sequence[float], input_shape: Sequence[int],
) -> dict[str, Any]:  # fmt: skip
    """Write the `request.precision` copy of the FP32 model at `fp32_path` to `out_path` and measure both on the
    request's runtime; return what model.json records under `precisions.<precision>`."""
    info: dict[str, Any] = {}
    if request.precision == "int8":
        batches = calibration_batches(data, mean, std, request.calibration_images, request.seed, input_shape[-1])
        model, q = quantize_int8(fp32_path, batches)
        info = {
            "quantization": q.to_dict(),
            "calibration": {"images": q.calibration_images, "seed": request.seed, "split": "train"},
        }
    elif request.precision == "fp16":
        model = convert_fp16(fp32_path)
        info = {"conversion": "float tensors to fp16, input and output kept fp32"}
    else:
        raise PrunenasError(f"--precision {request.precision!r}: nothing to do for fp32 (model.onnx is fp32)")
    out_path.write_bytes(model)
    provider = request.provider
    fp32 = make_engine(fp32_path, provider, threads=request.threads, spell=runtime_flags)
    low = make_engine(out_path, provider, precision=request.precision, threads=request.threads, spell=runtime_flags)
    labels = data.test.labels.numpy()
    n = len(labels)
    if n == 0:
        raise PrunenasError(f"{data.name} has no test images to measure the {request.precision} model on")
    size = input_shape[-1]
    reference, got = _outputs(fp32, data, mean, std, size), _outputs(low, data, mean, std, size)
    fp32_acc = float(np.mean(reference.argmax(1) == labels))
    low_acc = float(np.mean(got.argmax(1) == labels))
    latency = compare_latency(
        {"fp32": fp32, request.precision: low}, input_shape, request.latency_batches, request.latency_repeats
    )
    speedup = {
        b: latency["fp32"][b]["median_ms"] / v["median_ms"] if v["median_ms"] > 0 else math.inf
        for b, v in latency[request.precision].items()
    }
    return {
        "file": out_path.name,
        "bytes": out_path.stat().st_size,
        "precision": request.precision,
        "runtime": low.name,
        "threads": request.threads,
        **info,
        "test_images": n,
        "dataset": data.name,
        "fp32_test_acc": fp32_acc,
        "test_acc": low_acc,
        "drop_points": 100.0 * (fp32_acc - low_acc),
        "top1_agreement": float(np.mean(reference.argmax(1) == got.argmax(1))),
        "max_abs_logit_diff": float(np.max(np.abs(reference.astype(np.float64) - got))),
        "max_abs_logit": float(np.max(np.abs(reference))),
        "latency": {"fp32": latency["fp32"], request.precision: latency[request.precision], "speedup": speedup},
    }
