"""`prunenas fidelity`: how well evaluators rank candidates as from-scratch training does (`prunenas.fidelity`).

Its parser is built from `FidelitySettings`, `DataConfig` and `RunSettings` without importing torch; the study
loads when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from prunenas.config import DataConfig, RunSettings
from prunenas.fidelity.settings import FidelitySettings

Handler = Callable[[argparse.Namespace], int]


def add_command(command: Callable[..., argparse.ArgumentParser], handler: Handler) -> None:
    """Add `prunenas fidelity` with `command(name, help, *examples)`; `handler` runs it (`run`)."""
    p = command(
        "fidelity", "measure how well evaluators rank candidates as real training does: Kendall tau and Spearman "
        "rho of their scores against from-scratch training over seeds, with bootstrap intervals and the truth's "
        "own seed-to-seed agreement as the ceiling",
        "prunenas fidelity --space resnet20_channels --dataset digits --evaluators scratch:epochs=2,inherit-bn,"
        "inherit-bn:finetune_epochs=1 --pretrain-epochs 10 --genotypes 16 --truth-epochs 20 --seeds 2",
        "prunenas fidelity --space my_space.toml --dataset digits --train-subset 512 --genotypes 6 --truth-epochs 3 "
        "--evaluators scratch:epochs=1 --json    # minutes on a CPU",
    )  # fmt: skip
    p.add_argument("--space", required=True, help="space name or .toml path")
    FidelitySettings.add_arguments(p)
    p.add_argument("--json", action="store_true", help="print fidelity.json instead of a table")
    DataConfig.add_arguments(p)
    # every run validates only at its end (ranked on the final model) and never touches the test split
    RunSettings.add_arguments(p, skip=("eval_every", "test_every_epoch"))
    p.set_defaults(handler=handler)


def run(args: argparse.Namespace) -> int:
    from prunenas.cli.common import data_config, print_json, run_settings, space_arg
    from prunenas.fidelity.report import table
    from prunenas.fidelity.study import run_fidelity

    settings: Any = FidelitySettings.from_args(args)
    data_cfg = data_config(args)
    run_cfg = run_settings(args)
    space = space_arg(args.space)
    outcome = run_fidelity(space, data_cfg, run_cfg, settings)
    if args.json:
        print_json(outcome.report)
    else:
        print(table(outcome.report))
    return 0
