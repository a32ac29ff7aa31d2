"""Helpers shared by the command handlers: options from the config tree, data, recipes, genotypes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prunenas.config import DataConfig, RunSettings
from prunenas.errors import PrunenasError


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
    from prunenas.errors import SpaceError
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


def load_data(cfg: DataConfig, seed: int) -> Any:
    from prunenas.api import load_data as load

    return load(cfg, seed=seed)


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields given as flags, with --set KEY=VALUE pairs (checked against the Recipe fields)."""
    from prunenas.recipes import Recipe, parse_assignments

    values = Recipe.values_from_args(args)
    extra = parse_assignments(getattr(args, "recipe_set", None), "--set")
    Recipe.check_values(extra, "--set", with_flag=True)  # checked here: errors name --set KEY and KEY's flag
    return {**extra, **values}


def recipe_from_args(args: argparse.Namespace, space: Any, genotype: Any) -> Any:
    from prunenas.cost import genotype_cost
    from prunenas.recipes import make_recipe

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


def fit_to_data(
    space: Any, genotype: Any = None, *, quiet: bool = False, image_size: int | None = None
) -> tuple[Any, Any]:
    """A traced space named by its factory at the pixel size the model sees (`image_size`, default the
    decoded size 32), the genotype moved over with its genes unchanged, with a notice; any other space
    unchanged (a note when it counts MACs at another size)."""
    from prunenas.data import DEFAULT_IMAGE_SIZE
    from prunenas.spaces.traced import space_for_image_size

    size = image_size or DEFAULT_IMAGE_SIZE
    fitted = space_for_image_size(space, size)
    if fitted is space:
        if not quiet and space.input_shape[1] != size:
            print(
                f"note: --space {space.name} counts MACs at {space.input_shape[1]} px but the model sees {size} px "
                f"(it runs at any size; MACs grow by about ({size}/{space.input_shape[1]})^2)",
                file=sys.stderr,
            )
        return space, genotype
    if genotype is not None:
        from prunenas.genotype import Genotype

        genotype = fitted.validate(Genotype(fitted.name, dict(genotype.genes), genotype.provenance))
    if not quiet:
        print(
            f"note: the model sees {size}x{size} pixels, so --space {space.name} runs as {fitted.name} (MACs counted "
            "at that size)",
            file=sys.stderr,
        )
    return fitted, genotype


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """--option NAME=VALUE pairs; VALUE parsed as JSON when it can be (numbers, true/false, null)."""
    from prunenas.recipes import parse_assignments

    return parse_assignments(items, "--option", "NAME=VALUE (e.g. --option global_ranking=false)")


def target_from_args(args: argparse.Namespace) -> Any:
    from prunenas.proposers.base import Target

    given = [
        (k, v)
        for k, v in (
            ("ratio", args.ratio),
            ("macs_ratio", args.macs_ratio),
            ("density", args.density),
            ("latency_ratio", getattr(args, "latency_ratio", None)),
        )
        if v is not None
    ]
    if len(given) != 1:
        raise PrunenasError("give exactly one target: --ratio R, --macs-ratio R, --density D or --latency-ratio R")
    return Target(given[0][0], given[0][1])  # type: ignore[arg-type]


def check_kd_flags(overrides: dict[str, Any], teacher: str | None) -> None:
    """Refuse distillation settings given without a teacher: they would change nothing, silently."""
    from prunenas.config import flag_of
    from prunenas.recipes import KD_FIELDS, Recipe

    given = [flag_of(Recipe.__dataclass_fields__[k]) for k in KD_FIELDS if overrides.get(k) is not None]
    if given and teacher is None:
        raise PrunenasError(
            f"{' and '.join(given)} set distillation, which needs a teacher: add --teacher CKPT (or --teacher "
            "reference), or leave them out"
        )


def default_run_dir(
    root: str, space: Any, genotype: Any, recipe: Any, data: Any, seed: int, init: Any = None, teacher: Any = None
) -> Path:
    """runs/<root>/<space>-<key>-<recipe>-s<seed>-<run id>: the identity hash covers every result-changing
    setting (a teacher included), so changing any of them (e.g. --lr) gets a new folder."""
    from prunenas.train import run_folder_name, run_identity

    identity = run_identity(genotype, recipe, seed, data, init, teacher=teacher)
    return Path("runs") / root / run_folder_name(space, genotype, recipe, identity)
