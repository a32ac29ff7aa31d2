"""Measured latency of a candidate on the runtime it is deployed to (the `latency` metric).

Protocol, per candidate: the model (random weights: latency depends on the architecture only; density
spaces with their masks folded in) is exported with the fast legacy ONNX exporter into memory and run by
an engine (`prunenas.engines`): ONNX Runtime (graph optimisation ORT_ENABLE_ALL, sequential execution,
intra-op threads pinned and recorded) on the CPU, CUDA or TensorRT, or OpenVINO on the CPU; or by PyTorch
eager (`provider="torch"`). At `precision="int8"` both models are first quantized statically (QDQ,
`prunenas.quantize`) on two seeded random batches (latency does not depend on the calibration's values);
at fp16 the runtime runs them in half precision. After warm-up runs, the candidate and the space's
reference model are timed in alternating rounds in the same window (drift control on a shared machine)
until both have had at least `MIN_ROUNDS` rounds and the timed runs add up to `TIMING_S` seconds: the
result is the candidate's median in ms, the reference's median, the median of the per-round ratios, the
coefficient of variation of the candidate's round medians, the runtime, batch, threads and machine.
Results are cached on disk per machine, runtime (and OpenVINO's version), precision, batch, threads, space and
genotype; the reference's engine is kept for the life of the process (one export per space, not one per
candidate).

Repeatability on the 2-core development VM (benchmarks/latency_predictor.py, results in
benchmarks/results/2026-11-28-cpu-latency-predictor*.md): on the idle machine, 5 measurements of one genotype
vary by 1.9-3.0% in the ratio with 1 thread and by 8-17% with both cores.

The measurement runs in the process that would train the candidate, before training it, so it never
overlaps that process's own training (several search workers on one machine do overlap each other).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunenas import hardware
from prunenas.config import ConfigError, fingerprint
from prunenas.cost import _space_fingerprint
from prunenas.engines import PROVIDERS as ENGINE_PROVIDERS
from prunenas.engines import check_runtime, make_engine, openvino_version
from prunenas.paths import cost_cache_dir
from prunenas.quantize import LATENCY_CALIBRATION_BATCHES, PRECISIONS, quantize_int8

if TYPE_CHECKING:
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space

PROVIDERS = (*ENGINE_PROVIDERS, "torch")
WARMUP = 20
MIN_ROUNDS = 5  # alternating candidate/reference rounds, at least
RUNS_PER_ROUND = 20  # at most (fewer for models whose runs are long)
TIMING_S = 1.2  # seconds of timed runs (both models together) before the measurement stops
MAX_ROUNDS = 200  # ... or this many rounds, whichever comes first
_REFERENCES: dict[tuple[Any, ...], Callable[[], None]] = {}  # the reference's runner, per space and setup


@dataclass(frozen=True)
class LatencyResult:
    ms: float  # the candidate's median over all timed runs
    reference_ms: float  # the reference's median in the same window
    ratio: float  # ms / reference_ms
    cv: float  # coefficient of variation of the candidate's round medians
    provider: str
    batch: int
    threads: int
    machine: str
    runs: int
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> str:
    """The processor the numbers belong to (cache key and provenance)."""

    return f"{hardware.cpu_info().model} x{os.cpu_count()}"


def default_threads() -> int:
    """One thread per core this process may run on (taskset and cpusets count, not the machine's total)."""

    return hardware.available_cores()


def check_provider(
    provider: str, flag: str = "--latency-provider", precision: str = "fp32",
    precision_flag: str = "--latency-precision",
) -> str:  # fmt: skip
    """The provider, if this machine can run it at `precision` (never a silent fallback to another one)."""
    if provider == "torch":
        if precision not in PRECISIONS:
            raise ConfigError(f"{precision_flag} {precision!r} is not one of {', '.join(PRECISIONS)}")
        if precision != "fp32":
            raise ConfigError(
                f"{precision_flag} {precision} times an ONNX engine, not PyTorch eager: pass {flag} cpu or openvino "
                f"(CPU) or tensorrt (GPU)"
            )
        return provider
    if provider not in PROVIDERS:
        raise ConfigError(f"{flag} {provider!r} is not one of {', '.join(PROVIDERS)}")
    return check_runtime(provider, precision, flag=flag, precision_flag=precision_flag)


def runtime_key(provider: str, precision: str = "fp32") -> tuple[str, ...]:
    """What identifies a runtime in cache keys: the provider, the precision unless fp32 (fp32 keys stay as they
    were), and OpenVINO's version (its kernels change between releases)."""
    key: tuple[str, ...] = (provider,) if precision == "fp32" else (provider, precision)
    return (*key, f"openvino {openvino_version()}") if provider == "openvino" else key


def _onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(  # a file object works; the type stub only names paths
            model,
            (example,),
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
        )
    return buffer.getvalue()


def engine_model(model: nn.Module, example: torch.Tensor, precision: str = "fp32") -> bytes:
    """The serialized ONNX model an engine times at `precision`: int8 quantized statically (QDQ) on a few seeded
    random batches (latency does not depend on the calibration's values), fp16 left to the runtime."""
    onnx_model = _onnx_bytes(model.cpu().eval(), example)
    if precision != "int8":
        return onnx_model
    gen = torch.Generator().manual_seed(0)
    calibration = [torch.randn(example.shape, generator=gen).numpy() for _ in range(LATENCY_CALIBRATION_BATCHES)]
    return quantize_int8(onnx_model, calibration)[0]


def runner(
    model: nn.Module, example: torch.Tensor, provider: str, threads: int, precision: str = "fp32"
) -> Callable[[], None]:
    """A function that runs the model once on `example` (for ONNX runtimes: exported, quantized for int8, and
    loaded into an engine)."""
    model = model.cpu().eval()
    if provider == "torch":
        torch.set_num_threads(threads)

        def run_torch() -> None:
            with torch.inference_mode():
                model(example)

        return run_torch
    cache = cost_cache_dir()
    engine = make_engine(
        engine_model(model, example, precision), provider, precision=precision, threads=threads,
        cache=cache / "tensorrt" if cache and provider == "tensorrt" else None, flag="--latency-provider",
    )  # fmt: skip
    feed = example.numpy()

    def run_engine() -> None:
        engine.run(feed)

    return run_engine


def _timed(run: Callable[[], None], n: int) -> Iterator[float]:
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        yield (time.perf_counter() - t0) * 1000.0


def measure(
    model: nn.Module, reference: nn.Module | Callable[[], None], input_shape: tuple[int, ...], *,
    batch: int = 1, provider: str = "cpu", threads: int | None = None, precision: str = "fp32",
) -> LatencyResult:  # fmt: skip
    """Median latency of `model` and of `reference` (a model, or a runner made by `runner` on the same
    batch and precision), timed in alternating rounds after warm-up until `TIMING_S` seconds of runs."""
    if batch < 1:
        raise ConfigError(f"--latency-batch must be >= 1, got {batch}")
    threads = threads or default_threads()
    example = torch.zeros(batch, *input_shape)
    if isinstance(reference, nn.Module):
        reference = runner(reference, example, provider, threads, precision)
    runs = [runner(model, example, provider, threads, precision), reference]
    per_run = 0.0  # ms, the slower model's warm run
    for run in runs:
        warm = list(_timed(run, WARMUP))
        per_run = max(per_run, statistics.median(warm[len(warm) // 2 :]))
    # big models take fewer runs per round, so that MIN_ROUNDS rounds fit in the timing budget
    per_round = max(3, min(RUNS_PER_ROUND, int(TIMING_S * 1000.0 / (2 * MIN_ROUNDS * max(per_run, 1e-3)))))
    rounds: list[list[float]] = [[], []]
    spent = 0.0
    while len(rounds[0]) < MIN_ROUNDS or (spent < TIMING_S * 1000.0 and len(rounds[0]) < MAX_ROUNDS):
        for i, run in enumerate(runs):
            times = list(_timed(run, per_round))
            spent += sum(times)
            rounds[i].append(statistics.median(times))
    cand, ref = statistics.median(rounds[0]), statistics.median(rounds[1])
    spread = statistics.pstdev(rounds[0]) / statistics.mean(rounds[0]) if statistics.mean(rounds[0]) else 0.0
    # the ratio of each round (candidate and reference timed back to back) cancels slow drift of the machine
    ratio = statistics.median(c / r for c, r in zip(rounds[0], rounds[1], strict=True) if r > 0)
    return LatencyResult(
        ms=cand, reference_ms=ref, ratio=ratio, cv=spread, provider=provider,
        batch=batch, threads=threads, machine=machine(), runs=len(rounds[0]) * per_round, precision=precision,
    )  # fmt: skip


def genotype_latency(
    space: Space, genotype: Genotype, num_classes: int, *, batch: int = 1, provider: str = "cpu",
    threads: int | None = None, precision: str = "fp32",
) -> LatencyResult:  # fmt: skip
    """The measured latency of a genotype of `space` at `precision`, with its space's reference (cached on disk)."""

    threads = threads or default_threads()
    key = fingerprint(
        machine(), *runtime_key(provider, precision), batch, threads, _space_fingerprint(space), genotype.key,
        num_classes,
    )  # fmt: skip
    folder = cost_cache_dir()
    path = folder / "latency" / f"{space.slug}-{genotype.key}-{key}.json" if folder else None
    if path is not None and path.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError):
            return LatencyResult(**json.loads(path.read_text(encoding="utf-8")))
    torch.manual_seed(0)
    model = space.export_model(space.build(genotype, num_classes=num_classes))
    ref_key = (_space_fingerprint(space), num_classes, batch, provider, threads, precision)
    if ref_key not in _REFERENCES:
        reference = space.export_model(space.build(space.reference(), num_classes=num_classes))
        example = torch.zeros(batch, *space.input_shape)
        _REFERENCES[ref_key] = runner(reference, example, provider, threads, precision)
    result = measure(
        model, _REFERENCES[ref_key], space.input_shape, batch=batch, provider=provider, threads=threads,
        precision=precision,
    )  # fmt: skip
    if path is not None:
        with contextlib.suppress(OSError):  # a cache: an unwritable home only costs the measurement
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(result.to_dict()), encoding="utf-8")
            os.replace(tmp, path)
    return result
