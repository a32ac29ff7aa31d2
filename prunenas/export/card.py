"""The model card (README.md) of an export, written from its sidecar."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _pct(v: object) -> str:
    return f"{100 * float(v):.2f}%" if isinstance(v, int | float) and math.isfinite(v) else "-"


def model_card(sidecar: Mapping[str, Any]) -> str:
    """A short Markdown model card from a sidecar dict."""
    from prunenas.report import human

    acc = sidecar["accuracy"]
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
        f"| validation accuracy | {_pct(acc.get('val_acc'))} |",
        f"| test accuracy (PyTorch, {acc.get('test_acc_precision')}) | {_pct(acc.get('test_acc'))} |",
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
        lines.append(f"| ONNX Runtime latency (median) | {per} ({lat['provider']}, threads: {threads}) |")
    lines += [
        "",
        "## Input",
        "",
        f"`{inp['name']}`: float32 `{inp['shape']}` (NCHW). {inp['normalization']}, with",
        f"mean = {[round(v, 6) for v in inp['mean']]} and std = {[round(v, 6) for v in inp['std']]}.",
        f"Output `{sidecar['output']['name']}`: `{sidecar['output']['shape']}` unnormalized class scores.",
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
        "pred = sess.run(None, {'input': x})[0].argmax(1)",
        "print([meta['classes'][i] for i in pred])",
        "```",
        "",
        f"Check the accuracy on the test set: `prunenas evaluate model.onnx --dataset {sidecar['dataset']['name']}`.",
    ]
    if sidecar.get("sparsity"):
        lines += ["", "## Sparsity", "", sidecar["sparsity"]["note"]]
    lines += ["", f"Exported by prunenas {sidecar['versions']['prunenas']} with torch {sidecar['versions']['torch']}."]
    return "\n".join(lines) + "\n"
