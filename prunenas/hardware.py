"""What the CPU can do, and how many of its cores a training process may take.

bf16 on a CPU. Mixed precision pays on a CPU only where it has bf16 units, and only for some layers.
Measured on an Intel Xeon with AMX-BF16 at batch 128 (benchmarks/results/2026-12-05-cpu-trainer.md):
bf16 autocast with channels_last trained ResNet-20 about 2x faster than fp32, but MobileNetV2 (depthwise
convolutions) slower, where fp32 with channels_last was 1.7x faster. An AMD EPYC without bf16 units ran
bf16 14-44x slower than fp32. So `cpu_mode` defaults to bf16 only where AMX tiles and AVX-512 BF16 are
detected (torch's own probes) and the convolutions are dense, and `--amp` on a CPU without bf16
instructions is refused rather than silently made slow.

Threads. A process that takes every core beside another that does the same runs far slower than its
share: the two oversubscribe the cores. `share_cores()` registers the process in a per-user folder of
this machine (one file per live training process) and takes cores // (live processes) threads, at least
one; the registration ends with the process. An explicit --threads wins.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import platform
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from prunenas.errors import PrunenasError


@dataclass(frozen=True)
class CpuInfo:
    model: str  # "model name" of /proc/cpuinfo (or the platform's processor name)
    cores: int  # cores this process may run on (taskset and cpusets count)
    capability: str  # torch's vectorised kernels: DEFAULT, AVX2, AVX512, ...
    avx512_bf16: bool
    amx: bool  # AMX tiles (AMX-BF16 / AMX-INT8 matrix units)
    vnni: bool = False  # AVX-512 VNNI or AVX-VNNI: int8 dot products (what INT8 inference runs on)
    amx_int8: bool = False  # AMX-INT8 tiles (the cpuinfo flag; Linux only)

    @property
    def bf16(self) -> bool:
        """Whether bf16 has native instructions here (otherwise it is emulated, and slow)."""
        return self.avx512_bf16 or self.amx

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bf16": self.bf16}


def _probe(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)  # private probes of torch.cpu: absent in some builds
    if fn is None:
        return False
    try:
        return bool(fn())
    except Exception:  # a probe that fails means "not detected"
        return False


@cache
def cpu_info() -> CpuInfo:
    """The CPU this process runs on (read once)."""
    model = ""
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:  # the first processor's entry
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    model = model or platform.processor() or platform.machine()
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an unknown capability is recorded as such
        capability = "unknown"
    return CpuInfo(
        model=model,
        cores=available_cores(),
        capability=capability,
        avx512_bf16=_probe("_is_avx512_bf16_supported"),
        amx=_probe("_is_amx_tile_supported"),
        vnni=_probe("_is_vnni_supported") or bool(flags & {"avx512_vnni", "avx_vnni"}),
        amx_int8="amx_int8" in flags,
    )


def available_cores() -> int:
    """Cores this process may run on (taskset and cpusets count, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cpu_amp_default() -> bool:
    """Whether training on this CPU defaults to bf16 autocast: only where bf16 runs on matrix units (AMX)
    with native AVX-512 BF16 beside them, the case measured to be faster at equal accuracy."""
    info = cpu_info()
    return info.amx and info.avx512_bf16


def cpu_mode(amp: bool | None, *, grouped: bool) -> tuple[bool, bool, str]:
    """(bf16 autocast, channels_last, why) for training on this CPU; `grouped`: the model has grouped or
    depthwise convolutions. Measured on an Intel Xeon with AMX-BF16, 1 thread, batch 128
    (benchmarks/results/2026-12-05-cpu-trainer.md): ResNet-20 319 img/s in fp32, 696 in bf16 with
    channels_last; MobileNetV2 (depthwise) 294 in fp32, 505 in fp32 with channels_last, but 224 in bf16 with
    channels_last. So where AMX-BF16 is detected the default is bf16 with channels_last for dense
    convolutions and fp32 with channels_last for grouped ones; elsewhere fp32 as it always ran. --no-amp is
    fp32 in the layout it always had (NCHW; --channels-last sets it); --amp without bf16 instructions is
    refused."""
    info = cpu_info()
    if amp is False:
        return False, False, "fp32 (--no-amp or the protocol)"
    if amp is True:
        if not info.bf16:
            raise PrunenasError(
                f"--amp trains in bfloat16, but this CPU ({info.model}) has no bf16 instructions (no AVX-512 BF16 "
                "or AMX), where bf16 runs many times slower than fp32; drop --amp (or pass --no-amp)"
            )
        return True, True, "bf16 autocast (--amp)"
    if not cpu_amp_default():
        return False, False, "fp32 (default on this CPU: no AMX-BF16 detected)"
    if grouped:
        return (
            False,
            True,
            ("fp32 with channels_last (default on this CPU for grouped or depthwise convolutions: slower in bf16)"),
        )
    return True, True, "bf16 autocast (default on this CPU: AMX-BF16 detected)"


# -- sharing the cores -------------------------------------------------------------------------------------------
def _registry() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"prunenas-{uid}" / "training"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this machine is alive (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_REGISTERED: set[int] = set()


def _unregister(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def share_cores() -> int:
    """Register this process as a training process of this machine and return its share of the cores:
    available cores // live training processes (this one included), at least 1. Registering twice in
    one process counts once."""
    folder = _registry()
    pid = os.getpid()
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        mine = folder / str(pid)
        if pid not in _REGISTERED:
            mine.touch()
            _REGISTERED.add(pid)
            atexit.register(_unregister, mine)
    live = 0
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if not entry.name.isdigit():
                continue
            if pid_alive(int(entry.name)):
                live += 1
            else:  # a process that died without cleaning up
                _unregister(entry)
    return max(1, available_cores() // max(1, live))
