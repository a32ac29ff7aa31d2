"""What INT8 buys on this CPU: FP32 vs INT8 accuracy and latency of trained models, on ONNX Runtime and OpenVINO,
and whether FP32 latency (or MACs) ranks architectures as INT8 latency does (not part of the test run).

Part 1, trained models: each run folder given is exported twice with `prunenas export RUN --precision int8`, once
measured on ONNX Runtime's CPU provider and once on OpenVINO (CPU); recorded per model and runtime: FP32 and INT8
test accuracy (the drop in points), top-1 agreement, the largest logit difference, and batch-1 latency of both
(alternating blocks, `--threads` intra-op threads) with the INT8 speed-up.

Part 2, ranking: `--genotypes` seeded random genotypes of `--space` (plus its reference), latency measured with
the latency metric's protocol (`prunenas.latency.genotype_latency`, random weights: latency depends on the
architecture only) at fp32 and int8 on each runtime; Spearman's rho between FP32 and INT8 latency and between MACs
and INT8 latency, and where the FP32-fastest architecture lands in the INT8 ranking.

    python benchmarks/int8_deployment.py --runs runs.json                  # both parts
    python benchmarks/int8_deployment.py --run resnet56:ref=RUN_DIR --genotypes 0
    python benchmarks/int8_deployment.py --space resnet56_channels --genotypes 20

`--runs FILE`: a JSON list of {"space", "label", "run_dir", and optionally "data_dir", "dataset", "note"};
`--run NAME=RUN_DIR` (repeatable) adds one more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

RUNTIMES = {"onnxruntime": "ONNX Runtime CPU", "openvino": "OpenVINO CPU"}


def _runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    if args.runs:
        runs += json.loads(Path(args.runs).read_text(encoding="utf-8"))
    for item in args.run:
        name, _, folder = item.partition("=")
        space, _, label = name.partition(":")
        runs.append({"space": space, "label": label or "run", "run_dir": folder})
    return runs


def export_pair(run: dict[str, Any], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The run exported at int8 and measured on each runtime."""
    from prunenas.export import export_run

    row: dict[str, Any] = {k: run.get(k) for k in ("space", "label", "run_dir", "dataset", "note")}
    for runtime in RUNTIMES:
        t0 = time.perf_counter()
        result = export_run(
            run["run_dir"], out / f"{run['space'].replace(':', '_').replace('@', '_')}-{run['label']}-{runtime}",
            precision="int8", runtime=runtime, provider="cpu", calibration_images=args.calibration_images,
            latency_repeats=args.repeats, threads=args.threads, data_dir=run.get("data_dir"),
            dataset=run.get("dataset"),
        )  # fmt: skip
        entry = result.sidecar["precisions"]["int8"]
        lat = entry["latency"]
        row.setdefault("macs", result.sidecar["macs"])
        row.setdefault("macs_ratio", result.sidecar["cost"]["macs_ratio"])
        row.setdefault("dataset_name", result.sidecar["dataset"]["name"])
        row[runtime] = {
            "fp32_test_acc": entry["fp32_test_acc"],
            "int8_test_acc": entry["test_acc"],
            "drop_points": entry["drop_points"],
            "top1_agreement": entry["top1_agreement"],
            "max_abs_logit_diff": entry["max_abs_logit_diff"],
            "test_images": entry["test_images"],
            "fp32_ms": lat["fp32"]["1"]["median_ms"],
            "int8_ms": lat["int8"]["1"]["median_ms"],
            "speedup": lat["speedup"]["1"],
            "engine": entry["runtime"],
            "quantization": entry["quantization"],
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"{run['space']} {run['label']} {runtime}: FP32 {100 * entry['fp32_test_acc']:.2f}% INT8 "
            f"{100 * entry['test_acc']:.2f}% agreement {100 * entry['top1_agreement']:.1f}% | "
            f"{lat['fp32']['1']['median_ms']:.3f} ms -> {lat['int8']['1']['median_ms']:.3f} ms "
            f"({lat['speedup']['1']:.2f}x)",
            file=sys.stderr,
        )
    return row


def spearman(a: list[float], b: list[float]) -> float:
    from prunenas.fidelity.stats import spearman_rho

    rho = spearman_rho(a, b)
    return float("nan") if rho is None else rho


def ranking(space_name: str, n: int, threads: int) -> dict[str, Any]:
    """FP32 and INT8 latency of the reference and `n` random genotypes, per runtime."""
    from prunenas.cost import genotype_cost
    from prunenas.latency import genotype_latency
    from prunenas.spaces import get_space

    space = get_space(space_name)
    genotypes = [space.reference()]
    seed = 0
    while len(genotypes) < n + 1:
        g = space.random_genotype(20_000 + seed)
        seed += 1
        if g.key not in {x.key for x in genotypes}:
            genotypes.append(g)
    rows = []
    for i, g in enumerate(genotypes):
        row: dict[str, Any] = {"key": g.key, "macs": genotype_cost(space, g, num_classes=10).macs}
        for provider in ("cpu", "openvino"):
            for precision in ("fp32", "int8"):
                r = genotype_latency(space, g, 10, provider=provider, precision=precision, threads=threads)
                row[f"{provider}_{precision}_ms"] = r.ms
                row[f"{provider}_{precision}_ratio"] = r.ratio
        rows.append(row)
        print(f"{space_name} genotype {i + 1}/{len(genotypes)}: {row}", file=sys.stderr)
    return {"space": space_name, "genotypes": len(rows), "threads": threads, "rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per runtime: the rank correlations, where the FP32-fastest lands in INT8, the INT8 speed-ups, and how many
    pruned genotypes are slower than the reference (rows[0])."""
    summary: dict[str, Any] = {}
    macs = [r["macs"] for r in rows]
    for provider in ("cpu", "openvino"):
        fp32 = [r[f"{provider}_fp32_ratio"] for r in rows]
        int8 = [r[f"{provider}_int8_ratio"] for r in rows]
        fastest_fp32 = min(range(len(rows)), key=lambda i: fp32[i])
        int8_rank = sorted(range(len(rows)), key=lambda i: int8[i]).index(fastest_fp32) + 1
        speedups = [r[f"{provider}_fp32_ms"] / r[f"{provider}_int8_ms"] for r in rows]
        pruned = rows[1:]  # the reference is rows[0]: a ratio > 1 is a pruned genotype slower than the unpruned model
        summary[provider] = {
            "spearman_fp32_int8": spearman(fp32, int8),
            "spearman_macs_int8": spearman(macs, int8),
            "spearman_macs_fp32": spearman(macs, fp32),
            "fastest_fp32_rank_in_int8": int8_rank,
            "speedup_median": statistics.median(speedups),
            "speedup_min": min(speedups),
            "speedup_max": max(speedups),
            "fp32_slower_than_reference": sum(r[f"{provider}_fp32_ratio"] > 1 for r in pruned),
            "int8_slower_than_reference": sum(r[f"{provider}_int8_ratio"] > 1 for r in pruned),
        }
    return summary


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# INT8 deployment on the CPU: accuracy, latency and ranking",
        "",
        f"- Date: {payload['date']}; machine: {payload['machine']['cpu']['model']} ({payload['cpu_text']}); "
        f"VNNI {payload['machine']['cpu'].get('vnni')}, AMX-INT8 {payload['machine']['cpu'].get('amx_int8')}",
        f"- Command: `{payload['command']}`",
        f"- Versions: {payload['versions']}",
        f"- Latency: batch 1, {payload['threads']} intra-op thread(s), median; INT8 = static QDQ (per-channel int8 "
        f"weights, uint8 activations), {payload['calibration_images']} calibration images from the training split",
        "",
    ]
    if payload["models"]:
        lines += [
            "## Trained models: FP32 vs INT8",
            "",
            "| space | model | MACs ratio | data | runtime | FP32 acc | INT8 acc | drop (points) | top-1 agreement "
            "| FP32 ms | INT8 ms | speed-up |",
            "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in payload["models"]:
            for runtime, label in RUNTIMES.items():
                r = m[runtime]
                lines.append(
                    f"| {m['space']} | {m['label']} | {m['macs_ratio']:.3f} | {m.get('note') or m['dataset_name']} "
                    f"| {label} | {100 * r['fp32_test_acc']:.2f}% | {100 * r['int8_test_acc']:.2f}% "
                    f"| {r['drop_points']:.2f} | {100 * r['top1_agreement']:.1f}% | {r['fp32_ms']:.3f} "
                    f"| {r['int8_ms']:.3f} | {r['speedup']:.2f}x |"
                )
        lines.append("")
    rank = payload.get("ranking")
    if rank:
        lines += [
            f"## Ranking: {rank['genotypes']} genotypes of {rank['space']} (reference + seeded random)",
            "",
            "| runtime | Spearman FP32 vs INT8 latency | Spearman MACs vs INT8 latency | Spearman MACs vs FP32 latency "
            "| FP32-fastest's rank in INT8 | INT8 speed-up median (min-max) | pruned genotypes slower than the "
            "reference: FP32 / INT8 |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for provider, label in (("cpu", "ONNX Runtime CPU"), ("openvino", "OpenVINO CPU")):
            s = rank["summary"][provider]
            lines.append(
                f"| {label} | {s['spearman_fp32_int8']:.3f} | {s['spearman_macs_int8']:.3f} "
                f"| {s['spearman_macs_fp32']:.3f} | {s['fastest_fp32_rank_in_int8']} of {rank['genotypes']} "
                f"| {s['speedup_median']:.2f}x ({s['speedup_min']:.2f}-{s['speedup_max']:.2f}) "
                f"| {s.get('fp32_slower_than_reference', '-')} / {s.get('int8_slower_than_reference', '-')} of "
                f"{rank['genotypes'] - 1} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=None, help="JSON list of trained runs (space, label, run_dir, data_dir)")
    parser.add_argument("--run", action="append", default=[], metavar="SPACE:LABEL=RUN_DIR", help="one more run")
    parser.add_argument("--space", default="resnet56_channels", help="space of the ranking part")
    parser.add_argument("--genotypes", type=int, default=20, help="random genotypes of the ranking part (0: none)")
    parser.add_argument("--calibration-images", type=int, default=256, help="INT8 calibration images (default 256)")
    common.add_repeats(parser, 100, "timed batch-1 runs per model and precision (default 100)")
    common.add_threads(parser, 1, "intra-op threads of every latency (default 1: repeatable on a shared machine)")
    parser.add_argument(
        "--report", default=None, metavar="JSON", help="rewrite the .md of a results .json, run nothing"
    )
    common.add_out(parser, folder=False)
    args = parser.parse_args(argv)
    if args.report:  # the report of stored results, e.g. after the table gained a column
        stored = json.loads(Path(args.report).read_text(encoding="utf-8"))
        if stored.get("ranking"):
            stored["ranking"]["summary"] = summarize(stored["ranking"]["rows"])
        Path(args.report).write_text(common.to_json(stored), encoding="utf-8")
        common.write_text(Path(args.report).with_suffix(".md"), markdown(stored))
        return 0

    import onnxruntime
    import openvino

    from prunenas import __version__

    runs = _runs(args)
    with tempfile.TemporaryDirectory(prefix="prunenas-int8-") as tmp:
        os.environ["PRUNENAS_COST_CACHE"] = str(Path(tmp) / "cost-cache")  # measured now, not read from a cache
        models = [export_pair(run, Path(tmp), args) for run in runs]
        ranked = ranking(args.space, args.genotypes, args.threads) if args.genotypes > 0 else None
    payload = {
        "date": common.stamp(),
        "command": common.command_line(__file__, argv),
        "machine": common.machine(),
        "cpu_text": common.cpu_text(),
        "versions": f"prunenas {__version__}, onnxruntime {onnxruntime.__version__}, openvino "
        f"{openvino.get_version().split('-')[0]}",
        "threads": args.threads,
        "calibration_images": args.calibration_images,
        "models": models,
        "ranking": ranked,
    }
    stem = common.results_stem(args.out, "int8-deployment")
    md = markdown(payload)
    common.write_results(stem, payload, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
