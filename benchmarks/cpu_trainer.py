"""The trainer on a CPU: bf16 autocast + channels_last vs fp32 vs a conventional loop, and bf16's accuracy.

Part 1 (throughput): images/s of training steps (after warm-up) at batch 128 on 32 px CIFAR-10 for each
space's reference genotype, at 1 and 2 threads, for `ref`, the conventional loop (fp32, NCHW, DataLoader
with per-image transforms, `loss.item()` per step: benchmarks/train_throughput.py's `reference_loop` with
its `PerImageDataset`); `fp32`, the trainer's `TrainStep(amp=False)` (NCHW) over `DeviceBatches`; and
`bf16cl`, the trainer as it runs by default on a CPU with AMX-BF16 (`amp=True`, model and batches in
channels_last). Steps are timed end to end (loading and augmentation count): images/s over the timed
seconds, and of the median step (robust to a burst of load). resnet20 runs again at the end (the noise).

Part 2 (parity): resnet20_channels' reference trained with `prunenas.train.train` (the space's standard
recipe cut to --epochs, batch 128) on a CIFAR-10 subset, seeds in fp32 and bf16 alternately (load hits both
alike): test accuracy (full test set) mean ± std per precision, difference, Welch t-test, wall time per run.

Each measurement records the machine's load: `os.getloadavg()` before it, and the cores kept busy by other
processes before it (/proc/stat over 0.5 s while this one sleeps) and during it. It is flagged "loaded"
when others kept more than half a core busy: the load average counts this benchmark's own threads and
DataLoader workers (up to 4 here) and lags by minutes: above 2.5 it is only noted.

    python benchmarks/cpu_trainer.py --out benchmarks/results          # ~25-30 min on 2 idle cores
    python benchmarks/cpu_trainer.py --tiny                             # every path: ~30 s idle, ~6 min busy
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import torch
import torch.nn.functional as F

from prunenas.config import RunSettings
from prunenas.data import DatasetSplits, DeviceBatches, ImageSet, load_dataset
from prunenas.recipes import Recipe, make_recipe
from prunenas.spaces import get_space
from prunenas.train import TrainStep, train

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
SPACES = ("resnet20_channels", "resnet56_channels", "vgg16_channels", "torchvision:mobilenet_v2@32")
# (warm-up, timed) steps per space, sized so part 1 takes ~5 min on 2 idle cores; bf16's first steps
# create the oneDNN kernels, hence at least 2 warm-up steps.
STEPS = {"resnet20_channels": (5, 40), "resnet56_channels": (3, 20), "vgg16_channels": (2, 8)}
OTHER_STEPS = (3, 15)
VARIANTS = ("ref", "fp32", "bf16cl")
LOADED_LOADAVG = 2.5  # 1-minute load average above which a number is noted (2 cores)
LOADED_OTHERS = 0.5  # cores kept busy by other processes above which a number is flagged


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def machine_load() -> dict[str, Any]:
    """The 1/5/15-minute load average and the cores other processes keep busy (sampled over 0.5 s while
    this process sleeps, so its own threads do not count, unlike in the load average). Linux only."""
    load = os.getloadavg()
    b0, t0 = _cpu_ticks()
    time.sleep(0.5)
    b1, t1 = _cpu_ticks()
    others = round((b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1), 2)
    return {"loadavg": [round(v, 2) for v in load], "others_busy_cores": others, "loaded": others > LOADED_OTHERS}


def _own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the conventional loop's DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def watched(load: dict[str, Any], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), with the cores other processes kept busy meanwhile noted in `load`: the machine's busy
    CPU seconds (/proc/stat) less this process's, over the wall seconds (a job may start mid-measurement)."""
    b0, w0, own0 = _cpu_ticks()[0], time.perf_counter(), _own_cpu_s()
    result = fn(*args, **kwargs)
    busy_s = (_cpu_ticks()[0] - b0) / os.sysconf("SC_CLK_TCK")
    others = max(0.0, (busy_s - (_own_cpu_s() - own0)) / (time.perf_counter() - w0))
    load["others_during"] = round(others, 2)
    load["loaded"] = load["loaded"] or others > LOADED_OTHERS
    return result


def _summary(step_s: list[float], batch: int, setup_s: float, loss: float) -> dict[str, Any]:
    seconds = sum(step_s)
    return {
        "images_per_s": len(step_s) * batch / seconds, "median_step_images_per_s": batch / statistics.median(step_s),
        "seconds": seconds, "steps": len(step_s), "setup_s": setup_s, "loss_mean": loss, "slowest_step_s": max(step_s),
    }  # fmt: skip


def reference_run(model: torch.nn.Module, data: DatasetSplits, batch: int, warmup: int, steps: int, seed: int,
                  workers: int) -> dict[str, Any]:  # fmt: skip
    """The conventional loop, as benchmarks/train_throughput.py's `reference_loop` (same dataset, loader and
    SGD settings) with each step's time recorded."""
    t_enter = time.perf_counter()
    sys.path.insert(0, str(HERE))  # benchmarks/ is not a package
    from train_throughput import PerImageDataset

    loader = torch.utils.data.DataLoader(
        PerImageDataset(data.train, data.mean, data.std, seed), batch_size=batch, shuffle=True, drop_last=True,
        num_workers=workers, persistent_workers=workers > 0,
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    step_s: list[float] = []
    done, timed_loss, last, setup_s = 0, 0.0, 0.0, 0.0
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                last = time.perf_counter()
                setup_s = last - t_enter
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()  # the per-step host sync of a conventional loop
            done += 1
            if done > warmup:
                now = time.perf_counter()
                step_s.append(now - last)
                last = now
                timed_loss += value
            if done >= warmup + steps:
                break
    del loader  # stops its worker processes before the next measurement
    gc.collect()
    return _summary(step_s, batch, setup_s, timed_loss / steps)


def trainer_run(model: torch.nn.Module, data: DatasetSplits, batch: int, warmup: int, steps: int, seed: int,
                amp: bool, channels_last: bool) -> dict[str, Any]:  # fmt: skip
    """The trainer's inner loop: `TrainStep` over `DeviceBatches` (batch augmentation counts), losses summed
    in a tensor and read once at the end."""
    t_enter = time.perf_counter()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    batches = DeviceBatches(
        data.train, batch_size=batch, device="cpu", mean=data.mean, std=data.std, augment=True, shuffle=True,
        drop_last=True, seed=seed, channels_last=channels_last,
    )  # fmt: skip
    step = TrainStep(model, Recipe(lr=0.1, momentum=0.9, weight_decay=1e-4), amp=amp)
    model.train()
    step_s: list[float] = []
    done, epoch, last, setup_s, before = 0, 0, 0.0, 0.0, step.loss_sum.clone()
    while done < warmup + steps:
        for x, y in batches.epoch(epoch):
            if done == warmup:
                last = time.perf_counter()
                setup_s = last - t_enter
                before = step.loss_sum.clone()
            step(x, y)
            done += 1
            if done > warmup:
                now = time.perf_counter()
                step_s.append(now - last)
                last = now
            if done >= warmup + steps:
                break
        epoch += 1
    loss = float(step.loss_sum - before) / (steps * batch)  # TrainStep sums loss x images
    return _summary(step_s, batch, setup_s, loss)


def throughput(args: argparse.Namespace, data: DatasetSplits, report: dict[str, Any], save: Any) -> None:
    rows: list[dict[str, Any]] = report["throughput"]["rows"]
    plan = [(s, 1) for s in args.spaces] + ([(args.spaces[0], 2)] if args.repeat_first else [])
    for space_name, sample in plan:
        try:
            space = get_space(space_name)
            genotype = space.reference()
        except Exception as exc:  # a space that does not build is reported, the others still run
            report["throughput"]["failed"][space_name] = f"{type(exc).__name__}: {exc}"
            print(f"{space_name}: does not build: {exc}", flush=True)
            continue
        warmup, steps = (1, 2) if args.tiny else STEPS.get(space_name, OTHER_STEPS)
        for threads in args.threads:
            torch.set_num_threads(threads)
            row: dict[str, Any] = dict(space=space_name, threads=threads, sample=sample, warmup=warmup, steps=steps)
            for variant in VARIANTS:
                load = machine_load()
                torch.manual_seed(args.seed)  # the same initial weights for every variant
                model = space.build(genotype, num_classes=data.num_classes)
                common = (model, data, args.batch_size, warmup, steps, args.seed)
                if variant == "ref":
                    res = watched(load, reference_run, *common, workers=args.workers)
                else:
                    cl = variant == "bf16cl"
                    res = watched(load, trainer_run, *common, amp=cl, channels_last=cl)
                res["load"] = load
                row[variant] = res
                print(f"{space_name:28s} t={threads} #{sample} {variant:6s} {res['images_per_s']:8.1f} img/s "
                      f"(median step {res['median_step_images_per_s']:8.1f}) loss {res['loss_mean']:.3f} "
                      f"load {_load_cell(load)}, slowest step {res['slowest_step_s']:.2f} s", flush=True)  # fmt: skip
            for a, b in (("bf16cl", "ref"), ("fp32", "ref"), ("bf16cl", "fp32")):
                row[f"{a}_vs_{b}"] = row[a]["images_per_s"] / row[b]["images_per_s"]
            rows.append(row)
            save()


def welch(a: list[float], b: list[float]) -> dict[str, Any]:
    """Welch's t-test (two-sided): scipy's when it imports, else the same from the t density integrated
    numerically (Simpson's rule, exact to ~1e-9 here)."""
    va, vb = statistics.variance(a), statistics.variance(b)
    se2 = va / len(a) + vb / len(b)
    if se2 == 0:
        return {"t": None, "df": None, "p": 1.0 if statistics.mean(a) == statistics.mean(b) else 0.0, "via": "exact"}
    t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(se2)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    try:
        from scipy import stats

        p, via = float(stats.ttest_ind(a, b, equal_var=False).pvalue), "scipy"
    except ImportError:
        c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        n, h = 4000, abs(t) / 4000
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        inside = h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))  # integral over [0, |t|]
        p, via = max(0.0, 1 - 2 * inside), "numeric"
    return {"t": t, "df": df, "p": p, "via": via}


def parity(args: argparse.Namespace, data: DatasetSplits, report: dict[str, Any], save: Any) -> None:
    space = get_space("resnet20_channels")
    recipe = make_recipe("standard", space.recipe, overrides={"epochs": args.epochs, "batch_size": args.batch_size})
    part = report["parity"]
    part.update(space=space.name, recipe=recipe.to_dict(), train=len(data.train), val=len(data.val))
    part["test"] = len(data.test)
    runs: list[dict[str, Any]] = part["runs"]
    for seed in args.seeds:
        for amp in (False, True):  # alternately, so a burst of load hits both precisions alike
            load = machine_load()
            settings = RunSettings(amp=amp, seed=seed, threads=args.parity_threads, quiet=True)
            res = watched(load, train, space, space.reference(), data, recipe, settings)
            run = {"precision": "bf16" if amp else "fp32", "seed": seed, "test_acc": res.test_acc}
            run.update(val_acc=res.val_acc, wall_s=res.wall_time_s, images_per_s=res.images_per_s, load=load)
            runs.append(run)
            print(f"parity {run['precision']} seed {seed}: test {res.test_acc:.4f} val {res.val_acc:.4f} "
                  f"wall {res.wall_time_s:.1f} s load {_load_cell(load)}", flush=True)  # fmt: skip
            save()
    acc = {p: [r["test_acc"] for r in runs if r["precision"] == p] for p in ("fp32", "bf16")}
    part["summary"] = {
        p: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v),
            "wall_s_mean": statistics.mean(r["wall_s"] for r in runs if r["precision"] == p)}
        for p, v in acc.items()
    }  # fmt: skip
    part["bf16_minus_fp32"] = part["summary"]["bf16"]["mean"] - part["summary"]["fp32"]["mean"]
    # A seed fixes the init, the batch order and the augmentation: its pair differs in the precision only.
    part["paired_bf16_minus_fp32"] = [b["test_acc"] - f["test_acc"] for f, b in zip(runs[::2], runs[1::2], strict=True)]
    if min(len(v) for v in acc.values()) > 1:
        part["welch"] = welch(acc["bf16"], acc["fp32"])
    save()


def _load_cell(load: dict[str, Any]) -> str:
    cell = f"{load['loadavg'][0]:.1f}{'!' if load['loadavg'][0] > LOADED_LOADAVG else ''}"
    return cell + f"/{load['others_busy_cores']}->{load.get('others_during')}" + (" (loaded)" * load["loaded"])


def markdown(report: dict[str, Any]) -> str:
    cpu = report["cpu"]
    lines = [f"# Trainer on a CPU: bf16 + channels_last vs fp32 vs a conventional loop ({report['date']})", ""]
    lines += [f"- machine: {cpu['model']}, {cpu['cores']} cores, torch capability {cpu['capability']}, "
              f"AVX-512 BF16 {cpu['avx512_bf16']}, AMX {cpu['amx']}; torch {report['torch']}",
              f"- command: `{report['command']}`", f"- data: {report['data']}", ""]  # fmt: skip
    tp = report["throughput"]
    if tp.get("rows"):
        lines += [f"## Throughput (images/s of training steps, batch {report['args']['batch_size']}, 32 px)", "",
                  "Mean over the timed steps (median step in brackets); load = 1-min load average (! > 2.5) / cores "
                  "busy with other processes before -> during, per variant (ref; fp32; bf16cl); (loaded): others > 0.5 "
                  "cores. Target: bf16cl/ref >= 2.", "",
                  "| space | threads | sample | steps | ref (conventional fp32) | trainer fp32 | trainer bf16+cl "
                  "| bf16cl/ref | fp32/ref | bf16cl/fp32 | load |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in tp["rows"]:
            cells = [f"{r[v]['images_per_s']:.0f} ({r[v]['median_step_images_per_s']:.0f})" for v in VARIANTS]
            load = "; ".join(_load_cell(r[v]["load"]) for v in VARIANTS)
            lines.append(f"| {r['space']} | {r['threads']} | {r['sample']} | {r['warmup']}+{r['steps']} | "
                         + " | ".join(cells) + f" | {r['bf16cl_vs_ref']:.2f}x | {r['fp32_vs_ref']:.2f}x | "
                         f"{r['bf16cl_vs_fp32']:.2f}x | {load} |")  # fmt: skip
        lines += ["", "Mean training loss over the timed steps (same init per variant; a sanity check):", ""]
        for r in tp["rows"]:
            losses = ", ".join(f"{v} {r[v]['loss_mean']:.3f}" for v in VARIANTS)
            lines.append(f"- {r['space']} t={r['threads']} #{r['sample']}: {losses}")
        lines.append("")
    for name, why in tp.get("failed", {}).items():
        lines += [f"**{name} did not build**: {why}", ""]
    par = report["parity"]
    if par.get("runs"):
        lines += [f"## Accuracy parity: {par['space']} reference, standard recipe cut to {par['recipe']['epochs']} "
                  f"epochs, batch {par['recipe']['batch_size']}", "",
                  f"CIFAR-10 (JPEG q75 copy): {par['train']} training images, {par['val']} validation, "
                  f"{par['test']} test images; {report['args']['parity_threads']} threads; "
                  "`prunenas.train.train` with `RunSettings(amp=..., seed=s)`.", "",
                  "| precision | seed | test acc | val acc | wall s | img/s | load |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in par["runs"]:
            lines.append(f"| {r['precision']} | {r['seed']} | {r['test_acc']:.4f} | {r['val_acc']:.4f} | "
                         f"{r['wall_s']:.1f} | {r['images_per_s']:.0f} | {_load_cell(r['load'])} |")  # fmt: skip
        if "summary" in par:
            lines.append("")
            for p, s in par["summary"].items():
                lines.append(f"- {p}: test acc {s['mean']:.4f} ± {s['std']:.4f} (n={s['n']}), "
                             f"wall {s['wall_s_mean']:.1f} s per run")  # fmt: skip
            w = par.get("welch")
            diff = f"- bf16 - fp32: {par['bf16_minus_fp32'] * 100:+.2f} points"
            if w and w["t"] is not None:
                diff += f"; Welch t = {w['t']:.2f}, df = {w['df']:.1f}, p = {w['p']:.3f} ({w['via']})"
            elif w:
                diff += f"; no spread in either precision: p = {w['p']}"
            se = 100 * math.sqrt(sum(s["std"] ** 2 / s["n"] for s in par["summary"].values()))
            pairs = ", ".join(f"{d * 100:+.2f}" for d in par["paired_bf16_minus_fp32"])
            lines += [diff + f"; standard error of the difference {se:.2f} points",
                      f"- paired by seed (same init and batches), bf16 - fp32: {pairs} points"]  # fmt: skip
            if w:
                same = w["p"] >= 0.05
                lines.append(f"- verdict: {'equal within noise' if same else 'different'} (p {'>=' if same else '<'} "
                             f"0.05); with n = {par['summary']['bf16']['n']} per precision the test resolves only "
                             "differences of several standard errors")  # fmt: skip
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_out(p, folder=True, default="/tmp/prunenas-cpu-trainer")
    p.add_argument("--tag", default=None, help="file name stem (default: <UTC date>-cpu-trainer[-tiny])")
    common.add_tiny(p, "every path in 1-2 minutes (tiny sizes; not results)")
    p.add_argument("--parts", default="throughput,parity", help="comma-separated: throughput, parity")
    common.add_data_dir(p, str(DEFAULT_DATA))
    p.add_argument("--spaces", default=",".join(SPACES))
    p.add_argument("--threads", default="1,2", help="thread counts of part 1")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional loop")
    p.add_argument("--no-repeat", dest="repeat_first", action="store_false", help="measure the first space once")
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=30, help="epochs of each parity run (30: ~2.3 min in bf16)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the parity runs (each in fp32 and bf16)")
    p.add_argument("--parity-threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="data split and part 1's init")
    args = p.parse_args()
    args.spaces, parts = [s for s in args.spaces.split(",") if s], {s.strip() for s in args.parts.split(",")}
    args.threads, args.seeds = [int(t) for t in args.threads.split(",")], [int(s) for s in args.seeds.split(",")]
    if args.tiny:  # every code path at tiny sizes (part 1: 1+2 steps of batch 32 on 2 threads)
        args.train_subset, args.val_size, args.epochs, args.seeds = 512, 128, 1, args.seeds[:2]
        args.batch_size, args.threads = 32, args.threads[-1:]
    stem = args.out / args.tag if args.tag else common.results_stem(args.out, "trainer", folder=True, tiny=args.tiny)
    machine = common.machine()
    report: dict[str, Any] = {
        "date": common.stamp(), "cpu": machine["cpu"], "torch": machine["torch"],
        "command": common.command_line(__file__), "cwd": os.getcwd(),
        "args": {k: v if isinstance(v, (int, float, list, bool)) else str(v) for k, v in vars(args).items()},
        "load_at_start": machine_load(), "throughput": {"rows": [], "failed": {}}, "parity": {"runs": []},
    }  # fmt: skip

    def save() -> None:
        common.write_results(stem, report, markdown(report))

    t0 = time.perf_counter()
    data = load_dataset("cifar10", args.data_dir, train_subset=args.train_subset, val_size=args.val_size,
                        seed=args.seed, quiet=True)  # fmt: skip
    if args.tiny:  # every 40th test image (the set is sorted by class): the full 10,000 would dominate
        data = dataclasses.replace(data, test=ImageSet(data.test.x[::40].clone(), data.test.y[::40].clone()))
    report["data"] = f"cifar10 {args.data_dir}: train {len(data.train)}, val {len(data.val)}, test {len(data.test)}"
    print(f"{report['data']} ({time.perf_counter() - t0:.1f} s)", flush=True)
    for name, run_part in (("throughput", throughput), ("parity", parity)):
        if name in parts:
            t = time.perf_counter()
            report[name]["load_before"] = machine_load()
            run_part(args, data, report, save)
            report[name]["wall_s"] = time.perf_counter() - t
    report["wall_s"] = time.perf_counter() - t0
    save()
    print(f"wrote {stem}.md and .json ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
