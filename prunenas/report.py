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
    density = space.kind == "density"
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names) + 2), 4))
    xs = range(len(names))
    if density:
        ax.bar(xs, values, color="tab:blue", label="density")
        ax.set_ylabel("density (fraction of weights kept)")
        ax.set_ylim(0, 1.05)
    else:
        ax.bar(xs, refs, color="lightgray", label="reference")
        ax.bar(xs, values, color="tab:blue", width=0.6, label=genotype.provenance.get("name") or "genotype")
        ax.set_ylabel("channels" if space.kind == "channels" else "value")
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
    max_macs: int | None = None,
) -> Path:
    """Validation accuracy against MACs for every trained trial; proposer-seeded trials are marked,
    the Pareto front is joined by a line, the retrained winners are circled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    done = [r for r in rows if r.get("val_acc") is not None and r.get("macs") is not None]
    sampled = [r for r in done if r.get("origin") != "proposer"]
    seeded = [r for r in done if r.get("origin") == "proposer"]
    if sampled:
        ax.scatter([r["macs"] / 1e6 for r in sampled], [100 * r["val_acc"] for r in sampled], s=22, c="tab:blue",
                   alpha=0.7, label="sampled")  # fmt: skip
    if seeded:
        ax.scatter([r["macs"] / 1e6 for r in seeded], [100 * r["val_acc"] for r in seeded], s=60, marker="*",
                   c="tab:orange", label="proposer-seeded")  # fmt: skip
        for r in seeded:
            ax.annotate(str(r.get("proposer") or ""), (r["macs"] / 1e6, 100 * r["val_acc"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    infeasible = [r for r in rows if r.get("infeasible")]
    if infeasible:
        ax.scatter([r["macs"] / 1e6 for r in infeasible], [0] * len(infeasible), marker="x", c="gray",
                   label="infeasible (not trained)")  # fmt: skip
    on_front = sorted((r for r in done if r["number"] in set(front)), key=lambda r: r["macs"])
    if on_front:
        ax.plot([r["macs"] / 1e6 for r in on_front], [100 * r["val_acc"] for r in on_front], "-", c="tab:green",
                marker="s", ms=4, mfc="none",
                lw=1.2, label="Pareto front")  # fmt: skip
    keys = set(winners)
    chosen = [r for r in done if r.get("key") in keys]
    if chosen:
        ax.scatter([r["macs"] / 1e6 for r in chosen], [100 * r["val_acc"] for r in chosen], s=160,
                   facecolors="none", edgecolors="tab:red", linewidths=1.5, label="winners (retrained)")  # fmt: skip
    if max_macs is not None:
        ax.axvline(max_macs / 1e6, ls="--", c="tab:red", lw=1, label="MACs limit")
    ax.set_xlabel("MACs (millions, batch 1)")
    ax.set_ylabel("validation accuracy (%), proxy training")
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
