"""ONNX export of a trained run, verified before anything is kept.

`export_run(RUN_DIR)` rebuilds the run's model from genotype.json + checkpoint.pt, exports it with the
dynamo exporter (`torch.onnx.export(dynamo=True)`, one self-contained file, dynamic batch axis) and
falls back to the legacy TorchScript exporter only when dynamo fails (the reason is logged and
stored). The file must pass `onnx.checker` (full check) and ONNX Runtime must reproduce PyTorch's
fp32 logits within `PARITY_TOLERANCE` on random batches of two sizes (so the batch axis really is
dynamic) and on real test images when the run's dataset can be loaded. Everything is written into a
staging folder first and moved into place only after all checks pass, so a failed export leaves
nothing behind (and never clobbers a previous good export).

Output folder (default `exports/<space>/<name>/`):
    model.onnx   the network; input "input" float32 [batch, 3, H, W], output "logits" [batch, classes]
    model.json   the sidecar: genotype, cost, accuracy, recipe, normalization, classes, parity, versions
    README.md    a short model card

Density genotypes are exported with their masks multiplied into the weights and the mask buffers
removed, so the zeros live in the weights and no mask appears in the graph; the measured sparsity is
recorded. ONNX Runtime runs such layers as dense convolutions: unstructured zeros give no speed-up.

`onnx_latency(path)` (median/p90 ms per batch size) and `evaluate_onnx(path, dataset)` (test accuracy
through ONNX Runtime) need no CLI and no PyTorch model.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
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
from prunenas.genotype import Genotype
from prunenas.spaces.base import Space
from prunenas.spaces.density import MASK, masked_layers, prunable_layers, weight_of

__all__ = [
    "ONNX_FILE",
    "PARITY_TOLERANCE",
    "SIDECAR",
    "ExportError",
    "ExportResult",
    "TrainedRun",
    "check_parity",
    "evaluate_onnx",
    "export_run",
    "fold_masks",
    "load_run",
    "load_sidecar",
    "make_session",
    "normalize_images",
    "onnx_latency",
    "resolve_providers",
]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
SIDECAR = "model.json"
CARD = "README.md"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
SIDECAR_FORMAT = 1
#: Largest allowed |logit(PyTorch) - logit(ONNX Runtime)| in fp32.
PARITY_TOLERANCE = 1e-4
PARITY_RELATIVE = 1e-6  # of the largest |logit|, for fp32 rounding of large logits
#: Random-input parity batch sizes: 1 and a size that is neither 1 nor the export example's 2.
PARITY_BATCHES = (1, 7)
#: Real test images used for the parity check (the first N of the test split).
REAL_PARITY_IMAGES = 256
_EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1, so the example batch must be >= 2
_LEGACY_OPSET = 18
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_SPARSITY_NOTE = (
    "The zeros are stored as ordinary dense weights: ONNX Runtime runs these layers as dense convolutions, "
    "so unstructured sparsity gives no speed-up and no smaller file (it compresses well, e.g. with gzip). "
    "The MACs figure is the density-weighted count of the genotype."
)
_NORMALIZATION = "x = (pixels / 255 - mean) / std per channel; pixels are uint8 RGB, layout NCHW"


class ExportError(PrunenasError):
    """The export ran but its result failed verification (checker, parity, side file).

    Not the user's input at fault: the CLI prints the one-line message and exits with 1.
    """


# --------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A run folder written by `prunenas train`, with its model rebuilt (CPU, fp32, eval mode)."""

    run_dir: Path
    space: Space
    genotype: Genotype
    model: nn.Module
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    metrics: Mapping[str, Any]
    checkpoint_epoch: int
    run_key: Mapping[str, Any] | None
    used_cuda: bool

    @property
    def dataset_name(self) -> str | None:
        name = self.metrics.get("dataset", {}).get("name")
        return str(name) if name else None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.space.input_shape


def _read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PrunenasError(f"{what} {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PrunenasError(f"cannot read {what} {str(path)!r} ({type(exc).__name__}); {fix}") from None
    if not isinstance(data, dict):
        raise PrunenasError(f"{what} {str(path)!r} holds {type(data).__name__}, not a JSON object; {fix}")
    return data


def _three_floats(value: object) -> tuple[float, float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 3:
        return None
    try:
        a, b, c = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return a, b, c


def load_run(run_dir: str | Path) -> TrainedRun:
    """Read a run folder (checkpoint.pt, genotype.json, metrics.json) and rebuild its trained model.

    Raises PrunenasError (one line: what is wrong and how to fix it) for anything missing or inconsistent.
    """
    from prunenas.spaces import get_space
    from prunenas.train import CHECKPOINT, METRICS

    run = Path(run_dir)
    layout = "a folder written by `prunenas train` (it holds checkpoint.pt, genotype.json and metrics.json)"
    if not run.exists():
        raise PrunenasError(f"run folder {str(run)!r} does not exist; pass {layout}")
    if not run.is_dir():
        raise PrunenasError(f"{str(run)!r} is a file, not a run folder; pass {layout}")
    ckpt_path = run / CHECKPOINT
    if not ckpt_path.is_file():
        raise PrunenasError(
            f"run folder {str(run)!r} has no {CHECKPOINT}; train it first (`prunenas train GENOTYPE --out {run}`) "
            f"or pass {layout}"
        )
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise PrunenasError(
            f"checkpoint {str(ckpt_path)!r} is unreadable ({type(exc).__name__}); retrain the run with --fresh"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping):
        raise PrunenasError(f"{str(ckpt_path)!r} is not a prunenas checkpoint (no model weights); pass {layout}")

    genotype_file = run / "genotype.json"
    ckpt_genotype = state.get("genotype")
    if genotype_file.is_file():
        genotype = Genotype.load(genotype_file)
    elif isinstance(ckpt_genotype, Mapping):
        genotype = Genotype.from_dict(ckpt_genotype, origin=f"{ckpt_path} genotype")
    else:
        raise PrunenasError(f"run folder {str(run)!r} has no genotype.json; pass {layout}")
    space = get_space(genotype.space)
    genotype = space.validate(genotype)
    if isinstance(ckpt_genotype, Mapping):
        trained = space.validate(Genotype.from_dict(ckpt_genotype, origin=f"{ckpt_path} genotype"))
        if trained.key != genotype.key:
            raise PrunenasError(
                f"{genotype_file} (genotype {genotype.key}) is not the genotype checkpoint.pt was trained on "
                f"({trained.key}); restore the run's genotype.json or pass the matching run folder"
            )

    metrics_path = run / METRICS
    if not metrics_path.is_file():
        raise PrunenasError(
            f"run folder {str(run)!r} has no {METRICS} (it is written when the run finishes); finish the run with "
            "`prunenas train` (it resumes from checkpoint.pt) and export again"
        )
    metrics = _read_json(metrics_path, "metrics file", "pass the folder of a finished `prunenas train` run")
    dataset = metrics.get("dataset")
    mean = _three_floats(dataset.get("mean")) if isinstance(dataset, Mapping) else None
    std = _three_floats(dataset.get("std")) if isinstance(dataset, Mapping) else None
    if mean is None or std is None or min(std) <= 0:
        raise PrunenasError(
            f"{metrics_path} has no usable dataset.mean/std (3 numbers each, std > 0), so the input normalization "
            "is unknown; pass the folder of a `prunenas train` run"
        )
    assert isinstance(dataset, Mapping)
    num_classes = int(state.get("num_classes") or len(dataset.get("classes") or []) or space.num_classes)
    classes = tuple(str(c) for c in dataset.get("classes") or [])
    if len(classes) != num_classes:
        classes = tuple(str(i) for i in range(num_classes))

    model = space.build(genotype, num_classes=num_classes)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PrunenasError(
            f"checkpoint.pt in {str(run)!r} does not fit genotype {genotype.key} ({first}); "
            "genotype.json must be the genotype the run trained"
        ) from None
    model.float().eval()
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise PrunenasError(
            f"the weights in {str(ckpt_path)!r} are not finite (e.g. {bad[0]}); the run diverged "
            f"({state.get('stopped') or 'see metrics.json'}): retrain it with a lower --lr"
        )
    return TrainedRun(
        run_dir=run,
        space=space,
        genotype=genotype,
        model=model,
        num_classes=num_classes,
        classes=classes,
        mean=mean,
        std=std,
        metrics=metrics,
        checkpoint_epoch=int(state.get("epoch", 0)),
        run_key=state.get("run_key"),
        used_cuda=state.get("rng_cuda") is not None,
    )


def fold_masks(model: nn.Module) -> nn.Module:
    """A copy of `model` whose weights are weight * mask and that has no weight_mask buffers.

    The zeros then live in the weights themselves, and the exported graph carries no mask tensors.
    """
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for _, module, mask in list(masked_layers(folded)):
            weight_of(module).mul_(mask)
            del module._buffers[MASK]
    return folded


# --------------------------------------------------------------------------------------------- ONNX Runtime


def resolve_providers(provider: str | None = None) -> list[str]:
    """ONNX Runtime providers to ask for, chosen explicitly.

    None/"auto": CUDA (with CPU behind it) only when torch sees a GPU and this onnxruntime has the CUDA
    provider, else CPU only (the GPU wheel logs an error when CUDA is asked for and absent).
    "cpu", "cuda" or a full provider name ask for that provider.
    """
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    if provider is None or provider.lower() == "auto":
        if torch.cuda.is_available() and _CUDA in available:
            return [_CUDA, _CPU]
        return [_CPU]
    name = {"cpu": _CPU, "cuda": _CUDA}.get(provider.lower(), provider)
    if name not in available:
        raise PrunenasError(
            f"ONNX Runtime provider {provider!r} is not available in this onnxruntime; available: "
            f"{', '.join(available)}; pass --provider auto or cpu"
        )
    if name == _CUDA and not torch.cuda.is_available():
        raise PrunenasError("provider 'cuda' asked for but no CUDA device is visible here; pass --provider cpu")
    return [name] if name == _CPU else [name, _CPU]


def make_session(
    path: str | Path, provider: str | None = None, *, threads: int | None = None, exact: bool = False
) -> Any:
    """An onnxruntime.InferenceSession with explicitly chosen providers.

    `exact` turns TF32 off on CUDA (for fp32 parity checks). Check `session.get_providers()[0]` for the
    provider actually used: ONNX Runtime falls back to CPU silently.
    """
    import onnxruntime as ort

    providers = resolve_providers(provider)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = int(threads)
    chosen: list[Any] = [(p, {"use_tf32": "0"}) if exact and p == _CUDA else p for p in providers]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise PrunenasError(
            f"ONNX Runtime cannot load {str(path)!r} ({type(exc).__name__}: {first}); it is not a valid ONNX model: "
            "export it again with `prunenas export RUN_DIR`"
        ) from None
    used = session.get_providers()[0]
    if used != providers[0]:
        log.warning("ONNX Runtime asked for %s but runs on %s", providers[0], used)
    return session


def normalize_images(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, 3, H, W) images -> float32 (x / 255 - mean) / std, computed as the trainer does."""
    mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.addcmul(-mean_t / std_t, x.to(torch.float32), 1.0 / (255.0 * std_t))
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


# --------------------------------------------------------------------------------------------- parity


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    inputs: Sequence[tuple[str, np.ndarray]],
    *,
    tolerance: float = PARITY_TOLERANCE,
    provider: str | None = None,
) -> dict[str, Any]:
    """Run `model` (PyTorch, CPU, fp32, eval) and the ONNX file on each (label, input); compare logits.

    Returns {"provider", "tolerance", "checks": [{label, batch, max_abs_diff, max_abs_logit,
    argmax_agreement}], "max_abs_diff", "passed": True}; raises ExportError when any batch differs by
    the allowed difference (`tolerance` + 1e-6 x the largest |logit|) or more (or has a wrong output shape).
    """
    session = make_session(onnx_path, provider, exact=True)
    used = session.get_providers()[0]
    input_name = session.get_inputs()[0].name
    model = model.eval()
    device = next(model.parameters()).device
    checks: list[dict[str, Any]] = []
    for label, x in inputs:
        with torch.no_grad():
            expected = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
        got = np.asarray(session.run(None, {input_name: x})[0])
        if got.shape != expected.shape:
            raise ExportError(
                f"ONNX Runtime ({used}) returned logits of shape {list(got.shape)} for {label} "
                f"(batch {x.shape[0]}), PyTorch {list(expected.shape)}; the export is wrong"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
        check = {
            "input": label,
            "batch": int(x.shape[0]),
            "max_abs_diff": diff,
            "max_abs_logit": float(np.max(np.abs(expected))) if expected.size else 0.0,
            "argmax_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))) if got.size else 1.0,
        }
        # fp32 rounding grows with the size of the logits: on top of the absolute tolerance allow one
        # part in a million of the largest logit (negligible for logits of a trained model, ~10).
        allowed = tolerance + PARITY_RELATIVE * float(np.max(np.abs(expected)) if expected.size else 0.0)
        check["allowed"] = allowed
        checks.append(check)
        if not diff < allowed:  # also catches NaN
            raise ExportError(
                f"ONNX Runtime ({used}) disagrees with PyTorch on {label} (batch {x.shape[0]}): max |logit "
                f"difference| {diff:.3g} >= {allowed:.3g} (logits up to {check['max_abs_logit']:.3g}); "
                "the exported model is not the trained one, so nothing was kept"
            )
    return {
        "provider": used,
        "tolerance": tolerance,
        "checks": checks,
        "max_abs_diff": max((c["max_abs_diff"] for c in checks), default=0.0),
        "passed": True,
    }


def _random_inputs(shape: tuple[int, int, int], batches: Sequence[int], seed: int = 0) -> list[tuple[str, np.ndarray]]:
    gen = torch.Generator().manual_seed(seed)
    return [(f"random batch {b}", torch.randn(b, *shape, generator=gen).numpy()) for b in batches]


def _real_inputs(
    run: TrainedRun, dataset: str | None, data_dir: str | None, limit: int
) -> tuple[tuple[str, np.ndarray] | None, str | None, str | None]:
    """(label, normalized test images) for the parity check, the dataset name, and why there are none.

    With an explicit `dataset`, failures to load it are the user's error (raised). Otherwise the run's own
    dataset is tried without downloading, and a failure only skips the check (the reason is returned).
    """
    from prunenas.data import load_dataset
    from prunenas.errors import DataError

    explicit = dataset is not None
    name = dataset or run.dataset_name
    if name is None:
        return None, None, "metrics.json names no dataset; pass --dataset/--data-dir for a real-input check"
    folder = data_dir or os.environ.get("PRUNENAS_DATA") or None
    if folder is None and not explicit:
        source = run.metrics.get("dataset", {}).get("source")
        if isinstance(source, str) and source != "embedded" and Path(source).exists():
            folder = source
    try:
        data = load_dataset(name, folder, download=explicit, image_size=run.input_shape[1])
    except DataError as exc:
        if explicit:
            raise
        return None, name, f"{name} test images not available ({exc}); pass --data-dir for a real-input check"
    images = data.test.x[:limit]
    if tuple(images.shape[1:]) != run.input_shape or len(images) == 0:
        raise PrunenasError(
            f"{name} test images have shape {list(images.shape[1:])} but the model takes {list(run.input_shape)}; "
            "pass the dataset the run was trained on with --dataset"
        )
    return (f"{name} test images", normalize_images(images, run.mean, run.std)), name, None


# --------------------------------------------------------------------------------------------- export


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


def _export_onnx(model: nn.Module, path: Path, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """Write `model` to `path` as one self-contained ONNX file with a dynamic batch axis.

    The dynamo exporter first; the legacy TorchScript exporter only if dynamo fails (the reason is
    logged and returned). Returns {"exporter", "fallback_reason", "seconds"}.
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
                verbose=False,
                **names,  # type: ignore[arg-type]
            )
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
                opset_version=_LEGACY_OPSET,
                dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
                do_constant_folding=True,
                **names,  # type: ignore[arg-type]
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed with both exporters (dynamo: {reason}; legacy: {_first_line(exc)})"
        ) from None
    return {"exporter": "legacy", "fallback_reason": reason, "seconds": time.perf_counter() - t0}


def _verify_onnx_file(path: Path, metadata_props: Mapping[str, str]) -> dict[str, Any]:
    """Check there is no side file, stamp metadata, run the full checker; return graph facts."""
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
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "opset": opset,
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
    base = Path(root) / run.space.name
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


def _prepare(dest: Path) -> Path:
    """Create the destination's parent and a staging folder next to it; return the staging folder."""
    hint = "pass another -o DIR"
    for folder in (dest, *dest.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == dest else f"is below {str(folder)!r}, which is a file"
                raise PrunenasError(f"cannot create export folder {str(dest)!r}: it {where}; {hint}")
            break
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PrunenasError(f"cannot create export folder {str(dest)!r}: {reason}; {hint}") from None


def _move_into_place(staging: Path, dest: Path, files: Sequence[str]) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            os.replace(staging / f, dest / f)
    except OSError as exc:
        raise PrunenasError(
            f"cannot write into export folder {str(dest)!r}: {exc.strerror or type(exc).__name__}; pass another -o DIR"
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
) -> ExportResult:
    """Export the trained model of `run_dir` to ONNX, verify it, and write model.onnx, model.json, README.md.

    Output: `out_dir`, else `root/<space>/<name>` (name: `name`, else the genotype key, or the run
    folder's name when the key's folder holds another run's export). Raises PrunenasError for bad input
    and ExportError (a PrunenasError) when the exported model fails a check; then nothing is written.
    """
    run = load_run(run_dir)
    resolve_providers(provider)  # a provider that is not there fails now, not after the export
    if benchmark:  # validate before the slow part
        _check_latency_args(latency_batches, latency_repeats, latency_warmup)
    real, real_name, skipped = _real_inputs(run, dataset, data_dir, REAL_PARITY_IMAGES)  # bad --dataset fails now
    dest = _destination(run, out_dir, name, root)
    export_name = name or dest.name
    staging = _prepare(dest)
    try:
        folded = fold_masks(run.model) if run.space.kind == "density" else run.model
        onnx_path = staging / ONNX_FILE
        method = _export_onnx(folded, onnx_path, run.input_shape)
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
        graph = _verify_onnx_file(onnx_path, stamp)
        inputs = _random_inputs(run.input_shape, PARITY_BATCHES)
        if real is not None:
            inputs.append(real)
        else:
            log.warning("real-input parity check skipped: %s", skipped)
        # Compare against the original (masked) model, not the folded copy: the fold is checked too.
        parity = check_parity(run.model, onnx_path, inputs, tolerance=tolerance, provider=provider)
        parity["real_inputs"] = real_name if real is not None else None
        parity["real_inputs_skipped"] = skipped
        sparsity = _sparsity(run, folded, onnx_path) if run.space.kind == "density" else None
        latency = None
        if benchmark:
            latency = onnx_latency(
                onnx_path, latency_batches, repeats=latency_repeats, warmup=latency_warmup, provider=provider
            )
        sidecar = _sidecar(run, export_name, method, graph, parity, sparsity, latency, onnx_path)
        (staging / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(model_card(sidecar), encoding="utf-8")
        _move_into_place(staging, dest, (ONNX_FILE, SIDECAR, CARD))
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
            "masks_folded": run.space.kind == "density",
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


# --------------------------------------------------------------------------------------------- latency


def _check_latency_args(batch_sizes: Sequence[int], repeats: int, warmup: int) -> None:
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise PrunenasError(f"latency batch sizes must be positive integers, got {list(batch_sizes)!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise PrunenasError(f"latency repeats must be a positive integer, got {repeats!r}; pass e.g. --repeats 50")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise PrunenasError(f"latency warmup must be an integer >= 0, got {warmup!r}")


def onnx_latency(
    path: str | Path,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 50,
    warmup: int = 10,
    provider: str | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Wall-clock latency of one `session.run` per batch size on random inputs.

    Returns {"provider" (actually used), "intra_op_threads" (None: ONNX Runtime's default, one per
    physical core), "cpu_count", "repeats", "warmup", "onnxruntime", "per_batch": {"1": {"median_ms",
    "p90_ms", "mean_ms", "min_ms", "images_per_s"}, ...}}. On CUDA the times include the host<->device
    copies of inputs and logits.
    """
    import onnxruntime as ort

    _check_latency_args(batch_sizes, repeats, warmup)
    p = Path(path)
    if not p.is_file():
        raise PrunenasError(f"ONNX file {str(p)!r} does not exist; pass a model.onnx written by `prunenas export`")
    session = make_session(p, provider, threads=threads)
    meta = session.get_inputs()[0]
    rest = [int(d) if isinstance(d, int) else None for d in meta.shape[1:]]
    if any(d is None for d in rest):
        raise PrunenasError(f"{str(p)!r} has dynamic non-batch input dims {meta.shape}; only the batch may be dynamic")
    rng = np.random.default_rng(seed)
    per_batch: dict[str, Any] = {}
    for b in batch_sizes:
        x = rng.standard_normal((b, *[int(d) for d in rest if d is not None])).astype(np.float32)
        feed = {meta.name: x}
        for _ in range(warmup):
            session.run(None, feed)
        times = np.empty(repeats)
        for i in range(repeats):
            t0 = time.perf_counter()
            session.run(None, feed)
            times[i] = (time.perf_counter() - t0) * 1e3
        median = float(np.median(times))
        per_batch[str(b)] = {
            "median_ms": median,
            "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()),
            "min_ms": float(times.min()),
            "images_per_s": b / (median / 1e3) if median > 0 else math.inf,
        }
    return {
        "provider": session.get_providers()[0],
        "intra_op_threads": threads,
        "cpu_count": os.cpu_count(),
        "repeats": repeats,
        "warmup": warmup,
        "onnxruntime": ort.__version__,
        "per_batch": per_batch,
    }


# --------------------------------------------------------------------------------------------- evaluate


def _onnx_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir() and (p / ONNX_FILE).is_file():
        return p / ONNX_FILE
    if not p.exists():
        raise PrunenasError(f"ONNX file {str(p)!r} does not exist; pass the model.onnx written by `prunenas export`")
    if not p.is_file():
        raise PrunenasError(
            f"{str(p)!r} is a folder without {ONNX_FILE}; pass the model.onnx written by `prunenas export`"
        )
    return p


def load_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The sidecar of an ONNX file: `<stem>.json` next to it, else `model.json` in its folder."""
    p = Path(onnx_path)
    for candidate in (p.with_suffix(".json"), p.parent / SIDECAR):
        if candidate.is_file():
            sidecar = _read_json(candidate, "sidecar", "export the model again with `prunenas export RUN_DIR`")
            inp = sidecar.get("input")
            mean = _three_floats(inp.get("mean")) if isinstance(inp, Mapping) else None
            std = _three_floats(inp.get("std")) if isinstance(inp, Mapping) else None
            if mean is None or std is None or min(std) <= 0:
                raise PrunenasError(
                    f"sidecar {str(candidate)!r} has no usable input.mean/std; export the model again with "
                    "`prunenas export RUN_DIR`"
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
) -> dict[str, Any]:
    """Accuracy of an exported model on a dataset's test split, run with ONNX Runtime.

    Inputs are normalized with the mean/std of the sidecar model.json; `dataset` defaults to the one the
    model was trained on. The result includes the sidecar's PyTorch test accuracy when the datasets match.
    """
    from prunenas.data import load_dataset

    path = _onnx_file(onnx_path)
    sidecar = load_sidecar(path)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PrunenasError(f"batch size must be a positive integer, got {batch_size!r}; pass e.g. --batch-size 256")
    session = make_session(path, provider)
    meta = session.get_inputs()[0]
    ds = sidecar.get("dataset")
    trained_on = ds.get("name") if isinstance(ds, Mapping) else None
    name = dataset or trained_on
    if not name:
        raise PrunenasError(f"the sidecar of {str(path)!r} names no dataset; pass --dataset")
    folder = data_dir or os.environ.get("PRUNENAS_DATA") or None
    shape = [int(d) for d in meta.shape[1:] if isinstance(d, int)]
    if len(shape) != 3:
        raise PrunenasError(f"{str(path)!r} takes input {meta.shape}; expected [batch, 3, H, W] images")
    data = load_dataset(name, folder, image_size=shape[1])
    test = data.test
    if list(test.x.shape[1:]) != shape:
        raise PrunenasError(
            f"{name} images are {list(test.x.shape[1:])} but {str(path)!r} takes {shape}; pass a matching --dataset"
        )
    outputs = session.get_outputs()[0].shape
    n_out = outputs[-1] if outputs and isinstance(outputs[-1], int) else None
    if n_out is not None and n_out != data.num_classes:
        raise PrunenasError(
            f"{str(path)!r} predicts {n_out} classes but {name} has {data.num_classes}; pass the dataset it was "
            f"trained on (--dataset {trained_on})"
        )
    mean, std = sidecar["input"]["mean"], sidecar["input"]["std"]
    correct = 0
    t0 = time.perf_counter()
    for start in range(0, len(test), batch_size):
        x = normalize_images(test.x[start : start + batch_size], mean, std)
        logits = np.asarray(session.run(None, {meta.name: x})[0])
        correct += int((logits.argmax(1) == test.y[start : start + batch_size].numpy()).sum())
    seconds = time.perf_counter() - t0
    n = len(test)
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
        "provider": session.get_providers()[0],
        "seconds": seconds,
        "images_per_s": n / seconds if seconds > 0 else math.inf,
    }
