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
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common


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


@contextlib.contextmanager
def uncached() -> Iterator[None]:
    """Measure afresh: the latency cache off for the block."""
    before = os.environ.get("PRUNENAS_COST_CACHE")
    os.environ["PRUNENAS_COST_CACHE"] = "off"
    try:
        yield
    finally:
        if before is None:
            del os.environ["PRUNENAS_COST_CACHE"]
        else:
            os.environ["PRUNENAS_COST_CACHE"] = before


def errors_of(predicted: list[float], truth: list[float]) -> dict[str, float]:
    e = sorted(abs(p - t) / t for p, t in zip(predicted, truth, strict=True))
    return {
        "median": statistics.median(e),
        "p90": e[int(0.9 * (len(e) - 1))],
        "within_10pct": sum(x <= 0.10 for x in e) / len(e),
    }


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values)


def space_study(name: str, n: int, calibration: int, threads: int | None, repeats: int) -> dict[str, Any]:
    from prunenas.cost import genotype_cost
    from prunenas.latency import default_threads, genotype_latency
    from prunenas.latency_model import latency_predictor
    from prunenas.spaces import get_space

    space = get_space(name)
    threads = threads or default_threads()
    t0 = time.perf_counter()
    predictor = latency_predictor(space, calibration=calibration, threads=threads, log=lambda m: print(m, flush=True))
    calibration_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    for i in range(n):
        g = space.random_genotype(1_000_000 + i)
        measured = []
        for _ in range(2):  # twice: the second says how far one measurement is from another (the noise floor)
            t1 = time.perf_counter()
            with uncached():
                r = genotype_latency(space, g, space.num_classes, threads=threads)
            measured.append({"ms": r.ms, "ratio": r.ratio, "reference_ms": r.reference_ms, "cv": r.cv,
                             "runs": r.runs, "seconds": time.perf_counter() - t1})  # fmt: skip
        rows.append(
            {
                "key": g.key,
                "macs": genotype_cost(space, g).macs,
                "measured": measured,
                "predicted_ms": predictor.predict(space, g),
                "predicted_ratio": predictor.ratio(space, g),
            }
        )
        print(f"{name} {i + 1}/{n}: ratio {measured[0]['ratio']:.3f} / {measured[1]['ratio']:.3f} measured, "
              f"{rows[-1]['predicted_ratio']:.3f} predicted", flush=True)  # fmt: skip
    g = space.random_genotype(1_000_000)
    repeat = []
    for _ in range(repeats):
        t1 = time.perf_counter()
        with uncached():
            r = genotype_latency(space, g, space.num_classes, threads=threads)
        repeat.append({"ms": r.ms, "ratio": r.ratio, "seconds": time.perf_counter() - t1})
    first = [r["measured"][0] for r in rows]
    second = [r["measured"][1] for r in rows]
    mean_ratio = [(a["ratio"] + b["ratio"]) / 2 for a, b in zip(first, second, strict=True)]
    mean_ms = [(a["ms"] + b["ms"]) / 2 for a, b in zip(first, second, strict=True)]
    # the predictor is scored on the latency ratio (candidate / reference timed in the same window), the
    # drift-controlled quantity the search limits with 0.5x; against one measurement, against the mean of
    # two, and a second measurement is scored against the first in the same way (the floor)
    return {
        "space": name,
        "threads": threads,
        "genotypes": n,
        "spearman_macs_latency": spearman([r["macs"] for r in rows], mean_ms),
        "spearman_predicted_latency": spearman([r["predicted_ms"] for r in rows], mean_ms),
        "ratio_error": errors_of([r["predicted_ratio"] for r in rows], [m["ratio"] for m in first]),
        "ratio_error_vs_mean_of_two": errors_of([r["predicted_ratio"] for r in rows], mean_ratio),
        "remeasurement_ratio_error": errors_of([m["ratio"] for m in second], [m["ratio"] for m in first]),
        "ms_error": errors_of([r["predicted_ms"] for r in rows], [m["ms"] for m in first]),
        "remeasurement_ms_error": errors_of([m["ms"] for m in second], [m["ms"] for m in first]),
        "repeatability": {
            "genotype": g.key,
            "runs": repeat,
            "cv_ms": cv([r["ms"] for r in repeat]),
            "cv_ratio": cv([r["ratio"] for r in repeat]),
        },
        "predictor": predictor.to_dict(),
        "calibration_s": calibration_s,
        "measure_s_median": statistics.median(m["seconds"] for m in first + second),
        "rows": rows,
    }


def search_pair(trials: int, ratio: float, threads: int | None) -> dict[str, Any]:
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
        if threads:
            argv += ["--latency-threads", str(threads)]
        t0 = time.perf_counter()
        code = main(argv)
        summary = json.loads((root / tag / "summary.json").read_text()) if code == 0 else {}
        out[tag] = {"argv": argv, "exit": code, "wall_s": time.perf_counter() - t0, "summary": summary}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", default="resnet56_channels,torchvision:mobilenet_v2")
    parser.add_argument("--genotypes", type=int, default=40)
    parser.add_argument("--calibration", type=int, default=24, help="genotypes timed to fit each predictor")
    common.add_threads(parser, 0, help="intra-op threads (0: all cores, the metric's default)")
    common.add_repeats(parser, 5, help="repeated measurements of one genotype")
    parser.add_argument("--search-trials", type=int, default=12)
    parser.add_argument("--limit", type=float, default=0.6, help="the searches' --max macs=Rx / latency=Rx")
    common.add_out(parser, folder=False)
    parser.add_argument("--conditions", default="idle machine", help="what else ran meanwhile (for the record)")
    args = parser.parse_args()
    os.environ.setdefault("PRUNENAS_COST_CACHE", tempfile.mkdtemp(prefix="prunenas-bench-costs-"))
    started = common.stamp()
    spaces = [
        space_study(s, args.genotypes, args.calibration, args.threads or None, args.repeats)
        for s in args.spaces.split(",")
        if s
    ]
    searches = search_pair(args.search_trials, args.limit, args.threads or None) if args.search_trials else {}
    result = {
        "date": started,
        "machine": common.cpu_text(),
        "platform": common.machine()["platform"],
        "command": common.command_line(__file__),
        "spaces": spaces,
        "searches": searches,
    }
    threads = spaces[0]["threads"] if spaces else "-"
    lines = [
        "# Latency: measurement cost and repeatability, MACs vs measured, the predictor, a latency-limited search",
        "",
        f"- date: {started}; machine: {result['machine']} ({result['platform']})",
        f"- command: `{result['command']}`",
        f"- runtime: ONNX Runtime CPU execution provider, batch 1, intra-op threads {threads}",
        f"- conditions: {args.conditions}",
        "",
        "## The measurement",
        "",
        f"Cost (build + export + warm-up + timing, candidate and reference alternating) and repeatability "
        f"({args.repeats} measurements of one random genotype; coefficient of variation).",
        "",
        "| space | s per measurement (median) | CV of ms | CV of ratio | ratios |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for s in spaces:
        rep = s["repeatability"]
        lines.append(
            f"| {s['space']} | {s['measure_s_median']:.2f} | {rep['cv_ms']:.1%} | {rep['cv_ratio']:.1%} | "
            + ", ".join(f"{r['ratio']:.3f}" for r in rep["runs"])
            + " |"
        )
    lines += [
        "",
        "## MACs vs latency, and the predictor",
        "",
        "Each random genotype measured twice. Errors are relative, of the latency ratio (candidate / reference in "
        "the same window) unless marked ms: the predictor against the first measurement, against the mean of "
        "both, and the second measurement against the first (the noise floor: no predictor can be scored "
        "better than the measurement repeats).",
        "",
        "| space | genotypes | Spearman(MACs, ms) | Spearman(pred, ms) | pred vs 1st: median / p90 / within 10% | "
        "pred vs mean of 2 | 2nd vs 1st (floor) | ms: pred vs 1st | ms: 2nd vs 1st | predictor LOO median / p90 | "
        "calibration s |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- | ---: |",
    ]

    def err(e: dict[str, float]) -> str:
        return f"{e['median']:.1%} / {e['p90']:.1%} / {e['within_10pct']:.0%}"

    for s in spaces:
        p = s["predictor"]
        lines.append(
            f"| {s['space']} | {s['genotypes']} | {s['spearman_macs_latency']:.3f} | "
            f"{s['spearman_predicted_latency']:.3f} | {err(s['ratio_error'])} | "
            f"{err(s['ratio_error_vs_mean_of_two'])} | "
            f"{err(s['remeasurement_ratio_error'])} | {err(s['ms_error'])} | {err(s['remeasurement_ms_error'])} | "
            f"{p['loo_median']:.1%} / {p['loo_p90']:.1%} | {s['calibration_s']:.0f} |"
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
    common.write_results(common.results_stem(args.out, "latency-predictor"), result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
