"""Human-readable output: plain-text tables and plots (PNG, SVG or PDF: fit for a paper)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prunenas.errors import PrunenasError
from prunenas.metrics import get_metric
from prunenas.paths import ensure_parent, guarded

PLOT_FORMATS = ("png", "svg", "pdf")
PNG_DPI = 150


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


def plot_path(path: str | Path, fmt: str | None = None) -> tuple[Path, str]:
    """(file, format) of a plot: `fmt` (png, svg, pdf) or else the file's suffix, png without either.

    A file without a suffix gets the format's; a suffix of another image format than `fmt`, or of none
    that prunenas writes, is refused (PrunenasError)."""
    p = Path(path)
    suffix = p.suffix.lower().lstrip(".")
    if fmt is not None:
        fmt = str(fmt).lower().lstrip(".")
        if fmt not in PLOT_FORMATS:
            raise PrunenasError(f"plot format {fmt!r} is not one of {', '.join(PLOT_FORMATS)}; pass one of them")
        if suffix in PLOT_FORMATS and suffix != fmt:
            raise PrunenasError(
                f"plot file {str(p)!r} ends in .{suffix} but the plot format is {fmt}; "
                f"name the file .{fmt} or drop the format to write {suffix}"
            )
        return (p if suffix == fmt else p.with_name(p.name + "." + fmt)), fmt
    if suffix in PLOT_FORMATS:
        return p, suffix
    if not p.suffix:
        return p.with_name(p.name + ".png"), "png"
    raise PrunenasError(
        f"plot file {str(p)!r}: prunenas writes {', '.join(PLOT_FORMATS)} plots, not {p.suffix}; "
        "name the file .png, .svg or .pdf (or pass the format)"
    )


def save_figure(fig: Any, path: str | Path, fmt: str | None = None, flag: str = "--out") -> Path:
    """Write `fig` as `plot_path` says (PNG at PNG_DPI; fonts embedded as TrueType in PDF, as paths in
    SVG; no creation date, so a rerun writes the same file), close it and return the file written."""
    plt = _pyplot()
    out, fmt = plot_path(path, fmt)
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    try:
        ensure_parent(out, flag)  # `flag` names the option that chose the path, for the one-line error
        rc = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path", "svg.hashsalt": "prunenas"}
        with plt.rc_context(rc):
            guarded(lambda: fig.savefig(out, format=fmt, dpi=PNG_DPI, metadata=metadata), out, flag)
    finally:
        plt.close(fig)
    return out


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend."""
    return _pyplot()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def training_curve_figure(history: Sequence[Any], title: str = "") -> Any:
    """The figure of `plot_training_curve`: loss (left) and accuracy (right) per epoch, train and
    validation where evaluated; whole-number epoch ticks, markers so that one epoch is a visible point."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [h.epoch for h in history]
    marker = "o" if len(epochs) <= 40 else None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    val = [(h.epoch, h.val_loss, h.val_acc) for h in history if h.val_acc is not None]
    for ax, train_y, val_y, ylabel in (
        (ax_loss, [h.train_loss for h in history], [v[1] for v in val], "cross-entropy"),
        (ax_acc, [100 * h.train_acc for h in history], [100 * v[2] for v in val], "accuracy (%)"),
    ):
        ax.plot(epochs, train_y, label="train", color="tab:blue", marker=marker, ms=4)
        if val:
            ax.plot([v[0] for v in val], val_y, label="validation", color="tab:orange", marker="s", ms=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(set(epochs)) == 1:  # one epoch: centre it instead of a degenerate axis
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(alpha=0.3)
        if history:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_training_curve(history: Sequence[Any], path: str | Path, title: str = "", fmt: str | None = None) -> Path:
    """Loss (left) and accuracy (right) per epoch, written to `path` (format: `fmt` or the suffix)."""
    return save_figure(training_curve_figure(history, title), path, fmt)


def profile_figure(space: Any, genotype: Any) -> Any:
    """The figure of `plot_profile`: each gene's value against the reference."""
    plt = _pyplot()
    reference = space.reference()
    names = [g.name for g in space.genes]
    values = [float(genotype.genes[n]) for n in names]
    refs = [float(reference.genes[n]) for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names) + 2), 4))
    xs = range(len(names))
    label = genotype_label(genotype)
    if any(refs):  # against the reference's values (channels)
        ax.bar(xs, refs, color="lightgray", label="reference (unpruned)")
        ax.bar(xs, values, color="tab:blue", width=0.6, label=label)
    else:
        ax.bar(xs, values, color="tab:blue", label=label)
    ax.set_ylabel(space.value_label)
    if all(0.0 <= v <= 1.0 for v in values + refs):
        ax.set_ylim(0, 1.05)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_title(f"{space.name}: {label}" + ("" if label == genotype.key else f" ({genotype.key})"))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_profile(space: Any, genotype: Any, path: str | Path, fmt: str | None = None) -> Path:
    """Bar chart of each gene's value against the reference (the papers' per-layer figures)."""
    return save_figure(profile_figure(space, genotype), path, fmt, flag="--plot")


def target_text(target: Any) -> str:
    """`0.5` from a target {"kind", "value"} (or a bare value); "?" when there is none."""
    value = target.get("value") if isinstance(target, Mapping) else target
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return f"{value:g}"


def genotype_label(genotype: Any) -> str:
    """A name for people: the genotype's `name`, else `proposer@target` (e.g. `l1@0.5`), else its origin
    or key."""
    prov = genotype.provenance
    if prov.get("name"):
        return str(prov["name"])
    if prov.get("proposer"):
        return f"{prov['proposer']}@{target_text(prov.get('target'))}"
    return str(prov.get("origin") or genotype.key)


def seeded_label(row: Mapping[str, Any]) -> str:
    """`l1@0.5`: the proposer and target of a proposer-seeded trial row."""
    return f"{row.get('proposer') or '?'}@{target_text(row.get('target'))}"


def pareto_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    front: Sequence[int] = (),
    winners: Iterable[str] = (),
    title: str = "",
    x: Any = None,
    y: Any = None,
    limit: float | None = None,
    max_macs: int | None = None,
    reference: Mapping[str, float] | None = None,
    floor: float | None = None,
    reference_label: str = "reference (unpruned)",
    judged_by: str = "proxy training",
) -> Any:
    """The figure of `plot_pareto`."""
    x = x or get_metric("macs")
    y = y or get_metric("val_acc")
    if limit is None and max_macs is not None and x.name == "macs":
        limit = float(max_macs)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ref_xy = ref_x = None
    if reference is not None and reference.get(x.name) is not None:
        ref_x = float(reference[x.name])
        if reference.get(y.name) is not None:
            ref_xy = (ref_x, float(reference[y.name]))
    xs_all = [float(r[x.name]) for r in rows if r.get(x.name) is not None] + ([ref_x] if ref_x is not None else [])
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
                   label="proposer-seeded (proposer@target)")  # fmt: skip
        for r in seeded:
            ax.annotate(seeded_label(r), (px(r), py(r)), fontsize=7, xytext=(3, 3), textcoords="offset points")
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
    if ref_xy is not None:
        rx, ry = ref_xy[0] / sx, ref_xy[1] * sy
        ax.scatter([rx], [ry], s=90, marker="D", c="black", zorder=5, label=reference_label)
        ax.annotate("reference", (rx, ry), fontsize=7, xytext=(4, -10), textcoords="offset points")
    elif ref_x is not None:  # its cost is known, its score is not: where it sits on x
        ax.axvline(ref_x / sx, ls="-.", c="black", lw=1, label=f"{reference_label}, not judged")
    if limit is not None:
        ax.axvline(limit / sx, ls="--", c="tab:red", lw=1, label=f"{x.name} limit")
    if floor is not None:
        ax.axvline(floor / sx, ls=":", c="tab:red", lw=1, label=f"{x.name} lower limit")
    ax.set_xlabel(f"{x.label or x.name}" + (" (millions)" if sx == 1e6 else ""))
    ax.set_ylabel(f"{y.label or y.name}" + (f" (%), {judged_by}" if y.name == "val_acc" else ""))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if done or infeasible or ref_x is not None:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


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
    reference: Mapping[str, float] | None = None,
    floor: float | None = None,
    fmt: str | None = None,
    reference_label: str = "reference (unpruned)",
    judged_by: str = "proxy training",
) -> Path:
    """One metric against another for every measured trial (default: validation accuracy against MACs);
    proposer-seeded trials are marked and named `proposer@target`, the Pareto front is joined by a line,
    the retrained winners are circled, infeasible (never trained) candidates sit on the x axis, `limit` (and
    a lower limit, `floor`) is drawn on x, and `reference` ({metric name: value} of the unpruned model, with
    the x and y metrics) is a point of its own (`reference_label`), or a vertical line where only its x is
    known; `judged_by` says on the accuracy axis how the candidates were scored. Written to `path` (format:
    `fmt` or the suffix)."""
    fig = pareto_figure(
        rows, front=front, winners=winners, title=title, x=x, y=y, limit=limit, max_macs=max_macs,
        reference=reference, floor=floor, reference_label=reference_label, judged_by=judged_by,
    )  # fmt: skip
    return save_figure(fig, path, fmt)
