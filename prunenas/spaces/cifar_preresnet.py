"""CIFAR pre-activation ResNets (He et al. 2016, "Identity mappings") with searchable widths.

PreResNet-N has a 3->w1 stem conv, three stages of pre-activation blocks, a final BN-ReLU, global
average pooling and one FC layer. Every block computes BN-ReLU-conv on its input, so the BN that opens
a block normalises the whole residual stream:

  "basic"       depth 6n+2: BN-ReLU-conv3x3 (stride), BN-ReLU-conv3x3; residual widths w1/w2/w3
                (PreResNet-110: n = 18, 16/32/64).
  "bottleneck"  depth 9n+2: BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 to 4x the
                stage width; residual widths 4*w1/4*w2/4*w3 (PreResNet-164: n = 18, 64/128/256).

Where a block changes the shape of the stream, the shortcut is a 1x1 conv (stride, no BN) on the
block's input, as in both papers' code; the stem's 16 channels reach the first bottleneck stage that way.

Network slimming (Liu et al. 2017) cannot remove channels of a BN that opens a block: the stream it
normalises is shared by the shortcut. Its code puts a channel selection after that BN (and after the
final BN) instead: the BN keeps every channel and only the selected ones feed the next conv. With
`selection = true` each selection is a gene (how many of the BN's channels are kept), and the genes in
network order (per block: selection, conv1, conv2 for bottlenecks; the final selection last) are the
slimming code's per-BN keep counts, so `space.make(cfg)` reads its cfg list as is. A built model keeps
the first k channels (`ChannelSelection.index`); inherited weights keep the chosen ones there.

Genes that set a conv's output channels (each block's inner widths) are the structured genes: the
Torch-Pruning based proposers (l1, l2, fpgm, ...) and uniform narrow them; selections are not conv
outputs and stay at their reference value under those proposers. The slimming proposer ranks every gene,
selections included, by the |gamma| of its BN (`gene_batchnorms`), as network slimming does.

Weights inherited by a pruned genotype (`initial_state`) follow network slimming's pruning code: for
every narrowed BN, the channels with the largest |gamma| of the trained reference, in their order.

Initialisation: the [model] `init` scheme of `prunenas.spaces.init` (as for the CIFAR ResNets). Under
"rethinking" it is the Rethinking repository's code for these models: conv weights N(0, sqrt(2 / n)) with
n = k*k*out_channels (Kaiming normal, fan_out), BN bias 0, the FC left at PyTorch's default, and BN weight
0.5 in the network-slimming code (the models with channel selections) but 1 in the weight-level code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunenas.errors import PrunenasError, SpaceError
from prunenas.genotype import GeneValue, Genotype
from prunenas.spaces.base import Gene, Space, SpaceKind
from prunenas.spaces.init import check_init, initialize
from prunenas.spaces.settings import model_setting, width_multiplier
from prunenas.surgery import fitting

BLOCKS = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}


class ChannelSelection(nn.Module):
    """Keeps `keep` of `channels` input channels: those listed in the `index` buffer (the first `keep` in
    a fresh model; inherited weights put the kept channels there). Keeping all is the identity."""

    index: torch.Tensor

    def __init__(self, channels: int, keep: int) -> None:
        super().__init__()
        if not 1 <= keep <= channels:
            raise ValueError(f"a channel selection keeps 1..{channels} channels, got {keep}")
        self.channels = channels
        self.register_buffer("index", torch.arange(keep))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index.numel() == self.channels:
            return x
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"{self.index.numel()} of {self.channels}"


def init_weights(model: nn.Module, scheme: str, selection: bool) -> None:
    """The `init` scheme as for the CIFAR ResNets; under "rethinking", BN weights 0.5 in a model with channel
    selections (the network-slimming code's models initialise them so)."""
    initialize(model, scheme, "resnet")
    if scheme == "rethinking" and selection:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)


def check_bn_weight(space_name: str, value: object) -> float | None:
    """The [model] `bn_weight` value (None: the init scheme's), checked."""
    if value is None:
        return None
    checked: float = model_setting(
        space_name, {"bn_weight": value}, "bn_weight", value, kind=float, low=0.0, low_open=True,
        what="every BatchNorm weight at init", hint="leave it out for the init scheme's",
    )  # fmt: skip
    return checked


def set_bn_weight(model: nn.Module, value: float | None) -> nn.Module:
    """Every BatchNorm2d weight of `model` set to `value` (None: left as the init scheme drew it)."""
    if value is not None:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, value)
    return model


def make_selection(channels: int, keep: int | None) -> nn.Module:
    return nn.Identity() if keep is None else ChannelSelection(channels, keep)


def make_conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)


def make_shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d | None:
    """The 1x1 conv (no BN) on a block's input where the block changes its shape; None: the identity."""
    return make_conv(in_planes, out_planes, 1, stride) if stride != 1 or in_planes != out_planes else None


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output length of a conv with padding kernel // 2 (the convs of both families)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class PreActBasic(nn.Module):
    """BN-(selection)-ReLU-conv3x3 (stride), BN-ReLU-conv3x3, plus the shortcut."""

    def __init__(self, in_planes: int, keep: int | None, inner: Sequence[int], out_planes: int, stride: int) -> None:
        super().__init__()
        (mid,) = inner
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.select = make_selection(in_planes, keep)
        self.conv1 = make_conv(keep or in_planes, mid, 3, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = make_conv(mid, out_planes, 3)
        self.downsample = make_shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (x if self.downsample is None else self.downsample(x))


class PreActBottleneck(nn.Module):
    """BN-(selection)-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1, plus the shortcut."""

    def __init__(self, in_planes: int, keep: int | None, inner: Sequence[int], out_planes: int, stride: int) -> None:
        super().__init__()
        mid1, mid2 = inner
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.select = make_selection(in_planes, keep)
        self.conv1 = make_conv(keep or in_planes, mid1, 1)
        self.bn2 = nn.BatchNorm2d(mid1)
        self.conv2 = make_conv(mid1, mid2, 3, stride)
        self.bn3 = nn.BatchNorm2d(mid2)
        self.conv3 = make_conv(mid2, out_planes, 1)
        self.downsample = make_shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (x if self.downsample is None else self.downsample(x))


@dataclass(frozen=True)
class BlockSpec:
    """One block's widths: the selection's keep count (None: no selection) and the inner conv widths."""

    keep: int | None
    inner: tuple[int, ...]


class CifarPreResNet(nn.Module):
    """A CIFAR pre-activation ResNet with explicit widths.

    `stage_widths[s]` is the residual width of stage s (already multiplied by the block's expansion),
    `blocks[s][i]` the widths of its block i, `final_keep` the final selection (None: none)."""

    def __init__(
        self,
        block: str,
        stem_width: int,
        stage_widths: Sequence[int],
        blocks: Sequence[Sequence[BlockSpec]],
        final_keep: int | None,
        num_classes: int = 10,
        in_channels: int = 3,
        init: str = "prunenas",
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        kind = PreActBottleneck if block == "bottleneck" else PreActBasic
        self.conv1 = make_conv(in_channels, stem_width, 3)
        self.layer1: nn.Sequential
        self.layer2: nn.Sequential
        self.layer3: nn.Sequential
        in_planes = stem_width
        for s, (width, specs) in enumerate(zip(stage_widths, blocks, strict=True)):
            layers = []
            for i, spec in enumerate(specs):
                stride = 2 if (s > 0 and i == 0) else 1
                layers.append(kind(in_planes, spec.keep, spec.inner, width, stride))
                in_planes = width
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.bn = nn.BatchNorm2d(in_planes)
        self.select = make_selection(in_planes, final_keep)
        self.fc = nn.Linear(final_keep or in_planes, num_classes)
        init_weights(self, init, final_keep is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in (self.layer1, self.layer2, self.layer3):
            x = stage(x)
        x = F.relu(self.select(self.bn(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# -- what the spaces of both families share ---------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelLink:
    """Where a gene's channels live in the reference model: the BN whose channels it keeps, the conv that
    writes them (None for a selection: its BN keeps every channel), the selection module (None for a conv
    gene) and the layer that reads them (a conv, or the classifier)."""

    bn: str
    producer: str | None
    select: str | None
    consumer: str


def check_bool(space_name: str, key: str, value: object) -> bool:
    """A true/false [model] setting (`prunenas.spaces.settings.model_setting`)."""
    checked: bool = model_setting(space_name, {key: value}, key, value, kind=bool)
    return checked


def inherit_by_bn_scale(
    space: Space, links: Mapping[str, ChannelLink], reference_model: nn.Module, genotype: Genotype
) -> dict[str, torch.Tensor]:
    """The weights of `genotype` cut out of a trained reference model (a state_dict), by network slimming's
    rule: for every gene below its reference value, the channels of its BN with the largest |gamma|, kept in
    their original order. A conv gene narrows its conv's filters, the BN and the next layer's input; a
    selection keeps its BN whole, records the kept channels in its `index` and narrows the next layer's input."""
    genotype = space.validate(genotype)
    reference = space.reference()
    wider = [g for g, v in genotype.genes.items() if int(v) > int(reference.genes[g])]
    if wider:
        raise PrunenasError(
            f"genotype {genotype.key} is wider than the reference at {wider[:5]}: a pruned model keeps a subset of "
            "the reference's channels"
        )
    state = {k: v.detach().cpu().clone() for k, v in reference_model.state_dict().items()}
    num_classes = int(state["fc.weight"].shape[0])
    for gene, link in links.items():
        width = int(reference.genes[gene])
        keep = int(genotype.genes[gene])
        if keep == width:
            continue
        gamma = state[f"{link.bn}.weight"].abs()
        order = torch.argsort(gamma, descending=True, stable=True)
        kept = torch.sort(order[:keep]).values
        if link.select is not None:
            state[f"{link.select}.index"] = kept.clone()
        else:
            for key in ("weight", "bias", "running_mean", "running_var"):
                state[f"{link.bn}.{key}"] = state[f"{link.bn}.{key}"][kept].clone()
            state[f"{link.producer}.weight"] = state[f"{link.producer}.weight"][kept].clone()
        state[f"{link.consumer}.weight"] = state[f"{link.consumer}.weight"][:, kept].clone()

    return fitting(space, genotype, num_classes, state)


def selection_structured(links: Mapping[str, ChannelLink]) -> dict[str, str]:
    """The structured genes of a family: the genes that set a conv's output channels, mapped to that conv.
    A space whose genes are all selections maps them to their selection modules instead (whose output
    channels they set), so that proposers which need no scores (uniform) can narrow them; those that score
    Torch-Pruning groups then stop with an error naming the genes, as no group roots at a selection."""
    convs = {g: link.producer for g, link in links.items() if link.producer is not None}
    if convs:
        return convs
    return {g: link.select for g, link in links.items() if link.select is not None}


# -- the space ------------------------------------------------------------------------------------------------
def preresnet_blocks(space_name: str, depth: int, block: str) -> int:
    """Blocks per stage of a depth: (depth - 2) / 6 basic or (depth - 2) / 9 bottleneck blocks."""
    per = 6 if block == "basic" else 9
    if depth < per + 2 or (depth - 2) % per != 0:
        examples = "20, 56, 110" if block == "basic" else "29, 110, 164"
        raise SpaceError(f"space {space_name!r}: a {block} PreResNet has depth {per}n+2 ({examples}, ...), got {depth}")
    return (depth - 2) // per


class SelectionSpace(Space):
    """What the families with network slimming's channel selections share: every gene is linked to the BN
    whose channels it keeps (`links`), and a final selection feeds the classifier."""

    links: dict[str, ChannelLink]
    inheritance: ClassVar[str] = "channels of largest |BN scale| (network slimming's rule)"

    def structured_genes(self) -> dict[str, str]:
        """The genes that set a conv's output channels; a space of selections only: the selections."""
        return selection_structured(self.links)

    def gene_batchnorms(self) -> dict[str, str]:
        """Every gene -> path of the BN whose channels it keeps (the |gamma| network slimming ranks)."""
        return {gene: link.bn for gene, link in self.links.items()}

    def _selection(self, genes: list[Gene], prefix: str, path: str, planes: int, what: str) -> None:
        """The gene of the selection after `path`.bn1 that feeds `path`.conv1 (of `planes` channels)."""
        genes.append(
            Gene(f"{prefix}_select", "int", 1, planes, planes, description=f"channels of bn1 ({what}) fed to conv1")
        )
        self.links[f"{prefix}_select"] = ChannelLink(f"{path}.bn1", None, f"{path}.select", f"{path}.conv1")

    def _final_selection(self, genes: list[Gene], planes: int) -> None:
        """The gene of the selection after the final BN (the classifier's input channels)."""
        genes.append(
            Gene("final_select", "int", 1, planes, planes,
                 description=f"channels of the final BN (of {planes}) fed to the classifier")
        )  # fmt: skip
        self.links["final_select"] = ChannelLink("bn", None, "select", "fc")


class CifarPreResNetSpace(SelectionSpace):
    """Genes per block, in network order: stage{s}_block{b}_select (with `selection`: channels of the
    block's first BN kept), stage{s}_block{b}_conv1, and for bottlenecks stage{s}_block{b}_conv2 (inner
    widths); with `selection`, final_select (channels of the final BN that reach the classifier) last.

    Config: depth (164), block ("bottleneck"; or "basic"), widths ([16, 32, 64]: stage widths before the
    bottleneck expansion; the stem has widths[0]), selection (true), init ("prunenas"), bn_weight (every
    BatchNorm weight at init; default: the init scheme's), max_width_multiplier (1.0, inner widths only).
    The defaults build network slimming's PreResNet-164 (initialised as its code does with init =
    "rethinking").
    """

    family: ClassVar[str] = "cifar_preresnet"
    kind: ClassVar[SpaceKind] = "channels"
    config_keys: ClassVar[frozenset[str] | None] = frozenset(
        {"depth", "block", "widths", "selection", "init", "bn_weight", "max_width_multiplier"}
    )
    #: Network slimming's L1 penalty on the BN scales for ResNets (Liu et al. 2017).
    slimming_l1: ClassVar[float] = 1e-5

    def _make_genes(self) -> list[Gene]:
        name, config = self.name, self.config
        self.block: str = self.setting("block", "bottleneck", kind=str, choices=BLOCKS)
        self.depth: int = self.setting("depth", 164, low=1)
        self.n = preresnet_blocks(name, self.depth, self.block)
        self.widths: list[int] = self.setting(
            "widths", [16, 32, 64], kind=list, length=3, low=1, what="stage widths before the bottleneck expansion"
        )
        self.selection: bool = self.setting("selection", True, kind=bool)
        self.init = check_init(name, config.get("init", "prunenas"))
        self.bn_weight = check_bn_weight(name, config.get("bn_weight"))
        mult = width_multiplier(name, config)
        expansion = EXPANSION[self.block]
        self.stage_widths = [w * expansion for w in self.widths]
        convs = 2 if self.block == "bottleneck" else 1
        genes: list[Gene] = []
        self.links: dict[str, ChannelLink] = {}
        in_planes = self.widths[0]
        for s, (base, width) in enumerate(zip(self.widths, self.stage_widths, strict=True), start=1):
            for b in range(1, self.n + 1):
                prefix, path = f"stage{s}_block{b}", f"layer{s}.{b - 1}"
                if self.selection:
                    self._selection(genes, prefix, path, in_planes, f"over the {in_planes}-channel block input")
                for c in range(1, convs + 1):
                    top = max(base, int(base * mult))
                    genes.append(Gene(f"{prefix}_conv{c}", "int", 1, top, base, description=f"inner width (conv{c})"))
                    self.links[f"{prefix}_conv{c}"] = ChannelLink(
                        f"{path}.bn{c + 1}", f"{path}.conv{c}", None, f"{path}.conv{c + 1}"
                    )
                in_planes = width
        if self.selection:
            self._final_selection(genes, in_planes)
        return genes

    def blocks_of(self, genes: Mapping[str, GeneValue]) -> tuple[list[list[BlockSpec]], int | None]:
        """(block widths per stage, final selection) from gene values."""
        convs = 2 if self.block == "bottleneck" else 1
        stages = []
        for s in range(1, 4):
            specs = []
            for b in range(1, self.n + 1):
                prefix = f"stage{s}_block{b}"
                keep = int(genes[f"{prefix}_select"]) if self.selection else None
                specs.append(BlockSpec(keep, tuple(int(genes[f"{prefix}_conv{c}"]) for c in range(1, convs + 1))))
            stages.append(specs)
        final = int(genes["final_select"]) if self.selection else None
        return stages, final

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        stages, final = self.blocks_of(genes)
        return set_bn_weight(self._model(stages, final, num_classes), self.bn_weight)

    def _model(self, stages: list[list[BlockSpec]], final: int | None, num_classes: int) -> nn.Module:
        return CifarPreResNet(
            self.block,
            self.widths[0],
            self.stage_widths,
            stages,
            final,
            num_classes,
            self.input_shape[0],
            init=self.init,
        )

    def analytic_macs(self, genotype: Genotype) -> int | None:
        """Conv and FC multiply-accumulates from the widths (equal to the traced count)."""
        stages, final = self.blocks_of(genotype.genes)
        c_in, h, w = self.input_shape
        macs = h * w * self.widths[0] * c_in * 9
        in_planes = self.widths[0]
        for s, (width, specs) in enumerate(zip(self.stage_widths, stages, strict=True)):
            for i, spec in enumerate(specs):
                stride = 2 if (s > 0 and i == 0) else 1
                ho, wo = conv_out(h, 3, stride), conv_out(w, 3, stride)
                keep = spec.keep or in_planes
                if self.block == "basic":
                    (mid,) = spec.inner
                    macs += ho * wo * mid * keep * 9 + ho * wo * width * mid * 9
                else:
                    mid1, mid2 = spec.inner
                    macs += h * w * mid1 * keep + ho * wo * mid2 * mid1 * 9 + ho * wo * width * mid2
                if stride != 1 or in_planes != width:
                    macs += ho * wo * width * in_planes
                in_planes, h, w = width, ho, wo
        return macs + (final or in_planes) * self.num_classes

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
