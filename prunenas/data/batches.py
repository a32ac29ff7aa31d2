"""Device-side batches: one split kept on the training device, normalized and augmented per batch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from prunenas.data.splits import ImageSet, _check_positive
from prunenas.errors import DataError

# --------------------------------------------------------------------------------------------- device batches


class DeviceBatches:
    """Holds one ImageSet on a device as uint8 and yields normalized float batches.

    Epoch ``e``'s order and augmentation depend only on (seed, e, batch_size, device type), so resuming at
    epoch ``e`` replays the same batches. Augmentation is a random crop of the original size from the
    image zero-padded by ``padding`` pixels, then a horizontal flip with p=0.5 (torchvision's
    RandomCrop(32, padding=4) + RandomHorizontalFlip), done per batch on the device without host syncs.
    """

    def __init__(
        self,
        data: ImageSet,
        *,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        padding: int = 4,
        flip: bool = True,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _check_positive("batch_size", batch_size, "--batch-size")
        n = len(data)
        if n == 0:
            raise DataError("cannot make batches from an empty image set; check the dataset and split sizes")
        if drop_last and n < batch_size:
            raise DataError(
                f"batch_size {batch_size} is larger than the {n} images available, so drop_last leaves no batch; "
                f"pass --batch-size {n} or less"
            )
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got mean={mean!r} std={std!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point type, got {dtype}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.padding = padding
        self.flip = flip
        self.channels_last = channels_last
        self.dtype = dtype
        self.x = data.x.to(self.device).contiguous()
        self.y = data.y.to(self.device)
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        # normalize(x) = x * scale + shift = (x / 255 - mean) / std, as one fused multiply-add.
        self._scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, 3, 1, 1).to(self.device)
        _, _, h, w = self.x.shape
        self._rows = torch.arange(h, device=self.device)
        self._cols = torch.arange(w, device=self.device)

    @property
    def num_samples(self) -> int:
        """Images per epoch before drop_last."""
        return int(self.x.shape[0])

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images on this device -> ``dtype`` tensor ``(x / 255 - mean) / std`` (memory format kept)."""
        out = torch.addcmul(self._shift, x.to(torch.float32), self._scale)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out if self.dtype == torch.float32 else out.to(self.dtype)

    def _generator(self, epoch: int) -> tuple[torch.Generator, torch.device]:
        seed = (self.seed * 1_000_003 + epoch) % (1 << 63)
        try:
            gen = torch.Generator(device=self.device)
            where = self.device
        except RuntimeError:  # this device type has no generator: draw on the CPU and copy
            gen = torch.Generator()
            where = torch.device("cpu")
        gen.manual_seed(seed)
        return gen, where

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) batches for ``epoch``: images ``dtype`` (B, 3, H, W), labels int64 (B,)."""
        n = self.num_samples
        gen, where = self._generator(epoch)
        if self.shuffle:
            order = torch.randperm(n, generator=gen, device=where).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        if self.augment:
            span = 2 * self.padding + 1
            shifts = torch.randint(0, span, (2, n), generator=gen, device=where).to(self.device)
            flips = torch.randint(0, 2, (n,), generator=gen, device=where).to(self.device).bool()
            if not self.flip:
                flips.zero_()
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[sl]
            xb = self.x.index_select(0, idx)
            if self.augment:
                xb = self._crop_flip(xb, shifts[0, sl], shifts[1, sl], flips[sl])
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield self.normalize(xb), self.y.index_select(0, idx)

    def _crop_flip(self, x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Per-image crop at offsets (dy, dx) of the zero-padded batch, then optional mirror; one gather."""
        b, c, h, w = x.shape
        p = self.padding
        if p == 0:
            cols = torch.where(flip[:, None], self._cols.flip(0)[None, :], self._cols[None, :]).expand(b, w)
            index = cols[:, None, None, :].expand(b, c, h, w)
            return x.gather(3, index)
        padded = F.pad(x, (p, p, p, p))  # (b, c, h + 2p, w + 2p), zeros outside
        rows = dy[:, None] + self._rows[None, :]  # (b, h)
        cols = dx[:, None] + self._cols[None, :]  # (b, w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        flat = rows[:, :, None] * (w + 2 * p) + cols[:, None, :]  # (b, h, w) into the padded plane
        index = flat.view(b, 1, h * w).expand(b, c, h * w)
        return padded.view(b, c, -1).gather(2, index).view(b, c, h, w)
