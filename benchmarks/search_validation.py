"""What validating a search's proxy runs only at the end saves: the same search, every epoch vs at the end.

    python benchmarks/search_validation.py --data-dir ../shared/datasets/cifar10-jpeg.tar.gz \\
        --out-md benchmarks/results/DATE-cpu-search-validation.md

Runs `prunenas search` twice on the same random-sampler study (same seed, so the same genotypes): once with
`--eval-every 1` (what every search did before) and once with the default (a proxy run is ranked on its final
model, so it is validated once, after its last epoch). Reports each trial's training time (train_time_s in
trials.csv, validation included) and checks that both runs measured the same validation accuracies.
How much it saves depends on the ratio of validation to training images: small training subsets (the
CPU-scale searches) gain most, a full CIFAR-10 split (45,000 / 5,000) little.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common


def run_search(args: argparse.Namespace, out: Path, every_epoch: bool) -> tuple[list[dict[str, str]], float]:
    argv = [
        sys.executable, "-m", "prunenas.cli", "search", "--space", args.space, "--dataset", args.dataset,
        "--train-subset", str(args.train_subset), "--budget", "smoke", "--trials", str(args.trials),
        "--proxy-epochs", str(args.proxy_epochs), "--no-final", "--no-seeding", "--sampler", "random",
        "--threads", str(args.threads), "--quiet", "--out", str(out),
    ]  # fmt: skip
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if every_epoch:
        argv += ["--eval-every", "1"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"search failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with (out / "trials.csv").open() as fh:
        return list(csv.DictReader(fh)), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="resnet20_channels")
    parser.add_argument("--dataset", default="cifar10")
    common.add_data_dir(parser, "../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--train-subset", type=int, default=2500)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--proxy-epochs", type=int, default=3)
    common.add_threads(parser, 1)
    common.add_out_files(parser, json_file=False)
    args = parser.parse_args(argv)
    started = common.stamp()
    with tempfile.TemporaryDirectory(prefix="prunenas-search-validation-") as tmp:
        every, every_wall = run_search(args, Path(tmp) / "every", every_epoch=True)
        end, end_wall = run_search(args, Path(tmp) / "end", every_epoch=False)
    same = [r["key"] for r in every] == [r["key"] for r in end]
    same_acc = same and all(a["val_acc"] == b["val_acc"] for a, b in zip(every, end, strict=True))
    t_every = [float(r["train_time_s"]) for r in every]
    t_end = [float(r["train_time_s"]) for r in end]
    command = common.command_line(__file__, argv)
    machine = common.machine()
    lines = [
        "# Validating a search's proxy runs only at the end",
        "",
        f"- date: {started}; machine: {machine['cpu']['model']}, {machine['platform']}; {args.threads} torch thread(s)",
        f"- command: `{command}`",
        f"- search: {args.space} on {args.dataset}, {args.train_subset} training images, {args.trials} random "
        f"genotypes (seed 0), {args.proxy_epochs}-epoch proxies, validation split: the dataset's default",
        f"- same genotypes in both runs: {same}; identical validation accuracies: {same_acc}",
        "",
        "| trial | genotype | val acc | train time, every epoch (s) | at the end (s) | saved |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for i, (a, b) in enumerate(zip(every, end, strict=True)):
        ta, tb = float(a["train_time_s"]), float(b["train_time_s"])
        lines.append(
            f"| {i} | {a['key']} | {float(a['val_acc']) * 100:.2f} | {ta:.1f} | {tb:.1f} | {1 - tb / ta:.0%} |"
        )
    lines += [
        f"| all | | | {sum(t_every):.1f} | {sum(t_end):.1f} | {1 - sum(t_end) / sum(t_every):.0%} |",
        "",
        f"Whole command, wall: {every_wall:.0f} s every epoch, {end_wall:.0f} s at the end "
        "(data loading and the study's bookkeeping included).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out_md:
        common.write_text(args.out_md, text)
        print(f"wrote {args.out_md}")
    return 0 if same_acc else 1


if __name__ == "__main__":
    raise SystemExit(main())
