"""Datasets as uint8 tensors (decoded once and cached), a seeded validation split, and device-side batches.

``load_dataset`` reads CIFAR-10/100 (python batches, an ImageFolder tree, or a .tar.gz of either), the
embedded 8x8 digits set, or a user's own ImageFolder tree, and returns train/val/test splits as uint8
``(N, 3, H, W)`` tensors. ``DeviceBatches`` keeps one split on the training device and yields normalized
float batches, with pad-and-crop plus horizontal-flip augmentation done there, vectorized.

The work is split across submodules: ``splits`` (the ``ImageSet``/``DatasetSplits`` containers and the
seeded split), ``sources`` (locating, downloading and caching a dataset), ``decode`` (turning batches,
image trees, archives and the embedded digits into uint8 arrays) and ``batches`` (``DeviceBatches``).
"""

from __future__ import annotations

import os
from pathlib import Path

from prunenas.data.batches import DeviceBatches
from prunenas.data.decode import _load_digits
from prunenas.data.sources import DATASETS, DOWNLOAD_MD5, DOWNLOAD_URLS, _load_cached, _resolve_source
from prunenas.data.splits import DatasetSplits, ImageSet, _check_positive, _split
from prunenas.errors import DataError

__all__ = [
    "DATASETS",
    "DOWNLOAD_MD5",
    "DOWNLOAD_URLS",
    "DatasetSplits",
    "DeviceBatches",
    "ImageSet",
    "default_cache_dir",
    "load_dataset",
]


# --------------------------------------------------------------------------------------------- public entry


#: The pixel size datasets are decoded at (CIFAR's own; ImageFolder trees are resized to it).
DEFAULT_IMAGE_SIZE = 32


def default_cache_dir() -> Path:
    """``$PRUNENAS_CACHE`` if set, else ``~/.cache/prunenas/datasets``."""
    env = os.environ.get("PRUNENAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunenas" / "datasets"


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_size: int | None = None,
    train_subset: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    download: bool = True,
    image_size: int = DEFAULT_IMAGE_SIZE,
    normalize: str = "train",
) -> DatasetSplits:
    """Load ``name`` (one of DATASETS) and split it.

    ``val`` is a seeded random ``val_size`` images (default 10% of the training images, i.e. 5,000 for
    CIFAR; 0: none, every training image trains) of the original training set; ``train`` is the rest, or a
    seeded ``train_subset`` of it (val does not depend on ``train_subset``). ``test`` is the official test
    set (digits: a fixed 20%, seed 0).
    CIFAR is downloaded (md5-checked) into ``data_dir`` or the cache when nothing is found and ``download``
    is true. ``data_dir`` is ignored for the embedded ``digits``. ``normalize`` is "train" (mean and std of the
    training split) or the name of fixed constants (``NORMALIZATIONS``: "cifar", "imagenet").
    Raises DataError for bad input.
    """
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: valid names are {', '.join(DATASETS)}; pass one with --dataset")
    name = name.lower()
    _check_positive("image_size", image_size, "--image-size")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(1 << 63) <= seed < (1 << 63):
        raise DataError(f"seed must be an integer in [-2**63, 2**63), got {seed!r}; pass such an integer as --seed")
    if name == "digits":
        raw = _load_digits(image_size)
        source = "embedded"
    else:
        cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        layout, path = _resolve_source(name, data_dir, cache_root, download)
        raw = _load_cached(name, layout, path, image_size, cache_root)
        source = str(path)
    splits = _split(name, raw, source, val_size=val_size, train_subset=train_subset, seed=seed, normalize=normalize)
    if splits.num_classes < 2:
        raise DataError(
            f"dataset {name!r} ({source}) has {splits.num_classes} class: a classifier cannot learn anything from it "
            "and would score 100%; give --data-dir a tree with at least two class folders"
        )
    return splits
