"""The search engine: open or resume the study, seed it, run the trials (here or in worker processes),
then pick, retrain and export the winners."""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from prunenas.data import DatasetSplits
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.metrics import MetricContext, get_metric
from prunenas.paths import ensure_dir
from prunenas.search.config import LAYOUT, SearchConfig
from prunenas.search.objective import (
    Objective,
    make_pruner,
    make_sampler,
    sampler_seed,
    seed_genotypes,
)
from prunenas.search.outputs import (
    SearchOutcome,
    Winner,
    finalize,
    pick_winners,
    recorded_metrics,
    write_outputs,
    write_tables,
)
from prunenas.search.storage import (
    _first_line,
    _silence_storage_errors_in_threads,
    check_scale_out,
    make_storage,
    n_done,
    recover_stale_trials,
    run_trials,
    run_workers,
    storage_errors,
)
from prunenas.spaces.base import Space


def _directions(config: SearchConfig) -> list[optuna.study.StudyDirection]:
    return [
        optuna.study.StudyDirection.MAXIMIZE if get_metric(n).direction == "maximize"
        else optuna.study.StudyDirection.MINIMIZE
        for n in config.objectives
    ]  # fmt: skip


def open_study(config: SearchConfig) -> optuna.Study:
    """Create the study, or load it and check that it was started with the same settings."""
    storage = make_storage(config)
    try:
        study = optuna.create_study(
            study_name=config.study,
            storage=storage,
            sampler=make_sampler(config),
            pruner=make_pruner(config),
            directions=_directions(config),
            load_if_exists=True,
        )
    except ValueError as exc:
        raise PrunenasError(
            f"study {config.study!r} exists with other objectives ({exc}); use another --study or --out"
        ) from None
    so_far = len(study.get_trials(deepcopy=False))
    worker = os.getpid() if config.worker_only else 0  # parallel workers run in no reproducible order anyway
    if so_far or worker:
        study.sampler = make_sampler(config, sampler_seed(config, so_far, worker))
    stored = study.user_attrs.get("settings")
    if stored is not None:
        if stored.get("layout") != LAYOUT:
            raise PrunenasError(
                f"study {config.study!r} in {str(config.out)!r} was made by an earlier prunenas (another study-folder "
                "layout); start a new one with another --study or --out (its trials.csv and runs stay readable)"
            )
        mine, theirs = _identity(config.settings_dict()), _identity(stored)
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise PrunenasError(
                f"study {config.study!r} in {str(config.out)!r} was started with other settings ({', '.join(diff)}); "
                "rerun with the same options to resume, or pass another --study/--out"
            )
    if config.objectives and not study.metric_names:
        study.set_metric_names(list(config.objectives))
    return study


def _identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that must match for a resume (not the ones that only say how long to run)."""
    keep = (
        "space", "dataset", "mode", "limits", "objectives", "seed", "reference", "teacher", "min_density",
        "recipe_overrides",
    )  # fmt: skip
    out = {k: settings.get(k) for k in keep}
    limits = [str(x).removeprefix("min ") for x in settings.get("limits") or []]  # --max and --min
    measured = [*(settings.get("objectives") or []), *limits]
    if any(m.startswith("latency") for m in measured):  # the runtime and batch of a latency study
        latency: tuple[Any, ...] = (settings.get("latency_batch"), settings.get("latency_provider"))
        if settings.get("latency_threads"):  # absent in older studies: the default keeps them resumable
            latency += (settings.get("latency_threads"),)
        out["latency"] = latency
    budget = settings.get("budget") or {}
    out["proxy_epochs"] = budget.get("proxy_epochs")
    out["train_subset"] = budget.get("train_subset")
    return out


def check_limits(config: SearchConfig, space: Space, objective: Objective) -> None:
    """Refuse limits no candidate could meet: a --max that even the space's smallest model is over, a --min
    that even its largest (the unpruned reference) is under, a --min at or above the --max on its metric."""
    if not objective.limits and not objective.floors:
        return

    def value_of(genotype: Genotype, name: str) -> float:
        ctx = MetricContext(space, genotype, objective.data.num_classes, options=objective.options)
        return objective.metrics[name].measure(ctx)

    for name, limit in objective.limits.items():
        metric = objective.metrics[name]
        if metric.after_training:
            continue
        value = value_of(space.smallest_genotype(), name)
        if value > limit:
            ref = objective.references.get(name)
            share = f", {value / ref:.4f} of the reference" if ref else ""
            hint = "raise --max-macs-ratio" if name == "macs" else f"raise --max {name}=..."
            raise PrunenasError(
                f"the {name} limit {metric.format(limit)} is below the smallest model of {space.name!r} "
                f"({metric.format(value)}{share}); {hint}"
            )
    for name, floor in objective.floors.items():
        metric = objective.metrics[name]
        if name in objective.limits and floor >= objective.limits[name]:
            ceiling = metric.format(objective.limits[name])
            raise PrunenasError(
                f"--min {name} {metric.format(floor)} is not below --max {name} {ceiling}: "
                f"no candidate could be in between; lower --min {name} or raise --max {name}"
            )
        if metric.after_training:
            continue
        value = value_of(space.reference(), name)
        if value < floor:
            raise PrunenasError(
                f"--min {name} {metric.format(floor)} is above the unpruned model of {space.name!r} "
                f"({metric.format(value)}): no candidate could reach it; lower --min {name}"
            )


def _seed_study(
    study: optuna.Study, objective: Objective, config: SearchConfig, space: Space, data: DatasetSplits, log: Any
) -> None:
    study.set_user_attr("settings", config.settings_dict())
    study.set_user_attr("limits", dict(objective.limits))
    if objective.floors:
        study.set_user_attr("floors", dict(objective.floors))
    seeds = seed_genotypes(space, data, config, log) if config.mode == "genes" else []
    bounds = objective.search_bounds([g for g, _ in seeds])
    if len(seeds) > config.budget.trials:
        log(f"seeding: {len(seeds)} proposals for {config.budget.trials} trials; the first {config.budget.trials} seed")
        seeds = seeds[: config.budget.trials]
    study.set_user_attr("bounds", json.dumps({k: list(v) for k, v in bounds.items()}))
    for genotype, attrs in seeds:
        study.enqueue_trial(dict(genotype.genes), user_attrs=attrs, skip_if_exists=True)
    if seeds:
        names = ", ".join(sorted({a["proposer"] for _, a in seeds}))
        log(f"seeded the study with {len(seeds)} proposer genotypes ({names})")


def run_search(
    config: SearchConfig,
    space: Space,
    data: DatasetSplits,
    log: Callable[[str], None] = print,
) -> SearchOutcome:
    """Create or resume the study, run trials until the study-wide budget is spent (here, or in
    worker processes), then retrain and export the winners."""
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    if not config.worker_only:
        check_scale_out(config)
    ensure_dir(config.out, "--out")
    if config.final and config.export and not config.worker_only:
        ensure_dir(config.exports_root, "--exports")  # fail now, not after hours of training
    objective = Objective(config, space, data)
    check_limits(config, space, objective)
    _silence_storage_errors_in_threads()
    metrics = recorded_metrics(config)

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        write_tables(study, config.out, metrics)

    try:
        study = open_study(config)
        if config.worker_only:
            pass
        elif "settings" not in study.user_attrs:
            _seed_study(study, objective, config, space, data, log)
        else:
            recovered = recover_stale_trials(study)
            retrying = f", retrying {recovered}" if recovered else ""
            log(f"resuming study {config.study!r}: {n_done(study)} trials done{retrying}")
        n_procs = config.workers * max(1, len(config.gpus))
        if not config.worker_only and (n_procs > 1 or config.gpus or config.gpus_per_trial > 1):
            run_workers(study, objective, config, log, on_trial)
        else:
            run_trials(study, objective, config, on_trial)
    except storage_errors() as exc:
        raise PrunenasError(
            f"lost the study storage ({_first_line(exc)[:160]}); the trials that finished are stored: "
            "rerun the same command when the storage is back to resume"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            write_tables(study, config.out, metrics)
    winners: list[Winner] = []
    files: dict[str, str] = {}
    if not config.worker_only:
        winners = pick_winners(study, config, space)
        files = write_outputs(study, config, space, winners)
        if config.final and winners:
            winners = finalize(winners, config, space, data, log)
            files.update(write_outputs(study, config, space, winners))
    # queued trials that never ran (seeds beyond a smaller --trials of a resumed study) are not trials
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
    states = [t.state for t in trials]
    return SearchOutcome(
        study_dir=config.out,
        trials=len(trials),
        complete=states.count(optuna.trial.TrialState.COMPLETE),
        pruned=states.count(optuna.trial.TrialState.PRUNED),
        infeasible=sum(1 for t in trials if t.user_attrs.get("infeasible")),
        failed=sum(1 for t in trials if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("surplus")),
        winners=tuple(winners),
        wall_time_s=time.perf_counter() - t0,
        files=files,
        study=study,
        objectives=config.objectives,
    )
