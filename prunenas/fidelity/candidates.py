"""The candidates of a fidelity study: genotypes at several MACs levels, from the proposers and at random.

At each level (a MACs ratio of the space's reference) up to half of the level's share come from proposers
(the list rotated from level to level, so that each proposer appears where few fit), the rest are random
genotypes of the space brought to that level: every gene gets a random fraction of its reference value, and
one common scale, found by bisection on the MACs, brings the genotype to the level. Genotypes are kept once
(by `Genotype.key`); the same seed draws the same candidates.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunenas.cost import fast_macs, genotype_cost
from prunenas.data import DatasetSplits
from prunenas.errors import PrunenasError
from prunenas.genotype import GeneValue, Genotype
from prunenas.proposers.base import Proposer, Target, get_proposer, proposers
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.spaces.base import Gene, Space

#: Random draws tried per candidate still missing at a level before the level is declared full.
ATTEMPTS = 40
#: Bisection steps of the common scale at most (the genes snap to their steps long before).
BISECTION_STEPS = 30
#: A random genotype within this fraction of its level is near enough (proposers meet theirs within 2%).
TOLERANCE = 0.01


@dataclass(frozen=True)
class Candidate:
    genotype: Genotype
    level: float
    origin: str  # "random" or "proposer NAME"
    macs_ratio: float
    params: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.genotype.key, "level": self.level, "origin": self.origin, "macs_ratio": self.macs_ratio,
            "params": self.params, "genotype": self.genotype.to_dict(),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], space: Space) -> Candidate:
        genotype = space.validate(Genotype.from_dict(d["genotype"], origin="genotypes.json"))
        return cls(genotype, float(d["level"]), str(d["origin"]), float(d["macs_ratio"]), int(d["params"]))


def default_proposers(space: Space, trained: bool, cuda: bool) -> list[str]:
    """The proposers a fidelity study draws from by default: those that seed a search of this space, minus
    those that score trained weights when there are none, those too slow without a GPU and those that train
    a model of their own (slimming)."""
    if space.proposer_kind is None:
        return []
    names = []
    for cls in proposers(space.proposer_kind):
        if not cls.seeds_search or (cls.needs_trained and not trained) or (cls.gpu_only_seeding and not cuda):
            continue
        if cls().trains_source():
            continue
        names.append(cls.name)
    return sorted(set(names))


def checked_proposers(space: Space, names: Sequence[str], trained: bool) -> list[Proposer]:
    """The proposers --proposers names, each able to serve `space` at a MACs target; one line otherwise."""
    out = []
    for name in names:
        try:
            proposer = get_proposer(name, space.proposer_kind)
        except PrunenasError as exc:
            raise PrunenasError(f"--proposers: {exc}") from None
        if "macs_ratio" not in proposer.targets:
            raise PrunenasError(f"--proposers {name}: it takes no MACs target, so it cannot propose at --levels")
        if proposer.needs_trained and not trained:
            raise PrunenasError(
                f"--proposers {name} scores trained weights: pass --reference CKPT or --pretrain-epochs N"
            )
        out.append(proposer)
    return out


def _upper(gene: Gene) -> float:
    """The value a random genotype's gene may reach: the reference's (pruning never widens)."""
    ref = float(gene.reference)
    return min(float(gene.high), ref) if ref >= float(gene.smallest()) else float(gene.high)


def _lower(gene: Gene) -> float:
    low = float(gene.smallest())
    if gene.kind == "float":  # a density of zero removes the layer: keep a few percent at least
        return max(low, 0.02 * _upper(gene))
    return low


def random_at_level(
    space: Space, level: float, rng: random.Random, fixed: Mapping[str, GeneValue], reference_macs: int
) -> Genotype:
    """A random genotype whose MACs ratio is as near `level` as the genes' steps allow; `fixed` genes keep
    their values."""
    free = [g for g in space.genes if g.name not in fixed]
    fractions = {g.name: rng.uniform(0.05, 1.0) for g in free}
    top = 1.0 / min(fractions.values()) if fractions else 1.0

    def make(scale: float) -> Genotype:
        values: dict[str, GeneValue] = dict(fixed)
        for g in free:
            lo, hi = _lower(g), _upper(g)
            values[g.name] = g.snap(lo + min(1.0, scale * fractions[g.name]) * (hi - lo))
        return space.make(values)

    def ratio(g: Genotype) -> float:
        return fast_macs(space, g) / reference_macs

    lo, hi = 0.0, top
    best = make(hi)
    best_gap = abs(ratio(best) - level)
    for _ in range(BISECTION_STEPS):
        if best_gap <= TOLERANCE * level:
            break
        mid = (lo + hi) / 2.0
        g = make(mid)
        r = ratio(g)
        if abs(r - level) < best_gap:
            best, best_gap = g, abs(r - level)
        if r < level:
            lo = mid
        else:
            hi = mid
    return best


def draw_candidates(
    space: Space,
    count: int,
    levels: Sequence[float],
    seed: int,
    *,
    data: DatasetSplits | None,
    reference: str | Path | None,
    proposer_names: Sequence[str] | None,
    fixed: Mapping[str, GeneValue],
    device: str,
    log: Callable[[str], None],
) -> list[Candidate]:
    """`count` distinct genotypes spread evenly over `levels` (the first levels take the remainder)."""
    import torch

    trained = reference is not None
    names = list(proposer_names) if proposer_names else default_proposers(space, trained, torch.cuda.is_available())
    chosen = checked_proposers(space, names, trained) if names else []
    context = make_context(space, data=data, reference=reference, seed=seed, device=device) if chosen else None
    reference_macs = fast_macs(space, space.reference())
    seen: set[str] = set()
    drawn: list[tuple[Genotype, float, str]] = []
    ordered = sorted(levels)
    for i, level in enumerate(ordered):
        share = count // len(ordered) + (1 if i < count % len(ordered) else 0)
        found = 0
        rotated = chosen[i % len(chosen) :] + chosen[: i % len(chosen)] if chosen else []
        for proposer in rotated:
            if found >= math.ceil(share / 2):
                break
            try:
                proposal = run_proposer(proposer, context, Target("macs_ratio", level))  # type: ignore[arg-type]
            except (PrunenasError, RuntimeError) as exc:  # a level its rule cannot meet within 2%
                log(f"candidates: {proposer.name} at MACs {level:g} skipped: {exc}")
                continue
            genotype = proposal.genotype
            moved = [k for k, v in fixed.items() if genotype.genes[k] != v]
            if genotype.key in seen or moved:
                continue
            seen.add(genotype.key)
            drawn.append((genotype, level, f"proposer {proposer.name}"))
            found += 1
        for attempt in range(ATTEMPTS * share):
            if found >= share:
                break
            rng = random.Random(f"prunenas-fidelity:{seed}:{level!r}:{attempt}")
            genotype = random_at_level(space, level, rng, fixed, reference_macs)
            if genotype.key in seen:
                continue
            seen.add(genotype.key)
            drawn.append((genotype.with_provenance(origin="random", seed=seed), level, "random"))
            found += 1
        if found < share:
            raise PrunenasError(
                f"--genotypes {count}: space {space.name} has only {found} distinct genotypes near MACs {level:g}; "
                "ask for fewer or give other --levels"
            )
    out = []
    for genotype, level, origin in drawn:
        cost = genotype_cost(space, genotype)
        out.append(Candidate(genotype, level, origin, cost.macs_ratio, cost.params))
    return out
