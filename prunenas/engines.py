"""Inference engines for an ONNX model: ONNX Runtime (CPU, CUDA or TensorRT provider) and OpenVINO (CPU), each at
a precision, behind one small interface (`Engine.run`).

Providers (the `--latency-provider` / `--runtime` vocabulary):
    cpu       ONNX Runtime, CPUExecutionProvider: fp32, and int8 (QDQ models run as VNNI/AMX int8 kernels)
    cuda      ONNX Runtime, CUDAExecutionProvider: fp32, and fp16 (the graph converted to half precision)
    tensorrt  ONNX Runtime, TensorrtExecutionProvider: fp32, fp16 (builder flag), int8 (QDQ: explicit
              quantization); engines cached on disk per model
    openvino  OpenVINO, CPU device: fp32 (precision hint f32: OpenVINO would otherwise run fp32 models in
              bf16 on CPUs with AMX), fp16 (hint f16), int8 (QDQ models, read directly)

An int8 engine takes a model already quantized (`prunenas.quantize.quantize_int8`); `make_engine` never
quantizes. A combination a runtime does not support, or a runtime that is not installed or has no device
here, is refused with one line by `check_runtime` before anything is built, never silently replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prunenas.config import ConfigError
from prunenas.errors import PrunenasError, exception_line
from prunenas.quantize import PRECISIONS, convert_fp16

PROVIDERS = ("cpu", "cuda", "tensorrt", "openvino")
_ORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
#: The precisions each provider runs (others are refused: e.g. ONNX Runtime's CPU provider has almost no fp16
#: kernels, and its CUDA provider runs QDQ models as fp32 with extra operators).
SUPPORTED: dict[str, tuple[str, ...]] = {
    "cpu": ("fp32", "int8"),
    "cuda": ("fp32", "fp16"),
    "tensorrt": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16", "int8"),
}
_OV_HINT = {"fp32": "f32", "fp16": "f16", "int8": "f32"}  # int8: the parts left in float stay fp32
OPENVINO_INSTALL = "pip install 'prunenas[openvino]' (or pip install openvino)"


@dataclass(frozen=True, eq=False)
class Engine:
    """A loaded model: `run(x)` returns its first output for the float32 batch `x`."""

    provider: str  # cpu, cuda, tensorrt, openvino
    precision: str
    name: str  # what actually runs it, e.g. "ONNX Runtime CPUExecutionProvider" or "OpenVINO 2026.4.1 CPU"
    threads: int | None
    _run: Callable[[np.ndarray], np.ndarray]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._run(x)


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return str(ov.get_version()).split("-")[0]


def _cuda_visible() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def check_runtime(
    provider: str, precision: str = "fp32", *, flag: str = "--latency-provider", precision_flag: str = "--precision",
    spell: Callable[[str], str] | None = None,
) -> str:  # fmt: skip
    """`provider` when this machine can run it at `precision`; one line naming the flag otherwise. `spell` turns a
    provider into the flags that choose it, for commands whose flags name runtimes differently (default
    `{flag} {provider}`)."""
    say = spell or (lambda p: f"{flag} {p}")
    if provider not in PROVIDERS:
        raise ConfigError(f"{flag} {provider!r} is not one of {', '.join(PROVIDERS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"{precision_flag} {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision not in SUPPORTED[provider]:
        others = [p for p, precisions in SUPPORTED.items() if precision in precisions]
        raise ConfigError(
            f"{precision_flag} {precision} does not run on {say(provider)} (it runs "
            f"{', '.join(SUPPORTED[provider])}); for {precision} pass {' or '.join(say(p) for p in others)}"
        )
    if provider == "openvino":
        if openvino_version() is None:
            raise ConfigError(f"{say(provider)}: OpenVINO is not installed; {OPENVINO_INSTALL}, or pass {say('cpu')}")
        return provider
    import onnxruntime as ort

    available = ort.get_available_providers()
    if _ORT[provider] not in available:
        raise ConfigError(
            f"{say(provider)}: this onnxruntime has no {_ORT[provider]} (available: {', '.join(available)}); "
            f"pass {say('cpu')} or {say('openvino')}"
        )
    if provider in ("cuda", "tensorrt") and not _cuda_visible():
        raise ConfigError(f"{say(provider)}: no CUDA device is visible here; pass {say('cpu')} or {say('openvino')}")
    return provider


def _fp32_weights(model: bytes) -> bool:
    """Whether a serialized ONNX model holds float32 weights (rank >= 2 initializers)."""
    import onnx

    graph = onnx.load_from_string(model).graph
    return any(len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer)


def _ort_engine(
    model: bytes | str, provider: str, precision: str, threads: int | None, exact: bool, cache: Path | None
) -> Engine:
    import onnxruntime as ort

    if provider == "cuda" and precision == "fp16":
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        model = convert_fp16(data) if _fp32_weights(data) else data  # a model.fp16.onnx is run as it is
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    first: Any = _ORT[provider]
    if provider == "cuda" and exact:
        first = (first, {"use_tf32": "0"})
    elif provider == "tensorrt":
        trt: dict[str, Any] = {"trt_fp16_enable": precision == "fp16", "trt_int8_enable": precision == "int8"}
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache), trt_timing_cache_enable=True)
            trt["trt_timing_cache_path"] = str(cache)
        first = (first, trt)
    providers = [first] + ([] if provider == "cpu" else [_ORT["cpu"]])
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:
        raise PrunenasError(f"ONNX Runtime ({provider}) cannot load the model ({exception_line(exc, 200)})") from None
    if session.get_providers()[0] != _ORT[provider]:
        raise PrunenasError(f"ONNX Runtime could not start {_ORT[provider]} for this model")
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: x})[0])

    return Engine(provider, precision, f"ONNX Runtime {_ORT[provider]}", threads, run)


def _openvino_engine(model: bytes | str, precision: str, threads: int | None) -> Engine:
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_HINT[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = core.compile_model(core.read_model(model), "CPU", config)
    except Exception as exc:
        raise PrunenasError(f"OpenVINO cannot compile the model for the CPU ({exception_line(exc, 200)})") from None
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, copy=True)

    return Engine("openvino", precision, f"OpenVINO {openvino_version()} CPU", threads, run)


def make_engine(
    model: bytes | str | Path,
    provider: str = "cpu",
    *,
    precision: str = "fp32",
    threads: int | None = None,
    exact: bool = False,
    cache: Path | None = None,
    flag: str = "--provider",
    spell: Callable[[str], str] | None = None,
) -> Engine:
    """An engine that runs `model` (serialized ONNX, or a path) on `provider` at `precision` (int8: the model is
    a QDQ model already). `threads`: intra-op threads (None: the runtime's default). `exact`: no TF32 on CUDA
    (fp32 parity checks). `cache`: where TensorRT keeps its engines and timing cache."""
    check_runtime(provider, precision, flag=flag, spell=spell)
    source: bytes | str = model if isinstance(model, bytes) else os.fspath(model)
    if provider == "openvino":
        return _openvino_engine(source, precision, threads)
    return _ort_engine(source, provider, precision, threads, exact, cache)
