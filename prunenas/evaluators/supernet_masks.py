"""Sub-networks of a supernet as channel masks: the widths of a genotype applied to the widest model of its space.

For every structured gene (`Space.structured_genes`: gene -> the layer whose output channels it sets), the
gene's dependency group is walked once (`prunenas.surgery.dependency_graph`, rooted at that layer with all of
its channels): every module of the group whose *output* channels the group covers (the convolutions that
write into the same residual stream, their BatchNorms, a shortcut's conv and BN, ...) gets a forward hook.
A width w keeps the leading w channels of the root (the leading w/s of each of s equal parts for grouped
layers, `Space.gene_splits`) and the hooks multiply every other channel of those outputs by 0, after the
BatchNorm where one follows: masking the convolution alone would not do, since BatchNorm's shift turns the
zeros back into constants. So every channel the narrow model lacks is exactly zero wherever it is read, and
a layer that reads them adds nothing from them: the masked supernet computes what `space.build(genotype)`
computes with the leading slices of its weights, BatchNorm batch statistics included (they are per channel).
Layers that mix channels (GroupNorm, LayerNorm) are masked too but then only approximate the narrow model.

A convolution whose every consumer is a masked BatchNorm of the same group is not masked itself (the BN's
mask suffices).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunenas.errors import PrunenasError
from prunenas.surgery import DependencyGroup, dependency_graph

if TYPE_CHECKING:
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space

Widths = Mapping[str, int]


# -- widths of a space's structured genes -------------------------------------------------------------------------
def widest_genotype(space: Space) -> Genotype:
    """The model a supernet is: every structured gene at its upper bound, every other gene at the reference."""
    structured = space.structured_genes()
    values = {g.name: g.snap(g.high) if g.name in structured else g.reference for g in space.genes}
    return space.make(values, origin="supernet")


def smallest_genotype(space: Space) -> Genotype:
    """The narrowest sub-network: `space.smallest_genotype()` on the structured genes, the others as widest."""
    structured = space.structured_genes()
    smallest, widest = space.smallest_genotype(), widest_genotype(space)
    values = {g.name: (smallest if g.name in structured else widest).genes[g.name] for g in space.genes}
    return space.make(values, origin="supernet-smallest")


def random_widths(space: Space, rng: random.Random) -> dict[str, int]:
    """Widths of the structured genes drawn uniformly within each gene's bounds (multiples of its step)."""
    return {name: int(space.gene(name).sample(rng)) for name in space.structured_genes()}


def widths_of(space: Space, genotype: Genotype) -> dict[str, int]:
    """The structured genes' widths of `genotype`; refuses a genotype that changes a gene the supernet keeps."""
    genotype = space.validate(genotype)
    structured = space.structured_genes()
    widest = widest_genotype(space)
    kept = [n for n in genotype.genes if n not in structured and genotype.genes[n] != widest.genes[n]]
    if kept:
        raise PrunenasError(
            f"genotype {genotype.key} changes gene(s) {kept[:5]} of {space.name!r} that no channel mask of a supernet "
            "can narrow (e.g. the residual widths of shortcut-A ResNets); keep them at the reference (a search "
            "with --evaluator supernet does: `prunenas spaces show` lists the genes)"
        )
    return {name: int(genotype.genes[name]) for name in structured}


# -- the masks ------------------------------------------------------------------------------------------------------
class _Entry:
    """The channels of one module's output that one gene's group covers, and the root positions they stand for."""

    __slots__ = ("channels", "gene", "positions")

    def __init__(self, gene: str, channels: torch.Tensor, positions: torch.Tensor) -> None:
        self.gene, self.channels, self.positions = gene, channels, positions


def _channel_dim(module: nn.Module, output: torch.Tensor) -> int:
    """The dimension of a module's output that holds its channels (last for Linear and LayerNorm)."""
    return output.dim() - 1 if isinstance(module, nn.Linear | nn.LayerNorm) else 1


def _consumers(graph: Any, module: nn.Module) -> list[Any] | None:
    """The modules that read `module`'s output in the traced graph (None: unknown)."""
    node = getattr(graph, "module2node", {}).get(module)
    outputs = getattr(node, "outputs", None)
    if not outputs:
        return None
    return [getattr(n, "module", None) for n in outputs]


class ChannelMasks:
    """Forward hooks on `model` (the widest model of `space`, on the CPU when made) that zero every channel a
    set of widths does not keep. `apply(widths)` sets the widths (None: all channels, no masking)."""

    def __init__(self, space: Space, model: nn.Module) -> None:
        self.space = space
        structured = space.structured_genes()
        widest = widest_genotype(space)
        modules = dict(model.named_modules())
        names = {m: n for n, m in modules.items()}
        example = torch.zeros(1, *space.input_shape)
        graph = dependency_graph(model, example)
        entries: dict[nn.Module, list[_Entry]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}  # gene -> (channels per split, splits)
        for gene, path in structured.items():
            root = modules.get(path)
            if root is None:
                raise PrunenasError(f"space {space.name!r}: gene {gene} names layer {path!r}, which its model lacks")
            width = int(widest.genes[gene])
            splits = max(1, space.gene_splits(gene))
            self.sizes[gene] = (width // splits, splits)
            pruner = graph.get_pruner_of_module(root) if isinstance(root, nn.Conv2d | nn.Linear) else None
            if pruner is None:  # a selection or another non-layer root: mask what it outputs
                every = torch.arange(width)
                entries.setdefault(root, []).append(_Entry(gene, every, every))
                continue
            have = int(pruner.get_out_channels(root))
            if have != width:
                raise PrunenasError(
                    f"space {space.name!r}: gene {gene} = {width} at its widest, but layer {path!r} has {have} output "
                    "channels; --evaluator supernet needs genes that count the channels of their layer"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                group = graph.get_pruning_group(root, pruner.prune_out_channels, idxs=list(range(width)))
            layers = [layer for layer in DependencyGroup(group, graph, names).layers if layer.out]
            norms = {layer.module for layer in layers if isinstance(layer.module, nn.modules.batchnorm._BatchNorm)}
            for layer in layers:
                readers = _consumers(graph, layer.module) if isinstance(layer.module, nn.Conv2d | nn.Linear) else None
                if readers and all(r in norms for r in readers):
                    continue  # its BatchNorm is masked: exact zeros there already
                channels = torch.tensor(layer.channels, dtype=torch.long)
                positions = torch.tensor(layer.positions, dtype=torch.long)
                entries.setdefault(layer.module, []).append(_Entry(gene, channels, positions))
        self._entries = entries
        self._channels = self._output_channels(model, example)
        self._masks: dict[nn.Module, torch.Tensor] = {}
        self.device = torch.device("cpu")
        self._handles = [m.register_forward_hook(self._hook) for m in entries]
        self.paths = sorted(names[m] for m in entries)

    def _output_channels(self, model: nn.Module, example: torch.Tensor) -> dict[nn.Module, int]:
        """The channel count of every hooked module's output, from one forward pass."""
        found: dict[nn.Module, int] = {}

        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                found[module] = int(output.shape[_channel_dim(module, output)])

        handles = [m.register_forward_hook(record) for m in self._entries]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(example)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        missing = [m for m in self._entries if m not in found]
        if missing:
            raise PrunenasError(
                f"space {self.space.name!r}: {len(missing)} layer(s) of the structured genes' groups did not run in a "
                "forward pass (or return no tensor); --evaluator supernet cannot mask them"
            )
        return found

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        mask = self._masks.get(module)
        if mask is None or not isinstance(output, torch.Tensor):
            return None
        shape = [1] * output.dim()
        shape[_channel_dim(module, output)] = -1
        return output * mask.to(dtype=output.dtype).view(shape)

    def to(self, device: torch.device) -> ChannelMasks:
        """Build the masks on `device` (the model's) from now on."""
        self.device = device
        for entries in self._entries.values():
            for e in entries:
                e.channels, e.positions = e.channels.to(device), e.positions.to(device)
        self._masks = {m: t.to(device) for m, t in self._masks.items()}
        return self

    def apply(self, widths: Widths | None) -> None:
        """Mask every channel beyond `widths` (gene -> width; None: every channel, no masks). Made on the device
        without reading anything back from it."""
        masks: dict[nn.Module, torch.Tensor] = {}
        if widths is not None:
            for module, entries in self._entries.items():
                mask = torch.ones(self._channels[module], device=self.device)
                for e in entries:
                    size, splits = self.sizes[e.gene]
                    keep = ((e.positions % size) < (int(widths[e.gene]) // splits)).to(mask.dtype)
                    mask.index_copy_(0, e.channels, mask.index_select(0, e.channels) * keep)
                masks[module] = mask
        self._masks = masks

    def remove(self) -> None:
        """Take the hooks off the model."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._masks = {}
