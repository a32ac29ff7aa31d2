"""Data-parallel training of one run over several processes (torch DDP), launched by `torchrun`.

    torchrun --nproc-per-node 4 -m prunenas.cli train GENOTYPE --dataset imagefolder --data-dir DIR ...

`torchrun` sets RANK, LOCAL_RANK and WORLD_SIZE; `prunenas.train.train` then joins the process group
(NCCL on CUDA, gloo on CPU), puts rank r on cuda:LOCAL_RANK, wraps the model in DistributedDataParallel and
gives each rank its share of every global batch (`--batch-size` is the global batch). Rank 0 alone writes
the run folder (checkpoints, metrics, plot); every rank resumes from its checkpoint. Without those
variables (or with WORLD_SIZE=1) nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from prunenas.errors import PrunenasError


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (rank 0 of 1 when there is none)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise PrunenasError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from None


def world() -> World:
    """The data-parallel world described by torchrun's environment variables."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    return World(rank=_env_int("RANK", 0), size=size, local_rank=_env_int("LOCAL_RANK", 0))


def join(w: World, device_name: str, timeout_s: float | None = None) -> torch.device:
    """Join the process group (once) and return this rank's device: cuda:LOCAL_RANK for CUDA runs, else the
    CPU with gloo. `timeout_s`: how long a collective may wait (a search group's followers wait while
    rank 0 does the study's work between trials)."""
    from prunenas.train import resolve_device

    base = resolve_device(device_name)
    cuda = base.type == "cuda"
    device = torch.device("cuda", w.local_rank) if cuda else base
    if cuda:
        if w.local_rank >= torch.cuda.device_count():
            raise PrunenasError(
                f"LOCAL_RANK {w.local_rank} but this machine has {torch.cuda.device_count()} GPU(s); launch at most "
                "that many processes per node (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s) if timeout_s else None
        dist.init_process_group(backend="nccl" if cuda else "gloo", rank=w.rank, world_size=w.size, timeout=timeout)
    return device


def share(obj: Any = None) -> Any:
    """Rank 0's `obj` on every rank (a picklable object; the other ranks' argument is ignored)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(*values: torch.Tensor) -> None:
    """Sum tensors over the ranks in place (no-op outside a data-parallel run)."""
    if dist.is_available() and dist.is_initialized():
        for v in values:
            dist.all_reduce(v, op=dist.ReduceOp.SUM)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
