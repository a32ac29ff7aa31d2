"""Batches of images with dense targets (masks, boxes) on the training device, augmented together.

Augmentation moves the targets with the image: a random crop of the image zero-padded by an eighth of its
side (masks padded with ``IGNORE_INDEX``, boxes shifted and clipped, a box left with no area dropped), then
a random horizontal flip (mask columns reversed, box x-coordinates mirrored). Epoch ``e``'s order and
augmentation depend only on (seed, e), as the classification batches' do. The split lives on the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunenas.data import ImageSet
from prunenas.data.batches import check_batching
from prunenas.data.splits import IGNORE_INDEX
from prunenas.errors import DataError
from prunenas.tasks.base import Batches, Task


class DenseBatches:
    """(images, targets) batches of an ImageSet with masks or boxes: images ``float32 (B, 3, S, S)`` normalized
    as ``(x / 255 - mean) / std``; targets ``int64 (B, S, S)`` class ids, or ``float32 (B, K, 5)`` boxes
    (label, x1, y1, x2, y2), label -1 on padding rows."""

    def __init__(
        self, data: ImageSet, *, batch_size: int, device: torch.device | str, mean: Sequence[float],
        std: Sequence[float], augment: bool, shuffle: bool, drop_last: bool, seed: int = 0, flip: bool = True,
        channels_last: bool = False, shard: tuple[int, int] = (0, 1),
    ) -> None:  # fmt: skip
        if data.masks is None and data.boxes is None:
            raise DataError("this dataset has neither masks nor boxes; a segmentation or detection run needs them")
        n = len(data)
        check_batching(n, batch_size, drop_last, shard)
        rank, world = shard
        self.device = torch.device(device)
        self.x = data.x.to(self.device)
        self.masks = data.masks.to(self.device) if data.masks is not None else None
        self.boxes = data.boxes.to(self.device) if data.boxes is not None else None
        self.batch_size, self.count = batch_size, n
        self.augment, self.shuffle, self.drop_last, self.flip = augment, shuffle, drop_last, flip
        self.seed, self.channels_last = seed, channels_last
        self.rank, self.world = rank, world
        self.size = int(data.x.shape[-1])
        self.pad = max(1, self.size // 8)
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, 3, 1, 1).to(self.device)

    def __len__(self) -> int:
        n = self.count
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (1 << 63))
        order = torch.randperm(self.count, generator=gen) if self.shuffle else torch.arange(self.count)
        if not self.augment:
            return order, None
        shifts = torch.randint(0, 2 * self.pad + 1, (2, self.count), generator=gen)
        flips = torch.randint(0, 2, (1, self.count), generator=gen)
        if not self.flip:
            flips.zero_()
        return order, torch.cat([shifts, flips])

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, params = self._draws(epoch)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min(self.count, (b + 1) * self.batch_size))
            if self.world > 1:
                sl = slice(sl.start + self.rank, sl.stop, self.world)
            idx = order[sl]
            dev_idx = idx.to(self.device)
            x = self.x.index_select(0, dev_idx)
            target = (self.masks if self.masks is not None else self.boxes).index_select(0, dev_idx)  # type: ignore[union-attr]
            if params is not None:
                x, target = self._augment(x, target, params[:, idx])
            elif self.masks is not None:
                target = target.long()
            out = torch.addcmul(self._shift, x.to(torch.float32), self._scale)
            if self.channels_last:
                out = out.contiguous(memory_format=torch.channels_last)
            yield out, target

    def _augment(
        self, x: torch.Tensor, target: torch.Tensor, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p, s = self.pad, self.size
        padded = F.pad(x, (p, p, p, p))
        dy, dx, flips = params[0].tolist(), params[1].tolist(), params[2].tolist()
        xs = []
        if self.masks is not None:
            mpad = F.pad(target, (p, p, p, p), value=IGNORE_INDEX)
            ms = []
            for i in range(x.shape[0]):
                img = padded[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s]
                mask = mpad[i, dy[i] : dy[i] + s, dx[i] : dx[i] + s]
                if flips[i]:
                    img, mask = img.flip(-1), mask.flip(-1)
                xs.append(img)
                ms.append(mask)
            return torch.stack(xs), torch.stack(ms).long()
        boxes = target.clone()
        for i in range(x.shape[0]):
            img = padded[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s]
            row = boxes[i]
            row[:, 1:5:2] = (row[:, 1:5:2] + (p - dx[i])).clamp(0, s)
            row[:, 2:5:2] = (row[:, 2:5:2] + (p - dy[i])).clamp(0, s)
            if flips[i]:
                img = img.flip(-1)
                x1 = row[:, 1].clone()
                row[:, 1] = s - row[:, 3]
                row[:, 3] = s - x1
            empty = (row[:, 3] - row[:, 1] < 1) | (row[:, 4] - row[:, 2] < 1)
            row[empty & (row[:, 0] >= 0), 0] = -1
            xs.append(img)
        return torch.stack(xs), boxes


def outside_backbone(model: nn.Module) -> list[str]:
    """Conv2d/Linear paths of a model with a ``backbone`` child that lie outside it (its heads); [] without one."""
    if not isinstance(getattr(model, "backbone", None), nn.Module):
        return []
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not (n == "backbone" or n.startswith("backbone."))
    ]


class DenseTask(Task):
    """What segmentation and detection share: in-memory `DenseBatches` (targets moved with their images), the
    recipe's batch size for evaluation, and every layer outside `backbone` a head."""

    eval_batch: ClassVar[int] = 0

    def head_layers(self, model: nn.Module) -> list[str]:
        return outside_backbone(model)

    def batches(
        self, split: ImageSet, *, train: bool, augment: bool, batch_size: int, device: torch.device,
        mean: Sequence[float], std: Sequence[float], seed: int, channels_last: bool, flip: bool, drop_last: bool,
        out_size: int, crop: str, shard: tuple[int, int],
    ) -> Batches:  # fmt: skip
        # a detection dataset's mean and std are 0 and 1 (prunenas.data): a detector normalizes 0..1 images itself
        return DenseBatches(
            split, batch_size=batch_size, device=device, mean=mean, std=std, augment=train and augment, shuffle=train,
            drop_last=train and drop_last, seed=seed, flip=flip, channels_last=channels_last,
            shard=shard if train else (0, 1),
        )  # fmt: skip
