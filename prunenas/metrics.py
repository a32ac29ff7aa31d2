"""Metrics: the numbers a search optimises (`--objectives`) or limits (`--max`).

A metric has a name, a direction, a unit and a `measure` function. Built-ins: `val_acc` (validation
accuracy of the trained candidate), `macs` and `params` (counted from the genotype, before training).
Third-party metrics subclass `Metric` and add one line under
`[project.entry-points."prunenas.metrics"]`; `prunenas.testing.MetricContract` checks them.

A metric measured before training (`after_training = False`) lets the search refuse a candidate over
a limit without training it. A limit is absolute (`params=1.2e6`, `macs=50M`) or relative to the
space's reference model (`macs=0.5x`).
"""

from __future__ import annotations

import math
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from prunenas.config import ConfigError
from prunenas.plugins import METRICS, load_group

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
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. latency_batch, latency_provider


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

    def setup(self, options: Mapping[str, Any]) -> str:
        """How this metric is measured under `options`, for tables and plot labels ("" when fixed)."""
        return ""

    @abstractmethod
    def measure(self, ctx: MetricContext) -> float:
        """The metric of one candidate."""

    def reference_value(self, space: Space, num_classes: int, options: Mapping[str, Any] | None = None) -> float | None:
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


def _threads(options: Mapping[str, Any]) -> int | None:
    value = options.get("latency_threads")
    return int(value) if value else None


class Latency(Metric):
    """Measured latency in ms on the deployment runtime (`prunenas.latency`): ONNX Runtime on the CPU by
    default; options latency_batch (1), latency_provider (cpu, cuda, tensorrt, torch) and latency_threads
    (None: one per core this process may use)."""

    name = "latency"
    unit = "ms"
    label = "latency (ms)"
    has_setup = True
    _UNITS: ClassVar[dict[str, float]] = {"ms": 1.0, "us": 1e-3, "s": 1e3}

    def measure(self, ctx: MetricContext) -> float:
        from prunenas.latency import genotype_latency

        result = genotype_latency(
            ctx.space, ctx.genotype, ctx.num_classes, batch=int(ctx.options.get("latency_batch", 1)),
            provider=str(ctx.options.get("latency_provider", "cpu")), threads=_threads(ctx.options),
        )  # fmt: skip
        return result.ms

    def setup(self, options: Mapping[str, Any]) -> str:
        from prunenas.latency import default_threads, machine

        provider = str(options.get("latency_provider", "cpu"))
        runtime = "PyTorch eager" if provider == "torch" else f"ONNX Runtime {provider}"
        threads = _threads(options) or default_threads()
        return f"{runtime}, batch {int(options.get('latency_batch', 1))}, {threads} threads, {machine()}"

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
    found: dict[str, type[Metric]] = {}
    for label, cls in load_group(METRICS, "metric"):
        if isinstance(cls, type) and issubclass(cls, Metric) and cls.name:
            found[cls.name] = cls
        else:
            print(f"prunenas: warning: metric plugin {label!r} is not a named Metric; ignored", file=sys.stderr)
    return found


def metric_names() -> list[str]:
    return sorted(_registry())


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
