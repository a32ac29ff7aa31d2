"""A serialized TensorRT engine next to the export (`prunenas export RUN_DIR --engine tensorrt`).

The engine is built with TensorRT's Python API from the export's ONNX file at the export's precision: fp32 from
model.onnx, fp16 from model.onnx with the builder's FP16 flag, int8 from model.int8.onnx (a QDQ model: explicit
quantization, no calibrator) with the INT8 flag. One optimization profile covers batch 1 to `max_batch` (optimum
at batch 1, the latency case). An engine belongs to the GPU and TensorRT version that built it: both are recorded.
TensorRT needs an NVIDIA GPU; without it, or without the `tensorrt` package, the export refuses `--engine` in one
line before it starts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prunenas.errors import PrunenasError, exception_line

ENGINES = ("tensorrt",)
MAX_BATCH = 64


def engine_file(precision: str) -> str:
    return f"model.{precision}.plan"


def check_engine(engine: str | None) -> None:
    """Refuse an `--engine` this machine cannot build (one line), before the export starts."""
    if engine is None:
        return
    if engine not in ENGINES:
        raise PrunenasError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}; pass --engine tensorrt")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise PrunenasError(
            "--engine tensorrt: TensorRT is not installed here (pip install tensorrt, on a machine with an NVIDIA "
            "GPU); leave --engine out to export ONNX only"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise PrunenasError("--engine tensorrt: no CUDA device is visible here; TensorRT builds engines on the GPU")


def build_engine(
    onnx_path: Path, out_path: Path, precision: str, input_shape: tuple[int, int, int], max_batch: int = MAX_BATCH
) -> dict[str, Any]:
    """Build and write a serialized TensorRT engine of `onnx_path`; return what model.json records."""
    import tensorrt as trt
    import torch

    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT < 10 needs it
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))[:300]
        raise PrunenasError(f"TensorRT cannot parse {onnx_path.name} ({errors})")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # the QDQ nodes carry the scales
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, *input_shape), (1, *input_shape), (max_batch, *input_shape))
    config.add_optimization_profile(profile)
    try:
        serialized = builder.build_serialized_network(network, config)
    except Exception as exc:
        raise PrunenasError(
            f"TensorRT could not build an engine of {onnx_path.name} ({exception_line(exc, 200)})"
        ) from None
    if serialized is None:
        raise PrunenasError(f"TensorRT could not build an engine of {onnx_path.name} (see its log above)")
    out_path.write_bytes(bytes(serialized))
    return {
        "file": out_path.name,
        "bytes": out_path.stat().st_size,
        "from": onnx_path.name,
        "precision": precision,
        "batch_profile": {"min": 1, "opt": 1, "max": max_batch},
        "tensorrt": str(trt.__version__),
        "gpu": torch.cuda.get_device_name(),
        "seconds": time.perf_counter() - t0,
    }
