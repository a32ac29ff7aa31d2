"""The search-quality benchmark's report (benchmarks/search_quality.py): the Markdown results, what is and is
not significant at the run's scale, and the plot of accuracy against MACs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search_quality_common import ARM_TITLE, ARMS, fmt_s, pct

COLORS = {"proposers": "tab:orange", "search-tpe": "tab:blue", "search-random": "tab:green"}


# -- writing ------------------------------------------------------------------------------------------------
def markdown(res: dict[str, Any]) -> str:
    sz, arms = res["sizes"], res["arms"]
    S = sz["train_subset"]
    m = res["machine"]
    gpu = "a CUDA GPU present (unused)" if m["cuda"] else "no GPU"
    lines = [
        "# Does the search beat its proposers? (resnet20_channels, CPU scale)",
        "",
        f"- date: {res['date']} (finished {res['finished']}; wall {fmt_s(res['wall_s'])})",
        f"- machine: {m['cpus']}-core CPU, {gpu}; torch {m['torch']} with {m['torch_threads']} thread(s); "
        f"{m['platform']}",
        f"- command: `{res['command']}`",
        f"- dataset: {res['dataset']['name']}"
        + (" (CIFAR-10, JPEG q75 copy)" if res["dataset"]["name"].startswith("cifar10") else "")
        + f": {S} training images (seeded subset), {sz['val']} validation, {sz['test']} test (final models only)",
        "",
        "## Sizes and why",
        "",
        f"- proposals: {', '.join(sz['proposers'])} at MACs ratios {', '.join(f'{v:g}' for v in sz['levels'])} "
        f"= {sz['proposals']} genotypes; reference for l1/fpgm: {sz['pretrain_epochs']}-epoch proxy pretrain",
        f"- candidates per arm: {sz['candidates_per_arm']}, each a {sz['proxy_epochs']}-epoch proxy run "
        f"({sz['proxy_epochs'] * S:,} image-epochs)",
        f"- final: scratch-e, {sz['final_epochs']} epochs, seeds {', '.join(map(str, sz['seeds']))}; "
        f"selection window +-{sz['window']:.0%} of the target MACs",
        f"- proxy fidelity: {sz['fidelity_genotypes']} genotypes x proxy lengths "
        f"{', '.join(map(str, sz['fidelity_epochs']))} epochs vs the {sz['final_epochs']}-epoch recipe",
        f"- planned: {res['plan']['runs']} runs, {res['plan']['image_epochs'] / 1e6:.2f}M image-epochs; measured "
        f"{res['measured_images_per_s']['pretrain_reference']:.0f} img/s training the full-width reference, "
        f"{(res['measured_images_per_s']['overall_trained_image_epochs_per_wall_s'] or 0):.0f} image-epochs per "
        "wall second over the whole run (validation, proposals and bookkeeping included)",
    ]
    if sz.get("why"):
        lines.append(f"- why: {sz['why']}")
    lines += [
        "",
        "Arms (same number of trained candidates, so the same proxy compute): **a** the proposals plus extra "
        "draws of the random proposer; **b** prunenas search, TPE on val_acc, one study per level seeded with "
        "that level's proposals; **c** the same studies with the random sampler and the same seeds. The seeded "
        "trials are the same runs as arm a's proposals, trained once and charged to every arm. "
        + (
            f"Each study is limited to its level's window on both sides (`--min macs=L(1-w)x --max macs=L(1+w)x`, "
            f"w = {sz['window']:g}); draws outside it are recorded infeasible untrained (MACs counted, no "
            "training), and a study is extended until it has trained its share of candidates (or drawn "
            f"{sz.get('trial_cap')}x that many). Draws per study (drawn / trained): "
            + ", ".join(f"{k} {v['drawn']}/{v['trained']}" for k, v in res.get("search_draws", {}).items())
            + "."
            if sz.get("band")
            else "Each study is limited above only (`--max macs=L(1+w)x`)."
        ),
        "",
        "## Final models (test accuracy %, mean +- std over seeds)",
        "",
        "| arm | " + " | ".join(f"MACs {lv:g}" for lv in sz["levels"]) + " | proxy front hypervolume |",
        "| --- | " + " | ".join("---:" for _ in sz["levels"]) + " | ---: |",
    ]
    for arm in ARMS:
        cells = []
        for lv in sz["levels"]:
            e = arms[arm]["levels"][str(lv)]
            cells.append("none in window" if e is None else f"{pct(e['test_mean'])} +- {pct(e['test_std'])}")
        lines.append(f"| {ARM_TITLE[arm]} | " + " | ".join(cells) + f" | {arms[arm]['proxy_hypervolume']:.4f} |")
    lines += [
        "",
        "Picked genotypes (best proxy validation accuracy within the window):",
        "",
        "| arm | level | genotype | from | MACs ratio | proxy val % | final val % | test % per seed |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for arm in ARMS:
        for lv in sz["levels"]:
            e = arms[arm]["levels"][str(lv)]
            if e is None:
                lines.append(f"| {ARM_TITLE[arm]} | {lv:g} | - | none within the window | | | | |")
                continue
            src = f"{e['proposer']} proposal" if e["proposer"] else e["origin"]
            lines.append(
                f"| {ARM_TITLE[arm]} | {lv:g} | {e['key']} | {src} | {e['macs_ratio']:.3f} | "
                f"{pct(e['proxy_val_acc'])} | {pct(e['val_mean'])} | {', '.join(pct(t) for t in e['test_accs'])} |"
            )
    lines += [
        "",
        "## Compute per arm (image-epochs)",
        "",
        "| arm | candidates | seeded | in windows | proxy | pretrain | finals | total | proxy trained in this arm |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm in ARMS:
        a, c = arms[arm], arms[arm]["compute"]
        win = ", ".join(f"{k}: {v}" for k, v in a["candidates_in_windows"].items())
        lines.append(
            f"| {ARM_TITLE[arm]} | {a['candidates']} | {a['seeded']} | {win} | {c['proxy_image_epochs']:,} | "
            f"{c['pretrain_image_epochs']:,} | {c['final_image_epochs']:,} | {c['total_image_epochs']:,} | "
            f"{c['proxy_trained_here_image_epochs']:,} |"
        )
    lines += [
        "",
        "Finals of a genotype picked by several arms are the same runs (charged to each arm). "
        f"The searches validate every epoch ({sz['val']:,} images), the benchmark's own runs only at the end, so "
        "wall time is not proportional to image-epochs.",
        "",
        "## Proxy fidelity",
        "",
        f"Kendall tau-b of validation accuracy against the {res['fidelity']['long_epochs']}-epoch recipe's, over "
        f"{res['fidelity']['genotypes']} genotypes (standard deviation of tau under no association: "
        f"{res['fidelity']['tau_se_independent']:.2f}).",
        "",
        "| ranking by | image-epochs per genotype | Kendall tau |",
        "| --- | ---: | ---: |",
    ]
    for t in res["fidelity"]["table"]:
        lines.append(f"| proxy, {t['epochs']} epoch(s) | {t['image_epochs_per_genotype']:,} | {t['tau']:.3f} |")
    lines.append(f"| MACs alone | 0 | {res['fidelity']['macs_tau']:.3f} |")
    cheapest = res["fidelity"]["cheapest_good_epochs"]
    lines += [
        "",
        f"Cheapest proxy that ranks well ({res['fidelity']['rule']}): "
        + (f"{cheapest} epoch(s)." if cheapest else "none (no proxy length ranks better than MACs alone)."),
        "",
        "## What is and is not significant at this scale",
        "",
    ]
    lines += significance_lines(res)
    return "\n".join(lines) + "\n"


def significance_lines(res: dict[str, Any]) -> list[str]:
    n_seeds = len(res["sizes"]["seeds"])
    out = [
        f"- Each final number is the mean of {n_seeds} seeds of one genotype: with {n_seeds} seeds a standard "
        "deviation is itself very uncertain and only large gaps can be told apart. Welch's t-test p values "
        "are listed for reference, not as evidence.",
    ]
    for c in res["comparisons"]:
        x, y = c["arms"]
        head = f"- MACs {c['level']:g}, {ARM_TITLE[x]} vs {ARM_TITLE[y]}: "
        if c.get("missing"):
            out.append(head + "not comparable (an arm had no candidate within the window).")
        elif c["same_genotype"]:
            out.append(head + "the same genotype was picked; identical runs, no difference by construction.")
        else:
            verdict = (
                "larger than the sum of both standard deviations"
                if c["beyond_sum_of_stds"]
                else "larger than either standard deviation but not their sum"
                if c["beyond_both_stds"]
                else "within one standard deviation: not distinguishable"
            )
            out.append(
                head + f"{100 * c['diff']:+.2f} points ({verdict}; Welch t {c['welch_t']:.2f}, p {c['welch_p']:.2f})."
            )
    fid = res["fidelity"]
    out.append(
        f"- Proxy fidelity: with {fid['genotypes']} genotypes a tau differs from chance only beyond about "
        f"{2 * fid['tau_se_independent']:.2f} (two standard deviations); differences between proxy lengths "
        "smaller than that are noise. Part of any tau over a wide MACs range is the size effect (MACs alone "
        "row)."
    )
    hv = {arm: res["arms"][arm]["proxy_hypervolume"] for arm in ARMS}
    out.append(
        "- Proxy Pareto fronts (one seed, proxy accuracy): hypervolume "
        + ", ".join(f"{ARM_TITLE[a]} {v:.4f}" for a, v in hv.items())
        + "; these are single noisy proxy runs, and arm b and c's fronts contain their seeds, i.e. arm a's "
        "proposals."
    )
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sz = res["sizes"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax0, ax1, ax2 = axes
    for arm in ARMS:
        a = res["arms"][arm]
        color = COLORS[arm]
        pts = [(c["macs_ratio"], 100 * c["val_acc"]) for c in a["candidate_list"]]
        if pts:
            ax0.scatter(*zip(*pts, strict=True), s=18, alpha=0.45, color=color, label=f"{ARM_TITLE[arm]} candidates")
        front = [(x, 100 * y) for x, y in a["proxy_front"]]
        if front:
            ax0.step(*zip(*front, strict=True), where="post", color=color, lw=1.6)
        for k, lv in enumerate(sz["levels"]):
            e = a["levels"][str(lv)]
            if e is None:
                continue
            offset = (ARMS.index(arm) - 1) * 0.006
            ax1.errorbar(
                e["macs_ratio"] + offset, 100 * e["test_mean"], yerr=100 * (e["test_std"] or 0), fmt="o",
                color=color, capsize=4, label=ARM_TITLE[arm] if k == 0 else None,
            )  # fmt: skip
            ax0.scatter([e["macs_ratio"]], [100 * e["proxy_val_acc"]], s=80, facecolors="none", edgecolors=color)
    for lv in sz["levels"]:
        for ax in (ax0, ax1):
            ax.axvspan(lv * (1 - sz["window"]), lv * (1 + sz["window"]), color="0.9", zorder=0)
    ax0.set_title(f"proxy candidates ({sz['proxy_epochs']} ep) and Pareto fronts; circles: picks")
    ax0.set_xlabel("MACs / reference")
    ax0.set_ylabel("validation accuracy %")
    ax0.legend(fontsize=7)
    ax1.set_title(f"retrained picks: test acc, mean +- std over {len(sz['seeds'])} seeds ({sz['final_epochs']} ep)")
    ax1.set_xlabel("MACs / reference")
    ax1.set_ylabel("test accuracy %")
    ax1.legend(fontsize=7)
    fid = res["fidelity"]
    for t in fid["table"]:
        xs = [100 * r["val"][str(t["epochs"])] for r in fid["rows"] if r["val_long"] is not None]
        ys = [100 * r["val_long"] for r in fid["rows"] if r["val_long"] is not None]
        ax2.scatter(xs, ys, s=18, label=f"proxy {t['epochs']} ep (tau {t['tau']:.2f})")
    ax2.set_title(f"proxy fidelity: {fid['genotypes']} genotypes")
    ax2.set_xlabel("proxy validation accuracy %")
    ax2.set_ylabel(f"{fid['long_epochs']}-epoch validation accuracy %")
    ax2.legend(fontsize=7)
    fig.suptitle(f"{res['space']} on {res['dataset']['name']}, {sz['train_subset']} training images")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
