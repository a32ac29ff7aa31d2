"""`prunenas supernet`: train the weight-sharing supernet of a channel space ahead of a search judged by
`--evaluator supernet` (or read it back), and print its validation accuracy at the widest and narrowest
widths. Its parser is built from the config tree; torch loads only when the command runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunenas.config import DataConfig, RunSettings
from prunenas.evaluators.supernet import DEFAULT_ROOT, SupernetOptions
from prunenas.recipes import KD_FIELDS, Recipe


def add_command(command: Callable[..., argparse.ArgumentParser], handler: Callable[[argparse.Namespace], int]) -> None:
    """The `supernet` subcommand's parser (`command` makes one with its help and examples)."""
    p = command(
        "supernet", "train a channel space's weight-sharing supernet once (sandwich rule), for --evaluator supernet",
        "prunenas supernet --space resnet56_channels --supernet-epochs 30 --data-dir CIFAR_DIR",
        "prunenas supernet --space resnet20_channels --dataset digits --supernet-epochs 2    # a CPU check",
    )  # fmt: skip
    p.add_argument("--space", required=True, help="space name or .toml path (a channel space)")
    p.add_argument(
        "--out", metavar="DIR",
        help=f"the supernet's folder (default {DEFAULT_ROOT}/SPACE-RUNID); an existing one resumes or is read back",
    )  # fmt: skip
    p.add_argument("--fresh", action="store_true", help="discard a supernet checkpoint in the folder and start over")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    SupernetOptions.add_arguments(p, prefix="supernet")
    title = "recipe (the proxy recipe's settings; its epochs are --supernet-epochs)"
    Recipe.add_arguments(p, skip=("epochs", "bn_l1", *KD_FIELDS), title=title)
    DataConfig.add_arguments(p)
    RunSettings.add_arguments(p, only=("device", "seed", "channels_last", "amp", "threads"))
    p.set_defaults(handler=handler)


def run(args: argparse.Namespace) -> int:
    from prunenas.cli.common import (
        data_config,
        fit_to_data,
        load_data,
        pct,
        print_json,
        recipe_overrides,
        run_settings,
        space_arg,
    )
    from prunenas.config.fields import _under
    from prunenas.cost import genotype_cost
    from prunenas.errors import PrunenasError
    from prunenas.evaluators.supernet import Supernet
    from prunenas.evaluators.supernet_masks import smallest_genotype, widest_genotype
    from prunenas.evaluators.supernet_train import (
        SUPERNET_CHECKPOINT,
        supernet_folder,
        supernet_identity,
        train_supernet,
    )
    from prunenas.recipes import make_recipe
    from prunenas.report import format_table, human

    space = space_arg(args.space)
    with _under("supernet"):  # its messages name the flags as they are: --supernet-epochs
        options = SupernetOptions.from_dict(SupernetOptions.values_from_args(args, prefix="supernet"))
    why_not = Supernet(options).serves(space)
    if why_not:
        raise PrunenasError(f"prunenas supernet cannot train --space {space.name}: {why_not}")
    data_cfg = data_config(args)
    space, _ = fit_to_data(space, None, image_size=data_cfg.image_size, dataset=data_cfg.dataset)
    settings = run_settings(args)
    recipe = make_recipe("proxy", space.recipe, overrides={**recipe_overrides(args), "epochs": options.epochs})
    data = load_data(data_cfg, settings.seed)
    identity = supernet_identity(space, data, recipe, settings.seed, options.random_widths)
    root = Path(options.dir) if options.dir else DEFAULT_ROOT
    folder = Path(args.out) if args.out else supernet_folder(root, space, identity)
    if args.fresh and (folder / SUPERNET_CHECKPOINT).is_file():
        (folder / SUPERNET_CHECKPOINT).unlink()
    net = train_supernet(
        space, data, recipe, settings, seed=settings.seed, random_count=options.random_widths, folder=folder
    )
    rows: dict[str, Any] = {}
    for label, genotype in (("widest", widest_genotype(space)), ("smallest", smallest_genotype(space))):
        cost = genotype_cost(space, genotype, num_classes=data.num_classes)
        rows[label] = {
            "genotype": genotype.key, "val_acc": net.score(genotype, options.images), "macs": cost.macs,
            "params": cost.params,
        }  # fmt: skip
    trained = "read back (already trained)" if net.trained_now == 0 else f"trained {net.trained_now} epoch(s) now"
    if args.json:
        print_json({
            "out": str(folder), "space": space.name, "epochs": recipe.epochs, "trained_now": net.trained_now,
            "history": net.history, "options": options.to_dict(), "identity": identity, **rows,
        })  # fmt: skip
        return 0
    table = [
        ["supernet", str(folder)],
        ["space", space.name],
        ["recipe", f"{recipe.name}: {recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr}; {trained}"],
        ["dataset", f"{data.name}: {len(data.train)} train / {len(data.val)} val"],
        *(
            [f"val accuracy, {label} widths", f"{pct(r['val_acc'])} ({human(r['macs'])} MACs)"]
            for label, r in rows.items()
        ),
    ]
    print(format_table(table, ["", ""], "ll"))
    return 0
