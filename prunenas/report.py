"""Human-readable output: plain-text tables (and, as the tool grows, plots)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (k, M, G)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], align: str | None = None) -> str:
    """A plain-text table; `align` has one letter per column: l(eft) or r(ight), default by type."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if align is None:
        first = rows[0] if rows else [""] * len(headers)
        align = "".join("r" if isinstance(c, int | float) else "l" for c in first)

    def fmt(row: list[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend."""
    return _pyplot()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_training_curve(history: Sequence[Any], path: str | Path, title: str = "") -> Path:
    """Loss (left) and accuracy (right) per epoch: train, and validation where evaluated."""
    plt = _pyplot()
    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h.train_loss for h in history], label="train", color="tab:blue")
    val = [(h.epoch, h.val_loss, h.val_acc) for h in history if h.val_acc is not None]
    if val:
        ax_loss.plot([v[0] for v in val], [v[1] for v in val], "o-", label="validation", color="tab:orange", ms=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * h.train_acc for h in history], label="train", color="tab:blue")
    if val:
        ax_acc.plot([v[0] for v in val], [100 * v[2] for v in val], "o-", label="validation", color="tab:orange", ms=3)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_profile(space: Any, genotype: Any, path: str | Path) -> Path:
    """Bar chart of each gene's value against the reference (the papers' per-layer figures)."""
    plt = _pyplot()
    reference = space.reference()
    names = [g.name for g in space.genes]
    values = [float(genotype.genes[n]) for n in names]
    refs = [float(reference.genes[n]) for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names) + 2), 4))
    xs = range(len(names))
    if any(refs):  # against the reference's values (channels)
        ax.bar(xs, refs, color="lightgray", label="reference")
        ax.bar(xs, values, color="tab:blue", width=0.6, label=genotype.provenance.get("name") or "genotype")
    else:
        ax.bar(xs, values, color="tab:blue", label=genotype.provenance.get("name") or "genotype")
    ax.set_ylabel(space.value_label)
    if all(0.0 <= v <= 1.0 for v in values + refs):
        ax.set_ylim(0, 1.05)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    origin = genotype.provenance.get("proposer") or genotype.provenance.get("origin") or ""
    ax.set_title(f"{space.name} {genotype.key} {origin}".strip())
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_pareto(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    front: Sequence[int] = (),
    winners: Iterable[str] = (),
    title: str = "",
    x: Any = None,
    y: Any = None,
    limit: float | None = None,
    max_macs: int | None = None,
) -> Path:
    """One metric against another for every measured trial (default: validation accuracy against MACs);
    proposer-seeded trials are marked, the Pareto front is joined by a line, the retrained winners are
    circled, infeasible (never trained) candidates sit on the x axis, `limit` is drawn on x."""
    from prunenas.metrics import get_metric

    x = x or get_metric("macs")
    y = y or get_metric("val_acc")
    if limit is None and max_macs is not None and x.name == "macs":
        limit = float(max_macs)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs_all = [float(r[x.name]) for r in rows if r.get(x.name) is not None]
    sx = 1e6 if xs_all and max(xs_all) >= 1e6 else 1.0
    sy = 100.0 if y.name == "val_acc" else 1.0

    def px(r: Mapping[str, Any]) -> float:
        return float(r[x.name]) / sx

    def py(r: Mapping[str, Any]) -> float:
        return float(r[y.name]) * sy

    done = [r for r in rows if r.get(y.name) is not None and r.get(x.name) is not None and not r.get("infeasible")]
    sampled = [r for r in done if r.get("origin") != "proposer"]
    seeded = [r for r in done if r.get("origin") == "proposer"]
    if sampled:
        ax.scatter([px(r) for r in sampled], [py(r) for r in sampled], s=22, c="tab:blue", alpha=0.7, label="sampled")
    if seeded:
        ax.scatter([px(r) for r in seeded], [py(r) for r in seeded], s=60, marker="*", c="tab:orange",
                   label="proposer-seeded")  # fmt: skip
        for r in seeded:
            ax.annotate(str(r.get("proposer") or ""), (px(r), py(r)), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    infeasible = [r for r in rows if r.get("infeasible") and r.get(x.name) is not None]
    if infeasible:
        ax.scatter([px(r) for r in infeasible], [0] * len(infeasible), marker="x", c="gray",
                   label="infeasible (not trained)")  # fmt: skip
    on_front = sorted((r for r in done if r["number"] in set(front)), key=px)
    if on_front:
        ax.plot([px(r) for r in on_front], [py(r) for r in on_front], "-", c="tab:green", marker="s", ms=4,
                mfc="none", lw=1.2, label="Pareto front")  # fmt: skip
    keys = set(winners)
    chosen = [r for r in done if r.get("key") in keys]
    if chosen:
        ax.scatter([px(r) for r in chosen], [py(r) for r in chosen], s=160, facecolors="none",
                   edgecolors="tab:red", linewidths=1.5, label="winners (retrained)")  # fmt: skip
    if limit is not None:
        ax.axvline(limit / sx, ls="--", c="tab:red", lw=1, label=f"{x.name} limit")
    ax.set_xlabel(f"{x.label or x.name}" + (" (millions)" if sx == 1e6 else ""))
    ax.set_ylabel(f"{y.label or y.name}" + (" (%), proxy training" if y.name == "val_acc" else ""))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if done or infeasible:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
