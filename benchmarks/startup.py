"""Start-up cost of every command: `prunenas CMD --help` for each command, and the commands that do
light work (`spaces`, `spaces show`, `cost`, `proposers`) cold (an empty cost cache: the first run after
installing) and warm (the same cache again), each as its own process, as a user types it. With
`--old-src` an earlier checkout is timed the same way for a before/after table.

    git worktree add /tmp/old c60efe4
    python benchmarks/startup.py --old-src /tmp/old --out benchmarks/results/2026-12-05-cpu-startup

Nothing here runs in the tests (no test depends on measured time). Times are medians of `--repeats`
runs, in seconds, on an otherwise idle machine (the 1-minute load average at the start is recorded).
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

COMMANDS = ("spaces", "proposers", "cost", "show", "train", "pretrain", "propose", "search", "rethink", "export")
COMMANDS_TOO = ("evaluate", "completion")
LIGHT = {
    "spaces": ["spaces"],
    "spaces show": ["spaces", "show", "resnet56_channels"],
    "cost": ["cost", "resnet56_channels"],
    "proposers": ["proposers"],
}


def run_once(argv: list[str], env: dict[str, str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, cwd=cwd)
    return time.perf_counter() - t0


def measure(src: str | None, repeats: int) -> dict[str, dict[str, float]]:
    """{label: {"cold": s, "warm": s} or {"s": s}} for one checkout (None: the installed one)."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    cwd = tempfile.mkdtemp(prefix="prunenas-startup-cwd-")  # not a checkout: `-m` puts the cwd on sys.path
    base = [sys.executable, "-m", "prunenas.cli"]
    out: dict[str, dict[str, float]] = {}
    for cmd in ("", *COMMANDS, *COMMANDS_TOO):
        argv = [*base, *([cmd] if cmd else []), "--help"]
        out[f"{cmd or 'prunenas'} --help"] = {"s": statistics.median(run_once(argv, env, cwd) for _ in range(repeats))}
    for label, args in LIGHT.items():
        colds, warms = [], []
        for _ in range(repeats):
            cache_env = {**env, "PRUNENAS_COST_CACHE": tempfile.mkdtemp(prefix="prunenas-startup-costs-")}
            colds.append(run_once([*base, *args], cache_env, cwd))
            warms.append(run_once([*base, *args], cache_env, cwd))
        out[label] = {"cold": statistics.median(colds), "warm": statistics.median(warms)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-src", help="an earlier checkout to time the same way (before/after)")
    common.add_repeats(ap, 3)
    common.add_out(ap, folder=False, required=True)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    new = measure(None, args.repeats)
    old = measure(args.old_src, args.repeats) if args.old_src else None
    machine = common.machine()
    info = {
        "date": common.utc_now().strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": machine["cpu"]["model"],
        "cores": machine["cpu_count"],
        "torch": machine["torch"],
        "python": machine["python"],
        "load_1min_at_start": round(load, 2),
        "command": common.command_line(__file__),
        "repeats": args.repeats,
    }

    def cell(row: dict[str, float] | None, key: str) -> str:
        return "-" if row is None or key not in row else f"{row[key]:.2f}"

    lines = [
        f"# Start-up cost of every command ({info['date'][:10]})",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, Python {info['python']}; "
        f"1-minute load {info['load_1min_at_start']} at the start.",
        f"Command: `{info['command']}`. Median of {args.repeats} runs, seconds, each its own process.",
        "Cold: an empty cost cache (the first run after installing); warm: the same command again.",
        "",
        "| command | before | after |" if old else "| command | seconds |",
        "| --- | --- | --- |" if old else "| --- | --- |",
    ]
    for label, row in new.items():
        keys = ["cold", "warm"] if "cold" in row else ["s"]
        for key in keys:
            name = label if key == "s" else f"{label} ({key})"
            before = cell(old.get(label) if old else None, key)
            lines.append(f"| `{name}` | {before} | {cell(row, key)} |" if old else f"| `{name}` | {cell(row, key)} |")
    common.write_results(args.out, {**info, "new": new, "old": old}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
