"""Running a Rethinking study: every arm's runs trained (or found finished), and the results."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunenas.config import DataConfig
from prunenas.cost import genotype_cost
from prunenas.data import DatasetSplits, make_batches
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.paths import ensure_dir
from prunenas.proposers.base import Proposal, Proposer
from prunenas.proposers.runner import load_reference, make_context, run_proposer
from prunenas.recipes import Recipe
from prunenas.rethink.checks import check_config
from prunenas.rethink.config import KD_ARM, REINIT_OFFSET, RethinkConfig, with_protocol
from prunenas.rethink.identity import default_study_dir
from prunenas.rethink.plan import ArmPlan, Plan, make_plan
from prunenas.rethink.report import GENOTYPE_FILE, MASKS_FILE, paper_row, write_outputs
from prunenas.spaces.base import Space
from prunenas.surgery import magnitude_masks, masked_state
from prunenas.train import (
    CHECKPOINT,
    METRICS,
    EpochMetrics,
    Teacher,
    TrainResult,
    evaluate,
    load_error,
    load_teacher,
    resolve_device,
    train,
)

Log = Callable[[str], None]


# -- results -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    seed: int
    run_dir: str
    test_acc: float | None
    val_acc: float | None
    epochs_run: int
    wall_time_s: float
    stopped: str | None
    trained: bool  # False: found finished (or evaluated only) and not trained again
    best_test_acc: float | None = None  # test-selected best epoch (only with RunSettings.test_every_epoch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ArmResult:
    plan: ArmPlan
    runs: tuple[RunRecord, ...]

    def values(self, attr: str = "test_acc") -> list[float]:
        return [float(v) for r in self.runs if (v := getattr(r, attr)) is not None and math.isfinite(float(v))]

    def mean(self, attr: str = "test_acc") -> float | None:
        values = self.values(attr)
        return statistics.fmean(values) if values else None

    def std(self, attr: str = "test_acc") -> float | None:
        values = self.values(attr)
        if not values:
            return None
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.plan.name,
            "label": self.plan.label,
            "what": self.plan.what,
            "recipe": self.plan.recipe.name if self.plan.recipe is not None else None,
            "epochs": self.plan.epochs,
            "shared_with": None if self.plan.runs_of == self.plan.name else self.plan.runs_of,
            "genotype_key": self.plan.genotype.key if self.plan.genotype is not None else None,
            "macs": self.plan.macs,
            "params": self.plan.params,
            "n": len(self.values("test_acc")),
            "test_acc_mean": self.mean(),
            "test_acc_std": self.std(),
            "val_acc_mean": self.mean("val_acc"),
            "val_acc_std": self.std("val_acc"),
            "best_test_acc_mean_test_selected": self.mean("best_test_acc"),
            "best_test_acc_std_test_selected": self.std("best_test_acc"),
            "runs": [r.to_dict() for r in self.runs],
        }


@dataclass(frozen=True)
class RethinkOutcome:
    plan: Plan
    arms: tuple[ArmResult, ...]
    files: Mapping[str, str]
    trained: int  # runs trained (or resumed) by this call
    skipped: int  # runs found finished
    wall_time_s: float

    def arm(self, name: str) -> ArmResult:
        return next(a for a in self.arms if a.plan.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_dir": str(self.plan.study_dir),
            "plan": self.plan.to_dict(),
            "arms": [a.to_dict() for a in self.arms],
            "paper_row": paper_row(self),
            "files": dict(self.files),
            "trained": self.trained,
            "skipped": self.skipped,
            "wall_time_s": self.wall_time_s,
        }


def _finished_result(
    out: Path, genotype: Genotype, recipe: Recipe, seed: int, data: DatasetSplits, teacher: Teacher | None = None
) -> TrainResult | None:
    """The result recorded in `out`/metrics.json when it is this very run (with the same teacher's weights)
    and it is over (finished or stopped on purpose); None otherwise (then `train` runs or resumes it)."""
    path = out / METRICS
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        same = (
            d["genotype"]["space"] == genotype.space
            and Genotype.from_dict(d["genotype"]).key == genotype.key
            and d["recipe_settings"] == json.loads(json.dumps(recipe.to_dict()))
            and d["seed"] == seed
            and d["dataset"]["name"] == data.name
            and d["dataset"]["sizes"] == {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
            and (d.get("teacher") or {}).get("weights_sha") == (teacher.weights_sha if teacher else None)
        )
        if not same or not (d.get("finished") or d.get("stopped")):
            return None
        names = {f.name for f in dataclasses.fields(TrainResult)}
        values = {k: v for k, v in d.items() if k in names and k != "history"}
        return TrainResult(**values, history=tuple(EpochMetrics(**h) for h in d["history"]))
    except (KeyError, TypeError, ValueError):
        return None  # an unreadable or foreign metrics.json: let train() decide


def _evaluate_reference(
    space: Space, state: Mapping[str, torch.Tensor], data: DatasetSplits, device: str
) -> tuple[float | None, float | None]:
    """(val, test) accuracy of given reference weights (fp32)."""

    dev = resolve_device(device)
    model = space.build(space.reference(), num_classes=data.num_classes)
    model.load_state_dict(state, strict=True)
    model.to(dev)
    accs: list[float | None] = []
    for split in (data.val, data.test):
        if not len(split):
            accs.append(None)
            continue
        batches = make_batches(
            split, batch_size=256, device=dev, mean=data.mean, std=data.std, augment=False, shuffle=False,
            drop_last=False, out_size=data.image_shape[1],
        )  # fmt: skip
        accs.append(evaluate(model, batches, amp=False)[1])
    return accs[0], accs[1]


def _load_reference_state(space: Space, path: str | Path, num_classes: int) -> dict[str, torch.Tensor]:
    state = load_reference(space, path)
    try:
        space.build(space.reference(), num_classes=num_classes).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PrunenasError(
            f"--reference {str(path)!r} does not fit {space.name!r} with {num_classes} classes: {load_error(exc)}"
        ) from None
    return state


def _propose(
    config: RethinkConfig,
    proposer: Proposer,
    inverted: Proposer | None,
    data: DatasetSplits,
    reference: Path | str | None,
    seed: int | None = None,
) -> tuple[Proposal, Proposal | None]:
    """The proposal (and its inverted twin) on the context of `seed` (default: the base seed): the
    reference's weights when the proposer scores trained weights, else that seed's init."""
    assert config.target is not None
    ctx = make_context(
        config.space, data=data, reference=reference if proposer.needs_trained else None,
        seed=config.settings.seed if seed is None else seed, device=config.settings.device, run=config.settings,
    )  # fmt: skip
    provenance = {"reference": str(reference) if proposer.needs_trained else "random init", "dataset": data.name}
    proposal = run_proposer(proposer, ctx, config.target, **provenance)
    inv = run_proposer(inverted, ctx, config.target, **provenance) if inverted is not None else None
    return proposal, inv


def _cpu(masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().float() for k, v in masks.items()}


LAYOUT_FILE = "rethink_layout.json"
LAYOUT = 2  # run folders end with the run's identity hash


def _check_layout(study: Path) -> None:
    """Refuse a study folder whose runs were named by an earlier prunenas (they would not be found and
    would be trained again beside the old ones); mark new folders with the current layout."""
    marker = study / LAYOUT_FILE
    if marker.exists():
        try:
            layout = json.loads(marker.read_text(encoding="utf-8")).get("layout")
        except (OSError, ValueError, AttributeError):
            layout = None
        if layout == LAYOUT:
            return
    elif not any(study.glob("*/checkpoint.pt")):
        marker.write_text(json.dumps({"layout": LAYOUT}) + "\n", encoding="utf-8")
        return
    raise PrunenasError(
        f"the study folder {str(study)!r} was made by an earlier prunenas (other run-folder names); "
        "pass another --out to start a new study (the old runs stay readable where they are)"
    )


def run_rethink(config: RethinkConfig, data: DatasetSplits, log: Log = print) -> RethinkOutcome:
    """Train (or find finished) every run of the study and write rethink.json/.txt/.png in its folder."""
    t0 = time.perf_counter()
    config = with_protocol(config)
    proposer, inverted = check_config(config)
    if config.dataset != data.name:
        config = dataclasses.replace(config, dataset=data.name)
    wanted = config.data or DataConfig(dataset=data.name)
    if wanted.val_size == 0 and len(data.val):
        raise PrunenasError(
            f"protocol {config.protocol!r} trains on every training image, but the data has a {len(data.val)}-image "
            "validation split: load it with val_size=0 (--val-size 0)"
        )
    if wanted.normalize != data.normalize:
        raise PrunenasError(
            f"the study normalises with {wanted.normalize!r} but the data was loaded with {data.normalize!r}: load it "
            f"with normalize={wanted.normalize!r} (--normalize {wanted.normalize})"
        )
    space = config.space
    num_classes = data.num_classes
    seeds = config.seed_list
    s0 = seeds[0]
    ref_state: dict[str, torch.Tensor] | None = None
    if config.reference is not None:
        ref_state = _load_reference_state(space, config.reference, num_classes)
    # a teacher checkpoint is checked against the data before anything trains
    given_teacher = (
        load_teacher(space, config.teacher, num_classes) if config.teacher not in (None, "reference") else None
    )
    counts = {"trained": 0, "skipped": 0}

    # 1. The genotype, up front unless the proposer scores the reference that this study trains.
    reference_first = proposer is not None and proposer.needs_trained and config.reference is None
    proposal: Proposal | None = None
    inv_proposal: Proposal | None = None
    genotype = config.genotype
    if proposer is not None and not reference_first:
        proposal, inv_proposal = _propose(config, proposer, inverted, data, config.reference)
        genotype = proposal.genotype
    # Pruning at initialization on a density space: every seed's proposer scores that seed's own init, so
    # seed s's mask arm trains the mask scored on its very init (Frankle et al.'s replicates).
    per_seed: dict[int, tuple[Proposal, Proposal | None]] = {}
    if space.pruned_by_masks and proposer is not None and not proposer.needs_trained and proposal is not None:
        per_seed[s0] = (proposal, inv_proposal)
        for s in seeds[1:]:
            target = config.target.describe() if config.target else ""
            log(f"proposer {proposer.name} scores the seed-{s} init ({target})")
            per_seed[s] = _propose(config, proposer, inverted, data, None, seed=s)
    study = config.out or default_study_dir(config, genotype)
    ensure_dir(study, "--out")
    _check_layout(study)

    def plan_now() -> Plan:
        return make_plan(
            config, num_classes=num_classes, train_images=len(data.train), genotype=genotype, study_dir=study,
            inverted=inv_proposal.genotype if inv_proposal is not None else None,
            mask_source="the proposer's mask" if config.genotype is None else "per-layer magnitude masks",
        )  # fmt: skip

    plan = plan_now()
    total_runs = sum(len(a.seeds) for a in plan.arms if a.trains)
    done = 0

    def run_arm(
        arm: ArmPlan,
        init_for: Callable[[int], Mapping[str, torch.Tensor] | None],
        genotypes: Mapping[int, Genotype] | None = None,
        teacher_for: Callable[[int], Teacher] | None = None,
    ) -> list[RunRecord]:
        """Train (or find finished) the arm's seeds; seed s trains `genotypes[s]` when given (its own
        scored mask's per-layer densities), else the arm's genotype, and distills from `teacher_for(s)`
        when given."""
        nonlocal done
        assert arm.genotype is not None and arm.recipe is not None
        records = []
        for seed in arm.seeds:
            done += 1
            out = arm.run_dir(study, seed)
            prefix = f"[{done}/{total_runs}] {arm.label} seed {seed}"
            genotype = (genotypes or {}).get(seed, arm.genotype)
            teacher = teacher_for(seed) if teacher_for is not None else None
            result = _finished_result(out, genotype, arm.recipe, seed, data, teacher)
            trained = result is None
            if result is None:
                log(f"{prefix}: {arm.recipe.epochs} epochs ({arm.recipe.name}) -> {out}")
                result = train(
                    space,
                    genotype,
                    data,
                    arm.recipe,
                    dataclasses.replace(config.settings, seed=seed),
                    out_dir=out,
                    init_state=init_for(seed),
                    extra_metrics={
                        "rethink": {"arm": arm.name, "what": arm.what, "study": str(study)},
                        "cost": genotype_cost(space, genotype, num_classes=num_classes).to_dict(),
                        "protocol": config.protocol_settings(),
                    },
                    teacher=teacher,
                )
                counts["trained"] += 1
            else:
                counts["skipped"] += 1
                log(f"{prefix}: finished before ({out}), not trained again")
            records.append(
                RunRecord(
                    seed=seed,
                    run_dir=str(out),
                    test_acc=result.test_acc,
                    val_acc=result.val_acc,
                    epochs_run=result.epochs_run,
                    wall_time_s=result.wall_time_s,
                    stopped=result.stopped,
                    trained=trained,
                    best_test_acc=result.best_test_acc,
                )
            )
        return records

    # 2. The unpruned arm (or the given reference).
    runs: dict[str, list[RunRecord]] = {}
    unpruned = plan.arm("unpruned")
    if config.reference is not None:
        assert ref_state is not None
        val_acc, test_acc = _evaluate_reference(space, ref_state, data, config.settings.device)
        runs["unpruned"] = [RunRecord(s0, str(config.reference), test_acc, val_acc, 0, 0.0, None, False)]
        reference_path: Path | str = config.reference
    else:
        runs["unpruned"] = run_arm(unpruned, lambda _seed: None)
        reference_path = unpruned.run_dir(study, s0) / CHECKPOINT
        ref_state = _load_reference_state(space, reference_path, num_classes)

    # 3. The proposer, if it scores the trained reference.
    if proposer is not None and reference_first:
        assert config.target is not None
        log(f"proposer {proposer.name} scores the unpruned seed-{s0} model ({config.target.describe()})")
        proposal, inv_proposal = _propose(config, proposer, inverted, data, reference_path)
        genotype = proposal.genotype
        plan = plan_now()
        total_runs = sum(len(a.seeds) for a in plan.arms if a.trains)
    assert genotype is not None and ref_state is not None
    genotype.save(study / GENOTYPE_FILE)

    # 4. Initial states: the pruned model (fine-tune) and, for masked (density) spaces, masked fresh inits.
    masks: dict[str, torch.Tensor] | None = None
    if space.pruned_by_masks:
        if proposal is not None and proposal.masks is not None:
            masks = _cpu(proposal.masks)
        else:  # a genotype file (or a proposer that returns no mask): layer-wise magnitude on the reference
            masks = magnitude_masks(space, ref_state, genotype, num_classes)
        saved: dict[str, Any] = {"masks": masks, "genotype": genotype.key}
        if inv_proposal is not None and inv_proposal.masks is not None:
            saved["invert_masks"] = _cpu(inv_proposal.masks)
        if per_seed:
            saved["per_seed"] = {
                s: {
                    "genotype": p.genotype.to_dict(),
                    "masks": _cpu(p.masks) if p.masks is not None else None,
                    "invert_masks": _cpu(inv.masks) if inv is not None and inv.masks is not None else None,
                }
                for s, (p, inv) in per_seed.items()
            }
        torch.save(saved, study / MASKS_FILE)
    # Prune-then-fine-tune cuts the genotype out of the weights the decision came from: the proposer's own
    # trained model where it has one (network slimming's sparsity-trained model), else the reference.
    source = proposal.source if proposal is not None and proposal.source is not None else ref_state
    ref_model = space.build(space.reference(), num_classes=num_classes)
    ref_model.load_state_dict(source, strict=True)
    criterion = proposer.inherits_by if proposer is not None else None
    pruned = space.initial_state(ref_model, genotype, masks, criterion=criterion)

    inv_masks = _cpu(inv_proposal.masks) if inv_proposal is not None and inv_proposal.masks is not None else None
    own_masks = {s: _cpu(p.masks) for s, (p, _) in per_seed.items() if p.masks is not None}
    own_inv = {s: _cpu(i.masks) for s, (_, i) in per_seed.items() if i is not None and i.masks is not None}

    def fresh(
        mask_set: Mapping[str, torch.Tensor] | None,
        offset: int = 0,
        own: Mapping[int, Mapping[str, torch.Tensor]] | None = None,
    ) -> Callable[[int], Any]:
        """Seed s's initial state: its own scored mask (`own[s]`, else `mask_set`) on the init of seed s + offset."""
        if mask_set is None:
            return lambda _seed: None  # train() builds the genotype fresh (channels; shuffle = the space's masks)
        return lambda seed: masked_state(space, (own or {}).get(seed, mask_set), num_classes, init_seed=seed + offset)

    inits: dict[str, Callable[[int], Mapping[str, torch.Tensor] | None]] = {
        "finetune": lambda _seed: pruned,
        "scratch-e": fresh(masks, own=own_masks),
        "scratch-b": fresh(masks, own=own_masks),
        "shuffle": fresh(None),
        "reinit": fresh(masks, REINIT_OFFSET, own=own_masks),
    }
    if inv_proposal is not None:
        inits["invert"] = fresh(inv_masks, own=own_inv)
    inits[KD_ARM] = inits["scratch-e"]  # Scratch-E's very starting weights, with a teacher

    def teacher_for(seed: int) -> Teacher:
        """The scratch-e-kd arm's teacher for `seed`: the given checkpoint, the given reference, or the
        unpruned arm's seed-`seed` model."""
        if given_teacher is not None:
            return given_teacher
        if config.reference is not None:
            return load_teacher(space, config.reference, num_classes, flag="--reference", given_as="reference")
        path = unpruned.run_dir(study, seed) / CHECKPOINT
        return load_teacher(space, path, num_classes, flag="--teacher reference", given_as="reference")

    own_genotypes = {s: p.genotype for s, (p, _) in per_seed.items()}
    inv_genotypes = {s: i.genotype for s, (_, i) in per_seed.items() if i is not None}
    for arm in plan.arms:
        if arm.name != "unpruned" and arm.trains:
            genotypes = None if arm.name == "finetune" else inv_genotypes if arm.name == "invert" else own_genotypes
            runs[arm.name] = run_arm(arm, inits[arm.name], genotypes, teacher_for if arm.name == KD_ARM else None)
    results = tuple(ArmResult(arm, tuple(runs.get(arm.runs_of, []))) for arm in plan.arms)
    outcome = RethinkOutcome(plan, results, {}, counts["trained"], counts["skipped"], time.perf_counter() - t0)
    files = write_outputs(outcome)
    return dataclasses.replace(outcome, files=files, wall_time_s=time.perf_counter() - t0)
