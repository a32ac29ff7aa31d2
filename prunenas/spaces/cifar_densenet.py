"""CIFAR DenseNets (Huang et al. 2017) with searchable widths.

A 3 -> 2k stem conv (k = growth rate; `stem_width`), three dense blocks of n layers, a transition between blocks, a
final BN-ReLU, global average pooling and one FC layer. Each layer reads the concatenation of every
earlier feature map of its block and adds k channels to it:

  basic layers       (depth 3n+4): BN-ReLU-conv3x3 to k channels (DenseNet-40: n = 12, k = 12).
  bottleneck layers  (depth 6n+4): BN-ReLU-conv1x1 to 4k, BN-ReLU-conv3x3 to k (DenseNet-BC-100: n = 16).
  transition         BN-ReLU-conv1x1 to floor(c * compression) channels, then 2x2 average pooling
                     (compression 1 in network slimming's DenseNet-40, 0.5 in DenseNet-BC-100).

The stem has 2k channels in the PyTorch code of network slimming and of the Rethinking paper (DenseNet-40:
1.06M parameters); the network-slimming paper's own DenseNet-40 (Torch, after Huang et al.) had a
16-channel stem (1.02M): `stem_width = 16`.

Network slimming (Liu et al. 2017) cannot remove channels of the BN that opens a layer: its input is the
concatenated stream that later layers read too. Its code puts a channel selection after every such BN
(and after the final BN): the BN keeps all channels and only the selected ones feed the next conv. With
`selection = true` each selection is a gene (how many of the BN's channels are kept); the genes in network
order are the slimming code's per-BN keep counts (39 for DenseNet-40), so `space.make(cfg)` reads its
cfg list as is. A built model keeps the first k channels (`ChannelSelection.index`); inherited weights keep
the chosen ones there. The growth convs' k outputs are not genes (neither paper prunes them).

Structured genes: the bottleneck widths (conv1 of each bottleneck layer), which Torch-Pruning based
proposers and uniform narrow. A space without bottlenecks has only selections: they are its structured
genes, mapped to the selection modules, so uniform narrows them, while the proposers that score
Torch-Pruning groups (l1, ...) stop with an error naming the genes (no group roots at a selection). The
slimming proposer ranks every gene, selections included, by the |gamma| of its BN (`gene_batchnorms`),
network slimming's own rule.

Weights inherited by a pruned genotype (`initial_state`) follow network slimming's pruning code: for
every narrowed BN, the channels with the largest |gamma| of the trained reference, in their order.

Initialisation: the [model] `init` scheme of `prunenas.spaces.init` (as for the CIFAR ResNets). Under
"rethinking" it is the Rethinking repository's code for these models: conv weights N(0, sqrt(2 / n)) with
n = k*k*out_channels (Kaiming normal, fan_out), BN bias 0, the FC left at PyTorch's default, and BN weight
0.5 in the network-slimming code (the models with channel selections) but 1 in the weight-level code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunenas.errors import SpaceError
from prunenas.genotype import GeneValue, Genotype
from prunenas.spaces.base import Gene, SpaceKind
from prunenas.spaces.cifar_preresnet import (
    ChannelLink,
    SelectionSpace,
    check_bn_weight,
    inherit_by_bn_scale,
    init_weights,
    make_conv,
    make_selection,
    set_bn_weight,
)
from prunenas.spaces.init import check_init
from prunenas.spaces.settings import width_multiplier


@dataclass(frozen=True)
class LayerSpec:
    """One dense layer's widths: the selection's keep count (None: no selection), the bottleneck width
    (None: a basic layer)."""

    keep: int | None
    mid: int | None


class DenseLayer(nn.Module):
    """BN-(selection)-ReLU-conv: a 3x3 conv to the growth rate, or a 1x1 bottleneck then BN-ReLU-conv3x3;
    its output is appended to its input."""

    def __init__(self, in_planes: int, spec: LayerSpec, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.select = make_selection(in_planes, spec.keep)
        width = spec.keep or in_planes
        self.bottleneck = spec.mid is not None
        if spec.mid is None:
            self.conv1 = make_conv(width, growth, 3)
        else:
            self.conv1 = make_conv(width, spec.mid, 1)
            self.bn2 = nn.BatchNorm2d(spec.mid)
            self.conv2 = make_conv(spec.mid, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        if self.bottleneck:
            out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    """BN-(selection)-ReLU-conv1x1, then 2x2 average pooling."""

    def __init__(self, in_planes: int, keep: int | None, out_planes: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.select = make_selection(in_planes, keep)
        self.conv1 = make_conv(keep or in_planes, out_planes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.select(self.bn1(x)))), 2)


class CifarDenseNet(nn.Module):
    """A CIFAR DenseNet with explicit widths: `layers[b][i]` for layer i of block b, `transitions[t]` the
    keep count of transition t's selection, `final_keep` the final selection's (None: no selection)."""

    def __init__(
        self,
        growth: int,
        stem_width: int,
        layers: Sequence[Sequence[LayerSpec]],
        transitions: Sequence[int | None],
        final_keep: int | None,
        compression: float,
        num_classes: int = 10,
        in_channels: int = 3,
        init: str = "prunenas",
    ) -> None:
        super().__init__()
        planes = stem_width
        self.conv1 = make_conv(in_channels, planes, 3)
        self.dense1: nn.Sequential
        self.trans1: Transition
        self.dense2: nn.Sequential
        self.trans2: Transition
        self.dense3: nn.Sequential
        for b, specs in enumerate(layers, start=1):
            block = []
            for spec in specs:
                block.append(DenseLayer(planes, spec, growth))
                planes += growth
            setattr(self, f"dense{b}", nn.Sequential(*block))
            if b <= len(transitions):
                out = transition_width(planes, compression)
                setattr(self, f"trans{b}", Transition(planes, transitions[b - 1], out))
                planes = out
        self.bn = nn.BatchNorm2d(planes)
        self.select = make_selection(planes, final_keep)
        self.fc = nn.Linear(final_keep or planes, num_classes)
        init_weights(self, init, final_keep is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = self.dense3(x)
        x = F.relu(self.select(self.bn(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def transition_width(planes: int, compression: float) -> int:
    """Channels out of a transition: floor(planes * compression), at least 1."""
    return max(1, math.floor(planes * compression + 1e-9))


def densenet_layers(space_name: str, depth: int, bottleneck: bool) -> int:
    """Layers per dense block: (depth - 4) / 3, or (depth - 4) / 6 with bottlenecks (two convs each)."""
    per = 6 if bottleneck else 3
    if depth < per + 4 or (depth - 4) % per != 0:
        examples = "100, 190, 250" if bottleneck else "40, 100"
        kind = "with bottlenecks" if bottleneck else "without bottlenecks"
        raise SpaceError(f"space {space_name!r}: a DenseNet {kind} has depth {per}n+4 ({examples}, ...), got {depth}")
    return (depth - 4) // per


class CifarDenseNetSpace(SelectionSpace):
    """Genes, in network order: per layer block{b}_layer{l}_select (with `selection`: channels of the
    layer's first BN kept) and block{b}_layer{l}_conv1 (with `bottleneck`: its width); per transition
    trans{t}_select; final_select (the final BN's channels that reach the classifier) last.

    Config: depth (40), growth_rate (12), stem_width (2 x growth_rate), bottleneck (false), compression
    (1.0: the fraction of channels a transition keeps), selection (true), init ("prunenas"), bn_weight
    (every BatchNorm weight at init; default: the init scheme's),
    max_width_multiplier (1.0, bottleneck widths only). The defaults build the network-slimming code's
    DenseNet-40 (initialised as that code does with init = "rethinking").
    """

    family: ClassVar[str] = "cifar_densenet"
    kind: ClassVar[SpaceKind] = "channels"
    config_keys: ClassVar[frozenset[str] | None] = frozenset(
        {
            "depth",
            "growth_rate",
            "stem_width",
            "bottleneck",
            "compression",
            "selection",
            "init",
            "bn_weight",
            "max_width_multiplier",
        }
    )
    #: Network slimming's L1 penalty on the BN scales for DenseNets (Liu et al. 2017).
    slimming_l1: ClassVar[float] = 1e-5

    def _make_genes(self) -> list[Gene]:
        name, config = self.name, self.config
        self.bottleneck: bool = self.setting("bottleneck", False, kind=bool)
        self.depth: int = self.setting("depth", 40, low=1)
        self.n = densenet_layers(name, self.depth, self.bottleneck)
        self.growth: int = self.setting("growth_rate", 12, low=1)
        self.compression: float = self.setting(
            "compression", 1.0, kind=float, low=0.0, low_open=True, high=1.0,
            what="the fraction of channels a transition keeps", hint="1 for DenseNet-40, 0.5 for DenseNet-BC",
        )  # fmt: skip
        self.selection: bool = self.setting("selection", True, kind=bool)
        if not self.selection and not self.bottleneck:
            raise SpaceError(
                f"space {name!r}: a DenseNet without bottlenecks has no conv whose width is a gene; "
                "set selection = true (network slimming's channel selections) or bottleneck = true"
            )
        self.init = check_init(name, config.get("init", "prunenas"))
        self.bn_weight = check_bn_weight(name, config.get("bn_weight"))
        mult = width_multiplier(name, config)
        self.stem_width: int = self.setting("stem_width", 2 * self.growth, low=1)
        inner = 4 * self.growth
        genes: list[Gene] = []
        self.links: dict[str, ChannelLink] = {}
        planes = self.stem_width
        for b in range(1, 4):
            for layer in range(1, self.n + 1):
                prefix, path = f"block{b}_layer{layer}", f"dense{b}.{layer - 1}"
                if self.selection:
                    self._selection(genes, prefix, path, planes, f"of the {planes} concatenated")
                if self.bottleneck:
                    top = max(inner, int(inner * mult))
                    genes.append(Gene(f"{prefix}_conv1", "int", 1, top, inner, description="bottleneck width (conv1)"))
                    self.links[f"{prefix}_conv1"] = ChannelLink(f"{path}.bn2", f"{path}.conv1", None, f"{path}.conv2")
                planes += self.growth
            if b < 3:
                if self.selection:
                    genes.append(
                        Gene(f"trans{b}_select", "int", 1, planes, planes,
                             description=f"channels of the transition's bn1 (of {planes}) fed to its conv")
                    )  # fmt: skip
                    self.links[f"trans{b}_select"] = ChannelLink(
                        f"trans{b}.bn1", None, f"trans{b}.select", f"trans{b}.conv1"
                    )
                planes = transition_width(planes, self.compression)
        if self.selection:
            self._final_selection(genes, planes)
        return genes

    def layers_of(self, genes: Mapping[str, GeneValue]) -> tuple[list[list[LayerSpec]], list[int | None], int | None]:
        """(layer widths per block, transition selections, final selection) from gene values."""
        sel = self.selection
        blocks = [
            [
                LayerSpec(
                    int(genes[f"block{b}_layer{i}_select"]) if sel else None,
                    int(genes[f"block{b}_layer{i}_conv1"]) if self.bottleneck else None,
                )
                for i in range(1, self.n + 1)
            ]
            for b in range(1, 4)
        ]
        transitions = [int(genes[f"trans{t}_select"]) if sel else None for t in (1, 2)]
        return blocks, transitions, int(genes["final_select"]) if sel else None

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        blocks, transitions, final = self.layers_of(genes)
        model = CifarDenseNet(
            self.growth,
            self.stem_width,
            blocks,
            transitions,
            final,
            self.compression,
            num_classes,
            self.input_shape[0],
            init=self.init,
        )
        return set_bn_weight(model, self.bn_weight)

    def analytic_macs(self, genotype: Genotype) -> int | None:
        """Conv and FC multiply-accumulates from the widths (equal to the traced count)."""
        blocks, transitions, final = self.layers_of(genotype.genes)
        c_in, h, w = self.input_shape
        k = self.growth
        planes = self.stem_width
        macs = h * w * planes * c_in * 9
        for b, specs in enumerate(blocks):
            for spec in specs:
                keep = spec.keep or planes
                if spec.mid is None:
                    macs += h * w * k * keep * 9
                else:
                    macs += h * w * spec.mid * keep + h * w * k * spec.mid * 9
                planes += k
            if b < 2:
                out = transition_width(planes, self.compression)
                macs += h * w * out * (transitions[b] or planes)
                planes, h, w = out, h // 2, w // 2
        return macs + (final or planes) * self.num_classes

    def initial_state(
        self,
        reference_model: nn.Module,
        genotype: Genotype,
        masks: Mapping[str, torch.Tensor] | None = None,
        *,
        criterion: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Network slimming's rule whatever the `criterion`: each narrowed BN keeps its channels of largest
        |gamma| (see the module doc)."""
        return inherit_by_bn_scale(self, self.links, reference_model, genotype)
