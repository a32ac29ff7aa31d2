"""Command line: argument parsing only; the work is done by the modules it calls.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 a bug, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from prunenas import __version__
from prunenas.errors import PrunenasError

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line (what is wrong + where to look) and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise PrunenasError(f"{message} (see `{self.prog} --help`)")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


# -- prunenas spaces [show SPACE] ------------------------------------------------------------------
def cmd_spaces(args: argparse.Namespace) -> int:
    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human
    from prunenas.spaces import all_spaces

    rows: list[dict[str, Any]] = []
    for space in all_spaces():
        cost = genotype_cost(space, space.reference())
        rows.append(
            {
                "space": space.name,
                "family": space.family,
                "kind": space.kind,
                "genes": len(space.genes),
                "reference_macs": cost.macs,
                "reference_params": cost.params,
                "description": space.description,
            }
        )
    if args.json:
        _print_json(rows)
    else:
        table = [
            [
                r["space"],
                r["family"],
                r["kind"],
                r["genes"],
                human(r["reference_macs"]),
                human(r["reference_params"]),
            ]
            for r in rows
        ]
        print(format_table(table, ["space", "family", "kind", "genes", "ref MACs", "ref params"], "lllrrr"))
        print("\n`prunenas spaces show SPACE` lists a space's genes; shipped genotypes: search_spaces/genotypes/")
    return 0


def cmd_spaces_show(args: argparse.Namespace) -> int:
    from prunenas.cost import genotype_cost
    from prunenas.genotype import Genotype
    from prunenas.report import format_table, human
    from prunenas.spaces import get_space, shipped_genotypes

    space = get_space(args.space)
    info = space.describe()
    cost = genotype_cost(space, space.reference())
    info["reference_macs"], info["reference_params"] = cost.macs, cost.params
    info["shipped_genotypes"] = {
        name: str(path) for name, path in shipped_genotypes().items() if Genotype.load(path).space == space.name
    }
    if args.json:
        _print_json(info)
        return 0
    print(f"{space.name}  ({space.family}, {space.kind})  {space.description}")
    print(f"reference: {human(cost.macs)} MACs, {human(cost.params)} params; defined in {space.source}")
    rows = [[g.name, g.kind, g.bounds_text(), g.reference, g.description] for g in space.genes]
    print(format_table(rows, ["gene", "type", "range", "reference", "what"], "lllrl"))
    if info["shipped_genotypes"]:
        print("shipped genotypes: " + ", ".join(info["shipped_genotypes"]))
    return 0


# -- prunenas cost GENOTYPE -----------------------------------------------------------------------
def load_genotype(arg: str, space_arg: str | None = None) -> tuple[Any, Any]:
    """(space, validated genotype) from a genotype path, a shipped genotype name or a space name (its
    reference genotype), and an optional --space."""
    from prunenas.genotype import Genotype
    from prunenas.spaces import get_space, space_names
    from prunenas.spaces.registry import genotype_path

    if arg in space_names() and not os.path.exists(arg):
        space = get_space(arg)
        return space, space.reference()
    genotype = Genotype.load(genotype_path(arg))
    space = get_space(space_arg or genotype.space)
    if space_arg is not None and genotype.space != space.name:
        genotype = Genotype(space.name, genotype.genes, genotype.provenance)
    return space, space.validate(genotype)


def cmd_cost(args: argparse.Namespace) -> int:
    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human

    space, genotype = load_genotype(args.genotype, args.space)
    cost = genotype_cost(space, genotype, num_classes=args.num_classes)
    out = {"space": space.name, "key": genotype.key, **cost.to_dict()}
    if args.json:
        _print_json(out)
        return 0
    rows = [
        ["MACs", human(cost.macs), human(cost.reference_macs), f"{cost.macs_ratio:.3f}"],
        ["params", human(cost.params), human(cost.reference_params), f"{cost.params_ratio:.3f}"],
    ]
    print(f"{args.genotype}: space {space.name}, key {genotype.key}")
    print(format_table(rows, ["", "genotype", "reference", "ratio"], "lrrr"))
    return 0


# -- prunenas train GENOTYPE ------------------------------------------------------------------------
def add_data_args(p: argparse.ArgumentParser, default: str = "cifar10") -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset", default=default, help=f"cifar10, cifar100, digits (embedded) or imagefolder (default {default})"
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="dataset folder or .tar.gz (CIFAR python batches or an ImageFolder tree with train/ and test/); "
        "default: $PRUNENAS_DATA, else download CIFAR into the cache",
    )
    g.add_argument("--train-subset", type=int, default=None, metavar="N", help="train on N images only (quick runs)")
    g.add_argument("--val-size", type=int, default=None, metavar="N", help="held-out validation images (CIFAR: 5000)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    g.add_argument("--seed", type=int, default=0, help="seed of init, masks, split order and augmentation (default 0)")
    g.add_argument("--eval-every", type=int, default=1, metavar="K", help="validate every K epochs (and at the end)")
    g.add_argument("--no-amp", action="store_true", help="CUDA: train in fp32 instead of bf16 autocast")
    g.add_argument("--no-channels-last", action="store_true", help="CUDA: keep NCHW memory format")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (pays off only for long runs)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def add_recipe_args(p: argparse.ArgumentParser, default: str = "standard") -> None:
    from prunenas.recipes import RECIPES

    g = p.add_argument_group("recipe (defaults from the space's TOML)")
    g.add_argument("--recipe", default=default, choices=RECIPES, help=f"training recipe (default {default})")
    g.add_argument("--epochs", type=int, default=None, help="epochs (scratch-b: the full model's budget E)")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None, help="initial learning rate")
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--momentum", type=float, default=None)
    g.add_argument("--scratch-b-cap", type=float, default=None, metavar="X", help="cap scratch-b epochs at X times E")


def data_from_args(args: argparse.Namespace, seed: int) -> Any:
    from prunenas.data import load_dataset

    data_dir = args.data_dir or os.environ.get("PRUNENAS_DATA") or None
    return load_dataset(args.dataset, data_dir, val_size=args.val_size, train_subset=args.train_subset, seed=seed)


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
        overrides={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "momentum": args.momentum,
        },
    )


def settings_from_args(args: argparse.Namespace, **changes: Any) -> Any:
    from prunenas.train import RunSettings

    return RunSettings(
        device=args.device,
        seed=args.seed,
        amp=False if args.no_amp else None,
        channels_last=False if args.no_channels_last else None,
        compile=args.compile,
        eval_every=args.eval_every,
        quiet=args.quiet,
        **changes,
    )


def load_weights(path: str) -> Any:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise PrunenasError(f"weights file {path!r} does not exist; pass a checkpoint.pt of a prunenas run") from None
    except Exception as exc:
        raise PrunenasError(
            f"cannot read weights {path!r} ({type(exc).__name__}); pass a prunenas checkpoint.pt"
        ) from None
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict):
        raise PrunenasError(f"{path!r} holds no model weights; pass a prunenas checkpoint.pt")
    return state


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human
    from prunenas.train import CHECKPOINT, CURVE, METRICS, train

    space, genotype = load_genotype(args.genotype, args.space)
    recipe = recipe_from_args(args, space, genotype)
    data = data_from_args(args, args.seed)
    out = Path(args.out or Path("runs") / "train" / f"{space.name}-{genotype.key}-{recipe.name}-s{args.seed}")
    if args.fresh and out.exists():
        for name in (CHECKPOINT, METRICS, CURVE):
            (out / name).unlink(missing_ok=True)
    init = load_weights(args.weights) if args.weights else None
    cost = genotype_cost(space, genotype, num_classes=data.num_classes)
    result = train(
        space,
        genotype,
        data,
        recipe,
        settings_from_args(args),
        out_dir=out,
        init_state=init,
        extra_metrics={"cost": cost.to_dict(), "weights_from": args.weights},
    )
    genotype.save(out / "genotype.json")
    if args.json:
        _print_json({**result.to_dict(), "out": str(out), "macs": cost.macs, "params": cost.params})
        return 0
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    rows = [
        ["space / genotype", f"{space.name} / {genotype.key}"],
        [
            "recipe",
            f"{recipe.name}: {result.epochs_run}/{result.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr}",
        ],
        ["dataset", f"{data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test"],
        ["MACs / params", f"{human(cost.macs)} ({cost.macs_ratio:.3f} of ref) / {human(cost.params)}"],
        ["val accuracy (final)", pct(result.val_acc)],
        ["test accuracy (final)", pct(result.test_acc)],
        ["wall time", f"{result.wall_time_s:.1f} s at {result.images_per_s:.0f} img/s"],
    ]
    if result.stopped:
        rows.append(["stopped", result.stopped])
    print(format_table(rows, ["", ""], "ll"))
    print(f"wrote {out / METRICS}, {out / CHECKPOINT}, {out / CURVE}")
    return 0


# -- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prunenas",
        description="Network pruning as architecture search: pruning methods propose architectures "
        "(genotypes), Optuna searches them, candidates train from scratch, winners export to ONNX.",
    )
    parser.add_argument("--version", action="version", version=f"prunenas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("spaces", help="list the search spaces (or `spaces show SPACE`)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_spaces)
    spaces_sub = p.add_subparsers(dest="spaces_command", metavar="show", parser_class=_Parser)
    ps = spaces_sub.add_parser("show", help="a space's genes in network order, bounds, reference genotype, cost")
    ps.add_argument("space", help="space name (see `prunenas spaces`) or path to a space .toml")
    ps.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ps.set_defaults(handler=cmd_spaces_show)

    p = sub.add_parser("cost", help="MACs and params of a genotype (conv+linear multiply-adds, batch 1)")
    p.add_argument("genotype", help="genotype JSON file, or the name of a shipped genotype (e.g. li2017_resnet56_b)")
    p.add_argument("--space", help="space name or .toml path to use instead of the genotype's own `space`")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the space's, 10)")
    p.add_argument("--json", action="store_true", help="print JSON (macs and params as integers)")
    p.set_defaults(handler=cmd_cost)

    p = sub.add_parser("train", help="train a genotype from scratch (or fine-tune it) and write metrics")
    p.add_argument("genotype", help="genotype JSON file, shipped genotype name, or space name (its reference)")
    p.add_argument("--space", help="space name or .toml path instead of the genotype's own")
    p.add_argument("--out", help="run folder (default runs/train/SPACE-KEY-RECIPE-sSEED); an existing run resumes")
    p.add_argument("--fresh", action="store_true", help="discard a checkpoint in --out and start over")
    p.add_argument("--weights", metavar="CKPT", help="start from these weights (required by --recipe finetune)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_recipe_args(p)
    add_data_args(p)
    add_run_args(p)
    p.set_defaults(handler=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return 2
        return handler(args)
    except PrunenasError as exc:
        print(f"prunenas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunenas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
