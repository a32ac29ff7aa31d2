"""A third-party search space: one class (this file) plus one entry-point line (pyproject.toml).

Used by tests/test_plugins.py, which installs it into a temporary folder as a distribution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import nn

from prunenas.genotype import GeneValue
from prunenas.spaces import Gene, Space
from prunenas.spaces.base import SpaceKind


class TinySpace(Space):
    """A tiny two-conv network for plugin tests."""

    family: ClassVar[str] = "tiny"
    kind: ClassVar[SpaceKind] = "channels"
    default_config: ClassVar[Mapping[str, int]] = {"width": 8}

    def _make_genes(self) -> list[Gene]:
        width = int(self.config.get("width", 8))
        return [Gene(f"conv{i}", "int", 1, width, width, description="output channels") for i in (1, 2)]

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        c1, c2 = int(genes["conv1"]), int(genes["conv2"])
        return nn.Sequential(
            nn.Conv2d(self.input_shape[0], c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c2, num_classes),
        )
