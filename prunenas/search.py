"""Architecture search with Optuna: the only module that imports optuna.

Flow per trial: a genotype (sampled gene by gene, or produced by a sampled proposer) -> its cost
(MACs, params; an infeasible genotype under --max-macs is recorded and never trained) -> a proxy
training run from scratch (cached by genotype key + recipe + seed, so the same architecture is never
trained twice, and a killed trial resumes from its last epoch) -> validation accuracy.

Objectives: by default a Pareto front of (validation accuracy up, MACs down). With a MACs limit, one
objective (accuracy) under the constraint, which lets a pruner (median, Hyperband) stop weak candidates
from their per-epoch reports. After the search the winners are retrained with the full recipe,
evaluated once on the test set and exported to ONNX.

Everything lives in the study folder: the journal storage (resume = run the same command again),
the runs, trials.csv/json, pareto.png, the winners' genotypes and a summary.json.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from prunenas.cost import genotype_cost
from prunenas.data import DatasetSplits
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.proposers.base import Target, get_proposer, proposers
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.recipes import Recipe, make_recipe
from prunenas.spaces.base import Space
from prunenas.train import EpochMetrics, RunSettings, StopTraining, TrainResult, train

SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("none", "median", "hyperband")
MODES = ("genes", "proposers")
JOURNAL = "study.journal"


@dataclass(frozen=True)
class Budget:
    """How much a search spends: trials, proxy length, proposer seeds, winners and their retraining."""

    trials: int
    proxy_epochs: int
    seed_targets: tuple[float, ...]  # MACs ratios (density: densities) at which proposers seed the study
    top_k: int
    final_epochs: int | None  # None: the recipe's own (160 for CIFAR)
    train_subset: int | None = None


BUDGETS: dict[str, Budget] = {
    # About two minutes on a 2-core CPU with the embedded digits set: 8 candidates of 3 epochs.
    "smoke": Budget(trials=8, proxy_epochs=3, seed_targets=(0.5,), top_k=1, final_epochs=8),
    # An hour or two on one GPU for ResNet-56 on CIFAR-10.
    "fast": Budget(trials=40, proxy_epochs=8, seed_targets=(0.3, 0.5, 0.7), top_k=3, final_epochs=60),
    # The Rethinking protocol for the winners: full 160-epoch retraining.
    "paper": Budget(trials=120, proxy_epochs=15, seed_targets=(0.2, 0.35, 0.5, 0.65, 0.8), top_k=5, final_epochs=None),
}


@dataclass(frozen=True)
class SearchConfig:
    space: str
    dataset: str
    study: str
    out: Path
    budget: Budget
    budget_name: str = "fast"
    mode: str = "genes"
    sampler: str = "tpe"
    pruner: str = "none"
    seed: int = 0
    max_macs: int | None = None  # absolute limit; set from --max-macs or --max-macs-ratio
    max_macs_ratio: float | None = None
    proposer_names: tuple[str, ...] | None = None  # None: every applicable proposer
    reference: str | None = None
    final_recipe: str = "scratch-e"
    final: bool = True
    export: bool = True
    exports_root: Path = Path("exports")
    storage: str | None = None
    timeout: float | None = None
    device: str = "auto"
    quiet: bool = False
    min_density: float = 0.01
    recipe_overrides: Mapping[str, Any] = field(default_factory=dict)
    workers: int = 1  # processes on this machine (per GPU when gpus is set)
    gpus: tuple[str, ...] = ()
    heartbeat: float = 60.0  # seconds between heartbeats of a running trial (database storage)
    worker_only: bool = False  # a spawned worker: run trials, no seeding, no final step
    worker_argv: tuple[str, ...] = ()  # the command line the workers are started with
    amp: bool | None = None  # trainer switches (None: on for CUDA)
    channels_last: bool | None = None
    compile: bool = False

    def run_settings(self, **changes: Any) -> RunSettings:
        base = RunSettings(
            device=self.device, seed=self.seed, amp=self.amp, channels_last=self.channels_last, compile=self.compile
        )
        return replace(base, **changes)

    @property
    def constrained(self) -> bool:
        return self.max_macs is not None

    def settings_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["exports_root"] = str(self.exports_root)
        d["recipe_overrides"] = dict(self.recipe_overrides)
        for k in (
            "worker_argv",
            "worker_only",
            "workers",
            "gpus",
            "heartbeat",
            "quiet",
            "amp",
            "channels_last",
            "compile",
        ):
            d.pop(k, None)  # how this process runs, not what the study is
        return d


def default_study_dir(space: str, dataset: str, study: str) -> Path:
    return Path("runs") / "search" / f"{space}-{dataset}-{study}"


# -- storage -------------------------------------------------------------------------------------------------
def make_storage(config: SearchConfig) -> Any:
    """Optuna storage: a journal file in the study folder, or the --storage URL (PostgreSQL, ...)."""
    if config.storage:
        url = _with_driver(config.storage)
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=max(1, round(config.heartbeat)),
                grace_period=max(2, round(3 * config.heartbeat)),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
        except Exception as exc:
            raise PrunenasError(
                f"cannot open storage {_redact(url)!r} ({_first_line(exc)[:200]}); check the URL "
                "(e.g. postgresql://user:pass@host:5432/db) and that the server is reachable"
            ) from None
    from optuna.storages.journal import JournalFileBackend

    config.out.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(config.out / JOURNAL)))


def _with_driver(url: str) -> str:
    """postgresql:// uses SQLAlchemy's default driver (psycopg 3); fall back to psycopg2 when only it is there."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(url: str) -> str:
    """The URL without its password."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        cred, _, host = tail.rpartition("@")
        user = cred.split(":", 1)[0]
        return f"{head}://{user}:***@{host}" if ":" in cred else url
    return url


class StorageLost(OSError):
    """The study storage stopped answering in the middle of a run."""


def _silence_storage_errors_in_threads() -> None:
    """Optuna's heartbeat thread dies with a traceback when the database goes away; the main thread
    reports that in one line, so the thread's storage errors are not printed."""
    previous = threading.excepthook
    if getattr(previous, "_prunenas", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, storage_errors()):
            return
        previous(args)

    hook._prunenas = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def storage_reachable(study: optuna.Study) -> bool:
    try:
        study.user_attrs  # noqa: B018 - a round trip to the storage
        return True
    except Exception:
        return False


def storage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the storage went away (database down, journal file gone)."""
    errors: list[type[BaseException]] = [OSError, optuna.exceptions.StorageInternalError]
    try:
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:  # pragma: no cover - optuna depends on sqlalchemy
        pass
    return tuple(errors)


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell: leave it to heartbeats
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker process on this machine is gone as FAIL and enqueue them
    again (same genotype: the retry resumes the run folder's last checkpoint). Returns their numbers."""
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
        if host is None or pid is None or _alive(str(host), int(pid)):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):
            continue  # another process got there first
        retry(study, t)
        recovered.append(t.number)
    return recovered


def retry(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial's genotype again; its run folder makes the retry resume, not restart."""
    attrs = {k: v for k, v in t.user_attrs.items() if k in ("origin", "proposer", "target")}
    attrs["retry_of"] = int(t.user_attrs.get("retry_of", t.number))
    study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)


class SurplusTrial(Exception):
    """A trial started by a worker after the study-wide cap was already taken by others."""


# -- the objective ---------------------------------------------------------------------------------------------
def _recipe_key(recipe: Recipe, seed: int, data: DatasetSplits) -> str:
    blob = json.dumps({"recipe": recipe.to_dict(), "seed": seed, "data": data.describe()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


class Objective:
    """Turns an Optuna trial into a genotype, trains it (or not) and returns its objective values."""

    def __init__(self, config: SearchConfig, space: Space, data: DatasetSplits) -> None:
        self.config = config
        self.space = space
        self.data = data
        self.reference_cost = genotype_cost(space, space.reference(), num_classes=data.num_classes)
        self.proxy = make_recipe(
            "proxy", space.recipe, overrides={"epochs": config.budget.proxy_epochs, **config.recipe_overrides}
        )
        self.runs = config.out / "runs"
        self._proposers: list[str] = list(config.proposer_names or applicable_proposers(space, config.reference))
        self._context: Any = None
        self._bounds: dict[str, list[Any]] | None = None

    # genes mode ---------------------------------------------------------------------------------------------
    def search_bounds(self, seeds: Sequence[Genotype] = ()) -> dict[str, tuple[float, float, bool]]:
        """Per-gene sampling range (low, high, log). Densities start at min_density (or lower to admit
        the seeds); widths and ratios use the gene's own bounds."""
        bounds: dict[str, tuple[float, float, bool]] = {}
        for gene in self.space.genes:
            if gene.kind == "int":
                bounds[gene.name] = (gene.low, gene.high, False)
            elif self.space.kind == "density":
                low = min([self.config.min_density] + [float(g.genes[gene.name]) for g in seeds])
                bounds[gene.name] = (low, gene.high, True)
            else:
                bounds[gene.name] = (gene.low, gene.high, False)
        return bounds

    def sample_genes(self, trial: optuna.Trial) -> Genotype:
        values: dict[str, int | float] = {}
        if self._bounds is None:  # fixed when the study was created: read it once
            self._bounds = json.loads(trial.study.user_attrs.get("bounds", "{}")) or {
                k: list(v) for k, v in self.search_bounds().items()
            }
        bounds = self._bounds
        for gene in self.space.genes:
            low, high, log = bounds[gene.name]
            if gene.kind == "int":
                values[gene.name] = trial.suggest_int(gene.name, int(low), int(high))
            else:
                values[gene.name] = trial.suggest_float(gene.name, float(low), float(high), log=bool(log))
        return self.space.make(values)

    # proposers mode -----------------------------------------------------------------------------------------
    def context(self) -> Any:
        if self._context is None:
            self._context = make_context(
                self.space, data=self.data, reference=self.config.reference, seed=self.config.seed,
                device=self.config.device,
            )  # fmt: skip
        return self._context

    def propose(self, trial: optuna.Trial) -> Genotype:
        name = trial.suggest_categorical("proposer", self._proposers)
        proposer = get_proposer(name, self.space.kind)
        options: dict[str, Any] = {}
        if "global_ranking" in proposer.options:
            options["global_ranking"] = trial.suggest_categorical("global_ranking", [True, False])
        proposer = get_proposer(name, self.space.kind, **options)
        kind = "macs_ratio" if "macs_ratio" in proposer.targets else proposer.targets[0]
        value = trial.suggest_float("target", 0.15, 0.95)
        trial.set_user_attr("origin", "proposer")
        trial.set_user_attr("proposer", name)
        trial.set_user_attr("target", {"kind": kind, "value": value})
        try:
            proposal = run_proposer(proposer, self.context(), Target(kind, value))
        except PrunenasError as exc:  # e.g. a target the space's coarse widths cannot meet within 2%
            trial.set_user_attr("stopped", f"proposer failed: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        return proposal.genotype

    # the trial ----------------------------------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if trials_ahead(trial.study, trial.number) >= self.config.budget.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"the study's {self.config.budget.trials} trials were taken by other workers")
        genotype = self.propose(trial) if self.config.mode == "proposers" else self.sample_genes(trial)
        cost = genotype_cost(self.space, genotype, num_classes=self.data.num_classes)
        trial.set_user_attr("genotype", genotype.to_dict())
        trial.set_user_attr("key", genotype.key)
        trial.set_user_attr("macs", cost.macs)
        trial.set_user_attr("params", cost.params)
        trial.set_user_attr("macs_ratio", cost.macs_ratio)
        trial.set_user_attr("origin", trial.user_attrs.get("origin", "sampler"))
        if self.config.constrained:
            assert self.config.max_macs is not None
            violation = cost.macs / self.config.max_macs - 1.0
            trial.set_constraint("macs", violation)
            if violation > 0:
                # Never trained: recorded with the worst accuracy so the sampler learns the boundary.
                trial.set_user_attr("infeasible", True)
                trial.set_user_attr("val_acc", None)
                return 0.0
        result, cached = self.train(trial, genotype)
        trial.set_user_attr("cached", cached)
        trial.set_user_attr("resumed_from_epoch", result.resumed_from)
        trial.set_user_attr("val_acc", result.val_acc)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("train_time_s", result.wall_time_s)
        if result.stopped is not None:
            trial.set_user_attr("stopped", result.stopped)
            if result.stopped.startswith("pruned"):
                raise optuna.TrialPruned(result.stopped)
            raise optuna.TrialPruned(f"stopped: {result.stopped}")
        val = float(result.val_acc) if result.val_acc is not None else 0.0
        if self.config.constrained:
            return val
        return val, float(cost.macs)

    def run_dir(self, genotype: Genotype) -> Path:
        return self.runs / f"{genotype.key}-{_recipe_key(self.proxy, self.config.seed, self.data)}"

    def train(self, trial: optuna.Trial, genotype: Genotype) -> tuple[TrainResult, bool]:
        out = self.run_dir(genotype)
        callbacks: list[Callable[[EpochMetrics], None]] = []
        if self.config.constrained and self.config.pruner != "none":

            def report(m: EpochMetrics) -> None:
                if m.val_acc is None:
                    return
                trial.report(m.val_acc, m.epoch)
                if trial.should_prune():
                    raise StopTraining(f"pruned by the {self.config.pruner} pruner at epoch {m.epoch}")

            callbacks.append(report)
        out.mkdir(parents=True, exist_ok=True)
        with run_lock(out):  # two workers never train the same genotype: the second waits, then reads it
            cached = (out / "metrics.json").exists()
            result = train(
                self.space,
                genotype,
                self.data,
                self.proxy,
                self.config.run_settings(quiet=True, plot=False),
                out_dir=out,
                callbacks=callbacks,
                evaluate_test=False,
                extra_metrics={"trial": trial.number, "study": self.config.study},
            )
        return result, cached


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on a run folder across processes (released by the OS if the holder dies)."""
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def trials_ahead(study: optuna.Study, number: int) -> int:
    """Trials before `number` that hold a place under the study-wide cap (done or still running)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if t.number < number)


def applicable_proposers(space: Space, reference: str | None) -> list[str]:
    """Proposers for this space's kind; those that score trained weights only with a reference."""
    names = []
    for cls in proposers(space.kind):
        if cls.needs_trained and reference is None:
            continue
        if cls.name == "l1-paper":
            continue  # a fixed rule for a few spaces, seeded separately where it applies
        names.append(cls.name)
    return sorted(set(names))


# -- seeding ---------------------------------------------------------------------------------------------------
def seed_genotypes(
    space: Space, data: DatasetSplits, config: SearchConfig, log: Callable[[str], None]
) -> list[tuple[Genotype, dict[str, Any]]]:
    """Proposer genotypes to enqueue: every applicable proposer (cheap ones first) at each budget target."""
    names = list(config.proposer_names or applicable_proposers(space, config.reference))
    if config.budget_name == "smoke":
        # keep the smoke budget to a few minutes on a CPU: the data-free and cheapest ones
        names = [n for n in names if n in ("uniform", "random", "erk", "l1")] or names[:1]
    if "synflow" in names and torch.cuda.is_available() is False and space.kind == "density":
        names.remove("synflow")
        log("seeding: synflow skipped on CPU (100 float64 iterations); run `prunenas propose` to add it")
    ctx = make_context(space, data=data, reference=config.reference, seed=config.seed, device=config.device)
    kind = "density" if space.kind == "density" else "macs_ratio"
    out: list[tuple[Genotype, dict[str, Any]]] = []
    for name in names:
        proposer = get_proposer(name, space.kind)
        if kind not in proposer.targets:
            continue
        for value in config.budget.seed_targets:
            target = Target(kind, value)
            try:
                proposal = run_proposer(proposer, ctx, target)
            except PrunenasError as exc:
                log(f"seeding: {name} at {target.describe()} skipped: {exc}")
                continue
            out.append((proposal.genotype, {"origin": "proposer", "proposer": name, "target": target.to_dict()}))
    return out


# -- running ---------------------------------------------------------------------------------------------------
def make_sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    if config.sampler == "tpe":
        n_startup = max(2, min(10, config.budget.trials // 4))
        return optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=n_startup, multivariate=True)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=config.seed, population_size=max(4, min(50, config.budget.trials // 4))
        )
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    raise PrunenasError(f"unknown sampler {config.sampler!r}; valid: {', '.join(SAMPLERS)}")


def make_pruner(config: SearchConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    if not config.constrained:
        raise PrunenasError(
            f"--pruner {config.pruner} needs a single objective: add --max-macs-ratio R (or --max-macs N); "
            "Optuna's pruners do not work on a Pareto (two-objective) search"
        )
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.budget.proxy_epochs)
    raise PrunenasError(f"unknown pruner {config.pruner!r}; valid: {', '.join(PRUNERS)}")


def open_study(config: SearchConfig) -> optuna.Study:
    storage = make_storage(config)
    directions: list[optuna.study.StudyDirection] = [optuna.study.StudyDirection.MAXIMIZE]
    if not config.constrained:
        directions.append(optuna.study.StudyDirection.MINIMIZE)
    try:
        study = optuna.create_study(
            study_name=config.study,
            storage=storage,
            sampler=make_sampler(config),
            pruner=make_pruner(config),
            directions=directions,
            load_if_exists=True,
        )
    except ValueError as exc:
        raise PrunenasError(
            f"study {config.study!r} exists with other objectives ({exc}); use another --study or --out"
        ) from None
    stored = study.user_attrs.get("settings")
    if stored is not None:
        mine = _identity(config.settings_dict())
        theirs = _identity(stored)
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise PrunenasError(
                f"study {config.study!r} in {str(config.out)!r} was started with other settings ({', '.join(diff)}); "
                "rerun with the same options to resume, or pass another --study/--out"
            )
    return study


def _identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that must match for a resume (not the ones that only say how long to run)."""
    keep = ("space", "dataset", "mode", "max_macs", "seed", "reference", "min_density", "recipe_overrides")
    out = {k: settings.get(k) for k in keep}
    budget = settings.get("budget") or {}
    out["proxy_epochs"] = budget.get("proxy_epochs")
    out["train_subset"] = budget.get("train_subset")
    return out


def n_done(study: optuna.Study) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


@dataclass(frozen=True)
class Winner:
    trial: int
    genotype: Genotype
    val_acc: float
    macs: int
    params: int
    origin: str
    final: TrainResult | None = None
    export_dir: str | None = None


@dataclass(frozen=True)
class SearchOutcome:
    study_dir: Path
    trials: int
    complete: int
    pruned: int
    infeasible: int
    failed: int
    winners: tuple[Winner, ...]
    wall_time_s: float
    files: Mapping[str, str]


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
    if config.max_macs is not None:
        ref = genotype_cost(space, space.reference(), num_classes=data.num_classes)
        smallest = _smallest_macs(space, data.num_classes)
        if config.max_macs < smallest:
            raise PrunenasError(
                f"the MACs limit {config.max_macs:,} is below the smallest model of {space.name!r} "
                f"({smallest:,} MACs, {smallest / ref.macs:.4f} of the reference); raise --max-macs-ratio"
            )
    config.out.mkdir(parents=True, exist_ok=True)
    _silence_storage_errors_in_threads()
    try:
        study = open_study(config)
        objective = Objective(config, space, data)
        if config.worker_only:
            pass
        elif "settings" not in study.user_attrs:
            study.set_user_attr("settings", config.settings_dict())
            seeds = seed_genotypes(space, data, config, log) if config.mode == "genes" else []
            bounds = objective.search_bounds([g for g, _ in seeds])
            study.set_user_attr("bounds", json.dumps({k: list(v) for k, v in bounds.items()}))
            for genotype, attrs in seeds:
                study.enqueue_trial(dict(genotype.genes), user_attrs=attrs, skip_if_exists=True)
            if seeds:
                log(
                    f"seeded the study with {len(seeds)} proposer genotypes "
                    f"({', '.join(sorted({a['proposer'] for _, a in seeds}))})"
                )
        else:
            recovered = recover_stale_trials(study)
            log(
                f"resuming study {config.study!r}: {n_done(study)} trials done"
                + (f", retrying {recovered}" if recovered else "")
            )
        n_procs = config.workers * max(1, len(config.gpus))
        if not config.worker_only and (n_procs > 1 or config.gpus):
            run_workers(study, objective, config, log)
        else:
            run_trials(study, objective, config)
    except storage_errors() as exc:
        raise PrunenasError(
            f"lost the study storage ({_first_line(exc)[:160]}); the trials that finished are stored: "
            "rerun the same command when the storage is back to resume"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            write_tables(study, config.out)
    if config.worker_only:
        winners: list[Winner] = []
        files: dict[str, str] = {}
    else:
        winners = pick_winners(study, config, space)
        files = write_outputs(study, config, space, winners)
        if config.final and winners:
            winners = finalize(winners, config, space, data, log)
            files.update(write_outputs(study, config, space, winners))
    trials = study.get_trials(deepcopy=False)
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
    )


def _counts(study: optuna.Study) -> dict[str, int]:
    counts = {"done": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            counts["done"] += 1
        elif t.state == optuna.trial.TrialState.RUNNING:
            counts["running"] += 1
        elif t.state == optuna.trial.TrialState.WAITING:
            counts["waiting"] += 1
    return counts


def run_trials(study: optuna.Study, objective: Objective, config: SearchConfig, poll_s: float = 1.0) -> None:
    """Run trials one at a time until the study (all workers, all machines) holds `trials` done ones.

    While the last places are held by running trials of other workers this one waits: if such a
    worker dies, its trial turns stale (heartbeat, or its process is gone) and is queued again."""
    cap = config.budget.trials
    deadline = time.monotonic() + config.timeout if config.timeout else None
    progress = None
    if not config.quiet and not config.worker_only:
        from tqdm.auto import tqdm

        progress = tqdm(total=cap, initial=min(cap, n_done(study)), desc="trials", unit="trial")

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress is not None:
            progress.n = min(cap, n_done(study))
            acc = trial.user_attrs.get("val_acc")
            last = f"{acc:.3f}" if isinstance(acc, float) else trial.state.name.lower()
            progress.set_postfix({"last": last, "MACs": f"{trial.user_attrs.get('macs_ratio', 0):.2f}"})
        write_tables(study, config.out)

    try:
        while deadline is None or time.monotonic() < deadline:
            counts = _counts(study)
            if counts["done"] >= cap:
                break
            if counts["done"] + counts["running"] >= cap and counts["waiting"] == 0:
                recover_stale_trials(study)  # a dead worker's trial on this machine
                optuna.storages.fail_stale_trials(study)  # a no-op without database heartbeats
                time.sleep(poll_s)
                continue
            try:
                study.optimize(objective, n_trials=1, callbacks=[on_trial], catch=(RuntimeError, SurplusTrial))
            except storage_errors():
                raise
            except Exception as exc:
                # Optuna can fail in its own bookkeeping when the database vanishes mid-trial: ask
                # the storage directly whether that is what happened.
                if storage_reachable(study):
                    raise
                raise StorageLost("the storage stopped answering") from exc
    except KeyboardInterrupt:
        requeue_own_trials(study)
        raise
    finally:
        if progress is not None:
            progress.close()


def requeue_own_trials(study: optuna.Study) -> None:
    """After Ctrl-C: this process's interrupted trial is failed and queued again, so the next run of
    the same command resumes it from its run folder's last checkpoint."""
    me = (socket.gethostname(), os.getpid())
    with contextlib.suppress(Exception):
        retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
        for t in study.get_trials(deepcopy=False):
            if (t.user_attrs.get("host"), t.user_attrs.get("pid")) != me or t.number in retried:
                continue
            if t.state == optuna.trial.TrialState.RUNNING:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            elif t.state != optuna.trial.TrialState.FAIL or t.user_attrs.get("surplus"):
                continue
            retry(study, t)


def worker_commands(config: SearchConfig) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, extra environment) of each worker process of this machine."""
    base = [sys.executable, "-m", "prunenas.cli", *config.worker_argv, "--worker-only", "--quiet"]
    gpus = list(config.gpus) or [""]
    out = []
    for gpu in gpus:
        env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu else {}
        out += [(base, env)] * config.workers
    return out


def run_workers(
    study: optuna.Study, objective: Objective, config: SearchConfig, log: Callable[[str], None], poll_s: float = 2.0
) -> None:
    """Start the worker processes, show the study's progress, and wait for them."""
    commands = worker_commands(config)
    log(f"starting {len(commands)} worker processes" + (f" on GPUs {','.join(config.gpus)}" if config.gpus else ""))
    procs = [subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL) for argv, env in commands]
    progress = None
    if not config.quiet:
        from tqdm.auto import tqdm

        progress = tqdm(total=config.budget.trials, initial=min(config.budget.trials, n_done(study)), desc="trials")
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            if progress is not None:
                progress.n = min(config.budget.trials, n_done(study))
                progress.refresh()
    except KeyboardInterrupt:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        raise
    finally:
        if progress is not None:
            progress.n = min(config.budget.trials, n_done(study))
            progress.close()
    failed = [p.returncode for p in procs if p.returncode not in (0, None)]
    if failed:
        log(f"{len(failed)} worker(s) exited with codes {failed}; their trials were failed and queued again")
    if n_done(study) < config.budget.trials:
        log(f"the workers stopped at {n_done(study)}/{config.budget.trials} trials; finishing here")
        run_trials(study, objective, config)


def _smallest_macs(space: Space, num_classes: int) -> int:
    """MACs of the smallest genotype: the narrowest widths, the largest prune ratios, tiny densities."""
    smallest: dict[str, int | float] = {}
    for g in space.genes:
        if g.kind == "int":
            smallest[g.name] = int(g.low)
        elif space.kind == "ratios":
            smallest[g.name] = g.high
        else:
            smallest[g.name] = 1e-6
    return genotype_cost(space, space.make(smallest), num_classes=num_classes).macs


# -- results ---------------------------------------------------------------------------------------------------
def pick_winners(study: optuna.Study, config: SearchConfig, space: Space) -> list[Winner]:
    """Top-k by validation accuracy: of the Pareto front (two objectives) or of the feasible trials."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not t.user_attrs.get("infeasible") and t.user_attrs.get("val_acc") is not None
    ]
    if not complete:
        return []
    pool = complete if config.constrained else [t for t in study.best_trials if t in complete] or complete
    pool = sorted(pool, key=lambda t: (-float(t.user_attrs["val_acc"]), int(t.user_attrs["macs"])))
    seen: set[str] = set()
    winners = []
    for t in pool:
        key = t.user_attrs["key"]
        if key in seen:
            continue
        seen.add(key)
        winners.append(
            Winner(
                trial=t.number,
                genotype=Genotype.from_dict(t.user_attrs["genotype"]),
                val_acc=float(t.user_attrs["val_acc"]),
                macs=int(t.user_attrs["macs"]),
                params=int(t.user_attrs["params"]),
                origin=_origin(t),
            )
        )
        if len(winners) >= config.budget.top_k:
            break
    return winners


def _origin(t: optuna.trial.FrozenTrial) -> str:
    if t.user_attrs.get("origin") == "proposer":
        target = t.user_attrs.get("target") or {}
        return f"{t.user_attrs.get('proposer')}@{target.get('value', '?')}"
    return "sampler"


def finalize(
    winners: Sequence[Winner], config: SearchConfig, space: Space, data: DatasetSplits, log: Callable[[str], None]
) -> list[Winner]:
    """Retrain each winner with the full recipe, evaluate on the test set once, export to ONNX."""
    out: list[Winner] = []
    for i, w in enumerate(winners, start=1):
        cost = genotype_cost(space, w.genotype, num_classes=data.num_classes)
        recipe = make_recipe(
            config.final_recipe,
            space.recipe,
            macs=cost.macs,
            reference_macs=cost.reference_macs,
            overrides={"epochs": config.budget.final_epochs, **config.recipe_overrides},
        )
        run_dir = config.out / "final" / f"{w.genotype.key}-{recipe.name}-e{recipe.epochs}"
        log(
            f"winner {i}/{len(winners)}: trial {w.trial} ({w.origin}), "
            f"retraining with {recipe.name} for {recipe.epochs} epochs"
        )
        result = train(
            space,
            w.genotype.with_provenance(study=config.study, trial=w.trial, origin=w.origin),
            data,
            recipe,
            config.run_settings(quiet=config.quiet),
            out_dir=run_dir,
            extra_metrics={"cost": cost.to_dict(), "study": config.study, "trial": w.trial},
        )
        export_dir = None
        if config.export and result.finished:
            from prunenas.export import export_run

            dest = config.exports_root / space.name / config.study / w.genotype.key
            exported = export_run(run_dir, dest)
            export_dir = str(exported.out_dir)
            log(f"  exported {exported.onnx_path} (ONNX Runtime parity checked)")
        out.append(replace(w, final=result, export_dir=export_dir))
    return out


TRIAL_COLUMNS = (
    "number", "state", "origin", "proposer", "target", "key", "macs", "params", "macs_ratio", "val_acc",
    "infeasible", "cached", "epochs_run", "resumed_from_epoch", "retry_of", "train_time_s", "stopped", "duration_s",
    "host", "pid", "genotype",
)  # fmt: skip


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "number": t.number,
                "state": "INFEASIBLE" if a.get("infeasible") else "SURPLUS" if a.get("surplus") else t.state.name,
                "origin": a.get("origin", "sampler"),
                "proposer": a.get("proposer"),
                "target": (a.get("target") or {}).get("value"),
                "key": a.get("key"),
                "macs": a.get("macs"),
                "params": a.get("params"),
                "macs_ratio": a.get("macs_ratio"),
                "val_acc": a.get("val_acc"),
                "infeasible": bool(a.get("infeasible", False)),
                "cached": a.get("cached"),
                "epochs_run": a.get("epochs_run"),
                "resumed_from_epoch": a.get("resumed_from_epoch"),
                "retry_of": a.get("retry_of", t.system_attrs.get("failed_trial")),
                "host": a.get("host"),
                "pid": a.get("pid"),
                "train_time_s": a.get("train_time_s"),
                "stopped": a.get("stopped"),
                "duration_s": duration,
                "genotype": a.get("genotype"),
            }
        )
    return rows


def write_tables(study: optuna.Study, out: Path) -> dict[str, str]:
    rows = trial_rows(study)
    json_path, csv_path = out / "trials.json", out / "trials.csv"
    tmp = json_path.with_name("trials.json.tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, json_path)
    tmp = csv_path.with_name("trials.csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=TRIAL_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "genotype": json.dumps((r["genotype"] or {}).get("genes")) if r["genotype"] else ""})
    os.replace(tmp, csv_path)
    return {"trials_json": str(json_path), "trials_csv": str(csv_path)}


def write_outputs(study: optuna.Study, config: SearchConfig, space: Space, winners: Sequence[Winner]) -> dict[str, str]:
    from prunenas.report import plot_pareto

    files = write_tables(study, config.out)
    best_dir = config.out / "best"
    best_dir.mkdir(exist_ok=True)
    for rank, w in enumerate(winners, start=1):
        g = w.genotype.with_provenance(study=config.study, trial=w.trial, origin=w.origin, val_acc=w.val_acc, rank=rank)
        g.save(best_dir / f"{rank:02d}-{w.genotype.key}.json")
    rows = trial_rows(study)
    pareto_keys = {w.genotype.key for w in winners}
    front = [] if config.constrained else [t.number for t in study.best_trials]
    title = f"{space.name}: {config.study}"
    png = plot_pareto(
        rows, config.out / "pareto.png", front=front, winners=pareto_keys, title=title, max_macs=config.max_macs
    )
    files["pareto_png"] = str(png)
    summary = {
        "study": config.study,
        "space": space.name,
        "settings": config.settings_dict(),
        "trials": len(rows),
        "pareto_front": front,
        "winners": [
            {
                "rank": rank,
                "trial": w.trial,
                "key": w.genotype.key,
                "origin": w.origin,
                "macs": w.macs,
                "params": w.params,
                "val_acc_proxy": w.val_acc,
                "final": None if w.final is None else {k: v for k, v in w.final.to_dict().items() if k != "history"},
                "export_dir": w.export_dir,
            }
            for rank, w in enumerate(winners, start=1)
        ],
    }
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    files["summary_json"] = str(config.out / "summary.json")
    files["best_dir"] = str(best_dir)
    return files
