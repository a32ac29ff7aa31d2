"""Names shared by the export modules: the files of an export, the graph's input and output, ExportError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prunenas.errors import PrunenasError

ONNX_FILE = "model.onnx"
SIDECAR = "model.json"
CARD = "README.md"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
SIDECAR_FORMAT = 1


class ExportError(PrunenasError):
    """The export ran but its result failed verification (checker, parity, side file).

    Not the user's input at fault: the CLI prints the one-line message and exits with 1.
    """


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


def stored_like(dataset: object, image_size: int) -> dict[str, Any]:
    """load_dataset's settings that store the images as the run did (`dataset`: the dataset record of metrics.json
    or model.json): a run that cropped its inputs from larger images in the disk cache is evaluated on the same
    center crops, not on images resized to the input size."""
    stored = dataset.get("stored_size") if isinstance(dataset, dict) else None
    if isinstance(stored, int) and not isinstance(stored, bool) and stored > image_size:
        return {"stored_size": stored, "data_cache": "disk"}
    return {}
