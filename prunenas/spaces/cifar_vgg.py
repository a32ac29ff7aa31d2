"""CIFAR VGG with BatchNorm (the variant of Li et al. 2017 and network slimming), one gene per conv.

Features: 3x3 conv + BN + ReLU layers with 2x2 max-pools between groups; after the last conv a
global average pool (a 2x2 average for 32x32 inputs, as in both papers' code). Classifier:
  "li":       FC(c, 512) - BN - ReLU - FC(512, classes)  (Li et al.; VGG-16 = 313.5M MACs)
  "slimming": FC(c, classes)                           (network slimming)
where c is the width of the last conv (a gene). Convs have no bias unless `conv_bias` (open_lth's VGG);
`init` picks the initialisation scheme (`prunenas.spaces.init`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from prunenas.errors import SpaceError
from prunenas.genotype import GeneValue
from prunenas.spaces.base import Gene, Space, SpaceKind, WidthRule
from prunenas.spaces.init import check_init, initialize
from prunenas.spaces.settings import width_multiplier

# Conv widths per depth; "M" is a 2x2 max-pool.
VGG_CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}
CLASSIFIERS = ("li", "slimming")
#: Li et al. 2017's VGG-16-A (the l1-paper proposer): conv 1 and convs 8-13 lose 50% of their filters.
LI_VGG16_A = [0.5, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


class CifarVGG(nn.Module):
    def __init__(
        self,
        cfg: Sequence[int | str],
        classifier: str = "li",
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        conv_bias: bool = False,
        init: str = "prunenas",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                c_out = int(item)
                layers += [
                    nn.Conv2d(c_in, c_out, 3, 1, 1, bias=conv_bias),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ]
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if classifier == "li":
            self.classifier: nn.Module = nn.Sequential(
                nn.Linear(c_in, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
            )
        elif classifier == "slimming":
            self.classifier = nn.Linear(c_in, num_classes)
        else:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        initialize(self, init, "vgg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class CifarVGGSpace(Space):
    """Genes conv1..convK (network order), each in [1, reference width].

    Config: depth (11/13/16/19) or cfg (a list of widths and "M"), classifier ("li"/"slimming"),
    max_width_multiplier (1.0), conv_bias (false), init (`prunenas.spaces.init`).
    """

    family: ClassVar[str] = "cifar_vgg"
    config_keys: ClassVar[frozenset[str] | None] = frozenset(
        {"depth", "cfg", "classifier", "max_width_multiplier", "conv_bias", "init"}
    )
    kind: ClassVar[SpaceKind] = "channels"
    #: Network slimming's L1 penalty on the BN scales (Liu et al. 2017: 1e-4 for VGG, 1e-5 for ResNet).
    slimming_l1: ClassVar[float] = 1e-4

    def _make_genes(self) -> list[Gene]:
        cfg: Any = self.config.get("cfg")
        if cfg is None:
            depth: int = self.setting("depth", 16, low=1)
            if depth not in VGG_CFGS:
                raise SpaceError(f"space {self.name!r}: VGG depth must be one of {sorted(VGG_CFGS)}, got {depth}")
            cfg = VGG_CFGS[depth]
        if not cfg or not all(c == "M" or (isinstance(c, int) and c > 0) for c in cfg):
            raise SpaceError(f'space {self.name!r}: cfg must list positive ints and "M", got {cfg!r}')
        self.cfg: list[int | str] = list(cfg)
        self.classifier: str = self.setting("classifier", "li", kind=str, choices=CLASSIFIERS)
        self.init = check_init(self.name, self.config.get("init", "prunenas"))
        self.conv_bias: bool = self.setting("conv_bias", False, kind=bool)
        mult = width_multiplier(self.name, self.config)
        widths = [int(c) for c in self.cfg if c != "M"]
        return [
            Gene(f"conv{i}", "int", 1, max(w, int(w * mult)), w, description="output channels")
            for i, w in enumerate(widths, start=1)
        ]

    def cfg_of(self, genes: Mapping[str, GeneValue]) -> list[int | str]:
        """The layer list (widths and "M") for gene values."""
        out: list[int | str] = []
        i = 0
        for item in self.cfg:
            if item == "M":
                out.append("M")
            else:
                i += 1
                out.append(int(genes[f"conv{i}"]))
        return out

    def structured_genes(self) -> dict[str, str]:
        """Every conv: gene convI -> its module path in `features` (conv, BN, ReLU per conv; one pool per "M")."""
        genes: dict[str, str] = {}
        index = 0
        conv = 0
        for item in self.cfg:
            if item == "M":
                index += 1
            else:
                conv += 1
                genes[f"conv{conv}"] = f"features.{index}"
                index += 3
        return genes

    def li2017_profile(self, variant: str) -> tuple[list[float], WidthRule] | None:
        """Li et al.'s VGG-16-A (`LI_VGG16_A`): a 13-conv VGG, variant A only."""
        if len(self.genes) != 13 or variant != "A":
            return None
        reference = dict(self.reference().genes)

        def widths(scale: float) -> dict[str, int]:
            return {
                f"conv{i + 1}": max(1, int(int(reference[f"conv{i + 1}"]) * (1.0 - r * scale) + 1e-9))
                for i, r in enumerate(LI_VGG16_A)
            }

        return LI_VGG16_A, widths

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        return CifarVGG(
            self.cfg_of(genes), self.classifier, num_classes, self.input_shape[0], conv_bias=self.conv_bias,
            init=self.init,
        )  # fmt: skip
