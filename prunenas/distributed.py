"""Data-parallel training of one run over several processes (torch DDP), launched by `torchrun`.

    torchrun --nproc-per-node 4 -m prunenas.cli train GENOTYPE --dataset imagefolder --data-dir DIR ...

`torchrun` sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT; `prunenas.train.train`
then joins the process group (NCCL on CUDA, gloo on CPU), puts rank r on cuda:LOCAL_RANK, wraps the model in
DistributedDataParallel and gives each rank its share of every global batch (`--batch-size` is the global batch).
Rank 0 alone writes the run folder (checkpoints, metrics, plot); every rank resumes from its checkpoint. Without
those variables (or with WORLD_SIZE=1) nothing here does anything.

The environment is read and checked in one place, `world()`, which every command calls before it starts
(it imports nothing heavy; an empty variable counts as unset): each value's type and range, and their
consistency (RANK below WORLD_SIZE, the rendezvous address of a run of several processes), so a bad launch
is one line naming the variable instead of torch's rendezvous traceback or a wait without end. `join`
checks that MASTER_ADDR resolves before it starts the process group, and reports a rendezvous that fails
(a port in use, a rank that never comes) the same way.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prunenas.errors import PrunenasError, first_line

if TYPE_CHECKING:
    import torch

#: The variables torchrun sets that prunenas reads.
ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_LAUNCH = "torchrun sets these variables (unset them to run one process)"


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (rank 0 of 1 when there is none)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    master_addr: str = ""
    master_port: int = 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0


def _env_int(name: str, low: int, what: str, high: int | None = None) -> int | None:
    """The integer in environment variable `name` (None when unset or empty), at least `low` (and at most `high`)."""
    value = os.environ.get(name)
    if not value:
        return None
    valid = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        raise PrunenasError(f"environment variable {name}={value!r} is not valid: {what} is {valid}; {_LAUNCH}")
    return number


def world() -> World:
    """The data-parallel world described by torchrun's environment variables, checked: one line naming the
    variable (a PrunenasError) for a value of the wrong type or range, a RANK or LOCAL_RANK that is not below
    its world size, or a run of several processes without its rendezvous address."""
    size = _env_int("WORLD_SIZE", 1, "the number of processes of the run")
    rank = _env_int("RANK", 0, "this process's rank")
    local_rank = _env_int("LOCAL_RANK", 0, "this process's rank on its machine")
    local_size = _env_int("LOCAL_WORLD_SIZE", 1, "the number of processes of the run on this machine")
    port = _env_int("MASTER_PORT", 1, "the TCP port of rank 0's rendezvous", high=65535)
    addr = os.environ.get("MASTER_ADDR") or None
    if addr is not None and any(c.isspace() for c in addr):
        raise PrunenasError(
            f"environment variable MASTER_ADDR={addr!r} is not valid: it is the host name or IP address of rank 0; "
            f"{_LAUNCH}"
        )
    n = size if size is not None else 1
    unset = "is not set (one process)" if size is None else f"is {size}"
    if rank is not None and rank >= n:
        raise PrunenasError(
            f"environment variable RANK={rank} is not below WORLD_SIZE, which {unset}: ranks run from 0 to "
            f"WORLD_SIZE-1; {_LAUNCH}"
        )
    if local_size is not None and local_size > n:
        raise PrunenasError(
            f"environment variable LOCAL_WORLD_SIZE={local_size} is above WORLD_SIZE, which {unset}: a machine runs at "
            f"most all the processes; {_LAUNCH}"
        )
    if local_rank is not None:
        bound, bound_name = (local_size, "LOCAL_WORLD_SIZE") if local_size is not None else (n, "WORLD_SIZE")
        if local_rank >= bound:
            shown = "is not set (one process)" if bound_name == "WORLD_SIZE" and size is None else f"is {bound}"
            raise PrunenasError(
                f"environment variable LOCAL_RANK={local_rank} is not below {bound_name}, which {shown}: local ranks "
                f"run from 0 to {bound_name}-1; {_LAUNCH}"
            )
    if n <= 1:
        return World()
    for name, value in (("RANK", rank), ("MASTER_ADDR", addr), ("MASTER_PORT", port)):
        if value is None:
            raise PrunenasError(
                f"WORLD_SIZE={n} but environment variable {name} is not set: a run of several processes needs RANK, "
                f"MASTER_ADDR and MASTER_PORT; {_LAUNCH}"
            )
    assert rank is not None and addr is not None and port is not None
    return World(rank=rank, size=n, local_rank=local_rank or 0, master_addr=addr.strip(), master_port=port)


def _check_rendezvous(w: World) -> None:
    """MASTER_ADDR must name a host this machine can reach (torch would retry an unknown name until its timeout)."""
    try:
        socket.getaddrinfo(w.master_addr, w.master_port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise PrunenasError(
            f"environment variable MASTER_ADDR={w.master_addr!r} does not resolve to an address ({reason}): it is the "
            f"host name or IP address of rank 0; {_LAUNCH}"
        ) from None


def join(w: World, device_name: str, timeout_s: float | None = None) -> torch.device:
    """Join the process group (once) and return this rank's device: cuda:LOCAL_RANK for CUDA runs, else the
    CPU with gloo. `timeout_s`: how long a collective may wait (a search group's followers wait while
    rank 0 does the study's work between trials)."""
    import torch
    import torch.distributed as dist

    from prunenas.devices import resolve_device

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
        _check_rendezvous(w)
        timeout = timedelta(seconds=timeout_s) if timeout_s else None
        try:
            dist.init_process_group(backend="nccl" if cuda else "gloo", rank=w.rank, world_size=w.size, timeout=timeout)
        except (dist.DistError, ValueError) as exc:
            where = f"MASTER_ADDR={w.master_addr} MASTER_PORT={w.master_port}"
            raise PrunenasError(
                f"rank {w.rank} of {w.size} could not join the process group at {where} "
                f"({first_line(exc, type(exc).__name__, 200)}); check both variables (a port in use: pick another "
                "MASTER_PORT) and that every rank was started"
            ) from None
    return device


def share(obj: Any = None) -> Any:
    """Rank 0's `obj` on every rank (a picklable object; the other ranks' argument is ignored)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(*values: torch.Tensor) -> None:
    """Sum tensors over the ranks in place (no-op outside a data-parallel run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for v in values:
            dist.all_reduce(v, op=dist.ReduceOp.SUM)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
