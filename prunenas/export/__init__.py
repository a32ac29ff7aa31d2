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

Spaces with masked weights (density genotypes) are exported with their masks multiplied into the
weights and the mask buffers removed (`Space.export_model`), so the zeros live in the weights and no
mask appears in the graph; the measured sparsity is recorded. ONNX Runtime runs such layers as dense
convolutions: unstructured zeros give no speed-up.

`onnx_latency(path)` (median/p90 ms per batch size) and `evaluate_onnx(path, dataset)` (test accuracy
through ONNX Runtime) need no CLI and no PyTorch model.

Modules:
    common    file and graph names, ExportError
    run       load_run, TrainedRun: a trained run folder with its model rebuilt
    runtime   ONNX Runtime sessions and providers, input normalization, onnx_latency
    parity    check_parity and its random and real inputs
    writer    the ONNX file: opsets, the dynamo and legacy exporters, onnx.checker and the metadata stamp
    sidecar   model.json: what the export records (cost, accuracy, versions, ...), the sparsity report
    exporter  export_run: the export's steps, destination and staging folder
    card      the model card (README.md)
    evaluate  evaluate_onnx, load_sidecar
"""

from __future__ import annotations

from prunenas.export.common import ONNX_FILE, SIDECAR, ExportError
from prunenas.export.evaluate import evaluate_onnx, load_sidecar
from prunenas.export.exporter import ExportResult, export_run
from prunenas.export.parity import PARITY_TOLERANCE, check_parity
from prunenas.export.run import TrainedRun, load_run
from prunenas.export.runtime import make_session, normalize_images, onnx_latency, resolve_providers

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
    "load_run",
    "load_sidecar",
    "make_session",
    "normalize_images",
    "onnx_latency",
    "resolve_providers",
]
