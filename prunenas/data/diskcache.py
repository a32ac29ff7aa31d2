"""The decode-once disk cache of ImageFolder datasets too large to hold in memory.

An ImageFolder tree (``train/<class>/`` and ``test/<class>/``, a folder or a tar archive) is decoded once,
by a pool of processes, into uint8 arrays on disk at a stored size: each image's shorter side is resized
to ``stored`` pixels (bilinear) and the central square kept, so a training crop of ``--image-size`` pixels
has room around it (224 from 256, as ImageNet recipes do). The arrays are memory-mapped by every run,
worker and later command; a cache is rebuilt only when the source changes (file count, bytes and newest
mtime) or is asked for at another stored size.

A cache is a folder ``<cache root>/<dataset>-<stored>px-<hash>.mmap/`` holding ``train_x.npy`` and
``test_x.npy`` ((N, 3, S, S) uint8), ``train_y.npy`` / ``test_y.npy`` (int64; -1 marks an image
that could not be read), ``meta.json`` (the key, classes, counts, training-set mean and std, unreadable
images) and ``skipped.txt``. It is written into a temporary folder that is renamed into place only when
complete, so an interrupted or failed build (full disk, read-only folder) never leaves a cache that looks
valid. Host memory while building: the images in flight in the pool (a few hundred), whatever the
dataset's size; an archive is read in one sequential pass, never extracted or held whole.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from prunenas._imgdecode import decode_job
from prunenas.data.decode import _CIFAR, ARCHIVE_ERRORS, _archive_tree, _folder_tree, _short, _Tree, _why, archive_error
from prunenas.data.splits import ImageSet
from prunenas.errors import DataError

FORMAT = 1
BAD_IMAGES = ("stop", "skip")
JOB_IMAGES = 64  # images per pool job
CROP_FRACTION = 7 / 8  # default stored size = image size / this (224 -> 256)


def default_stored_size(image_size: int) -> int:
    """The stored size that leaves the usual room for crops: ceil(image_size x 8 / 7) (224 -> 256, 32 -> 37)."""
    return -(-image_size * 8 // 7)


@dataclass(frozen=True)
class DiskCache:
    """An opened cache: its splits (memory-mapped), classes, training-set statistics and what was skipped."""

    folder: Path
    classes: tuple[str, ...]
    train: ImageSet
    test: ImageSet
    stored_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    skipped: int
    build_seconds: float
    built_now: bool


# -- listing the source ----------------------------------------------------------------------------------------
def _listing(name: str, layout: str, path: Path) -> _Tree:
    """split -> [(class, shown name, path or archive member name)], sorted as the in-memory decoder sorts."""
    if layout == "tree":
        return _folder_tree(path)
    if layout != "archive":
        raise DataError(
            f"the disk cache reads ImageFolder trees (train/<class>/ and test/<class>/, a folder or an archive); "
            f"{path} holds CIFAR python batches, which load in memory: drop --data-cache disk"
        )
    names: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    names[_member_name(member.name)] = member.name.encode()
    except ARCHIVE_ERRORS as exc:
        raise archive_error(path, exc) from None
    spec = _CIFAR.get(name)
    if spec is not None and any(n.endswith("/" + spec.test_files[0]) or n == spec.test_files[0] for n in names):
        raise DataError(
            f"{path} holds CIFAR python batches, which load in memory (50,000 images): drop --data-cache disk"
        )
    return _archive_tree(name, path, names)  # entries carry the member name (bytes) instead of the file


def _member_name(name: str) -> str:
    import posixpath

    return posixpath.normpath(name).lstrip("/")


def count_images(name: str, layout: str, path: Path) -> int:
    """How many images the source holds (lists it; decodes nothing)."""
    tree = _listing(name, layout, path)
    return sum(len(v) for v in tree.values())


# -- building --------------------------------------------------------------------------------------------------
def _check_tree(tree: _Tree, where: str) -> tuple[str, ...]:
    train = sorted({c for c, _, _ in tree["train"]})
    test = sorted({c for c, _, _ in tree["test"]})
    for split, classes in (("train", train), ("test", test)):
        if not classes:
            raise DataError(f"no images found under {split}/ in {where}: put images in {split}/<class>/ folders")
    if train != test:
        raise DataError(
            f"train/ and test/ class folders differ in {where}: only in train: "
            f"{_short(sorted(set(train) - set(test)))}; only in test: {_short(sorted(set(test) - set(train)))}; "
            "give both the same class folders (each with at least one image)"
        )
    if len(train) < 2:
        raise DataError(
            f"{where} has one class ({train[0]!r}): a classifier cannot learn anything from it; give at least two "
            "class folders"
        )
    return tuple(train)


def _jobs_from_folder(items: list[tuple[int, str, Path]]) -> Iterator[list[tuple[int, bytes | str, str]]]:
    for i in range(0, len(items), JOB_IMAGES):
        yield [(row, str(p), shown) for row, shown, p in items[i : i + JOB_IMAGES]]


def _jobs_from_archive(path: Path, wanted: dict[str, tuple[int, str]]) -> Iterator[list[tuple[int, bytes | str, str]]]:
    """One sequential pass over the archive: the wanted members' bytes, JOB_IMAGES at a time."""
    job: list[tuple[int, bytes | str, str]] = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                hit = wanted.get(_member_name(member.name)) if member.isfile() else None
                if hit is None:
                    continue
                handle = tar.extractfile(member)
                blob = handle.read() if handle is not None else b""
                job.append((hit[0], blob, hit[1]))
                if len(job) == JOB_IMAGES:
                    yield job
                    job = []
    except ARCHIVE_ERRORS as exc:
        raise archive_error(path, exc) from None
    if job:
        yield job


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _progress(done: int, total: int, t0: float, quiet: bool, last: list[float]) -> None:
    if quiet:
        return
    now = time.perf_counter()
    if done < total and now - last[0] < 2.0:
        return
    last[0] = now
    rate = done / max(now - t0, 1e-9)
    eta = (total - done) / rate if rate > 0 else float("inf")
    print(
        f"decoding into the disk cache: {done:,}/{total:,} images ({100 * done / max(total, 1):.0f}%), "
        f"{rate:,.0f} img/s, {'done' if done >= total else f'ETA {eta:,.0f} s'}",
        file=sys.stderr,
        flush=True,
    )


def build(
    name: str,
    layout: str,
    path: Path,
    folder: Path,
    key: str,
    stored: int,
    *,
    bad_images: str = "stop",
    workers: int | None = None,
    quiet: bool = False,
) -> float:
    """Decode the source into `folder` (atomically); returns the seconds it took."""
    t0 = time.perf_counter()
    tree = _listing(name, layout, path)
    classes = _check_tree(tree, str(path))
    label = {c: i for i, c in enumerate(classes)}
    counts = {split: len(tree[split]) for split in ("train", "test")}
    need = sum(counts.values()) * 3 * stored * stored + (1 << 20)
    root = folder.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = _free_bytes(root)
    except OSError as exc:
        raise DataError(
            f"cannot create the dataset cache folder {root}: {_why(exc)}; set PRUNENAS_CACHE to a writable folder"
        ) from None
    if free < need:
        raise DataError(
            f"the disk cache needs {need / 2**30:.1f} GiB in {root} but only {free / 2**30:.1f} GiB are free; "
            "free some space or set PRUNENAS_CACHE to a folder on a larger disk (or lower --image-size)"
        )
    tmp = root / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    arrays: dict[str, int] = {}  # split -> file descriptor of its images file
    try:
        tmp.mkdir()
        # Rows are written with pwrite at their offsets, not through a memory map: written pages then sit in
        # the kernel's page cache, never in this process's resident memory.
        offsets: dict[str, int] = {}
        for split in ("train", "test"):
            made = np.lib.format.open_memmap(
                tmp / f"{split}_x.npy", mode="w+", dtype=np.uint8, shape=(counts[split], 3, stored, stored)
            )
            offsets[split] = int(made.offset)
            del made
            arrays[split] = os.open(tmp / f"{split}_x.npy", os.O_RDWR)
        row_bytes = 3 * stored * stored
        labels = {split: np.full(counts[split], -1, dtype=np.int64) for split in ("train", "test")}
        hist = np.zeros((3, 256), dtype=np.int64)
        bad: list[tuple[str, str, str]] = []
        total = sum(counts.values())
        rows: list[tuple[str, int, str, Any]] = []  # (split, row, shown, source)
        for split in ("train", "test"):
            rows.extend((split, i, shown, src) for i, (_, shown, src) in enumerate(tree[split]))
        offset = {"train": 0, "test": counts["train"]}
        flat = [(offset[s] + r, shown, src) for s, r, shown, src in rows]
        for split in ("train", "test"):
            for i, (cls, _, _) in enumerate(tree[split]):
                labels[split][i] = label[cls]
        if layout == "archive":
            wanted = {cast(bytes, src).decode(): (row, shown) for row, shown, src in flat}
            jobs: Iterator[list[tuple[int, bytes | str, str]]] = _jobs_from_archive(path, wanted)
        else:
            jobs = _jobs_from_folder([(row, shown, cast(Path, src)) for row, shown, src in flat])
        shown_of = {row: shown for row, shown, _ in flat}
        n_workers = max(1, workers or os.cpu_count() or 1)
        done, last = 0, [0.0]
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            pending: set[cf.Future[list[tuple[int, Any, str]]]] = set()

            def drain(block: bool) -> None:
                nonlocal done
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED if block else cf.ALL_COMPLETED)
                for fut in finished:
                    pending.discard(fut)
                    for row, array, why in fut.result():
                        split = "train" if row < counts["train"] else "test"
                        i = row - offset[split]
                        if array is None:
                            labels[split][i] = -1
                            bad.append((split, shown_of[row], why))
                        else:
                            os.pwrite(arrays[split], array.tobytes(), offsets[split] + i * row_bytes)
                            if split == "train":
                                for c in range(3):
                                    hist[c] += np.bincount(array[c].reshape(-1), minlength=256)
                        done += 1
                _progress(done, total, t0, quiet, last)

            for job in jobs:
                pending.add(pool.submit(decode_job, job, stored))
                if len(pending) >= 4 * n_workers:
                    drain(block=True)
            while pending:
                drain(block=False)
        if bad and bad_images == "stop":
            first = f"{bad[0][1]} ({bad[0][2]})"
            raise DataError(
                f"{len(bad)} of {total} images could not be read (first: {first}); fix or remove them, or pass "
                "--bad-images skip to train without them (they are counted and listed)"
            )
        for split in ("train", "test"):
            if not (labels[split] >= 0).any():
                raise DataError(f"no readable images under {split}/ in {path}; fix the images or --data-dir")
            os.close(arrays.pop(split))
            np.save(tmp / f"{split}_y.npy", labels[split])
        levels = np.arange(256, dtype=np.float64)
        n_pix = hist.sum(axis=1).astype(np.float64)
        mean = (hist * levels).sum(axis=1) / n_pix
        var = (hist * (levels[None, :] - mean[:, None]) ** 2).sum(axis=1) / n_pix
        meta = {
            "format": FORMAT,
            "key": key,
            "classes": list(classes),
            "counts": counts,
            "stored_size": stored,
            "mean": [float(m) / 255.0 for m in mean],
            "std": [float(np.sqrt(v)) / 255.0 for v in var],
            "skipped": len(bad),
            "build_seconds": time.perf_counter() - t0,
        }
        (tmp / "skipped.txt").write_text("".join(f"{s}\t{shown}\t{why}\n" for s, shown, why in bad), encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as exc:
        for fd in arrays.values():
            os.close(fd)
        raise DataError(
            f"cannot write the dataset cache in {root}: {_why(exc)}; set PRUNENAS_CACHE to a writable folder with "
            f"{need / 2**30:.1f} GiB free"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return time.perf_counter() - t0


# -- opening ---------------------------------------------------------------------------------------------------
def _open(folder: Path, key: str) -> DiskCache | None:
    """The cache in `folder` when it is complete and made for `key`; None otherwise."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        sets = []
        for split in ("train", "test"):
            x = np.load(folder / f"{split}_x.npy", mmap_mode="c")
            y = np.load(folder / f"{split}_y.npy")
            if x.shape[0] != y.shape[0] or x.shape[1:] != (3, meta["stored_size"], meta["stored_size"]):
                return None
            labels = torch.from_numpy(y.astype(np.int64))
            rows = torch.nonzero(labels >= 0).flatten()
            file = (str(folder / f"{split}_x.npy"), int(x.offset))
            sets.append(ImageSet(torch.from_numpy(x), labels.clamp(min=0), rows, file=file))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    m, s = meta["mean"], meta["std"]
    return DiskCache(
        folder=folder, classes=tuple(meta["classes"]), train=sets[0], test=sets[1],
        stored_size=int(meta["stored_size"]), mean=(m[0], m[1], m[2]), std=(s[0], s[1], s[2]),
        skipped=int(meta["skipped"]), build_seconds=float(meta.get("build_seconds", 0.0)), built_now=False,
    )  # fmt: skip


def open_or_build(
    name: str,
    layout: str,
    path: Path,
    cache_root: Path,
    stored: int,
    signature: dict[str, int],
    *,
    bad_images: str = "stop",
    quiet: bool = False,
    workers: int | None = None,
) -> DiskCache:
    """The disk cache of `path` at `stored` pixels, built first when missing or stale."""
    import hashlib

    if bad_images not in BAD_IMAGES:
        raise DataError(f"--bad-images must be one of {', '.join(BAD_IMAGES)}, got {bad_images!r}")
    key = json.dumps(
        {"format": FORMAT, "dataset": name, "layout": layout, "source": str(path), "stored": stored,
         "bad_images": bad_images, **signature},
        sort_keys=True,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    folder = cache_root / f"{name}-{stored}px-{digest}.mmap"
    cache = _open(folder, key)
    if cache is None:
        seconds = build(name, layout, path, folder, key, stored, bad_images=bad_images, quiet=quiet, workers=workers)
        cache = _open(folder, key)
        if cache is None:
            raise DataError(f"the disk cache {folder} could not be read back after building it; remove it and retry")
        cache = DiskCache(**{**cache.__dict__, "build_seconds": seconds, "built_now": True})
    if cache.skipped:
        print(
            f"note: {cache.skipped} unreadable image(s) left out (--bad-images skip); listed in "
            f"{folder / 'skipped.txt'}",
            file=sys.stderr,
            flush=True,
        )
    return cache


def available_memory() -> int:
    """Bytes of host memory available now (MemAvailable on Linux; physical memory elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30
