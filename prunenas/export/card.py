"""The model card (README.md) of an export, written from its sidecar."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prunenas.report import human
from prunenas.tasks import CLASSIFICATION, get_task


def _pct(v: object) -> str:
    return f"{100 * float(v):.2f}%" if isinstance(v, int | float) and math.isfinite(v) else "-"


_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CIFAR_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_CIFAR_CITE = (
    "A. Krizhevsky, *Learning Multiple Layers of Features from Tiny Images*, technical report, University of "
    "Toronto, 2009"
)


def _size(shape: object) -> str:
    """`32x32` from an image shape [C, H, W] (or a [batch, C, H, W] input shape); "?" when unknown."""
    if isinstance(shape, list | tuple) and len(shape) >= 2 and all(isinstance(v, int) for v in shape[-2:]):
        return f"{shape[-2]}x{shape[-1]}"
    return "?"


def _jpeg_copy(source: str) -> str | None:
    """The file name when the dataset's source names a JPEG re-encoding (e.g. `cifar10-jpeg.tar.gz`)."""
    name = source.replace("\\", "/").split(":")[0].rsplit("/", 1)[-1]
    return name if "jpeg" in name.lower() or "jpg" in name.lower() else None


def data_section(sidecar: Mapping[str, Any]) -> list[str]:
    """How the images were prepared, where they came from and under which licence: from what the
    sidecar's `dataset` records; what is not known is said to be unknown, never guessed."""
    ds: Mapping[str, Any] = sidecar.get("dataset") or {}
    name = str(ds.get("name") or "unknown")
    source = str(ds.get("source") or "")
    shape = ds.get("image_shape") or (sidecar.get("input") or {}).get("shape")
    size = _size(shape)
    sizes = ds.get("sizes") if isinstance(ds.get("sizes"), Mapping) else None
    split = (
        f"{sizes.get('train', '?'):,} training / {sizes.get('val', '?'):,} validation / {sizes.get('test', '?'):,} "
        "test images"
        if sizes and all(isinstance(sizes.get(k), int) for k in ("train", "val", "test"))
        else "split sizes not recorded"
    )
    lines = ["## Data", ""]
    if name == "digits":
        lines += [
            "- Images: the 8x8 scikit-learn digits (UCI Optical Recognition of Handwritten Digits, 1,797 images, "
            "classes 0-9), grey levels rescaled from 0..16 to 0..255, "
            + ("" if size == "8x8" else f"upscaled (bilinear) to {size}, ")
            + "three equal channels; embedded in prunenas (`prunenas/_data/digits.npz`).",
            f"- Split: {split} (a fixed 20% test set; validation is a seeded part of the rest).",
            "- Licence: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); origin E. Alpaydin and C. Kaynak, "
            "UCI Machine Learning Repository, https://doi.org/10.24432/C50P49.",
        ]
    elif name in _CIFAR_NAMES:
        title = _CIFAR_NAMES[name]
        jpeg = _jpeg_copy(source)
        if jpeg is not None:
            quality = (
                "JPEG quality 75 (the copy the prunenas README describes)"
                if jpeg.lower().startswith(f"{name}-jpeg")
                else "JPEG quality not recorded"
            )
            how = (
                f"a JPEG re-encoding of {title} (`{source}`; {quality}), decoded to {size} RGB. Such a copy trains a "
                f'little below the published figures: report the dataset as "{title} (JPEG q75 copy)" or the like, '
                "and compare against a baseline trained on the same copy"
            )
        else:
            where = f" (`{source}`)" if source else ""
            how = f"{title}{where}, 32x32 RGB" + ("" if size in ("32x32", "?") else f", resized (bilinear) to {size}")
        lines += [
            f"- Images: {how}.",
            f"- Split: {split} (validation: a seeded part of the training set; test: the dataset's test set).",
            f"- Licence: none stated by the authors (Krizhevsky, Nair and Hinton; a labelled subset of the 80 million "
            f"tiny images). The dataset's page, {_CIFAR_PAGE}, asks its users to cite {_CIFAR_CITE}.",
        ]
    else:
        where = f" from `{source}`" if source else ""
        lines += [
            f"- Images: {name}{where}, decoded to {size} RGB (resized bilinearly where the files differ).",
            f"- Split: {split}.",
            "- Licence: not recorded by prunenas; it is that of the data's owner.",
        ]
    return lines


_INTENDED_USE = [
    "## Intended use",
    "",
    "Research on network pruning and architecture search: comparing pruned architectures by accuracy, MACs "
    "and parameters. The model is not validated for deployment decisions: test it on your own data (and its "
    "failure modes) before relying on it. The test accuracy above was measured on the test split described "
    "under Data, and on nothing else.",
]


def _precision_rows(precision: str, e: Mapping[str, Any]) -> list[str]:
    """Table rows for a lower-precision copy: its file, accuracy against FP32, agreement and latencies."""
    lat = e.get("latency") or {}
    times = ", ".join(
        f"batch {b}: {lat['fp32'][b]['median_ms']:.3g} ms FP32, {v['median_ms']:.3g} ms {precision.upper()} "
        f"({lat['speedup'][b]:.2f}x)"
        for b, v in (lat.get(precision) or {}).items()
    )
    how = e.get("quantization") or {}
    made = (
        f"static QDQ ({how.get('weights')}, {how.get('activations')}; {e['calibration']['images']} calibration "
        f"images, seed {e['calibration']['seed']})"
        if how
        else str(e.get("conversion", ""))
    )
    return [
        f"| {precision.upper()} model | `{e['file']}`: {made} |",
        f"| {precision.upper()} test accuracy ({e['runtime']}) | {_pct(e['test_acc'])} vs FP32 "
        f"{_pct(e['fp32_test_acc'])} (drop {e['drop_points']:.2f} points) on {e['test_images']} {e['dataset']} test "
        "images |",
        f"| {precision.upper()} vs FP32 | top-1 agreement {_pct(e['top1_agreement'])}, largest logit difference "
        f"{e['max_abs_logit_diff']:.3g} (logits up to {e['max_abs_logit']:.3g}) |",
        f"| {precision.upper()} latency (median, {e['runtime']}) | {times} |",
    ]


#: The last lines of the card's example, per task (after x, the normalized input, is made).
_USE = {
    CLASSIFICATION: ["pred = sess.run(None, {'input': x})[0].argmax(1)", "print([meta['classes'][i] for i in pred])"],
    "segmentation": ["masks = sess.run(None, {'input': x})[0].argmax(1)  # (N, H, W) class ids",
                     "print([meta['classes'][i] for i in np.unique(masks)])"],
    "detection": ["boxes, labels, scores = sess.run(None, {'input': x[:1]})  # one image per call",
                  "print([(meta['classes'][c], s) for c, s in zip(labels, scores) if s > 0.5])"],
}  # fmt: skip


def model_card(sidecar: Mapping[str, Any]) -> str:
    """A short Markdown model card from a sidecar dict."""

    acc = sidecar["accuracy"]
    task = get_task(str(sidecar.get("task", CLASSIFICATION)))
    score = task.metric_label
    docs = sidecar["outputs"] if "outputs" in sidecar else [sidecar["output"]]
    outputs = [f"Output `{o['name']}`: `{o['shape']}` {o['dtype']}: {o['meaning']}." for o in docs]
    use = _USE.get(task.name, _USE[CLASSIFICATION])
    inp = sidecar["input"]
    parity = sidecar["parity"]
    exp = sidecar["export"]
    lines = [
        f"# {sidecar['space']} / {sidecar['name']}",
        "",
        f"Genotype `{sidecar['key']}` of space `{sidecar['space']}` "
        f"({sidecar['space_family']}, {sidecar['space_kind']}), trained from scratch with prunenas on "
        f"{sidecar['dataset']['name']} (recipe "
        f"`{(sidecar.get('recipe') or {}).get('name', 'unknown')}`, seed {sidecar.get('seed')}).",
        "",
        "| | |",
        "|---|---|",
        f"| MACs (batch 1) | {human(sidecar['macs'])} ({sidecar['cost']['macs_ratio']:.3f} of the reference) |",
        f"| parameters | {human(sidecar['params'])} ({sidecar['cost']['params_ratio']:.3f} of the reference) |",
        f"| validation {score} | {_pct(acc.get('val_acc'))} |",
        f"| test {score} (PyTorch, {acc.get('test_acc_precision')}) | {_pct(acc.get('test_acc'))} |",
        f"| classes | {len(sidecar['classes'])}: {', '.join(sidecar['classes'][:10])}"
        f"{' ...' if len(sidecar['classes']) > 10 else ''} |",
        f"| exporter | {exp['method']} (opset {sidecar['opset']})"
        f"{'; dynamo failed: ' + str(exp['fallback_reason']) if exp['fallback_reason'] else ''} |",
        f"| parity vs PyTorch | max abs logit difference {parity['max_abs_diff']:.2e} < {parity['tolerance']:g} "
        f"on {', '.join(c['input'] for c in parity['checks'])} ({parity['provider']}) |",
    ]
    if sidecar.get("sparsity"):
        overall = sidecar["sparsity"]["overall"]
        lines.append(f"| weight sparsity | {100 * overall['sparsity']:.1f}% of conv/linear weights are zero |")
    if sidecar.get("latency"):
        lat = sidecar["latency"]
        per = ", ".join(f"batch {b}: {v['median_ms']:.2f} ms" for b, v in lat["per_batch"].items())
        threads = lat["intra_op_threads"] or f"default ({lat['cpu_count']} CPUs)"
        where = f", {lat['machine']}" if lat.get("machine") else ""
        lines.append(f"| ONNX Runtime latency (median) | {per} ({lat['provider']}, threads: {threads}{where}) |")
    for precision, entry in (sidecar.get("precisions") or {}).items():
        lines += _precision_rows(precision, entry)
    for engine, e in (sidecar.get("engines") or {}).items():
        lines.append(
            f"| {engine} engine | `{e['file']}` from `{e['from']}` ({e['precision']}, batch "
            f"1-{e['batch_profile']['max']}; TensorRT {e['tensorrt']}, {e['gpu']}: runs on that GPU and version only) |"
        )
    lines += [
        "",
        "## Input",
        "",
        f"`{inp['name']}`: float32 `{inp['shape']}` (NCHW). {inp['normalization']}, with",
        f"mean = {[round(v, 6) for v in inp['mean']]} and std = {[round(v, 6) for v in inp['std']]}.",
        *outputs,
        "",
        "## Use",
        "",
        "```python",
        "import json, numpy as np, onnxruntime as ort",
        "meta = json.load(open('model.json'))",
        "sess = ort.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
        "mean = np.array(meta['input']['mean'], np.float32).reshape(1, 3, 1, 1)",
        "std = np.array(meta['input']['std'], np.float32).reshape(1, 3, 1, 1)",
        "# images: uint8 array (N, 3, H, W), RGB",
        "x = ((images.astype(np.float32) / 255 - mean) / std).astype(np.float32)",
        *use,
        "```",
        "",
        f"Check the {score} on the test set: `prunenas evaluate model.onnx --dataset {sidecar['dataset']['name']}`.",
        "",
        *data_section(sidecar),
        "",
        *_INTENDED_USE,
    ]
    if sidecar.get("sparsity"):
        lines += ["", "## Sparsity", "", sidecar["sparsity"]["note"]]
    lines += ["", f"Exported by prunenas {sidecar['versions']['prunenas']} with torch {sidecar['versions']['torch']}."]
    return "\n".join(lines) + "\n"
