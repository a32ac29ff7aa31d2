"""The split containers (``ImageSet``, ``DatasetSplits``) and the seeded train/val split.

``ImageSet`` holds one split as uint8 ``(N, 3, H, W)`` images and int64 labels; ``DatasetSplits`` holds a
dataset's train/val/test splits with its class names and train-set normalization statistics. ``_split``
carves a seeded validation set (and optional train subset) out of the decoded training images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from prunenas.errors import DataError

#: The mask value of pixels no class is scored on (borders, padding, "void"), as in VOC's PNG masks.
IGNORE_INDEX = 255

# --------------------------------------------------------------------------------------------- containers


@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split: ``x`` (M, 3, H, W) uint8 images, ``y`` (M,) int64 class ids.

    An in-memory set owns all M rows. A set read from a disk cache (``prunenas.data.diskcache``) has
    ``x`` memory-mapped from the cache file and ``rows``, the indices of its images in ``x``; taking a
    subset then composes indices instead of copying images, so host memory stays bounded."""

    x: torch.Tensor
    y: torch.Tensor
    rows: torch.Tensor | None = None
    file: tuple[str, int] | None = None  # a disk cache's (path, byte offset of row 0): chunks are read from it
    #: Segmentation: uint8 (M, H, W) class id per pixel (``IGNORE_INDEX``: not scored), aligned with ``x``.
    masks: torch.Tensor | None = None
    #: Detection: float32 (M, K, 5) rows (label, x1, y1, x2, y2) in pixels of ``x``, padded with label -1 rows.
    boxes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4 or self.x.shape[1] != 3:
            raise ValueError(f"ImageSet.x must be uint8 (N, 3, H, W), got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.shape != (self.x.shape[0],):
            raise ValueError(f"ImageSet.y must be int64 (N,), got {self.y.dtype} {tuple(self.y.shape)}")
        if self.rows is not None and (self.rows.dtype != torch.int64 or self.rows.dim() != 1):
            raise ValueError(f"ImageSet.rows must be int64 (N,), got {self.rows.dtype} {tuple(self.rows.shape)}")
        if self.masks is not None and (
            self.masks.dtype != torch.uint8 or tuple(self.masks.shape) != (self.x.shape[0], *self.x.shape[2:])
        ):
            raise ValueError(
                f"ImageSet.masks must be uint8 (N, H, W), got {self.masks.dtype} {tuple(self.masks.shape)}"
            )
        if self.boxes is not None and (
            self.boxes.dtype != torch.float32 or self.boxes.dim() != 3 or self.boxes.shape[::2] != (self.x.shape[0], 5)
        ):
            raise ValueError(
                f"ImageSet.boxes must be float32 (N, K, 5), got {self.boxes.dtype} {tuple(self.boxes.shape)}"
            )
        if (self.masks is not None or self.boxes is not None) and self.rows is not None:
            raise ValueError("an ImageSet with masks or boxes lives in memory (no disk-cache rows)")

    def __len__(self) -> int:
        return int(self.x.shape[0] if self.rows is None else self.rows.shape[0])

    @property
    def on_disk(self) -> bool:
        """Images memory-mapped from a disk cache (streamed to the device, never held whole)."""
        return self.rows is not None

    @property
    def labels(self) -> torch.Tensor:
        """(N,) int64 class ids of this set's images."""
        return self.y if self.rows is None else self.y.index_select(0, self.rows)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(3, H, W) of every image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (len(indices), 3, H, W) images at positions ``indices`` of this set (read from disk if cached).

        A disk-cached set reads its rows with positioned reads into a fresh buffer (one read for the span of
        rows close together, as a chunk's are; one per row when they are scattered, as a validation split's
        are), never through the memory map, so the cache's pages never count as this process's memory."""
        rows = indices if self.rows is None else self.rows.index_select(0, indices)
        if self.file is None or rows.numel() == 0:
            return self.x.index_select(0, rows)
        path, offset = self.file
        row_bytes = int(self.x[0].numel())
        first, last = int(rows.min()), int(rows.max())
        span = last - first + 1
        with open(path, "rb", buffering=0) as fh:
            if span <= 2 * rows.numel() + SPAN_SLACK:
                block = _read_rows(fh, offset + first * row_bytes, span * row_bytes).view(span, *self.x.shape[1:])
                return block if span == rows.numel() else block.index_select(0, rows - first)
            out = torch.empty((rows.numel(), *self.x.shape[1:]), dtype=torch.uint8)
            flat = out.view(rows.numel(), row_bytes).numpy()
            for i, r in enumerate(rows.tolist()):
                got = os.preadv(fh.fileno(), [memoryview(flat[i])], offset + r * row_bytes)
                if got != row_bytes:
                    raise OSError(f"{path} ends early (truncated cache file)")
            return out

    def take(self, indices: torch.Tensor) -> ImageSet:
        """The images at ``indices`` (a 1-D int64 tensor): a new contiguous in-memory set, or for a disk-cached
        set a view with composed row indices."""
        if self.rows is not None:
            return ImageSet(self.x, self.y, self.rows.index_select(0, indices), self.file)
        return ImageSet(
            self.x.index_select(0, indices).contiguous(),
            self.y.index_select(0, indices),
            masks=None if self.masks is None else self.masks.index_select(0, indices).contiguous(),
            boxes=None if self.boxes is None else self.boxes.index_select(0, indices).contiguous(),
        )


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """A dataset's train/val/test splits, class names and train-set normalization statistics."""

    name: str
    classes: tuple[str, ...]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    seed: int
    source: str
    flip: bool = True  # horizontal flips are label-preserving (not for digits: a mirrored 2 is no 2)
    normalize: str = "train"  # where mean/std come from: the training split, or fixed constants (NORMALIZATIONS)
    image_size: int | None = None  # pixels the model sees, when the stored images are larger (crops); None: stored
    skipped: int = 0  # unreadable images left out (--bad-images skip)
    cache: str = "memory"  # where the images live: "memory" (whole on the device) or a disk cache folder (streamed)
    #: The task the dataset poses (prunenas.tasks): "classification", "segmentation" (masks) or "detection" (boxes).
    task: str = "classification"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(3, H, W) of the model's input: the stored images, or their crops of `image_size` pixels."""
        c, h, w = self.train.shape
        return (c, self.image_size, self.image_size) if self.image_size else (c, h, w)

    @property
    def stored_size(self) -> int:
        return self.train.shape[1]

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: name, sizes, classes, image shape, mean, std, seed, source."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "image_shape": list(self.image_shape),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "mean": [round(v, 6) for v in self.mean],
            "std": [round(v, 6) for v in self.std],
            "seed": self.seed,
            "source": self.source,
            "flip": self.flip,
            "normalize": self.normalize,
            "stored_size": self.stored_size,
            "skipped_unreadable": self.skipped,
            "cache": self.cache,
            **({"task": self.task} if self.task != "classification" else {}),
        }


@dataclass(frozen=True, eq=False)
class _Raw:
    """Decoded images before any split."""

    classes: tuple[str, ...]
    train: ImageSet
    test: ImageSet
    skipped: int = 0  # unreadable images left out (--bad-images skip)
    stats: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # a disk cache's train stats
    cache: str = "memory"  # where the images live: "memory", or the disk cache's folder
    task: str = "classification"  # what the targets are: class ids, masks (segmentation) or boxes (detection)


SPAN_SLACK = 64  # rows of gap a single read over a span of rows may carry beyond twice the rows wanted


def _read_rows(fh: Any, start: int, size: int) -> torch.Tensor:
    """`size` bytes of an open file from byte `start`, as a fresh uint8 tensor (positioned reads)."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.preadv(fh.fileno(), [view[got:]], start + got)
        if not n:
            raise OSError(f"{fh.name} ends early (truncated cache file)")
        got += n
    return torch.frombuffer(buf, dtype=torch.uint8)


# --------------------------------------------------------------------------------------------- splitting


def _check_positive(label: str, value: object, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{label} must be a positive integer, got {value!r}; pass a positive {flag}")


#: Fixed per-channel (mean, std) constants: the Rethinking repository's CIFAR constants and the ImageNet
#: constants that open_lth applies to CIFAR-10. "train" (the default) computes them from the training split.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _split(
    name: str,
    raw: _Raw,
    source: str,
    *,
    val_size: int | None,
    train_subset: int | None,
    seed: int,
    normalize: str = "train",
) -> DatasetSplits:
    if normalize != "train" and normalize not in NORMALIZATIONS:
        raise DataError(
            f"unknown normalisation {normalize!r}; valid: train, {', '.join(NORMALIZATIONS)}; pass one with --normalize"
        )
    n = len(raw.train)
    if n < 2:
        raise DataError(
            f"{name} from {source} has {n} training image(s); at least 2 are needed (one to train, one to "
            "validate): add images under train/"
        )
    if val_size is None:
        val_size = max(1, round(n / 10))
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
        raise DataError(
            f"val_size must be an integer >= 0, got {val_size!r}; pass --val-size N (0: no validation split)"
        )
    if val_size > n - 1:
        raise DataError(
            f"val_size={val_size} is too large for {name}: its training set has {n} images, so the maximum is "
            f"{n - 1}; pass a smaller --val-size"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx = perm[:val_size].sort().values
    rest = perm[val_size:]
    if train_subset is not None:
        _check_positive("train_subset", train_subset, "--train-subset")
        if train_subset > len(rest):
            raise DataError(
                f"train_subset={train_subset} is too large for {name}: {len(rest)} training images remain after "
                f"the {val_size}-image validation split; pass at most {len(rest)} to --train-subset"
            )
        rest = rest[:train_subset]  # rest is already a seeded random order, so this is a seeded subset
    train = raw.train.take(rest.sort().values)
    if raw.task == "detection":  # a detector normalizes its 0..1 input itself (torchvision's transform)
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    elif normalize != "train":
        mean, std = NORMALIZATIONS[normalize]
    elif raw.stats is not None:  # a disk cache: the statistics of its whole training folder, computed once
        mean, std = raw.stats
    else:
        mean, std = _channel_stats(train.x)
    return DatasetSplits(
        name=name,
        classes=raw.classes,
        train=train,
        val=raw.train.take(val_idx),
        test=raw.test,
        mean=mean,
        std=std,
        seed=seed,
        source=source,
        flip=name != "digits",
        normalize=normalize,
        skipped=raw.skipped,
        cache=raw.cache,
        task=raw.task,
    )


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and (population) std of uint8 images in [0, 1] units, exact via 256-bin histograms."""
    levels = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(3):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * levels).sum() / total
        var = (counts * (levels - mean).square()).sum() / total
        means.append(float(mean) / 255.0)
        stds.append(float(var.sqrt()) / 255.0)
    return (means[0], means[1], means[2]), (stds[0], stds[1], stds[2])
