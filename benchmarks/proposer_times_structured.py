"""Time every channel proposer on ResNet-56 (space resnet56_channels; --space to change) at one target.

Proposers that score trained weights get the seeded random init passed as "trained": only the time is
measured here. Taylor and slimming look at the embedded digits set (slimming trains `--sparsity-epochs`
epochs with the BN L1 penalty first, which is most of its time).
Usage: python benchmarks/proposer_times_structured.py [--space resnet56_channels] [--macs-ratio 0.5]
"""

from __future__ import annotations

import argparse
import time

import common
import torch

from prunenas.data import load_dataset
from prunenas.proposers.base import Target, get_proposer, proposers
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.report import format_table
from prunenas.spaces import get_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="resnet56_channels")
    p.add_argument("--macs-ratio", type=float, default=0.5)
    p.add_argument("--sparsity-epochs", type=int, default=1)
    common.add_threads(p)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    space = get_space(args.space)
    data = load_dataset("digits", seed=0)
    rows = []
    for cls in proposers("channels"):
        options = {"sparsity_epochs": args.sparsity_epochs} if cls.name == "slimming" else {}
        if cls.name == "l1-paper":
            options = {"variant": "A"}
        ctx = make_context(space, data=data, seed=0)
        ctx = type(ctx)(**{**ctx.__dict__, "trained": True})
        target = Target("macs_ratio", args.macs_ratio)
        t0 = time.perf_counter()
        try:
            proposal = run_proposer(get_proposer(cls.name, "channels", **options), ctx, target)
        except Exception as exc:  # report and go on: a benchmark table, not a test
            rows.append([cls.name, "-", "-", f"{type(exc).__name__}: {str(exc)[:60]}"])
            continue
        seconds = time.perf_counter() - t0
        achieved = proposal.genotype.provenance["achieved"]["macs_ratio"]
        rows.append([cls.name, f"{seconds:.2f}", f"{achieved:.3f}", ",".join(proposal.info.get("clamped", {})) or "-"])
    print(f"{space.name}, --macs-ratio {args.macs_ratio}, torch threads {torch.get_num_threads()}")
    print(format_table(rows, ["proposer", "seconds", "MACs ratio", "clamped / note"], "lrrl"))


if __name__ == "__main__":
    main()
