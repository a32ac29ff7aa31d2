"""Datasets as uint8 tensors (decoded once and cached), a seeded validation split, and device-side batches.

``load_dataset`` reads CIFAR-10/100 (python batches, an ImageFolder tree, or a .tar.gz of either), the
embedded 8x8 digits set, or a user's own ImageFolder tree, and returns train/val/test splits as uint8
``(N, 3, H, W)`` tensors, in memory or, for data too large for that, memory-mapped from a decode-once
disk cache. The segmentation and detection sets (``DENSE_DATASETS``: the generated shapes sets, VOC
segmentation, COCO detection) load in memory with per-pixel masks or boxes. ``make_batches`` yields
normalized float batches on the training device, augmented there: ``DeviceBatches`` keeps a whole split on
the device, ``StreamBatches`` streams a disk-cached one in chunks.

The work is split across submodules: ``splits`` (the ``ImageSet``/``DatasetSplits`` containers and the
seeded split), ``sources`` (locating, downloading and caching a dataset), ``decode`` (turning batches,
image trees, archives and the embedded digits into uint8 arrays), ``diskcache`` (the memory-mapped cache
of large ImageFolder data), ``dense`` (the segmentation and detection sets) and ``batches``
(``DeviceBatches``, ``StreamBatches``, ``make_batches``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from prunenas.config import DATA_CACHES
from prunenas.data.batches import DeviceBatches, StreamBatches, center_crop, make_batches
from prunenas.data.decode import _load_digits
from prunenas.data.dense import DENSE_DATASETS, GENERATED_DATASETS, load_dense
from prunenas.data.diskcache import available_memory, count_images, default_stored_size, open_or_build
from prunenas.data.sources import (
    DATASETS,
    DOWNLOAD_MD5,
    DOWNLOAD_URLS,
    _load_cached,
    _resolve_source,
    _signature,
)
from prunenas.data.splits import IGNORE_INDEX, DatasetSplits, ImageSet, _check_positive, _Raw, _split
from prunenas.errors import DataError

__all__ = [
    "DATASETS",
    "DATA_CACHES",
    "DENSE_DATASETS",
    "DOWNLOAD_MD5",
    "DOWNLOAD_URLS",
    "IGNORE_INDEX",
    "DatasetSplits",
    "DeviceBatches",
    "ImageSet",
    "StreamBatches",
    "center_crop",
    "default_cache_dir",
    "load_dataset",
    "load_dense",
    "make_batches",
]


# --------------------------------------------------------------------------------------------- public entry


#: The pixel size datasets are decoded at (CIFAR's own; ImageFolder trees are resized to it).
DEFAULT_IMAGE_SIZE = 32


def _use_disk(data_cache: str, name: str, layout: str, path: Path, stored: int, cache_root: Path) -> bool:
    """Whether the images go to the disk cache: forced, or (auto) when decoded they would take more than a
    quarter of the host memory available now. CIFAR python batches always load in memory."""
    if data_cache not in DATA_CACHES:
        raise DataError(f"--data-cache must be one of {', '.join(DATA_CACHES)}, got {data_cache!r}")
    if data_cache != "auto":
        return data_cache == "disk"
    if layout == "batches" or (layout == "archive" and name in ("cifar10", "cifar100") and path.name.endswith(
        "-python.tar.gz"
    )):  # fmt: skip
        return False
    try:
        n = _counted(name, layout, path, cache_root)
    except DataError:
        return False  # not an ImageFolder source: the in-memory decoder reports what is wrong
    return n * 3 * stored * stored > available_memory() // 4


def _counted(name: str, layout: str, path: Path, cache_root: Path) -> int:
    """The source's image count, remembered in the cache folder by the source's signature (listing an archive
    means reading all of it)."""
    import json

    memo = cache_root / "image-counts.json"
    key = json.dumps({"dataset": name, "layout": layout, "source": str(path), **_signature(path)}, sort_keys=True)
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), int):
        return int(known[key])
    n = count_images(name, layout, path)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**(known if isinstance(known, dict) else {}), key: n}), encoding="utf-8")
        os.replace(tmp, memo)
    except OSError:
        pass  # not remembered: the next load lists the source again
    return n


def _disk_raw(
    name: str, layout: str, path: Path, cache_root: Path, image_size: int, stored_size: int | None, bad_images: str,
    quiet: bool,
) -> _Raw:  # fmt: skip
    stored = stored_size or default_stored_size(image_size)
    if stored < image_size:
        raise DataError(
            f"--image-size {image_size} is larger than the stored size {stored}; pass --stored-size {image_size} or "
            "more (or a smaller --image-size)"
        )
    try:
        signature = _signature(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}; check the path and its permissions") from None
    cache = open_or_build(name, layout, path, cache_root, stored, signature, bad_images=bad_images, quiet=quiet)
    return _Raw(
        cache.classes, cache.train, cache.test, skipped=cache.skipped, stats=(cache.mean, cache.std),
        cache=str(cache.folder),
    )  # fmt: skip


def _check_dense_settings(name: str, data_cache: str, stored_size: int | None, image_size: int) -> None:
    """Segmentation and detection sets live in memory at --image-size: no disk cache, no stored size."""
    if data_cache not in DATA_CACHES:
        raise DataError(f"--data-cache must be one of {', '.join(DATA_CACHES)}, got {data_cache!r}")
    if data_cache == "disk":
        raise DataError(
            f"--data-cache disk does not apply to --dataset {name}: segmentation and detection datasets are held in "
            "memory with their masks or boxes; pass --data-cache memory (or auto)"
        )
    if stored_size is not None and stored_size != image_size:
        raise DataError(
            f"--stored-size {stored_size} applies to the disk cache, which --dataset {name} does not use (its images "
            f"are stored at --image-size {image_size}); drop --stored-size"
        )


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
    stored_size: int | None = None,
    data_cache: str = "auto",
    bad_images: str = "stop",
    quiet: bool = False,
) -> DatasetSplits:
    """Load ``name`` (one of DATASETS) and split it.

    ``val`` is a seeded random ``val_size`` images (default 10% of the training images, i.e. 5,000 for
    CIFAR; 0: none, every training image trains) of the original training set; ``train`` is the rest, or a
    seeded ``train_subset`` of it (val does not depend on ``train_subset``). ``test`` is the official test
    set (digits: a fixed 20%, seed 0).
    CIFAR is downloaded (md5-checked) into ``data_dir`` or the cache when nothing is found and ``download``
    is true. ``data_dir`` is ignored for the embedded ``digits``. ``normalize`` is "train" (mean and std of the
    training split) or the name of fixed constants (``NORMALIZATIONS``: "cifar", "imagenet").
    ImageFolder data (a folder or an archive) too large for memory goes to the decode-once disk cache
    (``prunenas.data.diskcache``): ``data_cache`` "auto" picks it when the decoded images would take more
    than a quarter of the available host memory, "disk" or "memory" force a path. Disk-cached images are
    stored at ``stored_size`` pixels (default ``image_size`` x 8/7) and cropped to ``image_size`` on the
    device. ``bad_images`` "skip" leaves unreadable images out (counted, listed) instead of stopping.
    The dense sets (DENSE_DATASETS) carry masks or boxes and ``task``; they load in memory at ``image_size``
    (``data_cache`` "disk" is refused; ``data_dir`` is ignored for the generated shapes sets).
    Raises DataError for bad input.
    """
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: valid names are {', '.join(DATASETS)}; pass one with --dataset")
    name = name.lower()
    _check_positive("image_size", image_size, "--image-size")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(1 << 63) <= seed < (1 << 63):
        raise DataError(f"seed must be an integer in [-2**63, 2**63), got {seed!r}; pass such an integer as --seed")
    if name in DENSE_DATASETS:
        _check_dense_settings(name, data_cache, stored_size, image_size)
        raw = load_dense(name, data_dir, image_size, bad_images)
        source = "embedded" if name in GENERATED_DATASETS else str(Path(str(data_dir)).expanduser().resolve())
    elif name == "digits":
        raw = _load_digits(image_size)
        source = "embedded"
    else:
        cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        layout, path = _resolve_source(name, data_dir, cache_root, download)
        if _use_disk(data_cache, name, layout, path, stored_size or default_stored_size(image_size), cache_root):
            raw = _disk_raw(name, layout, path, cache_root, image_size, stored_size, bad_images, quiet)
        else:
            if stored_size is not None and stored_size != image_size:
                raise DataError(
                    f"--stored-size {stored_size} applies to the disk cache; in memory images are stored at "
                    f"--image-size {image_size}: drop --stored-size or pass --data-cache disk"
                )
            raw = _load_cached(name, layout, path, image_size, cache_root, bad_images)
        source = str(path)
    splits = _split(name, raw, source, val_size=val_size, train_subset=train_subset, seed=seed, normalize=normalize)
    if splits.stored_size != image_size:
        splits = dataclasses.replace(splits, image_size=image_size)
    if splits.num_classes < 2:
        raise DataError(
            f"dataset {name!r} ({source}) has {splits.num_classes} class: a classifier cannot learn anything from it "
            "and would score 100%; give --data-dir a tree with at least two class folders"
        )
    return splits
