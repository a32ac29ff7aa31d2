"""What a fidelity study reports: per evaluator, Kendall's tau-b and Spearman's rho of its scores against the
truth (the mean validation accuracy over the truth's seeds) with bootstrap intervals, tau over the pairs at
one MACs level only (how well it orders candidates of one size, which is what a search at a MACs target
asks of it), its seconds per candidate, and the ceiling (how well the truth agrees with itself from one seed
to another); beside them the baseline every evaluator should beat: the candidates ranked by their MACs
alone. As a table, as JSON and as a scatter plot of each evaluator's scores against the truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunenas.fidelity.stats import (
    Interval,
    bootstrap,
    kendall_tau_b,
    mean_pairwise,
    paired_interval,
    spearman_rho,
    within_groups,
)
from prunenas.report import format_table, pyplot, save_figure

#: The bootstrap's seed: the same candidates give the same intervals.
BOOTSTRAP_SEED = 0
#: How tables, files and plots name the baseline that ranks candidates by their MACs (larger first).
MACS_ALONE = "baseline: MACs alone"
#: Below this ceiling the truth's seed noise is as large as the differences it should rank (GUIDE section 12).
LOW_CEILING = 0.5


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _interval(interval: Interval | None) -> dict[str, Any] | None:
    return interval.to_dict() if interval is not None else None


def ceiling(
    truth: Sequence[Sequence[float | None]], resamples: int, levels: Sequence[float] | None = None
) -> dict[str, Any] | None:
    """The truth's agreement with itself: Kendall's tau-b between the rankings of every two seeds, averaged
    over the pairs, over the candidates every seed scored (and the same over the pairs at one MACs level,
    with `levels`, one per candidate); None with one seed."""
    if not truth or len(truth[0]) < 2:
        return None
    seeds = len(truth[0])
    kept = [i for i, row in enumerate(truth) if all(v is not None for v in row)]
    m = np.asarray([[float(v or 0.0) for v in truth[i]] for i in kept], dtype=float).reshape(-1, seeds).T
    n = m.shape[1]  # m: (seeds, candidates every seed scored)
    pairs = seeds * (seeds - 1) // 2
    out: dict[str, Any] = {"kendall_tau": None, "interval": None, "n": n, "seed_pairs": pairs}
    if levels is not None:
        groups = [levels[i] for i in kept]
        out["kendall_tau_within_levels"] = mean_pairwise(m, lambda a, b: within_groups(a, b, groups)) if n else None
    if n < 2:
        return out
    interval = bootstrap(lambda idx: mean_pairwise(m[:, idx]), n, resamples, BOOTSTRAP_SEED)
    return {**out, "kendall_tau": mean_pairwise(m), "interval": _interval(interval)}


def evaluator_stats(
    truth: Sequence[Sequence[float | None]],
    scores: Sequence[float | None],
    seconds: Sequence[float | None],
    resamples: int,
    levels: Sequence[float] | None = None,
) -> dict[str, Any]:
    """An evaluator's agreement with the truth over the candidates both scored: tau and rho against the
    truth's mean with their intervals, tau against each seed's truth alone (comparable with the ceiling), tau
    over the pairs at one MACs level (with `levels`, one per candidate), and its seconds per candidate."""
    means = [_mean(seeds) for seeds in truth]
    both = [i for i, (t, s) in enumerate(zip(means, scores, strict=True)) if t is not None and s is not None]
    x = [float(scores[i] or 0.0) for i in both]
    y = [float(means[i] or 0.0) for i in both]
    per_seed: list[float | None] = []
    for s in range(len(truth[0]) if truth else 0):
        kept = [i for i in both if truth[i][s] is not None]
        one_seed = [float(truth[i][s] or 0.0) for i in kept]
        per_seed.append(kendall_tau_b([float(scores[i] or 0.0) for i in kept], one_seed) if len(kept) >= 2 else None)
    timed = [float(t) for t in seconds if t is not None]
    within = {}
    if levels is not None:
        groups = [levels[i] for i in both]
        within["kendall_tau_within_levels"] = within_groups(x, y, groups) if both else None
    return {
        "n": len(both),
        "kendall_tau": kendall_tau_b(x, y),
        "kendall_tau_interval": _interval(paired_interval(kendall_tau_b, x, y, resamples, BOOTSTRAP_SEED)),
        "spearman_rho": spearman_rho(x, y),
        "spearman_rho_interval": _interval(paired_interval(spearman_rho, x, y, resamples, BOOTSTRAP_SEED)),
        "kendall_tau_per_seed": per_seed,
        "seconds_per_candidate": float(np.mean(timed)) if timed else None,
        **within,
    }


def macs_alone(
    truth: Sequence[Sequence[float | None]], macs_ratios: Sequence[float], levels: Sequence[float], resamples: int
) -> dict[str, Any]:
    """The baseline row: the candidates ranked by their MACs (a larger network first), at no cost."""
    stats = evaluator_stats(truth, list(macs_ratios), [0.0] * len(macs_ratios), resamples, levels)
    return {"label": MACS_ALONE, **stats}


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _with_interval(value: float | None, interval: Mapping[str, Any] | None) -> str:
    if value is None:
        return "-"
    if interval is None:
        return _num(value)
    return f"{value:.3f} [{interval['low']:.2f}, {interval['high']:.2f}]"


def table(report: Mapping[str, Any]) -> str:
    """The report as text: one line per evaluator, then the ceiling, then where the files are."""
    truth = report["truth"]
    levels = ", ".join(f"{v:g}" for v in report["settings"]["levels"])
    lines = [
        f"fidelity on {report['space']} / {report['dataset']['name']}: {len(report['genotypes'])} genotypes at MACs "
        f"{levels}; truth: {truth['epochs']}-epoch proxy-recipe runs, {len(truth['seeds'])} seed(s), "
        f"{_num(truth['seconds_per_run'], 1)} s per run",
    ]
    rows = []
    baseline = [report["macs_alone"]] if report.get("macs_alone") else []
    for e in [*report["evaluators"], *baseline]:
        rows.append([
            e["label"], e["n"], _with_interval(e["kendall_tau"], e["kendall_tau_interval"]),
            _with_interval(e["spearman_rho"], e["spearman_rho_interval"]),
            " ".join(_num(t, 2) for t in e["kendall_tau_per_seed"]) or "-",
            _num(e.get("kendall_tau_within_levels"), 2), _num(e["seconds_per_candidate"], 2),
        ])  # fmt: skip
    c = report["ceiling"]
    if c is not None:
        tau = _with_interval(c["kendall_tau"], c["interval"])
        within = _num(c.get("kendall_tau_within_levels"), 2)
        rows.append(["ceiling: truth seed vs seed", c["n"], tau, "", "", within, ""])
    headers = [
        "evaluator", "n", "kendall tau [90% CI]", "spearman rho [90% CI]", "tau per seed", "tau in level",
        "s/candidate",
    ]  # fmt: skip
    lines.append(format_table(rows, headers, "lrlllll"))
    if c is None:
        lines.append("ceiling: needs --seeds 2 or more (the truth's agreement with itself under another seed)")
    elif c["kendall_tau"] is None or c["kendall_tau"] < LOW_CEILING:
        agrees = "not at all" if c["kendall_tau"] is None else f"only at tau {c['kendall_tau']:.3f}"
        lines.append(
            f"note: the truth agrees with itself from seed to seed {agrees}: its seed noise is as large as the "
            "differences it ranks; give more --truth-epochs (or training images) before ranking evaluators"
        )
    lines.append(f"out: {report['files']['folder']} ({', '.join(report['files']['written'])})")
    return "\n".join(lines)


def figure(report: Mapping[str, Any]) -> Any:
    """One panel per evaluator, its score against the truth's mean, coloured by MACs level; and, with two or
    more seeds, a panel of the truth's seed 0 against its seed 1 (what the ceiling measures)."""
    plt = pyplot()
    genotypes = report["genotypes"]
    panels: list[tuple[str, list[float | None], list[float | None], str]] = []
    truth_mean = [g["truth"]["mean"] for g in genotypes]
    for e in report["evaluators"]:
        scores = [g["scores"].get(e["label"], {}).get("score") for g in genotypes]
        title = f"{e['label']}\ntau {_num(e['kendall_tau'], 2)}, rho {_num(e['spearman_rho'], 2)}"
        panels.append((title, truth_mean, scores, "score"))
    if len(report["truth"]["seeds"]) >= 2:
        c = report["ceiling"] or {}
        panels.append((
            f"ceiling: truth seed vs seed\ntau {_num(c.get('kendall_tau'), 2)}",
            [g["truth"]["per_seed"][0] for g in genotypes], [g["truth"]["per_seed"][1] for g in genotypes],
            "truth, second seed",
        ))  # fmt: skip
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    levels = sorted({g["level"] for g in genotypes})
    cmap = plt.get_cmap("viridis")
    colors = {lv: cmap(i / max(1, len(levels) - 1)) for i, lv in enumerate(levels)}
    for ax, (title, xs, ys, ylabel) in zip(axes.flat, panels, strict=False):
        for lv in levels:
            pts = [
                (x, y) for x, y, g in zip(xs, ys, genotypes, strict=True)
                if g["level"] == lv and x is not None and y is not None
            ]  # fmt: skip
            if pts:
                ax.scatter(*zip(*pts, strict=True), color=colors[lv], label=f"MACs {lv:g}", s=24)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("truth: validation accuracy" + (" (mean over seeds)" if ylabel == "score" else ", first seed"))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{report['space']} / {report['dataset']['name']}: evaluators against the truth", fontsize=10)
    fig.tight_layout()
    return fig


def write_plot(report: Mapping[str, Any], path: Path) -> Path:
    return save_figure(figure(report), path, "png", flag="--out")
