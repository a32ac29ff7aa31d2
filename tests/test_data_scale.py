"""Data that does not fit in memory: the decode-once disk cache, streamed batches, ImageNet-style crops and
their bad input (on small generated ImageFolder trees; CPU, seconds)."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunenas.cli import main
from prunenas.config import RunSettings
from prunenas.data import DeviceBatches, StreamBatches, load_dataset
from prunenas.errors import DataError
from prunenas.recipes import make_recipe
from prunenas.spaces import get_space
from prunenas.train import CHECKPOINT, train

CLASSES = ("ant", "bee", "cow")


def make_tree(root: Path, size: int = 16, per_class: int = 24, test_per_class: int = 6, modes: bool = False) -> Path:
    """train/ and test/ with CLASSES, random PNG images of `size` px (grey, CMYK-as-JPEG, RGBA when `modes`)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in CLASSES:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
                mode = ("RGB", "L", "RGBA", "CMYK")[i % 4] if modes else "RGB"
                img = img.convert(mode)
                img.save(folder / f"{i:03d}.{'jpg' if mode == 'CMYK' else 'png'}")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def disk(tree: Path, cache: Path, **kw: object) -> object:
    opts: dict[str, object] = {
        "image_size": 16,
        "data_cache": "disk",
        "cache_dir": cache,
        "quiet": True,
        "val_size": 12,
    }
    return load_dataset("imagefolder", tree, **{**opts, **kw})  # type: ignore[arg-type]


# -- the cache ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scattered", [False, True])
def test_disk_cache_holds_the_same_images_as_the_in_memory_path(
    tree: Path, cache: Path, scattered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prunenas.data.splits as splits

    if scattered:  # one positioned read per row instead of one over the span
        monkeypatch.setattr(splits, "SPAN_SLACK", -(10**6))
    on_disk = disk(tree, cache, stored_size=16)
    in_memory = load_dataset("imagefolder", tree, image_size=16, data_cache="memory", cache_dir=cache, val_size=12)
    assert on_disk.train.on_disk and not in_memory.train.on_disk  # type: ignore[attr-defined]
    for split in ("train", "val", "test"):
        a, b = getattr(on_disk, split), getattr(in_memory, split)
        assert len(a) == len(b)
        idx = torch.arange(len(a))
        assert torch.equal(a.images(idx), b.images(idx)), split
        assert torch.equal(a.images(idx.flip(0)[::3]), b.images(idx.flip(0)[::3])), split
        assert torch.equal(a.labels, b.labels), split
    folders = list(cache.glob("*.mmap"))
    assert len(folders) == 1 and (folders[0] / "meta.json").is_file()


def test_cache_is_built_once_and_rebuilt_when_the_source_changes(tree: Path, cache: Path) -> None:
    disk(tree, cache)
    meta = next(cache.glob("*.mmap")) / "meta.json"
    stamp = meta.stat().st_mtime_ns
    again = disk(tree, cache)
    assert meta.stat().st_mtime_ns == stamp and again.cache == str(meta.parent)  # type: ignore[attr-defined]
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tree / "train" / "ant" / "new.png")
    changed = disk(tree, cache)
    assert len(changed.train) + len(changed.val) == 3 * 24 + 1  # type: ignore[attr-defined]
    assert len(list(cache.glob("*.mmap"))) == 2


def test_images_are_stored_larger_and_cropped_to_the_image_size(tree: Path, cache: Path) -> None:
    data = disk(tree, cache, image_size=12)
    assert data.stored_size == 14 and data.image_shape == (3, 12, 12)  # type: ignore[attr-defined]
    batches = StreamBatches(
        data.train, batch_size=8, device="cpu", mean=data.mean, std=data.std, augment=True, shuffle=True,  # type: ignore[attr-defined]
        drop_last=True, out_size=12, crop="rrc",
    )  # fmt: skip
    x, y = next(iter(batches.epoch(0)))
    assert x.shape == (8, 3, 12, 12) and y.shape == (8,) and torch.isfinite(x).all()


def test_mixed_modes_are_converted_and_an_archive_works_like_a_folder(tmp_path: Path, cache: Path) -> None:
    root = make_tree(tmp_path / "modes", modes=True)
    folder = disk(root, cache)
    archive = tmp_path / "modes.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="modes")
    packed = disk(archive, cache)
    idx = torch.arange(len(folder.test))  # type: ignore[attr-defined]
    assert torch.equal(folder.test.images(idx), packed.test.images(idx))  # type: ignore[attr-defined]
    grey = folder.test.images(torch.tensor([1]))[0]  # image 1 of the first class was saved as grayscale
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


# -- streaming ---------------------------------------------------------------------------------------------------
def test_streamed_epochs_see_every_image_once_in_a_seeded_order(tree: Path, cache: Path) -> None:
    data = disk(tree, cache)
    kwargs = {
        "batch_size": 10, "device": "cpu", "mean": data.mean, "std": data.std, "augment": False,  # type: ignore[attr-defined]
        "shuffle": True, "drop_last": False, "seed": 3, "chunk_images": 20,
    }  # fmt: skip
    batches = StreamBatches(data.train, **kwargs)  # type: ignore[attr-defined, arg-type]
    assert batches.num_chunks > 1

    def labels_of(b: StreamBatches, epoch: int) -> list[torch.Tensor]:
        return [yb for _, yb in b.epoch(epoch)]

    first = labels_of(batches, 0)
    assert len(first) == len(batches) and sum(len(y) for y in first) == len(data.train)  # type: ignore[attr-defined]
    assert torch.equal(torch.cat(first).sort().values, data.train.labels.sort().values)  # type: ignore[attr-defined]
    again = labels_of(StreamBatches(data.train, **kwargs), 0)  # type: ignore[attr-defined, arg-type]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    second = [xb for xb, _ in batches.epoch(1)]
    firstx = [xb for xb, _ in batches.epoch(0)]
    assert not all(torch.equal(a, b) for a, b in zip(firstx, second, strict=True))


def test_data_parallel_shards_read_disjoint_chunks_and_take_equal_steps(tree: Path, cache: Path) -> None:
    data = disk(tree, cache)
    kwargs = {
        "batch_size": 4, "device": "cpu", "mean": data.mean, "std": data.std, "augment": False,  # type: ignore[attr-defined]
        "shuffle": True, "drop_last": True, "seed": 1, "chunk_images": 8,
    }  # fmt: skip
    shards = [StreamBatches(data.train, shard=(r, 2), **kwargs) for r in (0, 1)]  # type: ignore[attr-defined, arg-type]
    assert len(shards[0]) == len(shards[1]) > 0
    seen = [torch.cat([xb.flatten(1) for xb, _ in s.epoch(0)]) for s in shards]
    assert all(len(x) == len(shards[0]) * 2 for x in seen)  # half the global batch each
    common = {tuple(r.tolist()) for r in seen[0]} & {tuple(r.tolist()) for r in seen[1]}
    assert not common


def test_a_streamed_run_resumed_at_an_epoch_boundary_equals_an_uninterrupted_one(
    tree: Path, cache: Path, tmp_path: Path
) -> None:
    data = disk(tree, cache)
    space = get_space("resnet20_channels", overrides={"depth": 8, "widths": [4, 8, 8]})
    recipe = make_recipe("standard", space.recipe, overrides={"epochs": 2, "batch_size": 8, "crop": "rrc"})
    settings = RunSettings(quiet=True, plot=False)
    whole = train(space, space.reference(), data, recipe, settings, out_dir=tmp_path / "whole")  # type: ignore[arg-type]
    half = tmp_path / "half"

    class Stop(Exception):
        pass

    def stop_after_first(m: object) -> None:
        raise Stop

    with pytest.raises(Stop):
        train(space, space.reference(), data, recipe, settings, out_dir=half, callbacks=[stop_after_first])  # type: ignore[arg-type]
    resumed = train(space, space.reference(), data, recipe, settings, out_dir=half)  # type: ignore[arg-type]
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2
    a = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=False)["model"]
    b = torch.load(half / CHECKPOINT, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.test_acc == resumed.test_acc


def test_rrc_with_the_whole_image_and_a_flip_is_the_mirrored_image() -> None:
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    from prunenas.data.splits import ImageSet

    batches = DeviceBatches(
        ImageSet(x, torch.zeros(2, dtype=torch.int64)), batch_size=2, device="cpu", mean=(0, 0, 0), std=(1, 1, 1),
        augment=True, shuffle=False, drop_last=False, crop="rrc",
    )  # fmt: skip
    u = torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])  # area 1, ratio 1, centred
    out = batches._resized_crop(x, u, torch.tensor([False, True]))
    torch.testing.assert_close(out[0], x[0].float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1], x[1].float().flip(-1), atol=1e-3, rtol=0)


# -- bad input -----------------------------------------------------------------------------------------------------
def test_truncated_images_stop_by_default_and_are_skipped_with_a_count_when_asked(tree: Path, cache: Path) -> None:
    bad = tree / "train" / "bee" / "005.png"
    bad.write_bytes(bad.read_bytes()[:40])
    (tree / "test" / "cow" / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"2 of .* could not be read.*--bad-images skip"):
        disk(tree, cache)
    assert not list(cache.glob("*.mmap"))  # nothing half-written left as valid
    data = disk(tree, cache, bad_images="skip")
    assert data.skipped == 2 and len(data.train) + len(data.val) == 3 * 24 - 1  # type: ignore[attr-defined]
    listed = (Path(data.cache) / "skipped.txt").read_text()  # type: ignore[attr-defined]
    assert "005.png" in listed and "junk.jpg" in listed
    memory = load_dataset("imagefolder", tree, image_size=16, cache_dir=cache, data_cache="memory", bad_images="skip")
    assert memory.skipped == 2


def test_a_class_folder_without_images_and_a_single_class_are_refused(tree: Path, cache: Path) -> None:
    (tree / "train" / "dog").mkdir()
    (tree / "test" / "dog").mkdir()
    with pytest.raises(DataError, match=r"without images.*dog"):
        disk(tree, cache)
    one = make_tree(tree.parent / "one")
    for split in ("train", "test"):
        for c in CLASSES[1:]:
            for f in (one / split / c).iterdir():
                f.unlink()
            (one / split / c).rmdir()
    with pytest.raises(DataError, match="one class"):
        disk(one, cache)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_is_one_line(tree: Path, cache: Path) -> None:
    cache.mkdir()
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(DataError, match="PRUNENAS_CACHE"):
            disk(tree, cache)
    finally:
        cache.chmod(stat.S_IRWXU)


def test_a_full_disk_is_refused_before_decoding(tree: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prunenas.data.diskcache as dc

    monkeypatch.setattr(dc, "_free_bytes", lambda _folder: 1000)
    with pytest.raises(DataError, match="GiB are free"):
        disk(tree, cache)
    assert not list(cache.glob("*.mmap")) and not list(cache.glob(".*tmp*"))


def test_cli_bad_input_lines(
    tree: Path, cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRUNENAS_CACHE", str(cache))
    base = ["train", "resnet20_channels", "--dataset", "imagefolder", "--data-dir", str(tree), "--epochs", "1"]
    for extra, needle in (
        (["--data-cache", "disk", "--image-size", "20", "--stored-size", "16"], "larger than the stored size"),
        (["--data-cache", "tape"], "--data-cache"),
        (["--bad-images", "maybe"], "--bad-images"),
        (["--data-cache", "memory", "--stored-size", "20"], "--stored-size"),
    ):
        rc = main([*base, *extra])
        err = capsys.readouterr().err
        assert rc == 2, (extra, err)
        assert needle in err and "Traceback" not in err, (extra, err)
        assert len([line for line in err.splitlines() if line.startswith("prunenas: error")]) == 1


def test_train_on_a_disk_cached_folder_from_the_cli(tree: Path, cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("PRUNENAS_CACHE", str(cache))
    out = tmp_path / "run"
    rc = main([
        "train", "resnet20_channels", "--dataset", "imagefolder", "--data-dir", str(tree), "--image-size", "16",
        "--data-cache", "disk", "--epochs", "1", "--batch-size", "16", "--crop", "rrc", "--quiet", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["cache"].endswith(".mmap") and metrics["dataset"]["stored_size"] == 19
    assert metrics["recipe_settings"]["crop"] == "rrc"


# -- ImageNet-style recipes --------------------------------------------------------------------------------------
def test_imagenet_presets_lay_plain_values_under_the_flags_and_cap_scratch_b_at_2x() -> None:
    from prunenas.recipes import PRESETS

    step = make_recipe("standard", {"epochs": 160, "lr": 0.05}, overrides={"preset": "imagenet-step"})
    assert (step.epochs, step.lr, step.schedule, step.crop) == (90, 0.1, "step", "rrc")
    assert step.milestones == pytest.approx((1 / 3, 2 / 3)) and step.peak_lr == pytest.approx(0.1)
    assert step.lr_at(0, 900, 10) == pytest.approx(0.1) and step.lr_at(300, 900, 10) == pytest.approx(0.01)
    half = make_recipe("standard", {}, overrides={"preset": "imagenet-step", "batch_size": 128})
    assert half.peak_lr == pytest.approx(0.05)  # 0.1 per 256 images
    cosine = make_recipe("standard", {"preset": "imagenet-cosine"}, overrides={"epochs": 10})
    assert (cosine.epochs, cosine.label_smoothing, cosine.warmup_epochs) == (10, 0.1, 5.0)  # a flag wins
    b = make_recipe("scratch-b", {}, macs=10, reference_macs=50, overrides={"preset": "imagenet-short"})
    assert b.epochs == 32 and b.extra["scratch_b_factor"] == 2.0  # 5x the compute, capped at 2x of 16
    assert set(PRESETS) == {"imagenet-step", "imagenet-cosine", "imagenet-short", "short"}
    assert "preset" not in make_recipe("standard").to_dict()  # runs without a preset keep their names
