"""Does distilling from the unpruned model help a pruned architecture trained from scratch?

    python benchmarks/distillation.py --data-dir ../shared/datasets/cifar10-jpeg.tar.gz \\
        --out benchmarks/results

Trains the unpruned ResNet-56 (`resnet56_channels`' reference) once as the teacher, then Li et al.'s
ResNet-56-B (`li2017_resnet56_b`) from scratch on `--seeds` seeds without a teacher and with it (Hinton et
al. 2015's loss at prunenas's defaults, T = 4 and w = 0.9), all with the same shortened standard recipe
(`--epochs`, lr x0.1 at 50% and 75%) on a CIFAR-10 subset. Reports the test accuracy of each arm (mean, std,
Welch t-test) and the wall time of each run, in `<date>-cpu-distillation.md` and `.json`.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from prunenas.api import load_genotype
from prunenas.config import RunSettings
from prunenas.data import load_dataset
from prunenas.recipes import make_recipe
from prunenas.spaces import get_space
from prunenas.train import CHECKPOINT, train


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """(t, two-sided p) of Welch's t-test; p from scipy when it imports, else a normal approximation."""
    va, vb = statistics.variance(a), statistics.variance(b)
    se = math.sqrt(va / len(a) + vb / len(b))
    if se == 0:
        return 0.0, 1.0
    t = (statistics.fmean(b) - statistics.fmean(a)) / se
    df = (va / len(a) + vb / len(b)) ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    try:
        from scipy import stats

        return t, float(2 * stats.t.sf(abs(t), df))
    except ImportError:
        return t, math.erfc(abs(t) / math.sqrt(2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_data_dir(p, "../shared/datasets/cifar10-jpeg.tar.gz")
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=15)
    # ResNet-56 at lr 0.1 without warm-up diverged in the first epoch on 5,000 images (loss 3.4, then stuck
    # at chance for 6 epochs: 21.6% test after 15); a linear warm-up is the usual cure, the same for every arm
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--seeds", type=int, default=3)
    common.add_threads(p)
    common.add_out(p, folder=True, default="benchmarks/results")
    p.add_argument("--work", type=Path, default=None, help="run folders (default: a temporary folder)")
    common.add_tiny(p, "digits, 1 epoch, 2 seeds: checks the path in a minute")
    args = p.parse_args()
    if args.tiny:
        data = load_dataset("digits", train_subset=256, val_size=64, seed=0)
        # the warm-up must end before the last epoch (the default 2 epochs is refused with 1 epoch)
        args.epochs, args.seeds, args.warmup_epochs = 1, 2, min(args.warmup_epochs, 0.5)
    else:
        data = load_dataset("cifar10", args.data_dir, train_subset=args.train_subset, val_size=args.val_size, seed=0)
    work = args.work or Path(tempfile.mkdtemp(prefix="prunenas-kd-"))
    space = get_space("resnet56_channels")
    student = load_genotype("li2017_resnet56_b")
    recipe = make_recipe(
        "standard", space.recipe, overrides={"epochs": args.epochs, "warmup_epochs": args.warmup_epochs}
    )
    settings = RunSettings(quiet=True, plot=False, threads=args.threads)
    started = time.time()

    def run(genotype: Any, seed: int, folder: Path, teacher: Path | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        result = train(space, genotype, data, recipe, settings.replace(seed=seed), out_dir=folder, teacher=teacher)
        row = {"seed": seed, "test_acc": result.test_acc, "val_acc": result.val_acc,
               "wall_s": round(time.perf_counter() - t0, 1), "load": os.getloadavg()[0]}  # fmt: skip
        print(f"{folder.name}: test {result.test_acc:.4f} in {row['wall_s']} s", flush=True)
        return row

    teacher_row = run(space.reference(), 0, work / "teacher")
    teacher = work / "teacher" / CHECKPOINT
    arms: dict[str, list[dict[str, Any]]] = {"scratch": [], "scratch + KD": []}
    for seed in range(args.seeds):
        arms["scratch"].append(run(student, seed, work / f"b-s{seed}"))
        arms["scratch + KD"].append(run(student, seed, work / f"b-kd-s{seed}", teacher=teacher))
    accs = {name: [float(r["test_acc"]) for r in rows] for name, rows in arms.items()}
    t, p_value = welch(accs["scratch"], accs["scratch + KD"])
    machine = common.machine()
    info = machine["cpu"]
    command = common.command_line(__file__)
    summary = {
        "date": common.today(),
        "command": command,
        "cpu": info,
        "torch": machine["torch"],
        "dataset": data.describe(),
        "recipe": recipe.to_dict(),
        "teacher": {"genotype": "resnet56_channels reference", **teacher_row},
        "student": "li2017_resnet56_b",
        "kd": {"temperature": recipe.kd_temperature, "weight": recipe.kd_weight},
        "arms": {
            name: {
                "runs": rows,
                "mean": statistics.fmean(accs[name]),
                "std": statistics.stdev(accs[name]) if len(rows) > 1 else 0.0,
            }
            for name, rows in arms.items()
        },
        "welch": {"t": t, "p": p_value},
        "wall_s": round(time.time() - started, 1),
    }
    stem = common.results_stem(args.out, "distillation", folder=True, date=summary["date"], tiny=args.tiny)
    lines = [
        "# Distillation from the unpruned model: ResNet-56-B from scratch, with and without the teacher",
        "",
        f"Date {summary['date']}; CPU {info['model']} ({info['cores']} cores, bf16 units: {info['bf16']}, "
        f"AMX: {info['amx']}); torch {machine['torch']}.",
        f"Command: `{command}`",
        "",
        f"Data: {data.name}, {len(data.train)} training / {len(data.val)} validation / {len(data.test)} test images. "
        f"Recipe: standard, {recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr:g} after a "
        f"{recipe.warmup_epochs:g}-epoch linear warm-up, x0.1 at 50% and 75%; "
        f"KD with T = {recipe.kd_temperature:g}, w = {recipe.kd_weight:g} (Hinton et al. 2015).",
        "",
        f"Teacher (unpruned ResNet-56, seed 0): test {teacher_row['test_acc']:.4f}, {teacher_row['wall_s']} s.",
        "",
        "| arm | test accuracy per seed | mean | std | wall s per run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, rows in arms.items():
        per = ", ".join(f"{r['test_acc']:.4f}" for r in rows)
        walls = ", ".join(f"{r['wall_s']:g}" for r in rows)
        arm = summary["arms"][name]
        lines.append(f"| {name} | {per} | {arm['mean']:.4f} | {arm['std']:.4f} | {walls} |")
    diff = summary["arms"]["scratch + KD"]["mean"] - summary["arms"]["scratch"]["mean"]
    lines += [
        "",
        f"Difference (KD - scratch): {diff * 100:+.2f} points; Welch t = {t:.2f}, p = {p_value:.3f}. "
        f"Total wall time {summary['wall_s']:.0f} s. Load average beside each run is in the JSON.",
    ]
    common.write_results(stem, summary, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
