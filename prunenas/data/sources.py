"""Locating and caching datasets: data_dir layouts, md5-checked download, and the decoded-array cache.

A dataset is found in ``data_dir`` (a CIFAR batches folder, an ImageFolder tree, or a .tar.gz of either,
or a folder holding one of those) or, for CIFAR with nothing given, in the cache folder, where the
official archive is downloaded (md5-checked) when allowed. Decoded images are cached as a ``.pt`` file
keyed by the source's path, size and mtime and the image size, so later runs skip decoding.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import urllib.request
import warnings
from pathlib import Path

import torch

from prunenas.data.decode import (
    _CIFAR,
    _accepted_layouts,
    _CifarSpec,
    _decode_source,
    _walk_files,
    _why,
)
from prunenas.data.dense import DENSE_DATASETS
from prunenas.data.splits import ImageSet, _Raw
from prunenas.errors import DataError

#: Every --dataset name: the classification sets, then the segmentation and detection sets (prunenas.data.dense).
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "digits", "imagefolder", *DENSE_DATASETS)

# Official python-version archives. Module constants so tests (or a mirror) can point elsewhere.
DOWNLOAD_URLS: dict[str, str] = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
DOWNLOAD_MD5: dict[str, str] = {
    "cifar10": "c58f30108f718f92721af3b95e74349a",
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
}

_CACHE_FORMAT = 1


# --------------------------------------------------------------------------------------------- locating data


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


def _load_cached(
    name: str, layout: str, path: Path, image_size: int, cache_root: Path, bad_images: str = "stop"
) -> _Raw:
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
            **({"bad_images": bad_images} if bad_images != "stop" else {}),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    file = cache_root / f"{name}-{image_size}px-{digest}.pt"
    raw = _read_cache(file, key)
    if raw is None:
        raw = _decode_source(name, layout, path, image_size, bad_images)
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
            skipped=int(payload.get("skipped", 0)),
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
        "skipped": raw.skipped,
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
