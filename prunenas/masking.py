"""Masks of density spaces: chosen from weights, applied, shuffled, folded (plain torch; the mask primitives
they use are `prunenas.masks`).

  magnitude_masks       per layer, the genotype's number of weights of largest |w|
  apply_masks_to_model  a proposer's masks attached to a model (to train them from a fresh init)
  shuffle_masks         the layer-wise shuffle ablation (Frankle et al. 2021)
  masked_state          a masked state_dict: trained weights, or a fresh init as a proposer scores it
  fold_masks            weight * mask, with no mask buffers left (what export writes)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from prunenas.errors import PrunenasError
from prunenas.masks import MASK, mask_count, masked_layers, prunable_layers, set_mask, weight_of

if TYPE_CHECKING:
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space


def magnitude_masks(
    space: Space, state: Mapping[str, torch.Tensor], genotype: Genotype, num_classes: int
) -> dict[str, torch.Tensor]:
    """Per layer, the genotype's number of weights with the largest |w| in `state` (layer-wise magnitude
    pruning to the genotype's densities; ties broken by position; an all-zero mask for a gene of 0.0)."""
    genotype = space.validate(genotype)
    model = space.build(space.reference(), num_classes=num_classes)
    model.load_state_dict(state, strict=True)
    masks = {}
    for name, module in prunable_layers(model):
        w = weight_of(module).detach().abs().reshape(-1)
        keep = mask_count(float(genotype.genes[name]), w.numel())
        mask = torch.zeros(w.numel())
        mask[torch.sort(w, descending=True, stable=True).indices[:keep]] = 1.0
        masks[name] = mask.view(weight_of(module).shape)
    return masks


def apply_masks_to_model(model: nn.Module, masks: Mapping[str, torch.Tensor], rescale: bool = True) -> nn.Module:
    """Attach `masks` (layer path -> 0/1 tensor) to `model` with `set_mask` and return it.

    Apply to a freshly built model to train a proposer's own mask from scratch ("reinitialize");
    `rescale` multiplies kept weights by 1/sqrt(density) (He init with the fan scaled by the density);
    an all-zero mask empties its layer (nothing is left to rescale).
    """
    layers = dict(prunable_layers(model))
    unknown = sorted(set(masks) - set(layers))
    if unknown:
        raise PrunenasError(f"masks for unknown layer(s) {unknown[:5]}; valid layers: {list(layers)[:5]}...")
    for name, mask in masks.items():
        try:
            set_mask(layers[name], mask, rescale=rescale)
        except ValueError as exc:
            raise PrunenasError(f"mask of layer {name!r}: {exc}") from None
    return model


def shuffle_masks(masks: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The layer-wise shuffle ablation: each mask's entries permuted at random (same count per layer)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        flat = mask.reshape(-1)
        perm = torch.randperm(flat.numel(), generator=generator).to(flat.device)
        out[name] = flat[perm].view(mask.shape).clone()
    return out


def masked_state(
    space: Space,
    masks: Mapping[str, torch.Tensor],
    num_classes: int,
    *,
    init_seed: int | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A state_dict of the density space's model with `masks` applied (as `weight_mask` buffers and zeros):
    to `weights` (trained weights, kept as they are), or to a fresh init built with `init_seed` exactly as
    `make_context` builds the model a proposer scores (kept weights rescaled by 1/sqrt(density) when the
    space's `rescale` is on)."""
    if (init_seed is None) == (weights is None):
        raise ValueError("give exactly one of init_seed and weights")
    if init_seed is not None:
        torch.manual_seed(init_seed)
    model = space.build(space.reference(), num_classes=num_classes)
    if weights is not None:
        model.load_state_dict(weights, strict=True)
    rescale = weights is None and space.kept_weight_rescale() is not False
    apply_masks_to_model(model, {k: v.cpu() for k, v in masks.items()}, rescale=rescale)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fold_masks(model: nn.Module) -> nn.Module:
    """A copy of `model` whose weights are weight * mask and that has no weight_mask buffers.

    The zeros then live in the weights themselves, and the exported graph carries no mask tensors.
    """
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for _, module, mask in list(masked_layers(folded)):
            weight_of(module).mul_(mask)
            del module._buffers[MASK]
    return folded
