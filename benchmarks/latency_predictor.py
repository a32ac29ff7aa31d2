"""How much MACs mislead about latency, how well the latency predictor does, and what a latency limit
buys over a MACs limit, on this machine. Writes a Markdown and a JSON result file.

    python benchmarks/latency_predictor.py --out benchmarks/results/2026-11-28-cpu-latency-predictor

Per space (default resnet56_channels and torchvision:mobilenet_v2 at 224): N seeded random genotypes are
counted (MACs) and timed (ONNX Runtime CPU, batch 1, all cores, the measurement protocol of
prunenas.latency); Spearman's rank correlation of MACs vs measured latency; the predictor
(prunenas.latency_model, calibrated on its own 16 genotypes) is scored on the N held-out ones: median,
90th-percentile and share within 10% of the relative error. Then two searches at the same budget and seed
on resnet20_channels with digits: --max macs=0.6x and --max latency=0.6x; their winners' measured latency
and accuracy side by side. Run it on an otherwise idle machine: timing shares the cores with anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def space_study(name: str, n: int, calibration: int) -> dict[str, Any]:
    from prunenas.cost import genotype_cost
    from prunenas.latency import genotype_latency
    from prunenas.latency_model import latency_predictor
    from prunenas.spaces import get_space

    space = get_space(name)
    t0 = time.perf_counter()
    predictor = latency_predictor(space, calibration=calibration, log=lambda m: print(m, flush=True))
    calibration_s = time.perf_counter() - t0
    rows = []
    for i in range(n):
        g = space.random_genotype(1_000_000 + i)
        t1 = time.perf_counter()
        measured = genotype_latency(space, g, space.num_classes)
        seconds = time.perf_counter() - t1
        predicted = predictor.predict(space, g)
        rows.append(
            {
                "key": g.key,
                "macs": genotype_cost(space, g).macs,
                "ms": measured.ms,
                "ratio": measured.ratio,
                "cv": measured.cv,
                "predicted_ms": predicted,
                "predicted_ratio": predicted / predictor.reference_ms,
                "measure_s": seconds,
            }
        )
        print(f"{name} {i + 1}/{n}: {measured.ms:.3f} ms measured, {predicted:.3f} predicted", flush=True)
    # the predictor is scored on the latency ratio (candidate / reference timed in the same window), the
    # drift-controlled quantity the search limits with 0.5x
    errors = sorted(abs(r["predicted_ratio"] - r["ratio"]) / r["ratio"] for r in rows)
    ms_errors = sorted(abs(r["predicted_ms"] - r["ms"]) / r["ms"] for r in rows)
    return {
        "space": name,
        "genotypes": n,
        "spearman_macs_latency": spearman([r["macs"] for r in rows], [r["ms"] for r in rows]),
        "spearman_predicted_latency": spearman([r["predicted_ms"] for r in rows], [r["ms"] for r in rows]),
        "ratio_error_median": statistics.median(errors),
        "ratio_error_p90": errors[int(0.9 * (len(errors) - 1))],
        "ratio_within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
        "ms_error_median": statistics.median(ms_errors),
        "ms_error_p90": ms_errors[int(0.9 * (len(ms_errors) - 1))],
        "ms_within_10pct": sum(e <= 0.10 for e in ms_errors) / len(ms_errors),
        "predictor": predictor.to_dict(),
        "calibration_s": calibration_s,
        "measure_s_median": statistics.median(r["measure_s"] for r in rows),
        "rows": rows,
    }


def search_pair(trials: int, ratio: float) -> dict[str, Any]:
    from prunenas.cli import main

    out: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="prunenas-latency-search-"))
    for limit in (f"macs={ratio}x", f"latency={ratio}x"):
        tag = limit.split("=")[0]
        argv = [
            "search", "--space", "resnet20_channels", "--dataset", "digits", "--budget", "smoke",
            "--trials", str(trials), "--proxy-epochs", "2", "--final-epochs", "4", "--top-k", "1",
            "--max", limit, "--objectives", "val_acc,latency", "--seed", "0",
            "--out", str(root / tag), "--exports", str(root / f"exports-{tag}"), "--quiet",
        ]  # fmt: skip
        t0 = time.perf_counter()
        code = main(argv)
        summary = json.loads((root / tag / "summary.json").read_text()) if code == 0 else {}
        out[tag] = {"argv": argv, "exit": code, "wall_s": time.perf_counter() - t0, "summary": summary}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", default="resnet56_channels,torchvision:mobilenet_v2")
    parser.add_argument("--genotypes", type=int, default=40)
    parser.add_argument("--calibration", type=int, default=16, help="genotypes timed to fit each predictor")
    parser.add_argument("--search-trials", type=int, default=12)
    parser.add_argument("--limit", type=float, default=0.6, help="the searches' --max macs=Rx / latency=Rx")
    parser.add_argument("--out", default="benchmarks/results/latency-predictor")
    args = parser.parse_args()
    os.environ.setdefault("PRUNENAS_COST_CACHE", tempfile.mkdtemp(prefix="prunenas-bench-costs-"))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    spaces = [space_study(s, args.genotypes, args.calibration) for s in args.spaces.split(",") if s]
    searches = search_pair(args.search_trials, args.limit) if args.search_trials else {}
    from prunenas.latency import machine

    result = {
        "date": started,
        "machine": machine(),
        "platform": platform.platform(),
        "command": "python benchmarks/latency_predictor.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "spaces": spaces,
        "searches": searches,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Latency: MACs vs measured, the predictor, and a latency-limited search",
        "",
        f"- date: {started}; machine: {result['machine']} ({result['platform']})",
        f"- command: `{result['command']}`",
        "- runtime: ONNX Runtime CPU execution provider, batch 1, threads = all cores",
        "",
        "| space | genotypes | Spearman(MACs, ms) | Spearman(pred, ms) | ratio err median | ratio err p90 | "
        "within 10% | ms err median | ms err p90 | predictor LOO p90 | calibration s | s per measurement |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in spaces:
        lines.append(
            f"| {s['space']} | {s['genotypes']} | {s['spearman_macs_latency']:.3f} | "
            f"{s['spearman_predicted_latency']:.3f} | {s['ratio_error_median']:.1%} | {s['ratio_error_p90']:.1%} | "
            f"{s['ratio_within_10pct']:.0%} | {s['ms_error_median']:.1%} | {s['ms_error_p90']:.1%} | "
            f"{s['predictor']['loo_p90']:.1%} | {s['calibration_s']:.0f} | {s['measure_s_median']:.2f} |"
        )
    if searches:
        from prunenas.cost import genotype_cost
        from prunenas.spaces import get_space

        r20 = get_space("resnet20_channels")
        reference_macs = genotype_cost(r20, r20.reference()).macs
        lines += ["", "## Same budget and seed: MACs limit vs latency limit (resnet20_channels, digits)", ""]
        lines += ["| limit | exit | wall s | winner | MACs ratio | latency ms | proxy val acc | final test acc |"]
        lines += ["| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
        for tag, s in searches.items():
            winners = s["summary"].get("winners") or [{}]
            w = winners[0]
            m = w.get("metrics") or {}
            final = w.get("final") or {}
            nan = float("nan")
            lines.append(
                f"| {tag} {args.limit}x | {s['exit']} | {s['wall_s']:.0f} | {w.get('key', '-')} | "
                f"{w.get('macs', nan) / reference_macs:.3f} | {m.get('latency', nan):.3f} | "
                f"{w.get('val_acc_proxy', nan):.3f} | {final.get('test_acc', nan)} |"
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
