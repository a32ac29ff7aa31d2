"""Decoding datasets to uint8 images: CIFAR python batches, ImageFolder trees, the embedded digits set.

CIFAR-10/100 come as python batches (a folder, or a .tar.gz read in one pass without extraction) or as an
ImageFolder tree (``train/<class>/`` and ``test/<class>/`` image folders, in a folder or a .tar.gz); a
user's own ImageFolder tree decodes the same way. Images are resized (bilinear) to the requested size.
The embedded 8x8 digits set ships as ``prunenas/_data/digits.npz``.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import posixpath
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from prunenas.data.splits import ImageSet, _Raw
from prunenas.errors import DataError, exception_line

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


# --------------------------------------------------------------------------------------------- layouts and files


def _accepted_layouts(name: str) -> str:
    tree = "an ImageFolder tree with train/<class>/ and test/<class>/ image folders (or a folder holding one)"
    if name in _CIFAR:
        spec = _CIFAR[name]
        return f"a {spec.folder} folder (or a folder holding it), its .tar.gz, {tree}, or a .tar.gz of such a tree"
    return f"{tree}, or a .tar.gz of such a tree"


def _walk_files(root: Path, skip_hidden: bool = False, contained: bool = False) -> list[Path]:
    """All files under ``root``, sorted, following symlinks but visiting each real folder once (a link loop
    is cut there). With ``contained`` (a class folder) a link to a folder outside ``root`` is refused, as it
    would file that folder's images (another class's) under this class, and each real file counts once."""
    found: list[tuple[Path, tuple[int, int]]] = []
    seen: set[tuple[int, int]] = set()
    real_root = root.resolve()
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
                    target = Path(entry.path).resolve()
                    if contained and entry.is_symlink() and not target.is_relative_to(real_root):
                        raise DataError(
                            f"{entry.path} is a link to {target}, outside its class folder {root}: its images would "
                            "be filed under that class too; remove the link, or copy the images into the folder"
                        )
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True):
                    fst = entry.stat() if contained else None
                    found.append((Path(entry.path), (fst.st_dev, fst.st_ino) if fst else (0, len(found))))
    files: list[Path] = []
    counted: set[tuple[int, int]] = set()
    for path, key in sorted(found):  # of several links to one file, the first name in order counts
        if key not in counted:
            counted.add(key)
            files.append(path)
    return files


# --------------------------------------------------------------------------------------------- decoding


def _why(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name."""
    return exception_line(exc, limit=100_000)


def _decode_source(name: str, layout: str, path: Path, image_size: int, bad_images: str = "stop") -> _Raw:
    """Decode everything at ``path`` (the slow step the cache avoids)."""
    if layout == "archive":
        return _decode_archive(name, path, image_size, bad_images)
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
    return _from_tree(name, _folder_tree(path), str(path), image_size, bad_images)


def _decode_archive(name: str, path: Path, image_size: int, bad_images: str = "stop") -> _Raw:
    """Read a tar(.gz) in one sequential pass (no extraction) and decode the layout found inside."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        files[posixpath.normpath(member.name).lstrip("/")] = handle.read()
    except ARCHIVE_ERRORS as exc:
        raise archive_error(path, exc) from None
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
    return _from_tree(name, tree, str(path), image_size, bad_images)


ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)


def archive_error(path: Path, exc: BaseException) -> DataError:
    """The one line for an archive that cannot be read (what tarfile raised, and the fix)."""
    return DataError(
        f"cannot read archive {path}: {_why(exc)} (not a tar archive, or corrupt or truncated); "
        "download it again or pass an extracted folder as --data-dir"
    )


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
        empty: list[str] = []
        try:
            class_dirs = sorted(p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith("."))
            _check_class_folders(root / split, class_dirs)
            for class_dir in class_dirs:
                found = [p for p in _walk_files(class_dir, skip_hidden=True, contained=True) if _is_image(p.name)]
                if not found:
                    empty.append(class_dir.name)
                items.extend((class_dir.name, str(p), p) for p in found)
        except OSError as exc:
            raise DataError(f"cannot list {root / split}: {_why(exc)}; check its permissions") from None
        if empty and items:
            exts = "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
            raise DataError(
                f"class folder(s) without images under {root / split}: {_short(empty)}; put images ({exts}) in them "
                "or remove them"
            )
        tree[split] = items
    return tree


def _check_class_folders(split: Path, class_dirs: list[Path]) -> None:
    """Refuse class folders that are links into one another (or to the split folder above them): a class would
    hold another's images."""
    reals: dict[Path, Path] = {}
    above = split.resolve()
    for class_dir in class_dirs:
        real = class_dir.resolve()
        clash = next((d for r, d in reals.items() if real.is_relative_to(r) or r.is_relative_to(real)), None)
        if clash is not None or above.is_relative_to(real):
            link, other = class_dir, f"{split} itself"
            if clash is not None:  # name the link, whichever of the two comes first
                swap = clash.is_symlink() and not class_dir.is_symlink()
                link = clash if swap else class_dir
                other = f"class folder {(class_dir if swap else clash).name}"
            raise DataError(
                f"class folder {link} leads to {link.resolve()}, which overlaps {other}: one class would hold "
                "another's images; give each class its own folder (remove the link)"
            )
        reals[real] = class_dir


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


def _from_tree(name: str, tree: _Tree, where: str, image_size: int, bad_images: str = "stop") -> _Raw:
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
    bad: list[str] = []
    for split in ("train", "test"):
        items = tree[split]
        x = np.empty((len(items), image_size, image_size, 3), dtype=np.uint8)
        ok = np.ones(len(items), dtype=bool)
        for i, (_, shown, src) in enumerate(items):
            try:
                blob = src if isinstance(src, bytes) else src.read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read image {shown}: {_why(exc)}; check its permissions") from None
            try:
                x[i] = _decode_image(blob, shown, image_size)
            except DataError as exc:
                if bad_images != "skip":
                    raise DataError(f"{exc} (or pass --bad-images skip to train without unreadable images)") from None
                ok[i] = False
                bad.append(shown)
        y = torch.tensor([label[c] for c, _, _ in items], dtype=torch.int64)
        keep = torch.from_numpy(np.flatnonzero(ok))
        images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        sets.append(ImageSet(images, y) if ok.all() else ImageSet(images, y).take(keep))
    if bad:
        import sys

        print(f"note: {len(bad)} unreadable image(s) left out (--bad-images skip): {_short(bad)}", file=sys.stderr)
    return _Raw(tuple(train_classes), sets[0], sets[1], skipped=len(bad))


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
