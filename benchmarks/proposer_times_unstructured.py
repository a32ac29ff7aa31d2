"""Time every unstructured proposer on ResNet-56 (space resnet56_density) at density 0.1.

Data-driven proposers (snip, grasp, graspabs) score the embedded digits set (10 images per class);
magnitude scores the seeded random init (passed as "trained": only the timing matters here).
Usage: python benchmarks/proposer_times_unstructured.py [--space resnet56_density] [--density 0.1] [--repeat 1]
       [--threads N] [--only NAME ...] [--plain]
Prints one row per proposer: seconds (best of --repeat), achieved density and MACs ratio, clamped layers.
`--plain` adds "synflow-plain": a straightforward SynFlow loop (a fresh float64 copy per iteration, a
full global sort per step) as the baseline the package's loop is measured against; same masks.
"""

from __future__ import annotations

import argparse
import copy
import time

import common
import torch
from torch import nn

from prunenas.data import load_dataset
from prunenas.masks import prunable_layers
from prunenas.proposers.base import ProposalContext, Target
from prunenas.proposers.unstructured import (
    ERKProposer,
    GraspAbsProposer,
    GraspProposer,
    MagnitudeProposer,
    RandomDensityProposer,
    SnipProposer,
    SynflowProposer,
    UniformDensityProposer,
)
from prunenas.spaces import get_space

PROPOSERS = (
    MagnitudeProposer,
    SnipProposer,
    GraspProposer,
    GraspAbsProposer,
    SynflowProposer,
    RandomDensityProposer,
    ERKProposer,
    UniformDensityProposer,
)


def plain_synflow(
    model: nn.Module, input_shape: tuple[int, ...], density: float, iterations: int
) -> dict[str, torch.Tensor]:
    """The baseline: per step, copy + float64 + abs, forward/backward, global sort, per-layer masks."""
    names = [name for name, _ in prunable_layers(model)]
    masks = {name: torch.ones_like(m.weight, dtype=torch.float64) for name, m in prunable_layers(model)}
    total = sum(m.numel() for m in masks.values())
    for step in range(1, iterations + 1):
        net = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            for tensor in net.state_dict().values():
                if tensor.is_floating_point():
                    tensor.abs_()
        layers = dict(prunable_layers(net))
        for name in names:
            layers[name].weight.data.mul_(masks[name])
        net.zero_grad()
        net(torch.ones(1, *input_shape, dtype=torch.float64)).sum().backward()
        scores = {name: (layers[name].weight.grad * layers[name].weight).detach().abs() for name in names}
        flat = torch.cat([torch.where(masks[n] > 0, scores[n], -1.0).flatten() for n in names])
        keep = round(total * density ** (step / iterations))
        threshold = torch.sort(flat, descending=True).values[keep - 1]
        for name in names:
            masks[name] = ((scores[name] >= threshold) & (masks[name] > 0)).double()
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="resnet56_density")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="proposer names to time (default: all)")
    common.add_threads(parser)
    parser.add_argument("--plain", action="store_true", help="also time the plain SynFlow baseline")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    space = get_space(args.space)
    data = load_dataset("digits")
    torch.manual_seed(2)
    model = space.build()
    ctx = ProposalContext(space=space, model=model, trained=True, device=torch.device("cpu"), seed=2, data=data)
    target = Target("density", args.density)
    MagnitudeProposer().propose(ctx, target)  # warm-up: fvcore MACs table (memoised per space) and kernels

    print(f"{args.space}, {target.describe()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'proposer':<13} {'wall_s':>7} {'cpu_s':>7} {'density':>8} {'macs':>7}  clamped")
    for cls in PROPOSERS:
        if args.only and cls.name not in args.only:
            continue
        best, cpu = float("inf"), float("inf")
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            proposal = cls().propose(ctx, target)
            best = min(best, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
        info = proposal.info
        print(
            f"{cls.name:<13} {best:7.2f} {cpu:7.2f} {info['density']:8.4f} {info['macs_ratio']:7.4f}  "
            f"{len(info['clamped'])}"
        )
    if args.plain:
        start, start_cpu = time.perf_counter(), time.process_time()
        masks = plain_synflow(model, space.input_shape, args.density, 100)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        print(f"{'synflow-plain':<13} {seconds:7.2f} {cpu:7.2f} {kept:8.4f}")


if __name__ == "__main__":
    main()
