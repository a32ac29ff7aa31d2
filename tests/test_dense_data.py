"""Tests for prunenas.data.dense: the generated shapes sets, tiny VOC and COCO trees, and their bad input."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from prunenas.config import ConfigError, DataConfig
from prunenas.data import DATASETS, DENSE_DATASETS, IGNORE_INDEX, load_dataset, load_dense
from prunenas.data.dense import SHAPES_CLASSES, VOC_CLASSES
from prunenas.errors import DataError, PrunenasError


def _raises(fn: Callable[[], object], *needles: str) -> str:
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert isinstance(info.value, PrunenasError)
    assert "\n" not in msg and msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------------------------- shapes


def _digest(*tensors: torch.Tensor) -> str:
    return hashlib.sha256(b"".join(t.contiguous().numpy().tobytes() for t in tensors)).hexdigest()


def test_shapes_are_the_same_bytes_every_run() -> None:
    a, b = load_dense("shapes-seg", None, 32), load_dense("shapes-seg", "/ignored", 32)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert a.train.masks is not None and b.train.masks is not None
    assert torch.equal(a.train.masks, b.train.masks)
    # Pinned: the same bytes on every machine (numpy's PCG64 and exactly rounded arithmetic only).
    assert _digest(a.train.x[:8], a.train.masks[:8]) == (
        "37f8aa4fc7482e3d3b3a144ce39c08123a48fb224e4392a0f564d7f0510a7315"
    )
    det = load_dense("shapes-det", None, 32)
    assert det.test.boxes is not None
    assert _digest(det.test.x[:8], det.test.boxes[:8]) == (
        "f9f8148c6ba2d76d717a8bdcd4b7a459d642b3300af9a13d502113b51ced67b0"
    )
    assert torch.equal(det.train.x, a.train.x)  # both tasks share the images


def test_shapes_segmentation_masks() -> None:
    raw = load_dense("shapes-seg", None, 32)
    assert raw.task == "segmentation" and raw.classes == SHAPES_CLASSES
    for part, n in ((raw.train, 800), (raw.test, 200)):
        assert part.x.shape == (n, 3, 32, 32) and part.x.dtype == torch.uint8
        assert part.masks is not None and part.masks.shape == (n, 32, 32) and part.masks.dtype == torch.uint8
        assert part.boxes is None
        assert torch.equal(part.y, torch.zeros(n, dtype=torch.int64))
        assert int(part.masks.max()) < len(SHAPES_CLASSES)
        assert bool((part.masks.flatten(1) > 0).any(1).all())  # every image shows a shape
    assert set(torch.unique(raw.train.masks).tolist()) == {0, 1, 2, 3}  # type: ignore[arg-type]


def test_shapes_detection_boxes_are_tight_and_inside() -> None:
    size = 48
    det, seg = load_dense("shapes-det", None, size), load_dense("shapes-seg", None, size)
    assert det.task == "detection" and det.classes == SHAPES_CLASSES
    for part, masks in ((det.train, seg.train.masks), (det.test, seg.test.masks)):
        assert part.boxes is not None and masks is not None and part.masks is None
        boxes = part.boxes
        assert boxes.dtype == torch.float32 and boxes.dim() == 3 and boxes.shape[2] == 5
        assert 1 <= boxes.shape[1] <= 4
        labels = boxes[..., 0]
        valid = labels >= 0
        assert bool(valid[:, 0].all())  # at least one box an image (the topmost shape is whole)
        assert bool((valid[:, 1:] <= valid[:, :-1]).all())  # padding rows come last
        assert bool((labels[~valid] == -1).all())
        assert int(valid.sum(1).max()) == boxes.shape[1]  # K is the most boxes of any image
        rows = boxes[valid]
        assert bool(((rows[:, 0] >= 1) & (rows[:, 0] < len(SHAPES_CLASSES))).all())
        assert bool((rows[:, 1:] >= 0).all() and (rows[:, 1:] <= size).all())
        assert bool(((rows[:, 3] > rows[:, 1]) & (rows[:, 4] > rows[:, 2])).all())
        assert bool((rows[:, 1:] == rows[:, 1:].round()).all())  # whole pixels
        for i in range(0, len(part), 37):  # a tight box: its label's pixels touch all four edges
            for label, x1, y1, x2, y2 in boxes[i][valid[i]].long().tolist():
                inner = masks[i, y1:y2, x1:x2] == label
                assert bool(inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any())


def test_shapes_split_through_load_dataset() -> None:
    splits = load_dataset("shapes-seg", image_size=32, val_size=80)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (720, 80, 200)
    assert splits.task == "segmentation" and splits.num_classes == 4 and splits.flip
    assert splits.source == "embedded" and splits.describe()["task"] == "segmentation"
    assert splits.val.masks is not None and splits.val.masks.shape == (80, 32, 32)
    det = load_dataset("shapes-det", "/not/read", image_size=24, val_size=10, train_subset=50, seed=3)
    assert (len(det.train), len(det.val), len(det.test)) == (50, 10, 200)
    assert det.task == "detection" and det.val.boxes is not None and det.val.boxes.shape[0] == 10
    assert det.image_shape == (3, 24, 24)


def test_dense_names_are_datasets_and_refuse_the_disk_cache() -> None:
    assert set(DENSE_DATASETS) <= set(DATASETS)
    assert DENSE_DATASETS == {
        "shapes-seg": "segmentation", "shapes-det": "detection", "voc-seg": "segmentation", "coco": "detection"
    }  # fmt: skip
    _raises(lambda: load_dataset("shapes-seg", data_cache="disk"), "--data-cache")
    _raises(lambda: load_dataset("shapes-det", stored_size=64), "--stored-size")
    _raises(lambda: load_dense("mnist", None, 32), "--dataset", "voc-seg")
    _raises(lambda: load_dense("shapes-seg", None, 32, bad_images="ignore"), "--bad-images")
    assert DataConfig(dataset="coco", data_dir="/data/coco").dataset == "coco"
    with pytest.raises(ConfigError, match="shapes-seg, whose images are generated"):
        DataConfig(dataset="shapes-seg", data_dir="/x")


# ----------------------------------------------------------------------------------------------- VOC


def _jpeg(path: Path, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format="JPEG")


def _palette_png(path: Path, ids: np.ndarray) -> None:
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _voc_mask(w: int, h: int, label: int) -> np.ndarray:
    ids = np.zeros((h, w), dtype=np.uint8)
    ids[h // 4 : h // 2, w // 4 : w // 2] = label
    ids[0, :] = IGNORE_INDEX  # a void border row
    return ids


def make_voc(root: Path) -> Path:
    """A tiny VOC2012 tree: 2 train and 2 val images of different sizes with palette masks."""
    ids = {"train": ["2007_000001", "2007_000002"], "val": ["2008_000003", "2008_000004"]}
    sizes = [(40, 30), (24, 24), (50, 20), (16, 32)]
    for i, image_id in enumerate(ids["train"] + ids["val"]):
        w, h = sizes[i]
        _jpeg(root / "JPEGImages" / f"{image_id}.jpg", w, h, i)
        _palette_png(root / "SegmentationClass" / f"{image_id}.png", _voc_mask(w, h, [1, 15, 20, 7][i]))
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, names in ids.items():
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def test_voc_tree(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    raw = load_dense("voc-seg", tmp_path, 32)  # found under VOCdevkit/VOC2012
    assert raw.task == "segmentation" and raw.classes == VOC_CLASSES and len(VOC_CLASSES) == 21
    assert (len(raw.train), len(raw.test)) == (2, 2) and raw.skipped == 0
    assert raw.train.masks is not None and raw.test.masks is not None
    assert raw.train.x.shape == (2, 3, 32, 32) and raw.train.masks.shape == (2, 32, 32)
    for masks, labels in ((raw.train.masks, (1, 15)), (raw.test.masks, (20, 7))):
        for m, label in zip(masks, labels, strict=True):
            assert set(torch.unique(m).tolist()) == {0, label, IGNORE_INDEX}  # nearest: no blended ids
            assert bool((m[0] == IGNORE_INDEX).all())
    splits = load_dataset("voc-seg", root, image_size=32, val_size=1)
    assert splits.task == "segmentation" and (len(splits.train), len(splits.val), len(splits.test)) == (1, 1, 2)
    assert splits.source == str(root.resolve())
    assert load_dense("voc-seg", tmp_path / "VOCdevkit", 32).train.x.shape[0] == 2  # VOC2012/ under it


def test_voc_bad_input(tmp_path: Path) -> None:
    _raises(lambda: load_dense("voc-seg", None, 32), "--data-dir")
    _raises(lambda: load_dense("voc-seg", tmp_path / "absent", 32), "--data-dir", "does not exist")
    (tmp_path / "empty").mkdir()
    _raises(lambda: load_dense("voc-seg", tmp_path / "empty", 32), "--data-dir", "JPEGImages")

    def case(name: str, change: Callable[[Path], Any]) -> Path:
        root = make_voc(tmp_path / name)
        change(root)
        return root

    root = case("nomask", lambda r: (r / "SegmentationClass" / "2007_000002.png").unlink())
    _raises(lambda: load_dense("voc-seg", root, 32), "--data-dir", "2007_000002.png", "no mask")
    root = case("noimage", lambda r: (r / "JPEGImages" / "2008_000004.jpg").unlink())
    _raises(lambda: load_dense("voc-seg", root, 32), "--data-dir", "'2008_000004'", "val.txt")
    root = case("nolist", lambda r: (r / "ImageSets" / "Segmentation" / "val.txt").unlink())
    _raises(lambda: load_dense("voc-seg", root, 32), "--data-dir", "val.txt")
    big = _voc_mask(24, 24, 1)
    big[5, 5] = 30
    root = case("bigid", lambda r: _palette_png(r / "SegmentationClass" / "2007_000002.png", big))
    _raises(lambda: load_dense("voc-seg", root, 32), "--data-dir", "2007_000002.png", "30", "0-20")
    root = case("rgbmask", lambda r: Image.new("RGB", (24, 24)).save(r / "SegmentationClass" / "2007_000002.png"))
    _raises(lambda: load_dense("voc-seg", root, 32), "--data-dir", "palette")
    root = case("mismatch", lambda r: _palette_png(r / "SegmentationClass" / "2007_000002.png", _voc_mask(8, 8, 1)))
    _raises(lambda: load_dense("voc-seg", root, 32), "--data-dir", "8x8", "24x24")

    root = case("corrupt", lambda r: (r / "JPEGImages" / "2007_000001.jpg").write_bytes(b"not a jpeg"))
    _raises(lambda: load_dense("voc-seg", root, 32), "2007_000001.jpg", "--bad-images skip")
    raw = load_dense("voc-seg", root, 32, bad_images="skip")
    assert raw.skipped == 1 and (len(raw.train), len(raw.test)) == (1, 2)
    assert raw.train.masks is not None and raw.train.masks.shape == (1, 32, 32)


# ----------------------------------------------------------------------------------------------- COCO


def _coco_doc(images: list[dict[str, Any]], anns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "info": {},
        "images": images,
        "annotations": anns,
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }


def make_coco(root: Path, images_under: str = "") -> Path:
    """A tiny COCO tree: 3 train images (one without boxes), 1 val image; categories 3 (cat) and 7 (dog)."""
    train_imgs = [
        {"id": 10, "file_name": "a.jpg", "width": 40, "height": 20},
        {"id": 11, "file_name": "b.jpg", "width": 32, "height": 32},
        {"id": 12, "file_name": "c.jpg", "width": 16, "height": 16},
    ]
    train_anns = [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [4, 2, 8, 6], "iscrowd": 0, "area": 48},
        {"id": 2, "image_id": 10, "category_id": 7, "bbox": [20, 10, 20, 10], "iscrowd": 0, "area": 200},
        {"id": 3, "image_id": 10, "category_id": 7, "bbox": [0, 0, 40, 20], "iscrowd": 1, "area": 800},
        {"id": 4, "image_id": 11, "category_id": 7, "bbox": [0.5, 0.5, 31, 31.5]},
    ]
    val_imgs = [{"id": 1, "file_name": "d.jpg", "width": 20, "height": 40}]
    val_anns = [{"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10], "iscrowd": 0}]
    (root / "annotations").mkdir(parents=True)
    for split, imgs, anns in (("train", train_imgs, train_anns), ("val", val_imgs, val_anns)):
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(_coco_doc(imgs, anns)))
        for i, img in enumerate(imgs):
            _jpeg(root / images_under / f"{split}2017" / img["file_name"], img["width"], img["height"], i)
    return root


def _ann_file(root: Path, split: str = "train") -> Path:
    return root / "annotations" / f"instances_{split}2017.json"


def _edit(root: Path, fn: Callable[[dict[str, Any]], Any]) -> None:
    doc = json.loads(_ann_file(root).read_text())
    fn(doc)
    _ann_file(root).write_text(json.dumps(doc))


def test_coco_tree(tmp_path: Path) -> None:
    raw = load_dense("coco", make_coco(tmp_path / "coco"), 32)
    assert raw.task == "detection" and raw.classes == ("background", "cat", "dog")  # sorted by category id
    assert (len(raw.train), len(raw.test)) == (3, 1)
    assert raw.train.x.shape == (3, 3, 32, 32) and raw.train.masks is None
    boxes = raw.train.boxes
    assert boxes is not None and boxes.shape == (3, 2, 5)  # the crowd box is dropped
    # a.jpg is 40x20 -> 32x32: x scales by 0.8, y by 1.6.
    expected = torch.tensor([[1, 3.2, 3.2, 9.6, 12.8], [2, 16.0, 16.0, 32.0, 32.0]])
    assert torch.allclose(boxes[0], expected)
    assert torch.allclose(boxes[1, 0], torch.tensor([2, 0.5, 0.5, 31.5, 32.0]))
    assert bool((boxes[1, 1, 0] == -1).all() and (boxes[2, :, 0] == -1).all())  # padding; c.jpg has no boxes
    assert raw.test.boxes is not None and raw.test.boxes.shape == (1, 1, 5)
    assert torch.allclose(raw.test.boxes[0, 0], torch.tensor([1, 1.6, 0.8, 17.6, 8.8]))
    splits = load_dataset("coco", tmp_path / "coco", image_size=32, val_size=1)
    assert splits.task == "detection" and splits.num_classes == 3 and len(splits.val) == 1
    # Images under images/train2017/, and at file_name relative to the folder.
    assert len(load_dense("coco", make_coco(tmp_path / "nested", "images"), 16).train) == 3
    flat = make_coco(tmp_path / "flat")
    (flat / "train2017").rename(flat / "pictures")
    _edit(flat, lambda d: [img.update(file_name=f"pictures/{img['file_name']}") for img in d["images"]])
    assert len(load_dense("coco", flat, 16).train) == 3


def _bbox(ann_id: int, box: list[float]) -> Callable[[dict[str, Any]], Any]:
    return lambda d: next(a for a in d["annotations"] if a["id"] == ann_id).update(bbox=box)


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda p: p.write_text("{not json"), ("not valid JSON",)),
        (lambda p: p.write_text("[]"), ("not a JSON object",)),
        (lambda p: p.write_text(json.dumps({"images": [], "annotations": []})), ("'categories'",)),
        (lambda p: p.write_text(json.dumps({"images": {}, "annotations": [], "categories": []})), ("'images'", "list")),
    ],
)
def test_coco_malformed_annotation_files(tmp_path: Path, edit: Callable[[Path], Any], needles: tuple[str, ...]) -> None:
    root = make_coco(tmp_path / "coco")
    edit(_ann_file(root))
    _raises(lambda: load_dense("coco", root, 32), "--data-dir", "instances_train2017.json", *needles)


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (_bbox(1, [30, 2, 12, 6]), ("annotation 1", "a.jpg", "outside", "40x20")),
        (_bbox(1, [-1.5, 2, 8, 6]), ("annotation 1", "a.jpg", "outside")),
        (_bbox(2, [20, 10, 0, 10]), ("annotation 2", "a.jpg", "w or h <= 0")),
        (_bbox(2, [20, 10, 5, -1]), ("annotation 2", "a.jpg", "w or h <= 0")),
        (_bbox(2, [20, 10, 5]), ("annotation 2", "bbox")),
        (
            lambda d: d["annotations"][0].update(category_id=99),
            ("annotation 1", "a.jpg", "category id 99", "'categories'"),
        ),
        (lambda d: d["annotations"][0].update(image_id=55), ("annotation 1", "image id 55")),
        (lambda d: d["images"][0].update(file_name="missing.jpg"), ("image id 10", "'missing.jpg'")),
        (lambda d: d["images"].append(dict(d["images"][0])), ("image id 10 twice",)),
        (lambda d: d["categories"].append({"id": 9, "name": "bird"}), ("categories", "differ", "9: bird")),
        (lambda d: d["categories"][0].pop("name"), ("categories[0]",)),
    ],
)
def test_coco_bad_annotations(tmp_path: Path, edit: Callable[[dict[str, Any]], Any], needles: tuple[str, ...]) -> None:
    root = make_coco(tmp_path / "coco")
    _edit(root, edit)
    _raises(lambda: load_dense("coco", root, 32), "--data-dir", *needles)


def test_coco_box_within_tolerance_is_clipped(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco")
    _edit(root, _bbox(1, [-0.5, 2, 40.5, 18.5]))  # half a pixel past the left, right and bottom edges
    boxes = load_dense("coco", root, 32).train.boxes
    assert boxes is not None and torch.allclose(boxes[0, 0], torch.tensor([1, 0.0, 3.2, 32.0, 32.0]))


def test_coco_layout_and_unreadable_images(tmp_path: Path) -> None:
    _raises(lambda: load_dense("coco", tmp_path, 32), "--data-dir", "annotations/")
    root = make_coco(tmp_path / "coco")
    _ann_file(root, "val").unlink()
    _raises(lambda: load_dense("coco", root, 32), "--data-dir", "instances_val*.json")
    root = make_coco(tmp_path / "two")
    (root / "annotations" / "instances_train2014.json").write_text(_ann_file(root).read_text())
    _raises(lambda: load_dense("coco", root, 32), "--data-dir", "several")
    root = make_coco(tmp_path / "bad")
    (root / "train2017" / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    _raises(lambda: load_dense("coco", root, 32), "b.jpg", "--bad-images skip")
    raw = load_dense("coco", root, 32, bad_images="skip")
    assert raw.skipped == 1 and len(raw.train) == 2 and raw.train.boxes is not None
    assert raw.train.boxes.shape == (2, 2, 5)
    assert load_dataset("coco", root, image_size=32, val_size=1, bad_images="skip").skipped == 1
