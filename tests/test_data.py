"""Tests for prunenas.data: loaders (on tiny fake datasets), splits, cache, download, errors, device batches."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import prunenas.data as data
from prunenas.data import DATASETS, DatasetSplits, DeviceBatches, ImageSet, load_dataset
from prunenas.errors import DataError, PrunenasError

REAL_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------------------------------------- fake data


def _dump(obj: object, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def make_cifar10_batches(folder: Path, per_batch: int = 6, n_test: int = 10, meta: bool = True) -> dict[str, Any]:
    """Write a tiny cifar-10-batches-py folder; return the arrays written (train in batch order)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        _dump(
            {b"batch_label": b"training batch", b"data": x, b"labels": y, b"filenames": [b"f"] * per_batch},
            folder / f"data_batch_{b}",
        )
        xs.append(x)
        ys.extend(y)
    tx = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    ty = [i % 10 for i in range(n_test)]
    _dump({b"batch_label": b"testing batch", b"data": tx, b"labels": ty}, folder / "test_batch")
    if meta:
        names = [n.encode() for n in CIFAR10_NAMES]
        _dump({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, folder / "batches.meta")
    return {
        "train_x": np.concatenate(xs).reshape(-1, 3, 32, 32),
        "train_y": np.array(ys),
        "test_x": tx.reshape(-1, 3, 32, 32),
        "test_y": np.array(ty),
    }


def make_cifar100_python(folder: Path, n_train: int = 200, n_test: int = 100) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [i % 100 for i in range(n)]
        _dump({b"data": x, b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]}, folder / split)
        out[f"{split}_x"], out[f"{split}_y"] = x.reshape(-1, 3, 32, 32), np.array(fine)
    fine_names = [f"class{i:03d}".encode() for i in range(100)]
    _dump({b"fine_label_names": fine_names, b"coarse_label_names": [b"c"] * 20}, folder / "meta")
    return out


def _png(array: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "emu"), n_train: int = 4, n_test: int = 2, size: int = 32
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Write train/<class>/ and test/<class>/ PNGs (exact pixels); return the arrays by split and class."""
    rng = np.random.default_rng(3)
    arrays: dict[str, dict[str, list[np.ndarray]]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[split] = {}
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            arrays[split][cls] = []
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                (root / split / cls / f"{i:04d}.png").write_bytes(_png(img))
                arrays[split][cls].append(img)
    return arrays


def make_targz(src: Path, dest: Path, arcname: str | None = None) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        if arcname is None:
            for child in sorted(src.iterdir()):
                tar.add(child, arcname=child.name)
        else:
            tar.add(src, arcname=arcname)
    return dest


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = data.sources._decode_source

    def counting(name: str, layout: str, path: Path, image_size: int, bad_images: str = "stop") -> Any:
        calls.append(f"{name}:{layout}:{path}:{image_size}")
        return real(name, layout, path, image_size, bad_images)

    monkeypatch.setattr(data.sources, "_decode_source", counting)
    return calls


def _ids(s: ImageSet) -> set[bytes]:
    return {bytes(img.numpy().tobytes()) for img in s.x}


def _raises(fn: Callable[[], object], *needles: str) -> str:
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert isinstance(info.value, PrunenasError)
    assert "\n" not in msg and msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------------------------- digits


def test_digits_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # run time must not need scikit-learn
    s = load_dataset("digits", seed=0)
    assert s.name == "digits" and s.source == "embedded"
    assert s.classes == tuple(str(i) for i in range(10)) and s.num_classes == 10
    assert s.image_shape == (3, 32, 32)
    assert (len(s.train), len(s.val), len(s.test)) == (1294, 144, 359)
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    for part in (s.train, s.val, s.test):
        assert part.x.dtype == torch.uint8 and part.x.is_contiguous() and part.y.dtype == torch.int64
        assert torch.equal(part.x[:, 0], part.x[:, 1]) and torch.equal(part.x[:, 0], part.x[:, 2])
    assert set(s.train.y.tolist()) == set(range(10))
    assert s.train.x.max() > 200 and s.mean[0] == s.mean[1] == s.mean[2]
    json.dumps(s.describe())


def test_digits_test_set_fixed_and_native_size() -> None:
    a, b = load_dataset("digits", seed=0, image_size=8), load_dataset("digits", seed=5, image_size=8)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.val.x, b.val.x)
    raw = np.load(Path(data.__file__).parents[1] / "_data" / "digits.npz")
    assert raw["images"].shape == (1797, 8, 8) and raw["images"].dtype == np.uint8
    everything = {img.tobytes() for img in raw["images"]}
    assert {img[0].numpy().tobytes() for img in a.train.x} <= everything  # 8x8 means no resampling


# ----------------------------------------------------------------------------------------------- CIFAR


def _check_cifar10(s: DatasetSplits, ref: dict[str, Any]) -> None:
    assert s.classes == tuple(CIFAR10_NAMES) and s.image_shape == (3, 32, 32)
    assert (len(s.train), len(s.val), len(s.test)) == (27, 3, 10)
    assert torch.equal(s.test.x, torch.from_numpy(ref["test_x"]))
    assert s.test.y.tolist() == ref["test_y"].tolist()
    # train and val are disjoint and together are the original training set, with the right labels.
    tx, ty = torch.from_numpy(ref["train_x"]), torch.from_numpy(ref["train_y"])
    union = torch.cat([s.train.x, s.val.x])
    assert len(_ids(s.train) & _ids(s.val)) == 0 and len(_ids(s.train) | _ids(s.val)) == 30
    lookup = {tx[i].numpy().tobytes(): int(ty[i]) for i in range(len(tx))}
    labels = torch.cat([s.train.y, s.val.y]).tolist()
    assert [lookup[img.numpy().tobytes()] for img in union] == labels


def test_cifar10_python_folder_parent_and_archive(tmp_path: Path, cache: Path) -> None:
    ref = make_cifar10_batches(tmp_path / "root" / "cifar-10-batches-py")
    for given in (tmp_path / "root" / "cifar-10-batches-py", tmp_path / "root"):
        s = load_dataset("cifar10", given, cache_dir=cache, download=False)
        _check_cifar10(s, ref)
        assert s.source == str(tmp_path / "root" / "cifar-10-batches-py")
    archive = make_targz(tmp_path / "root", tmp_path / "cifar-10-python.tar.gz")
    s = load_dataset("cifar10", archive, cache_dir=cache, download=False)
    _check_cifar10(s, ref)
    assert s.source == str(archive)
    # The official archive next to nothing else in a folder (a download folder) is found too.
    (tmp_path / "dl").mkdir()
    os.replace(archive, tmp_path / "dl" / "cifar-10-python.tar.gz")
    _check_cifar10(load_dataset("CIFAR10", tmp_path / "dl", cache_dir=cache, download=False), ref)


def test_cifar10_without_meta_uses_standard_names(tmp_path: Path, cache: Path) -> None:
    make_cifar10_batches(tmp_path / "b", meta=False)
    s = load_dataset("cifar10", tmp_path / "b", cache_dir=cache, download=False)
    assert s.classes == tuple(CIFAR10_NAMES)


def test_cifar100_python(tmp_path: Path, cache: Path) -> None:
    ref = make_cifar100_python(tmp_path / "cifar-100-python")
    s = load_dataset("cifar100", tmp_path, val_size=20, cache_dir=cache, download=False)
    assert s.num_classes == 100 and s.classes[7] == "class007"
    assert (len(s.train), len(s.val), len(s.test)) == (180, 20, 100)
    assert torch.equal(s.test.x, torch.from_numpy(ref["test_x"]))
    assert s.test.y.tolist() == ref["test_y"].tolist()
    archive = make_targz(tmp_path / "cifar-100-python", tmp_path / "c100.tar.gz", arcname="cifar-100-python")
    t = load_dataset("cifar100", archive, val_size=20, cache_dir=cache, download=False)
    assert torch.equal(t.train.x, s.train.x) and torch.equal(t.val.y, s.val.y)


def test_cifar10_from_imagefolder_archive(tmp_path: Path, cache: Path) -> None:
    """The layout of /work/shared/datasets/cifar10-jpeg.tar.gz: cifar10/{train,test}/<class>/NNNN.jpg."""
    arrays = make_tree(tmp_path / "cifar10", classes=tuple(CIFAR10_NAMES), n_train=2, n_test=1)
    archive = make_targz(tmp_path / "cifar10", tmp_path / "cifar10-jpeg.tar.gz", arcname="cifar10")
    s = load_dataset("cifar10", archive, val_size=2, cache_dir=cache, download=False)
    assert s.classes == tuple(CIFAR10_NAMES)
    assert (len(s.train), len(s.val), len(s.test)) == (18, 2, 10)
    expected = np.stack([arrays["test"][c][0] for c in CIFAR10_NAMES]).transpose(0, 3, 1, 2)
    assert torch.equal(s.test.x, torch.from_numpy(expected)) and s.test.y.tolist() == list(range(10))


# ----------------------------------------------------------------------------------------------- imagefolder


def _check_tree(s: DatasetSplits, arrays: dict[str, dict[str, list[np.ndarray]]]) -> None:
    assert s.classes == ("cat", "dog", "emu")
    expected = np.stack([img for c in s.classes for img in arrays["test"][c]]).transpose(0, 3, 1, 2)
    assert torch.equal(s.test.x, torch.from_numpy(expected))
    assert s.test.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert len(s.train) + len(s.val) == 12 and len(s.val) == 1


def test_imagefolder_folder_parent_and_archives(tmp_path: Path, cache: Path) -> None:
    arrays = make_tree(tmp_path / "data" / "mine")
    (tmp_path / "data" / "mine" / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "mine" / "train" / ".hidden").mkdir()
    (tmp_path / "data" / "mine" / "train" / "cat" / "loop").symlink_to(tmp_path / "data" / "mine" / "train" / "cat")
    for given in (tmp_path / "data" / "mine", tmp_path / "data"):
        _check_tree(load_dataset("imagefolder", given, cache_dir=cache), arrays)
    flat = make_targz(tmp_path / "data" / "mine", tmp_path / "flat.tar.gz")
    nested = make_targz(tmp_path / "data" / "mine", tmp_path / "nested.tgz", arcname="mine")
    for archive in (flat, nested):
        _check_tree(load_dataset("imagefolder", archive, cache_dir=cache), arrays)


def test_imagefolder_converts_and_resizes(tmp_path: Path, cache: Path) -> None:
    make_tree(tmp_path, classes=("a", "b"), n_train=3, n_test=1, size=16)
    grey = np.full((20, 24), 77, dtype=np.uint8)
    (tmp_path / "train" / "a" / "grey.png").write_bytes(_png(grey, mode="L"))
    jpeg = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(jpeg, format="JPEG")
    (tmp_path / "test" / "b" / "x.JPG").write_bytes(jpeg.getvalue())
    s = load_dataset("imagefolder", tmp_path, val_size=1, image_size=16, cache_dir=cache)
    assert s.image_shape == (3, 16, 16) and len(s.test) == 3
    everything = torch.cat([s.train.x, s.val.x])
    assert any(bool((img == 77).all()) for img in everything)  # grey -> RGB, 24x20 -> 16x16
    assert (s.test.x[-1].int() - 200).abs().max() <= 3
    t = load_dataset("imagefolder", tmp_path, val_size=1, image_size=8, cache_dir=cache)
    assert t.image_shape == (3, 8, 8)


# ----------------------------------------------------------------------------------------------- splits


def test_split_seeds_sizes_and_subset(tmp_path: Path, cache: Path) -> None:
    make_tree(tmp_path, classes=("a", "b", "c", "d"), n_train=10, n_test=1, size=4)
    kw: dict[str, Any] = {"cache_dir": cache, "image_size": 4}
    a = load_dataset("imagefolder", tmp_path, val_size=8, seed=1, **kw)
    b = load_dataset("imagefolder", tmp_path, val_size=8, seed=1, **kw)
    c = load_dataset("imagefolder", tmp_path, val_size=8, seed=2, **kw)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.x, b.train.x) and a.mean == b.mean
    assert _ids(a.val) != _ids(c.val)
    assert (len(a.train), len(a.val)) == (32, 8) and not (_ids(a.train) & _ids(a.val))
    assert load_dataset("imagefolder", tmp_path, **kw).describe()["sizes"] == {"train": 36, "val": 4, "test": 4}
    sub = load_dataset("imagefolder", tmp_path, val_size=8, seed=1, train_subset=10, **kw)
    assert len(sub.train) == 10 and _ids(sub.train) <= _ids(a.train)
    assert torch.equal(sub.val.x, a.val.x) and torch.equal(sub.val.y, a.val.y)
    smaller = load_dataset("imagefolder", tmp_path, val_size=8, seed=1, train_subset=5, **kw)
    assert _ids(smaller.train) <= _ids(sub.train)
    # mean/std describe the final training set in [0, 1] units.
    x = sub.train.x.double() / 255
    assert np.allclose(sub.mean, x.mean(dim=(0, 2, 3)).tolist())
    assert np.allclose(sub.std, x.std(dim=(0, 2, 3), unbiased=False).tolist())
    assert sub.describe()["sizes"] == {"train": 10, "val": 8, "test": 4}


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"normalize": "zca"}, ["normalisation", "--normalize"]),
        ({"val_size": -3}, ["val_size"]),
        ({"val_size": 40}, ["maximum is 39", "--val-size"]),
        ({"val_size": True}, ["val_size"]),
        ({"train_subset": 0}, ["train_subset", "--train-subset"]),
        ({"val_size": 4, "train_subset": 37}, ["at most 36", "--train-subset"]),
        ({"image_size": 0}, ["image_size", "--image-size"]),
    ],
)
def test_split_errors(tmp_path: Path, cache: Path, kwargs: dict[str, Any], needles: list[str]) -> None:
    make_tree(tmp_path, classes=("a", "b", "c", "d"), n_train=10, n_test=1, size=4)
    _raises(lambda: load_dataset("imagefolder", tmp_path, cache_dir=cache, **{"image_size": 4, **kwargs}), *needles)


# ----------------------------------------------------------------------------------------------- cache


def test_cache_reuse_invalidation_and_corruption(tmp_path: Path, cache: Path, count_decodes: list[str]) -> None:
    make_cifar10_batches(tmp_path / "b")
    first = load_dataset("cifar10", tmp_path / "b", cache_dir=cache, download=False)
    assert len(count_decodes) == 1
    files = list(cache.glob("cifar10-32px-*.pt"))
    assert len(files) == 1 and not list(cache.glob(".*tmp"))
    again = load_dataset("cifar10", tmp_path / "b", cache_dir=cache, seed=3, download=False)
    assert len(count_decodes) == 1  # served from the cache
    assert torch.equal(
        torch.cat([first.train.x, first.val.x]).sort(0).values, torch.cat([again.train.x, again.val.x]).sort(0).values
    )
    load_dataset("cifar10", tmp_path / "b", cache_dir=cache, download=False, image_size=16)
    assert len(count_decodes) == 2  # image_size is part of the key
    # A changed source (size or mtime) is decoded again.
    batch = tmp_path / "b" / "data_batch_1"
    os.utime(batch, ns=(batch.stat().st_atime_ns, batch.stat().st_mtime_ns + 10**9))
    load_dataset("cifar10", tmp_path / "b", cache_dir=cache, download=False)
    assert len(count_decodes) == 3
    # A corrupt cache file is ignored (with a warning) and rewritten.
    for f in cache.glob("cifar10-32px-*.pt"):
        f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring unreadable dataset cache"):
        s = load_dataset("cifar10", tmp_path / "b", cache_dir=cache, download=False)
    assert len(count_decodes) == 4 and len(s.test) == 10
    load_dataset("cifar10", tmp_path / "b", cache_dir=cache, download=False)
    assert len(count_decodes) == 4


def test_cache_dir_default_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNENAS_CACHE", str(tmp_path / "envcache"))
    assert data.default_cache_dir() == tmp_path / "envcache"
    make_tree(tmp_path / "t", classes=("a", "b"), n_train=2, n_test=1, size=4)
    load_dataset("imagefolder", tmp_path / "t", image_size=4)
    assert list((tmp_path / "envcache").glob("imagefolder-4px-*.pt"))


# ----------------------------------------------------------------------------------------------- download


@pytest.fixture
def fake_official(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake cifar-10-python.tar.gz served from a file:// URL with its true md5."""
    make_cifar10_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = make_targz(tmp_path / "src", tmp_path / "served.tar.gz")
    monkeypatch.setitem(data.DOWNLOAD_URLS, "cifar10", archive.as_uri())
    monkeypatch.setitem(data.DOWNLOAD_MD5, "cifar10", hashlib.md5(archive.read_bytes()).hexdigest())
    return archive


def test_download_file_url(tmp_path: Path, cache: Path, fake_official: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_dataset("cifar10", cache_dir=cache)
    assert s.source == str(cache / "cifar-10-python.tar.gz") and len(s.test) == 10
    # Later runs reuse the verified archive without downloading.
    monkeypatch.setitem(data.DOWNLOAD_URLS, "cifar10", (tmp_path / "gone.tar.gz").as_uri())
    assert len(load_dataset("cifar10", cache_dir=cache, download=False).test) == 10
    # An empty or missing --data-dir is filled by a download.
    monkeypatch.setitem(data.DOWNLOAD_URLS, "cifar10", fake_official.as_uri())
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "new"):
        t = load_dataset("cifar10", target, cache_dir=cache)
        assert (target / "cifar-10-python.tar.gz").is_file() and torch.equal(t.test.x, s.test.x)


def test_download_failures(tmp_path: Path, cache: Path, fake_official: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(data.DOWNLOAD_MD5, "cifar10", "0" * 32)
    _raises(lambda: load_dataset("cifar10", cache_dir=cache), "md5", "0" * 32, "--data-dir")
    assert not list(cache.iterdir())  # nothing half-written is left behind
    monkeypatch.setitem(data.DOWNLOAD_URLS, "cifar10", (tmp_path / "missing.tar.gz").as_uri())
    _raises(lambda: load_dataset("cifar10", cache_dir=cache), "could not download cifar10", "--data-dir")
    _raises(lambda: load_dataset("cifar10", cache_dir=cache, download=False), "downloading is off", "--data-dir")


# ----------------------------------------------------------------------------------------------- errors


def test_error_unknown_and_missing(tmp_path: Path, cache: Path) -> None:
    _raises(lambda: load_dataset("mnist"), "'mnist'", *DATASETS)
    _raises(lambda: load_dataset("imagefolder", cache_dir=cache), "--data-dir", "train/<class>/")
    _raises(lambda: load_dataset("imagefolder", tmp_path / "nope", cache_dir=cache), "does not exist", "--data-dir")
    _raises(
        lambda: load_dataset("cifar10", tmp_path / "nope", cache_dir=cache, download=False),
        "does not exist",
        "--data-dir",
        "cifar-10-python.tar.gz",
    )
    (tmp_path / "empty").mkdir()
    _raises(lambda: load_dataset("cifar100", tmp_path / "empty", cache_dir=cache, download=False), "is empty")


def test_error_corrupt_and_truncated_archives(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "junk.tar.gz").write_bytes(b"this is not a tarball" * 10)
    _raises(lambda: load_dataset("cifar10", tmp_path / "junk.tar.gz", cache_dir=cache), "junk.tar.gz", "corrupt")
    make_tree(tmp_path / "t", n_train=3)
    whole = make_targz(tmp_path / "t", tmp_path / "whole.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    _raises(lambda: load_dataset("imagefolder", tmp_path / "cut.tar.gz", cache_dir=cache), "cut.tar.gz", "truncated")


def test_error_corrupt_batch_and_meta(tmp_path: Path, cache: Path) -> None:
    make_cifar10_batches(tmp_path / "b")
    (tmp_path / "b" / "data_batch_3").write_bytes(b"\x80\x02}q\x00(")  # a truncated pickle
    _raises(lambda: load_dataset("cifar10", tmp_path / "b", cache_dir=cache), "data_batch_3", "corrupt")
    make_cifar10_batches(tmp_path / "c")
    _dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, tmp_path / "c" / "test_batch")
    _raises(lambda: load_dataset("cifar10", tmp_path / "c", cache_dir=cache), "test_batch", "(N, 3072)")
    make_cifar10_batches(tmp_path / "d")
    _dump({b"label_names": [b"x"]}, tmp_path / "d" / "batches.meta")
    _raises(lambda: load_dataset("cifar10", tmp_path / "d", cache_dir=cache), "batches.meta", "class names")
    # A pickle that would run code is refused, not executed.
    make_cifar10_batches(tmp_path / "e")
    (tmp_path / "e" / "test_batch").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    _raises(lambda: load_dataset("cifar10", tmp_path / "e", cache_dir=cache), "test_batch", "os.system")


def test_python2_pickles_load_without_warnings() -> None:
    """The official batches were pickled by Python 2 (strings as SHORT_BINSTRING, numpy.core globals)."""
    blob = (
        b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00"
        b"\x85U\x01b\x87Rq\x04(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNN"
        b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbI00\nU\x06\x01\x02\x03\x04\x05\x06tbU\x06labelsq\x07]q\x08(K\x01K\x02eu."
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = data.decode._unpickle(blob, "py2")
    assert batch[b"labels"] == [1, 2]
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_error_bad_image_names_the_file(tmp_path: Path, cache: Path) -> None:
    make_tree(tmp_path / "t")
    (tmp_path / "t" / "train" / "dog" / "0002.png").write_bytes(b"\x89PNG broken")
    _raises(lambda: load_dataset("imagefolder", tmp_path / "t", cache_dir=cache), "cannot read image", "0002.png")
    archive = make_targz(tmp_path / "t", tmp_path / "t.tar.gz", arcname="t")
    _raises(lambda: load_dataset("imagefolder", archive, cache_dir=cache), "t.tar.gz:t/train/dog/0002.png")


def test_error_layouts(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "readme.txt").write_text("hello")
    _raises(
        lambda: load_dataset("cifar10", tmp_path / "odd", cache_dir=cache), "no known layout", "cifar-10-batches-py"
    )
    _raises(lambda: load_dataset("imagefolder", tmp_path / "odd", cache_dir=cache), "no known layout", "train/<class>/")
    odd = make_targz(tmp_path / "odd", tmp_path / "odd.tar.gz")
    _raises(lambda: load_dataset("imagefolder", odd, cache_dir=cache), "archive", "no known layout")
    make_cifar100_python(tmp_path / "c100" / "cifar-100-python", n_train=100, n_test=100)
    _raises(lambda: load_dataset("cifar10", tmp_path / "c100", cache_dir=cache), "--dataset cifar100")
    make_tree(tmp_path / "two" / "a", n_train=1, n_test=1, size=4)
    make_tree(tmp_path / "two" / "b", n_train=1, n_test=1, size=4)
    _raises(lambda: load_dataset("imagefolder", tmp_path / "two", cache_dir=cache), "several", "a, b")
    make_tree(tmp_path / "three", classes=("a", "b", "c"), n_train=1, n_test=1, size=4)
    _raises(lambda: load_dataset("cifar10", tmp_path / "three", cache_dir=cache), "3 class folders", "10")


def test_error_class_lists_differ_and_empty(tmp_path: Path, cache: Path) -> None:
    make_tree(tmp_path / "t", classes=("a", "b", "c"), n_train=2, n_test=1, size=4)
    for f in (tmp_path / "t" / "test" / "c").iterdir():
        f.unlink()
    _raises(lambda: load_dataset("imagefolder", tmp_path / "t", cache_dir=cache), "without images", "c")
    (tmp_path / "t" / "test" / "c").rmdir()
    (tmp_path / "t" / "test" / "z").mkdir()
    (tmp_path / "t" / "test" / "z" / "0.png").write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
    _raises(lambda: load_dataset("imagefolder", tmp_path / "t", cache_dir=cache), "only in train: c", "only in test: z")
    (tmp_path / "e" / "train" / "a").mkdir(parents=True)
    (tmp_path / "e" / "test" / "a").mkdir(parents=True)
    _raises(lambda: load_dataset("imagefolder", tmp_path / "e", cache_dir=cache), "no images found under train/")


def test_imageset_validates() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


# ----------------------------------------------------------------------------------------------- device batches


def _random_set(n: int = 100, size: int = 32, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageSet(x, torch.arange(n, dtype=torch.int64) % 10)


def _batches(s: ImageSet, **kw: Any) -> DeviceBatches:
    opts: dict[str, Any] = {
        "batch_size": 16,
        "device": "cpu",
        "mean": (0.5, 0.4, 0.3),
        "std": (0.2, 0.25, 0.3),
        "augment": False,
        "shuffle": False,
        "drop_last": False,
    }
    return DeviceBatches(s, **{**opts, **kw})


def test_batches_plain_equal_normalized_input() -> None:
    s = _random_set(100)
    b = _batches(s)
    assert len(b) == 7 and len(_batches(s, drop_last=True)) == 6
    out = list(b.epoch(0))
    assert [len(y) for _, y in out] == [16] * 6 + [4]
    x0, y0 = out[0]
    assert x0.dtype == torch.float32 and x0.shape == (16, 3, 32, 32) and y0.dtype == torch.int64
    assert torch.equal(x0, b.normalize(s.x[:16])) and torch.equal(y0, s.y[:16])
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(x0, (s.x[:16].float() / 255 - mean) / std, rtol=1e-6, atol=1e-6)
    assert torch.equal(torch.cat([x for x, _ in out]), b.normalize(s.x))


def test_batches_order_depends_on_seed_and_epoch_only() -> None:
    s = _random_set(64)
    first = [y.clone() for _, y in _batches(s, shuffle=True, augment=True, seed=7).epoch(3)]
    fresh = _batches(s, shuffle=True, augment=True, seed=7)
    for _ in fresh.epoch(0):
        pass
    again = list(fresh.epoch(3))  # resuming at epoch 3 replays it exactly
    assert all(torch.equal(a, y) for a, (_, y) in zip(first, again, strict=True))
    xs1 = torch.cat([x for x, _ in _batches(s, shuffle=True, augment=True, seed=7).epoch(3)])
    assert torch.equal(xs1, torch.cat([x for x, _ in again]))
    other_epoch = torch.cat([y for _, y in fresh.epoch(4)])
    other_seed = torch.cat([y for _, y in _batches(s, shuffle=True, seed=8).epoch(3)])
    assert not torch.equal(torch.cat(first), other_epoch) and not torch.equal(torch.cat(first), other_seed)
    assert sorted(other_epoch.tolist()) == sorted(s.y.tolist())  # a permutation, every image once


def test_augmentation_is_pad4_crop_and_flip() -> None:
    n, size, pad = 256, 32, 4
    x = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    x[:, 0] = (torch.arange(size) + 1).view(1, size, 1)  # channel 0 encodes the row, 1-based
    x[:, 1] = (torch.arange(size) + 1).view(1, 1, size)  # channel 1 encodes the column
    x[:, 2] = (torch.arange(n) % 200 + 50).view(n, 1, 1)  # channel 2 identifies the image
    s = ImageSet(x, torch.arange(n, dtype=torch.int64))
    b = _batches(s, batch_size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), augment=True, shuffle=True, seed=1)
    offsets, flips = set(), set()
    for xb, yb in b.epoch(0):
        assert xb.shape == (64, 3, size, size) and xb.dtype == torch.float32
        got = (xb * 255).round().to(torch.uint8)
        for img, label in zip(got, yb.tolist(), strict=True):
            # Recover (dy, dx, flip) from the encoded coordinates, then compare with the reference crop.
            r = next(i for i in range(size) if img[0, i, :].max() > 0)
            dy = int(img[0, r].max()) - 1 - r + pad
            cols = img[1, r]
            nz = [j for j in range(size) if cols[j] > 0]
            flip = len(nz) > 1 and int(cols[nz[0]]) > int(cols[nz[-1]])
            j = nz[-1] if flip else nz[0]
            dx = (int(cols[j]) - 1 - (size - 1 - j if flip else j)) + pad
            padded = torch.nn.functional.pad(x[label], (pad, pad, pad, pad))
            ref = padded[:, dy : dy + size, dx : dx + size]
            ref = ref.flip(-1) if flip else ref
            assert torch.equal(img, ref)
            offsets.add((dy, dx))
            flips.add(flip)
    assert flips == {True, False}
    assert len(offsets) > 40 and min(min(o) for o in offsets) == 0 and max(max(o) for o in offsets) == 2 * pad


def test_augmentation_changes_with_epoch_and_flip_only_padding() -> None:
    s = _random_set(32)
    b = _batches(s, batch_size=32, augment=True)
    e0, e1 = next(iter(b.epoch(0)))[0], next(iter(b.epoch(1)))[0]
    assert not torch.equal(e0, e1)
    plain = b.normalize(s.x)
    flipped = _batches(s, batch_size=32, augment=True, padding=0)
    xb = next(iter(flipped.epoch(0)))[0]
    same = [bool(torch.equal(xb[i], plain[i])) for i in range(32)]
    mirrored = [bool(torch.equal(xb[i], plain[i].flip(-1))) for i in range(32)]
    assert all(a or m for a, m in zip(same, mirrored, strict=True)) and any(same) and any(mirrored)


def test_channels_last_and_dtype() -> None:
    s = _random_set(40)
    plain = next(iter(_batches(s, augment=True, seed=3).epoch(2)))[0]
    cl = next(iter(_batches(s, augment=True, seed=3, channels_last=True).epoch(2)))[0]
    assert cl.is_contiguous(memory_format=torch.channels_last) and not plain.is_contiguous(
        memory_format=torch.channels_last
    )
    assert torch.equal(cl, plain)
    half = next(iter(_batches(s, dtype=torch.bfloat16).epoch(0)))[0]
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), next(iter(_batches(s).epoch(0)))[0], rtol=1e-2, atol=2e-2)


def test_normalized_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([120.0, 60.0, 200.0]).view(1, 3, 1, 1)
    noise = torch.randn(400, 3, 16, 16, generator=g) * torch.tensor([30.0, 15.0, 20.0]).view(1, 3, 1, 1)
    s = ImageSet((base + noise).round().clamp(0, 255).to(torch.uint8), torch.zeros(400, dtype=torch.int64))
    mean, std = data.splits._channel_stats(s.x)
    for kw in ({"augment": False}, {"augment": True, "padding": 0}):
        xs = torch.cat([x for x, _ in _batches(s, batch_size=64, mean=mean, std=std, shuffle=True, **kw).epoch(0)])
        assert xs.mean(dim=(0, 2, 3)).abs().max() < 1e-3
        assert (xs.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_batches_errors() -> None:
    s = _random_set(10)
    _raises(lambda: _batches(s, batch_size=0), "batch_size", "--batch-size")
    _raises(lambda: _batches(s, batch_size=11, drop_last=True), "--batch-size 10 or less")
    with pytest.raises(ValueError, match="std"):
        _batches(s, std=(0.0, 1.0, 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_cuda_without_host_sync() -> None:
    s = _random_set(300)
    b = _batches(s, device="cuda", batch_size=64, augment=True, shuffle=True, channels_last=True, seed=2)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = list(b.epoch(1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out[0][0].device.type == "cuda" and out[0][0].is_contiguous(memory_format=torch.channels_last)
    again = list(b.epoch(1))
    assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(out, again, strict=True))


# ----------------------------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CIFAR10.is_file(), reason=f"{REAL_CIFAR10} not present")
def test_real_cifar10_jpeg_archive(tmp_path: Path) -> None:
    s = load_dataset("cifar10", REAL_CIFAR10, cache_dir=tmp_path)
    assert s.classes == tuple(CIFAR10_NAMES)
    assert (len(s.train), len(s.val), len(s.test)) == (45000, 5000, 10000)
    assert torch.bincount(s.test.y).tolist() == [1000] * 10
    # README: train means 0.4913/0.4821/0.4465 on all 50,000; 45,000 of them land within 0.003.
    assert np.allclose(s.mean, (0.4913, 0.4821, 0.4465), atol=3e-3)
    assert np.allclose(s.std, (0.245, 0.243, 0.261), atol=3e-3)
