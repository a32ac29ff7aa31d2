"""How faithfully each evaluator ranks candidates, and at what cost: `prunenas fidelity` on a testbed this
2-core CPU runs in minutes, written to benchmarks/results/<date>-cpu-evaluator-fidelity.json/.md.

The testbed (defaults): a ResNet-8 with shortcut B (widths 6/8/12, the test suite's tiny space: every width
is prunable, so inherit-bn judges all of them) on the embedded digits, the truth a from-scratch run of
--truth-epochs with the proxy recipe's schedule on --seeds seeds; the evaluators scratch proxies of 1, 2 and
4 epochs, inherit-bn and inherit-bn with a 1-epoch fine-tune (their reference trained --pretrain-epochs) and
a supernet trained 20 epochs by the sandwich rule. The
fidelity study folder (--work) is resumable: rerun to continue, or with more --evaluators to add some.

    python benchmarks/evaluator_fidelity.py --out benchmarks/results/2026-12-05-cpu-evaluator-fidelity

Nothing here runs in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common

EVALUATORS = (
    "scratch:epochs=1,scratch:epochs=2,scratch:epochs=4,inherit-bn,inherit-bn:finetune_epochs=1,supernet:epochs=20"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="tiny", help="a space name or TOML path; tiny: a ResNet-8 (see common)")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--genotypes", type=int, default=16)
    ap.add_argument("--truth-epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--evaluators", default=EVALUATORS)
    ap.add_argument("--work", default="runs/fidelity/benchmark", help="the fidelity study folder (resumable)")
    common.add_out(ap, folder=False, required=True)
    args, extra = ap.parse_known_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    space = args.space
    if space == "tiny":
        space = str(work / "tiny_resnet8.toml")
        Path(space).write_text(common.tiny_resnet8_toml("tiny_resnet8"), encoding="utf-8")
    argv = [
        sys.executable, "-m", "prunenas.cli", "fidelity", "--space", space, "--dataset", args.dataset,
        "--genotypes", str(args.genotypes), "--truth-epochs", str(args.truth_epochs), "--seeds", str(args.seeds),
        "--pretrain-epochs", str(args.pretrain_epochs), "--evaluators", args.evaluators, "--out", str(work / "study"),
        "--json", *extra,
    ]  # fmt: skip
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    result = json.loads(done.stdout)
    machine = common.machine()
    info = {
        "date": common.stamp(), "cpu": machine["cpu"]["model"], "cores": machine["cpu_count"],
        "torch": machine["torch"], "python": machine["python"], "load_1min_at_start": round(load, 2),
        "command": common.command_line(__file__), "fidelity_command": " ".join(argv[4:]), "wall_s": round(wall, 1),
    }  # fmt: skip
    ceiling = result["ceiling"]

    def interval(row: dict, key: str) -> str:
        low, high = row[f"{key}_interval"]["low"], row[f"{key}_interval"]["high"]
        return f"[{low:.2f}, {high:.2f}]"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    base = next((r for r in result["evaluators"] if r["label"] == "scratch:epochs=2"), None)
    lines = [
        f"# Evaluator fidelity on {result['space']} / {args.dataset} ({info['date'][:10]})",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, Python {info['python']}; "
        f"1-minute load {info['load_1min_at_start']} at the start; {info['wall_s']:.0f} s in all (resumed "
        "work excluded).",
        f"Command: `{info['command']}`, which ran `prunenas fidelity {info['fidelity_command']}`.",
        f"Truth: {args.genotypes} genotypes trained from scratch for {args.truth_epochs} epochs on {args.seeds} "
        f"seeds (mean val accuracy). Ceiling (the truth's seed-to-seed Kendall tau): {num(ceiling['kendall_tau'])} "
        f"[{ceiling['interval']['low']:.2f}, {ceiling['interval']['high']:.2f}]; over the pairs at one MACs level "
        f"only: {num(ceiling.get('kendall_tau_within_levels'))}.",
        "",
        "| evaluator | Kendall tau [90% CI] | Spearman rho [90% CI] | tau per truth seed | tau in level | "
        "s / candidate | cost vs 2-epoch proxy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in [*result["evaluators"], result["macs_alone"]]:
        per_seed = " ".join(num(t) for t in r["kendall_tau_per_seed"])
        cost = (
            f"{r['seconds_per_candidate'] / base['seconds_per_candidate']:.2f}x"
            if base and base["seconds_per_candidate"]
            else "-"
        )
        lines.append(
            f"| {r['label']} | {num(r['kendall_tau'])} {interval(r, 'kendall_tau')} | {num(r['spearman_rho'])} "
            f"{interval(r, 'spearman_rho')} | {per_seed} | {num(r.get('kendall_tau_within_levels'))} | "
            f"{r['seconds_per_candidate']:.2f} | {cost} |"
        )
    common.write_results(args.out, {**info, "fidelity": result}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
