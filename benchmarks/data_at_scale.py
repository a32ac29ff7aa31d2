"""Data at scale on this machine: the decode-once disk cache and streamed batches, measured.

For generated ImageFolder trees of random-content JPEGs at 160 px (smooth random colour fields with noise,
so they compress like photographs rather than like white noise) of --sizes images (default 5,000 and
50,000; a tenth of each goes to test/), it measures, each step in a fresh process so that its peak
resident memory (ru_maxrss) is its own:

  decode     building the disk cache at --image-size 128 (stored 147 px): seconds, images/s, cache bytes
  loader     StreamBatches at 64 and 128 px, random-resized-crop + flip, no model: images/s and peak RSS;
             the in-memory DeviceBatches on the small set for comparison
  train      the trainer's images/s on the same small set (resnet20_channels at 64 px, 1 epoch over
             --train-images images) streamed from the disk cache and whole in memory

Run: python benchmarks/data_at_scale.py [--sizes 5000,50000] [--root /tmp/prunenas-bench-data]
     [--out-md benchmarks/results/DATE-cpu-data-at-scale.md --out-json ...]
The trees and caches stay under --root (reused by a rerun). Numbers depend on the machine and its load;
the results file says which.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

ROOT = common.REPO


def generate(tree: Path, n: int, size: int = 160, classes: int = 10) -> None:
    """n JPEGs (q 90) in train/ and test/ (a tenth) with `classes` class folders; skipped when complete."""
    import numpy as np
    from PIL import Image

    marker = tree / ".complete"
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    n_test = n // 10
    t0 = time.perf_counter()
    for i in range(n):
        split = "test" if i < n_test else "train"
        folder = tree / split / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        noisy = np.asarray(img, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
        if (i + 1) % 5000 == 0:
            print(f"  generated {i + 1:,}/{n:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    marker.write_text("ok\n")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- the steps, each run in a child process ---------------------------------------------------------------------
def step_decode(tree: str, cache: str, image_size: int) -> dict[str, Any]:
    import shutil

    from prunenas.data import load_dataset

    shutil.rmtree(cache, ignore_errors=True)  # a fresh build every time
    t0 = time.perf_counter()
    data = load_dataset("imagefolder", tree, image_size=image_size, data_cache="disk", cache_dir=cache, quiet=True)
    seconds = time.perf_counter() - t0
    n = len(data.train) + len(data.val) + len(data.test)
    return {"seconds": seconds, "images": n, "images_per_s": n / seconds, "cache_bytes": folder_bytes(Path(data.cache))}


def step_loader(tree: str, cache: str, image_size: int, out_size: int, stream: bool, limit: int) -> dict[str, Any]:
    import torch

    from prunenas.data import load_dataset, make_batches

    data = load_dataset(
        "imagefolder", tree, image_size=image_size, data_cache="disk" if stream else "memory", cache_dir=cache,
        quiet=True,
    )  # fmt: skip
    train = data.train if len(data.train) <= limit else data.train.take(torch.arange(limit))
    batches = make_batches(
        train, batch_size=256, device="cpu", mean=data.mean, std=data.std, augment=True, shuffle=True,
        drop_last=True, out_size=out_size, crop="rrc",
    )  # fmt: skip
    t0 = time.perf_counter()
    seen = 0
    for x, _ in batches.epoch(0):
        seen += x.shape[0]
    seconds = time.perf_counter() - t0
    return {"images": seen, "seconds": seconds, "images_per_s": seen / seconds, "stored_px": data.stored_size}


def step_train(tree: str, cache: str, stream: bool, images: int) -> dict[str, Any]:
    from prunenas.api import load_data
    from prunenas.config import DataConfig, RunSettings
    from prunenas.recipes import make_recipe
    from prunenas.spaces import get_space
    from prunenas.train import train

    cfg = DataConfig(
        dataset="imagefolder", data_dir=tree, image_size=64, stored_size=64, train_subset=images,
        data_cache="disk" if stream else "memory",
    )  # fmt: skip
    os.environ["PRUNENAS_CACHE"] = cache
    data = load_data(cfg)
    space = get_space("resnet20_channels")
    recipe = make_recipe("standard", space.recipe, overrides={"epochs": 1, "batch_size": 128})
    result = train(space, space.reference(), data, recipe, RunSettings(quiet=True, plot=False), evaluate_test=False)
    return {"images": len(data.train), "images_per_s": result.images_per_s, "seconds": result.wall_time_s}


def child(args: argparse.Namespace) -> None:
    spec = json.loads(args.child)
    fn = {"decode": step_decode, "loader": step_loader, "train": step_train}[spec.pop("step")]
    out = fn(**spec)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def measure(**spec: Any) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT
    )
    if proc.returncode:
        raise SystemExit(f"step {spec} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    print(f"  {spec['step']:7s} {json.dumps({k: v for k, v in spec.items() if k != 'step'})}: {line[7:]}", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="5000,50000", help="images per generated tree (comma-separated)")
    p.add_argument("--root", default="/tmp/prunenas-bench-data", help="where trees and caches go")
    p.add_argument("--train-images", type=int, default=2000, help="images of the streamed vs in-memory training")
    p.add_argument("--loader-images", type=int, default=20000, help="at most this many images per loader epoch")
    common.add_out_files(p)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    root = Path(args.root)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    for n in sizes:
        tree = root / f"tree-{n}"
        print(f"tree of {n:,} images at {tree}", flush=True)
        generate(tree, n)
        source = folder_bytes(tree)
        cache = str(root / f"cache-{n}")
        row: dict[str, Any] = {"images": n, "source_bytes": source}
        row["decode"] = measure(step="decode", tree=str(tree), cache=cache, image_size=128)
        for px in (64, 128):
            row[f"stream_{px}"] = measure(
                step="loader", tree=str(tree), cache=cache, image_size=128, out_size=px, stream=True,
                limit=args.loader_images,
            )  # fmt: skip
        rows.append(row)
    small = root / f"tree-{sizes[0]}"
    memory = {
        px: measure(step="loader", tree=str(small), cache=str(root / f"cache-{sizes[0]}"), image_size=px, out_size=px,
                    stream=False, limit=args.loader_images)
        for px in (64, 128)
    }  # fmt: skip
    trained = {
        mode: measure(step="train", tree=str(small), cache=str(root / f"cache-{sizes[0]}"), stream=mode == "stream",
                      images=args.train_images)
        for mode in ("memory", "stream")
    }  # fmt: skip
    cost = 1 - trained["stream"]["images_per_s"] / trained["memory"]["images_per_s"]
    load = os.getloadavg()
    machine = common.machine()
    report = {
        "date": common.today(),
        "machine": f"{machine['cpu']['model']}, {machine['cpu_count']} CPU cores, {machine['gpu'] or 'no GPU'}; "
        f"load average at the end {load[0]:.1f}",
        "command": common.command_line(__file__),
        "trees": rows,
        "memory_loader": memory,
        "train": trained,
        "streaming_cost": cost,
    }
    lines = [
        "# Data at scale: disk cache and streamed batches (CPU)",
        "",
        f"Date {report['date']}; machine: {report['machine']}. Command: `{report['command']}`.",
        "",
        "| images | source | decode (disk cache, 147 px) | cache size | stream 64 px | stream 128 px | peak RSS "
        "decode / stream 64 / stream 128 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        d, s64, s128 = r["decode"], r["stream_64"], r["stream_128"]
        cells = [
            f"{r['images']:,}",
            f"{r['source_bytes'] / 2**20:,.0f} MiB",
            f"{d['seconds']:.0f} s ({d['images_per_s']:,.0f} img/s)",
            f"{d['cache_bytes'] / 2**20:,.0f} MiB",
            f"{s64['images_per_s']:,.0f} img/s",
            f"{s128['images_per_s']:,.0f} img/s",
            f"{d['peak_rss_mb']:,.0f} / {s64['peak_rss_mb']:,.0f} / {s128['peak_rss_mb']:,.0f} MB",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"In-memory loader on the {sizes[0]:,}-image tree (DeviceBatches, decoded at the output size): 64 px "
        f"{memory[64]['images_per_s']:,.0f} img/s (peak RSS {memory[64]['peak_rss_mb']:,.0f} MB), 128 px "
        f"{memory[128]['images_per_s']:,.0f} img/s (peak RSS {memory[128]['peak_rss_mb']:,.0f} MB).",
        "",
        f"Trainer, resnet20_channels at 64 px, 1 epoch over {trained['memory']['images']:,} images, batch 128: in "
        f"memory {trained['memory']['images_per_s']:,.1f} img/s, streamed from the disk cache "
        f"{trained['stream']['images_per_s']:,.1f} img/s: streaming costs {100 * cost:.1f}% (target < 10%).",
        "",
        "Loader rates are for the augmentation alone (random-resized-crop + flip, batch 256, no model); each step "
        "ran in its own process, so each peak RSS is that step's own.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out_md:
        common.write_text(args.out_md, text)
    if args.out_json:
        common.write_text(args.out_json, common.to_json(report))


if __name__ == "__main__":
    main()
