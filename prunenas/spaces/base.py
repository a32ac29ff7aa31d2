"""The Space protocol: a model family plus its genes.

A space knows its genes (name, type, bounds, reference value) in network order, validates
genotypes against them, and builds an `nn.Module` from a valid genotype. Families (classes) are
registered through the `prunenas.spaces` entry-point group; named spaces are TOML files that pick a
family and its settings (see `prunenas.spaces.registry`).
"""

from __future__ import annotations

import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from prunenas.errors import GenotypeError, SpaceError
from prunenas.genotype import GeneValue, Genotype
from prunenas.spaces.settings import model_setting
from prunenas.surgery import inherit_channels

SpaceKind = Literal["channels", "density", "ratios"]
SearchRange = tuple[float, float, bool]  # (low, high, log scale)
WidthRule = Callable[[float], dict[str, int]]  # a scale of a ratio profile -> widths of the pruned genes


@dataclass(frozen=True)
class Gene:
    """One searchable decision.

    `kind` is "int" (a channel count) or "float" (a density or a ratio). Bounds are inclusive,
    except that `low_open=True` excludes `low` itself. An int gene with
    `step` > 1 takes only multiples of `step` (a channel divisor: widths that run fast, or that a
    grouped convolution can split evenly); its bounds and reference are multiples of it.
    """

    name: str
    kind: Literal["int", "float"]
    low: float
    high: float
    reference: GeneValue
    low_open: bool = False
    description: str = ""
    step: int = 1

    def bounds_text(self) -> str:
        left = "(" if self.low_open else "["
        low = int(self.low) if self.kind == "int" else self.low
        high = int(self.high) if self.kind == "int" else self.high
        every = f" step {self.step}" if self.step > 1 else ""
        return f"{left}{low}, {high}]{every}"

    def snap(self, value: float) -> GeneValue:
        """The allowed value nearest to `value` (int genes: a multiple of `step` within the bounds)."""
        if self.kind != "int":
            return min(self.high, max(self.smallest(), float(value)))
        step = self.step
        snapped = round(float(value) / step) * step
        return int(min(int(self.high), max(int(self.smallest()), snapped)))

    def check(self, value: GeneValue) -> GeneValue:
        """Return the value normalised to the gene's type, or raise naming gene, value and range."""
        if self.kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise GenotypeError(
                        f"gene {self.name!r} = {value!r}: must be an integer channel count in {self.bounds_text()}"
                    )
                value = int(value)
            if self.step > 1 and int(value) % self.step:
                raise GenotypeError(
                    f"gene {self.name!r} = {value!r}: must be a multiple of {self.step} in {self.bounds_text()} "
                    "(the space's channel divisor)"
                )
        else:
            value = float(value)
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            hint = ""
            if value == 0:
                hint = " (0 would remove the layer; the smallest allowed value keeps it)"
            raise GenotypeError(f"gene {self.name!r} = {value!r} is out of range {self.bounds_text()}{hint}")
        return value

    def smallest(self) -> GeneValue:
        """The lowest allowed value (for an open lower bound, a value just above it)."""
        if self.kind == "int":
            low = math.ceil(self.low + (1 if self.low_open else 0))
            return -(-low // self.step) * self.step
        return self.low if not self.low_open else min(self.high, self.low + 1e-6)

    def sample(self, rng: random.Random) -> GeneValue:
        if self.kind == "int":
            return rng.randrange(int(self.smallest()), int(self.high) + 1, self.step)
        lo = self.low
        value = rng.uniform(lo, self.high)
        while self.low_open and value <= lo:
            value = rng.uniform(lo, self.high)
        return value


class Space(ABC):
    """A named search space: a family (the subclass) with settings from its TOML file.

    Subclasses define `family`, `kind`, `_make_genes()` and `_build()`. Third-party families need
    one such class and one `prunenas.spaces` entry-point line; a class that sets `default_config`
    is also listed as a space of its own under its entry-point name.
    """

    family: ClassVar[str] = ""
    kind: ClassVar[SpaceKind] = "channels"
    #: Which proposers serve this space: those whose `kind` equals this (None: no proposer applies).
    proposer_kind: ClassVar[str | None] = "channels"
    #: The target at which proposers seed a search of this space ("macs_ratio" or "density").
    seed_target: ClassVar[str] = "macs_ratio"
    #: Weights carry 0/1 masks (unstructured pruning). A summary for readers of a space; what prunenas does
    #: differently for such spaces is asked of the hooks below (`folds_masks`, `pruned_by_masks`, ...).
    masked: ClassVar[bool] = False
    #: What a gene value is, for tables and plots.
    value_label: ClassVar[str] = "channels"
    #: When not None, the entry point itself is a usable space with these settings.
    default_config: ClassVar[Mapping[str, Any] | None] = None
    #: The [model] settings the family reads (besides input_shape and num_classes); when not None, any
    #: other key is refused (a misspelt setting must not be silently ignored).
    config_keys: ClassVar[frozenset[str] | None] = None
    #: The task its models solve (`prunenas.tasks`): the datasets it trains on must pose the same one.
    task: str = "classification"

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        *,
        description: str = "",
        recipe: Mapping[str, Any] | None = None,
        source: str = "",
    ) -> None:
        self.name = name
        self.config: dict[str, Any] = dict(config or {})
        self.description = description
        self.recipe: dict[str, Any] = dict(recipe or {})
        self.source = source
        if self.config_keys is not None:
            valid = self.config_keys | {"input_shape", "num_classes", "divisor"}
            unknown = sorted(set(self.config) - valid)
            if unknown:
                raise SpaceError(
                    f"space {name!r} ({source or self.family}): unknown [model] setting(s) {unknown}; "
                    f"valid for family {self.family!r}: {', '.join(sorted(valid))}"
                )
        shape = self.config.get("input_shape", (3, 32, 32))
        if (
            not isinstance(shape, list | tuple)
            or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)
        ):
            raise SpaceError(
                f"space {name!r}: [model] input_shape must be [channels, height, width] (three integers >= 1), "
                f"got {shape!r}"
            )
        self.input_shape: tuple[int, int, int] = (shape[0], shape[1], shape[2])
        self.num_classes: int = self.setting("num_classes", 10, low=1, what="outputs of the classifier")
        self.genes: tuple[Gene, ...] = tuple(self._make_genes())
        if self.config.get("divisor") is not None:
            divisor: int = self.setting("divisor", 1, low=1, what="channel counts are multiples of it")
            self.genes = tuple(_with_divisor(g, divisor) for g in self.genes)
        if not self.genes:
            raise SpaceError(f"space {name!r} defines no genes")
        names = [g.name for g in self.genes]
        if len(set(names)) != len(names):
            raise SpaceError(f"space {name!r} has duplicate gene names")
        self._by_name = {g.name: g for g in self.genes}

    def setting(self, key: str, default: Any, **check: Any) -> Any:
        """The [model] setting `key` of this space, checked (`model_setting`)."""
        return model_setting(self.name, self.config, key, default, **check)

    # -- to implement --------------------------------------------------------------------------
    @abstractmethod
    def _make_genes(self) -> list[Gene]:
        """The genes in network order, with bounds and reference values."""

    @abstractmethod
    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        """Build a freshly initialised model from validated gene values."""

    def structured_genes(self) -> dict[str, str]:
        """Genes that structured (channel) pruning may change -> path of the module whose output
        channels the gene sets, in the reference model. Empty when the family does not say."""
        return {}

    # -- what differs between kinds of space (overridden by the families) ----------------------
    def analytic_macs(self, genotype: Genotype) -> int | None:
        """MACs of a validated genotype at `num_classes` computed without building it (None: build and count)."""
        return None

    def output_layers(self) -> list[str] | None:
        """Module paths whose output channels channel pruning never touches (None: every Linear layer,
        the CIFAR families' classifier)."""
        return None

    def serves(self, proposer_kind: str) -> bool:
        """Whether proposers of this kind ("channels", "density") propose genotypes of this space."""
        return self.proposer_kind is not None and self.proposer_kind == proposer_kind

    def counting_model(self, genotype: Genotype, num_classes: int) -> tuple[nn.Module, dict[str, float] | None]:
        """The model whose layers the cost model counts, and per-layer weights of those counts
        (None: every layer counts fully). Channel spaces count the genotype's own model."""
        return self.build(genotype, num_classes=num_classes), None

    def search_range(self, gene: Gene, seeds: Sequence[Genotype] = (), min_value: float | None = None) -> SearchRange:
        """(low, high, log) within which a search samples `gene`: its own bounds by default."""
        return (gene.low, gene.high, False)

    def smallest_genotype(self) -> Genotype:
        """The cheapest genotype of the space (the lowest value of every gene)."""
        return self.make({g.name: g.smallest() for g in self.genes}, origin="smallest")

    def achieved(self, genotype: Genotype) -> dict[str, float]:
        """Measures of a genotype beyond MACs and params that a proposer's target may name
        (density spaces: the overall kept fraction of the prunable weights)."""
        return {}

    def export_model(self, model: nn.Module) -> nn.Module:
        """The model as it is exported for deployment (density spaces fold their masks in)."""
        return model

    def gene_fraction(self, gene: Gene, value: GeneValue) -> float:
        """A gene value as a fraction of the reference's (1.0 = unpruned)."""
        ref = float(gene.reference)
        return float(value) / ref if ref else 0.0

    #: How `initial_state` picks the inherited channels, in words (the plan of a Rethinking study says it).
    inheritance: ClassVar[str] = "channels with the largest filter L1 norm"

    def initial_state(
        self,
        reference_model: nn.Module,
        genotype: Genotype,
        masks: Mapping[str, torch.Tensor] | None = None,
        *,
        criterion: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """The weights `genotype` inherits from a trained reference model when it is fine-tuned (Li et al.'s
        rule for channel spaces: the filters with the largest L1 norm; `criterion` "bn_scale": the channels
        of largest |BN gamma|, network slimming's rule)."""

        return inherit_channels(self, reference_model, genotype, criterion or "l1")

    def inheritance_by(self, criterion: str | None) -> str:
        """`inheritance` for channels kept by `criterion` (None: the space's own rule), in words."""
        return "channels of largest |BN scale|" if criterion == "bn_scale" else self.inheritance

    # -- hooks: what the rest of prunenas asks where spaces differ (defaults: a channel space) --------------
    #: Export folds 0/1 weight masks into the weights (`export_model`): the exported weights carry the
    #: pruned zeros, and export reports their sparsity and `masks_folded`.
    folds_masks: ClassVar[bool] = False
    #: A pruned genotype is the dense model under 0/1 weight masks, not a narrower model: a Rethinking study
    #: saves the proposer's masks and trains them from fresh inits, offers the mask ablations (--ablation),
    #: lets a proposer that scores the init score each seed's own, and counts the dense MACs as executed.
    pruned_by_masks: ClassVar[bool] = False
    #: Scratch-B's default cap in multiples of E in a Rethinking study (None: uncapped, the paper's CIFAR rule).
    scratch_b_cap: ClassVar[float | None] = None
    #: Network slimming's L1 penalty on the BN scales when the slimming proposer's `lam` is not given
    #: (Liu et al. 2017: 1e-5 for ResNets, 1e-4 for VGG).
    slimming_l1: ClassVar[float] = 1e-5

    def latency_features_model(self, genotype: Genotype) -> nn.Module:
        """The model whose layers the latency predictor counts its features on (`prunenas.latency_model`):
        the counting model; a masked space's own model, whose masks weight each layer by its density."""
        return self.counting_model(genotype, self.num_classes)[0]

    def base_space(self) -> Space:
        """The space whose [model] settings (init, shortcut) build this space's models: itself, or the channel
        space a density space masks."""
        return self

    def kept_weight_rescale(self) -> bool | None:
        """Whether masking a fresh init rescales the kept weights by 1/sqrt(density) (`set_mask`); None for a
        space that masks no weights."""
        return None

    def gene_splits(self, gene: str) -> int:
        """The number of equal parts the layers of a structured gene's channel group divide its channels into
        (grouped convolutions, GroupNorm): pruning removes the same positions in each. 1: not split."""
        return 1

    def gene_batchnorms(self) -> dict[str, str] | None:
        """Every gene -> path of the BatchNorm whose channels it keeps, for families whose genes each keep the
        channels of one BN (network slimming then ranks that BN's |gamma|); None: rank the structured genes'
        dependency groups."""
        return None

    def li2017_profile(self, variant: str) -> tuple[list[float], WidthRule] | None:
        """Li et al. 2017's hand-set rule on this family (the l1-paper proposer): the prune ratios of the paper's
        `variant` and the widths of the pruned genes at a scale of those ratios (1.0: the paper's own). None: the
        paper prunes no such model; a family may raise PrunenasError naming what it covers."""
        return None

    # -- provided ------------------------------------------------------------------------------
    @property
    def slug(self) -> str:
        """The space's name as one folder-name part (model factory names hold ':', '/' and '@')."""
        return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", self.name)

    def gene(self, name: str) -> Gene:
        return self._by_name[name]

    def reference(self) -> Genotype:
        """The unpruned model of this space."""
        return Genotype(self.name, {g.name: g.reference for g in self.genes}, {"origin": "reference"})

    def validate(self, genotype: Genotype) -> Genotype:
        """Check a genotype against this space; return it with gene values normalised.

        Raises GenotypeError naming the gene, the value and the allowed range.
        """
        if genotype.space != self.name:
            raise GenotypeError(
                f"genotype is for space {genotype.space!r}, not {self.name!r}; "
                f"use a genotype of {self.name!r} or pass --space {genotype.space}"
            )
        unknown = [n for n in genotype.genes if n not in self._by_name]
        if unknown:
            raise GenotypeError(
                f"unknown gene(s) {unknown[:5]} for space {self.name!r}; valid genes: "
                f"{_preview([g.name for g in self.genes])} (see `prunenas spaces show {self.name}`)"
            )
        missing = [g.name for g in self.genes if g.name not in genotype.genes]
        if missing:
            raise GenotypeError(
                f"missing gene(s) {missing[:5]} for space {self.name!r}; every gene needs a value "
                f"(see `prunenas spaces show {self.name}`)"
            )
        genes = {g.name: g.check(genotype.genes[g.name]) for g in self.genes}  # network order
        return Genotype(self.name, genes, genotype.provenance)

    def make(self, values: Mapping[str, GeneValue] | list[GeneValue], **provenance: Any) -> Genotype:
        """A validated genotype from a mapping or a list of values in network order."""
        if not isinstance(values, Mapping):
            if len(values) != len(self.genes):
                raise GenotypeError(f"space {self.name!r} has {len(self.genes)} genes, got {len(values)} values")
            values = {g.name: v for g, v in zip(self.genes, values, strict=True)}
        return self.validate(Genotype(self.name, values, provenance))

    def random_genotype(self, seed: int = 0) -> Genotype:
        rng = random.Random(seed)
        return self.make({g.name: g.sample(rng) for g in self.genes}, origin="random", seed=seed)

    def build(self, genotype: Genotype | None = None, num_classes: int | None = None) -> nn.Module:
        """A freshly initialised model for `genotype` (the reference when None)."""
        genotype = self.validate(genotype if genotype is not None else self.reference())
        return self._build(dict(genotype.genes), num_classes or self.num_classes)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (used by `prunenas spaces show`)."""
        return {
            "space": self.name,
            "family": self.family,
            "kind": self.kind,
            "description": self.description,
            "config": self.config,
            "source": self.source,
            "recipe": self.recipe,
            "genes": [
                {
                    "name": g.name,
                    "type": g.kind,
                    "low": g.low,
                    "high": g.high,
                    "low_open": g.low_open,
                    "reference": g.reference,
                    "step": g.step,
                    "description": g.description,
                }
                for g in self.genes
            ],
            "reference": dict(self.reference().genes),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self.genes)} genes>"


def _with_divisor(gene: Gene, divisor: int) -> Gene:
    """A channel gene whose values are multiples of `divisor` (reduced to a divisor of its reference width,
    which stays allowed); float genes and genes that already have a step are unchanged."""
    if gene.kind != "int" or gene.step > 1 or divisor == 1:
        return gene
    step = math.gcd(divisor, int(gene.reference))
    low = max(step, -(-math.ceil(gene.low + (1 if gene.low_open else 0)) // step) * step)
    return replace(gene, low=min(low, int(gene.reference)), low_open=False, step=step)


def _preview(items: list[str], n: int = 6) -> str:
    if len(items) <= n:
        return ", ".join(items)
    return ", ".join(items[:n]) + f", ... ({len(items)} in all)"
