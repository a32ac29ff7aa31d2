"""Where and how a training run computes: the device a `--device` name means (`resolve_device`), the
precision and memory format of the run there (`resolve_precision`, recorded in metrics.json), the
process-wide settings that go with it (`apply_precision`), and the data-parallel wrapper of a torchrun
launch (`data_parallel`; the process group itself is `prunenas.distributed`'s).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunenas import hardware
from prunenas.config import RunSettings
from prunenas.errors import PrunenasError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PrunenasError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrunenasError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise PrunenasError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def resolve_precision(device: torch.device, settings: RunSettings, model: nn.Module | None = None) -> dict[str, Any]:
    """How a run computes, recorded in metrics.json ("precision"): bf16 autocast or fp32, the memory format
    and, on a CPU, the threads and the CPU. CUDA: bf16 and channels_last unless switched off. CPU: as
    `prunenas.hardware.cpu_mode` decides for `model`'s layers (bf16 only where the CPU has AMX-BF16 and the
    convolutions are dense; --amp without bf16 instructions is refused; --no-amp and the papers' protocols
    are fp32 in the layout they always had), and --threads or this process's share of the cores."""
    if device.type == "cuda":
        amp = settings.amp is not False
        why = "bf16 autocast on CUDA" if amp else "fp32 (--no-amp or the protocol)"
        channels_last = True if settings.channels_last is None else settings.channels_last
        return {"amp": amp, "dtype": "bfloat16" if amp else "float32", "why": why, "channels_last": channels_last}

    grouped = model is not None and any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    amp, channels_last, why = hardware.cpu_mode(settings.amp, grouped=grouped)
    if settings.channels_last is not None:
        channels_last = settings.channels_last
    threads = settings.threads or hardware.share_cores()
    return {
        "amp": amp, "dtype": "bfloat16" if amp else "float32", "why": why, "channels_last": channels_last,
        "threads": threads, "threads_from": "--threads" if settings.threads else "share of the cores",
        "cpu": hardware.cpu_info().to_dict(),
    }  # fmt: skip


def apply_precision(device: torch.device, precision: dict[str, Any]) -> None:
    """The process-wide settings of a run resolved by `resolve_precision`: on a CPU its threads, on CUDA
    cudnn's autotuning of convolutions."""
    if device.type == "cpu":
        torch.set_num_threads(precision["threads"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel for a data-parallel run (torchrun; the process group joined by
    `prunenas.distributed.join`): its gradients are averaged over the ranks in backward."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
