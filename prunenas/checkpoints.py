"""A training run's checkpoint.pt: written atomically after every epoch (`write_checkpoint`), read back to
resume the run (`resume`), and read by everything that starts from a run's weights (`read_checkpoint`,
`load_model_state`), each with one line naming the flag for a missing, damaged or foreign file.
`weights_sha` names a set of weights in run identities and metrics.json.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunenas.config import RunSettings
from prunenas.errors import PrunenasError
from prunenas.train_results import EpochMetrics

if TYPE_CHECKING:
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space

CHECKPOINT = "checkpoint.pt"


def weights_sha(state: Mapping[str, torch.Tensor]) -> str:
    """16 hex digits of a state dict's names and values (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_own_checkpoint(
    path: Path, *, kind: str, unreadable_fix: str, foreign_fix: str, format: str | None = None
) -> dict[str, Any]:
    """The content of a checkpoint prunenas wrote itself (a run's, a supernet's: `kind` names it), refused in
    one line when it cannot be read or is not such a checkpoint (no model, or another `format`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise PrunenasError(
            f"the {kind} checkpoint {str(path)!r} is unreadable ({type(exc).__name__}): {unreadable_fix}"
        ) from None
    if not isinstance(state, dict) or "model" not in state or (format is not None and state.get("format") != format):
        raise PrunenasError(f"{str(path)!r} is not a prunenas {kind} checkpoint: {foreign_fix}")
    return state


def load_run_checkpoint(path: Path) -> dict[str, Any]:
    """The content of a run folder's own checkpoint, for resuming it."""
    fix = "delete it to start the run over (`prunenas train` also takes --fresh)"
    return load_own_checkpoint(path, kind="run", unreadable_fix=fix, foreign_fix=fix)


def read_checkpoint(path: str | Path, flag: str = "--weights") -> tuple[Path, Any]:
    """(file, content) of a checkpoint given by `flag` (a checkpoint.pt or its run folder), with one line
    naming the flag for a missing, truncated, foreign or non-checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.exists():
        raise PrunenasError(f"{flag} {str(p)!r} does not exist; pass the checkpoint.pt of a prunenas run")
    try:
        with p.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise PrunenasError(f"{flag} {str(p)!r} cannot be read ({exc.strerror})") from None
    if head.lstrip()[:1] in (b"{", b"["):
        raise PrunenasError(f"{flag} {str(p)!r} is a JSON file, not a checkpoint; pass the checkpoint.pt of a run")
    try:
        return p, torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        kind = "truncated or damaged" if isinstance(exc, EOFError | RuntimeError) else "not a PyTorch checkpoint"
        raise PrunenasError(
            f"{flag} {str(p)!r} is {kind} ({type(exc).__name__}); pass an intact checkpoint.pt (retrain the run "
            "if it was cut off while being written)"
        ) from None


def load_model_state(path: str | Path, flag: str = "--weights") -> dict[str, torch.Tensor]:
    """Model weights from a prunenas checkpoint.pt (or a bare state_dict file)."""
    p, state = read_checkpoint(path, flag)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PrunenasError(f"{flag} {str(p)!r} holds no model weights; pass the checkpoint.pt of a prunenas run")
    return state


def load_error(exc: BaseException) -> str:
    """The informative line of a `load_state_dict` error (not its "Error(s) in loading ..." heading)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Error(s) in loading state_dict")]
    text = (useful or lines or [type(exc).__name__])[0]
    return text if len(text) <= 240 else text[:237] + "..."


def write_checkpoint(
    path: Path,
    *,
    run_key: Mapping[str, Any],
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    history: Sequence[EpochMetrics],
    stopped: str | None,
    elapsed_before: float,
    started: float,
    genotype: Genotype,
    space: Space,
    num_classes: int,
) -> None:
    """Save a run after `epoch` epochs: its identity, weights, optimizer and RNG states, history, why it
    stopped (None: it goes on), seconds spent (`elapsed_before` plus the time since `started`, a
    `time.perf_counter()`), and what it trained. `resume` reads it back."""
    atomic_save(
        {
            "run_key": run_key, "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": [h.to_dict() for h in history], "stopped": stopped,
            "wall_time_s": elapsed_before + time.perf_counter() - started,
            "genotype": genotype.to_dict(), "space": space.name, "space_source": space.source,
            "num_classes": num_classes,
        },
        path,
    )  # fmt: skip


def resume(
    path: Path | None,
    settings: RunSettings,
    key: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> tuple[list[EpochMetrics], int, float, str | None]:
    """(history, epochs done, seconds spent, why it stopped) of the run folder's checkpoint `path`, with the
    model, optimizer and RNG states restored from it; a fresh start when there is none (or resuming is off)."""
    if path is None or not settings.resume or not path.exists():
        return [], 0, 0.0, None
    state = load_run_checkpoint(path)
    if state.get("run_key") != key:
        raise PrunenasError(
            f"{str(path.parent)!r} holds a different run (other genotype, recipe, seed, data or teacher); "
            "pass another --out or --fresh to overwrite it"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"], device)
    history = [EpochMetrics(**h) for h in state["history"]]
    return history, int(state["epoch"]), float(state.get("wall_time_s", 0.0)), state.get("stopped")
