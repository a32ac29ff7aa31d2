"""TensorRT on the GPU machine: the export's engines and the latency metric at fp32, fp16 and int8 (not part of the
test run; written for the GPU issue, which runs it once).

1. Trains a narrow ResNet-20 on the embedded digits for a few epochs (GPU), exports it with
   `--precision int8 --runtime tensorrt --engine tensorrt` (ONNX Runtime's TensorRT provider measures FP32 and
   INT8, the FP32 parity is checked in TensorRT, and a serialized engine is written) and with
   `--precision fp16 --runtime tensorrt`, and evaluates model.int8.onnx with `--runtime tensorrt`.
2. Times resnet56_channels' reference and Li et al.'s ResNet-56-B with the latency metric's protocol on
   `tensorrt` at fp32, fp16 and int8 (batch 1 and --batch), engines cached under the cost cache.

    python benchmarks/tensorrt_int8.py --out /tmp/out/tensorrt-int8     # on the GPU machine
    python benchmarks/tensorrt_int8.py --dry                              # checks the plan here, runs nothing

Without CUDA or TensorRT it stops at once with one line saying which is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common


def missing() -> str | None:
    """Why TensorRT cannot run here, or None."""
    import onnxruntime as ort
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no TensorrtExecutionProvider"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install tensorrt)"
    return None


def exports(folder: Path, epochs: int) -> dict[str, Any]:
    from prunenas.data import load_dataset
    from prunenas.export import evaluate_onnx, export_run
    from prunenas.recipes import make_recipe
    from prunenas.spaces import get_space
    from prunenas.train import RunSettings, train

    space = get_space("resnet20_channels")
    genotype = space.make({**{g.name: 8 for g in space.genes}, "stage1_width": 8, "stage2_width": 12})
    data = load_dataset("digits", seed=0, val_size=64)
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": epochs, "batch_size": 32})
    run = folder / "run"
    train(space, genotype, data, recipe, RunSettings(quiet=True, plot=False, device="cuda"), out_dir=run)
    genotype.save(run / "genotype.json")
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    int8 = export_run(
        run, folder / "int8", precision="int8", runtime="tensorrt", engine="tensorrt", latency_repeats=100
    )
    out["int8"] = {**int8.sidecar["precisions"]["int8"], "parity_tensorrt": int8.sidecar["parity"].get("tensorrt")}
    out["int8"]["engine"] = int8.sidecar["engines"]["tensorrt"]
    out["int8"]["seconds"] = time.perf_counter() - t0
    fp16 = export_run(run, folder / "fp16", precision="fp16", runtime="tensorrt", latency_repeats=100)
    out["fp16"] = fp16.sidecar["precisions"]["fp16"]
    out["evaluate_int8_tensorrt"] = evaluate_onnx(folder / "int8" / "model.int8.onnx", runtime="tensorrt")
    return out


def latencies(batches: list[int]) -> list[dict[str, Any]]:
    from prunenas.genotype import Genotype
    from prunenas.latency import genotype_latency
    from prunenas.spaces import get_space

    space = get_space("resnet56_channels")
    b = Genotype.load(common.REPO / "search_spaces" / "genotypes" / "li2017_resnet56_b.json")
    rows = []
    for name, genotype in (("reference", space.reference()), ("li2017_resnet56_b", b)):
        for batch in batches:
            for precision in ("fp32", "fp16", "int8"):
                t0 = time.perf_counter()
                r = genotype_latency(space, genotype, 10, provider="tensorrt", precision=precision, batch=batch)
                rows.append({"genotype": name, "batch": batch, "precision": precision, "ms": r.ms,
                             "reference_ms": r.reference_ms, "ratio": r.ratio, "cv": r.cv,
                             "seconds": time.perf_counter() - t0})  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5, help="training epochs of the exported model (default 5)")
    p.add_argument("--batch", type=int, default=64, help="the second latency batch size (default 64)")
    p.add_argument("--dry", action="store_true", help="print what would run and why it can or cannot, run nothing")
    common.add_out(p, folder=False)
    args = p.parse_args(argv)
    why = missing()
    if args.dry:
        print(f"plan: exports of a digits ResNet-20 at int8/fp16 on tensorrt; resnet56 latency at batch 1 and "
              f"{args.batch}, fp32/fp16/int8; here: {why or 'TensorRT can run'}")  # fmt: skip
        return 0
    if why:
        print(f"tensorrt_int8: {why}; run it on the GPU machine", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="prunenas-trt-") as tmp:
        payload = {
            "date": common.stamp(), "command": common.command_line(__file__, argv), "machine": common.machine(),
            "exports": exports(Path(tmp), args.epochs), "latency": latencies([1, args.batch]),
        }  # fmt: skip
    stem = common.results_stem(args.out, "tensorrt-int8", kind=common.slug(common.device_name("cuda")))
    lines = [f"# TensorRT INT8 ({payload['date']}, {common.device_name('cuda')})", "", f"`{payload['command']}`", ""]
    lines += ["| genotype | batch | precision | ms | ratio to reference |", "|---|---:|---|---:|---:|"]
    lines += [f"| {r['genotype']} | {r['batch']} | {r['precision']} | {r['ms']:.3f} | {r['ratio']:.3f} |"
              for r in payload["latency"]]  # fmt: skip
    e = payload["exports"]["int8"]
    speedup = e["latency"]["speedup"]["1"]
    lines += ["", f"INT8 export: test accuracy {100 * e['test_acc']:.2f}% vs FP32 {100 * e['fp32_test_acc']:.2f}%, "
              f"agreement {100 * e['top1_agreement']:.1f}%, batch-1 speed-up {speedup:.2f}x"]  # fmt: skip
    common.write_results(stem, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
