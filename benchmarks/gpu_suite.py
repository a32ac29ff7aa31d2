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

This file parses the flags and runs the parts in order; the parts are in gpu_suite_train.py (a, b) and
gpu_suite_search.py (c, d), the plan, targets and shared helpers in gpu_suite_common.py, the report in
gpu_suite_report.py, and the machine description and results naming in common.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import common
import torch
from gpu_suite_common import (
    DEFAULT_DATA,
    FORMAT,
    MODELS,
    PARTS,
    REPO,
    SPACE,
    TARGETS,
    TINY_SPACE_TOML,
    VARIANTS,
    Context,
    SuiteError,
    _release_gpu,
    _split,
    make_plan,
    say,
)
from gpu_suite_report import SUMMARY_HEADER, device_info, load_previous, summary_rows, table, write_results
from gpu_suite_search import part_c, part_d
from gpu_suite_train import _variant_estimate, extra_a, part_a, part_b

# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--parts", default="a,b,c,d", help="which parts, in this order (default a,b,c,d; d if time is left)")
    common.add_device(p)
    common.add_tiny(p, "every part shrunk to seconds, on the embedded digits set")
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
    name = common.device_name(device)
    tag = args.tag or common.results_name("", kind=common.slug(name), tiny=args.tiny)  # <UTC date>-<device>[-tiny]
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
        "argv": common.command_line(__file__),
        "wrapper": os.environ.get("GPU_SUITE_CMD"),
        "started": common.stamp(),
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
