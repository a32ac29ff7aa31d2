"""Weight masks of unstructured pruning: which layers are prunable, how many weights a density keeps,
attaching a 0/1 mask to a layer and keeping masked weights at zero.

These primitives sit below the spaces: the density spaces build their models with them, and the cost
model, the trainer, the surgery module, the exporter and the unstructured proposers use them without
depending on any space.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

PRUNABLE = (nn.Conv2d, nn.Linear)
MASK = "weight_mask"


def mask_count(density: float, numel: int) -> int:
    """Weights kept in a layer of `numel` weights at `density`: none at 0.0 (an emptied layer), at least
    one at any density above 0."""
    if density <= 0.0:
        return 0
    return max(1, min(numel, round(density * numel)))


def prunable_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(module path, module) of every Conv2d/Linear, in registration (network) order."""
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE):
            yield name, module


def masked_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """(module path, module, mask) of every layer that carries a mask."""
    for name, module in model.named_modules():
        mask = getattr(module, MASK, None)
        if isinstance(mask, torch.Tensor):
            yield name, module, mask


def weight_of(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight


def set_mask(module: nn.Module, mask: torch.Tensor, *, rescale: bool = True) -> None:
    """Attach a 0/1 mask to a layer, zero the masked weights and (optionally) rescale the rest."""
    weight = weight_of(module)
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}")
    mask = mask.to(dtype=weight.dtype, device=weight.device)
    if MASK in module._buffers:
        module._buffers[MASK] = mask
    else:
        module.register_buffer(MASK, mask)
    density = float(mask.mean())
    with torch.no_grad():
        if rescale and 0 < density < 1:
            weight.mul_(1.0 / math.sqrt(density))
        weight.mul_(mask)


def random_mask(shape: torch.Size, density: float, generator: torch.Generator | None = None) -> torch.Tensor:
    numel = math.prod(shape)
    keep = torch.randperm(numel, generator=generator)[: mask_count(density, numel)]
    flat = torch.zeros(numel)
    flat[keep] = 1.0
    return flat.view(shape)


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Zero every masked weight (call after each optimizer step)."""
    for _, module, mask in masked_layers(model):
        weight_of(module).mul_(mask)


def densities(model: nn.Module) -> dict[str, float]:
    """Measured fraction of nonzero weights per prunable layer."""
    return {name: float((weight_of(m) != 0).float().mean()) for name, m in prunable_layers(model)}
