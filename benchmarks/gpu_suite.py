"""GPU benchmark suite of issue #9, sized for one ~6-minute command of a 15-minute device budget.

Parts, in order of importance (each with its own time cap; --budget-s caps the whole command, default 360 s):
  a  trainer images/s on ResNet-56: first the correctness check of the CUDA-graph step runner, then the prunenas
     loop in fp32, bf16 + channels_last (the trainer's CUDA default) and as one CUDA graph, and the conventional
     reference loop (benchmarks/train_throughput.py's loops; a fixed number of timed steps after warm-up, CUDA
     events); torch.compile only at the end of the command, when time is left
  b  as many epochs of the standard ResNet-56 recipe (160 epochs, batch 64, CIFAR-10) as fit in about 2 minutes,
     with the trainer itself (prunenas.train.train): seconds per epoch and the projected 160-epoch time
  c  1 and 3 worker processes on one GPU, each training proxy candidates back to back: candidates per hour
  d  only when time is left: a 6-trial search (`prunenas search`), the best retrained, exported to ONNX with
     ONNX Runtime parity, and the export's ONNX Runtime latency (CUDA provider where this onnxruntime has it)

The report states the distance to each target: a >= 5x the reference loop's images/s, b 160 epochs in <= 3
minutes (projected), c >= 2x the candidates per hour of one worker from several workers on one GPU.

On the GPU machine it runs through benchmarks/gpu_suite.sh (see benchmarks/README.md for the `run` call):

    bash benchmarks/gpu_suite.sh                               # a, b, c, and d if time is left: ~6 minutes
    python benchmarks/gpu_suite.py --device cpu --tiny         # the whole path on a CPU, a few minutes

Results: <results-dir>/<tag>.md and .json (tag: <UTC date>-<device>; benchmarks/results/ for real GPU runs,
/tmp/prunenas-gpu-suite/ for CPU and --tiny runs), merged with an existing file of the same tag, so the parts
of several commands end in one report; --out-dir also receives them plus the part b and d folders (.tar.gz).
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from train_throughput import StepRunner, prunenas_loop, reference_loop

REPO = Path(__file__).resolve().parent.parent
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
TINY_SPACE_TOML = """\
# Written by benchmarks/gpu_suite.py --tiny: a ResNet-8 for the CPU dry run of parts b, c and d.
extends = "resnet20_channels"
name = "gpu_suite_tiny_resnet8"
[model]
depth = 8
shortcut = "B"
widths = [6, 8, 12]
[recipe]
batch_size = 32
"""


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


# --------------------------------------------------------------------------------------------- part a


def check_step_runner(space: Any, genotype: Any, data: Any, device: torch.device) -> dict[str, Any]:
    """Correctness of the graph-ready step before timing it: (1) its SGD matches torch.optim.SGD (momentum,
    weight decay) on a small model; (2) on CUDA, the captured graph replays to the same weights as the same
    step run eagerly (ResNet-56-B, fp32, same batches). Relative L2 errors over all parameters/buffers."""
    from prunenas.data import DeviceBatches

    def rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a if a[k].is_floating_point())
        den = sum(float(a[k].double().pow(2).sum()) for k in a if a[k].is_floating_point())
        return math.sqrt(num / max(den, 1e-30))

    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(8, 3, 8, 8, generator=gen) for _ in range(4)]
    ys = [torch.randint(0, 10, (8,), generator=gen) for _ in range(4)]

    def small() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
        )

    ref = small()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for x, y in zip(xs, ys, strict=True):
        loss = F.cross_entropy(ref(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    mine = small()
    runner = StepRunner(mine, xs[0], ys[0], lr=0.1, momentum=0.9, weight_decay=1e-4, capture=False, warmup=0)
    for x, y in zip(xs, ys, strict=True):
        runner.step(x, y)
    out["sgd_vs_torch_rel_err"] = rel(ref.state_dict(), mine.state_dict())
    out["sgd_ok"] = out["sgd_vs_torch_rel_err"] < 1e-5
    if device.type == "cuda":
        batches = DeviceBatches(
            data.train, batch_size=64, device=device, mean=data.mean, std=data.std, augment=True, shuffle=True,
            drop_last=True, seed=0, channels_last=True,
        )  # fmt: skip
        it = batches.epoch(0)
        seq = [next(it) for _ in range(11)]
        states = []
        for capture in (False, True):
            torch.manual_seed(0)
            model = space.build(genotype, num_classes=data.num_classes).to(device)
            model.to(memory_format=torch.channels_last)
            r = StepRunner(model, *seq[0], lr=0.05, momentum=0.9, weight_decay=1e-4, amp=False, capture=capture)
            for x, y in seq[1:]:
                r.step(x, y)
            torch.cuda.synchronize(device)
            states.append({k: v.detach().cpu() for k, v in model.state_dict().items()})
            out["graph_captured" if capture else "eager_loss_sum"] = r.captured if capture else float(r.loss_sum)
            if capture:
                out["graph_loss_sum"] = float(r.loss_sum)
            del model, r
        out["graph_vs_eager_rel_err"] = rel(states[0], states[1])
        out["graph_ok"] = out["graph_vs_eager_rel_err"] < 1e-3 and math.isfinite(out["graph_loss_sum"])
        _release_gpu()
    return out


def _a_models(names: Sequence[str]) -> list[tuple[str, Any]]:
    from prunenas.genotype import Genotype
    from prunenas.spaces import get_space
    from prunenas.spaces.registry import genotype_path

    space = get_space(SPACE)
    out = []
    for label in names:
        shipped = MODELS[label]
        out.append(
            (label, space.reference() if shipped is None else space.validate(Genotype.load(genotype_path(shipped))))
        )
    return out


def _variant_estimate(ctx: Context, variant: str) -> float:
    """Seconds a variant needs at least (setup + warm-up + timed steps); one that would not fit is skipped."""
    spec = VARIANTS[variant]
    if ctx.args.tiny or ctx.plan.a_steps < 20:
        return 30.0 if spec.get("compile") else 3.0
    if spec.get("compile"):
        return 90.0  # tens of seconds of compilation for the forward and the backward, then the steps
    if ctx.cuda:
        return 15.0 if variant == "ref" else 8.0
    return 60.0


def time_variants(
    ctx: Context, result: dict[str, Any], models: Sequence[tuple[str, Any]], variants: Sequence[str], deadline: float
) -> None:
    """Time each (model, variant); rows go to result["rows"]. A variant that would not end by `deadline`
    (monotonic) is skipped; one that fails is recorded and the others go on; one still running 10 s past the
    deadline is stopped (KeyboardInterrupt) and recorded."""
    current: list[str] = []
    try:
        with hard_stop(min(deadline - time.monotonic(), ctx.left()) + 10):
            _time_variants(ctx, result, models, variants, deadline, current)
    except KeyboardInterrupt:
        label, name = current[-2:] if len(current) >= 2 else ("?", "?")
        result["rows"].append({"model": label, "variant": name, "error": "stopped: still running at the cap"})
        say(f"  {label:12s} {name:18s} stopped: still running at the cap")
        if any(VARIANTS[v].get("compile") for v in variants):
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
        _release_gpu()


def _time_variants(
    ctx: Context,
    result: dict[str, Any],
    models: Sequence[tuple[str, Any]],
    variants: Sequence[str],
    deadline: float,
    current: list[str],
) -> None:
    from prunenas.spaces import get_space

    space = get_space(SPACE)
    data = ctx.data()
    batch = result["settings"]["batch_size"]
    for label, genotype in models:
        seen = {r["variant"].split(" ")[0] for r in result["rows"] if r["model"] == label}
        for variant in variants:
            name = variant if variant not in seen else f"{variant} (again)"
            seen.add(variant)
            spec = VARIANTS[variant]
            left = min(deadline - time.monotonic(), ctx.left())
            if left < _variant_estimate(ctx, variant):
                result["rows"].append({"model": label, "variant": name, "skipped": f"time cap ({left:.0f} s left)"})
                say(f"  {label:12s} {name:18s} skipped: {left:.0f} s left of the cap")
                continue
            ns = argparse.Namespace(
                batch_size=batch, steps=ctx.plan.a_steps, warmup=ctx.plan.a_warmup, workers=ctx.plan.a_ref_workers,
                seed=0, **{k: v for k, v in spec.items() if k != "loop"},
            )  # fmt: skip
            current[:] = [label, name]
            torch.manual_seed(0)
            model = space.build(genotype, num_classes=data.num_classes).to(ctx.device)
            stats: dict[str, Any] = {}
            loop = reference_loop if spec.get("loop") == "reference" else prunenas_loop
            try:
                ips = loop(model, data, ns, ctx.device, stats)
            except Exception as exc:  # one variant failing (e.g. compile) must not end the part
                traceback.print_exc()
                result["rows"].append({"model": label, "variant": name, "error": f"{type(exc).__name__}: {exc}"})
                say(f"  {label:12s} {name:18s} FAILED: {type(exc).__name__}: {str(exc)[:200]}")
            else:
                row = {"model": label, "variant": name, "images_per_s": ips, **stats}
                row["ms_per_step"] = 1000 * stats["seconds"] / max(1, stats["steps"])
                result["rows"].append(row)
                ctx.save("a", {**result, "status": "running"})
                say(
                    f"  {label:12s} {name:18s} {ips:9.0f} img/s  {row['ms_per_step']:7.2f} ms/step  "
                    f"setup {stats['setup_s']:5.1f} s  loss {stats['loss_mean']:.3f}"
                )
            finally:
                del model
                if spec.get("compile"):
                    with contextlib.suppress(Exception):
                        torch._dynamo.reset()
                _release_gpu()
            current.clear()


def finish_a(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Ratios against the reference loop of the same model, loss agreement, noise, the verdict."""
    result["notes"] = [n for n in result.get("notes", []) if not n.startswith("loss check: ")]
    result.pop("noise", None)
    for label in dict.fromkeys(r["model"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["model"] == label and "images_per_s" in r]
        ref = next((r["images_per_s"] for r in rows if r["variant"] == "ref"), None)
        for r in rows:
            r["vs_reference"] = r["images_per_s"] / ref if ref else None
        base = [r for r in rows if r["variant"] == "bf16cl"]
        for r in rows:
            if r["variant"] != "ref" and base and r.get("loss_mean") is not None:
                d = abs(r["loss_mean"] - base[0]["loss_mean"]) / max(abs(base[0]["loss_mean"]), 1e-9)
                r["loss_vs_bf16cl"] = d
                if ctx.cuda and ctx.plan.a_steps >= 100 and d > 0.15:
                    result["notes"].append(
                        f"loss check: {label} {r['variant']}: mean loss {r['loss_mean']:.3f} differs by "
                        f"{100 * d:.0f}% from bf16cl's {base[0]['loss_mean']:.3f} (same init and batches)"
                    )
        repeats = [r["images_per_s"] for r in rows if r["variant"].startswith("bf16cl")]
        if len(repeats) == 2:
            result.setdefault("noise", {})[label] = abs(repeats[0] - repeats[1]) / statistics.mean(repeats)
    main = [r for r in result["rows"] if r["model"] == "ResNet-56" and r.get("vs_reference")]
    default = next((r for r in main if r["variant"] == "bf16cl"), None)
    best = max((r for r in main if r["variant"] != "ref"), key=lambda r: r["vs_reference"], default=None)
    result["verdict"] = {
        "target": TARGETS["a"],
        "trainer_default_ratio": default["vs_reference"] if default else None,
        "best_variant": best["variant"] if best else None,
        "best_ratio": best["vs_reference"] if best else None,
        "met_by_trainer": None if default is None else default["vs_reference"] >= TARGET_A_RATIO,
        "met_by_best_variant": None if best is None else best["vs_reference"] >= TARGET_A_RATIO,
    }
    result["status"] = "ok" if not any("skipped" in r or "error" in r for r in result["rows"]) else "partial"
    return result


def part_a(ctx: Context, cap: float) -> dict[str, Any]:
    from prunenas.spaces import get_space

    deadline = time.monotonic() + cap
    plan = ctx.plan
    space = get_space(SPACE)
    data = ctx.data()
    batch = plan.a_batch_size or int(space.recipe.get("batch_size", 64))
    models = _a_models(plan.a_models)
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True  # as the trainer does; the reference loop gets it too
    result: dict[str, Any] = {
        "settings": {
            "batch_size": batch,
            "steps": plan.a_steps,
            "warmup": plan.a_warmup,
            "ref_workers": plan.a_ref_workers,
            "variants": {v: VARIANT_TEXT[v] for v in dict.fromkeys([*plan.a_variants, *plan.a_extra_variants])},
            "extra_variants": plan.a_extra_variants,
            "cudnn_benchmark": ctx.cuda,
            "timing": "CUDA events around the timed steps" if ctx.cuda else "perf_counter",
        },
        "rows": [],
        "notes": [],
    }
    say("part a: checking the graph-ready step (SGD vs torch.optim.SGD; CUDA graph vs the same step eagerly)")
    try:
        check_model = _a_models(["ResNet-56-B"])[0][1]
        result["step_check"] = check_step_runner(space, check_model, data, ctx.device)
    except Exception as exc:  # the timings still run; the report says the check failed
        traceback.print_exc()
        result["step_check"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    say(f"  {result['step_check']}")
    chk = result["step_check"]
    if chk.get("error") or chk.get("sgd_ok") is False or chk.get("graph_ok") is False:
        result["notes"].append(f"the step check FAILED ({chk}): do not trust the graphs variants' numbers")
    if not ctx.cuda:
        result["notes"].append("CPU: bf16 autocast is off (the trainer uses it on CUDA only); no graph capture")
    variants = list(plan.a_variants)
    if plan.a_repeat and "bf16cl" in variants:
        variants.append("bf16cl")  # the same variant twice, last: the spread says what difference is noise
    time_variants(ctx, result, models, variants, deadline)
    if plan.a_extra_variants:
        result["notes"].append(
            f"{', '.join(plan.a_extra_variants)}: timed at the end of the command, only if time is left"
        )
    return finish_a(ctx, result)


def extra_a(ctx: Context, a: dict[str, Any], cap: float) -> dict[str, Any]:
    """The leftover-time variants of part a (torch.compile), appended to this command's part a."""
    t = time.monotonic()
    say(f"part a, leftover time: {', '.join(ctx.plan.a_extra_variants)} (cap {cap:.0f} s)")
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True
    time_variants(ctx, a, _a_models(ctx.plan.a_models), ctx.plan.a_extra_variants, time.monotonic() + cap)
    a["extra_seconds"] = time.monotonic() - t
    return finish_a(ctx, a)


# --------------------------------------------------------------------------------------------- part b


def part_b(ctx: Context, cap: float) -> dict[str, Any]:
    """The standard recipe with the trainer itself (prunenas.train.train, as `prunenas train SPACE --recipe
    standard --out DIR` runs it: checkpoint every epoch, validation every --eval-every epochs), fresh, for
    as many epochs as fit in the window; the 160-epoch time projected from them."""
    from prunenas.config import RunSettings
    from prunenas.data import load_dataset
    from prunenas.recipes import make_recipe
    from prunenas.spaces import get_space
    from prunenas.train import StopTraining, train

    t_part = time.monotonic()
    plan = ctx.plan
    space = get_space(ctx.space_bcd)
    dataset = ctx.dataset if ctx.args.tiny else "cifar10"  # the real part b always trains on CIFAR-10
    if dataset == ctx.dataset and not plan.b_train_subset:
        data = ctx.data()
    else:
        data = load_dataset(dataset, ctx.data_dir(dataset), train_subset=plan.b_train_subset, seed=0)
    recipe = make_recipe("standard", space.recipe)
    settings = RunSettings(
        device=str(ctx.device), seed=0, quiet=True, plot=False, eval_every=plan.b_eval_every,
        compile=plan.b_compile, resume=False,
    )  # fmt: skip
    run_dir = ctx.work / f"b-{space.name}-standard"
    fresh_dir(run_dir, ctx.work)
    steps_per_epoch = len(data.train) // recipe.batch_size if len(data.train) > recipe.batch_size else 1
    window = min(plan.b_window_s, cap - (time.monotonic() - t_part) - 5)
    hard_s = cap - (time.monotonic() - t_part) - 3
    equivalent = (
        f"prunenas train {ctx.space_bcd} --recipe standard --out {run_dir} --eval-every {plan.b_eval_every} "
        f"{' '.join(ctx.data_args(dataset))}"
        + (f" --train-subset {plan.b_train_subset}" if plan.b_train_subset else "")
        + (" --compile" if plan.b_compile else "")
    )
    say(
        f"part b: {space.name}, standard recipe ({recipe.epochs} epochs, batch {recipe.batch_size}, "
        f"{steps_per_epoch} steps/epoch) for {window:.0f} s"
    )
    marks: list[float] = []
    history: list[Any] = []
    t_start = time.perf_counter()

    def on_epoch(m: Any) -> None:
        now = time.perf_counter()
        walls = [b - a for a, b in itertools.pairwise([t_start, *marks, now])]
        marks.append(now)
        history.append(m)
        nxt = statistics.median(walls[1:]) if len(walls) > 1 else walls[0]
        if now - t_start + nxt > window:
            raise StopTraining("gpu_suite: part b window")

    # An epoch that runs past the cap is stopped (KeyboardInterrupt; the trainer has saved every finished
    # epoch, and the part reports those).
    interrupted = False
    res = None
    try:
        with hard_stop(hard_s):
            res = train(space, space.reference(), data, recipe, settings, out_dir=run_dir, callbacks=[on_epoch])
    except KeyboardInterrupt:
        interrupted = True
        say("  part b: stopped at its cap inside an epoch")
    t_end = time.perf_counter()
    walls = [b - a for a, b in itertools.pairwise([t_start, *marks])]
    done_epochs = len(history)
    finished = bool(res is not None and res.finished)
    steady = walls[1:] or walls
    median_wall = statistics.median(steady) if steady else None
    train_s = [float(h.seconds) for h in history]
    median_train = statistics.median(train_s[1:] or train_s) if train_s else None
    projected = None
    if median_wall is not None:
        projected = sum(walls) + (recipe.epochs - done_epochs) * median_wall
    value = (t_end - t_start) if finished else projected
    ms_step = 1000 * median_train / steps_per_epoch if median_train else None
    need_epoch = TARGET_B_SECONDS / TARGET_B_EPOCHS
    val = [(h.epoch, h.val_acc) for h in history if h.val_acc is not None]
    result: dict[str, Any] = {
        "command": equivalent,
        "run_dir": str(run_dir),
        "space": space.name,
        "dataset": dataset,
        "train_images": len(data.train),
        "batch_size": recipe.batch_size,
        "steps_per_epoch": steps_per_epoch,
        "window_s": window,
        "elapsed_s": t_end - t_start,
        "epochs_done": done_epochs,
        "epochs_total": recipe.epochs,
        "finished": finished,
        "interrupted": interrupted,
        "stopped": None if res is None else res.stopped,
        "epoch_wall_s": walls,
        "median_epoch_wall_s": median_wall,
        "first_epoch_wall_s": walls[0] if walls else None,
        "median_epoch_train_s": median_train,
        "ms_per_step": ms_step,
        "images_per_s_median": statistics.median([h.images_per_s for h in history[1:] or history]) if history else None,
        "non_training_share": (1 - median_train / median_wall) if median_train and median_wall else None,
        "projected_total_s": projected,
        "measured_total_s": (t_end - t_start) if finished else None,
        "last_val": val[-1] if val else None,
        "test_acc": None if res is None else res.test_acc,
        "needed_epoch_s": need_epoch,
        "needed_ms_per_step": 1000 * need_epoch / steps_per_epoch,
        "notes": [],
    }
    result["verdict"] = {
        "target": TARGETS["b"],
        "value_s": value,
        "kind": "measured" if finished else f"projected from {done_epochs} epoch(s)",
        "met": None if value is None else value <= TARGET_B_SECONDS,
        "factor_to_target": None if value is None else value / TARGET_B_SECONDS,
    }
    result["status"] = "ok" if done_epochs >= 2 or finished else ("partial" if done_epochs else "failed")
    if done_epochs == 0:
        result["error"] = "no epoch finished inside the cap: raise --cap-b / --b-window"
    elif done_epochs == 1:
        result["notes"].append("one epoch only: the projection uses the first epoch (cudnn autotuning included)")
    say(
        f"  b: {done_epochs}/{recipe.epochs} epochs in {t_end - t_start:.0f} s; median epoch "
        f"{fmt(median_wall, '.2f')} s "
        f"(training {fmt(median_train, '.2f')} s, {fmt(ms_step, '.2f')} ms/step); {result['verdict']['kind']}: "
        f"{fmt(value, '.0f')} s for {recipe.epochs} epochs (target {TARGET_B_SECONDS:.0f} s)"
    )
    if ctx.out_dir is not None:
        result["packed"] = pack(
            ctx.out_dir / "b-run.tar.gz",
            [(run_dir, arcname(run_dir))],
            skip=lambda p: p.name == "checkpoint.pt" or p.name.endswith(".tmp"),
        )
    return result


# --------------------------------------------------------------------------------------------- part c


def _c_worker(wid: int, cfg: dict[str, Any], counter: Any, start_at: Any, go: Any, queue: Any) -> None:
    """One worker of part c: trains proxy candidates (the i-th: the space's random genotype i, i from a shared
    counter) back to back from the common start until the window closes; reports each epoch's end time."""
    try:
        if cfg["threads"]:
            torch.set_num_threads(cfg["threads"])
        from prunenas.config import RunSettings
        from prunenas.cost import genotype_cost
        from prunenas.data import load_dataset
        from prunenas.recipes import make_recipe
        from prunenas.spaces import get_space
        from prunenas.train import StopTraining, resolve_device, train

        data = load_dataset(cfg["dataset"], cfg["data"], train_subset=cfg["train_subset"], seed=0)
        space = get_space(cfg["space"])
        recipe = make_recipe("proxy", space.recipe, overrides={"epochs": cfg["epochs"]})
        device = resolve_device(cfg["device"])
        if device.type == "cuda":
            torch.zeros(1, device=device)  # the CUDA context, before the window opens
        queue.put(("ready", wid, None))
        if not go.wait(timeout=cfg["startup_timeout"]):
            queue.put(("error", wid, "no start signal"))
            return
        time.sleep(max(0.0, start_at.value - time.time()))
        deadline = start_at.value + cfg["window"]
        candidates = []
        while time.time() < deadline:
            with counter.get_lock():
                index = counter.value
                counter.value += 1
            genotype = space.random_genotype(seed=cfg["seed"] + index)
            ends: list[float] = []

            def on_epoch(m: Any, ends: list[float] = ends) -> None:
                ends.append(time.time())
                if ends[-1] >= deadline:
                    raise StopTraining("window closed")

            started = time.time()
            train(
                space, genotype, data, recipe,
                RunSettings(device=cfg["device"], seed=0, quiet=True, plot=False, checkpoint=False),
                callbacks=[on_epoch], evaluate_test=False,
            )  # fmt: skip
            cost = genotype_cost(space, genotype, num_classes=data.num_classes)
            candidates.append(
                {"index": index, "key": genotype.key, "macs_ratio": cost.macs_ratio, "start": started, "ends": ends}
            )
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        queue.put(("done", wid, {"candidates": candidates, "deadline": deadline, "peak_mem": peak}))
    except BaseException:
        queue.put(("error", wid, traceback.format_exc()))


def _c_setting(ctx: Context, n: int, cfg: dict[str, Any]) -> dict[str, Any]:
    import multiprocessing as mp
    import queue as queue_mod

    mpc = mp.get_context("spawn")
    counter, start_at, go, q = mpc.Value("i", 0), mpc.Value("d", 0.0), mpc.Event(), mpc.Queue()
    procs = [mpc.Process(target=_c_worker, args=(w, cfg, counter, start_at, go, q), daemon=True) for w in range(n)]
    t_spawn = time.monotonic()
    for p in procs:
        p.start()
    msgs: dict[str, list[Any]] = {"ready": [], "done": [], "error": []}

    def collect(kind: str, until: float) -> None:
        while len(msgs[kind]) + len(msgs["error"]) < n and time.monotonic() < until:
            try:
                k, wid, payload = q.get(timeout=max(0.1, min(5.0, until - time.monotonic())))
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            msgs[k].append((wid, payload))

    try:
        collect("ready", time.monotonic() + cfg["startup_timeout"])
        startup = time.monotonic() - t_spawn
        if msgs["error"] or len(msgs["ready"]) < n:
            errors = [p for _, p in msgs["error"]] or ["workers did not report ready in time"]
            raise RuntimeError(f"{n} worker(s): {errors[0]}")
        start_at.value = time.time() + 0.5
        go.set()
        collect("done", time.monotonic() + 0.5 + cfg["window"] + cfg["drain_timeout"])
        if msgs["error"]:
            raise RuntimeError(f"{n} worker(s): {msgs['error'][0][1]}")
        if len(msgs["done"]) < n:
            raise RuntimeError(f"{n} worker(s): only {len(msgs['done'])} reported within the window + drain time")
    finally:
        for p in procs:
            p.join(timeout=5)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    window, epochs = cfg["window"], cfg["epochs"]
    epochs_in = 0
    completed = started = 0
    epoch_times: list[float] = []
    for _, payload in msgs["done"]:
        deadline = payload["deadline"]
        for c in payload["candidates"]:
            started += 1
            ok = [t for t in c["ends"] if t <= deadline]
            epochs_in += len(ok)
            completed += int(len(ok) >= epochs)
            marks = [c["start"], *c["ends"]]
            epoch_times += [b - a for a, b in itertools.pairwise(marks)]
    return {
        "workers": n,
        "startup_s": startup,
        "window_s": window,
        "epochs_in_window": epochs_in,
        "candidates_started": started,
        "candidates_completed": completed,
        "candidates_per_hour": epochs_in / epochs * 3600 / window,
        "median_epoch_s_per_worker": statistics.median(epoch_times) if epoch_times else None,
        "peak_mem_gib_per_worker": [
            round(p["peak_mem"] / 2**30, 2) for _, p in msgs["done"] if p.get("peak_mem") is not None
        ],
    }


def part_c(ctx: Context, cap: float) -> dict[str, Any]:
    t_part = time.monotonic()
    plan = ctx.plan
    ctx.data()  # fill the dataset cache the workers read
    _release_gpu()
    cfg = {
        "dataset": ctx.dataset,
        "data": ctx.data_dir(),
        "train_subset": plan.c_train_subset,
        "space": ctx.space_bcd,
        "epochs": plan.c_proxy_epochs,
        "device": str(ctx.device),
        "seed": 1000,
        "window": plan.c_window_s,
        "threads": plan.c_threads,
        "startup_timeout": plan.c_startup_timeout_s,
        "drain_timeout": plan.c_drain_s,
    }
    result: dict[str, Any] = {
        "settings": {
            **{k: cfg[k] for k in ("train_subset", "space", "epochs", "window", "threads")},
            "candidates": f"{ctx.space_bcd} random genotypes (seed 1000 + i, the same sequence for every setting)",
            "recipe": f"proxy, {plan.c_proxy_epochs} epochs, validation every epoch (as the search's trials)",
            "measure": "epochs finished inside the common window, all workers; candidates/hour = that / "
            "proxy epochs x 3600 / window (so per-candidate costs inside the window count, partial ones too)",
        },
        "rows": [],
        "notes": [],
    }
    for n in plan.c_workers:
        left = min(cap - (time.monotonic() - t_part), ctx.left())
        need = plan.c_window_s + (8 if ctx.args.tiny else 12) + n + min(plan.c_drain_s, 5)
        if left < need:
            result["rows"].append({"workers": n, "skipped": f"time cap ({left:.0f} s left, ~{need:.0f} s needed)"})
            say(f"part c: {n} worker(s) skipped: {left:.0f} s left")
            continue
        say(f"part c: {n} worker(s), {plan.c_window_s:.0f} s window")
        try:
            row = _c_setting(ctx, n, cfg)
        except Exception as exc:
            traceback.print_exc()
            result["rows"].append({"workers": n, "error": f"{type(exc).__name__}: {str(exc)[-2000:]}"})
            say(f"  {n} worker(s) FAILED: {str(exc)[:300]}")
            continue
        result["rows"].append(row)
        ctx.save("c", {**result, "status": "running"})
        say(
            f"  {n} worker(s): {row['epochs_in_window']} epochs in {row['window_s']:.0f} s -> "
            f"{row['candidates_per_hour']:.1f} candidates/h ({row['candidates_completed']} completed, "
            f"median epoch {row['median_epoch_s_per_worker'] or 0:.2f} s per worker, startup {row['startup_s']:.1f} s)"
        )
    result["rows"].sort(key=lambda r: r.get("workers", 0))
    one = next((r for r in result["rows"] if r.get("workers") == 1 and "candidates_per_hour" in r), None)
    for r in result["rows"]:
        if one and "candidates_per_hour" in r:
            r["vs_one_worker"] = (
                r["candidates_per_hour"] / one["candidates_per_hour"] if one["candidates_per_hour"] else None
            )
    several = [r for r in result["rows"] if r.get("workers", 1) > 1 and r.get("vs_one_worker") is not None]
    best = max(several, key=lambda r: r["vs_one_worker"], default=None)
    result["verdict"] = {
        "target": TARGETS["c"],
        "best_workers": best["workers"] if best else None,
        "best_ratio": best["vs_one_worker"] if best else None,
        "met": None if best is None else best["vs_one_worker"] >= TARGET_C_RATIO,
    }
    if one and not one["epochs_in_window"]:
        result["notes"].append("1 worker finished no epoch inside the window: the ratio is undefined; widen --c-window")
    ok = [r for r in result["rows"] if "candidates_per_hour" in r]
    result["status"] = "ok" if len(ok) == len(result["rows"]) else ("partial" if ok else "failed")
    if not ok:
        result["error"] = "; ".join(str(r.get("error") or r.get("skipped"))[:200] for r in result["rows"])
    return result


# --------------------------------------------------------------------------------------------- part d


def _trial_span(study_dir: Path, study: str) -> dict[str, Any]:
    """First start and last end of the finished trials, from the study's journal (optuna reads it)."""
    try:
        import optuna
        from optuna.storages.journal import JournalFileBackend

        from prunenas.search import JOURNAL

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        done = [
            t for t in trials if t.datetime_start and t.datetime_complete and t.state.name in ("COMPLETE", "PRUNED")
        ]
        if not done:
            return {}
        first = min(t.datetime_start for t in done if t.datetime_start)
        last = max(t.datetime_complete for t in done if t.datetime_complete)
        span = (last - first).total_seconds()
        return {"trials_span_s": span, "trials_per_hour": len(done) * 3600 / span if span > 0 else None}
    except Exception as exc:  # the report goes on without the rate
        return {"trials_span_error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def _onnx_latency(onnx_path: Path, repeats: int, cuda: bool) -> dict[str, Any]:
    """ONNX Runtime latency of the export: CUDA provider where this onnxruntime has it, and CPU."""
    import onnxruntime as ort

    from prunenas.export import onnx_latency

    available = list(ort.get_available_providers())
    out: dict[str, Any] = {"available_providers": available, "onnxruntime": ort.__version__}
    providers = (["cuda"] if cuda and "CUDAExecutionProvider" in available else []) + ["cpu"]
    for provider in providers:
        try:
            lat = onnx_latency(onnx_path, (1, 64), repeats=repeats, warmup=min(10, repeats), provider=provider)
            out[provider] = {
                "provider_used": lat.get("provider"),
                "per_batch": {
                    b: {k: v.get(k) for k in ("median_ms", "p90_ms", "images_per_s")}
                    for b, v in (lat.get("per_batch") or {}).items()
                },
            }
        except Exception as exc:
            out[provider] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


def part_d(ctx: Context, cap: float) -> dict[str, Any]:
    t_part = time.monotonic()
    plan = ctx.plan
    suffix = "-tiny" if ctx.args.tiny else ""
    study = f"gpu-suite{suffix}"
    study_dir = ctx.work / f"d-search{suffix}"
    exports = ctx.work / f"d-exports{suffix}"
    for folder in (study_dir, exports):  # a fresh study every command: 6 trials are a measurement, not a resume
        fresh_dir(folder, ctx.work)
    ctx.data()  # fill the cache first
    latency_s = 10 if ctx.args.tiny else 20
    startup_s = 20 if ctx.args.tiny else 30  # process start, data from the cache, the proposers' seeding
    cap -= time.monotonic() - t_part
    trial_timeout = max(10.0, cap - plan.d_reserve_s - startup_s - latency_s)
    argv = [
        "search", "--space", ctx.space_bcd, "--budget", plan.d_budget, "--trials", str(plan.d_trials),
        "--proxy-epochs", str(plan.d_proxy_epochs), "--top-k", "1", "--final-epochs", str(plan.d_final_epochs),
        "--proposers", plan.d_proposers, "--study", study, "--out", str(study_dir),
        "--exports", str(exports), "--device", str(ctx.device), "--timeout", f"{trial_timeout:.0f}",
        "--workers", str(plan.d_workers), "--json", "--quiet", *ctx.data_args(),
    ]  # fmt: skip
    if plan.d_train_subset:
        argv += ["--train-subset", str(plan.d_train_subset)]
    say(
        f"part d: prunenas search ({plan.d_trials} trials x {plan.d_proxy_epochs} epochs, {plan.d_workers} "
        f"worker(s)), cap {cap:.0f} s"
    )
    run = run_logged(ctx.cli(*argv), ctx.work / "logs" / f"d-search{suffix}.log", timeout=cap - latency_s - 5)
    result: dict[str, Any] = {
        "command": "prunenas " + " ".join(argv),
        "study_dir": str(study_dir),
        "run": run,
        "settings": {
            "space": ctx.space_bcd,
            "trials": plan.d_trials,
            "proxy_epochs": plan.d_proxy_epochs,
            "final_epochs": plan.d_final_epochs,
            "train_subset": plan.d_train_subset,
            "proposers": plan.d_proposers,
            "budget": plan.d_budget,
            "workers": plan.d_workers,
            "trial_timeout_s": trial_timeout,
        },
        "notes": [],
    }
    trials_file, summary_file = study_dir / "trials.json", study_dir / "summary.json"
    rows = json.loads(trials_file.read_text()) if trials_file.exists() else []
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    by_number = {r["number"]: r for r in rows}
    done = [r for r in rows if r.get("state") in ("COMPLETE", "PRUNED")]
    durations = [float(r["duration_s"]) for r in done if r.get("duration_s")]
    front = [by_number[n] for n in summary.get("pareto_front", []) if n in by_number]
    result.update(
        trials_done=len(done),
        trials_planned=plan.d_trials,
        states={s: sum(1 for r in rows if r.get("state") == s) for s in sorted({str(r.get("state")) for r in rows})},
        mean_trial_s=statistics.mean(durations) if durations else None,
        pareto_front=[
            {k: r.get(k) for k in ("number", "origin", "proposer", "macs_ratio", "val_acc", "train_time_s")}
            for r in sorted(front, key=lambda r: r.get("macs_ratio") or 0)
        ],
        **(_trial_span(study_dir, study) if done else {}),
    )
    winners = summary.get("winners") or []
    if winners:
        w = winners[0]
        final = w.get("final") or {}
        result["best"] = {
            "trial": w.get("trial"), "key": w.get("key"), "origin": w.get("origin"), "macs": w.get("macs"),
            "val_acc_proxy": w.get("val_acc_proxy"), "test_acc_final": final.get("test_acc"),
            "final_epochs": final.get("epochs_run"), "export_dir": w.get("export_dir"),
        }  # fmt: skip
        sidecar = Path(w["export_dir"]) / "model.json" if w.get("export_dir") else None
        if sidecar is not None and sidecar.exists():
            s = json.loads(sidecar.read_text())
            parity = s.get("parity") or {}
            onnx_path = Path(w["export_dir"]) / "model.onnx"
            result["best"]["onnx"] = {
                "file": str(onnx_path),
                "bytes": (s.get("files") or {}).get("bytes"),
                "exporter": (s.get("export") or {}).get("method"),
                "parity_passed": parity.get("passed"),
                "parity_max_abs_diff": parity.get("max_abs_diff"),
                "parity_tolerance": parity.get("tolerance"),
                "parity_provider": parity.get("provider"),
                "parity_checks": [
                    {k: c.get(k) for k in ("input", "batch", "max_abs_diff", "argmax_agreement")}
                    for c in parity.get("checks") or []
                ],
            }
            say("  d: ONNX Runtime latency of the export")
            lat = _onnx_latency(onnx_path, plan.d_latency_repeats, ctx.cuda)
            result["best"]["onnx"]["latency"] = lat
            if ctx.cuda and "CUDAExecutionProvider" not in lat["available_providers"]:
                result["notes"].append(
                    f"onnxruntime {lat['onnxruntime']} here has no CUDAExecutionProvider (providers: "
                    f"{', '.join(lat['available_providers'])}): parity and latency ran on the CPU provider; the "
                    "CUDA provider needs onnxruntime-gpu on the machine"
                )
    onnx = (result.get("best") or {}).get("onnx") or {}
    complete = len(done) >= plan.d_trials
    met = bool(front) and bool(onnx.get("parity_passed")) and complete
    if run["timed_out"]:
        result["notes"].append("the search hit the part's cap and was stopped (raise --cap-d or run --parts d alone)")
    elif run["rc"] != 0:
        result["error"] = f"prunenas search exited with {run['rc']}: {tail(run['log'], 1)}"
        result["notes"].append(f"prunenas search exited with {run['rc']}: {tail(run['log'], 8)}")
    if not complete:
        result["notes"].append(f"{len(done)}/{plan.d_trials} trials done (the --timeout for trials ran out)")
    result["verdict"] = {"target": TARGETS["d"], "met": met, "trials": f"{len(done)}/{plan.d_trials}"}
    result["status"] = "ok" if met else ("failed" if run["rc"] not in (0, None) and not rows else "partial")
    say(
        f"  d: {len(done)}/{plan.d_trials} trials ({fmt(result.get('trials_per_hour'), '.0f')} trials/h), Pareto "
        f"front {len(front)}, best {(result.get('best') or {}).get('key')}, ONNX parity {onnx.get('parity_passed')} "
        f"on {onnx.get('parity_provider')} (max |diff| {fmt(onnx.get('parity_max_abs_diff'), '.1e')})"
    )
    if ctx.out_dir is not None:

        def skip(p: Path) -> bool:  # the trial checkpoints are too many to carry
            return p.name == "checkpoint.pt" or p.name.endswith((".tmp", ".lock"))

        result["packed"] = pack(
            ctx.out_dir / "d-search.tar.gz", [(study_dir, arcname(study_dir)), (exports, arcname(exports))], skip
        )
    return result


# --------------------------------------------------------------------------------------------- results


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": device_name(device),
        "type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            memory_gib=round(props.total_memory / 2**30, 1),
            sms=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
            tf32={"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        )
        with contextlib.suppress(Exception):
            q = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            info["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else None
    with contextlib.suppress(Exception):
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = list(ort.get_available_providers())
    return info


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "device"


def fmt(v: Any, spec: str = ".1f", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


def met_text(v: Any) -> str:
    return {True: "yes", False: "NO", None: "-"}.get(v, str(v))


def ratio_distance(value: float | None, target: float) -> str:
    """How far a 'higher is better' ratio is from its target."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "-"
    if value >= target:
        return f"met, {value / target:.2f}x the target"
    return f"{target / value:.2f}x short (needs {target:g}x, has {value:.2f}x)"


def derive(results: dict[str, Any]) -> dict[str, Any]:
    """Predictions that combine parts (the ones the next tuning round tests); stored under results["predictions"]."""
    parts = results.get("parts", {})
    a, b, c, d = (parts.get(p) or {} for p in PARTS)
    out: dict[str, Any] = {}
    rows = [r for r in a.get("rows", []) if r.get("model") == "ResNet-56" and "ms_per_step" in r]
    graphs = next((r for r in rows if r["variant"] == "graphs"), None)
    bf16 = next((r for r in rows if r["variant"] == "bf16cl"), None)
    same_batch = graphs is not None and b.get("batch_size") == (a.get("settings") or {}).get("batch_size")
    if graphs and b.get("ms_per_step") and b.get("median_epoch_wall_s") and same_batch and b.get("space") == SPACE:
        saved = (b["ms_per_step"] - graphs["ms_per_step"]) / 1000 * b["steps_per_epoch"]
        epoch = max(b["median_epoch_wall_s"] - saved, 1e-9)
        total = (b.get("first_epoch_wall_s") or epoch) + (b["epochs_total"] - 1) * epoch
        out["graphs_in_trainer"] = {
            "what": "part b's epochs with the trainer's step at part a's graphs ms/step (validation, checkpoints "
            "and the rest of an epoch unchanged)",
            "epoch_s": epoch,
            "projected_total_s": total,
            "met": total <= TARGET_B_SECONDS,
            "trainer_vs_reference": graphs.get("vs_reference"),
            "bf16cl_ms_per_step_a": bf16["ms_per_step"] if bf16 else None,
            "trainer_ms_per_step_b": b["ms_per_step"],
            "graphs_ms_per_step_a": graphs["ms_per_step"],
        }
    cv = c.get("verdict") or {}
    if cv.get("best_ratio"):
        pred: dict[str, Any] = {
            "what": f"`prunenas search --workers {cv['best_workers']}` on one GPU: trials/hour x part c's ratio",
            "workers": cv["best_workers"],
            "ratio": cv["best_ratio"],
        }
        if d.get("trials_per_hour") and (d.get("settings") or {}).get("workers") == 1:
            pred["trials_per_hour_1_worker"] = d["trials_per_hour"]
            pred["predicted_trials_per_hour"] = d["trials_per_hour"] * cv["best_ratio"]
        out["workers_per_gpu"] = pred
    results["predictions"] = out
    return out


def summary_rows(results: dict[str, Any]) -> list[list[str]]:
    """(part, measured, target, distance, met) lines for the table printed last and the top of the report."""
    parts = results.get("parts", {})
    rows = []
    a = parts.get("a", {}).get("verdict")
    if a:
        measured = (
            f"trainer (bf16cl) {fmt(a['trainer_default_ratio'], '.2f')}x; best {a['best_variant'] or '-'} "
            f"{fmt(a['best_ratio'], '.2f')}x the reference loop (ResNet-56)"
        )
        distance = (
            f"trainer {ratio_distance(a['trainer_default_ratio'], TARGET_A_RATIO)}; best "
            f"{ratio_distance(a['best_ratio'], TARGET_A_RATIO)}"
        )
        met = f"{met_text(a['met_by_trainer'])} / best {met_text(a['met_by_best_variant'])}"
        rows.append(["a", measured, f">= {TARGET_A_RATIO:g}x", distance, met])
    b = parts.get("b")
    if b and b.get("verdict"):
        v = b["verdict"]
        measured = (
            f"{b['epochs_done']} epochs of {b['epochs_total']} in {fmt(b.get('elapsed_s'), '.0f')} s, median epoch "
            f"{fmt(b.get('median_epoch_wall_s'), '.2f')} s ({fmt(b.get('ms_per_step'), '.2f')} ms/step); "
            f"{v['kind']}: {fmt(v['value_s'], '.0f')} s for {b['epochs_total']}"
        )
        if v["value_s"] is None:
            distance = "-"
        elif v["met"]:
            distance = f"met, {TARGET_B_SECONDS - v['value_s']:.0f} s to spare"
        else:
            distance = (
                f"{v['factor_to_target']:.1f}x too slow (+{v['value_s'] - TARGET_B_SECONDS:.0f} s): needs <= "
                f"{b['needed_epoch_s']:.2f} s/epoch, <= {b['needed_ms_per_step']:.2f} ms/step at "
                f"{b['steps_per_epoch']} steps/epoch with everything else free"
            )
        rows.append(["b", measured, f"<= {TARGET_B_SECONDS:.0f} s", distance, met_text(v["met"])])
    c = parts.get("c", {}).get("verdict")
    if c:
        measured = f"{fmt(c['best_ratio'], '.2f')}x the candidates/h of 1 worker, with {c['best_workers']} workers"
        rows.append(
            [
                "c",
                measured,
                f">= {TARGET_C_RATIO:g}x",
                ratio_distance(c["best_ratio"], TARGET_C_RATIO),
                met_text(c["met"]),
            ]
        )
    d = parts.get("d")
    if d and d.get("verdict"):
        onnx = (d.get("best") or {}).get("onnx") or {}
        measured = (
            f"{d['verdict']['trials']} trials ({fmt(d.get('trials_per_hour'), '.0f')}/h), Pareto front of "
            f"{len(d.get('pareto_front') or [])}, ONNX parity {met_text(onnx.get('parity_passed'))} on "
            f"{onnx.get('parity_provider') or '-'} (max abs diff {fmt(onnx.get('parity_max_abs_diff'), '.1e')})"
        )
        if d.get("error"):
            measured += f"; {d['error'][:160]}"
        missing = [
            what
            for what, ok in (
                ("trials", d["verdict"]["trials"].split("/")[0] == d["verdict"]["trials"].split("/")[1]),
                ("Pareto front", bool(d.get("pareto_front"))),
                ("ONNX parity", bool(onnx.get("parity_passed"))),
            )
            if not ok
        ]
        distance = "met" if not missing else "missing: " + ", ".join(missing)
        rows.append(["d", measured, "end to end", distance, met_text(d["verdict"]["met"])])
    for p in PARTS:
        if p in parts and parts[p].get("status") in ("failed", "skipped") and not parts[p].get("verdict"):
            why = f"{parts[p]['status']}: {str(parts[p].get('error', ''))[:100]}"
            rows.append([p, why, TARGETS[p][:30], "not measured", "-"])
    return rows


SUMMARY_HEADER = ["part", "measured", "target", "distance to target", "met"]


def table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _md_a(a: dict[str, Any]) -> list[str]:
    s = a.get("settings", {})
    extra = f" + {fmt(a['extra_seconds'], '.0f')} s at the end" if a.get("extra_seconds") else ""
    out = [f"## a. Trainer throughput, ResNet-56 ({a.get('status')}, {fmt(a.get('seconds'), '.0f')} s{extra})", ""]
    out.append(
        f"Batch {s.get('batch_size')}, {s.get('steps')} timed steps after {s.get('warmup')} warm-up steps; "
        f"{s.get('timing')}; reference loop with {s.get('ref_workers')} DataLoader workers; cudnn.benchmark "
        f"{s.get('cudnn_benchmark')}."
    )
    out += ["", "Variants:", ""] + [f"- `{k}`: {v}" for k, v in (s.get("variants") or {}).items()]
    rows = []
    for r in a.get("rows", []):
        if "images_per_s" in r:
            ratio = fmt(r.get("vs_reference"), ".2f") + "x"
            numbers = [fmt(r["images_per_s"], ".0f"), fmt(r["ms_per_step"], ".2f"), ratio]
            rows.append(
                [r["model"], r["variant"], *numbers, fmt(r.get("setup_s"), ".1f"), fmt(r.get("loss_mean"), ".3f")]
            )
        else:
            rows.append([r["model"], r["variant"], r.get("skipped") or r.get("error", ""), "", "", "", ""])
    header = ["model", "variant", "images/s", "ms/step", "vs reference", "setup s", "mean loss"]
    out += ["", table(rows, header), ""]
    chk = a.get("step_check") or {}
    noise = ", ".join(f"{k} {100 * v:.1f}%" for k, v in (a.get("noise") or {}).items()) or "-"
    out.append(
        f"Step check: StepRunner's SGD vs torch.optim.SGD rel. err {fmt(chk.get('sgd_vs_torch_rel_err'), '.1e')}; "
        f"CUDA graph vs the same step eagerly (ResNet-56-B, fp32, 10 steps) rel. err "
        f"{fmt(chk.get('graph_vs_eager_rel_err'), '.1e')} (captured: {chk.get('graph_captured', '-')}). "
        f"Noise (bf16cl timed twice): {noise}."
    )
    if a.get("notes"):
        out += [""] + [f"- {n}" for n in a["notes"]]
    return [*out, ""]


def _md_b(b: dict[str, Any]) -> list[str]:
    out = [f"## b. Standard recipe, {b.get('space')}, {b.get('epochs_total')} epochs ({b.get('status')})", ""]
    if "epochs_done" in b:
        all_walls = b.get("epoch_wall_s") or []
        walls = ", ".join(fmt(w, ".2f") for w in all_walls[:12]) + (", ..." if len(all_walls) > 12 else "")
        out += [
            f"Same as `{b.get('command')}` (in-process, fresh, stopped after the {fmt(b.get('window_s'), '.0f')} s "
            f"window).",
            "",
            f"- {b.get('space')} on {b.get('dataset')}: {b.get('train_images')} training images, batch "
            f"{b.get('batch_size')}, {b.get('steps_per_epoch')} steps/epoch",
            f"- epochs done: {b['epochs_done']}/{b['epochs_total']}; epoch wall times (training, validation, "
            f"checkpoint; the first with set-up and cudnn autotuning): {walls or '-'} s",
            f"- median epoch {fmt(b.get('median_epoch_wall_s'), '.2f')} s, of which training "
            f"{fmt(b.get('median_epoch_train_s'), '.2f')} s ({fmt(b.get('ms_per_step'), '.2f')} ms/step, "
            f"{fmt(b.get('images_per_s_median'), '.0f')} img/s); the rest (validation, checkpoint, lr, reads) "
            f"{fmt(100 * b['non_training_share'] if b.get('non_training_share') is not None else None, '.0f')}%",
            f"- {b['verdict']['kind']}: {fmt(b['verdict']['value_s'], '.0f')} s for {b['epochs_total']} epochs "
            f"(target {TARGET_B_SECONDS:.0f} s: {fmt(b.get('needed_epoch_s'), '.2f')} s/epoch, "
            f"{fmt(b.get('needed_ms_per_step'), '.2f')} ms/step with everything else free)",
            f"- last validation (epoch, acc): {b.get('last_val')}; test accuracy (finished runs only): "
            f"{fmt(b.get('test_acc'), '.4f')}",
        ]
    if b.get("notes"):
        out += [""] + [f"- {n}" for n in b["notes"]]
    return [*out, ""]


def _md_c(c: dict[str, Any]) -> list[str]:
    s = c.get("settings", {})
    out = [f"## c. Worker processes on one GPU ({c.get('status')})", ""]
    out.append(f"{s.get('candidates')}; {s.get('recipe')}; train subset {s.get('train_subset')}.")
    out.append(f"Measure: {s.get('measure')}.")
    rows = []
    for r in c.get("rows", []):
        if "candidates_per_hour" in r:
            rows.append(
                [
                    r["workers"],
                    r["epochs_in_window"],
                    fmt(r["window_s"], ".0f"),
                    fmt(r["candidates_per_hour"], ".1f"),
                    fmt(r.get("vs_one_worker"), ".2f") + "x",
                    r["candidates_completed"],
                    fmt(r["median_epoch_s_per_worker"], ".2f"),
                    fmt(r["startup_s"], ".1f"),
                    ", ".join(fmt(m, ".2f") for m in r.get("peak_mem_gib_per_worker") or []) or "-",
                ]
            )
        else:
            rows.append([r["workers"], (r.get("skipped") or r.get("error", ""))[:200], "", "", "", "", "", "", ""])
    header = [
        "workers", "epochs in window", "window s", "candidates/h", "vs 1", "completed", "epoch s", "startup s",
        "peak GiB",
    ]  # fmt: skip
    out += ["", table(rows, header), ""]
    if c.get("notes"):
        out += [f"- {n}" for n in c["notes"]] + [""]
    return out


def _md_d(d: dict[str, Any]) -> list[str]:
    out = [f"## d. Short real search ({d.get('status')})", "", f"`{d.get('command')}`", ""]
    if "trials_done" in d:
        run_s = fmt((d.get("run") or {}).get("seconds"), ".0f")
        out.append(
            f"{d['trials_done']}/{d['trials_planned']} trials ({d.get('states')}), mean trial "
            f"{fmt(d.get('mean_trial_s'), '.1f')} s, {fmt(d.get('trials_per_hour'), '.0f')} trials/h "
            f"({d.get('settings', {}).get('workers')} worker(s)), command {run_s} s."
        )
        header = ["trial", "origin", "proposer", "MACs ratio", "val acc"]
        rows = []
        for r in d.get("pareto_front", []):
            acc = fmt(r.get("val_acc"), ".4f")
            rows.append([r["number"], r.get("origin"), r.get("proposer") or "", fmt(r.get("macs_ratio"), ".3f"), acc])
        out += ["", "Pareto front (proxy validation accuracy against MACs):", "", table(rows, header)]
    best = d.get("best") or {}
    if best:
        val = fmt(best.get("val_acc_proxy"), ".4f")
        out += ["", f"Best: trial {best['trial']} ({best['origin']}), key {best['key']}, proxy val {val}."]
        if best.get("final_epochs"):
            test = fmt(best.get("test_acc_final"), ".4f")
            out.append(f"Retrained {best['final_epochs']} epochs: test accuracy {test}.")
    onnx = best.get("onnx")
    if onnx:
        out.append(
            f"ONNX ({onnx.get('exporter')}, {onnx.get('bytes')} bytes): parity {met_text(onnx.get('parity_passed'))}, "
            f"max abs diff {fmt(onnx.get('parity_max_abs_diff'), '.1e')} < {onnx.get('parity_tolerance')} on "
            f"{onnx.get('parity_provider')}."
        )
        lat = onnx.get("latency") or {}
        lines = []
        for provider in ("cuda", "cpu"):
            entry = lat.get(provider)
            if not entry:
                continue
            if entry.get("error"):
                lines.append([provider, entry["error"][:200], "", ""])
                continue
            for batch, v in (entry.get("per_batch") or {}).items():
                lines.append(
                    [
                        entry.get("provider_used"),
                        batch,
                        fmt(v.get("median_ms"), ".3f"),
                        fmt(v.get("images_per_s"), ".0f"),
                    ]
                )
        if lines:
            out += ["", f"ONNX Runtime {lat.get('onnxruntime')} latency (median of the repeats):", ""]
            out.append(table(lines, ["provider", "batch", "median ms", "images/s"]))
    if d.get("notes"):
        out += [""] + [f"- {n}" for n in d["notes"]]
    return [*out, ""]


def _md_predictions(pred: dict[str, Any]) -> list[str]:
    if not pred:
        return []
    out = ["## Predictions to test after tuning", ""]
    g = pred.get("graphs_in_trainer")
    if g:
        out.append(
            f"- CUDA graphs in the trainer: {fmt(g['trainer_ms_per_step_b'], '.2f')} -> "
            f"{fmt(g['graphs_ms_per_step_a'], '.2f')} ms/step, epoch {fmt(g['epoch_s'], '.2f')} s, 160 epochs in "
            f"{fmt(g['projected_total_s'], '.0f')} s (target {TARGET_B_SECONDS:.0f} s: {met_text(g['met'])}); "
            f"{fmt(g.get('trainer_vs_reference'), '.2f')}x the reference loop (target {TARGET_A_RATIO:g}x)."
        )
    w = pred.get("workers_per_gpu")
    if w:
        text = f"- {w['workers']} search workers per GPU: {fmt(w['ratio'], '.2f')}x the candidates/h of one"
        if w.get("predicted_trials_per_hour"):
            text += (
                f"; part d's {fmt(w['trials_per_hour_1_worker'], '.0f')} trials/h with 1 worker -> "
                f"{fmt(w['predicted_trials_per_hour'], '.0f')} with {w['workers']}"
            )
        out.append(text + ".")
    return [*out, ""]


def render_md(results: dict[str, Any]) -> str:
    dev = results["device"]
    parts = results.get("parts", {})
    out = [f"# GPU benchmark suite: {results['tag']}", ""]
    gpu = dev["name"] + (f", {dev.get('memory_gib')} GiB, {dev.get('sms')} SMs" if dev["type"] == "cuda" else "")
    out.append(
        f"Device: {gpu}; torch {dev['torch']} (CUDA {dev.get('cuda')}, cuDNN {dev.get('cudnn')}, driver "
        f"{dev.get('driver')}); Python {dev['python']}; {dev['cpus']} CPUs; onnxruntime {dev.get('onnxruntime')} "
        f"({', '.join(dev.get('onnxruntime_providers') or [])})."
    )
    if results.get("tiny"):
        out += [
            "",
            "**--tiny dry run: sizes shrunk to seconds (parts b, c and d on a ResNet-8); the numbers say nothing "
            "about the targets.**",
        ]
    out += ["", "Commands:", ""]
    for c in results.get("commands", []):
        cmd = c.get("wrapper") or c["argv"]
        load = f", data {c['data_load_s']:.0f} s" if c.get("data_load_s") is not None else ""
        out.append(f"- `{cmd}` ({c['started']}, parts {','.join(c['parts'])}, {c['seconds']:.0f} s{load})")
    out += ["", "## Against the targets of issue #9", ""]
    out.append(table(summary_rows(results), SUMMARY_HEADER))
    data = "CIFAR-10 (JPEG q75 copy)" if results.get("dataset") == "cifar10" else results.get("dataset")
    out += ["", f"Dataset: {data} (part b: CIFAR-10 unless --tiny).", ""]
    out += _md_predictions(results.get("predictions") or {})
    for key, render in (("a", _md_a), ("b", _md_b), ("c", _md_c), ("d", _md_d)):
        if key in parts and parts[key].get("status") not in ("failed", "skipped"):
            out += render(parts[key])
    for p in PARTS:
        if p in parts and parts[p].get("error"):
            out += [f"Part {p} {parts[p].get('status')}: `{parts[p]['error'][:500]}`", ""]
    return "\n".join(out).rstrip() + "\n"


def load_previous(path: Path, device: str, tiny: bool) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        prev = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        say(f"warning: {path} is unreadable; starting a new results file")
        return None
    if prev.get("format") != FORMAT or prev.get("device", {}).get("name") != device or bool(prev.get("tiny")) != tiny:
        say(f"warning: {path} holds another device's, mode's or format's results; not merging (pass another --tag)")
        return None
    return prev


def write_results(results: dict[str, Any], results_dir: Path, out_dir: Path | None) -> list[Path]:
    derive(results)
    tag = results["tag"]
    written = []
    for folder in [results_dir] + ([out_dir] if out_dir is not None else []):
        folder.mkdir(parents=True, exist_ok=True)
        j, m = folder / f"{tag}.json", folder / f"{tag}.md"
        j.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        m.write_text(render_md(results), encoding="utf-8")
        written += [j, m]
    return written


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--parts", default="a,b,c,d", help="which parts, in this order (default a,b,c,d; d if time is left)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N, cpu")
    p.add_argument("--tiny", action="store_true", help="every part shrunk to seconds, on the embedded digits set")
    p.add_argument("--dataset", default=None, help="cifar10 (default) or digits (--tiny default)")
    p.add_argument("--data", default=None, help=f"the CIFAR-10 copy (default $PRUNENAS_DATA, else {DEFAULT_DATA})")
    p.add_argument("--results-dir", default=None, help="default benchmarks/results (GPU), /tmp/prunenas-gpu-suite")
    p.add_argument("--out-dir", default=None, help="also copy results and packed runs here (the GPU machine's $OUT)")
    p.add_argument("--work-dir", default=None, help="run folders of parts b and d (default runs/gpu-suite)")
    p.add_argument("--tag", default=None, help="results file name (default <UTC date>-<device>)")
    p.add_argument("--budget-s", type=float, default=None, help="seconds for the whole command (default 360)")
    for part in PARTS:
        p.add_argument(f"--cap-{part}", type=float, default=None, metavar="S", help=f"time cap of part {part}")
    p.add_argument(
        "--space-bcd", default=None, help="space (name or .toml) of parts b, c, d (default resnet56_channels)"
    )
    g = p.add_argument_group("part a")
    g.add_argument("--a-models", help=f"subset of {','.join(MODELS)} (default ResNet-56)")
    g.add_argument("--a-variants", help=f"subset of {','.join(VARIANTS)} (default fp32,bf16cl,graphs,ref)")
    g.add_argument("--a-extra", help="variants timed only with time left at the end (default compile on CUDA; '' none)")
    g.add_argument("--a-batch-size", type=int)
    g.add_argument("--a-steps", type=int, help="timed steps per variant (default 200)")
    g.add_argument("--a-warmup", type=int, help="warm-up steps per variant (default 20)")
    g.add_argument("--a-ref-workers", type=int, help="DataLoader workers of the reference loop (default 4)")
    g.add_argument("--no-a-repeat", action="store_true", help="do not time bf16cl a second time")
    g = p.add_argument_group("part b")
    g.add_argument("--b-window", type=float, help="seconds of training (default 120; 160 epochs finish if they fit)")
    g.add_argument("--b-eval-every", type=int, help="validate every K epochs (default 1, the trainer's)")
    g.add_argument("--b-compile", action="store_true", help="the trainer with torch.compile (prunenas train --compile)")
    g = p.add_argument_group("part c")
    g.add_argument("--c-workers", help="worker counts, default 1,3 (run in this order)")
    g.add_argument("--c-window", type=float, help="seconds each setting trains (default 30)")
    g.add_argument("--c-proxy-epochs", type=int)
    g.add_argument("--c-train-subset", type=int)
    g = p.add_argument_group("part d")
    g.add_argument("--d-trials", type=int, help="default 6")
    g.add_argument("--d-proxy-epochs", type=int)
    g.add_argument("--d-final-epochs", type=int)
    g.add_argument("--d-train-subset", type=int)
    g.add_argument("--d-proposers")
    g.add_argument("--d-workers", type=int, help="prunenas search --workers N (default 1)")
    g.add_argument("--d-reserve", type=float, help="seconds kept for retraining + export (default 45)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except SuiteError as exc:
        print(f"gpu_suite: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    t_cmd = time.monotonic()
    parts = _split(args.parts, PARTS, "--parts")
    from prunenas.errors import PrunenasError
    from prunenas.train import resolve_device

    try:
        device = resolve_device(args.device)
    except PrunenasError as exc:
        raise SuiteError(str(exc)) from None
    plan = make_plan(args, device)
    dataset = args.dataset or ("digits" if args.tiny else "cifar10")
    if dataset not in ("cifar10", "digits"):
        raise SuiteError(f"--dataset {dataset!r}: use cifar10 or digits")
    data_arg = args.data or os.environ.get("PRUNENAS_DATA") or DEFAULT_DATA
    data_path = Path(data_arg) if Path(data_arg).is_absolute() else (Path.cwd() / data_arg)
    need_cifar = [p for p in parts if dataset == "cifar10" or (p == "b" and not args.tiny)]
    if need_cifar and not data_path.exists():
        raise SuiteError(
            f"part(s) {','.join(need_cifar)} need the CIFAR-10 copy, and {data_path} is missing: copy "
            f'/work/shared/datasets/cifar10-jpeg.tar.gz to .data/ in the repo and name ".data" in the run call\'s '
            "carry (or pass --data PATH / set PRUNENAS_DATA)"
            + ("; parts a, c and d also run on the embedded set with --dataset digits" if "b" not in need_cifar else "")
        )
    gpu_run = device.type == "cuda" and not args.tiny
    default_results = REPO / "benchmarks" / "results"
    results_dir = (
        Path(args.results_dir)
        if args.results_dir
        else (default_results if gpu_run else Path("/tmp/prunenas-gpu-suite"))
    )
    if not gpu_run and results_dir.resolve() == default_results.resolve():
        raise SuiteError("benchmarks/results/ is for real GPU runs only; pass another --results-dir for CPU or --tiny")
    work = Path(args.work_dir) if args.work_dir else (REPO / "runs" / "gpu-suite" if gpu_run else results_dir / "work")
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out_dir).resolve() if args.out_dir else None
    space_bcd = args.space_bcd or SPACE
    if args.tiny and not args.space_bcd:
        toml = work / "gpu_suite_tiny_resnet8.toml"
        toml.write_text(TINY_SPACE_TOML, encoding="utf-8")
        space_bcd = str(toml)
    name = device_name(device)
    tag = args.tag or f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}-{slug(name)}" + ("-tiny" if args.tiny else "")
    ctx = Context(
        args=args, plan=plan, device=device, data_path=data_path, dataset=dataset, work=work, out_dir=out_dir,
        space_bcd=space_bcd,
    )  # fmt: skip
    ctx.t0 = t_cmd

    results_path = results_dir / f"{tag}.json"
    results = load_previous(results_path, name, args.tiny) or {
        "format": FORMAT, "suite": "benchmarks/gpu_suite.py", "tag": tag, "tiny": args.tiny, "dataset": dataset,
        "targets": TARGETS, "commands": [], "parts": {},
    }  # fmt: skip
    results["device"] = device_info(device)
    command = {
        "argv": " ".join(["python", "benchmarks/gpu_suite.py", *sys.argv[1:]]),
        "wrapper": os.environ.get("GPU_SUITE_CMD"),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parts": parts,
        "plan": asdict(plan),
        "space_bcd": space_bcd,
        "seconds": 0.0,
    }
    results["commands"].append(command)
    say(
        f"gpu_suite: parts {','.join(parts)} on {name} ({device}); torch {torch.__version__}; "
        f"budget {plan.budget_s:.0f} s; caps " + ", ".join(f"{p} {plan.caps[p]:.0f} s" for p in parts)
    )
    say(f"results: {results_dir / tag}.md/.json" + (f" (+ {out_dir})" if out_dir else ""))
    runners = {"a": part_a, "b": part_b, "c": part_c, "d": part_d}

    def save_partial(part: str, res: dict[str, Any]) -> None:
        results["parts"][part] = {**res, "command_index": len(results["commands"]) - 1}
        command["seconds"] = time.monotonic() - t_cmd
        write_results(results, results_dir, out_dir)

    ctx.save = save_partial
    failed = False
    ctx.data()  # decoded once (CIFAR-10: ~30-40 s the first time on a machine, then from the cache)
    command["data_load_s"] = ctx.data_load_s
    for part in parts:
        cap = min(plan.caps[part], ctx.left() - 5)
        if cap < plan.min_s[part]:
            results["parts"][part] = {
                "status": "skipped",
                "error": f"only {max(cap, 0):.0f} s left of --budget-s {plan.budget_s:.0f} "
                f"(needs {plan.min_s[part]:.0f} s)",
                "command_index": len(results["commands"]) - 1,
            }
            say(f"part {part} skipped: only {max(cap, 0):.0f} s left of the command's budget")
            continue
        t = time.monotonic()
        say(f"== part {part} (cap {cap:.0f} s): {TARGETS[part]}")
        try:
            res = runners[part](ctx, cap)
        except SuiteError:
            raise
        except Exception as exc:
            traceback.print_exc()
            res = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
            failed = True
        res["seconds"] = time.monotonic() - t
        res["cap_s"] = cap
        res["command"] = res.get("command") or command["argv"]
        res["command_index"] = len(results["commands"]) - 1
        results["parts"][part] = res
        command["seconds"] = time.monotonic() - t_cmd
        write_results(results, results_dir, out_dir)
        _release_gpu()
    a = results["parts"].get("a")
    if "a" in parts and plan.a_extra_variants and a and a.get("rows") is not None:
        cap = ctx.left() - 5
        need = min(_variant_estimate(ctx, v) for v in plan.a_extra_variants)
        if cap >= need:
            try:
                results["parts"]["a"] = extra_a(ctx, a, cap)
            except Exception:
                traceback.print_exc()
                results["parts"]["a"] = a
        else:
            a["notes"].append(f"{', '.join(plan.a_extra_variants)}: not timed, {max(cap, 0):.0f} s left")
            say(f"part a leftover variants skipped: {max(cap, 0):.0f} s left")
    command["seconds"] = time.monotonic() - t_cmd
    written = write_results(results, results_dir, out_dir)
    print()
    print(table(summary_rows(results), SUMMARY_HEADER))
    print()
    say(f"wrote {', '.join(str(p) for p in written)} in {command['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
