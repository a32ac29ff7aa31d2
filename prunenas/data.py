"""Datasets as uint8 tensors (decoded once and cached), a seeded validation split, and device-side batches.

``load_dataset`` reads CIFAR-10/100 (python batches, an ImageFolder tree, or a .tar.gz of either), the
embedded 8x8 digits set, or a user's own ImageFolder tree, and returns train/val/test splits as uint8
``(N, 3, H, W)`` tensors. ``DeviceBatches`` keeps one split on the training device and yields normalized
float batches, with pad-and-crop plus horizontal-flip augmentation done there, vectorized.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import math
import os
import pickle
import posixpath
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

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

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "digits", "imagefolder")

# Official python-version archives. Module constants so tests (or a mirror) can point elsewhere.
DOWNLOAD_URLS: dict[str, str] = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
DOWNLOAD_MD5: dict[str, str] = {
    "cifar10": "c58f30108f718f92721af3b95e74349a",
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
}

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR100_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
    "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
    "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
    "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
    "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
    "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
)
CIFAR100_CLASSES: tuple[str, ...] = tuple(_CIFAR100_NAMES.split())
DIGITS_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))

_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0  # fixed, so digits test numbers are comparable across --seed values
_CACHE_FORMAT = 1
_CIFAR_SIDE = 32


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    folder: str  # the folder inside the official archive
    archive: str  # the official archive's file name
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    classes: tuple[str, ...]


_CIFAR: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec(
        name="cifar10",
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        classes=CIFAR10_CLASSES,
    ),
    "cifar100": _CifarSpec(
        name="cifar100",
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        classes=CIFAR100_CLASSES,
    ),
}


# --------------------------------------------------------------------------------------------- containers


@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split: ``x`` (N, 3, H, W) uint8 contiguous, ``y`` (N,) int64 class ids."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4 or self.x.shape[1] != 3:
            raise ValueError(f"ImageSet.x must be uint8 (N, 3, H, W), got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.shape != (self.x.shape[0],):
            raise ValueError(f"ImageSet.y must be int64 (N,), got {self.y.dtype} {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, indices: torch.Tensor) -> ImageSet:
        """Return the images at ``indices`` (a 1-D int64 tensor) as a new, contiguous ImageSet."""
        return ImageSet(self.x.index_select(0, indices).contiguous(), self.y.index_select(0, indices))


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

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
        }


@dataclass(frozen=True, eq=False)
class _Raw:
    """Decoded images before any split."""

    classes: tuple[str, ...]
    train: ImageSet
    test: ImageSet


# --------------------------------------------------------------------------------------------- public entry


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
    image_size: int = 32,
) -> DatasetSplits:
    """Load ``name`` (one of DATASETS) and split it.

    ``val`` is a seeded random ``val_size`` images (default 10% of the training images, i.e. 5,000 for
    CIFAR) of the original training set; ``train`` is the rest, or a seeded ``train_subset`` of it (val does
    not depend on ``train_subset``). ``test`` is the official test set (digits: a fixed 20%, seed 0).
    CIFAR is downloaded (md5-checked) into ``data_dir`` or the cache when nothing is found and ``download``
    is true. ``data_dir`` is ignored for the embedded ``digits``. Raises DataError for bad input.
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
    return _split(name, raw, source, val_size=val_size, train_subset=train_subset, seed=seed)


# --------------------------------------------------------------------------------------------- splitting


def _check_positive(label: str, value: object, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{label} must be a positive integer, got {value!r}; pass a positive {flag}")


def _split(
    name: str, raw: _Raw, source: str, *, val_size: int | None, train_subset: int | None, seed: int
) -> DatasetSplits:
    n = len(raw.train)
    if n < 2:
        raise DataError(
            f"{name} from {source} has {n} training image(s); at least 2 are needed (one to train, one to "
            "validate): add images under train/"
        )
    if val_size is None:
        val_size = max(1, round(n / 10))
    _check_positive("val_size", val_size, "--val-size")
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


# --------------------------------------------------------------------------------------------- digits


def _load_digits(image_size: int) -> _Raw:
    """The embedded 8x8 digits, upscaled (bilinear) to image_size, 3 equal channels, fixed 20% test set."""
    blob = (resources.files("prunenas") / "_data" / "digits.npz").read_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        images = torch.from_numpy(np.ascontiguousarray(npz["images"], dtype=np.uint8))
        labels = torch.from_numpy(np.asarray(npz["labels"], dtype=np.int64))
    x = _resize(images.unsqueeze(1), image_size).expand(-1, 3, -1, -1).contiguous()
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_DIGITS_TEST_SEED))
    n_test = round(n * _DIGITS_TEST_FRACTION)
    full = ImageSet(x, labels)
    return _Raw(DIGITS_CLASSES, full.take(perm[n_test:].sort().values), full.take(perm[:n_test].sort().values))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 (N, C, h, w) to (N, C, size, size), in chunks to bound memory."""
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    downscale = size < x.shape[-1] or size < x.shape[-2]
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], 2048):
        chunk = x[start : start + 2048].to(torch.float32)
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=downscale)
        out[start : start + 2048] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


# --------------------------------------------------------------------------------------------- locating data


def _accepted_layouts(name: str) -> str:
    tree = "an ImageFolder tree with train/<class>/ and test/<class>/ image folders (or a folder holding one)"
    if name in _CIFAR:
        spec = _CIFAR[name]
        return f"a {spec.folder} folder (or a folder holding it), its .tar.gz, {tree}, or a .tar.gz of such a tree"
    return f"{tree}, or a .tar.gz of such a tree"


def _missing_hint(name: str) -> str:
    if name in _CIFAR:
        return (
            f"pass --data-dir PATH: {_accepted_layouts(name)}; the official archive is {DOWNLOAD_URLS[name]} "
            "(prunenas downloads it when allowed and online)"
        )
    return f"pass --data-dir PATH: {_accepted_layouts(name)}"


def _has_batches(folder: Path, spec: _CifarSpec) -> bool:
    return all((folder / f).is_file() for f in spec.train_files + spec.test_files)


def _is_tree(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _resolve_source(name: str, data_dir: str | Path | None, cache_root: Path, download: bool) -> tuple[str, Path]:
    """Find the data: returns (layout, path), layout one of "batches", "tree", "archive"."""
    spec = _CIFAR.get(name)
    if data_dir is None or str(data_dir) == "":
        if spec is None:
            raise DataError(f"{name} needs your images: {_missing_hint(name)}")
        cached = cache_root / spec.archive
        if _md5_or_none(cached) == DOWNLOAD_MD5[name]:
            return "archive", cached.resolve()
        if not download:
            raise DataError(f"no {name} data given and downloading is off: {_missing_hint(name)}")
        return "archive", _download(name, cached).resolve()

    path = Path(data_dir).expanduser().resolve()
    if path.is_file():
        return "archive", path
    if path.is_dir():
        try:
            entries = _visible_entries(path)
        except OSError as exc:
            raise DataError(f"cannot list data dir {path}: {_why(exc)}; check its permissions") from None
        if entries:
            return _classify_folder(name, path, entries)
    elif path.exists():
        raise DataError(f"data dir {path} is neither a folder nor a file; {_missing_hint(name)}")
    # Nothing there.
    if spec is not None and download:
        return "archive", _download(name, path / spec.archive).resolve()
    what = "does not exist" if not path.exists() else "is empty"
    raise DataError(f"data dir {path} {what}: {_missing_hint(name)}")


def _classify_folder(name: str, path: Path, entries: list[Path]) -> tuple[str, Path]:
    spec = _CIFAR.get(name)
    if spec is not None:
        if _has_batches(path, spec):
            return "batches", path
        if _has_batches(path / spec.folder, spec):
            return "batches", path / spec.folder
    if _is_tree(path):
        return "tree", path
    if spec is not None and (path / spec.archive).is_file():
        return "archive", path / spec.archive
    trees = [p for p in entries if p.is_dir() and _is_tree(p)]
    if len(trees) == 1:
        return "tree", trees[0]
    if len(trees) > 1:
        names = ", ".join(p.name for p in trees)
        raise DataError(f"{path} holds several train/test trees ({names}); pass one of them as --data-dir")
    raise DataError(
        f"cannot read {name} from {path}: found no known layout{_other_cifar_hint(name, path)}; expected "
        f"{_accepted_layouts(name)}; fix --data-dir"
    )


def _other_cifar_hint(name: str, path: Path) -> str:
    for other, spec in _CIFAR.items():
        if other != name and (_has_batches(path, spec) or _has_batches(path / spec.folder, spec)):
            return f" (it looks like {other} data: use --dataset {other})"
    return ""


# --------------------------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _md5_or_none(path: Path) -> str | None:
    """md5 of an existing readable file, else None."""
    try:
        return _md5(path) if path.is_file() else None
    except OSError:
        return None


def _download(name: str, dest: Path) -> Path:
    """Download the official archive to ``dest`` (via a temp file), verify its md5, return ``dest``."""
    url, md5 = DOWNLOAD_URLS[name], DOWNLOAD_MD5[name]
    fix = f"download {url} yourself (md5 {md5}) and pass it, or the folder holding it, as --data-dir"
    if _md5_or_none(dest) == md5:
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        used_torchvision = url.startswith(("http://", "https://")) and _torchvision_download(url, tmp)
        if not used_torchvision:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as fh:
                shutil.copyfileobj(response, fh, 1 << 20)
        got = _md5(tmp)
    except Exception as exc:  # network, URL and disk errors all mean the same to the user
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {name} from {url} ({_why(exc)}); {fix}") from None
    if got != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"downloaded {name} archive from {url} has md5 {got}, expected {md5} (corrupt); {fix}")
    os.replace(tmp, dest)
    return dest


def _torchvision_download(url: str, dest: Path) -> bool:
    """Download with torchvision when it imports; False when it does not (then urllib is used)."""
    try:
        utils = importlib.import_module("torchvision.datasets.utils")
    except Exception:  # absent, or present but broken (e.g. a CUDA build on a CPU machine)
        return False
    utils.download_url(url, str(dest.parent), filename=dest.name, md5=None)
    return True


# --------------------------------------------------------------------------------------------- cache


def _signature(path: Path) -> dict[str, int]:
    """Size and mtime of a file, or file count, total size and newest mtime of everything under a folder."""
    if path.is_file():
        st = path.stat()
        return {"files": 1, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = size = newest = 0
    for file in _walk_files(path):
        st = file.stat()
        files += 1
        size += st.st_size
        newest = max(newest, st.st_mtime_ns)
    return {"files": files, "bytes": size, "mtime_ns": newest}


def _walk_files(root: Path, skip_hidden: bool = False) -> list[Path]:
    """All files under ``root``, sorted, following symlinks but visiting each real folder once."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            for entry in it:
                if skip_hidden and entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True):
                    found.append(Path(entry.path))
    return sorted(found)


def _load_cached(name: str, layout: str, path: Path, image_size: int, cache_root: Path) -> _Raw:
    """Decoded images of ``path``, from the cache when its key (source, size, mtime, image_size) matches."""
    try:
        signature = _signature(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {_why(exc)}; check the path and its permissions") from None
    key = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "dataset": name,
            "layout": layout,
            "source": str(path),
            "image_size": image_size,
            **signature,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    file = cache_root / f"{name}-{image_size}px-{digest}.pt"
    raw = _read_cache(file, key)
    if raw is None:
        raw = _decode_source(name, layout, path, image_size)
        _write_cache(file, key, raw)
    return raw


def _read_cache(file: Path, key: str) -> _Raw | None:
    if not file.is_file():
        return None
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
        if payload["key"] != key:
            raise ValueError("key mismatch")
        raw = _Raw(
            tuple(str(c) for c in payload["classes"]),
            ImageSet(payload["train_x"], payload["train_y"]),
            ImageSet(payload["test_x"], payload["test_y"]),
        )
        if raw.train.x.shape[1:] != raw.test.x.shape[1:]:
            raise ValueError("train/test shapes differ")
    except Exception as exc:  # any unreadable or inconsistent cache file is rebuilt
        warnings.warn(f"ignoring unreadable dataset cache {file} ({_why(exc)}); rebuilding it", stacklevel=3)
        return None
    return raw


def _write_cache(file: Path, key: str, raw: _Raw) -> None:
    payload = {
        "key": key,
        "classes": list(raw.classes),
        "train_x": raw.train.x,
        "train_y": raw.train.y,
        "test_x": raw.test.x,
        "test_y": raw.test.y,
    }
    tmp: str | None = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, file)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(
            f"could not write dataset cache {file} ({_why(exc)}); the next run decodes again "
            "(set PRUNENAS_CACHE to a writable folder)",
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------------- decoding


def _why(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].rstrip(' :')}" if text else type(exc).__name__


def _decode_source(name: str, layout: str, path: Path, image_size: int) -> _Raw:
    """Decode everything at ``path`` (the slow step the cache avoids)."""
    if layout == "archive":
        return _decode_archive(name, path, image_size)
    if layout == "batches":
        spec = _CIFAR[name]
        blobs: dict[str, bytes] = {}
        for f in (*spec.train_files, *spec.test_files, spec.meta_file):
            if (path / f).is_file():
                try:
                    blobs[f] = (path / f).read_bytes()
                except OSError as exc:
                    raise DataError(f"cannot read {path / f}: {_why(exc)}; check its permissions") from None
        return _from_batches(spec, blobs, str(path), image_size)
    return _from_tree(name, _folder_tree(path), str(path), image_size)


def _decode_archive(name: str, path: Path, image_size: int) -> _Raw:
    """Read a tar(.gz) in one sequential pass (no extraction) and decode the layout found inside."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        files[posixpath.normpath(member.name).lstrip("/")] = handle.read()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise DataError(
            f"cannot read archive {path}: {_why(exc)} (not a tar archive, or corrupt or truncated); "
            "download it again or pass an extracted folder as --data-dir"
        ) from None
    spec = _CIFAR.get(name)
    if spec is not None:
        folder = _find_batches(files, spec)
        if folder is not None:
            blobs = {
                f: files[posixpath.join(folder, f)]
                for f in (*spec.train_files, *spec.test_files, spec.meta_file)
                if posixpath.join(folder, f) in files
            }
            return _from_batches(spec, blobs, f"{path}:{folder or '.'}", image_size)
    tree = _archive_tree(name, path, files)
    return _from_tree(name, tree, str(path), image_size)


def _find_batches(files: dict[str, bytes], spec: _CifarSpec) -> str | None:
    """The folder inside an archive that holds all of spec's batch files, if any."""
    for member in sorted(files):
        folder, base = posixpath.split(member)
        if base == spec.test_files[0] and all(
            posixpath.join(folder, f) in files for f in spec.train_files + spec.test_files
        ):
            return folder
    return None


# A tree: split -> list of (class, display name, file bytes or path), in a fixed sorted order.
_Tree = dict[str, list[tuple[str, str, bytes | Path]]]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not posixpath.basename(name).startswith(".")


def _folder_tree(root: Path) -> _Tree:
    tree: _Tree = {}
    for split in ("train", "test"):
        items: list[tuple[str, str, bytes | Path]] = []
        try:
            class_dirs = sorted(p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith("."))
            for class_dir in class_dirs:
                found = _walk_files(class_dir, skip_hidden=True)
                items.extend((class_dir.name, str(p), p) for p in found if _is_image(p.name))
        except OSError as exc:
            raise DataError(f"cannot list {root / split}: {_why(exc)}; check its permissions") from None
        tree[split] = items
    return tree


def _archive_tree(name: str, path: Path, files: dict[str, bytes]) -> _Tree:
    parts = {member: member.split("/") for member in files}
    if any(p[0] in ("train", "test") and len(p) >= 3 for p in parts.values()):
        depth = 0
    else:
        tops = sorted({p[0] for p in parts.values() if len(p) >= 4 and p[1] in ("train", "test")})
        if len(tops) != 1:
            several = f" (several trees: {', '.join(tops)}; pack one)" if tops else ""
            other = "".join(
                f" (it looks like {o} data: use --dataset {o})"
                for o, s in _CIFAR.items()
                if o != name and _find_batches(files, s) is not None
            )
            raise DataError(
                f"cannot read {name} from archive {path}: found no known layout inside{several}{other}; expected "
                f"{_accepted_layouts(name)}; fix --data-dir"
            )
        depth = 1
        parts = {m: p for m, p in parts.items() if p[0] == tops[0]}
    tree: _Tree = {"train": [], "test": []}
    for member in sorted(parts):
        p = parts[member]
        if len(p) >= depth + 3 and p[depth] in tree and _is_image(member):
            if any(part.startswith(".") for part in p[depth + 1 : -1]):
                continue
            tree[p[depth]].append((p[depth + 1], f"{path}:{member}", files[member]))
    return tree


def _decode_image(blob: bytes, where: str, size: int) -> np.ndarray:
    """One image file's bytes -> (size, size, 3) uint8 RGB (bilinear resize when its size differs)."""
    try:
        with Image.open(io.BytesIO(blob)) as img:
            rgb = img.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        raise DataError(f"cannot read image {where}: {_why(exc)}; fix or remove that file") from None


def _from_tree(name: str, tree: _Tree, where: str, image_size: int) -> _Raw:
    """Decode an ImageFolder tree; class ids are the sorted class folder names."""
    train_classes = sorted({c for c, _, _ in tree["train"]})
    test_classes = sorted({c for c, _, _ in tree["test"]})
    exts = "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    for split, classes in (("train", train_classes), ("test", test_classes)):
        if not classes:
            raise DataError(
                f"no images found under {split}/ in {where}: put images ({exts}) in {split}/<class>/ folders"
            )
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"train/ and test/ class folders differ in {where}: only in train: {_short(only_train)}; only in "
            f"test: {_short(only_test)}; give both the same class folders (each with at least one image)"
        )
    spec = _CIFAR.get(name)
    if spec is not None and len(train_classes) != len(spec.classes):
        raise DataError(
            f"{where} has {len(train_classes)} class folders but {name} has {len(spec.classes)}; pass the right "
            "--data-dir, or use --dataset imagefolder for your own classes"
        )
    label = {c: i for i, c in enumerate(train_classes)}
    sets = []
    for split in ("train", "test"):
        items = tree[split]
        x = np.empty((len(items), image_size, image_size, 3), dtype=np.uint8)
        for i, (_, shown, src) in enumerate(items):
            try:
                blob = src if isinstance(src, bytes) else src.read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read image {shown}: {_why(exc)}; check its permissions") from None
            x[i] = _decode_image(blob, shown, image_size)
        y = torch.tensor([label[c] for c, _, _ in items], dtype=torch.int64)
        sets.append(ImageSet(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y))
    return _Raw(tuple(train_classes), sets[0], sets[1])


def _short(names: Sequence[str], limit: int = 5) -> str:
    if not names:
        return "(none)"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays and plain containers (CIFAR batches need nothing else)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(_numpy_core("multiarray"), name)
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return getattr(_numpy_core("numeric"), name)
        if module == "_codecs" and name == "encode":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _numpy_core(sub: str) -> Any:
    try:
        return importlib.import_module(f"numpy._core.{sub}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{sub}")


def _unpickle(blob: bytes, where: str) -> dict[Any, Any]:
    try:
        obj = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # truncated or foreign pickles raise many types
        raise DataError(
            f"cannot read CIFAR batch {where}: {_why(exc)} (corrupt or truncated); download the data again"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"cannot read CIFAR batch {where}: not a pickled dict (corrupt); download the data again")
    return obj


def _from_batches(spec: _CifarSpec, blobs: dict[str, bytes], where: str, image_size: int) -> _Raw:
    """Decode CIFAR python batches (pickled dicts with b"data" (N, 3072) uint8 and labels)."""
    num_classes = len(spec.classes)
    classes = spec.classes
    if spec.meta_file in blobs:
        meta = _unpickle(blobs[spec.meta_file], f"{where}/{spec.meta_file}")
        names = meta.get(spec.names_key)
        if not isinstance(names, list) or len(names) != num_classes:
            raise DataError(
                f"cannot read {where}/{spec.meta_file}: no list of {num_classes} class names under "
                f"{spec.names_key!r} (corrupt or not {spec.name}); download the data again"
            )
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    sets = []
    for files in (spec.train_files, spec.test_files):
        xs, ys = [], []
        for f in files:
            shown = f"{where}/{f}"
            batch = _unpickle(blobs[f], shown)
            data, labels = batch.get(b"data"), batch.get(spec.label_key)
            if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * _CIFAR_SIDE**2:
                raise DataError(
                    f"cannot read CIFAR batch {shown}: b'data' is not an (N, 3072) array (corrupt or not "
                    f"{spec.name}); download the data again"
                )
            try:
                y = np.asarray(labels, dtype=np.int64).reshape(-1)
            except (TypeError, ValueError):
                y = np.empty(0, dtype=np.int64)
            if y.shape[0] != data.shape[0] or (y.size and (y.min() < 0 or y.max() >= num_classes)):
                raise DataError(
                    f"cannot read CIFAR batch {shown}: {spec.label_key!r} is not {data.shape[0]} labels in "
                    f"0..{num_classes - 1} (corrupt or not {spec.name}); download the data again"
                )
            xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE))
            ys.append(y)
        x = torch.from_numpy(np.concatenate(xs))
        sets.append(ImageSet(_resize(x, image_size), torch.from_numpy(np.concatenate(ys))))
    return _Raw(classes, sets[0], sets[1])


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
