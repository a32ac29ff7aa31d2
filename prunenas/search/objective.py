"""The search objective: an Optuna trial -> a genotype -> its metrics -> (maybe) a proxy training run.

Per trial: a genotype (sampled gene by gene, or produced by a sampled proposer); the metrics that need
no training (MACs, params, ...) measured first, so a candidate over a `--max` limit on them is recorded
as infeasible and never trained; otherwise a proxy training run from scratch (cached by the run's
identity, so the same architecture is never trained twice and a killed trial resumes from its last
epoch), then the metrics that need the trained candidate. The objective returns the chosen
`--objectives` in order. Works with `optuna.trial.FixedTrial`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch

from prunenas import distributed
from prunenas.data import DatasetSplits
from prunenas.errors import PrunenasError
from prunenas.evaluators import EvaluationContext, Evaluator
from prunenas.genotype import Genotype
from prunenas.metrics import Metric, MetricContext, get_metric
from prunenas.paths import folder_lock
from prunenas.proposers.base import Target, get_proposer, proposers
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.recipes import make_recipe
from prunenas.search.config import SearchConfig
from prunenas.spaces.base import Space
from prunenas.tasks import get_task
from prunenas.train import CHECKPOINT, EpochMetrics, StopTraining, TrainResult, run_id, run_identity, train

#: Metrics recorded for every trial whatever the objectives (the tables and plots use them).
ALWAYS_RECORDED = ("val_acc", "macs", "params")
#: What an evaluator that trains nothing records of a candidate, in its folder.
EVALUATION = "evaluation.json"


def result_from_dict(d: Mapping[str, Any]) -> TrainResult:
    """A `TrainResult` as `evaluation.json` holds it (no epochs: the evaluator trained nothing)."""
    names = TrainResult.__dataclass_fields__
    return TrainResult(**{k: v for k, v in d.items() if k in names and k != "history"})


class SurplusTrial(Exception):
    """A trial started by a worker after the study-wide cap was already taken by others."""


def trials_ahead(study: optuna.Study, number: int) -> int:
    """Places under the study-wide cap taken by trials before `number`: distinct finished genotypes (a
    genotype trained twice counts once) and running trials."""
    running = optuna.trial.TrialState.RUNNING
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, running)
    keys: set[str] = set()
    taken = 0
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number >= number:
            continue
        key = t.user_attrs.get("key")
        if t.state == running or key is None or key not in keys:
            taken += 1
        if key is not None and t.state != running:
            keys.add(key)
    return taken


def applicable_proposers(space: Space, reference: str | None) -> list[str]:
    """Proposers that serve this space and seed searches; those that score trained weights only with a
    reference."""
    if space.proposer_kind is None:
        return []
    names = [
        cls.name
        for cls in proposers(space.proposer_kind)
        if cls.seeds_search and not (cls.needs_trained and reference is None)
    ]
    return sorted(set(names))


class Objective:
    """Turns an Optuna trial into a genotype, trains it (or not) and returns its objective values."""

    def __init__(
        self, config: SearchConfig, space: Space, data: DatasetSplits, evaluator: Evaluator | None = None
    ) -> None:
        self.config = config
        self.space = space
        self.data = data
        # how a candidate is judged (--evaluator; a Python function through the API): refused now if it cannot
        # serve this space or its reference is missing, not in the first trial
        self.evaluator = evaluator or config.evaluator()
        why_not = self.evaluator.serves(space)
        if why_not:
            raise PrunenasError(f"--evaluator {self.evaluator.name} cannot judge --space {space.name}: {why_not}")
        reference = config.search.reference
        self.reference: Path | None = Path(reference) if reference else None
        self.proxy = make_recipe(
            "proxy", space.recipe, overrides={"epochs": config.budget.proxy_epochs, **config.recipe_overrides}
        )
        self.runs = config.out / "runs"
        self.objectives: list[Metric] = [get_metric(n) for n in config.objectives]
        names = list(dict.fromkeys([*ALWAYS_RECORDED, *config.objectives, *config.limited_metrics]))
        self.metrics: dict[str, Metric] = {n: get_metric(n) for n in names}
        self.options = config.metrics
        for metric in self.metrics.values():
            metric.prepare(self.options)  # one line now (a missing runtime), not a failure in the first trial
        self.references: dict[str, float | None] = {
            n: m.reference_value(space, data.num_classes, self.options) for n, m in self.metrics.items()
        }
        self.limits: dict[str, float] = {
            lim.metric: lim.absolute(self.references.get(lim.metric)) for lim in config.limits
        }
        self.floors: dict[str, float] = {
            lim.metric: lim.absolute(self.references.get(lim.metric)) for lim in config.min_limits
        }
        self._proposers: list[str] = list(config.proposer_names or applicable_proposers(space, config.search.reference))
        # loaded (and checked) once, before any candidate trains; every proxy run distills from it
        self.teacher = config.load_teacher(space, data.num_classes)
        self._context: Any = None
        self._bounds: dict[str, list[Any]] | None = None
        self._evaluation: EvaluationContext | None = None
        if self.evaluator.needs_trained and self.reference is not None:
            self.evaluation_context()  # the reference is loaded and checked before anything is written

    def evaluation_context(self) -> EvaluationContext:
        """What the evaluator judges candidates with, made once: the proxy recipe and run settings, the
        trained reference (trained here first with --pretrain-epochs, once per study folder)."""
        if self._evaluation is None:
            if self.evaluator.needs_trained and self.reference is None:
                self.reference = self.pretrained_reference()
            self._evaluation = EvaluationContext(
                space=self.space, data=self.data, recipe=self.proxy, settings=self.config.proxy_settings(),
                seed=self.config.seed, reference=self.reference, teacher=self.teacher, work_dir=self.config.out,
                train_fn=train,
            )  # fmt: skip
            self.evaluator.prepare(self._evaluation)
        return self._evaluation

    def pretrained_reference(self) -> Path:
        """The checkpoint of the reference trained for --pretrain-epochs with the proxy recipe, in the study
        folder (found there when a worker or an earlier run trained it)."""
        epochs = self.config.search.pretrain_epochs
        assert epochs is not None  # SearchSettings.check
        recipe = make_recipe("proxy", self.space.recipe, overrides={**self.config.recipe_overrides, "epochs": epochs})
        genotype = self.space.reference()
        identity = run_identity(genotype, recipe, self.config.seed, self.data)
        out = self.config.out / "reference" / f"{genotype.key}-{run_id(identity)}"
        out.mkdir(parents=True, exist_ok=True)
        with folder_lock(out):
            train(self.space, genotype, self.data, recipe, self.config.run_settings(quiet=True, plot=False),
                  out_dir=out, evaluate_test=False)  # fmt: skip
        return out / CHECKPOINT

    # genes mode ---------------------------------------------------------------------------------------------
    def search_bounds(self, seeds: Sequence[Genotype] = ()) -> dict[str, tuple[float, float, bool]]:
        """Per-gene sampling range (low, high, log), from the space (densities: log scale from
        --min-density, or lower to admit the seeds); a gene the evaluator cannot judge changed stays at its
        value (`Evaluator.fixed_genes`)."""
        fixed = self.evaluator.fixed_genes(self.space)
        return {
            g.name: (fixed[g.name], fixed[g.name], False)
            if g.name in fixed
            else self.space.search_range(g, seeds, self.config.search.min_density)
            for g in self.space.genes
        }

    def sample_genes(self, trial: optuna.Trial) -> Genotype:
        values: dict[str, int | float] = {}
        if self._bounds is None:  # fixed when the study was created: read it once
            stored = trial.study.user_attrs.get("bounds", "{}") if hasattr(trial, "study") else "{}"
            self._bounds = json.loads(stored) or {k: list(v) for k, v in self.search_bounds().items()}
        for gene in self.space.genes:
            low, high, log = self._bounds[gene.name]
            if gene.kind == "int":
                values[gene.name] = trial.suggest_int(gene.name, int(low), int(high), step=gene.step)
            else:
                values[gene.name] = trial.suggest_float(gene.name, float(low), float(high), log=bool(log))
        return self.space.make(values)

    # proposers mode -----------------------------------------------------------------------------------------
    def context(self) -> Any:
        if self._context is None:
            self._context = make_context(
                self.space, data=self.data, reference=self.config.search.reference, seed=self.config.seed,
                device=self.config.run.device,
            )  # fmt: skip
        return self._context

    def propose(self, trial: optuna.Trial) -> Genotype:
        name = trial.suggest_categorical("proposer", self._proposers)
        proposer = get_proposer(name, self.space.proposer_kind)
        options: dict[str, Any] = {}
        if "global_ranking" in proposer.options:
            options["global_ranking"] = trial.suggest_categorical("global_ranking", [True, False])
        proposer = get_proposer(name, self.space.proposer_kind, **options)
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
    def measure(
        self,
        genotype: Genotype,
        result: TrainResult | None,
        after_training: bool,
        known: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        ctx = MetricContext(self.space, genotype, self.data.num_classes, result, self.options)
        return {
            n: known[n] if known and n in known else m.measure(ctx)
            for n, m in self.metrics.items()
            if m.after_training == after_training
        }

    def predicted_over(self, genotype: Genotype) -> dict[str, float]:
        """{metric: its estimate} for each limited metric whose cheap estimate (`Metric.screen`: latency with
        --latency-predictor) puts the candidate over its --max limit beyond doubt; else {} (it is measured)."""
        out = {}
        for name, limit in self.limits.items():
            reference = self.references.get(name)
            if reference:
                estimate = self.metrics[name].screen(self.space, genotype, self.options, limit, reference)
                if estimate is not None:
                    out[name] = estimate
        return out

    def record(self, trial: optuna.Trial, values: dict[str, float]) -> None:
        for name, value in values.items():
            metric = self.metrics[name]
            trial.set_user_attr(name, int(value) if metric.unit in ("MACs", "params") else value)
            if metric.has_setup:
                trial.set_user_attr(f"{name}_setup", metric.setup(self.options))
            ref = self.references.get(name)
            if ref:
                trial.set_user_attr(f"{name}_ratio", value / ref)

    def violations(self, values: dict[str, float]) -> dict[str, float]:
        """Relative excess over each --max limit whose metric was measured, and relative shortfall under each
        --min limit (as `min_METRIC`); <= 0: within the limit. Optuna's constrained samplers read them."""
        over = {n: values[n] / lim - 1.0 for n, lim in self.limits.items() if n in values}
        under = {f"min_{n}": 1.0 - values[n] / floor for n, floor in self.floors.items() if n in values}
        return {**over, **under}

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if hasattr(trial, "study") and trials_ahead(trial.study, trial.number) >= self.config.budget.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"the study's {self.config.budget.trials} trials were taken by other workers")
        genotype = self.propose(trial) if self.config.search.mode == "proposers" else self.sample_genes(trial)
        trial.set_user_attr("genotype", genotype.to_dict())
        trial.set_user_attr("key", genotype.key)
        trial.set_user_attr("origin", trial.user_attrs.get("origin", "sampler"))
        predicted = self.predicted_over(genotype)
        for name in predicted:  # estimated, not measured: recorded as such (latency_predicted)
            trial.set_user_attr(f"{name}_predicted", True)
        values = self.measure(genotype, None, after_training=False, known=predicted)
        self.record(trial, values)
        violations = self.violations(values)
        for name, v in violations.items():
            trial.set_constraint(name, v)
        if any(v > 0 for v in violations.values()):
            # Never trained: recorded with the worst training metrics so the sampler learns the boundary.
            trial.set_user_attr("infeasible", True)
            self._note_duplicate(trial, genotype)
            for m in self.objectives:
                if m.after_training:
                    trial.set_user_attr(m.name, None)
            return self._returned({**values, **{m.name: m.worst for m in self.objectives if m.after_training}})
        result, cached = self.train(trial, genotype)
        trial.set_user_attr("cached", cached)
        trial.set_user_attr("evaluator", self.evaluator.name)
        if self.space.task != "classification":  # what val_acc holds: the task's score (val_miou, val_map)
            trial.set_user_attr("score", get_task(self.space.task).metric)
        trial.set_user_attr("eval_time_s", result.wall_time_s)
        if cached:
            self._note_duplicate(trial, genotype)
        trial.set_user_attr("resumed_from_epoch", result.resumed_from)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("train_time_s", result.wall_time_s)
        trial.set_user_attr("run", self.run_dir(genotype).name)
        if result.stopped is not None:
            trial.set_user_attr("val_acc", result.val_acc)
            trial.set_user_attr("stopped", result.stopped)
            if result.stopped.startswith("pruned"):
                raise optuna.TrialPruned(result.stopped)
            raise optuna.TrialPruned(f"stopped: {result.stopped}")
        trained = self.measure(genotype, result, after_training=True)
        self.record(trial, trained)
        values.update(trained)
        late = self.violations(trained)
        for name, v in late.items():
            trial.set_constraint(name, v)
        if any(v > 0 for v in late.values()):  # over a limit only training could measure
            trial.set_user_attr("infeasible", True)
        return self._returned(values)

    @staticmethod
    def _note_duplicate(trial: optuna.Trial, genotype: Genotype) -> None:
        """Record `duplicate_of`: the first other trial of the study with this genotype, finished or running (the
        one whose run this trial reused), so its progress line says so instead of repeating a count."""
        if not hasattr(trial, "study"):
            return
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        others = [
            t.number
            for t in trial.study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number and t.user_attrs.get("key") == genotype.key
        ]
        if others:
            trial.set_user_attr("duplicate_of", min(others))

    def _returned(self, values: dict[str, float]) -> float | tuple[float, ...]:
        out = tuple(float(values[m.name]) for m in self.objectives)
        return out[0] if len(out) == 1 else out

    def run_dir(self, genotype: Genotype, evaluator: Evaluator | None = None) -> Path:
        """The folder of `genotype` judged by `evaluator` (default: the search's)."""
        identity = run_identity(genotype, self.proxy, self.config.seed, self.data, teacher=self.teacher)
        judged = (evaluator or self.evaluator).identity()
        if judged:  # judged otherwise than by a proxy run: another folder (and its reference, when it has one)
            identity = {**identity, "evaluator": judged, "reference": str(self.reference) if self.reference else None}
        return self.runs / f"{genotype.key}-{run_id(identity)}"

    def judge_again(self, genotype: Genotype, evaluator: Evaluator) -> TrainResult:
        """`genotype` judged by another evaluator (--promote), in its own folder (a proxy run's is the one a
        search judged by scratch would use: found there when it exists)."""
        context = self.evaluation_context()
        out = self.run_dir(genotype, evaluator)
        out.mkdir(parents=True, exist_ok=True)
        ctx = replace(context, extra_metrics={"study": self.config.study, "promoted": True})
        with folder_lock(out):
            return evaluator.evaluate(genotype, ctx, out)

    def train(self, trial: optuna.Trial, genotype: Genotype) -> tuple[TrainResult, bool]:
        context = self.evaluation_context()  # first: a pretrained reference is part of the run folder's name
        out = self.run_dir(genotype)
        callbacks: list[Callable[[EpochMetrics], None]] = []
        if self.config.single_objective and self.config.search.pruner != "none":

            def report(m: EpochMetrics) -> None:
                if m.val_acc is None:
                    return
                trial.report(m.val_acc, m.epoch)
                if trial.should_prune():
                    raise StopTraining(f"pruned by the {self.config.search.pruner} pruner at epoch {m.epoch}")

            callbacks.append(report)
        out.mkdir(parents=True, exist_ok=True)
        settings = context.settings
        with folder_lock(out):  # two workers never judge the same genotype: the second waits, then reads it
            cached = (out / "metrics.json").exists() or (out / EVALUATION).exists()
            if not self.evaluator.trains and cached:
                return result_from_dict(json.loads((out / EVALUATION).read_text(encoding="utf-8"))), True
            if distributed.world().parallel:  # --gpus-per-trial: the group's other ranks train it with us
                distributed.share(
                    {"genotype": genotype.to_dict(), "recipe": self.proxy.to_dict(), "settings": settings.to_dict(),
                     "out": str(out)}
                )  # fmt: skip
            extra = {"trial": trial.number, "study": self.config.study}
            ctx = replace(context, callbacks=tuple(callbacks), extra_metrics=extra)
            result = self.evaluator.evaluate(genotype, ctx, out)
            if not self.evaluator.trains:  # kept, so a duplicate genotype or a rerun reads it
                record = {**result.to_dict(), "evaluator": self.evaluator.describe(), **extra}
                (out / EVALUATION).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return result, cached


# -- seeding ---------------------------------------------------------------------------------------------------
def seed_genotypes(
    space: Space, data: DatasetSplits, config: SearchConfig, log: Callable[[str], None]
) -> list[tuple[Genotype, dict[str, Any]]]:
    """Proposer genotypes to enqueue: every applicable proposer (cheap ones first) at each budget target."""
    if space.proposer_kind is None:
        return []
    names = list(config.proposer_names or applicable_proposers(space, config.search.reference))
    classes = {n: get_proposer(n, space.proposer_kind) for n in names}
    if config.search.budget == "smoke":
        # keep the smoke budget to a few minutes on a CPU: the data-free and cheapest ones
        names = [n for n in names if classes[n].quick] or names[:1]
    if not torch.cuda.is_available():
        slow = [n for n in names if classes[n].gpu_only_seeding]
        for n in slow:
            names.remove(n)
            log(f"seeding: {n} skipped on CPU (too slow without a GPU); run `prunenas propose` to add it")
    ctx = make_context(space, data=data, reference=config.search.reference, seed=config.seed, device=config.run.device)
    out: list[tuple[Genotype, dict[str, Any]]] = []
    for name in names:
        proposer = classes[name]
        if space.seed_target not in proposer.targets:
            continue
        for value in config.budget.seed_targets:
            target = Target(space.seed_target, value)
            try:
                proposal = run_proposer(proposer, ctx, target)
            except PrunenasError as exc:
                log(f"seeding: {name} at {target.describe()} skipped: {exc}")
                continue
            out.append((proposal.genotype, {"origin": "proposer", "proposer": name, "target": target.to_dict()}))
    return out


# -- samplers and pruners --------------------------------------------------------------------------------------
def sampler_seed(config: SearchConfig, trials_so_far: int, worker: int = 0) -> int:
    """The sampler's seed: the run seed for a new study (so a search is reproducible from its seed), moved on
    by the trials the study already holds when a process opens it (a resumed study would otherwise redraw
    its first session's genotypes, wasted trials that hit the cache) and by a worker's own number (parallel
    workers would otherwise draw the same random candidates)."""
    return (config.seed + 1_000_003 * trials_so_far + 7_919 * worker) % 2**32


def make_sampler(config: SearchConfig, seed: int | None = None) -> optuna.samplers.BaseSampler:
    seed = config.seed if seed is None else seed
    if config.search.sampler == "tpe":
        n_startup = max(2, min(10, config.budget.trials // 4))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True)
    if config.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, config.budget.trials // 4)))
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise PrunenasError(f"unknown sampler {config.search.sampler!r}; valid: tpe, nsga2, random")


def make_pruner(config: SearchConfig) -> optuna.pruners.BasePruner:
    if config.search.pruner == "none":
        return optuna.pruners.NopPruner()
    if not config.single_objective:
        raise PrunenasError(
            f"--pruner {config.search.pruner} needs a single objective: add --max-macs-ratio R (or --max METRIC=VALUE) "
            "or --objectives val_acc; Optuna's pruners do not work on a Pareto (multi-objective) search"
        )
    if config.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if config.search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.budget.proxy_epochs)
    raise PrunenasError(f"unknown pruner {config.search.pruner!r}; valid: none, median, hyperband")
