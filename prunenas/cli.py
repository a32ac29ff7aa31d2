"""Command line: argument parsing only; the work is done by the modules it calls.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 a bug, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
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
    """(space, validated genotype) from a genotype path or shipped name and an optional --space."""
    from prunenas.genotype import Genotype
    from prunenas.spaces import get_space
    from prunenas.spaces.registry import genotype_path

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
