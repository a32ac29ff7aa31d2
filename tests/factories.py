"""Model factories of the test suite: a user's own modules, as `--space tests/factories.py:NAME`."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """A small CNN with what real models have: a residual stream, a depthwise and a grouped conv, a
    concatenation, and a Linear classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16),
        )  # fmt: skip
        self.grouped = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4), nn.ReLU())
        self.side = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(48, 64, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = torch.cat([self.grouped(x), self.side(x)], dim=1)
        return self.fc(self.head(x))


def tiny_net(num_classes: int = 10) -> nn.Module:
    return TinyNet(num_classes)


class FixedReshape(nn.Module):
    """`conv2`'s width is baked into a reshape: pruning it breaks the model (a group that must stay fixed)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc(x.reshape(x.shape[0], 24 * 4))


def fixed_reshape(num_classes: int = 10) -> nn.Module:
    return FixedReshape(num_classes)


def raises(num_classes: int = 10) -> nn.Module:
    raise ValueError("this factory always fails")


def not_a_module(num_classes: int = 10) -> object:
    return {"layers": 3}


def no_classifier(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())  # feature maps, not class scores


NOT_CALLABLE = 42


def plain_cnn(num_classes: int = 10) -> nn.Module:
    """Convolutions without BatchNorm: data-parallel training of it equals one process exactly (no per-rank
    batch statistics)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, num_classes),
    )  # fmt: skip
