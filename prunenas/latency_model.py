"""A cheap latency predictor for inner loops (proposers' bisection, the search's early discard).

Measuring a candidate takes seconds (`prunenas.latency`); a proposer hitting a latency target, or a
search discarding hopeless candidates before training, needs thousands of estimates. The predictor is a
per-space linear model of features counted from the built model with forward hooks (no runtime):

    dense conv MACs, grouped/depthwise conv MACs, linear MACs   (compute)
    output elements of every conv/linear layer                   (memory traffic)
    conv/linear weights                                          (weight traffic)
    1                                                            (fixed cost per inference)

fitted with non-negative coefficients (so more of anything never predicts faster) to the measured
latency ratios (candidate over the reference timed in the same window) of a calibration set: the
reference, the smallest genotype, uniform scalings and seeded random genotypes. Milliseconds are the
predicted ratio times the reference's median over the calibration windows. Fitting the ratio, the drift-
controlled quantity, instead of milliseconds cut the held-out median ratio error on resnet56_channels
from 29% to 6% (the re-measurement floor: 7%) and on MobileNetV2 from 3.6% to 3.4%
(benchmarks/results/2026-11-28-cpu-latency-fit-target.md). It is built once per space, runtime, batch,
threads and machine, and kept on disk beside the latency cache. Its leave-one-out relative error on the
calibration set is stored with it: the search discards a candidate without training only when the
prediction exceeds the limit by more than that error (`confidently_over`), and measures it otherwise.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunenas.config import fingerprint
from prunenas.cost import _space_fingerprint
from prunenas.latency import check_provider, default_threads, genotype_latency, machine, runtime_key
from prunenas.paths import cost_cache_dir

if TYPE_CHECKING:
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space

FEATURES = ("dense_macs", "grouped_macs", "linear_macs", "activations", "weights", "constant")
CALIBRATION = 24  # genotypes measured to fit a predictor
TARGET = "ratio"  # what the coefficients predict (part of the cache key: predictors fitted to ms are not read)
_SCALE = 1e-6  # features in millions keep the least-squares problem well conditioned


def features(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> list[float]:
    """The predictor's features of `model` on a batch of `batch` inputs (masked layers count by density)."""
    totals = dict.fromkeys(FEATURES, 0.0)
    totals["constant"] = 1.0 / _SCALE

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        mask = getattr(module, "weight_mask", None)
        density = float(mask.mean()) if isinstance(mask, torch.Tensor) else 1.0
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        if isinstance(module, nn.Conv2d):
            macs = output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
            totals["dense_macs" if module.groups == 1 else "grouped_macs"] += macs * density
        else:
            totals["linear_macs"] += output.numel() * weight.shape[1] * density
        totals["activations"] += output.numel()
        totals["weights"] += weight.numel() * density

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(batch, *input_shape))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return [totals[f] * _SCALE for f in FEATURES]


def _feature_model(space: Space, genotype: Genotype) -> nn.Module:
    """The model whose layers the features count (`Space.latency_features_model`: density spaces' own model,
    whose masks the features weight by density)."""
    return space.latency_features_model(genotype)


def _nnls(rows: Sequence[Sequence[float]], targets: Sequence[float]) -> list[float]:
    """Least squares with non-negative coefficients (active set: drop the most negative, refit)."""
    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(targets, dtype=torch.float64).unsqueeze(1)
    active = list(range(a.shape[1]))
    while active:
        sol = torch.linalg.lstsq(a[:, active], b, driver="gelsd").solution.squeeze(1)
        if bool((sol >= 0).all()):
            coef = [0.0] * a.shape[1]
            for i, v in zip(active, sol.tolist(), strict=True):
                coef[i] = float(v)
            return coef
        active.pop(int(torch.argmin(sol)))
    return [0.0] * a.shape[1]


@dataclass(frozen=True)
class LatencyPredictor:
    """Predicted latency (ms) of a space's genotypes on one runtime, batch, thread count and machine."""

    space: str
    provider: str
    batch: int
    threads: int
    machine: str
    coefficients: tuple[float, ...]  # of the latency ratio on the features
    reference_ms: float  # the reference's measured median (ms = ratio x reference_ms)
    calibration: int  # genotypes measured to fit it
    loo_median: float  # leave-one-out relative error on the calibration set: median
    loo_p90: float  # ... and 90th percentile (the margin of `confidently_over`)
    precision: str = "fp32"  # of the engines timed (fp32, fp16, int8)

    def predict_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        """Predicted ms of `model`."""
        return self._ratio(features(model, input_shape, self.batch)) * self.reference_ms

    def _ratio(self, feats: Sequence[float]) -> float:
        return sum(c * f for c, f in zip(self.coefficients, feats, strict=True))

    def predict(self, space: Space, genotype: Genotype) -> float:
        """Predicted ms of a genotype."""
        return self.predict_model(_feature_model(space, genotype), space.input_shape)

    def ratio(self, space: Space, genotype: Genotype) -> float:
        """Predicted latency of a genotype relative to the space's reference."""
        return self._ratio(features(_feature_model(space, genotype), space.input_shape, self.batch))

    def confidently_over(self, predicted_ms: float, limit_ms: float) -> bool:
        """Whether a prediction is over `limit_ms` by more than the predictor's 90th-percentile error."""
        return predicted_ms > limit_ms * (1.0 + self.loo_p90)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_genotypes(space: Space, n: int = CALIBRATION) -> list[Genotype]:
    """The reference, the smallest genotype, uniform scalings and seeded random genotypes (n in all)."""
    out = [space.reference(), space.smallest_genotype()]
    for fraction in (0.35, 0.55, 0.75, 0.9):
        values = {g.name: g.snap(float(g.reference) * fraction) if g.kind == "int" else g.snap(fraction)
                  for g in space.genes}  # fmt: skip
        out.append(space.make(values, origin="calibration"))
    seed = 0
    keys = {g.key for g in out}
    while len(out) < n and seed < 10 * n:
        g = space.random_genotype(10_000 + seed)
        seed += 1
        if g.key not in keys:
            keys.add(g.key)
            out.append(g)
    unique = list({g.key: g for g in out}.values())
    return unique[:n]


def fit_predictor(
    space: Space,
    ratios: Mapping[str, float],
    genotypes: Sequence[Genotype],
    *,
    reference_ms: float,
    provider: str,
    batch: int,
    threads: int,
    machine: str,
) -> LatencyPredictor:
    """A predictor fitted to measured latency `ratios` (genotype key -> ms over the reference's ms in the
    same window) of `genotypes`; `reference_ms` turns ratios into milliseconds."""
    rows = [features(_feature_model(space, g), space.input_shape, batch) for g in genotypes]
    y = [ratios[g.key] for g in genotypes]
    coef = _nnls(rows, y)
    errors = []
    for i in range(len(rows)):  # leave-one-out
        c = _nnls(rows[:i] + rows[i + 1 :], y[:i] + y[i + 1 :])
        pred = sum(a * b for a, b in zip(c, rows[i], strict=True))
        errors.append(abs(pred - y[i]) / y[i] if y[i] > 0 else 0.0)
    errors.sort()
    p90 = errors[min(len(errors) - 1, math.ceil(0.9 * len(errors)) - 1)] if errors else math.inf
    return LatencyPredictor(
        space=space.name, provider=provider, batch=batch, threads=threads, machine=machine,
        coefficients=tuple(coef), reference_ms=reference_ms, calibration=len(genotypes),
        loo_median=errors[len(errors) // 2] if errors else math.inf, loo_p90=p90,
    )  # fmt: skip


def latency_predictor(
    space: Space,
    *,
    provider: str = "cpu",
    batch: int = 1,
    threads: int | None = None,
    calibration: int | None = None,
    log: Callable[[str], None] | None = None,
    precision: str = "fp32",
) -> LatencyPredictor:
    """The space's predictor for this runtime, precision, batch, threads and machine: read from disk, or built by
    measuring `calibration` genotypes (each measurement is cached too) and kept on disk. Each precision has its
    own predictor: an int8 engine's latency is not a scaled fp32 latency."""

    check_provider(provider, precision=precision)
    threads = threads or default_threads()
    calibration = calibration or CALIBRATION
    where = machine()
    key = fingerprint(
        where, *runtime_key(provider, precision), batch, threads, _space_fingerprint(space), calibration, FEATURES,
        TARGET,
    )  # fmt: skip
    folder = cost_cache_dir()
    path = folder / "latency" / f"predictor-{space.slug}-{key}.json" if folder else None
    if path is not None and path.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(path.read_text(encoding="utf-8"))
            data["coefficients"] = tuple(data["coefficients"])
            return LatencyPredictor(**data)
    genotypes = calibration_genotypes(space, calibration)
    ratios, reference_ms = {}, []
    for i, g in enumerate(genotypes):
        if log is not None:
            log(f"latency predictor for {space.name}: measuring calibration genotype {i + 1}/{len(genotypes)}")
        result = genotype_latency(
            space, g, space.num_classes, batch=batch, provider=provider, threads=threads, precision=precision
        )
        ratios[g.key] = result.ratio
        reference_ms.append(result.reference_ms)
    predictor = fit_predictor(
        space, ratios, genotypes, reference_ms=statistics.median(reference_ms), provider=provider,
        batch=batch, threads=threads, machine=where,
    )  # fmt: skip
    predictor = replace(predictor, precision=precision)
    if path is not None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(predictor.to_dict()), encoding="utf-8")
            os.replace(tmp, path)
    return predictor
