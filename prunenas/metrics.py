"""Metrics: the numbers a search optimises (`--objectives`) or limits (`--max`).

A metric has a name, a direction, a unit and a `measure` function. Built-ins: `val_acc` (validation
accuracy of the trained candidate), `macs` and `params` (counted from the genotype, before training).
Third-party metrics subclass `Metric` and add one line under
`[project.entry-points."prunenas.metrics"]`; `prunenas.testing.MetricContract` checks them.

A metric measured before training (`after_training = False`) lets the search refuse a candidate over
a limit without training it. A limit is absolute (`params=1.2e6`, `macs=50M`) or relative to the
space's reference model (`macs=0.5x`).

A metric with options declares them as its own small Config (`options_class`): `prunenas search` gets one
flag per option under the metric's name (`--latency-batch`), a study stores them in its identity while the
metric is measured, and `MetricContext.options` hands them to `measure` (`Metric.options_in`).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from prunenas.config import Config, ConfigError, setting
from prunenas.plugins import METRICS, named_classes

if TYPE_CHECKING:
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space
    from prunenas.train import TrainResult

Direction = Literal["maximize", "minimize"]
_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


@dataclass(frozen=True)
class MetricContext:
    """What a metric may look at: the candidate's space and genotype, the number of classes of the data,
    and after training the run's result."""

    space: Space
    genotype: Genotype
    num_classes: int
    result: TrainResult | None = None
    #: The options of the metrics that declare some, by metric name (`Metric.options_in` reads a metric's own).
    options: Mapping[str, Config] = field(default_factory=dict)


class Metric(ABC):
    """Base class of every metric."""

    name: ClassVar[str] = ""
    direction: ClassVar[Direction] = "minimize"
    #: Unit of the value as measured ("" for plain numbers and fractions).
    unit: ClassVar[str] = ""
    #: Human name for tables and plot axes.
    label: ClassVar[str] = ""
    #: True when the value needs the trained candidate (it cannot rule a candidate out before training).
    after_training: ClassVar[bool] = False
    #: The value an objective takes for a candidate that was never trained (infeasible).
    worst: ClassVar[float] = math.nan
    #: True when the value depends on how it is measured (runtime, batch, ...): tables then carry a
    #: `<name>_setup` column and plots name the setup (`setup()`).
    has_setup: ClassVar[bool] = False

    #: The metric's options, a Config subclass (None: it takes none).
    options_class: ClassVar[type[Config] | None] = None

    def options_in(self, options: Mapping[str, Config] | None) -> Any:
        """This metric's options in a table of every metric's (`MetricContext.options`); its defaults when the
        table has none (None for a metric without options)."""
        given = (options or {}).get(self.name)
        if given is not None:
            return given
        return self.options_class() if self.options_class is not None else None

    def check_options(self, options: Config, limits: Sequence[Limit]) -> None:
        """Refuse options that cannot apply under the search's `limits` (ConfigError naming the flag)."""
        return None

    def prepare(self, options: Mapping[str, Config]) -> None:
        """Check, before a search trains anything, that this metric can be measured (e.g. its runtime is
        installed); raise a PrunenasError that says what to do."""
        return None

    def screen(
        self, space: Space, genotype: Genotype, options: Mapping[str, Config], limit: float, reference: float
    ) -> float | None:
        """A cheap estimate of this metric that is over `limit` beyond doubt (the candidate is then recorded
        infeasible, neither measured nor trained), else None: measure it. `reference`: the reference model's
        value. Default: no estimate."""
        return None

    def setup(self, options: Mapping[str, Config]) -> str:
        """How this metric is measured under `options`, for tables and plot labels ("" when fixed)."""
        return ""

    @abstractmethod
    def measure(self, ctx: MetricContext) -> float:
        """The metric of one candidate."""

    def reference_value(
        self, space: Space, num_classes: int, options: Mapping[str, Config] | None = None
    ) -> float | None:
        """The value of the space's reference model (for relative limits and ratio columns), or None
        when it cannot be had without training."""
        if self.after_training:
            return None
        return self.measure(MetricContext(space, space.reference(), num_classes, options=options or {}))

    def parse_amount(self, text: str) -> float:
        """An amount in this metric's unit, as a user writes it: 1.2e6, 50M, 0.3G (SI suffixes)."""
        m = re.fullmatch(r"\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*([kKMGT]?)\s*", text)
        if not m:
            raise ValueError(f"{text!r} is not a number (SI suffixes k, M, G allowed)")
        return float(m.group(1)) * _SI[m.group(2)]

    def format(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.4g}{(' ' + self.unit) if self.unit else ''}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "unit": self.unit,
            "label": self.label or self.name,
            "after_training": self.after_training,
        }


def _human(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n:.0f}"


class ValAccuracy(Metric):
    name = "val_acc"
    direction = "maximize"
    label = "validation accuracy"
    after_training = True
    worst = 0.0

    def measure(self, ctx: MetricContext) -> float:
        if ctx.result is None or ctx.result.val_acc is None:
            return self.worst
        return float(ctx.result.val_acc)

    def format(self, value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"


class ValMeanIoU(ValAccuracy):
    """The validation mean IoU of a segmentation candidate (the score its run stores as `val_acc`)."""

    name = "val_miou"
    label = "validation mean IoU"


class ValMAP(ValMeanIoU):
    """The validation COCO mAP@[.5:.95] of a detection candidate (the score its run stores as `val_acc`)."""

    name = "val_map"
    label = "validation mAP@[.5:.95]"


class _CostMetric(Metric):
    """Counted from the genotype with fvcore (the MACs convention of Li et al.; see prunenas.cost)."""

    field: ClassVar[str] = "macs"

    def measure(self, ctx: MetricContext) -> float:
        from prunenas.cost import genotype_cost

        return float(getattr(genotype_cost(ctx.space, ctx.genotype, num_classes=ctx.num_classes), self.field))

    def format(self, value: float | None) -> str:
        return "-" if value is None else _human(value)


class Macs(_CostMetric):
    name = "macs"
    unit = "MACs"
    label = "MACs (multiply-accumulates, batch 1)"
    field = "macs"


class Params(_CostMetric):
    name = "params"
    unit = "params"
    label = "parameters"
    field = "params"


# = prunenas.latency.PROVIDERS and prunenas.quantize.PRECISIONS (not imported here: they load torch; a test checks)
PROVIDERS = ("cpu", "cuda", "tensorrt", "openvino", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class LatencyOptions(Config):
    """The options of the latency metric (`prunenas search --latency-*`)."""

    cli_group: ClassVar[str] = "latency metric (with a latency objective or limit)"

    batch: int = setting(1, "batch size of the latency metric", low=1, high=4096, metavar="N")
    threads: int | None = setting(
        None, "intra-op threads of the latency metric (default: one per core this process may use; on a small "
        "shared machine 1 thread measures far more repeatably)", low=1, high=1024, metavar="N", omit_default=True,
    )  # fmt: skip
    provider: str = setting(
        "cpu", "runtime of the latency metric: ONNX Runtime cpu, cuda or tensorrt, OpenVINO on the CPU (openvino, "
        "the extra prunenas[openvino]), or torch (eager)",
        choices=PROVIDERS,
    )  # fmt: skip
    precision: str = setting(
        "fp32", "precision of the engine the latency metric times: fp32; int8 (each candidate quantized statically "
        "to QDQ on a few seeded batches: latency does not depend on their values; cpu, openvino, tensorrt); fp16 "
        "(openvino, cuda, tensorrt)",
        choices=PRECISIONS, omit_default=True,
    )  # fmt: skip
    predictor: bool = setting(
        False,
        "with --max latency=...: predict each candidate's latency first (a predictor calibrated once per space by "
        "timing 24 genotypes, cached) and record it infeasible untimed and untrained when the prediction is over "
        "the limit by more than the predictor's 90th-percentile error; others are timed",
        identity=False,
    )


class Latency(Metric):
    """Measured latency in ms on the deployment runtime (`prunenas.latency`): ONNX Runtime on the CPU by
    default; its options (`LatencyOptions`): batch (1), provider (cpu, cuda, tensorrt, openvino, torch), precision
    (fp32, fp16, int8), threads (None: one per core this process may use) and predictor (screen candidates over a
    latency limit)."""

    name = "latency"
    unit = "ms"
    label = "latency (ms)"
    has_setup = True
    options_class = LatencyOptions
    _UNITS: ClassVar[dict[str, float]] = {"ms": 1.0, "us": 1e-3, "s": 1e3}

    def __init__(self) -> None:
        self._predictors: dict[tuple[Any, ...], Any] = {}

    def measure(self, ctx: MetricContext) -> float:
        from prunenas.latency import genotype_latency

        o: LatencyOptions = self.options_in(ctx.options)
        result = genotype_latency(
            ctx.space, ctx.genotype, ctx.num_classes, batch=o.batch, provider=o.provider, threads=o.threads,
            precision=o.precision,
        )  # fmt: skip
        return result.ms

    def check_options(self, options: Config, limits: Sequence[Limit]) -> None:
        assert isinstance(options, LatencyOptions)
        if options.predictor and not any(lim.metric == self.name and not lim.lower for lim in limits):
            raise ConfigError(
                "--latency-predictor does not apply without a --max latency=... limit (it discards the candidates "
                "predicted over that limit untimed); leave it out"
            )

    def prepare(self, options: Mapping[str, Config]) -> None:
        from prunenas.latency import check_provider

        o: LatencyOptions = self.options_in(options)
        check_provider(o.provider, precision=o.precision)  # one line now, not a failure in the first trial

    def screen(
        self, space: Space, genotype: Genotype, options: Mapping[str, Config], limit: float, reference: float
    ) -> float | None:
        """With `predictor` on: the predicted latency when it is over `limit` by more than the predictor's
        90th-percentile error."""
        o: LatencyOptions = self.options_in(options)
        if not o.predictor or not reference:
            return None
        key = (space.name, o.provider, o.precision, o.batch, o.threads)
        if key not in self._predictors:
            from prunenas.latency_model import latency_predictor

            self._predictors[key] = latency_predictor(
                space, provider=o.provider, batch=o.batch, threads=o.threads, precision=o.precision
            )
        predictor = self._predictors[key]
        ratio = predictor.ratio(space, genotype)
        return float(ratio * reference) if predictor.confidently_over(ratio, limit / reference) else None

    def setup(self, options: Mapping[str, Config]) -> str:
        from prunenas.latency import default_threads, machine

        o: LatencyOptions = self.options_in(options)
        runtime = {"torch": "PyTorch eager", "openvino": "OpenVINO CPU"}.get(o.provider, f"ONNX Runtime {o.provider}")
        return f"{runtime} {o.precision}, batch {o.batch}, {o.threads or default_threads()} threads, {machine()}"

    def parse_amount(self, text: str) -> float:
        """8ms, 800us, 0.01s or a plain number of ms."""
        m = re.fullmatch(r"\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|s)?\s*", text)
        if not m:
            raise ValueError(f"{text!r} is not a duration (write e.g. 8ms, 800us or 0.01s)")
        return float(m.group(1)) * self._UNITS[m.group(2) or "ms"]

    def format(self, value: float | None) -> str:
        return "-" if value is None else f"{value:.3g} ms"


# -- registry -------------------------------------------------------------------------------------------------
@cache
def _registry() -> dict[str, type[Metric]]:
    return named_classes(METRICS, Metric, "metric")  # type: ignore[type-abstract]


def metric_names() -> list[str]:
    return sorted(_registry())


def metric_options() -> dict[str, type[Config]]:
    """The options class of every registered metric that takes options, by metric name."""
    return {name: cls.options_class for name, cls in _registry().items() if cls.options_class is not None}


def get_metric(name: str, flag: str = "--objectives") -> Metric:
    cls = _registry().get(name)
    if cls is None:
        raise ConfigError(f"{flag}: unknown metric {name!r}; valid metrics: {', '.join(metric_names())}")
    return cls()


def clear_cache() -> None:
    _registry.cache_clear()


# -- limits ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limit:
    """A limit on a metric that is minimised: an upper one (`--max`), or with `lower` a lower one (`--min`,
    which with a `--max` keeps a search in a band); absolute, or `relative` to the reference model's value."""

    metric: str
    value: float
    relative: bool = False
    lower: bool = False

    @property
    def flag(self) -> str:
        return "--min" if self.lower else "--max"

    @classmethod
    def parse(cls, text: str, flag: str = "--max") -> Limit:
        """`macs=0.5x`, `params=1.2e6`, `macs=50M`; a lower limit when `flag` is --min."""
        name, sep, amount = text.partition("=")
        name, amount = name.strip(), amount.strip()
        if not sep or not name or not amount:
            raise ConfigError(f"{flag} {text!r} must look like METRIC=VALUE, e.g. {flag} macs=0.5x or params=1.2e6")
        metric = get_metric(name, flag)
        if metric.direction != "minimize":
            raise ConfigError(f"{flag} {text!r}: {name} is maximised; limits apply to metrics that are minimised")
        relative = amount.endswith("x")
        try:
            value = float(amount[:-1]) if relative else metric.parse_amount(amount)
        except ValueError as exc:
            raise ConfigError(
                f"{flag} {text!r}: {exc}; write e.g. {name}=0.5x (of the reference) or {name}=1.2e6"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{flag} {text!r}: the limit must be a positive finite number")
        return cls(name, value, relative, lower=flag == "--min")

    def text(self) -> str:
        """METRIC=VALUE as given to its flag (the flag itself not included)."""
        return f"{self.metric}={self.value:g}{'x' if self.relative else ''}"

    def absolute(self, reference: float | None) -> float:
        if not self.relative:
            return self.value
        if reference is None:
            raise ConfigError(
                f"{self.flag} {self.text()}: {self.metric} has no reference value; give an absolute limit"
            )
        return self.value * reference
