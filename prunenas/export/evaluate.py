"""Test accuracy of an exported model through ONNX Runtime.

`evaluate_onnx(path, dataset)` needs no CLI and no PyTorch model: the input normalization comes from
the model.json beside the .onnx file (`load_sidecar`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunenas.config import DataConfig
from prunenas.data import center_crop, load_dataset
from prunenas.engines import make_engine
from prunenas.errors import PrunenasError
from prunenas.export.common import ONNX_FILE, SIDECAR, _read_json, _three_floats, stored_like
from prunenas.export.precision import engine_provider, runtime_flags
from prunenas.export.runtime import make_session, normalize_images
from prunenas.tasks import CLASSIFICATION, get_task

_WANTED = "`prunenas evaluate` takes the model.onnx that `prunenas export RUN_DIR` writes"


def _onnx_file(path: str | Path) -> Path:
    """The ONNX file of MODEL_ONNX (a file, or an export folder holding model.onnx); anything else that prunenas
    writes (a genotype, a model.json, a run folder, a checkpoint) is refused as what it is, with the way to an
    ONNX model."""
    p = Path(path)
    if p.is_dir():
        if (p / ONNX_FILE).is_file():
            return p / ONNX_FILE
        if (p / "checkpoint.pt").is_file():
            raise PrunenasError(
                f"{str(p)!r} is a run folder, not an exported model; {_WANTED}: run `prunenas export {p}`, then "
                f"evaluate the model.onnx it writes"
            )
        raise PrunenasError(f"{str(p)!r} is a folder without {ONNX_FILE}; {_WANTED}")
    if not p.exists():
        raise PrunenasError(f"ONNX file {str(p)!r} does not exist; {_WANTED}")
    what, fix = _not_onnx(p)
    if what:
        raise PrunenasError(f"{str(p)!r} is {what}, not an ONNX model; {_WANTED}{fix}")
    return p


def _not_onnx(p: Path) -> tuple[str, str]:
    """(what a file that prunenas knows is, when it is not an ONNX model, the way from it to one); ("", "") when
    it may be one (ONNX Runtime then judges it)."""
    try:
        with p.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return "", ""  # reported as unreadable where it is opened
    if head.startswith(b"PK"):
        return "a PyTorch checkpoint (a zip archive)", ": export its run folder with `prunenas export RUN_DIR` first"
    if p.suffix.lower() == ".toml":
        return "a space definition (TOML)", ""
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "", ""
    if isinstance(data, Mapping) and "genes" in data and "space" in data:
        return (
            f"a genotype JSON (an architecture of space {data['space']!r}, without weights)",
            f": train it (`prunenas train {p}`), export the run folder (`prunenas export RUN_DIR`), then evaluate "
            "the model.onnx that writes",
        )
    if isinstance(data, Mapping) and ("export" in data or "input" in data):
        beside = p.parent / ONNX_FILE
        return "the model.json that `prunenas export` writes beside model.onnx", (
            f": pass {str(beside)!r}" if beside.is_file() else ""
        )
    return "a JSON file", ""


def _graph_shapes(path: Path) -> tuple[list[int | str], list[int | str]]:
    """The input's and the first output's dims of an ONNX file (names for dynamic ones), read without running it."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise PrunenasError(
            f"{str(path)!r} is not a valid ONNX model ({type(exc).__name__}); export it again with `prunenas export "
            "RUN_DIR`"
        ) from None

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param or int(d.dim_value) for d in value.type.tensor_type.shape.dim]

    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    return (dims(inputs[0]) if inputs else []), (dims(graph.output[0]) if graph.output else [])


def load_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The model.json of an exported ONNX file: `<stem>.json` next to it, else `model.json` in its folder."""
    p = Path(onnx_path)
    fix = "export the model again with `prunenas export RUN_DIR`"
    for candidate in (p.with_suffix(".json"), p.parent / SIDECAR):
        if candidate.is_file():
            sidecar = _read_json(candidate, "model.json", fix)
            inp = sidecar.get("input")
            mean = _three_floats(inp.get("mean")) if isinstance(inp, Mapping) else None
            std = _three_floats(inp.get("std")) if isinstance(inp, Mapping) else None
            if mean is None or std is None or min(std) <= 0:
                raise PrunenasError(
                    f"{str(candidate)!r} (beside {str(p)!r}) has no usable input.mean/std, the input normalization "
                    f"of the exported model; {fix}"
                )
            return sidecar
    raise PrunenasError(
        f"no sidecar {SIDECAR} next to {str(p)!r} (it holds the input normalization); keep the model.json that "
        "`prunenas export` wrote beside the .onnx file"
    )


def evaluate_onnx(
    onnx_path: str | Path,
    dataset: str | None = None,
    data_dir: str | None = None,
    *,
    provider: str | None = None,
    batch_size: int = 256,
    runtime: str = "onnxruntime",
) -> dict[str, Any]:
    """Accuracy of an exported model on a dataset's test split, run with ONNX Runtime (`provider` auto, cpu or
    cuda), or `runtime` openvino or tensorrt. A model.<precision>.onnx that the sidecar lists runs at that precision.

    Inputs are normalized with the mean/std of the model.json beside it; `dataset` defaults to the one the
    model was trained on. The result includes model.json's PyTorch test accuracy when the datasets match.
    """

    path = _onnx_file(onnx_path)
    sidecar = load_sidecar(path)
    precision = next(
        (
            p
            for p, e in (sidecar.get("precisions") or {}).items()
            if isinstance(e, Mapping) and e.get("file") == path.name
        ),
        "fp32",
    )
    target = engine_provider(runtime, provider)
    task = get_task(str(sidecar.get("task", CLASSIFICATION)))
    if task.name != CLASSIFICATION and runtime != "onnxruntime":
        raise PrunenasError(
            f"--runtime {runtime} evaluates classifiers; {str(path)!r} is a {task.name} model: drop --runtime"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PrunenasError(f"batch size must be a positive integer, got {batch_size!r}; pass e.g. --batch-size 256")
    ds = sidecar.get("dataset")
    trained_on = ds.get("name") if isinstance(ds, Mapping) else None
    name = dataset or trained_on
    if not name:
        raise PrunenasError(f"the model.json of {str(path)!r} names no dataset; pass --dataset")
    if data_dir:  # a --data-dir that cannot apply (the embedded digits) is refused, as by every command
        DataConfig(dataset=name.lower() if isinstance(name, str) else name, data_dir=data_dir)
    if runtime == "onnxruntime":
        session = make_session(path, provider)
        used = session.get_providers()[0]
        input_name = session.get_inputs()[0].name

        def run_all(x: np.ndarray) -> list[np.ndarray]:
            return [np.asarray(o) for o in session.run(None, {input_name: x})]

        def run(x: np.ndarray) -> np.ndarray:
            return run_all(x)[0]

    else:
        engine = make_engine(path, target, precision=precision, spell=runtime_flags)
        used, run = engine.name, engine.run
    dims, outputs = _graph_shapes(path)
    folder = data_dir or os.environ.get("PRUNENAS_DATA") or None
    source = ds.get("source") if isinstance(ds, Mapping) and name == trained_on else None
    if folder is None and isinstance(source, str) and source != "embedded" and Path(source).exists():
        folder = source  # the data the model was trained on, where model.json says it is
    shape = [int(d) for d in dims[1:] if isinstance(d, int)]
    if len(shape) != 3:
        raise PrunenasError(f"{str(path)!r} takes input {dims}; expected [batch, 3, H, W] images")
    stored = stored_like(ds, shape[1]) if name == trained_on else {}
    data = load_dataset(name, folder, image_size=shape[1], **stored)
    test = data.test
    if list(data.image_shape) != shape:
        raise PrunenasError(
            f"{name} images are {list(data.image_shape)} but {str(path)!r} takes {shape}; pass a matching --dataset"
        )
    if data.task != task.name:
        raise PrunenasError(
            f"{str(path)!r} is a {task.name} model but --dataset {name} is a {data.task} dataset; pass the dataset it "
            f"was trained on (--dataset {trained_on})"
        )
    n_out = outputs[1 if task.name == "segmentation" else -1] if len(outputs) > 1 else None
    n_out = n_out if isinstance(n_out, int) and task.name != "detection" else None
    if n_out is not None and n_out != data.num_classes:
        raise PrunenasError(
            f"{str(path)!r} predicts {n_out} classes but {name} has {data.num_classes}; pass the dataset it was "
            f"trained on (--dataset {trained_on})"
        )
    mean, std = sidecar["input"]["mean"], sidecar["input"]["std"]
    correct = 0
    t0 = time.perf_counter()
    labels = test.labels
    if task.name != CLASSIFICATION:  # every output of every batch, scored as the task scores them
        step = batch_size if task.dynamic_batch else 1
        outs = [
            run_all(normalize_images(test.images(torch.arange(i, min(i + step, len(test)))), mean, std))
            for i in range(0, len(test), step)
        ]
        accuracy = task.score_outputs(outs, test, data.num_classes)
    for start in range(0, len(test) if task.name == CLASSIFICATION else 0, batch_size):
        images = test.images(torch.arange(start, min(start + batch_size, len(test))))
        x = normalize_images(center_crop(images, shape[-1]), mean, std)
        logits = run(x)
        correct += int((logits.argmax(1) == labels[start : start + batch_size].numpy()).sum())
    seconds = time.perf_counter() - t0
    n = len(test)
    if task.name == CLASSIFICATION:
        accuracy = correct / n if n else math.nan
    found = sidecar.get("accuracy")
    acc: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    torch_acc = acc.get("test_acc") if name == trained_on else None
    return {
        "onnx": str(path),
        "dataset": name,
        "trained_on": trained_on,
        "images": n,
        "correct": correct,
        "accuracy": accuracy,
        "torch_test_acc": torch_acc,
        "torch_test_acc_precision": acc.get("test_acc_precision") if torch_acc is not None else None,
        "difference": accuracy - float(torch_acc) if isinstance(torch_acc, int | float) else None,
        **({"task": task.name, "score": task.metric} if task.name != CLASSIFICATION else {}),
        "runtime": {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "ONNX Runtime"}[runtime],
        "provider": used,
        "precision": precision,
        "seconds": seconds,
        "images_per_s": n / seconds if seconds > 0 else math.inf,
    }
