"""ONNX Runtime sessions with explicitly chosen providers, input normalization, and latency.

`onnx_latency(path)` (median/p90 ms per batch size) needs no CLI and no PyTorch model.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunenas.errors import PrunenasError, exception_line

log = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


def resolve_providers(provider: str | None = None) -> list[str]:
    """ONNX Runtime providers to ask for, chosen explicitly.

    None/"auto": CUDA (with CPU behind it) only when torch sees a GPU and this onnxruntime has the CUDA
    provider, else CPU only (the GPU wheel logs an error when CUDA is asked for and absent).
    "cpu", "cuda" or a full provider name ask for that provider.
    """
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    if provider is None or provider.lower() == "auto":
        if torch.cuda.is_available() and _CUDA in available:
            return [_CUDA, _CPU]
        return [_CPU]
    name = {"cpu": _CPU, "cuda": _CUDA}.get(provider.lower(), provider)
    if name not in available:
        raise PrunenasError(
            f"ONNX Runtime provider {provider!r} is not available in this onnxruntime; available: "
            f"{', '.join(available)}; pass --provider auto or cpu"
        )
    if name == _CUDA and not torch.cuda.is_available():
        raise PrunenasError("provider 'cuda' asked for but no CUDA device is visible here; pass --provider cpu")
    return [name] if name == _CPU else [name, _CPU]


def make_session(
    path: str | Path, provider: str | None = None, *, threads: int | None = None, exact: bool = False
) -> Any:
    """An onnxruntime.InferenceSession with explicitly chosen providers.

    `exact` turns TF32 off on CUDA (for fp32 parity checks). Check `session.get_providers()[0]` for the
    provider actually used: ONNX Runtime falls back to CPU silently.
    """
    import onnxruntime as ort

    providers = resolve_providers(provider)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = int(threads)
    chosen: list[Any] = [(p, {"use_tf32": "0"}) if exact and p == _CUDA else p for p in providers]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:
        raise PrunenasError(
            f"ONNX Runtime cannot load {str(path)!r} ({exception_line(exc, 200)}); it is not a valid ONNX model: "
            "export it again with `prunenas export RUN_DIR`"
        ) from None
    used = session.get_providers()[0]
    if used != providers[0]:
        log.warning("ONNX Runtime asked for %s but runs on %s", providers[0], used)
    return session


def normalize_images(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, 3, H, W) images -> float32 (x / 255 - mean) / std, computed as the trainer does."""
    mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.addcmul(-mean_t / std_t, x.to(torch.float32), 1.0 / (255.0 * std_t))
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


# --------------------------------------------------------------------------------------------- latency


def _check_latency_args(batch_sizes: Sequence[int], repeats: int, warmup: int) -> None:
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise PrunenasError(f"latency batch sizes must be positive integers, got {list(batch_sizes)!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise PrunenasError(f"latency repeats must be a positive integer, got {repeats!r}; pass e.g. --repeats 50")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise PrunenasError(f"latency warmup must be an integer >= 0, got {warmup!r}")


def onnx_latency(
    path: str | Path,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 50,
    warmup: int = 10,
    provider: str | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Wall-clock latency of one `session.run` per batch size on random inputs.

    Returns {"provider" (actually used), "intra_op_threads" (None: ONNX Runtime's default, one per
    physical core), "cpu_count", "repeats", "warmup", "onnxruntime", "per_batch": {"1": {"median_ms",
    "p90_ms", "mean_ms", "min_ms", "images_per_s"}, ...}}. On CUDA the times include the host<->device
    copies of inputs and logits.
    """
    import onnxruntime as ort

    _check_latency_args(batch_sizes, repeats, warmup)
    p = Path(path)
    if not p.is_file():
        raise PrunenasError(f"ONNX file {str(p)!r} does not exist; pass a model.onnx written by `prunenas export`")
    session = make_session(p, provider, threads=threads)
    meta = session.get_inputs()[0]
    rest = [int(d) if isinstance(d, int) else None for d in meta.shape[1:]]
    if any(d is None for d in rest):
        raise PrunenasError(f"{str(p)!r} has dynamic non-batch input dims {meta.shape}; only the batch may be dynamic")
    rng = np.random.default_rng(seed)
    per_batch: dict[str, Any] = {}
    for b in batch_sizes:
        x = rng.standard_normal((b, *[int(d) for d in rest if d is not None])).astype(np.float32)
        feed = {meta.name: x}
        for _ in range(warmup):
            session.run(None, feed)
        times = np.empty(repeats)
        for i in range(repeats):
            t0 = time.perf_counter()
            session.run(None, feed)
            times[i] = (time.perf_counter() - t0) * 1e3
        median = float(np.median(times))
        per_batch[str(b)] = {
            "median_ms": median,
            "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()),
            "min_ms": float(times.min()),
            "images_per_s": b / (median / 1e3) if median > 0 else math.inf,
        }
    return {
        "provider": session.get_providers()[0],
        "intra_op_threads": threads,
        "cpu_count": os.cpu_count(),
        "repeats": repeats,
        "warmup": warmup,
        "onnxruntime": ort.__version__,
        "per_batch": per_batch,
    }
