"""Human-readable output: plain-text tables (and, as the tool grows, plots)."""

from __future__ import annotations

from collections.abc import Sequence
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
