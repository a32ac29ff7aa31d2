"""Handlers of the commands that look at spaces and genotypes and train one run:
spaces, cost, train, pretrain, proposers, propose, show."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import prunenas
from prunenas import distributed
from prunenas.cli.common import (
    check_kd_flags,
    data_config,
    default_run_dir,
    fit_to_data,
    load_data,
    load_genotype,
    parse_options,
    pct,
    print_json,
    recipe_from_args,
    recipe_overrides,
    run_settings,
    space_arg,
    target_from_args,
)
from prunenas.config import DataConfig, fingerprint, flag_of
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.paths import cost_cache_dir, write_text
from prunenas.plugins import dist_versions
from prunenas.recipes import make_recipe
from prunenas.report import format_table, human
from prunenas.space_files import _toml_index

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; more is a typo


# -- prunenas spaces [show SPACE] ------------------------------------------------------------------
def _listing_key() -> str:
    """What the space listing depends on: the TOML files, the space plugins, prunenas's own code and the
    counting libraries' versions. Computed without importing torch."""
    import hashlib
    import importlib.metadata as md

    digest = hashlib.sha256()
    for path in sorted(Path(prunenas.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    tomls = [(name, str(p), hashlib.sha256(p.read_bytes()).hexdigest()) for name, p in _toml_index().items()]
    plugins = sorted((ep.name, ep.value) for ep in md.entry_points(group="prunenas.spaces"))
    return fingerprint(digest.hexdigest(), tomls, plugins, dist_versions("torch", "fvcore"), length=16)


def _space_rows() -> list[dict[str, Any]]:
    """One row per space; from the cache when nothing it depends on changed (no model is built then)."""
    import json

    folder = cost_cache_dir()
    path = folder / f"spaces-{_listing_key()}.json" if folder else None
    if path is not None and path.is_file():
        try:
            rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
            return rows
        except (OSError, ValueError):
            pass
    from prunenas.cost import listed_reference_cost
    from prunenas.spaces import all_spaces

    rows = []
    for space in all_spaces():
        macs, params = listed_reference_cost(space)  # no tracing: a cold listing stays a matter of seconds
        rows.append(
            {
                "space": space.name,
                "family": space.family,
                "kind": space.kind,
                "genes": len(space.genes),
                "reference_macs": macs,
                "reference_params": params,
                "description": space.description,
            }
        )
    if path is not None:
        with contextlib.suppress(OSError, PrunenasError):  # a cache: a read-only home costs only the recount
            write_text(path, json.dumps(rows), "PRUNENAS_COST_CACHE")
    return rows


def cmd_spaces(args: argparse.Namespace) -> int:
    rows = _space_rows()
    if args.json:
        print_json(rows)
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
        print("Any model is a space too: torchvision:NAME, timm:NAME, package.module:callable, path/file.py:callable")
    return 0


def cmd_spaces_show(args: argparse.Namespace) -> int:
    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human
    from prunenas.spaces import shipped_genotypes

    space = space_arg(args.space, "SPACE")  # the positional argument: errors name it, not a --space flag
    info = space.describe()
    cost = genotype_cost(space, space.reference())
    info["reference_macs"], info["reference_params"] = cost.macs, cost.params
    figures = space.published_figures() if hasattr(space, "published_figures") else None
    if figures:
        info["torchvision_figures"] = figures
    info["shipped_genotypes"] = {
        name: str(path) for name, path in shipped_genotypes().items() if Genotype.load(path).space == space.name
    }
    if args.json:
        print_json(info)
        return 0
    print(f"{space.name}  ({space.family}, {space.kind})  {space.description}")
    print(f"reference: {human(cost.macs)} MACs, {human(cost.params)} params; defined in {space.source}")
    rows = [[g.name, g.kind, g.bounds_text(), g.reference, g.description] for g in space.genes]
    print(format_table(rows, ["gene", "type", "range", "reference", "what"], "lllrl"))
    if info.get("heads"):
        heads = info["heads"]
        shown = ", ".join(heads[:6]) + (f", ... ({len(heads)} layers)" if len(heads) > 6 else "")
        print(f"task: {info['task']}; heads (fixed, never genes; their input widths follow the genes): {shown}")
        task = space.task_of  # a traced space: its task's recipe defaults, and where they come from
        defaults = ", ".join(f"{k} {v}" for k, v in task.recipe.items())
        print(f"recipe defaults of the {task.name} task: {defaults} ({task.recipe_note})")
    elif info.get("output_layer"):
        print(f"output layer (never pruned): {info['output_layer']}")
    published = info.get("torchvision_figures")
    if published:
        print(published["line"])
    fixed = info.get("fixed_groups") or {}
    if fixed:
        print(f"fixed groups ({len(fixed)}, not searchable):")
        print(format_table([[k, v] for k, v in fixed.items()], ["group", "why"], "ll"))
    if info["shipped_genotypes"]:
        print("shipped genotypes: " + ", ".join(info["shipped_genotypes"]))
    return 0


# -- prunenas cost GENOTYPE ---------------------------------------------------------------------
def cmd_cost(args: argparse.Namespace) -> int:
    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human

    space, genotype = load_genotype(args.genotype, args.space)
    if args.num_classes is not None and not 1 <= args.num_classes <= MAX_CLASSES:
        raise PrunenasError(f"--num-classes must be in [1, {MAX_CLASSES:,}] (got {args.num_classes})")
    cost = genotype_cost(space, genotype, num_classes=args.num_classes)
    out = {"space": space.name, "key": genotype.key, **cost.to_dict()}
    if args.json:
        print_json(out)
        return 0
    rows = [
        ["MACs", human(cost.macs), human(cost.reference_macs), f"{cost.macs_ratio:.3f}"],
        ["params", human(cost.params), human(cost.reference_params), f"{cost.params_ratio:.3f}"],
    ]
    print(f"{args.genotype}: space {space.name}, key {genotype.key}")
    print(format_table(rows, ["", "genotype", "reference", "ratio"], "lrrr"))
    return 0


# -- prunenas train GENOTYPE / pretrain -------------------------------------------------------------
def run_training(args: argparse.Namespace, space: Any, genotype: Any, root: str) -> int:
    """Train `genotype` as the train/pretrain arguments say, write the run folder, print the result."""
    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human
    from prunenas.train import CHECKPOINT, CURVE, METRICS, load_model_state, load_teacher, train

    data_cfg = data_config(args)
    space, genotype = fit_to_data(space, genotype, image_size=data_cfg.image_size, dataset=data_cfg.dataset)
    settings = run_settings(args)
    recipe = recipe_from_args(args, space, genotype)
    teacher_arg = getattr(args, "teacher", None)
    check_kd_flags(recipe_overrides(args), teacher_arg)
    if teacher_arg == "reference":
        raise PrunenasError(
            "--teacher reference names the space's trained reference, and `prunenas train` takes no --reference: "
            f"pass --teacher CKPT, the checkpoint.pt of `prunenas pretrain --space {space.name}`"
        )
    init = load_model_state(args.weights) if getattr(args, "weights", None) else None
    world = distributed.world()
    if world.parallel:  # launched by torchrun: rank 0 decodes (or builds the cache) first, the others then read it
        distributed.join(world, settings.device)
        if not world.main:
            distributed.barrier()
    data = load_data(data_cfg, settings.seed)
    if world.parallel and world.main:
        distributed.barrier()
    teacher = load_teacher(space, teacher_arg, data.num_classes) if teacher_arg else None
    out = (
        Path(args.out) if args.out
        else default_run_dir(root, space, genotype, recipe, data, settings.seed, init, teacher)
    )  # fmt: skip
    if args.fresh and out.exists() and world.main:
        for name in (CHECKPOINT, METRICS, CURVE):
            (out / name).unlink(missing_ok=True)
    cost = genotype_cost(space, genotype, num_classes=data.num_classes)
    result = train(
        space,
        genotype,
        data,
        recipe,
        settings,
        out_dir=out,
        init_state=init,
        extra_metrics={"cost": cost.to_dict(), "weights_from": getattr(args, "weights", None)},
        teacher=teacher,
    )
    if not world.main:
        return 0
    if args.json:
        print_json({**result.to_dict(), "out": str(out), "macs": cost.macs, "params": cost.params})
        return 0
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
    if teacher is not None:
        kd = f"T {recipe.kd_temperature:g}, weight {recipe.kd_weight:g}"
        rows.append(["distilled from", f"{teacher.checkpoint} ({kd})"])
    if result.stopped:
        rows.append(["stopped", result.stopped])
    print(format_table(rows, ["", ""], "ll"))
    print(f"wrote {out / METRICS}, {out / CHECKPOINT}, {out / CURVE}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    space, genotype = load_genotype(args.genotype, args.space)
    return run_training(args, space, genotype, "train")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from prunenas.spaces import get_space

    space = get_space(args.space)
    return run_training(args, space, space.reference(), "pretrain")


# -- prunenas proposers / propose / show -----------------------------------------------------------
def cmd_proposers(args: argparse.Namespace) -> int:
    from prunenas.proposers.base import proposers
    from prunenas.report import format_table

    rows = [cls().describe() for cls in proposers()]
    if args.json:
        print_json(rows)
        return 0
    table = [
        [
            r["name"],
            r["kind"],
            "trained weights" if r["needs_trained"] else "-",
            "data" if r["needs_data"] else "-",
            ", ".join("--" + t.replace("_", "-") for t in r["targets"]),
            r["summary"],
        ]
        for r in rows
    ]
    print(format_table(table, ["proposer", "kind", "needs", "data", "targets", "what"], "llllll"))
    print("\noptions: `prunenas proposers --json`; set them with --option NAME=VALUE")
    return 0


def cmd_evaluators(args: argparse.Namespace) -> int:
    from prunenas.evaluators import evaluator_class, evaluator_names
    from prunenas.report import format_table

    rows = [evaluator_class(name)().describe() for name in evaluator_names()]
    if args.json:
        print_json(rows)
        return 0
    table = [
        [r["name"], "trained weights" if r["needs_trained"] else "-", ", ".join(f"--{r['name']}-{k.replace('_', '-')}"
         for k in r["options"]) or "-", r["description"]]
        for r in rows
    ]  # fmt: skip
    print(format_table(table, ["evaluator", "needs", "options", "what"], "llll"))
    print(
        "\nchoose one with `prunenas search --evaluator NAME`; trained weights: --reference CKPT or --pretrain-epochs N"
    )
    return 0


def cmd_propose(args: argparse.Namespace) -> int:
    from prunenas.proposers.base import get_proposer
    from prunenas.proposers.runner import make_context, run_proposer
    from prunenas.report import format_table, human
    from prunenas.spaces import get_space

    space = get_space(args.space)
    target = target_from_args(args)
    settings = run_settings(args)
    proposer = get_proposer(args.proposer, space.proposer_kind, **parse_options(args.option))
    needs_data = proposer.needs_data or (proposer.needs_trained and args.reference is None and args.pretrain_epochs)
    if args.pretrain_epochs is not None:
        if args.pretrain_epochs < 1:
            raise PrunenasError(f"--pretrain-epochs must be >= 1 (got {args.pretrain_epochs})")
        if args.reference is not None:
            raise PrunenasError(
                f"--pretrain-epochs {args.pretrain_epochs} trains a reference only when --reference is not given; "
                "drop one of them"
            )
        if not proposer.needs_trained:
            raise PrunenasError(
                f"--pretrain-epochs {args.pretrain_epochs} does not apply: proposer {proposer.name!r} scores no "
                "trained weights; leave it out"
            )
    data = None
    if needs_data or args.dataset:
        data_cfg = data_config(args, dataset=args.dataset or "cifar10")
        space, _ = fit_to_data(space, image_size=data_cfg.image_size, dataset=data_cfg.dataset)
        data = load_data(data_cfg, settings.seed)
    else:  # no data is loaded: data flags would be dropped without a word
        refuse_unused_data_flags(args, f"proposer {proposer.name!r} uses no data and no --dataset was given")
    reference = args.reference
    if reference is None and proposer.needs_trained and args.pretrain_epochs:
        reference = quick_reference(args, space, data, settings)
    proposer.check(space, target, trained=reference is not None)
    ctx = make_context(space, data=data, reference=reference, seed=settings.seed, device=settings.device)
    proposal = run_proposer(
        proposer,
        ctx,
        target,
        reference=str(reference) if reference else "random init",
        dataset=data.name if data is not None else None,
    )
    genotype = proposal.genotype
    out = Path(args.output) if args.output else None
    if out is not None:
        write_text(out, genotype.to_json() + "\n", "-o/--output")
    if args.json:
        print_json({**genotype.to_dict(), "key": genotype.key, "file": str(out) if out else None})
        return 0
    achieved = genotype.provenance["achieved"]
    rows = [
        ["proposer", f"{proposer.name} ({target.describe()})"],
        ["space / key", f"{space.name} / {genotype.key}"],
        ["MACs", f"{human(achieved['macs'])} ({achieved['macs_ratio']:.3f} of the reference)"],
        ["params", human(achieved["params"])],
    ]
    if "density" in achieved:
        rows.append(["density", f"{achieved['density']:.4f}"])
    clamped = genotype.provenance.get("clamped") or {}
    if clamped:
        rows.append(["clamped to the floor", ", ".join(clamped)])
    rows.append(["took", f"{genotype.provenance['time_s']:.1f} s"])
    print(format_table(rows, ["", ""], "ll"))
    print(f"wrote {out}" if out else "(pass -o FILE to save the genotype; `prunenas show FILE` plots it)")
    return 0


def refuse_unused_data_flags(args: argparse.Namespace, why: str) -> None:
    """Refuse data flags given to a command that loads no data (`why`), all of them in one line."""

    given = DataConfig.values_from_args(args, skip=("dataset",))
    if given:
        fields = {f.name: f for f in dataclasses.fields(DataConfig)}
        flags = " and ".join(flag_of(fields[name]) for name in given)
        raise PrunenasError(
            f"{flags} {'does' if len(given) == 1 else 'do'} not apply: {why}; give --dataset to fit the space to "
            f"its images, or leave {'it' if len(given) == 1 else 'them'} out"
        )


def quick_reference(args: argparse.Namespace, space: Any, data: Any, settings: Any) -> Any:
    """Train (or reuse) a short reference run for proposers that need trained weights."""
    from prunenas.train import CHECKPOINT, train

    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": args.pretrain_epochs})
    out = default_run_dir("pretrain", space, space.reference(), recipe, data, settings.seed)
    train(space, space.reference(), data, recipe, settings, out_dir=out)
    return out / CHECKPOINT


def cmd_show(args: argparse.Namespace) -> int:
    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human, plot_path, plot_profile

    plot_format = getattr(args, "plot_format", None)
    if plot_format is not None and not args.plot:
        raise PrunenasError("--plot-format needs --plot FILE (the file to write)")
    if args.plot:
        plot_path(args.plot, plot_format)  # a bad file name or format fails before any work
    space, genotype = load_genotype(args.genotype, args.space)
    reference = space.reference()
    cost = genotype_cost(space, genotype)

    def gene_text(v: object) -> object:  # densities to 3 significant digits; channel counts as they are
        return f"{v:.3g}" if isinstance(v, float) else v

    rows = []
    for gene in space.genes:
        value, ref = genotype.genes[gene.name], reference.genes[gene.name]
        frac = space.gene_fraction(gene, value)
        rows.append([gene.name, gene_text(value), gene_text(ref), f"{frac:.2f}", "#" * round(20 * min(frac, 1.0))])
    if args.json:
        print_json(
            {
                "space": space.name,
                "key": genotype.key,
                "genes": dict(genotype.genes),
                "reference": dict(reference.genes),
                **cost.to_dict(),
            }
        )
    else:
        print(f"{space.name} genotype {genotype.key}")
        print(format_table(rows, ["gene", "value", "reference", "fraction", ""], "lrrrl"))
        print()
        totals = [
            ["MACs", human(cost.macs), human(cost.reference_macs), f"{cost.macs_ratio:.3f}"],
            ["params", human(cost.params), human(cost.reference_params), f"{cost.params_ratio:.3f}"],
        ]
        print(format_table(totals, ["", "genotype", "reference", "ratio"], "lrrr"))
    if args.plot:
        path = plot_profile(space, genotype, args.plot, plot_format)
        if not args.json:
            print(f"wrote {path}")
    return 0
