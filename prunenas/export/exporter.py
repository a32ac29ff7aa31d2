"""ONNX export of a trained run, verified before anything is kept.

`export_run(RUN_DIR)` rebuilds the run's model from genotype.json + checkpoint.pt, exports it with the
dynamo exporter (`torch.onnx.export(dynamo=True)`, one self-contained file, dynamic batch axis) and
falls back to the legacy TorchScript exporter only when dynamo fails (the reason is logged and
stored). The file must pass `onnx.checker` (full check) and the parity check (`prunenas.export.parity`).
Everything is written into a staging folder first and moved into place only after all checks pass, so a
failed export leaves nothing behind (and never clobbers a previous good export).

The model exported is `space.export_model(model)`: spaces with masked weights (density genotypes)
multiply their masks into the weights and remove the mask buffers, so the zeros live in the weights and
no mask appears in the graph; the measured sparsity is recorded. ONNX Runtime runs such layers as
dense convolutions: unstructured zeros give no speed-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunenas import __version__
from prunenas.errors import PrunenasError
from prunenas.export.card import model_card
from prunenas.export.common import (
    BATCH_DIM,
    CARD,
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    SIDECAR,
    SIDECAR_FORMAT,
    ExportError,
)
from prunenas.export.parity import (
    PARITY_BATCHES,
    PARITY_TOLERANCE,
    REAL_PARITY_IMAGES,
    _random_inputs,
    _real_inputs,
    check_parity,
)
from prunenas.export.run import TrainedRun, load_run
from prunenas.export.runtime import _check_latency_args, onnx_latency, resolve_providers
from prunenas.masks import prunable_layers, weight_of
from prunenas.paths import why

log = logging.getLogger(__name__)

_EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1, so the example batch must be >= 2
DEFAULT_OPSET = 18  # what both exporters write unless told otherwise (`prunenas export --opset N`)
MIN_OPSET = 13

_SPARSITY_NOTE = (
    "The zeros are stored as ordinary dense weights: ONNX Runtime runs these layers as dense convolutions, "
    "so unstructured sparsity gives no speed-up and no smaller file (it compresses well, e.g. with gzip). "
    "The MACs figure is the density-weighted count of the genotype."
)
_NORMALIZATION = "x = (pixels / 255 - mean) / std per channel; pixels are uint8 RGB, layout NCHW"


def max_opset() -> int:
    """The newest ONNX opset this torch exports (and the installed onnx knows)."""
    import onnx

    try:
        from torch.onnx._constants import ONNX_MAX_OPSET

        newest = int(ONNX_MAX_OPSET)
    except (ImportError, AttributeError, TypeError, ValueError):  # a private module: may move
        newest = 20
    return min(newest, int(onnx.defs.onnx_opset_version()))


def check_opset(opset: object) -> int:
    """`opset` when it is an int in MIN_OPSET..max_opset(); a PrunenasError naming --opset otherwise."""
    high = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= high:
        raise PrunenasError(
            f"--opset {opset!r} is not an ONNX opset this torch ({torch.__version__}) exports: pass an integer in "
            f"{MIN_OPSET}..{high} (default {DEFAULT_OPSET})"
        )
    return opset


def _file_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' progress lines, deprecation warnings and 'torchvision is not installed' logs."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def _export_onnx(
    model: nn.Module, path: Path, input_shape: tuple[int, int, int], opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Write `model` to `path` as one self-contained ONNX file with a dynamic batch axis, at `opset`.

    The dynamo exporter first; the legacy TorchScript exporter only if dynamo fails or writes another
    opset than `opset` (it cannot go below 18) (the reason is logged and returned). Returns
    {"exporter", "fallback_reason", "seconds"}.
    """
    model = model.eval()
    example = (torch.randn(_EXAMPLE_BATCH, *input_shape),)
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    t0 = time.perf_counter()
    reason: str | None = None
    try:
        with _quiet_exporter():
            torch.onnx.export(
                model,
                example,
                str(path),
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: BATCH_DIM},),
                opset_version=opset,
                verbose=False,
                **names,  # type: ignore[arg-type]
            )
        written = _file_opset(path)
        if written != opset:
            raise ExportError(f"the dynamo exporter wrote opset {written}, not the requested {opset}")
        return {"exporter": "dynamo", "fallback_reason": None, "seconds": time.perf_counter() - t0}
    except Exception as exc:
        reason = _first_line(exc)
        log.warning("dynamo ONNX export failed (%s); falling back to the legacy TorchScript exporter", reason)
        for leftover in (path, path.with_name(path.name + ".data")):
            leftover.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                model,
                example,
                str(path),
                dynamo=False,
                opset_version=opset,
                dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
                do_constant_folding=True,
                **names,  # type: ignore[arg-type]
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed with both exporters (dynamo: {reason}; legacy: {_first_line(exc)})"
        ) from None
    return {"exporter": "legacy", "fallback_reason": reason, "seconds": time.perf_counter() - t0}


def _verify_onnx_file(path: Path, metadata_props: Mapping[str, str], opset: int | None = None) -> dict[str, Any]:
    """Check there is no side file, stamp metadata, run the full checker (and that the file is at
    `opset`, when given); return graph facts."""
    import onnx

    side = [p.name for p in path.parent.iterdir() if p.suffix == ".data" or p.name.endswith(".onnx.data")]
    if side:
        raise ExportError(f"the exporter left external-data file(s) {side}; the export must be one self-contained file")
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ExportError(f"initializer {init.name!r} refers to external data; the export must be self-contained")
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("prunenas.")]
    del model.metadata_props[:]
    for k, v in [*kept, *metadata_props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.doc_string = metadata_props.get("prunenas.description", "")
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejects the exported model: {_first_line(exc)}") from None
    inputs = [i.name for i in model.graph.input]
    if inputs != [INPUT_NAME]:
        raise ExportError(f"the exported graph has inputs {inputs}; expected only {INPUT_NAME!r}")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if not dims or not dims[0].dim_param:
        raise ExportError("the exported graph has a fixed batch size; the batch axis must be dynamic")
    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:
        raise ExportError(f"the exported graph is at opset {written}, not the requested {opset}")
    return {
        "opset": written,
        "ir_version": int(model.ir_version),
        "input_dims": [d.dim_param or int(d.dim_value) for d in dims],
        "ops": sorted({n.op_type for n in model.graph.node}),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }


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


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what its sidecar says."""

    out_dir: Path
    onnx_path: Path
    sidecar: dict[str, Any]


def _same_run(folder: Path, run: TrainedRun) -> bool:
    """Whether `folder` is empty of exports or holds an export of this very run."""
    sidecar = folder / SIDECAR
    if not sidecar.is_file():
        return True
    try:
        previous = json.loads(sidecar.read_text(encoding="utf-8")).get("source", {}).get("run_dir")
    except (OSError, ValueError, AttributeError):
        return False
    return previous == str(run.run_dir.resolve())


def _destination(run: TrainedRun, out_dir: str | Path | None, name: str | None, root: str | Path) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    base = Path(root) / run.space.slug
    if name is not None:
        if not name or Path(name).name != name or name in (".", ".."):
            raise PrunenasError(f"--name {name!r} must be a plain folder name (no '/'); pass e.g. --name resnet56_b")
        return base / name
    # The genotype key; if that folder holds another run's export (same genotype, other seed or
    # recipe), the run folder's name instead.
    for candidate in (base / run.genotype.key, base / run.run_dir.resolve().name):
        if _same_run(candidate, run):
            return candidate
    raise PrunenasError(
        f"{base / run.genotype.key} and {base / run.run_dir.resolve().name} already hold exports of other runs; "
        "pass --name NAME or -o DIR"
    )


def _prepare(dest: Path, out_flag: str = "-o") -> Path:
    """Create the destination's parent and a staging folder next to it; return the staging folder."""
    hint = f"pass another {out_flag}"
    for folder in (dest, *dest.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == dest else f"is below {str(folder)!r}, which is a file"
                raise PrunenasError(f"cannot create export folder {str(dest)!r}: it {where}; {hint}")
            break
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in dest.parent.glob(f".{dest.name}.staging-*"):  # left by an interrupted export
            shutil.rmtree(stale, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    except OSError as exc:
        raise PrunenasError(f"cannot create export folder {str(dest)!r}: {why(exc)}; {hint}") from None


def _move_into_place(staging: Path, dest: Path, files: Sequence[str], out_flag: str = "-o") -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            os.replace(staging / f, dest / f)
    except OSError as exc:
        raise PrunenasError(
            f"cannot write into export folder {str(dest)!r}: {why(exc)}; pass another {out_flag}"
        ) from None


def export_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    name: str | None = None,
    root: str | Path = "exports",
    dataset: str | None = None,
    data_dir: str | None = None,
    benchmark: bool = False,
    latency_batches: Sequence[int] = (1, 64),
    latency_repeats: int = 50,
    latency_warmup: int = 10,
    provider: str | None = None,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    out_flag: str = "-o",
    space: str | None = None,
) -> ExportResult:
    """Export the trained model of `run_dir` to ONNX at `opset` (MIN_OPSET..max_opset()), verify it, and
    write model.onnx, model.json, README.md.

    Output: `out_dir`, else `root/<space>/<name>` (name: `name`, else the genotype key, or the run
    folder's name when the key's folder holds another run's export). `space` (a space name, .toml path or
    model factory) replaces the space the run records, e.g. when its file moved. Raises PrunenasError for bad input
    and ExportError (a PrunenasError) when the exported model fails a check; then nothing is written.
    """
    check_opset(opset)
    run = load_run(run_dir, space)
    resolve_providers(provider)  # a provider that is not there fails now, not after the export
    if benchmark:  # validate before the slow part
        _check_latency_args(latency_batches, latency_repeats, latency_warmup)
    real, real_name, skipped = _real_inputs(run, dataset, data_dir, REAL_PARITY_IMAGES)  # bad --dataset fails now
    dest = _destination(run, out_dir, name, root)
    export_name = name or dest.name
    staging = _prepare(dest, out_flag)
    try:
        folded = run.space.export_model(run.model)
        onnx_path = staging / ONNX_FILE
        # The default opset is not passed: `_export_onnx(model, path, input_shape)` stays the seam tests replace.
        method = _export_onnx(
            folded, onnx_path, run.input_shape, **({} if opset == DEFAULT_OPSET else {"opset": opset})
        )
        stamp = {
            "prunenas.key": run.genotype.key,
            "prunenas.space": run.space.name,
            "prunenas.genotype": run.genotype.canonical_json(),
            "prunenas.mean": json.dumps(list(run.mean)),
            "prunenas.std": json.dumps(list(run.std)),
            "prunenas.classes": json.dumps(list(run.classes)),
            "prunenas.normalization": _NORMALIZATION,
            "prunenas.description": f"prunenas {run.space.name} genotype {run.genotype.key}; inputs: {_NORMALIZATION}",
        }
        graph = _verify_onnx_file(onnx_path, stamp, opset)
        inputs = _random_inputs(run.input_shape, PARITY_BATCHES)
        if real is not None:
            inputs.append(real)
        else:
            log.warning("real-input parity check skipped: %s", skipped)
        # Compare against the original (masked) model, not the folded copy: the fold is checked too.
        parity = check_parity(run.model, onnx_path, inputs, tolerance=tolerance, provider=provider)
        parity["real_inputs"] = real_name if real is not None else None
        parity["real_inputs_skipped"] = skipped
        sparsity = _sparsity(run, folded, onnx_path) if run.space.folds_masks else None
        latency = None
        if benchmark:
            from prunenas.latency import machine

            latency = onnx_latency(
                onnx_path, latency_batches, repeats=latency_repeats, warmup=latency_warmup, provider=provider
            )
            latency = {**latency, "machine": machine()}  # the numbers belong to this processor
        sidecar = _sidecar(run, export_name, method, graph, parity, sparsity, latency, onnx_path)
        (staging / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(model_card(sidecar), encoding="utf-8")
        _move_into_place(staging, dest, (ONNX_FILE, SIDECAR, CARD), out_flag)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(dest, dest / ONNX_FILE, sidecar)


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
    from prunenas.cost import genotype_cost

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
        },
        "classes": list(run.classes),
        "input": {
            "name": INPUT_NAME,
            "shape": [BATCH_DIM, c, h, w],
            "dtype": "float32",
            "layout": "NCHW",
            "mean": list(run.mean),
            "std": list(run.std),
            "normalization": _NORMALIZATION,
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": [BATCH_DIM, run.num_classes],
            "dtype": "float32",
            "meaning": "unnormalized class scores: argmax is the class, softmax gives probabilities",
        },
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
