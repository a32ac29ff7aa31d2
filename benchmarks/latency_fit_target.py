"""Which quantity should the latency predictor fit: milliseconds, or the ratio to the reference timed in
the same window? Both fits on the same measurements. Writes a Markdown and a JSON result file.

    python benchmarks/latency_fit_target.py --threads 1 --out benchmarks/results/DATE-cpu-latency-fit-target

Per space: the predictor's calibration genotypes (`calibration_genotypes`, 24) and N seeded random
genotypes, each timed twice (the latency metric's protocol, cache off). Two non-negative linear models of
the same features (`prunenas.latency_model.features`) are fitted to the first measurement of the
calibration set: one to ms (the ratio then predicted as pred(g) / pred(reference)), one to the ratio
(what the shipped predictor does). Both are scored on the held-out genotypes' ratio, against the mean of
their two measurements, beside the second measurement against the first (the noise floor). Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

import common
from latency_predictor import errors_of


def study(name: str, n: int, calibration: int, threads: int | None) -> dict[str, Any]:
    from prunenas.latency import genotype_latency
    from prunenas.latency_model import _feature_model, _nnls, calibration_genotypes, features
    from prunenas.spaces import get_space

    space = get_space(name)
    cal = calibration_genotypes(space, calibration)
    held_out = [space.random_genotype(1_000_000 + i) for i in range(n)]
    rows: list[dict[str, Any]] = []
    for i, g in enumerate(cal + held_out):
        timed = [genotype_latency(space, g, space.num_classes, threads=threads) for _ in range(2)]
        rows.append({"key": g.key, "calibration": i < len(cal),
                     "features": features(_feature_model(space, g), space.input_shape),
                     "ms": [t.ms for t in timed], "ratio": [t.ratio for t in timed]})  # fmt: skip
        print(f"{name} {i + 1}/{len(cal) + n}: ratio {timed[0].ratio:.3f} / {timed[1].ratio:.3f}", flush=True)
    fit, test = [r for r in rows if r["calibration"]], [r for r in rows if not r["calibration"]]

    def predict(coef: list[float], r: dict[str, Any]) -> float:
        return sum(c * f for c, f in zip(coef, r["features"], strict=True))

    ms_coef = _nnls([r["features"] for r in fit], [r["ms"][0] for r in fit])
    ratio_coef = _nnls([r["features"] for r in fit], [r["ratio"][0] for r in fit])
    reference = fit[0]  # calibration_genotypes starts with the reference
    truth = [statistics.mean(r["ratio"]) for r in test]
    return {
        "space": name,
        "calibration": len(fit),
        "held_out": len(test),
        "ms_fit": errors_of([predict(ms_coef, r) / predict(ms_coef, reference) for r in test], truth),
        "ratio_fit": errors_of([predict(ratio_coef, r) for r in test], truth),
        "floor": errors_of([r["ratio"][1] for r in test], [r["ratio"][0] for r in test]),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", default="resnet56_channels,torchvision:mobilenet_v2")
    parser.add_argument("--genotypes", type=int, default=40)
    parser.add_argument("--calibration", type=int, default=24)
    common.add_threads(parser, 1, help="intra-op threads (0: one per core)")
    common.add_out(parser, folder=False)
    args = parser.parse_args()
    os.environ["PRUNENAS_COST_CACHE"] = "off"
    started = common.stamp()
    results = [study(s, args.genotypes, args.calibration, args.threads or None) for s in args.spaces.split(",") if s]
    from prunenas.latency import default_threads

    command = common.command_line(__file__)
    payload = {"date": started, "machine": common.cpu_text(), "platform": common.machine()["platform"],
               "command": command, "results": results}  # fmt: skip

    def err(e: dict[str, float]) -> str:
        return f"{e['median']:.1%} / {e['p90']:.1%} / {e['within_10pct']:.0%}"

    lines = [
        "# Latency predictor: fit milliseconds or the ratio to the reference?",
        "",
        f"- date: {started}; machine: {payload['machine']} ({payload['platform']})",
        f"- command: `{command}`",
        f"- runtime: ONNX Runtime CPU, batch 1, intra-op threads {args.threads or default_threads()}",
        "",
        "Held-out ratio error (relative, against the mean of two measurements): median / p90 / within 10%.",
        "",
        "| space | calibration | held out | fit to ms | fit to ratio | 2nd vs 1st measurement (floor) |",
        "| --- | ---: | ---: | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r['space']} | {r['calibration']} | {r['held_out']} | {err(r['ms_fit'])} | "
                     f"{err(r['ratio_fit'])} | {err(r['floor'])} |")  # fmt: skip
    common.write_results(common.results_stem(args.out, "latency-fit-target"), payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
