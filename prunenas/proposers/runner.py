"""Running a proposer: build the context (reference weights, data), call it, check the target was
met, and stamp the genotype with its provenance."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from prunenas import latency_model
from prunenas.config import RunSettings
from prunenas.cost import genotype_cost
from prunenas.data import DatasetSplits
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.proposers.base import Proposal, ProposalContext, Proposer, Target
from prunenas.spaces.base import Space
from prunenas.train import load_error, load_model_state, read_checkpoint, resolve_device

MACS_TOLERANCE = 0.02  # relative, for --macs-ratio
DENSITY_TOLERANCE = 0.005  # absolute, for --density / --ratio on density spaces


def load_reference(space: Space, path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a trained reference model of `space` (a prunenas checkpoint.pt, given as --reference)."""
    if not Path(path).exists():
        raise PrunenasError(
            f"--reference {str(path)!r} does not exist; create one with `prunenas pretrain --space {space.name}`"
        )
    p, state_all = read_checkpoint(path, "--reference")
    if isinstance(state_all, dict) and "genotype" in state_all:
        genotype = Genotype.from_dict(state_all["genotype"], origin=str(p))
        if genotype.space != space.name or genotype != space.reference():
            raise PrunenasError(
                f"--reference {str(p)!r} holds a model of {genotype.space!r} genotype {genotype.key}, not the "
                f"reference of {space.name!r}; pass a checkpoint from `prunenas pretrain --space {space.name}`"
            )
    return load_model_state(p, "--reference")


def make_context(
    space: Space,
    *,
    data: DatasetSplits | None = None,
    reference: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    run: RunSettings | None = None,
) -> ProposalContext:
    """The reference genotype built with a seeded init, with the reference weights loaded when given;
    `run`: the settings of trainings the proposer runs itself (default: prunenas's)."""
    dev = resolve_device(device)
    num_classes = data.num_classes if data is not None else space.num_classes
    torch.manual_seed(seed)
    model = space.build(space.reference(), num_classes=num_classes)
    trained = False
    if reference is not None:
        state = load_reference(space, reference)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise PrunenasError(
                f"--reference {str(reference)!r} does not fit {space.name!r} with {num_classes} classes: "
                f"{load_error(exc)}; pass a checkpoint of this space trained on the same dataset"
            ) from None
        trained = True
    return ProposalContext(space=space, model=model.to(dev), trained=trained, device=dev, seed=seed, data=data, run=run)


def run_proposer(proposer: Proposer, ctx: ProposalContext, target: Target, **provenance: Any) -> Proposal:
    """Call `proposer`, verify the target is met and return the proposal with a stamped genotype."""
    proposer.check(ctx.space, target, ctx.trained)
    if proposer.needs_data and ctx.data is None:
        raise PrunenasError(f"proposer {proposer.name!r} looks at training images; pass --dataset (e.g. digits)")
    t0 = time.perf_counter()
    proposal = proposer.propose(ctx, target)
    seconds = time.perf_counter() - t0
    space = ctx.space
    genotype = space.validate(proposal.genotype)
    cost = genotype_cost(space, genotype)
    achieved: dict[str, float] = {"macs_ratio": cost.macs_ratio, **space.achieved(genotype)}
    if target.kind == "macs_ratio" and abs(cost.macs_ratio - target.value) > MACS_TOLERANCE * target.value:
        raise RuntimeError(f"proposer {proposer.name} missed --macs-ratio {target.value}: got {cost.macs_ratio:.4f}")
    if target.kind == "latency_ratio":
        achieved["latency_ratio_predicted"] = latency_model.latency_predictor(space).ratio(space, genotype)
        if abs(achieved["latency_ratio_predicted"] - target.value) > MACS_TOLERANCE * target.value:
            raise RuntimeError(
                f"proposer {proposer.name} missed --latency-ratio {target.value}: "
                f"predicted {achieved['latency_ratio_predicted']:.4f}"
            )
    if "density" in achieved and target.kind in ("density", "ratio"):
        want = target.value if target.kind == "density" else 1.0 - target.value
        # a proposer that ranks some layers only (layers="conv") meets the target over those layers
        got = float(proposal.info.get("ranked_density", achieved["density"]))
        if abs(got - want) > DENSITY_TOLERANCE:
            raise RuntimeError(f"proposer {proposer.name} missed density {want}: got {got:.4f}")
    clamped = dict(proposal.info.get("clamped", {}))
    stamped = genotype.with_provenance(
        proposer=proposer.name,
        proposer_options={k: v for k, v in proposer.settings.items()},
        target=target.to_dict(),
        achieved={**achieved, "macs": cost.macs, "params": cost.params},
        seed=ctx.seed,
        trained_reference=ctx.trained,
        clamped=clamped,
        proposer_info={k: v for k, v in proposal.info.items() if k != "clamped"},
        time_s=round(seconds, 3),
        **provenance,
    )
    return dataclasses.replace(proposal, genotype=stamped)
