"""CIFAR ResNets (He et al. 2016, section 4.2) with searchable widths.

ResNet-N has a 3->w1 stem conv, three stages of n = (N-2)/6 BasicBlocks with residual widths
w1/w2/w3 (16/32/64 by default), global average pooling and one FC layer. Li et al. (2017) and the
Rethinking paper prune only the first conv of each block (its output is the block's "inner width"),
keeping the residual widths; here both are genes.

Shortcuts where the shape changes:
  "A": parameter-free: subsample by the stride, then zero-pad the missing channels (half before,
       half after, as in Li et al.'s code) or, if the block narrows, keep the first channels.
  "A-pool": parameter-free as the Rethinking repository's L1-norm ResNets build it: AvgPool2d(stride)
       instead of subsampling, the zero channels appended after the input's, and no gradient through
       the shortcut (it is computed from the detached input).
  "B": a 1x1 conv + BN projection (open_lth, Torch-Pruning).

Initialisation: the [model] `init` scheme (`prunenas.spaces.init`; ResNets: "prunenas" and "rethinking"
are the same weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunenas.errors import PrunenasError, SpaceError
from prunenas.genotype import GeneValue, Genotype
from prunenas.spaces.base import Gene, Space, SpaceKind, WidthRule
from prunenas.spaces.init import check_init, initialize
from prunenas.spaces.settings import model_setting, width_multiplier

SHORTCUTS = ("A", "A-pool", "B")
#: Li et al. 2017's ResNet variants (the l1-paper proposer): (depth, variant) -> (the conv ids it skips, the
#: prune ratio of each stage). Conv ids count 1..N-1 with 1 = the stem; a block's first conv has an even id
#: (2 + 2 * block index).
LI_RESNET = {
    (56, "A"): ([16, 20, 38, 54], [0.1, 0.1, 0.1]),
    (56, "B"): ([16, 18, 20, 34, 38, 54], [0.6, 0.3, 0.1]),
    (110, "A"): ([36], [0.5, 0.0, 0.0]),
    (110, "B"): ([36, 38, 74], [0.5, 0.4, 0.3]),
}


class ShortcutA(nn.Module):
    """Parameter-free shortcut: strided subsampling plus zero-padding (or truncation) of channels.

    `pool=True` is the Rethinking repository's variant: average pooling over stride x stride windows, the
    zero channels appended after the input's, and the input detached (no gradient flows through it)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, pool: bool = False) -> None:
        super().__init__()
        self.in_planes, self.out_planes, self.stride, self.pool = in_planes, out_planes, stride, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool:
            x = x.detach()
            if self.stride != 1:
                x = F.avg_pool2d(x, self.stride, self.stride)
        elif self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra > 0:
            front = 0 if self.pool else extra // 2
            x = F.pad(x, (0, 0, 0, 0, front, extra - front))
        elif extra < 0:
            x = x[:, : self.out_planes]
        return x

    def extra_repr(self) -> str:
        pool = ", avg-pool, detached" if self.pool else ""
        return f"{self.in_planes}->{self.out_planes}, stride={self.stride}{pool}"


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, mid_planes: int, out_planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, out_planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module
        if stride == 1 and in_planes == out_planes:
            self.shortcut = nn.Identity()
        elif shortcut in ("A", "A-pool"):
            self.shortcut = ShortcutA(in_planes, out_planes, stride, pool=shortcut == "A-pool")
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet with explicit widths: `stage_widths[s]` and `block_widths[s][i]`."""

    def __init__(
        self,
        stage_widths: Sequence[int],
        block_widths: Sequence[Sequence[int]],
        shortcut: str = "A",
        num_classes: int = 10,
        in_channels: int = 3,
        init: str = "prunenas",
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        self.layer1: nn.Sequential
        self.layer2: nn.Sequential
        self.layer3: nn.Sequential
        in_planes = stage_widths[0]
        for s, (width, inner) in enumerate(zip(stage_widths, block_widths, strict=True)):
            blocks = []
            for i, mid in enumerate(inner):
                stride = 2 if (s > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, mid, width, stride, shortcut))
                in_planes = width
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(in_planes, num_classes)
        initialize(self, init, "resnet")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3):
            x = stage(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def blocks_per_stage(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6 != 0:
        raise SpaceError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110, ...), got {depth}")
    return (depth - 2) // 6


class _ResNetConfig:
    """Shared TOML settings of the ResNet families: depth, shortcut, residual widths, init."""

    def __init__(self, space_name: str, config: Mapping[str, Any]) -> None:
        self.depth: int = model_setting(space_name, config, "depth", 56, low=8, hint="6n+2: 20, 32, 56, 110, ...")
        self.n = blocks_per_stage(self.depth)
        self.shortcut: str = model_setting(space_name, config, "shortcut", "A", kind=str, choices=SHORTCUTS)
        self.init = check_init(space_name, config.get("init", "prunenas"))
        self.widths: list[int] = model_setting(
            space_name, config, "widths", [16, 32, 64], kind=list, length=3, low=1, what="residual width per stage"
        )


class CifarResNetSpace(Space):
    """Genes: residual width of each stage, then the inner width of each of its blocks.

    Order (network order): stage1_width, stage1_block1..n, stage2_width, stage2_block1..n, ...
    Config: depth (6n+2), shortcut ("A"/"A-pool"/"B"), widths ([16, 32, 64]), max_width_multiplier (1.0),
    init (`prunenas.spaces.init`).
    """

    family: ClassVar[str] = "cifar_resnet"
    kind: ClassVar[SpaceKind] = "channels"
    config_keys: ClassVar[frozenset[str] | None] = frozenset(
        {"depth", "shortcut", "widths", "max_width_multiplier", "init"}
    )

    def _make_genes(self) -> list[Gene]:
        self.arch = _ResNetConfig(self.name, self.config)
        mult = width_multiplier(self.name, self.config)
        genes = []
        for s, width in enumerate(self.arch.widths, start=1):
            top = max(width, int(width * mult))
            genes.append(Gene(f"stage{s}_width", "int", 1, top, width, description="residual width"))
            genes.extend(
                Gene(f"stage{s}_block{b}", "int", 1, top, width, description="inner width (conv1 of the block)")
                for b in range(1, self.arch.n + 1)
            )
        return genes

    def widths_of(self, genes: Mapping[str, GeneValue]) -> tuple[list[int], list[list[int]]]:
        """(stage widths, inner widths per stage) from gene values."""
        stage = [int(genes[f"stage{s}_width"]) for s in (1, 2, 3)]
        inner = [[int(genes[f"stage{s}_block{b}"]) for b in range(1, self.arch.n + 1)] for s in (1, 2, 3)]
        return stage, inner

    def inner_widths(self, cfg: Sequence[int], stage_widths: Sequence[int] | None = None) -> dict[str, int]:
        """Gene values from Li et al.'s cfg (one inner width per block) and optional stage widths."""
        if len(cfg) != 3 * self.arch.n:
            raise SpaceError(f"space {self.name!r} has {3 * self.arch.n} blocks, cfg has {len(cfg)}")
        widths = list(stage_widths or self.arch.widths)
        genes: dict[str, int] = {}
        for s in range(3):
            genes[f"stage{s + 1}_width"] = widths[s]
            for b in range(self.arch.n):
                genes[f"stage{s + 1}_block{b + 1}"] = int(cfg[s * self.arch.n + b])
        return genes

    def structured_genes(self) -> dict[str, str]:
        """Inner widths always; residual widths only with shortcut B. With the zero-padding shortcut A
        the residual channels are tied through a parameter-free op that dependency tracing cannot
        follow (Torch-Pruning corrupts such models), so, as in Li et al., they are not pruned."""
        genes: dict[str, str] = {}
        for s in (1, 2, 3):
            if self.arch.shortcut == "B":
                genes[f"stage{s}_width"] = "conv1" if s == 1 else f"layer{s}.0.conv2"
            for b in range(1, self.arch.n + 1):
                genes[f"stage{s}_block{b}"] = f"layer{s}.{b - 1}.conv1"
        return genes

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        stage, inner = self.widths_of(genes)
        channels = self.input_shape[0]
        return CifarResNet(stage, inner, self.arch.shortcut, num_classes, in_channels=channels, init=self.arch.init)

    def li2017_profile(self, variant: str) -> tuple[list[float], WidthRule] | None:
        """Li et al.'s ResNet-56/110 rule: per-stage ratios on each block's first conv, but the convs of the
        variant's skip list (`LI_RESNET`); keep = int(out * (1 - ratio))."""
        depth = self.arch.depth
        if (depth, variant) not in LI_RESNET:
            raise PrunenasError(
                f"l1-paper defines ResNet-56 and ResNet-110 variants A and B; {self.name!r} is ResNet-{depth} "
                f"variant {variant!r}: use resnet56_channels or resnet110_channels with variant A or B"
            )
        skip, ratios = LI_RESNET[(depth, variant)]
        n = self.arch.n
        reference = dict(self.reference().genes)

        def widths(scale: float) -> dict[str, int]:
            out: dict[str, int] = {}
            for b in range(3 * n):
                s = b // n
                gene = f"stage{s + 1}_block{b % n + 1}"
                full = int(reference[gene])
                ratio = 0.0 if 2 + 2 * b in skip else ratios[s] * scale
                out[gene] = max(1, int(full * (1.0 - ratio) + 1e-9))
            return out

        return ratios, widths


class CifarResNetStagesSpace(Space):
    """The low-dimensional "guided pruning" space: one prune ratio per stage.

    Every block of stage s gets inner width max(1, int(w_s * (1 - ratio_s))) (Li et al.'s rounding);
    residual widths stay fixed. Config: depth, shortcut, widths, max_ratio (0.9).
    """

    family: ClassVar[str] = "cifar_resnet_stages"
    kind: ClassVar[SpaceKind] = "ratios"
    config_keys: ClassVar[frozenset[str] | None] = frozenset({"depth", "shortcut", "widths", "max_ratio", "init"})
    proposer_kind: ClassVar[str | None] = None  # no pruning method proposes stage ratios
    value_label: ClassVar[str] = "prune ratio"

    def _make_genes(self) -> list[Gene]:
        self.arch = _ResNetConfig(self.name, self.config)
        max_ratio: float = self.setting(
            "max_ratio", 0.9, kind=float, low=0.0, low_open=True, high=1.0, high_open=True,
            what="the largest fraction of a stage's inner channels pruned",
        )  # fmt: skip
        return [
            Gene(
                f"stage{s}_ratio",
                "float",
                0.0,
                max_ratio,
                0.0,
                description="fraction of inner channels pruned",
            )
            for s in (1, 2, 3)
        ]

    def smallest_genotype(self) -> Genotype:
        """The largest prune ratio of every stage."""
        return self.make({g.name: g.high for g in self.genes}, origin="smallest")

    def gene_fraction(self, gene: Gene, value: GeneValue) -> float:
        return 1.0 - float(value)

    def initial_state(
        self,
        reference_model: nn.Module,
        genotype: Genotype,
        masks: Mapping[str, torch.Tensor] | None = None,
        *,
        criterion: str | None = None,
    ) -> dict[str, torch.Tensor]:
        raise SpaceError(f"space {self.name!r} samples prune ratios; fine-tuning needs a channel or density space")

    def inner_width(self, stage: int, ratio: float) -> int:
        return max(1, int(self.arch.widths[stage] * (1.0 - ratio)))

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        inner = [[self.inner_width(s, float(genes[f"stage{s + 1}_ratio"]))] * self.arch.n for s in range(3)]
        return CifarResNet(
            self.arch.widths, inner, self.arch.shortcut, num_classes, self.input_shape[0], init=self.arch.init
        )
