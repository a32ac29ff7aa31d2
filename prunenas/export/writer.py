"""Writing and checking the ONNX file: the opsets, the dynamo exporter with the legacy TorchScript exporter
as fallback (`_export_onnx`), and the checks of the written file with its metadata stamp (`_verify_onnx_file`:
one self-contained file, onnx.checker full check, the one input, a dynamic batch axis, the opset asked for).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunenas.errors import PrunenasError, exception_line
from prunenas.export.common import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, ExportError
from prunenas.progress import quiet_logs

log = logging.getLogger(__name__)

_EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1, so the example batch must be >= 2
DEFAULT_OPSET = 18  # what both exporters write unless told otherwise (`prunenas export --opset N`)
MIN_OPSET = 13


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


def _quiet_exporter() -> contextlib.AbstractContextManager[None]:
    """Silence the exporters' progress lines, deprecation warnings and 'torchvision is not installed' logs."""
    return quiet_logs("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")


class _Skip(Exception):
    """The dynamo exporter is not tried (a graph of one image per call)."""


def _export_onnx(
    model: nn.Module,
    path: Path,
    input_shape: tuple[int, int, int],
    opset: int = DEFAULT_OPSET,
    *,
    outputs: Sequence[str] = (OUTPUT_NAME,),
    dynamic_batch: bool = True,
) -> dict[str, Any]:
    """Write `model` to `path` as one self-contained ONNX file with a dynamic batch axis (`dynamic_batch`; else
    one image per call, and the first axis of each of the `outputs` dynamic: a detector's detections), at `opset`.

    The dynamo exporter first (with a dynamic batch); the legacy TorchScript exporter only if dynamo fails or
    writes another opset than `opset` (it cannot go below 18) (the reason is logged and returned). Returns
    {"exporter", "fallback_reason", "seconds"}.
    """
    model = model.eval()
    example = (torch.randn(_EXAMPLE_BATCH if dynamic_batch else 1, *input_shape),)
    names = {"input_names": [INPUT_NAME], "output_names": list(outputs)}
    t0 = time.perf_counter()
    reason: str | None = (
        None if dynamic_batch else "one image per call: the legacy exporter keeps the model's own loops"
    )
    try:
        if not dynamic_batch:
            raise _Skip
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
    except _Skip:
        pass
    except Exception as exc:
        reason = exception_line(exc, 300)
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
                dynamic_axes=(
                    {INPUT_NAME: {0: BATCH_DIM}, **{o: {0: BATCH_DIM} for o in outputs}}
                    if dynamic_batch
                    else {o: {0: f"{o}_count"} for o in outputs}
                ),
                do_constant_folding=True,
                **names,  # type: ignore[arg-type]
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed with both exporters (dynamo: {reason}; legacy: {exception_line(exc, 300)})"
        ) from None
    return {"exporter": "legacy", "fallback_reason": reason, "seconds": time.perf_counter() - t0}


def _verify_onnx_file(
    path: Path, metadata_props: Mapping[str, str], opset: int | None = None, dynamic_batch: bool = True
) -> dict[str, Any]:
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
        raise ExportError(f"onnx.checker rejects the exported model: {exception_line(exc, 300)}") from None
    inputs = [i.name for i in model.graph.input]
    if inputs != [INPUT_NAME]:
        raise ExportError(f"the exported graph has inputs {inputs}; expected only {INPUT_NAME!r}")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dynamic_batch and (not dims or not dims[0].dim_param):
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
