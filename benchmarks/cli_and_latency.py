"""Wall time of `prunenas spaces` (cold cache and cached, against an older checkout if given), and the
latency metric's cost and repeatability, on this machine. Writes a Markdown and a JSON result file.

    python benchmarks/cli_and_latency.py --old-src /tmp/old --out benchmarks/results/2026-11-28-cpu-cli-latency

`--old-src` is a checkout of an earlier prunenas (e.g. `git worktree add /tmp/old 5346109`) whose
`prunenas spaces` is timed the same way; leave it out to time only this one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import common


def time_command(argv: list[str], env: dict[str, str], repeats: int) -> list[float]:
    out = []
    cwd = tempfile.mkdtemp(prefix="prunenas-bench-cwd-")  # not the checkout: `-m` puts the cwd on sys.path
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, cwd=cwd)
        out.append(time.perf_counter() - t0)
    return out


def spaces_timing(old_src: str | None, repeats: int) -> dict[str, list[float]]:
    cache = tempfile.mkdtemp(prefix="prunenas-bench-costs-")
    env = {**os.environ, "PRUNENAS_COST_CACHE": cache}
    cmd = [sys.executable, "-m", "prunenas.cli", "spaces"]
    result = {"new_cold": time_command(cmd, env, 1), "new_cached": time_command(cmd, env, repeats)}
    if old_src:
        old_env = {**env, "PYTHONPATH": old_src}
        result["old"] = time_command(cmd, old_env, repeats)
    return result


def latency_repeatability(repeats: int) -> dict[str, object]:
    os.environ["PRUNENAS_COST_CACHE"] = "off"  # measure every time
    from prunenas.latency import genotype_latency
    from prunenas.spaces import get_space

    space = get_space("resnet56_channels")
    genotype = space.make({**space.reference().genes, **{f"stage3_block{i}": 16 for i in range(1, 10)}})
    rows = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = genotype_latency(space, genotype, 10)
        rows.append({**r.to_dict(), "seconds": time.perf_counter() - t0})
    ms = [r["ms"] for r in rows]
    ratio = [r["ratio"] for r in rows]
    return {
        "space": space.name,
        "genotype": genotype.key,
        "runs": rows,
        "cv_ms": statistics.pstdev(ms) / statistics.mean(ms),
        "cv_ratio": statistics.pstdev(ratio) / statistics.mean(ratio),
        "seconds_per_candidate": statistics.median(r["seconds"] for r in rows),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old-src", help="an earlier prunenas checkout to time `prunenas spaces` against")
    common.add_repeats(p, 3, help="timed runs of `prunenas spaces` (default 3)")
    p.add_argument("--latency-repeats", type=int, default=5, help="repeated latency measurements (default 5)")
    common.add_out(p, folder=False, required=True)
    args = p.parse_args()
    spaces = spaces_timing(args.old_src, args.repeats)
    latency = latency_repeatability(args.latency_repeats)
    payload = {
        "date": common.stamp(),
        "machine": common.cpu_text(),
        "command": common.command_line(__file__),
        "spaces_seconds": spaces,
        "latency": latency,
    }
    lines = [
        f"# `prunenas spaces` wall time and latency-metric repeatability ({payload['date']}, {payload['machine']})",
        "",
        f"Command: `{payload['command']}`",
        "",
        "| `prunenas spaces` | seconds |",
        "| --- | --- |",
    ]
    for name, values in spaces.items():
        lines.append(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} |")
    lines += [
        "",
        f"Latency metric on {latency['space']} genotype {latency['genotype']} (ONNX Runtime CPU, batch 1, "
        f"measured {len(latency['runs'])} times):",  # type: ignore[arg-type]
        "",
        "| run | ms | reference ms | ratio | cv of rounds | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(latency["runs"], start=1):  # type: ignore[arg-type]
        lines.append(
            f"| {i} | {r['ms']:.3f} | {r['reference_ms']:.3f} | {r['ratio']:.3f} | {r['cv']:.3f} | {r['seconds']:.2f} |"
        )
    lines += [
        "",
        f"Coefficient of variation over the repeats: ms {latency['cv_ms']:.3f}, ratio {latency['cv_ratio']:.3f}; "
        f"median cost per candidate {latency['seconds_per_candidate']:.2f} s.",
    ]
    common.write_results(args.out, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
