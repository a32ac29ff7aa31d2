"""What an export records about itself: the sidecar model.json (genotype, cost, accuracy, recipe, data,
input and output, export method and graph facts, parity, sparsity, latency, file hash, versions, source) and
the sparsity report of a masked model's weights, checked against the zeros in the ONNX file.
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunenas import __version__
from prunenas.cost import genotype_cost
from prunenas.export.common import BATCH_DIM, INPUT_NAME, ONNX_FILE, OUTPUT_NAME, SIDECAR_FORMAT, ExportError
from prunenas.export.run import TrainedRun
from prunenas.masks import prunable_layers, weight_of
from prunenas.tasks import CLASSIFICATION, get_task

_SPARSITY_NOTE = (
    "The zeros are stored as ordinary dense weights: ONNX Runtime runs these layers as dense convolutions, "
    "so unstructured sparsity gives no speed-up and no smaller file (it compresses well, e.g. with gzip). "
    "The MACs figure is the density-weighted count of the genotype."
)
_NORMALIZATION = "x = (pixels / 255 - mean) / std per channel; pixels are uint8 RGB, layout NCHW"


def _onnx_weight_zeros(path: Path) -> dict[str, int]:
    """Exact zeros in each weight-like (rank >= 2, float) initializer of an ONNX file, by name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    out: dict[str, int] = {}
    for init in model.graph.initializer:
        if len(init.dims) >= 2 and init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            out[init.name] = int(np.count_nonzero(numpy_helper.to_array(init) == 0))
    return out


def _sparsity(run: TrainedRun, folded: nn.Module, onnx_path: Path) -> dict[str, Any]:
    """Per-layer and overall zeros of the exported weights (PyTorch side), checked against the ONNX file."""
    onnx_zeros = _onnx_weight_zeros(onnx_path)
    layers: dict[str, Any] = {}
    total = zeros = 0
    for name, module in prunable_layers(folded):
        w = weight_of(module).detach()
        n, z = int(w.numel()), int((w == 0).sum())
        total, zeros = total + n, zeros + z
        entry: dict[str, Any] = {
            "shape": list(w.shape),
            "weights": n,
            "zeros": z,
            "sparsity": z / n,
            "density": 1 - z / n,
            "genotype_density": float(run.genotype.genes.get(name, 1.0)),
        }
        in_onnx = onnx_zeros.get(f"{name}.weight")
        if in_onnx is not None:
            entry["zeros_in_onnx"] = in_onnx
            # BN folded into a conv scales whole output channels, so zeros can only be gained.
            if in_onnx < z:
                raise ExportError(
                    f"layer {name}: the ONNX file has {in_onnx} zero weights, the model {z}; the masks were lost"
                )
        layers[name] = entry
    onnx_total = sum(onnx_zeros.values())
    if onnx_total < zeros:
        raise ExportError(f"the ONNX file holds {onnx_total} zero weights, the masked model {zeros}; masks were lost")
    return {
        "overall": {"weights": total, "zeros": zeros, "sparsity": zeros / total, "density": 1 - zeros / total},
        "layers": layers,
        "zeros_in_onnx": onnx_total,
        "note": _SPARSITY_NOTE,
    }


def _versions() -> dict[str, str | None]:
    def dist(*names: str) -> str | None:
        for n in names:
            with contextlib.suppress(metadata.PackageNotFoundError):
                return f"{n} {metadata.version(n)}"
        return None

    import onnx
    import onnxruntime as ort

    return {
        "prunenas": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_package": dist("onnxruntime-gpu", "onnxruntime"),
        "onnxscript": dist("onnxscript"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(
    run: TrainedRun,
    name: str,
    method: Mapping[str, Any],
    graph: Mapping[str, Any],
    parity: Mapping[str, Any],
    sparsity: Mapping[str, Any] | None,
    latency: Mapping[str, Any] | None,
    onnx_path: Path,
) -> dict[str, Any]:

    cost = genotype_cost(run.space, run.genotype, num_classes=run.num_classes)
    m = run.metrics
    rs, ds = m.get("run_settings"), m.get("dataset")
    run_settings: Mapping[str, Any] = rs if isinstance(rs, Mapping) else {}
    amp = run.used_cuda and run_settings.get("amp") is not False
    dataset: Mapping[str, Any] = ds if isinstance(ds, Mapping) else {}
    settings = m.get("recipe_settings")
    recipe = (
        dict(settings) if isinstance(settings, Mapping) else {"name": str(m.get("recipe"))} if m.get("recipe") else None
    )
    c, h, w = run.input_shape
    task = get_task(run.space.task)
    return {
        "format": SIDECAR_FORMAT,
        "name": name,
        "key": run.genotype.key,
        "space": run.space.name,
        "space_family": run.space.family,
        "space_kind": run.space.kind,
        "genotype": run.genotype.to_dict(),
        "macs": cost.macs,
        "params": cost.params,
        "cost": {
            **cost.to_dict(),
            "convention": "conv+linear multiply-accumulates at batch 1 (density genotypes: weighted by density); "
            "params: parameters (density genotypes: kept weights)",
        },
        "accuracy": {
            "val_acc": m.get("val_acc"),
            "best_val_acc": m.get("best_val_acc"),
            "test_acc": m.get("test_acc"),
            "test_acc_precision": "bf16 autocast (CUDA)" if amp else "fp32",
            "epochs": m.get("epochs"),
            "epochs_run": m.get("epochs_run"),
            "finished": m.get("finished"),
            "stopped": m.get("stopped"),
        },
        "recipe": recipe,
        "seed": m.get("seed"),
        "dataset": {
            "name": dataset.get("name"),
            "source": dataset.get("source"),
            "sizes": dataset.get("sizes"),
            "image_shape": dataset.get("image_shape"),
            "stored_size": dataset.get("stored_size"),
        },
        "classes": list(run.classes),
        "input": {
            "name": INPUT_NAME,
            "shape": [BATCH_DIM if task.dynamic_batch else 1, c, h, w],
            "dtype": "float32",
            "layout": "NCHW",
            "mean": list(run.mean),
            "std": list(run.std),
            "normalization": _NORMALIZATION,
        },
        **_outputs(run),
        "export": {
            "method": method["exporter"],
            "fallback_reason": method["fallback_reason"],
            "seconds": round(float(method["seconds"]), 3),
            "masks_folded": run.space.folds_masks,
            **graph,
        },
        "opset": graph["opset"],
        "parity": dict(parity),
        "sparsity": dict(sparsity) if sparsity is not None else None,
        "latency": dict(latency) if latency is not None else None,
        "files": {"onnx": ONNX_FILE, "bytes": onnx_path.stat().st_size, "sha256": _sha256(onnx_path)},
        "versions": _versions(),
        "source": {
            "run_dir": str(run.run_dir.resolve()),
            "checkpoint_epoch": run.checkpoint_epoch,
            "run_key": run.run_key,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _outputs(run: TrainedRun) -> dict[str, Any]:
    """model.json's description of the graph's outputs: "output" (a classifier's one), else "task" and "outputs"."""
    task = get_task(run.space.task)
    docs = task.output_doc(run.num_classes, BATCH_DIM)
    if task.name == CLASSIFICATION:
        assert docs[0]["name"] == OUTPUT_NAME
        return {"output": docs[0]}
    return {"task": task.name, "score": task.metric, "outputs": docs}
