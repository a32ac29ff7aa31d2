"""What a channel divisor does to measured latency: random genotypes of a channel space, as it is and
with `divisor = D` in its [model] (widths multiples of D), each counted (MACs ratio) and timed (latency
ratio to the reference, ONNX Runtime CPU, batch 1). Writes a Markdown and a JSON result file.

    python benchmarks/latency_divisor.py --out benchmarks/results/DATE-cpu-latency-divisor

Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import common


def study(space_name: str, n: int, threads: int | None) -> dict[str, Any]:
    from prunenas.cost import genotype_cost
    from prunenas.latency import genotype_latency
    from prunenas.spaces import get_space

    space = get_space(space_name)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        g = space.random_genotype(500 + i)
        r = genotype_latency(space, g, space.num_classes, threads=threads)
        rows.append({"key": g.key, "macs_ratio": genotype_cost(space, g).macs_ratio, "latency_ratio": r.ratio,
                     "ms": r.ms, "threads": r.threads})  # fmt: skip
        print(f"{space_name} {i + 1}/{n}: MACs {rows[-1]['macs_ratio']:.2f}x, latency {r.ratio:.2f}x", flush=True)
    rows.sort(key=lambda r: r["macs_ratio"])
    return {
        "space": space_name,
        "rows": rows,
        "latency_over_macs_median": statistics.median(r["latency_ratio"] / r["macs_ratio"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="resnet20_channels")
    parser.add_argument("--divisor", type=int, default=8)
    parser.add_argument("--genotypes", type=int, default=12)
    common.add_threads(parser, 1, help="intra-op threads (0: one per core)")
    common.add_out(parser, folder=False)
    args = parser.parse_args()
    os.environ.setdefault("PRUNENAS_COST_CACHE", "off")
    started = common.stamp()
    folder = Path(tempfile.mkdtemp(prefix="prunenas-divisor-"))
    toml = folder / f"{args.space}_div{args.divisor}.toml"
    toml.write_text(f'extends = "{args.space}"\nname = "{args.space}_div{args.divisor}"\n\n[model]\n'
                    f"divisor = {args.divisor}\n")  # fmt: skip
    threads = args.threads or None
    results = [study(args.space, args.genotypes, threads), study(str(toml), args.genotypes, threads)]
    results[1]["space"] = f"{args.space} with divisor = {args.divisor}"
    command = common.command_line(__file__)
    payload = {"date": started, "machine": common.cpu_text(), "platform": common.machine()["platform"],
               "command": command, "results": results}  # fmt: skip
    lines = [
        f"# Channel divisor vs measured latency ({args.space})",
        "",
        f"- date: {started}; machine: {payload['machine']} ({payload['platform']})",
        f"- command: `{command}`",
        f"- runtime: ONNX Runtime CPU, batch 1, intra-op threads {results[0]['rows'][0]['threads']}; "
        "seeded random genotypes (seeds 500, 501, ...), each timed once against the reference in the same window",
        "",
        "| space | MACs ratio -> latency ratio (sorted by MACs) | median latency ratio / MACs ratio |",
        "| --- | --- | ---: |",
    ]
    for r in results:
        pairs = ", ".join(f"{x['macs_ratio']:.2f} -> {x['latency_ratio']:.2f}" for x in r["rows"])
        lines.append(f"| {r['space']} | {pairs} | {r['latency_over_macs_median']:.2f} |")
    common.write_results(common.results_stem(args.out, "latency-divisor"), payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
