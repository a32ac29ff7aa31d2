"""Time `prunenas export` of a ResNet-56 and its ONNX Runtime latency (not part of the test run).

Training is not what is measured, so the run folder is written directly: the space's reference
ResNet-56 (or any genotype) with random weights whose BatchNorm statistics are calibrated on a few
random batches (without that, random 56-layer ResNets have logits in the thousands and an fp32 parity
check at 1e-4 says nothing). metrics.json names the embedded digits set, so the real-input parity
check runs too.

    python benchmarks/export_latency.py                      # resnet56_channels reference, CPU
    python benchmarks/export_latency.py li2017_resnet56_b --repeats 100 --provider cpu
    time prunenas export /tmp/prunenas-bench/run --benchmark  # the same, through the CLI

Prints one JSON object: export wall time (total and exporter only), parity, latency per batch size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common
import torch

from prunenas.cli.common import load_genotype
from prunenas.data import load_dataset
from prunenas.export import export_run
from prunenas.train import CHECKPOINT, METRICS


def write_run(genotype_arg: str, run: Path, seed: int = 0) -> Path:
    """A run folder (checkpoint.pt, genotype.json, metrics.json) holding a BN-calibrated random model."""
    space, genotype = load_genotype(genotype_arg)
    data = load_dataset("digits", seed=seed)
    torch.manual_seed(seed)
    model = space.build(genotype, num_classes=data.num_classes)
    model.train()
    with torch.no_grad():
        for _ in range(20):  # running BN statistics of random inputs (momentum 0.1: ~88% converged)
            model(torch.randn(64, *space.input_shape))
    model.eval()
    run.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "run_key": {"genotype": genotype.key, "benchmark": "random weights"},
            "epoch": 0,
            "model": model.state_dict(),
            "genotype": genotype.to_dict(),
            "space": space.name,
            "num_classes": data.num_classes,
            "history": [],
            "stopped": None,
            "rng_cuda": None,
        },
        run / CHECKPOINT,
    )
    genotype.save(run / "genotype.json")
    metrics = {
        "genotype_key": genotype.key,
        "recipe": "none (random weights, BN calibrated)",
        "val_acc": None,
        "test_acc": None,
        "seed": seed,
        "dataset": data.describe(),
        "space": space.name,
        "genotype": genotype.to_dict(),
    }
    (run / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("genotype", nargs="?", default="resnet56_channels", help="genotype file, shipped name or space")
    p.add_argument("--dir", default="/tmp/prunenas-bench", help="work folder (run/ and export/ are written here)")
    common.add_repeats(p, 50, help="ONNX Runtime timed runs per batch size (default 50)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    p.add_argument("--provider", default="auto")
    args = p.parse_args(argv)
    root = Path(args.dir)
    run = write_run(args.genotype, root / "run")
    t0 = time.perf_counter()
    result = export_run(
        run,
        root / "export",
        benchmark=True,
        latency_batches=tuple(args.batch_sizes),
        latency_repeats=args.repeats,
        latency_warmup=args.warmup,
        provider=args.provider,
    )
    total = time.perf_counter() - t0
    s = result.sidecar
    lat = s["latency"]
    summary = {
        "genotype": args.genotype,
        "key": s["key"],
        "macs": s["macs"],
        "params": s["params"],
        "export_total_s (incl. latency)": round(total, 2),
        "exporter": s["export"]["method"],
        "exporter_s": s["export"]["seconds"],
        "onnx_bytes": s["files"]["bytes"],
        "parity_max_abs_diff": s["parity"]["max_abs_diff"],
        "provider": lat["provider"],
        "cpu_count": lat["cpu_count"],
        "latency_ms": {
            b: {"median": round(v["median_ms"], 3), "p90": round(v["p90_ms"], 3)} for b, v in lat["per_batch"].items()
        },
        "images_per_s": {b: round(v["images_per_s"], 1) for b, v in lat["per_batch"].items()},
        "out": str(result.out_dir),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
