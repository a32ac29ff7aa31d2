"""Per-layer density spaces (unstructured pruning, Frankle et al. 2021).

A density space wraps a channel space's reference model (its `base`) and has one gene per prunable
layer (every Conv2d and Linear, shortcut convs and the classifier included), named by module path,
valued in [0, 1]: 0.0 masks every weight of the layer (weight-level pruning can empty a layer, as the
Rethinking paper's code does), any density above 0 keeps at least one. Building a genotype gives the
dense model with a fixed random mask per layer that keeps exactly `mask_count(density, numel)` weights,
stored as a `weight_mask` buffer. With `rescale` (the default) surviving weights of a fresh init are
rescaled by 1/sqrt(density), i.e. He init with the fan scaled by the density; Frankle et al.'s
open_lth does not rescale (its spaces set rescale = false). Call `apply_masks(model)` after every
optimizer step to keep masked weights exactly zero (the mask primitives live in `prunenas.masks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import nn

from prunenas.config import parse_bool
from prunenas.errors import SpaceError
from prunenas.genotype import GeneValue, Genotype
from prunenas.masking import fold_masks, magnitude_masks, masked_state
from prunenas.masks import MASK, mask_count, prunable_layers, random_mask, set_mask, weight_of
from prunenas.spaces.base import Gene, SearchRange, Space, SpaceKind
from prunenas.spaces.registry import get_space


class DensitySpace(Space):
    """Config: base (a channel space name or TOML path), base_overrides (settings changed in it), rescale
    (true: kept weights of a fresh init x 1/sqrt(density)), init (the base's init scheme, a shorthand for
    base_overrides.init)."""

    family: ClassVar[str] = "density"
    config_keys: ClassVar[frozenset[str] | None] = frozenset({"base", "base_overrides", "rescale", "init"})
    kind: ClassVar[SpaceKind] = "density"
    proposer_kind: ClassVar[str | None] = "density"
    seed_target: ClassVar[str] = "density"
    masked: ClassVar[bool] = True
    value_label: ClassVar[str] = "density (fraction of weights kept)"
    folds_masks: ClassVar[bool] = True
    pruned_by_masks: ClassVar[bool] = True
    #: A dense device executes a masked model at the dense model's cost, so "the same compute" by sparse MACs
    #: (20x at 5% density) is no fair Scratch-B budget; 2x is the cap the Rethinking paper used on ImageNet.
    scratch_b_cap: ClassVar[float | None] = 2.0

    def _make_genes(self) -> list[Gene]:
        base_name = self.config.get("base")
        if not base_name:
            raise SpaceError(f'space {self.name!r}: a density space needs base = "<channel space>"')
        overrides = self.config.get("base_overrides")
        if overrides is not None and not isinstance(overrides, Mapping):
            raise SpaceError(
                f'space {self.name!r}: base_overrides must be a table like {{ shortcut = "B" }}, got {overrides!r}'
            )
        rescale = self.config.get("rescale", True)
        self.rescale: bool = parse_bool(rescale, f"space {self.name!r}: rescale", error=SpaceError)
        if "init" in self.config:
            overrides = {**dict(overrides or {}), "init": self.config["init"]}
        self.base = get_space(str(base_name), overrides=overrides)
        if self.base.masked:
            raise SpaceError(f"space {self.name!r}: base {base_name!r} is itself a density space")
        if self.base.task != "classification":  # the at-init criteria score a classifier's cross-entropy
            raise SpaceError(
                f"space {self.name!r}: density spaces are for classifiers and {base_name!r} is a {self.base.task} "
                f"model; search its channels instead (drop the density: prefix)"
            )
        self.input_shape = self.base.input_shape
        model = self.base.build()
        return [
            Gene(
                name,
                "float",
                0.0,
                1.0,
                1.0,
                description=f"{type(m).__name__} {tuple(weight_of(m).shape)}",
            )
            for name, m in prunable_layers(model)
        ]

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        model = self.base.build(num_classes=num_classes)
        layers = dict(prunable_layers(model))
        for name, density in genes.items():
            module = layers[name]
            set_mask(module, random_mask(weight_of(module).shape, float(density)), rescale=self.rescale)
        return model

    # -- what differs from channel spaces -------------------------------------------------------
    def counting_model(self, genotype: Genotype, num_classes: int) -> tuple[nn.Module, dict[str, float] | None]:
        """The masks do not change the shapes: the dense base model (no masks drawn), each layer weighted by
        its density."""
        model = self.base.build(num_classes=num_classes)
        return model, {k: float(v) for k, v in genotype.genes.items()}

    def search_range(self, gene: Gene, seeds: Sequence[Genotype] = (), min_value: float | None = None) -> SearchRange:
        """Densities are sampled on a log scale from `min_value` (lower where a seed goes lower, but never
        to 0: a seed's emptied layer, density 0.0, does not move the low end) to 1."""
        seeded = [float(g.genes[gene.name]) for g in seeds]
        low = min([0.01 if min_value is None else min_value] + [d for d in seeded if d > 0.0])
        return (low, gene.high, True)

    def smallest_genotype(self) -> Genotype:
        """The cheapest genotype that keeps every layer: one weight per layer (density 1e-6). Limits are
        judged against it and searches sample densities above 0; a genotype with emptied layers (0.0) is
        cheaper, but only a proposer asked for one (min_weights=0) makes it."""
        return self.make({g.name: min(g.high, 1e-6) for g in self.genes}, origin="smallest")

    def achieved(self, genotype: Genotype) -> dict[str, float]:
        """The kept fraction of all prunable weights."""
        model = self.build(self.reference())
        modules = dict(model.named_modules())
        total = kept = 0
        for name, density in genotype.genes.items():
            n = weight_of(modules[name]).numel()
            total += n
            kept += mask_count(float(density), n)
        return {"density": kept / total}

    def export_model(self, model: nn.Module) -> nn.Module:
        return fold_masks(model)

    def latency_features_model(self, genotype: Genotype) -> nn.Module:
        """The genotype's own masked model: the latency features weight each layer by its density."""
        return self.build(genotype)

    def base_space(self) -> Space:
        return self.base

    def kept_weight_rescale(self) -> bool | None:
        return self.rescale

    def initial_state(
        self,
        reference_model: nn.Module,
        genotype: Genotype,
        masks: Mapping[str, torch.Tensor] | None = None,
        *,
        criterion: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """The reference's trained weights under `masks` (by default: per-layer magnitude masks at the
        genotype's densities)."""

        linears = [m for m in reference_model.modules() if isinstance(m, nn.Linear)]
        num_classes = linears[-1].out_features if linears else self.num_classes
        state = {k: v.detach().cpu() for k, v in reference_model.state_dict().items()}
        for k, v in self.build(self.reference(), num_classes=num_classes).state_dict().items():
            if k.endswith(MASK):  # a dense reference (no mask buffers) is a reference with all-ones masks
                state.setdefault(k, torch.ones_like(v))
        if masks is None:
            masks = magnitude_masks(self, state, genotype, num_classes)
        return masked_state(self, masks, num_classes, weights=state)
