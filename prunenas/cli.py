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
    if args.num_classes is not None and args.num_classes < 1:
        raise PrunenasError(f"--num-classes must be >= 1 (got {args.num_classes})")
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
def add_data_args(p: argparse.ArgumentParser, default: str | None = "cifar10") -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=default,
        help=f"cifar10, cifar100, digits (embedded) or imagefolder (default {default or 'cifar10 when needed'})",
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
    g.add_argument(
        "--set", action="append", dest="recipe_set", metavar="KEY=VALUE",
        help="any other recipe setting (repeatable), e.g. --set milestones=[0.3,0.6] --set nesterov=true "
        "--set label_smoothing=0.1; see prunenas/recipes.py for the names",
    )  # fmt: skip


def add_training_args(p: argparse.ArgumentParser, default_out: str) -> None:
    """The options of a command that trains one run (train, pretrain)."""
    p.add_argument("--out", help=f"run folder (default {default_out}); an existing run resumes")
    p.add_argument("--fresh", action="store_true", help="discard a checkpoint in --out and start over")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_recipe_args(p)
    add_data_args(p)
    add_run_args(p)


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
            **parse_options(getattr(args, "recipe_set", None)),
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
    from prunenas.train import load_model_state

    return load_model_state(path)


def run_training(args: argparse.Namespace, space: Any, genotype: Any, default_out: Any) -> int:
    """Train `genotype` as the train/pretrain arguments say, write the run folder, print the result."""
    from pathlib import Path

    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human
    from prunenas.train import CHECKPOINT, CURVE, METRICS, train

    recipe = recipe_from_args(args, space, genotype)
    data = data_from_args(args, args.seed)
    out = Path(args.out or default_out(recipe))
    if args.fresh and out.exists():
        for name in (CHECKPOINT, METRICS, CURVE):
            (out / name).unlink(missing_ok=True)
    init = load_weights(args.weights) if getattr(args, "weights", None) else None
    cost = genotype_cost(space, genotype, num_classes=data.num_classes)
    result = train(
        space,
        genotype,
        data,
        recipe,
        settings_from_args(args),
        out_dir=out,
        init_state=init,
        extra_metrics={"cost": cost.to_dict(), "weights_from": getattr(args, "weights", None)},
    )
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


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    space, genotype = load_genotype(args.genotype, args.space)
    return run_training(
        args,
        space,
        genotype,
        lambda recipe: Path("runs") / "train" / f"{space.name}-{genotype.key}-{recipe.name}-s{args.seed}",
    )


def default_pretrain_dir(space: str, dataset: str, seed: int, recipe: str) -> Any:
    from pathlib import Path

    return Path("runs") / "pretrain" / f"{space}-{dataset}-{recipe}-s{seed}"


def cmd_pretrain(args: argparse.Namespace) -> int:
    from prunenas.spaces import get_space

    space = get_space(args.space)
    return run_training(
        args,
        space,
        space.reference(),
        lambda recipe: default_pretrain_dir(space.name, args.dataset, args.seed, recipe.name),
    )


# -- prunenas proposers / propose / show -----------------------------------------------------------
def cmd_proposers(args: argparse.Namespace) -> int:
    from prunenas.proposers.base import proposers
    from prunenas.report import format_table

    rows = [cls().describe() for cls in proposers()]
    if args.json:
        _print_json(rows)
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


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """--option NAME=VALUE pairs; VALUE parsed as JSON when it can be (numbers, true/false, null)."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise PrunenasError(f"--option {item!r} must look like NAME=VALUE (e.g. --option global_ranking=false)")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


def target_from_args(args: argparse.Namespace) -> Any:
    from prunenas.proposers.base import Target

    given = [
        (k, v)
        for k, v in (("ratio", args.ratio), ("macs_ratio", args.macs_ratio), ("density", args.density))
        if v is not None
    ]
    if len(given) != 1:
        raise PrunenasError("give exactly one target: --ratio R, --macs-ratio R or --density D")
    return Target(given[0][0], given[0][1])  # type: ignore[arg-type]


def cmd_propose(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunenas.proposers.base import get_proposer
    from prunenas.proposers.runner import make_context, run_proposer
    from prunenas.report import format_table, human
    from prunenas.spaces import get_space

    space = get_space(args.space)
    target = target_from_args(args)
    proposer = get_proposer(args.proposer, space.kind, **parse_options(args.option))
    needs_data = proposer.needs_data or (proposer.needs_trained and args.reference is None and args.pretrain_epochs)
    data = data_from_args(args, args.seed) if (needs_data or args.dataset) else None
    reference = args.reference
    if reference is None and proposer.needs_trained and args.pretrain_epochs:
        reference = quick_reference(args, space, data)
    proposer.check(space, target, trained=reference is not None)
    ctx = make_context(space, data=data, reference=reference, seed=args.seed, device=args.device)
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
        genotype.save(out)
    if args.json:
        _print_json({**genotype.to_dict(), "key": genotype.key, "file": str(out) if out else None})
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


def quick_reference(args: argparse.Namespace, space: Any, data: Any) -> Any:
    """Train (or reuse) a short reference run for proposers that need trained weights."""
    from prunenas.recipes import make_recipe
    from prunenas.train import CHECKPOINT, RunSettings, train

    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": args.pretrain_epochs})
    out = default_pretrain_dir(space.name, data.name, args.seed, f"proxy{args.pretrain_epochs}")
    train(
        space,
        space.reference(),
        data,
        recipe,
        RunSettings(device=args.device, seed=args.seed, quiet=args.quiet),
        out_dir=out,
    )
    return out / CHECKPOINT


def cmd_show(args: argparse.Namespace) -> int:
    from prunenas.report import format_table, plot_profile

    space, genotype = load_genotype(args.genotype, args.space)
    reference = space.reference()
    rows = []
    for gene in space.genes:
        value, ref = genotype.genes[gene.name], reference.genes[gene.name]
        frac = float(value) / float(ref) if float(ref) else 0.0
        rows.append([gene.name, value, ref, f"{frac:.2f}", "#" * round(20 * min(frac, 1.0))])
    if args.json:
        _print_json(
            {
                "space": space.name,
                "key": genotype.key,
                "genes": dict(genotype.genes),
                "reference": dict(reference.genes),
            }
        )
    else:
        print(f"{space.name} genotype {genotype.key}")
        print(format_table(rows, ["gene", "value", "reference", "fraction", ""], "lrrrl"))
    if args.plot:
        path = plot_profile(space, genotype, args.plot)
        if not args.json:
            print(f"wrote {path}")
    return 0


# -- prunenas export RUN_DIR / prunenas evaluate MODEL.onnx ------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from prunenas.export import ExportError, export_run
    from prunenas.report import format_table, human

    try:
        result = export_run(
            args.run_dir,
            args.out,
            name=args.name,
            dataset=args.dataset,
            data_dir=args.data_dir,
            benchmark=args.benchmark,
            latency_batches=tuple(args.batch_sizes),
            latency_repeats=args.repeats,
            provider=args.provider,
        )
    except ExportError as exc:  # the export itself is wrong, not the input: exit 1, still one line
        print(f"prunenas: error: {exc}", file=sys.stderr)
        return 1
    s = result.sidecar
    if args.json:
        _print_json({**s, "out": str(result.out_dir)})
        return 0
    exp, parity, acc = s["export"], s["parity"], s["accuracy"]
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    method = f"{exp['method']}, opset {s['opset']}, {exp['seconds']:.1f} s"
    if exp["fallback_reason"]:
        method += f" (dynamo failed: {exp['fallback_reason']})"
    checks = ", ".join(f"{c['input']} (n={c['batch']}) {c['max_abs_diff']:.1e}" for c in parity["checks"])
    rows = [
        ["run", f"{s['source']['run_dir']} (epoch {s['source']['checkpoint_epoch']})"],
        ["space / genotype", f"{s['space']} / {s['key']}"],
        ["exporter", method],
        ["onnx.checker", "passed (full check)"],
        [
            "parity vs PyTorch",
            f"max |diff| {parity['max_abs_diff']:.1e} < {parity['tolerance']:g} on {parity['provider']}",
        ],
        ["parity checks", checks],
        ["MACs / params", f"{human(s['macs'])} / {human(s['params'])}"],
        ["val / test accuracy", f"{pct(acc['val_acc'])} / {pct(acc['test_acc'])}"],
    ]
    if parity["real_inputs_skipped"]:
        rows.append(["note", parity["real_inputs_skipped"]])
    if s["sparsity"]:
        overall = s["sparsity"]["overall"]
        rows.append(["weight sparsity", f"{100 * overall['sparsity']:.1f}% zeros (no ONNX Runtime speed-up)"])
    if s["latency"]:
        lat = s["latency"]
        for b, v in lat["per_batch"].items():
            rows.append(
                [f"latency batch {b}", f"median {v['median_ms']:.2f} ms, p90 {v['p90_ms']:.2f} ms ({lat['provider']})"]
            )
    print(format_table(rows, ["", ""], "ll"))
    out = result.out_dir
    print(f"wrote {out / 'model.onnx'} ({human(s['files']['bytes'])}B), {out / 'model.json'}, {out / 'README.md'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from prunenas.export import evaluate_onnx

    r = evaluate_onnx(args.onnx, args.dataset, args.data_dir, provider=args.provider, batch_size=args.batch_size)
    if args.json:
        _print_json(r)
        return 0
    line = (
        f"{r['dataset']} test accuracy {100 * r['accuracy']:.2f}% ({r['correct']}/{r['images']}) with ONNX Runtime "
        f"({r['provider']}, {r['images_per_s']:.0f} img/s)"
    )
    print(line)
    if r["torch_test_acc"] is not None:
        print(
            f"PyTorch test accuracy (metrics.json, {r['torch_test_acc_precision']}): {100 * r['torch_test_acc']:.2f}%, "
            f"difference {100 * r['difference']:+.2f} points"
        )
    return 0


def worker_argv(raw: Sequence[str]) -> list[str]:
    """The search command line for a worker process: the same study, without --workers/--gpus."""
    out: list[str] = []
    skip = False
    for tok in raw:
        if skip:
            skip = False
            continue
        if tok in ("--workers", "--gpus"):
            skip = True
            continue
        if tok.startswith(("--workers=", "--gpus=")) or tok in ("--json", "--worker-only"):
            continue
        out.append(tok)
    return out


# -- prunenas search ---------------------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from prunenas.cost import genotype_cost
    from prunenas.report import format_table, human
    from prunenas.search import BUDGETS, SearchConfig, default_study_dir, run_search
    from prunenas.spaces import get_space

    space = get_space(args.space)
    budget = BUDGETS[args.budget]
    changes = {
        "trials": args.trials,
        "proxy_epochs": args.proxy_epochs,
        "top_k": args.top_k,
        "final_epochs": args.final_epochs,
        "train_subset": args.train_subset,
    }
    for name, value in changes.items():
        if value is not None and value < 1:
            raise PrunenasError(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
    budget = replace(budget, **{k: v for k, v in changes.items() if v is not None})
    if args.timeout is not None and args.timeout <= 0:
        raise PrunenasError(f"--timeout must be > 0 seconds (got {args.timeout})")
    if args.max_macs is not None and args.max_macs_ratio is not None:
        raise PrunenasError("give either --max-macs N or --max-macs-ratio R, not both")
    if args.max_macs_ratio is not None and not 0 < args.max_macs_ratio <= 1:
        raise PrunenasError(f"--max-macs-ratio must be in (0, 1] (got {args.max_macs_ratio})")
    if args.max_macs is not None and args.max_macs <= 0:
        raise PrunenasError(f"--max-macs must be a positive number of MACs (got {args.max_macs})")
    if args.workers < 1:
        raise PrunenasError(f"--workers must be >= 1 (got {args.workers})")
    if args.heartbeat <= 0:
        raise PrunenasError(f"--heartbeat must be > 0 seconds (got {args.heartbeat})")
    gpus = tuple(g.strip() for g in args.gpus.split(",")) if args.gpus else ()
    if any(not g.isdigit() for g in gpus):
        raise PrunenasError(f"--gpus takes GPU indices like 0,1 (got {args.gpus!r})")
    args.train_subset = budget.train_subset
    dataset = args.dataset or "cifar10"
    args.dataset = dataset
    data = data_from_args(args, args.seed)
    max_macs = args.max_macs
    if args.max_macs_ratio is not None:
        max_macs = int(args.max_macs_ratio * genotype_cost(space, space.reference(), data.num_classes).macs)
    study = args.study or "-".join(
        [args.budget, args.mode, args.sampler, f"s{args.seed}"]
        + ([f"max{args.max_macs_ratio:g}"] if args.max_macs_ratio else [f"max{max_macs}"] if max_macs else [])
    )
    config = SearchConfig(
        space=space.name,
        dataset=dataset,
        study=study,
        out=Path(args.out) if args.out else default_study_dir(space.name, dataset, study),
        budget=budget,
        budget_name=args.budget,
        mode=args.mode,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        max_macs=max_macs,
        max_macs_ratio=args.max_macs_ratio,
        proposer_names=tuple(args.proposers.split(",")) if args.proposers else None,
        reference=args.reference,
        final_recipe=args.final_recipe,
        final=not args.no_final,
        export=not args.no_export,
        exports_root=Path(args.exports),
        storage=args.storage,
        timeout=args.timeout,
        device=args.device,
        quiet=args.quiet,
        workers=args.workers,
        gpus=gpus,
        heartbeat=args.heartbeat,
        worker_only=args.worker_only,
        worker_argv=tuple(worker_argv(args.raw_argv)),
        amp=False if args.no_amp else None,
        channels_last=False if args.no_channels_last else None,
        compile=args.compile,
    )
    log = (lambda _msg: None) if (args.json or args.worker_only) else (lambda msg: print(msg, flush=True))
    outcome = run_search(config, space, data, log=log)
    if args.worker_only:
        return 0
    if args.json:
        _print_json(
            {
                "study": study,
                "study_dir": str(outcome.study_dir),
                "trials": outcome.trials,
                "complete": outcome.complete,
                "pruned": outcome.pruned,
                "infeasible": outcome.infeasible,
                "failed": outcome.failed,
                "wall_time_s": outcome.wall_time_s,
                "files": dict(outcome.files),
                "winners": [
                    {
                        "trial": w.trial,
                        "key": w.genotype.key,
                        "origin": w.origin,
                        "macs": w.macs,
                        "params": w.params,
                        "val_acc": w.val_acc,
                        "test_acc": w.final.test_acc if w.final else None,
                        "export_dir": w.export_dir,
                    }
                    for w in outcome.winners
                ],
            }
        )
        return 0
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    rows = [
        [
            rank,
            w.trial,
            w.origin,
            human(w.macs),
            human(w.params),
            pct(w.val_acc),
            pct(w.final.test_acc if w.final else None),
            w.export_dir or "-",
        ]
        for rank, w in enumerate(outcome.winners, start=1)
    ]
    print()
    print(
        f"study {study!r}: {outcome.trials} trials ({outcome.complete} complete, {outcome.pruned} pruned, "
        f"{outcome.infeasible} infeasible, {outcome.failed} failed) in {outcome.wall_time_s:.0f} s"
    )
    if rows:
        print(
            format_table(
                rows, ["#", "trial", "origin", "MACs", "params", "val (proxy)", "test (final)", "export"], "rrlrrrrl"
            )
        )
    else:
        print("no trial completed: nothing to retrain or export")
    print(f"study folder: {outcome.study_dir} (trials.csv, trials.json, pareto.png, best/, summary.json)")
    if not args.storage:
        print(f"dashboard: optuna-dashboard {outcome.study_dir / 'study.journal'}")
    return 0


# -- prunenas rethink -------------------------------------------------------------------------------------
def cmd_rethink(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunenas.rethink import (
        RethinkConfig,
        check_config,
        dry_run,
        format_plan,
        format_results,
        known_train_images,
        parse_ablations,
        run_rethink,
    )
    from prunenas.spaces import get_space

    if args.proposer and args.genotype:
        raise PrunenasError("give either --proposer P (the method decides the genotype) or --genotype FILE, not both")
    if not args.proposer and not args.genotype:
        raise PrunenasError(
            "say what to prune: --proposer P with --ratio R, --macs-ratio R or --density D, or --genotype FILE"
        )
    if args.seeds < 1:
        raise PrunenasError(f"--seeds must be >= 1 (got {args.seeds}); the paper used 5")
    targets = [v for v in (args.ratio, args.macs_ratio, args.density) if v is not None]
    if args.genotype and (targets or args.option):
        raise PrunenasError("--ratio/--macs-ratio/--density/--option go with --proposer; a --genotype is fixed")
    ablations = parse_ablations(args.ablation)
    if args.genotype:
        space, genotype = load_genotype(args.genotype, args.space)
    else:
        space, genotype = get_space(args.space), None
    config = RethinkConfig(
        space=space,
        dataset=args.dataset,
        genotype=genotype,
        proposer=args.proposer,
        proposer_options=parse_options(args.option),
        target=target_from_args(args) if args.proposer else None,
        reference=args.reference,
        seeds=args.seeds,
        budget=args.budget,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        scratch_b_cap=args.scratch_b_cap,
        ablations=ablations,
        out=Path(args.out) if args.out else None,
        settings=settings_from_args(args),
    )
    check_config(config)  # bad input fails here, before any dataset is loaded
    if args.dry_run:
        images = known_train_images(
            args.dataset, train_subset=args.train_subset, val_size=args.val_size, seed=args.seed
        )
        plan = dry_run(config, train_images=images)
        if args.json:
            _print_json({"dry_run": True, **plan.to_dict()})
        else:
            print(format_plan(plan))
            print("dry run: nothing trained")
        return 0
    data = data_from_args(args, args.seed)
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, flush=True))
    outcome = run_rethink(config, data, log=log)
    if args.json:
        _print_json(outcome.to_dict())
        return 0
    print()
    print(format_results(outcome))
    print(
        f"{outcome.trained} run(s) trained, {outcome.skipped} found finished, {outcome.wall_time_s:.0f} s; "
        f"study folder {outcome.plan.study_dir} (rethink.txt, rethink.json, rethink.png, one folder per run)"
    )
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
    ps.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of a table")
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
    p.add_argument("--weights", metavar="CKPT", help="start from these weights (required by --recipe finetune)")
    add_training_args(p, "runs/train/SPACE-KEY-RECIPE-sSEED")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("pretrain", help="train a space's reference model (weights for proposers: --reference)")
    p.add_argument("--space", required=True, help="space name or .toml path")
    add_training_args(p, "runs/pretrain/SPACE-DATASET-RECIPE-sSEED")
    p.set_defaults(handler=cmd_pretrain)

    p = sub.add_parser("proposers", help="list the pruning methods that propose architectures")
    p.add_argument("--json", action="store_true", help="print JSON (with each proposer's options)")
    p.set_defaults(handler=cmd_proposers)

    p = sub.add_parser("propose", help="run a pruning method and write the genotype it decides")
    p.add_argument("--space", required=True, help="space name or .toml path")
    p.add_argument("--proposer", required=True, help="pruning method (see `prunenas proposers`)")
    tg = p.add_argument_group("target (exactly one)")
    tg.add_argument("--ratio", type=float, help="fraction of prunable channels/weights removed, in [0, 1)")
    tg.add_argument("--macs-ratio", type=float, help="target MACs / reference MACs, in (0, 1] (met within 2%%)")
    tg.add_argument("--density", type=float, help="fraction of prunable weights kept (density spaces), in (0, 1]")
    p.add_argument("--reference", metavar="CKPT", help="trained reference weights (from `prunenas pretrain`)")
    p.add_argument(
        "--pretrain-epochs", type=int, metavar="N", help="train a quick N-epoch reference when none is given"
    )
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="proposer option (repeatable)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the genotype JSON here")
    p.add_argument("--json", action="store_true", help="print the genotype as JSON")
    add_data_args(p, default=None)
    add_run_args(p)
    p.set_defaults(handler=cmd_propose)

    p = sub.add_parser("show", help="per-layer widths or densities of a genotype against the reference")
    p.add_argument("genotype", help="genotype JSON file, shipped genotype name, or space name")
    p.add_argument("--space", help="space name or .toml path instead of the genotype's own")
    p.add_argument("--plot", metavar="FILE", help="also write a PNG bar chart of the profile")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("search", help="search architectures: proposer-seeded Optuna study, proxy training, export")
    p.add_argument("--space", required=True, help="space name or .toml path")
    p.add_argument(
        "--budget", default="fast", choices=["smoke", "fast", "paper"],
        help="preset: smoke (minutes on a CPU), fast (hours on a GPU), paper (full retraining); default fast",
    )  # fmt: skip
    p.add_argument("--trials", type=int, help="trials in the study (study-wide; a resumed study counts its old ones)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting new trials after this long")
    p.add_argument(
        "--mode", default="genes", choices=["genes", "proposers"], help="what Optuna samples (default genes)"
    )
    p.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "random"], help="default tpe")
    p.add_argument("--pruner", default="none", choices=["none", "median", "hyperband"], help="needs --max-macs-ratio")
    p.add_argument("--max-macs-ratio", type=float, metavar="R", help="single objective under MACs <= R x reference")
    p.add_argument("--max-macs", type=int, metavar="N", help="single objective under MACs <= N")
    p.add_argument("--proposers", metavar="A,B", help="proposers that seed (genes) or are sampled (proposers mode)")
    p.add_argument("--reference", metavar="CKPT", help="trained reference: adds proposers that score trained weights")
    p.add_argument("--proxy-epochs", type=int, metavar="E", help="epochs per candidate (proxy recipe)")
    p.add_argument("--top-k", type=int, metavar="K", help="winners retrained with the full recipe and exported")
    p.add_argument("--final-recipe", default="scratch-e", choices=["scratch-e", "scratch-b"], help="default scratch-e")
    p.add_argument("--final-epochs", type=int, metavar="E", help="epochs of the final retraining (E of scratch-b)")
    p.add_argument("--no-final", action="store_true", help="skip the retraining and export of the winners")
    p.add_argument("--no-export", action="store_true", help="retrain the winners but do not export them")
    p.add_argument(
        "--exports", default="exports", metavar="DIR", help="root of exports/<space>/<study>/ (default exports)"
    )
    p.add_argument("--study", help="study name (default from budget, mode, sampler, seed and limit)")
    p.add_argument("--out", help="study folder (default runs/search/SPACE-DATASET-STUDY); rerun to resume")
    p.add_argument(
        "--storage", metavar="URL", help="Optuna RDB storage URL (default: a journal file in the study folder)"
    )
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes here (N per GPU with --gpus)")
    p.add_argument("--gpus", metavar="0,1,...", help="one group of --workers processes per listed GPU")
    p.add_argument(
        "--heartbeat", type=float, default=60.0, metavar="SECONDS",
        help="database storage: heartbeat of running trials; one silent for 3x this is failed and retried",
    )  # fmt: skip
    p.add_argument("--worker-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_data_args(p, default="cifar10")
    add_run_args(p)
    p.set_defaults(handler=cmd_search)
    p = sub.add_parser(
        "rethink", help="Rethinking the Value of Network Pruning: unpruned vs fine-tuned vs scratch-E/B, N seeds each"
    )
    p.add_argument("--space", required=True, help="space name or .toml path (channels or density)")
    p.add_argument("--proposer", help="pruning method that decides the genotype (see `prunenas proposers`)")
    tg = p.add_argument_group("target of --proposer (exactly one)")
    tg.add_argument("--ratio", type=float, help="fraction of prunable channels/weights removed, in [0, 1)")
    tg.add_argument("--macs-ratio", type=float, help="target MACs / reference MACs, in (0, 1] (met within 2%%)")
    tg.add_argument("--density", type=float, help="fraction of prunable weights kept (density spaces), in (0, 1]")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="proposer option (repeatable)")
    p.add_argument("--genotype", metavar="FILE", help="a fixed pruned genotype (file or shipped name), not --proposer")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="runs per arm, from --seed on (default 1)")
    p.add_argument(
        "--budget", default="paper", choices=["smoke", "fast", "paper"],
        help="epochs: paper = the recipe (160, fine-tune 40, scratch-B scaled), fast = 1/4, smoke = 2 per arm",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, metavar="E", help="base epochs E (unpruned, scratch-E; scratch-B scales E)")
    p.add_argument("--finetune-epochs", type=int, metavar="F", help="fine-tuning epochs (default 40 x budget)")
    p.add_argument("--batch-size", type=int, help="batch size of every arm (default: the space's recipe)")
    p.add_argument("--scratch-b-cap", type=float, metavar="X", help="cap scratch-B epochs at X times E")
    p.add_argument("--reference", metavar="CKPT", help="a trained reference (checkpoint.pt) instead of training one")
    p.add_argument("--ablation", metavar="A,B", help="density spaces: shuffle,reinit,invert (Frankle et al. 2021)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (arms, seeds, epochs, totals); train nothing")
    p.add_argument("--out", metavar="DIR", help="study folder (default runs/rethink/SPACE-KEY-DATASET); rerun resumes")
    p.add_argument("--json", action="store_true", help="print the plan or the outcome as JSON")
    add_data_args(p, default="cifar10")
    add_run_args(p)
    p.set_defaults(handler=cmd_rethink)
    p = sub.add_parser("export", help="export a trained run to ONNX (verified with onnx.checker and ONNX Runtime)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `prunenas train` (checkpoint.pt etc.)")
    p.add_argument("-o", "--out", metavar="DIR", help="export folder (default exports/SPACE/NAME)")
    p.add_argument("--name", help="export name (default: the genotype key, or the run folder's name if taken)")
    p.add_argument("--benchmark", action="store_true", help="measure ONNX Runtime latency and store it in model.json")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], metavar="N", help="latency batch sizes")
    p.add_argument("--repeats", type=int, default=50, metavar="N", help="timed runs per batch size (default 50)")
    p.add_argument("--provider", default="auto", help="ONNX Runtime provider: auto (CUDA if usable), cpu, cuda")
    p.add_argument("--dataset", default=None, help="test images for the parity check (default: the run's dataset)")
    p.add_argument("--data-dir", default=None, help="dataset folder or archive (default: $PRUNENAS_DATA / the run's)")
    p.add_argument("--json", action="store_true", help="print model.json (plus the output folder) as JSON")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("evaluate", help="test accuracy of an exported model.onnx with ONNX Runtime")
    p.add_argument("onnx", metavar="MODEL_ONNX", help="model.onnx written by `prunenas export` (model.json beside it)")
    p.add_argument("--dataset", default=None, help="cifar10, cifar100, digits, imagefolder (default: the model's)")
    p.add_argument("--data-dir", default=None, help="dataset folder or archive (default: $PRUNENAS_DATA, the cache)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per ONNX Runtime call")
    p.add_argument("--provider", default="auto", help="ONNX Runtime provider: auto (CUDA if usable), cpu, cuda")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        raw = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(raw)
        args.raw_argv = raw
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
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python's exit flush quiet
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
