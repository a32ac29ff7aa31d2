"""The search engine: open or resume the study, seed it, run the trials (here or in worker processes),
then pick, retrain and export the winners."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import optuna

from prunenas.data import DatasetSplits
from prunenas.errors import PrunenasError
from prunenas.evaluators import Evaluator, get_evaluator
from prunenas.genotype import Genotype
from prunenas.metrics import Limit, MetricContext, get_metric
from prunenas.paths import ensure_dir
from prunenas.proposers.runner import make_context
from prunenas.search.config import LAYOUT, SearchConfig, typed_limit
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
    promote,
    recorded_metrics,
    write_outputs,
    write_tables,
)
from prunenas.search.storage import (
    JOURNAL,
    _first_line,
    _silence_storage_errors_in_threads,
    begin_session,
    check_journal,
    check_scale_out,
    make_storage,
    n_done,
    recover_stale_trials,
    requeue_failed,
    run_trials,
    run_workers,
    storage_errors,
)
from prunenas.spaces.base import Space

if TYPE_CHECKING:
    from optuna.study._frozen import FrozenStudy  # what storages return (optuna does not export it)


def _directions(config: SearchConfig) -> list[optuna.study.StudyDirection]:
    return [
        optuna.study.StudyDirection.MAXIMIZE if get_metric(n).direction == "maximize"
        else optuna.study.StudyDirection.MINIMIZE
        for n in config.objectives
    ]  # fmt: skip


def stored_study(config: SearchConfig) -> FrozenStudy | None:
    """The study as stored, read without writing anything (no journal is created, nothing is appended), or
    None when there is none yet."""
    if not config.search.storage:
        path = config.out / JOURNAL
        if not path.is_file() or path.stat().st_size == 0:
            check_journal(path)  # a folder in the journal's place
            return None
    storage = make_storage(config)  # a journal is checked before it is opened
    return next((s for s in storage.get_all_studies() if s.study_name == config.study), None)


def check_resumable(config: SearchConfig, study: FrozenStudy | optuna.Study) -> None:
    """Refuse to resume a study that was started with other objectives or settings, or by an earlier layout."""
    if list(study.directions) != _directions(config):
        raise PrunenasError(
            f"study {config.study!r} in {str(config.out)!r} exists with other objectives; rerun with its objectives "
            "to resume, or pass another --study/--out"
        )
    stored = study.user_attrs.get("settings")
    if stored is None:
        return
    if stored.get("layout") != LAYOUT:
        raise PrunenasError(
            f"study {config.study!r} in {str(config.out)!r} was made by an earlier prunenas (another study-folder "
            "layout); start a new one with another --study or --out (its trials.csv and runs stay readable)"
        )
    mine, theirs = config.identity(), stored.get("identity") or {}
    if mine != theirs:
        raise PrunenasError(
            f"study {config.study!r} in {str(config.out)!r} was started with other settings "
            f"({', '.join(_differences(mine, theirs))}); rerun with the same options to resume, or pass another "
            "--study/--out"
        )


def _differences(mine: Mapping[str, Any], theirs: Mapping[str, Any], path: str = "") -> list[str]:
    """The settings (dotted paths) that differ between two identities."""
    out: list[str] = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{path}{key}.")
        elif a != b:
            out.append(f"{path}{key}")
    return out


def open_study(config: SearchConfig) -> optuna.Study:
    """Create the study, or load it and check that it was started with the same settings."""
    storage = make_storage(config)
    existing = next((s for s in storage.get_all_studies() if s.study_name == config.study), None)
    if existing is not None:
        check_resumable(config, existing)  # before anything is appended to it
    study = optuna.create_study(
        study_name=config.study,
        storage=storage,
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        directions=_directions(config),
        load_if_exists=True,
    )
    so_far = len(study.get_trials(deepcopy=False))
    worker = os.getpid() if config.worker_only else 0  # parallel workers run in no reproducible order anyway
    if so_far or worker:
        study.sampler = make_sampler(config, sampler_seed(config, so_far, worker))
    if config.objectives and not study.metric_names:
        study.set_metric_names(list(config.objectives))
    return study


def check_reference(config: SearchConfig, space: Space, data: DatasetSplits) -> None:
    """Load --reference as the proposers will, so that a missing, foreign or corrupt checkpoint is refused
    before the study exists (torch's random state is left as it was)."""
    if config.search.reference is None:
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        make_context(space, data=data, reference=config.search.reference, seed=config.seed, device="cpu")


def _as_typed(config: SearchConfig, limit: Limit) -> tuple[str, str]:
    """(the flag and value a limit was given as, the flag to change it with)."""
    search = config.search
    aliases = limit not in [Limit.parse(text) for text in search.max]
    return typed_limit(limit, search.max_macs_ratio if aliases else None, search.max_macs if aliases else None)


def _meant_relative(limit: Limit, reference: float | None, metric: Any) -> str:
    """A hint when an absolute limit reads like a fraction of the reference without its `x` (macs=0.5)."""
    if limit.relative or reference is None or not 0 < limit.value <= 1:
        return ""
    return (
        f", or did you mean {limit.flag} {limit.metric}={limit.value:g}x ({limit.value:g} times the reference's "
        f"{metric.format(reference)})?"
    )


def check_limits(config: SearchConfig, space: Space, objective: Objective) -> None:
    """Refuse limits no candidate could meet or that limit nothing: a --max that even the space's smallest model
    is over, a --min that even its largest (the unpruned reference) is under or that even its smallest meets,
    a --min at or above the --max on its metric. Messages quote the limit as it was typed."""
    if not objective.limits and not objective.floors:
        return

    def value_of(genotype: Genotype, name: str) -> float:
        ctx = MetricContext(space, genotype, objective.data.num_classes, options=objective.options)
        return objective.metrics[name].measure(ctx)

    given = {lim.metric: lim for lim in config.limits}
    lowest = {lim.metric: lim for lim in config.min_limits}
    for name, limit in objective.limits.items():
        metric = objective.metrics[name]
        if metric.after_training:
            continue
        value = value_of(space.smallest_genotype(), name)
        if value > limit:
            ref = objective.references.get(name)
            share = f", {value / ref:.4f} of the reference" if ref else ""
            typed, flag = _as_typed(config, given[name])
            least = metric.format(value)
            if given[name].relative and ref:  # rounded up: the ratio shown is one the smallest model meets
                least = f"{math.ceil(value / ref * 1e4) / 1e4:.4f}{'x' if flag.startswith('--max ') else ''}"
            raise PrunenasError(
                f"{typed} is below the smallest model of {space.name!r} ({metric.format(value)}{share}), so no "
                f"candidate could meet it: raise {flag} to at least {least}{_meant_relative(given[name], ref, metric)}"
            )
    for name, floor in objective.floors.items():
        metric = objective.metrics[name]
        typed, _ = _as_typed(config, lowest[name])
        if name in objective.limits and floor >= objective.limits[name]:
            ceiling, flag = _as_typed(config, given[name])
            raise PrunenasError(
                f"{typed} is not below {ceiling} ({metric.format(floor)} vs {metric.format(objective.limits[name])}): "
                f"no candidate could be in between; lower --min {name} or raise {flag}"
            )
        if metric.after_training:
            continue
        value = value_of(space.reference(), name)
        if value < floor:
            raise PrunenasError(
                f"{typed} is above the unpruned model of {space.name!r} ({metric.format(value)}): no candidate "
                f"could reach it; lower --min {name}"
            )
        smallest = value_of(space.smallest_genotype(), name)
        if smallest >= floor:
            ref = objective.references.get(name)
            raise PrunenasError(
                f"{typed} limits nothing: even the smallest model of {space.name!r} has {metric.format(smallest)}; "
                f"raise --min {name} or leave it out{_meant_relative(lowest[name], ref, metric)}"
            )


def _seed_study(
    study: optuna.Study,
    objective: Objective,
    config: SearchConfig,
    seeds: list[tuple[Genotype, dict[str, Any]]],
    log: Callable[[str], None],
) -> None:
    """Store the search's bounds and limits, queue the proposers' genotypes, then its settings: a study holds
    settings only once it is complete, so one cut off before that is seeded again by the next run."""
    study.set_user_attr("limits", dict(objective.limits))
    if objective.floors:
        study.set_user_attr("floors", dict(objective.floors))
    bounds = objective.search_bounds([g for g, _ in seeds])
    if len(seeds) > config.budget.trials:
        log(f"seeding: {len(seeds)} proposals for {config.budget.trials} trials; the first {config.budget.trials} seed")
        seeds = seeds[: config.budget.trials]
    study.set_user_attr("bounds", json.dumps({k: list(v) for k, v in bounds.items()}))
    for genotype, attrs in seeds:
        study.enqueue_trial(dict(genotype.genes), user_attrs=attrs, skip_if_exists=True)
    study.set_user_attr("settings", config.record())
    if seeds:
        names = ", ".join(sorted({a["proposer"] for _, a in seeds}))
        log(f"seeded the study with {len(seeds)} proposer genotypes ({names})")


def run_search(
    config: SearchConfig,
    space: Space,
    data: DatasetSplits,
    log: Callable[[str], None] = print,
    evaluator: Evaluator | None = None,
) -> SearchOutcome:
    """Create or resume the study, run trials until the study-wide budget is spent (here, or in
    worker processes), then retrain and export the winners. `evaluator`: an evaluator object that judges the
    candidates instead of the configuration's (the API's `evaluate=` function; this process only)."""
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    begin_session()
    # Everything the user gave is checked before anything is written, so a refused search leaves no study
    # behind that would turn the corrected command away as "other settings".
    if not config.worker_only:
        check_scale_out(config)
    if evaluator is not None and (config.search.workers > 1 or config.gpus or config.search.storage):
        raise PrunenasError(
            f"an evaluator given as a Python object ({evaluator.name}) judges candidates in this process only: "
            "drop workers, gpus and storage (worker processes cannot receive it)"
        )
    # the teacher, the latency runtime and the evaluator (its reference, its space) are checked here
    objective = Objective(config, space, data, evaluator)
    check_limits(config, space, objective)
    make_pruner(config)  # a pruner needs a single objective
    stored = None
    if not config.worker_only:
        check_reference(config, space, data)
        stored = stored_study(config)
        if stored is not None:
            check_resumable(config, stored)
    ensure_dir(config.out, "--out")  # the folders only, so that an output that cannot be written fails now
    for folder, flag in objective.evaluator.output_folders(config.out):
        ensure_dir(folder, flag)  # e.g. --supernet-dir: refused now, not in the first trial
    if config.search.final and config.search.export and not config.worker_only:
        ensure_dir(config.exports_root, "--exports")  # not after hours of training
    seeds: list[tuple[Genotype, dict[str, Any]]] | None = None
    if not config.worker_only and (stored is None or "settings" not in stored.user_attrs):
        seeds = seed_genotypes(space, data, config, log) if config.search.mode == "genes" else []  # a new study's seeds
    _silence_storage_errors_in_threads()
    metrics = recorded_metrics(config)

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        write_tables(study, config.out, metrics)

    try:
        study = open_study(config)
        if config.worker_only:
            pass
        elif "settings" not in study.user_attrs:
            if seeds is None:  # another process created it meanwhile, without settings yet
                seeds = seed_genotypes(space, data, config, log) if config.search.mode == "genes" else []
            _seed_study(study, objective, config, seeds, log)
        else:
            retried = recover_stale_trials(study)
            if n_done(study) < config.budget.trials:  # failed genotypes (whatever failed them) get their retry
                retried += requeue_failed(study)
            retrying = f", retrying trial(s) {', '.join(map(str, retried))}" if retried else ""
            log(f"resuming study {config.study!r}: {n_done(study)} trials done{retrying}")
        n_procs = config.search.workers * max(1, len(config.gpus))
        if not config.worker_only and (n_procs > 1 or config.gpus or config.search.gpus_per_trial > 1):
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
        promoted = None
        if config.search.promote is not None:
            name = config.search.promotion()[0]  # type: ignore[index]
            again = get_evaluator(name, config.evaluators.get(name))
            promoted = promote(study, config, lambda genotype: objective.judge_again(genotype, again), log)
        winners = pick_winners(study, config, space, promoted)
        files = write_outputs(study, config, space, winners)
        if config.search.final and winners:
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
