"""What a search leaves behind: the winners (picked by the chosen objectives), their retraining with the
full recipe and export, trials.csv/json (one column per metric), pareto.png and summary.json."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from prunenas.cost import genotype_cost
from prunenas.data import DatasetSplits
from prunenas.evaluators import evaluator_class
from prunenas.export import export_run
from prunenas.genotype import Genotype
from prunenas.metrics import Metric, get_metric
from prunenas.paths import fidelity_results
from prunenas.recipes import make_recipe
from prunenas.report import plot_pareto
from prunenas.search.config import SearchConfig
from prunenas.search.objective import ALWAYS_RECORDED
from prunenas.spaces.base import Space
from prunenas.train import CHECKPOINT, METRICS, TrainResult, train


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
    metrics: dict[str, float | None] = field(default_factory=dict)  # every recorded metric of the trial


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
    files: dict[str, str]
    study: optuna.Study | None = None
    objectives: tuple[str, ...] = ()


def recorded_metrics(config: SearchConfig) -> list[Metric]:
    """Every metric a trial records: the built-ins, the objectives and the limited ones."""

    names = dict.fromkeys([*ALWAYS_RECORDED, *config.objectives, *config.limited_metrics])
    return [get_metric(n) for n in names]


def _sort_key(
    t: optuna.trial.FrozenTrial, metrics: Sequence[Metric], values: Mapping[str, Any] | None = None
) -> tuple[float, ...]:
    """Best first: by each objective in turn, in its direction (`values` in place of the trial's own)."""
    key = []
    for m in metrics:
        v = float((values or {}).get(m.name, t.user_attrs.get(m.name)) or 0.0)
        key.append(-v if m.direction == "maximize" else v)
    return tuple(key)


def judged_trials(study: optuna.Study, config: SearchConfig) -> list[optuna.trial.FrozenTrial]:
    """The feasible complete trials, one per genotype, best first by the objectives in the order given."""
    objectives = [get_metric(n) for n in config.objectives]
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not t.user_attrs.get("infeasible") and all(t.user_attrs.get(m.name) is not None for m in objectives)
    ]
    seen: set[str] = set()
    out = []
    for t in sorted(complete, key=lambda t: _sort_key(t, objectives)):
        if t.user_attrs["key"] not in seen:
            seen.add(t.user_attrs["key"])
            out.append(t)
    return out


PROMOTED = "promoted.json"


def promote(
    study: optuna.Study, config: SearchConfig, judge: Callable[[Genotype], Any], log: Callable[[str], None]
) -> dict[int, dict[str, Any]]:
    """--promote EVALUATOR:FRACTION: the best FRACTION of the judged candidates (at least one) judged again by
    `judge` (the promotion's evaluator), written to promoted.json; trial number -> its row."""
    promotion = config.search.promotion()
    assert promotion is not None
    name, fraction = promotion
    pool = judged_trials(study, config)
    chosen = pool[: max(1, math.ceil(fraction * len(pool)))] if pool else []
    rows: dict[int, dict[str, Any]] = {}
    for i, t in enumerate(chosen, start=1):
        result = judge(Genotype.from_dict(t.user_attrs["genotype"]))
        cheap = t.user_attrs.get("val_acc")
        rows[t.number] = {
            "trial": t.number, "key": t.user_attrs["key"], "evaluator": name, "cheap_evaluator": t.user_attrs.get(
                "evaluator"), "cheap_val_acc": cheap, "val_acc": result.val_acc, "seconds": result.wall_time_s,
        }  # fmt: skip
        log(f"promoted {i}/{len(chosen)}: trial {t.number} {cheap:.3f} -> {name} {result.val_acc:.3f}")
    path = config.out / PROMOTED
    path.write_text(json.dumps(list(rows.values()), indent=2) + "\n", encoding="utf-8")
    return rows


def pick_winners(
    study: optuna.Study, config: SearchConfig, space: Space, promoted: Mapping[int, Mapping[str, Any]] | None = None
) -> list[Winner]:
    """Top-k feasible trials of the Pareto front (several objectives) or of all trials (one), best first by
    the objectives in the order given; with `promoted` (--promote), the promoted trials best first by the
    objectives with their promoted validation accuracy."""
    if promoted:
        return _promoted_winners(study, config, promoted)
    objectives = [get_metric(n) for n in config.objectives]
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not t.user_attrs.get("infeasible") and all(t.user_attrs.get(m.name) is not None for m in objectives)
    ]
    if not complete:
        return []
    if config.single_objective:
        pool = complete
    else:
        front = {t.number for t in study.best_trials}
        pool = [t for t in complete if t.number in front] or complete
    pool = sorted(pool, key=lambda t: _sort_key(t, objectives))
    seen: set[str] = set()
    winners = []
    names = [m.name for m in recorded_metrics(config)]
    for t in pool:
        key = t.user_attrs["key"]
        if key in seen:
            continue
        seen.add(key)
        winners.append(
            Winner(
                trial=t.number,
                genotype=Genotype.from_dict(t.user_attrs["genotype"]),
                val_acc=float(t.user_attrs.get("val_acc") or 0.0),
                macs=int(t.user_attrs["macs"]),
                params=int(t.user_attrs["params"]),
                origin=_origin(t),
                metrics={n: t.user_attrs.get(n) for n in names},
            )
        )
        if len(winners) >= config.budget.top_k:
            break
    return winners


def _promoted_winners(
    study: optuna.Study, config: SearchConfig, promoted: Mapping[int, Mapping[str, Any]]
) -> list[Winner]:
    objectives = [get_metric(n) for n in config.objectives]
    names = [m.name for m in recorded_metrics(config)]
    pool = [t for t in judged_trials(study, config) if t.number in promoted]
    pool.sort(key=lambda t: _sort_key(t, objectives, {"val_acc": promoted[t.number]["val_acc"]}))
    winners = []
    for t in pool[: config.budget.top_k]:
        row = promoted[t.number]
        metrics = {n: t.user_attrs.get(n) for n in names}
        metrics.update(val_acc=row["val_acc"], cheap_val_acc=row["cheap_val_acc"])
        winners.append(
            Winner(
                trial=t.number, genotype=Genotype.from_dict(t.user_attrs["genotype"]), val_acc=float(row["val_acc"]),
                macs=int(t.user_attrs["macs"]), params=int(t.user_attrs["params"]), origin=_origin(t), metrics=metrics,
            )
        )  # fmt: skip
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
            config.search.final_recipe,
            space.recipe,
            macs=cost.macs,
            reference_macs=cost.reference_macs,
            overrides={"epochs": config.budget.final_epochs, **config.recipe_overrides},
        )
        run_dir = config.out / "final" / f"{w.genotype.key}-{recipe.name}-e{recipe.epochs}"
        # say what will happen: a run folder of an earlier session is reused or resumed, not trained again
        if (run_dir / METRICS).exists():
            what = f"already retrained with {recipe.name} for {recipe.epochs} epochs, reused"
        elif (run_dir / CHECKPOINT).exists():
            what = f"resuming its retraining with {recipe.name} ({recipe.epochs} epochs)"
        else:
            what = f"retraining with {recipe.name} for {recipe.epochs} epochs"
        log(f"winner {i}/{len(winners)}: trial {w.trial} ({w.origin}), {what}")
        result = train(
            space,
            w.genotype.with_provenance(study=config.study, trial=w.trial, origin=w.origin),
            data,
            recipe,
            config.run_settings(quiet=config.run.quiet),
            out_dir=run_dir,
            extra_metrics={"cost": cost.to_dict(), "study": config.study, "trial": w.trial},
            teacher=config.load_teacher(space, data.num_classes),
        )
        export_dir = None
        if config.search.export and result.finished:
            dest = config.exports_root / space.slug / config.study / w.genotype.key
            exported = export_run(run_dir, dest, out_flag="--exports")
            export_dir = str(exported.out_dir)
            log(f"  exported {exported.onnx_path} (ONNX Runtime parity checked)")
        out.append(replace(w, final=result, export_dir=export_dir))
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# -- tables ----------------------------------------------------------------------------------------------------
_LEADING = ("number", "state", "origin", "proposer", "target", "key")
_TRAILING = (
    "infeasible", "evaluator", "eval_time_s", "cached", "epochs_run", "resumed_from_epoch", "retry_of", "train_time_s",
    "stopped", "duration_s", "host", "pid", "run", "genotype",
)  # fmt: skip


def metric_columns(metrics: Sequence[Metric]) -> list[str]:
    """One column per metric, plus its ratio to the reference where it has one (macs_ratio, ...)."""
    cols: list[str] = []
    for m in metrics:
        cols.append(m.name)
        if not m.after_training:
            cols.append(f"{m.name}_ratio")
        if m.has_setup:
            cols.append(f"{m.name}_setup")  # how it was measured (runtime, batch, threads, machine)
    return cols


def trial_columns(metrics: Sequence[Metric]) -> tuple[str, ...]:
    return (*_LEADING, *metric_columns(metrics), *_TRAILING)


def trial_rows(study: optuna.Study, metrics: Sequence[Metric] | None = None) -> list[dict[str, Any]]:
    metrics = metrics if metrics is not None else [get_metric(n) for n in ("val_acc", "macs", "params")]
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        row: dict[str, Any] = {
            "number": t.number,
            "state": "INFEASIBLE" if a.get("infeasible") else "SURPLUS" if a.get("surplus") else t.state.name,
            "origin": a.get("origin", "sampler"),
            "proposer": a.get("proposer"),
            "target": (a.get("target") or {}).get("value"),
            "key": a.get("key"),
        }
        for col in metric_columns(metrics):
            row[col] = a.get(col)
        row.update(
            {
                "infeasible": bool(a.get("infeasible", False)),
                "evaluator": a.get("evaluator"),  # what scored it (None: never judged, e.g. infeasible)
                "eval_time_s": a.get("eval_time_s"),  # what judging it cost, in seconds
                "cached": a.get("cached"),
                "epochs_run": a.get("epochs_run"),
                "resumed_from_epoch": a.get("resumed_from_epoch"),
                "retry_of": a.get("retry_of", t.system_attrs.get("failed_trial")),
                "train_time_s": a.get("train_time_s"),
                "stopped": a.get("stopped"),
                "duration_s": duration,
                "host": a.get("host"),
                "pid": a.get("pid"),
                "run": a.get("run"),
                "genotype": a.get("genotype"),
            }
        )
        rows.append(row)
    return rows


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_tables(study: optuna.Study, out: Path, metrics: Sequence[Metric] | None = None) -> dict[str, str]:
    metrics = metrics if metrics is not None else [get_metric(n) for n in ("val_acc", "macs", "params")]
    rows = trial_rows(study, metrics)
    json_path, csv_path = out / "trials.json", out / "trials.csv"
    _atomic_text(json_path, json.dumps(rows, indent=2) + "\n")
    tmp = csv_path.with_name("trials.csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=trial_columns(metrics))
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "genotype": json.dumps((r["genotype"] or {}).get("genes")) if r["genotype"] else ""})
    os.replace(tmp, csv_path)
    return {"trials_json": str(json_path), "trials_csv": str(csv_path)}


def _plot_axes(config: SearchConfig) -> tuple[Metric, Metric]:
    """(x, y) of the Pareto plot: the first minimised and the first maximised objective, else MACs and
    validation accuracy."""
    objectives = [get_metric(n) for n in config.objectives]
    xs = [m for m in objectives if m.direction == "minimize"]
    ys = [m for m in objectives if m.direction == "maximize"]
    x = get_metric(xs[0].name if xs else config.limited_metrics[0] if config.limited_metrics else "macs")
    return x, ys[0] if ys else get_metric("val_acc")


def reference_point(
    config: SearchConfig, space: Space, rows: Sequence[Mapping[str, Any]], x: str, y: str
) -> tuple[dict[str, float] | None, str]:
    """Where the unpruned model sits on the plot, and its legend: the study's own trial of it when there is one;
    else, for a search whose evaluator cuts candidates from trained weights, those weights' own validation
    accuracy (their run's metrics.json) at the reference's cost; else its cost alone (a vertical line). None
    when x is not a cost the space counts."""
    key = space.reference().key
    row = next((r for r in rows if r["key"] == key and r.get(y) is not None and r.get(x) is not None), None)
    if row is not None:
        return {x: row[x], y: row[y]}, "reference (unpruned)"
    cost = genotype_cost(space, space.reference())
    value = {"macs": cost.macs, "params": cost.params, "macs_ratio": 1.0, "params_ratio": 1.0}.get(x)
    if value is None:
        return None, "reference (unpruned)"
    point: dict[str, float] = {x: float(value)}
    if y == "val_acc" and evaluator_class(config.search.evaluator).needs_trained:
        checkpoint = Path(config.search.reference) if config.search.reference else None
        found = (
            [checkpoint.parent / METRICS]
            if checkpoint
            else sorted((config.out / "reference").glob(f"{key}-*/{METRICS}"))
        )
        for path in found:
            try:
                metrics = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if metrics.get("genotype_key") == key and metrics.get("val_acc") is not None:
                point[y] = float(metrics["val_acc"])
                return point, f"reference: the trained weights ({metrics.get('epochs_run', '?')} epochs) it cuts from"
    return point, "reference (unpruned)"


def write_outputs(study: optuna.Study, config: SearchConfig, space: Space, winners: Sequence[Winner]) -> dict[str, str]:
    metrics = recorded_metrics(config)
    files = write_tables(study, config.out, metrics)
    best_dir = config.out / "best"
    best_dir.mkdir(exist_ok=True)
    for rank, w in enumerate(winners, start=1):
        g = w.genotype.with_provenance(study=config.study, trial=w.trial, origin=w.origin, val_acc=w.val_acc, rank=rank)
        g.save(best_dir / f"{rank:02d}-{w.genotype.key}.json")
    rows = trial_rows(study, metrics)
    front = [] if config.single_objective else [t.number for t in study.best_trials]
    x, y = _plot_axes(config)
    for axis in (x, y):  # a measured metric names its runtime on the axis
        if axis.has_setup:
            setattr(axis, "label", f"{axis.label or axis.name} [{axis.setup(config.metrics)}]")  # noqa: B010
    limit = study.user_attrs.get("limits", {}).get(x.name)
    reference, reference_label = reference_point(config, space, rows, x.name, y.name)
    png = plot_pareto(
        rows, config.out / "pareto.png", front=front, winners={w.genotype.key for w in winners},
        title=f"{space.name}: {config.study}", x=x, y=y, limit=limit, reference=reference,
        floor=study.user_attrs.get("floors", {}).get(x.name), reference_label=reference_label,
        judged_by="proxy training" if config.search.evaluator == "scratch" else f"judged by {config.search.evaluator}",
    )  # fmt: skip
    files["pareto_png"] = str(png)
    summary = {
        "study": config.study,
        "space": space.name,
        "objectives": [
            {**m.describe(), "setup": m.setup(config.metrics)} for m in (get_metric(n) for n in config.objectives)
        ],
        "limits": {lim.text(): study.user_attrs.get("limits", {}).get(lim.metric) for lim in config.limits},
        "min_limits": {lim.text(): study.user_attrs.get("floors", {}).get(lim.metric) for lim in config.min_limits},
        "settings": config.record(),
        "evaluator": {
            "name": config.search.evaluator,
            "seconds_per_candidate": _mean([r["eval_time_s"] for r in rows if r.get("eval_time_s") is not None]),
            # how faithfully evaluators rank candidates of this space and data, where `prunenas fidelity` measured it
            "fidelity": [str(p) for p in fidelity_results(space.name, space.slug, config.dataset)],
        },
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
                "metrics": w.metrics,
                "final": None if w.final is None else {k: v for k, v in w.final.to_dict().items() if k != "history"},
                "export_dir": w.export_dir,
            }
            for rank, w in enumerate(winners, start=1)
        ],
    }
    _atomic_text(config.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    files["summary_json"] = str(config.out / "summary.json")
    files["best_dir"] = str(best_dir)
    return files
