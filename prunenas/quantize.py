"""Lower-precision copies of an ONNX model: static INT8 (QDQ) with ONNX Runtime's quantization tools, and fp16.

INT8 (`quantize_int8`): post-training static quantization. The fp32 model is first pre-processed
(`quant_pre_process`: shape inference and graph clean-up; a model it cannot pre-process is quantized
without it, and that is recorded), then `quantize_static` inserts QuantizeLinear/DequantizeLinear pairs
(QDQ format) with per-channel int8 weights and uint8 activations whose ranges are the min/max seen on
the calibration batches. QDQ models run as int8 kernels on ONNX Runtime's CPU provider (VNNI/AMX
where present), on OpenVINO and on TensorRT (explicit quantization, no calibrator). On a CPU without
VNNI, uint8 x int8 products can saturate, so the weights' range is reduced to 7 bits there
(`reduce_range`), as ONNX Runtime advises.

fp16 (`convert_fp16`): every float tensor of the graph in half precision, inputs and outputs kept fp32
(for ONNX Runtime on CUDA; OpenVINO and TensorRT take an fp32 model and a precision hint instead).

Both take and return the serialized model (bytes) and never modify the fp32 model they were given.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prunenas import hardware
from prunenas.errors import PrunenasError, exception_line
from prunenas.progress import quiet_logs

PRECISIONS = ("fp32", "fp16", "int8")
#: Calibration batches the latency metric quantizes a candidate with (latency does not depend on their values).
LATENCY_CALIBRATION_BATCHES = 2


class QuantizationError(PrunenasError):
    """The quantizer could not handle a model (an operator or a graph it does not support)."""


@dataclass(frozen=True)
class QuantizationInfo:
    """How a model was quantized (recorded beside the figures)."""

    method: str  # "onnxruntime static QDQ"
    weights: str  # "int8 per-channel (symmetric)"
    activations: str  # "uint8 per-tensor (min/max calibration)"
    reduce_range: bool
    preprocessed: bool  # quant_pre_process ran (else: why not, in `preprocess_skipped`)
    preprocess_skipped: str | None
    calibration_batches: int
    calibration_images: int
    quantized_nodes: int  # QuantizeLinear nodes in the result
    onnxruntime: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_precision(precision: str, flag: str = "--precision") -> str:
    if precision not in PRECISIONS:
        raise PrunenasError(f"{flag} {precision!r} is not one of {', '.join(PRECISIONS)}; pass e.g. {flag} int8")
    return precision


def _quiet() -> contextlib.AbstractContextManager[None]:
    """ONNX Runtime's quantizer logs advice and progress at INFO/WARNING level; keep errors only."""
    return quiet_logs("", "onnxruntime", "onnxruntime.quantization")


def _model_bytes(model: bytes | str | Path) -> bytes:
    if isinstance(model, bytes):
        return model
    try:
        return Path(model).read_bytes()
    except OSError as exc:
        raise PrunenasError(f"cannot read ONNX model {str(model)!r} ({type(exc).__name__}); export it again") from None


def _input_name(model: bytes) -> str:
    import onnx

    graph = onnx.load_from_string(model).graph
    initializers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    if len(names) != 1:
        raise QuantizationError(f"the model has inputs {names}; the quantizer here takes models with one image input")
    return names[0]


def quantize_int8(
    model: bytes | str | Path, calibration: Sequence[np.ndarray], *, reduce_range: bool | None = None
) -> tuple[bytes, QuantizationInfo]:
    """The static INT8 (QDQ) quantization of an fp32 ONNX model, calibrated on `calibration` (float32 input
    batches, already normalized as the model expects). `reduce_range` None: on where the CPU lacks VNNI.

    Raises PrunenasError when there is no calibration batch, QuantizationError when the quantizer fails.
    """
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches or any(b.ndim < 1 or b.shape[0] < 1 for b in batches):
        raise PrunenasError(
            "INT8 quantization needs at least one calibration image; pass --calibration-images 1 or more"
        )
    data = _model_bytes(model)
    name = _input_name(data)
    if reduce_range is None:
        reduce_range = not hardware.cpu_info().vnni

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {name: batch}

    t0 = time.perf_counter()
    skipped: str | None = None
    with tempfile.TemporaryDirectory(prefix="prunenas-quant-") as tmp, _quiet():
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(data)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except Exception as exc:  # quantizing without it is still valid, only less well fused
            skipped = exception_line(exc)
            pre = src
        try:
            quantize_static(
                str(pre),
                str(out),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
            result = out.read_bytes()
        except Exception as exc:
            raise QuantizationError(
                f"ONNX Runtime's quantizer cannot handle this model ({exception_line(exc)})"
            ) from None
    import onnx

    nodes = sum(1 for n in onnx.load_from_string(result).graph.node if n.op_type == "QuantizeLinear")
    if nodes == 0:
        raise QuantizationError("ONNX Runtime's quantizer quantized no operator of this model")
    info = QuantizationInfo(
        method="onnxruntime static QDQ",
        weights="int8 per-channel (symmetric)",
        activations="uint8 per-tensor (min/max calibration)",
        reduce_range=bool(reduce_range),
        preprocessed=skipped is None,
        preprocess_skipped=skipped,
        calibration_batches=len(batches),
        calibration_images=int(sum(b.shape[0] for b in batches)),
        quantized_nodes=nodes,
        onnxruntime=str(ort_version),
        seconds=time.perf_counter() - t0,
    )
    return result, info


def convert_fp16(model: bytes | str | Path) -> bytes:
    """The model with its float tensors in fp16, inputs and outputs kept fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with _quiet():
            half = convert_float_to_float16(onnx.load_from_string(_model_bytes(model)), keep_io_types=True)
    except Exception as exc:
        raise QuantizationError(f"cannot convert this model to fp16 ({exception_line(exc)})") from None
    return bytes(half.SerializeToString())
