"""Helpers shared by the command handlers: options from the config tree, data, recipes, genotypes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prunenas.config import DataConfig, RunSettings
from prunenas.errors import SpaceError
from prunenas.prepare import fit_to_data, load_data
from prunenas.recipes import Recipe, check_kd, make_recipe, parse_assignments

__all__ = ["fit_to_data", "load_data"]  # the setup layer's, used by the command handlers


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def data_config(args: argparse.Namespace, **changes: Any) -> DataConfig:
    return DataConfig.from_args(args, **changes)


def run_settings(args: argparse.Namespace, **changes: Any) -> RunSettings:
    """The run flags, and $PRUNENAS_PROGRESS (how a run shows its progress), checked before any work."""
    from prunenas.progress import progress_style

    progress_style()
    return RunSettings.from_args(args, **changes)


def space_arg(value: str, name: str = "--space") -> Any:
    """The space a command-line value names; its errors name the argument that gave it (`name`: a flag, or
    the positional SPACE of `prunenas spaces show`), never a flag the command does not have."""
    from prunenas.spaces import get_space

    try:
        return get_space(value)
    except SpaceError as exc:
        if name == "--space":
            raise
        text = str(exc)
        prefix = f"--space {value}: "
        if text.startswith(prefix):
            text = f"{name} {value!r}: {text[len(prefix) :]}"
        raise SpaceError(text.replace("--space ", "space ")) from None  # a space it is built on, not a flag


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields given as flags, with --set KEY=VALUE pairs (checked against the Recipe fields)."""

    values = Recipe.values_from_args(args)
    extra = parse_assignments(getattr(args, "recipe_set", None), "--set")
    Recipe.check_values(extra, "--set", with_flag=True)  # checked here: errors name --set KEY and KEY's flag
    return {**extra, **values}


def recipe_from_args(args: argparse.Namespace, space: Any, genotype: Any) -> Any:
    from prunenas.cost import genotype_cost

    cost = genotype_cost(space, genotype)
    return make_recipe(
        args.recipe,
        space.recipe,
        macs=cost.macs,
        reference_macs=cost.reference_macs,
        scratch_b_cap=args.scratch_b_cap,
        overrides=recipe_overrides(args),
    )


def load_genotype(arg: str, space_arg: str | None = None) -> tuple[Any, Any]:
    """(space, validated genotype) from a genotype path, a shipped genotype name or a space name (its
    reference genotype), and an optional --space."""
    from prunenas.api import load_genotype as load
    from prunenas.spaces import get_space

    genotype = load(arg, space_arg)
    return get_space(space_arg or genotype.space), genotype


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """--option NAME=VALUE pairs; VALUE parsed as JSON when it can be (numbers, true/false, null)."""
    from prunenas.recipes import parse_assignments

    return parse_assignments(items, "--option", "NAME=VALUE (e.g. --option global_ranking=false)")


def target_from_args(args: argparse.Namespace) -> Any:
    from prunenas.prepare import target

    return target(args.ratio, args.macs_ratio, args.density, getattr(args, "latency_ratio", None))


def check_kd_flags(overrides: dict[str, Any], teacher: str | None) -> None:
    """Refuse distillation settings given without a teacher (`prunenas.recipes.check_kd`)."""

    check_kd(overrides, teacher)


def default_run_dir(
    root: str, space: Any, genotype: Any, recipe: Any, data: Any, seed: int, init: Any = None, teacher: Any = None
) -> Path:
    """runs/<root>/<space>-<key>-<recipe>-s<seed>-<run id>: the identity hash covers every result-changing
    setting (a teacher included), so changing any of them (e.g. --lr) gets a new folder."""
    from prunenas.train import run_folder_name, run_identity

    identity = run_identity(genotype, recipe, seed, data, init, teacher=teacher)
    return Path("runs") / root / run_folder_name(space, genotype, recipe, identity)
