"""Which recipe learns in the few epochs of a smoke search? The spaces' own CIFAR recipe (batch 64, lr 0.1,
steps at 50/75%) against the `short` preset the smoke budget trains with (batch 32, lr 0.02, cosine after
half an epoch of warm-up), and two settings between them, on the embedded digits: the validation accuracy
of 3-epoch proxies and of an 8-epoch scratch-e final (the smoke budget's lengths), seed 0, one thread.

    python benchmarks/smoke_recipe.py --out benchmarks/results/DATE-cpu-smoke-recipe

Accuracy, not time, is what this measures (the seconds are recorded beside it). Nothing here runs in the tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import common

#: The recipe settings compared, laid over the space's [recipe] (the proxy and scratch-e recipes' own).
SETTINGS: dict[str, dict[str, Any]] = {
    "space's recipe": {},
    "batch 32": {"batch_size": 32},
    "cosine, 1 warm-up epoch": {"schedule": "cosine", "warmup_epochs": 1.0},
    "short preset": {"preset": "short"},
}
#: (space, genotype: reference or the uniform proposal at 0.5x MACs, recipe, epochs)
CASES = (
    ("resnet56_channels", "reference", "proxy", 3),
    ("resnet56_channels", "uniform@0.5", "proxy", 3),
    ("resnet56_channels", "uniform@0.5", "scratch-e", 8),
    ("resnet20_channels", "uniform@0.5", "proxy", 3),
    ("vgg16_channels", "uniform@0.5", "proxy", 3),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_threads(ap, 1)
    common.add_out(ap, folder=False)
    args = ap.parse_args(argv)

    import torch

    import prunenas as pn
    from prunenas.config import DataConfig, RunSettings
    from prunenas.prepare import fit_to_data
    from prunenas.recipes import make_recipe
    from prunenas.train import train

    torch.set_num_threads(args.threads)
    data = pn.load_data(DataConfig(dataset="digits"), seed=0)
    settings = RunSettings(seed=0, device="cpu", quiet=True, plot=False, threads=args.threads)
    rows = []
    for space_name, which, recipe_name, epochs in CASES:
        space, _ = fit_to_data(pn.get_space(space_name), image_size=None, quiet=True, dataset="digits")
        genotype = (
            space.reference() if which == "reference" else pn.propose(space, "uniform", macs_ratio=0.5, data=data)
        )
        for label, over in SETTINGS.items():
            recipe = make_recipe(recipe_name, space.recipe, overrides={**over, "epochs": epochs})
            start = time.perf_counter()
            result = train(space, genotype, data, recipe, settings, evaluate_test=False)
            row = {
                "space": space_name, "genotype": which, "recipe": recipe_name, "epochs": epochs, "setting": label,
                "batch_size": recipe.batch_size, "lr": recipe.lr, "schedule": recipe.schedule,
                "warmup_epochs": recipe.warmup_epochs, "val_acc": result.val_acc,
                "seconds": round(time.perf_counter() - start, 1),
            }  # fmt: skip
            rows.append(row)
            print(f"{space_name} {which} {recipe_name} {epochs} ep, {label}: val {result.val_acc:.3f}", flush=True)
    info = {
        "date": common.stamp(), "cpu": common.cpu_text(), "command": common.command_line(__file__, argv),
        "train_images": len(data.train), "val_images": len(data.val), "rows": rows,
    }  # fmt: skip
    lines = [
        f"# The smoke budget's recipe on the digits ({info['date'][:10]})",
        "",
        f"Machine: {info['cpu']}. Command: `{info['command']}`. {info['train_images']} training and "
        f"{info['val_images']} validation images; seed 0; validation accuracy at the end of the run.",
        "",
        "| space | genotype | run | " + " | ".join(SETTINGS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in SETTINGS) + " |",
    ]
    for space_name, which, recipe_name, epochs in CASES:
        accs = [
            f"{r['val_acc']:.3f}"
            for label in SETTINGS
            for r in rows
            if (r["space"], r["genotype"], r["recipe"], r["epochs"], r["setting"])
            == (space_name, which, recipe_name, epochs, label)
        ]
        lines.append(f"| {space_name} | {which} | {recipe_name} {epochs} ep | " + " | ".join(accs) + " |")
    common.write_results(common.results_stem(args.out, "smoke-recipe"), info, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
