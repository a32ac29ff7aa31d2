"""The GPU suite's plan, context and helpers (benchmarks/gpu_suite.py runs it; see its docstring): the
sizes and time caps of each part (`Plan`, `make_plan`; --tiny shrinks them), the targets of issue #9, what
every part reads (`Context`: device, data, work folder, the time left) and the subprocess, tarball and
time-cap helpers the parts share.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import gc
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import common
import torch

REPO = common.REPO
PARTS = ("a", "b", "c", "d")
FORMAT = 2
DEFAULT_DATA = ".data/cifar10-jpeg.tar.gz"
SPACE = "resnet56_channels"
GENOTYPE_B = "li2017_resnet56_b"
MODELS = {"ResNet-56": None, "ResNet-56-B": GENOTYPE_B}  # label -> shipped genotype (None: the reference)

# Targets of issue #9.
TARGET_A_RATIO = 5.0
TARGET_B_SECONDS = 180.0
TARGET_B_EPOCHS = 160
TARGET_C_RATIO = 2.0
TARGETS = {
    "a": f"trainer >= {TARGET_A_RATIO:g}x the reference loop's images/s (same GPU, model and batch size)",
    "b": f"{TARGET_B_EPOCHS} epochs of ResNet-56 (standard recipe) in <= {TARGET_B_SECONDS / 60:g} minutes on one "
    "H100/H200 (projected from the epochs that fit in the part's window)",
    "c": f">= {TARGET_C_RATIO:g}x the candidates per hour of one worker, from several workers on one GPU",
    "d": "a real search end to end: Pareto front, the best retrained, ONNX export passing ONNX Runtime parity",
}

# Variants of part a: keyword arguments of train_throughput's loops (attributes of their args namespace).
VARIANTS: dict[str, dict[str, Any]] = {
    "ref": {"loop": "reference"},
    "fp32": {"amp": False, "channels_last": False},
    "bf16cl": {"amp": True, "channels_last": True},
    "graphs": {"amp": True, "channels_last": True, "cuda_graphs": True},
    "compile": {"amp": True, "channels_last": True, "compile": True},
    "compile-ro": {"amp": True, "channels_last": True, "compile": True, "compile_mode": "reduce-overhead"},
    "graphs-fp32": {"amp": False, "channels_last": True, "cuda_graphs": True},
}
VARIANT_TEXT = {
    "ref": "reference loop: DataLoader + per-image transforms, fp32, loss.item() per step",
    "fp32": "prunenas loop (prunenas.train.TrainStep), fp32, NCHW",
    "bf16cl": "prunenas loop, bf16 autocast + channels_last (the trainer's CUDA default)",
    "graphs": "bf16cl + the whole step as one CUDA graph (StepRunner; eager where there is no CUDA)",
    "compile": "bf16cl + torch.compile (default mode)",
    "compile-ro": "bf16cl + torch.compile(mode='reduce-overhead')",
    "graphs-fp32": "fp32 channels_last + the whole step as one CUDA graph",
}

# --tiny trains parts b, c and d on this ResNet-8 (one block per stage, narrow) so that the whole path runs in
# minutes on a CPU; part a keeps ResNet-56 (a few steps).
TINY_SPACE_TOML = common.tiny_resnet8_toml("gpu_suite_tiny_resnet8")


class SuiteError(Exception):
    """Bad input or a missing prerequisite: reported as one line, exit 2."""


@dataclass
class Plan:
    """Every size and time cap of the suite (the --tiny preset shrinks them to seconds)."""

    caps: dict[str, float]
    budget_s: float
    min_s: dict[str, float]  # a part starts only with at least this many seconds left
    # a
    a_models: list[str]
    a_variants: list[str]
    a_extra_variants: list[str]  # timed after every part, only when time is left (torch.compile)
    a_batch_size: int | None
    a_steps: int
    a_warmup: int
    a_ref_workers: int
    a_repeat: bool
    # b
    b_window_s: float
    b_train_subset: int | None
    b_eval_every: int
    b_compile: bool
    # c
    c_workers: list[int]
    c_window_s: float
    c_proxy_epochs: int
    c_train_subset: int | None
    c_threads: int | None
    c_startup_timeout_s: float
    c_drain_s: float
    # d
    d_trials: int
    d_proxy_epochs: int
    d_final_epochs: int
    d_train_subset: int | None
    d_proposers: str
    d_budget: str
    d_workers: int
    d_reserve_s: float
    d_latency_repeats: int


def make_plan(args: argparse.Namespace, device: torch.device) -> Plan:
    cuda = device.type == "cuda"
    if args.tiny:
        plan = Plan(
            # ~2-3 minutes on 2 cores (more on a busy machine; each part stops at its cap all the same)
            caps={"a": 75, "b": 30, "c": 75, "d": 120},
            budget_s=330,
            min_s={"a": 10, "b": 10, "c": 20, "d": 40},
            a_models=["ResNet-56"],
            a_variants=["fp32", "bf16cl", "graphs", "ref"],
            # the leftover-time slot: compile costs a minute of C++ compilation on a CPU, so --tiny checks the
            # slot with a cheap variant (ask for compile with --a-extra compile)
            a_extra_variants=["graphs-fp32"],
            a_batch_size=4,
            a_steps=2,
            a_warmup=1,
            a_ref_workers=0,
            a_repeat=False,
            b_window_s=8,
            b_train_subset=256,
            b_eval_every=1,
            b_compile=False,
            c_workers=[1, 2],
            c_window_s=6,
            c_proxy_epochs=2,
            c_train_subset=128,
            c_threads=None if cuda else 1,
            c_startup_timeout_s=90,
            c_drain_s=30,
            d_trials=3,
            d_proxy_epochs=1,
            d_final_epochs=8,
            d_train_subset=None,  # all 1294 digits: the retrained winner must settle for the parity check
            d_proposers="uniform",
            d_budget="smoke",
            d_workers=1,
            d_reserve_s=30,
            d_latency_repeats=5,
        )
    else:
        plan = Plan(
            # 360 s: with the wrapper's set-up (~20 s) the command ends inside a run call's timeout_s=420, and two
            # such calls plus a machine start fit in 15 minutes of device time
            caps={"a": 75, "b": 135, "c": 110, "d": 180},
            budget_s=360,
            min_s={"a": 20, "b": 30, "c": 45, "d": 100},
            a_models=["ResNet-56"],
            a_variants=["fp32", "bf16cl", "graphs", "ref"],
            a_extra_variants=["compile"] if cuda else [],  # tens of seconds of compilation per architecture
            a_batch_size=None,  # the space's recipe (64 for ResNet-56)
            a_steps=200,
            a_warmup=20,
            a_ref_workers=4,
            a_repeat=True,  # bf16cl timed twice: the spread says what difference is noise
            b_window_s=120,
            b_train_subset=None,
            b_eval_every=1,  # the trainer's default (validation every epoch)
            b_compile=False,
            c_workers=[1, 3],
            c_window_s=30,
            c_proxy_epochs=8,  # the fast budget's proxy, on part d's 5,000 images: c predicts d's trial rate
            c_train_subset=5000,
            c_threads=None if cuda else 1,
            c_startup_timeout_s=120,
            c_drain_s=20,
            d_trials=6,
            d_proxy_epochs=8,
            d_final_epochs=10,
            d_train_subset=5000,
            d_proposers="uniform",  # seeds 3 trials (0.3/0.5/0.7 of the MACs); TPE samples the other 3
            d_budget="fast",
            d_workers=1,
            d_reserve_s=45,
            d_latency_repeats=50,
        )
    for part in PARTS:
        value = getattr(args, f"cap_{part}")
        if value is not None:
            plan.caps[part] = value
            plan.min_s[part] = min(plan.min_s[part], value)
    overrides = {
        "budget_s": args.budget_s,
        "a_batch_size": args.a_batch_size,
        "a_steps": args.a_steps,
        "a_warmup": args.a_warmup,
        "a_ref_workers": args.a_ref_workers,
        "b_window_s": args.b_window,
        "b_eval_every": args.b_eval_every,
        "c_window_s": args.c_window,
        "c_proxy_epochs": args.c_proxy_epochs,
        "c_train_subset": args.c_train_subset,
        "d_trials": args.d_trials,
        "d_proxy_epochs": args.d_proxy_epochs,
        "d_final_epochs": args.d_final_epochs,
        "d_train_subset": args.d_train_subset,
        "d_proposers": args.d_proposers,
        "d_workers": args.d_workers,
        "d_reserve_s": args.d_reserve,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(plan, name, value)
    if args.a_models:
        plan.a_models = _split(args.a_models, MODELS, "--a-models")
    if args.a_variants:
        plan.a_variants = _split(args.a_variants, VARIANTS, "--a-variants")
    if args.a_extra is not None:
        plan.a_extra_variants = _split(args.a_extra, VARIANTS, "--a-extra") if args.a_extra.strip() else []
    if args.no_a_repeat:
        plan.a_repeat = False
    if args.b_compile:
        plan.b_compile = True
    if args.c_workers:
        try:
            plan.c_workers = [int(v) for v in args.c_workers.split(",") if v.strip()]
        except ValueError:
            raise SuiteError(f"--c-workers takes counts like 1,3 (got {args.c_workers!r})") from None
        if not plan.c_workers or min(plan.c_workers) < 1:
            raise SuiteError(f"--c-workers takes counts >= 1 (got {args.c_workers!r})")
    for name in ("budget_s", "b_window_s", "c_window_s"):
        if getattr(plan, name) <= 0:
            raise SuiteError(f"--{name.removesuffix('_s').replace('_', '-')} must be > 0")
    if plan.a_steps < 1 or plan.a_warmup < 0:
        raise SuiteError("--a-steps must be >= 1 and --a-warmup >= 0")
    return plan


def _split(text: str, valid: Sequence[str] | dict[str, Any], flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in valid]
    if bad or not items:
        raise SuiteError(f"{flag}: unknown {', '.join(bad) or '(empty)'}; valid: {', '.join(valid)}")
    return items


# --------------------------------------------------------------------------------------------- context


@dataclass
class Context:
    args: argparse.Namespace
    plan: Plan
    device: torch.device
    data_path: Path | None
    dataset: str
    work: Path
    out_dir: Path | None
    space_bcd: str = SPACE  # the space of parts b, c and d (--tiny: the ResNet-8 TOML written into work/)
    t0: float = field(default_factory=time.monotonic)
    _data: Any = None
    data_load_s: float | None = None
    save: Callable[[str, dict[str, Any]], None] = lambda part, result: None  # write what a part has so far

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        """Seconds left of the command's budget."""
        return self.plan.budget_s - (time.monotonic() - self.t0)

    def data(self) -> Any:
        """The dataset (val 10%, full train set), decoded once; loading it also fills the cache the
        subprocesses of parts c and d read."""
        if self._data is None:
            from prunenas.data import load_dataset

            t = time.perf_counter()
            say(f"loading {self.dataset}" + (f" from {self.data_path}" if self.dataset != "digits" else ""))
            self._data = load_dataset(self.dataset, str(self.data_path) if self.data_path else None, seed=0)
            self.data_load_s = time.perf_counter() - t
            say(f"  {len(self._data.train)} train / {len(self._data.val)} val images in {self.data_load_s:.1f} s")
        return self._data

    def data_dir(self, dataset: str | None = None) -> str | None:
        dataset = dataset or self.dataset
        return str(self.data_path) if dataset != "digits" and self.data_path is not None else None

    def cli(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "prunenas.cli", *argv]

    def data_args(self, dataset: str | None = None) -> list[str]:
        dataset = dataset or self.dataset
        folder = self.data_dir(dataset)
        return ["--dataset", dataset] + (["--data-dir", folder] if folder else [])


def say(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def _release_gpu() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd` with output to `log`; past `timeout`: SIGINT (a clean stop), then SIGKILL after 15 s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    timed_out = False
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", **(env or {})},
        )  # fmt: skip
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    return {"rc": rc, "timed_out": timed_out, "seconds": time.monotonic() - t, "log": str(log)}


def arcname(path: Path) -> str:
    """The name inside a tarball: relative to the repository (extract there), else the folder's name."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def tail(path: Path | str, n: int = 15) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def pack(out: Path, members: Sequence[tuple[Path, str]], skip: Callable[[Path], bool] = lambda p: False) -> str | None:
    """Write a .tar.gz of (path, name inside) pairs, leaving out files for which `skip` is true."""
    present = [(p, a) for p, a in members if p.exists()]
    if not present:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for path, name in present:
            tar.add(path, arcname=name, filter=lambda ti: None if skip(Path(ti.name)) else ti)
    return str(out)


@contextlib.contextmanager
def hard_stop(seconds: float) -> Iterator[None]:
    """KeyboardInterrupt in the main thread after `seconds` unless the block has ended: the in-process parts
    (a, b) stop at their cap even inside a step that takes longer than planned (compile, a slow epoch)."""
    done = threading.Event()

    def fire() -> None:
        if not done.is_set():
            _thread.interrupt_main()

    timer = threading.Timer(max(1.0, seconds), fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        done.set()
        timer.cancel()


def fresh_dir(path: Path, work: Path) -> None:
    """Empty a folder of the suite's own (only ever one inside the work folder) so a part measures from scratch."""
    if path.resolve().is_relative_to(work.resolve()) and path.resolve() != work.resolve():
        shutil.rmtree(path, ignore_errors=True)


def fmt(v: Any, spec: str = ".1f", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)
