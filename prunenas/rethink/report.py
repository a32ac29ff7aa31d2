"""The tables and the plot of a Rethinking study: its plan, its results (also in the format of Liu et
al.'s Table 1), and the files written to the study folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunenas.genotype import Genotype
from prunenas.report import format_table, genotype_label, human, save_figure
from prunenas.report import pyplot as _pyplot
from prunenas.rethink.config import LABELS
from prunenas.rethink.plan import Plan

if TYPE_CHECKING:
    from prunenas.rethink.run import RethinkOutcome

TABLE_JSON, TABLE_TXT, TABLE_PNG = "rethink.json", "rethink.txt", "rethink.png"
GENOTYPE_FILE, MASKS_FILE = "genotype.json", "masks.pt"


# -- tables and plot ---------------------------------------------------------------------------------------
def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def _human(n: float | None) -> str:
    return "?" if n is None else human(n)


def genotype_name(genotype: Genotype | None) -> str:
    if genotype is None:
        return "?"
    name = genotype.provenance.get("name")
    return f"{name} ({genotype.key})" if name else genotype.key


def paper_row(outcome: RethinkOutcome) -> dict[str, Any]:
    """One row of Liu et al.'s Table 1: dataset, model, unpruned, pruned model, fine-tuned, scratch-E/B."""
    plan = outcome.plan

    def cell(name: str) -> dict[str, Any]:
        a = outcome.arm(name)
        return {"mean": a.mean(), "std": a.std(), "n": len(a.values("test_acc")), "epochs": a.plan.epochs}

    return {
        "dataset": plan.dataset,
        "model": plan.space,
        "unpruned": cell("unpruned"),
        "pruned_model": genotype_name(plan.genotype),
        "fine_tuned": cell("finetune"),
        "scratch_e": cell("scratch-e"),
        "scratch_b": cell("scratch-b"),
    }


def format_plan(plan: Plan) -> str:
    g = plan.genotype
    pruned = next((a.macs for a in plan.arms if a.name == "scratch-e"), None)
    ratio = "" if pruned is None else f" ({_human(pruned)} MACs, {pruned / plan.reference_macs:.3f} of the reference)"
    lines = [
        f"rethink plan: space {plan.space} ({plan.kind}), pruned genotype {genotype_name(g)}{ratio} by "
        f"{plan.decided_by}; dataset {plan.dataset} "
        f"({'?' if plan.train_images is None else f'{plan.train_images:,}'} training images); budget {plan.budget}; "
        f"{len(plan.seeds)} seed(s) {', '.join(map(str, plan.seeds))}"
    ]
    rows = []
    for r in plan.rows():
        epochs = "?" if r["epochs"] is None else ("~" if r["estimated"] else "") + str(r["epochs"])
        runs = str(r["runs"]) if not r["shared_with"] else f"0 (= {LABELS[r['shared_with']]})"
        total = "-" if r["training_epochs"] is None else ("~" if r["estimated"] else "") + str(r["training_epochs"])
        rows.append(
            [
                r["label"],
                r["recipe"] or "?",
                epochs,
                runs,
                total,
                _human(r["image_epochs"]) if r["runs"] else "0",
                "?" if r["train_pflop"] is None else f"{r['train_pflop']:.2f}",
                _human(r["macs"]),
                r["what"],
            ]
        )
    t = plan.totals()
    rows.append(
        [
            "total",
            "",
            "",
            str(t["runs"]),
            str(t["training_epochs"]) + (" + ?" if t["unknown"] else ""),
            _human(t["image_epochs"]),
            "?" if t["train_pflop"] is None else f"{t['train_pflop']:.2f}",
            "",
            "",
        ]
    )
    header = ["arm", "recipe", "epochs", "runs", "train epochs", "image-epochs", "PFLOP", "MACs", "what"]
    lines.append(format_table(rows, header, "llrrrrrrl"))
    if plan.protocol:
        lines.append("protocol " + str(plan.protocol.get("protocol", "prunenas")) + ":")
        lines += [f"  {k}: {v}" for k, v in plan.protocol.items() if k != "protocol" and v is not None]
    notes = [f"reference: {_human(plan.reference_macs)} MACs; PFLOP = 6 x MACs executed per image x image-epochs"]
    if t["estimated"]:
        notes.append(f"~: estimated from the --macs-ratio target (met within 2%): {', '.join(t['estimated'])}")
    if t["unknown"]:
        notes.append(f"?: known once the proposer has decided: {', '.join(t['unknown'])} (not in the totals)")
    notes.append(f"study folder: {plan.study_dir}")
    return "\n".join(lines + notes)


def format_results(outcome: RethinkOutcome) -> str:
    plan = outcome.plan
    head = (
        f"rethink: {plan.space} / {genotype_name(plan.genotype)} on {plan.dataset}, budget {plan.budget}, "
        f"{len(plan.seeds)} seed(s); test accuracy of the final model (%), mean ± std over seeds"
    )
    rows = []
    selected = any(a.values("best_test_acc") for a in outcome.arms)
    for a in outcome.arms:
        n = len(a.values("test_acc"))
        stopped = sum(1 for r in a.runs if r.stopped)
        shared = "" if a.plan.runs_of == a.plan.name else f" (= {LABELS[a.plan.runs_of]} runs)"
        rows.append(
            [
                a.plan.label,
                _pct(a.mean(), a.std()),
                *([_pct(a.mean("best_test_acc"), a.std("best_test_acc"))] if selected else []),
                _pct(a.mean("val_acc"), a.std("val_acc")),
                f"{n}" + (f" ({stopped} stopped)" if stopped else ""),
                "-" if a.plan.epochs is None else str(a.plan.epochs),
                _human(a.plan.macs),
                _human(a.plan.params),
                a.plan.what + shared,
            ]
        )
    header = ["arm", "test acc", *(["best-epoch test*"] if selected else []), "val acc", "n", "epochs", "MACs"]
    table = format_table(rows, [*header, "params", "what"], "l" + "r" * (len(header) - 1) + "rl")
    if selected:
        table += (
            "\n* test-selected: the epoch with the best TEST accuracy, as the Rethinking code reports it; optimistic, "
            "shown for comparison with the paper (the final-epoch test acc is the honest number)"
        )
    p = paper_row(outcome)

    def cell(c: Mapping[str, Any]) -> str:
        return "-" if c["mean"] is None else f"{100 * c['mean']:.2f} (±{100 * (c['std'] or 0):.2f})"

    paper = format_table(
        [
            [
                p["dataset"],
                p["model"],
                cell(p["unpruned"]),
                p["pruned_model"],
                cell(p["fine_tuned"]),
                cell(p["scratch_e"]),
                cell(p["scratch_b"]),
            ]
        ],
        ["dataset", "model", "unpruned", "pruned model", "fine-tuned", "scratch-E", "scratch-B"],
        "lllllll",
    )
    epochs = (
        f"epochs: unpruned {outcome.arm('unpruned').plan.epochs or '-'} / fine-tuned "
        f"{outcome.arm('finetune').plan.epochs} / scratch-E {outcome.arm('scratch-e').plan.epochs} / scratch-B "
        f"{outcome.arm('scratch-b').plan.epochs}"
    )
    return "\n".join([head, table, "", "Liu et al. (ICLR 2019) Table 1 format:", paper, epochs])


# Arm names for a figure in a paper (the tables keep the short LABELS).
PLOT_NAMES = {
    "unpruned": "Unpruned",
    "finetune": "Fine-tuned",
    "scratch-e": "Scratch-E",
    "scratch-b": "Scratch-B",
    "mask": "Mask, fresh init",
    "shuffle": "Shuffled mask",
    "reinit": "Mask, other init",
    "invert": "Inverted scores",
}
_COLORS = {"unpruned": "tab:gray", "finetune": "tab:blue", "scratch-e": "tab:orange", "scratch-b": "tab:green"}


def arms_figure(outcome: RethinkOutcome) -> Any:
    """The figure of `plot_arms`: per arm, every seed's test accuracy (small dots) and their mean (a
    large point) with a ± std interval when the arm has more than one seed; no bars, so the axis need
    not start at zero. Epochs, MACs and the number of seeds are under each arm's name."""

    plt = _pyplot()
    arms = [a for a in outcome.arms if a.mean() is not None]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.75 * len(arms) + 1.0), 4.2))
    xs = list(range(len(arms)))
    several = False
    for x, a in zip(xs, arms, strict=True):
        values = [100 * v for v in a.values("test_acc")]
        mean = 100 * (a.mean() or 0.0)
        color = _COLORS.get(a.plan.name, "tab:purple")
        if len(values) > 1:
            several = True
            offsets = [0.12 * (k / (len(values) - 1) - 0.5) for k in range(len(values))]
            ax.scatter([x + o for o in offsets], values, s=12, color=color, alpha=0.45, zorder=2, linewidths=0)
            ax.errorbar([x], [mean], yerr=[100 * (a.std() or 0.0)], fmt="o", ms=7, color=color, capsize=5, zorder=3)
        else:
            ax.plot([x], [mean], "o", ms=7, color=color, zorder=3)
        ax.annotate(f"{mean:.2f}", (x, mean), xytext=(9, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels(
        [
            f"{PLOT_NAMES.get(a.plan.name, a.plan.label)}\n{a.plan.epochs or '-'} epochs, {_human(a.plan.macs)} MACs"
            f"\nn = {len(a.values('test_acc'))}"
            for a in arms
        ],
        fontsize=8,
    )
    ax.set_xlim(-0.6, len(arms) - 0.4)
    ax.margins(y=0.15)
    ax.set_ylabel("test accuracy (%)" + (": seeds and mean ± std" if several else ""))
    plan = outcome.plan
    name = genotype_label(plan.genotype) if plan.genotype is not None else "?"
    seeds = f"{len(plan.seeds)} seed{'s' if len(plan.seeds) != 1 else ''}"
    ax.set_title(f"{plan.space}, pruned: {name}, on {plan.dataset} ({seeds})", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_arms(outcome: RethinkOutcome, path: Path, fmt: str | None = None) -> Path:
    """The arms' test accuracies (see `arms_figure`), written to `path` (format: `fmt` or the suffix)."""

    return save_figure(arms_figure(outcome), path, fmt)


def write_outputs(outcome: RethinkOutcome) -> dict[str, str]:
    study = outcome.plan.study_dir
    files = {
        "table_json": str(study / TABLE_JSON),
        "table_txt": str(study / TABLE_TXT),
        "plot_png": str(study / TABLE_PNG),
        "genotype": str(study / GENOTYPE_FILE),
    }
    if (study / MASKS_FILE).exists():
        files["masks"] = str(study / MASKS_FILE)
    payload = {**outcome.to_dict(), "files": files}
    _atomic_text(study / TABLE_JSON, json.dumps(payload, indent=2) + "\n")
    _atomic_text(study / TABLE_TXT, format_results(outcome) + "\n")
    plot_arms(outcome, study / TABLE_PNG)
    return files


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
