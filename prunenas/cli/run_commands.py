"""Handlers of the long-running and deployment commands: search, rethink, export, evaluate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prunenas.cli.common import (
    check_kd_flags,
    data_config,
    fit_to_data,
    load_data,
    load_genotype,
    parse_options,
    pct,
    print_json,
    recipe_overrides,
    run_settings,
    target_from_args,
)
from prunenas.errors import PrunenasError
from prunenas.metrics import get_metric
from prunenas.recipes import KD_FIELDS
from prunenas.report import format_table
from prunenas.rethink import (
    RethinkConfig,
    check_config,
    dry_run,
    format_plan,
    format_results,
    known_train_images,
    parse_ablations,
    run_rethink,
    with_protocol,
)
from prunenas.rethink.settings import RethinkSettings
from prunenas.search import SearchConfig, SearchSettings, run_search
from prunenas.search.config import prepare_search


# -- prunenas search ---------------------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    given = SearchConfig.values_from_args(args)  # every value checked before anything is loaded
    run = run_settings(args)
    config, space = prepare_search(
        args.space, search=SearchSettings.from_dict(given.get("search", {}), where="prunenas search"),
        data=data_config(args), run=run, recipe=recipe_overrides(args), metrics=given.get("metrics"),
        evaluators=given.get("evaluators"),
    )  # fmt: skip
    data = load_data(config.data, run.seed)
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, flush=True))
    outcome = run_search(config, space, data, log=log)
    metrics = [get_metric(n) for n in dict.fromkeys(["val_acc", "macs", "params", *config.objectives])]
    if args.json:
        print_json(
            {
                "study": config.study,
                "study_dir": str(outcome.study_dir),
                "objectives": list(config.objectives),
                "limits": [lim.text() for lim in config.limits],
                "min_limits": [lim.text() for lim in config.min_limits],
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
                        **{m.name: w.metrics.get(m.name) for m in metrics},
                        "test_acc": w.final.test_acc if w.final else None,
                        "export_dir": w.export_dir,
                    }
                    for w in outcome.winners
                ],
            }
        )
        return 0
    rows = [
        [rank, w.trial, w.origin, *(m.format(w.metrics.get(m.name)) for m in metrics),
         pct(w.final.test_acc if w.final else None), w.export_dir or "-"]
        for rank, w in enumerate(outcome.winners, start=1)
    ]  # fmt: skip
    print()
    print(
        f"study {config.study!r}: {outcome.trials} trials ({outcome.complete} complete, {outcome.pruned} pruned, "
        f"{outcome.infeasible} infeasible, {outcome.failed} failed) in {outcome.wall_time_s:.0f} s; "
        f"objectives {', '.join(config.objectives)}"
        + (f" under {', '.join(config.limit_texts())}" if config.constrained else "")
    )
    if rows:
        names = [("val (proxy)" if m.name == "val_acc" else m.name) for m in metrics]
        headers = ["#", "trial", "origin", *names, "test (final)", "export"]
        print(format_table(rows, headers, "rrl" + "r" * len(metrics) + "rl"))
    else:
        print("no trial completed: nothing to retrain or export")
    print(f"study folder: {outcome.study_dir} (trials.csv, trials.json, pareto.png, best/, summary.json)")
    if not config.search.storage:
        print(f"dashboard: optuna-dashboard {outcome.study_dir / 'study.journal'}")
    return 0


# -- prunenas rethink -------------------------------------------------------------------------------------
def cmd_rethink(args: argparse.Namespace) -> int:
    from prunenas.spaces import get_space

    if args.proposer and args.genotype:
        raise PrunenasError("give either --proposer P (the method decides the genotype) or --genotype FILE, not both")
    if not args.proposer and not args.genotype:
        raise PrunenasError(
            "say what to prune: --proposer P with --ratio R, --macs-ratio R or --density D, or --genotype FILE"
        )
    study = RethinkSettings.from_args(args)
    targets = [v for v in (args.ratio, args.macs_ratio, args.density) if v is not None]
    if args.genotype and (targets or args.option):
        raise PrunenasError("--ratio/--macs-ratio/--density/--option go with --proposer; a --genotype is fixed")
    ablations = parse_ablations(study.ablation)
    kd = {k: getattr(args, k) for k in KD_FIELDS if getattr(args, k, None) is not None}
    check_kd_flags(kd, args.teacher)
    settings = run_settings(args)
    data_cfg = data_config(args)
    if args.genotype:
        space, genotype = load_genotype(args.genotype, args.space)
    else:
        space, genotype = get_space(args.space), None
    space, genotype = fit_to_data(space, genotype, image_size=data_cfg.image_size, dataset=data_cfg.dataset)
    config = RethinkConfig(
        space=space,
        dataset=data_cfg.dataset,
        genotype=genotype,
        proposer=args.proposer,
        proposer_options=parse_options(args.option),
        target=target_from_args(args) if args.proposer else None,
        reference=study.reference,
        teacher=args.teacher,
        kd=kd,
        seeds=study.seeds,
        budget=study.budget,
        epochs=study.epochs,
        finetune_epochs=study.finetune_epochs,
        batch_size=study.batch_size,
        scratch_b_cap=study.scratch_b_cap,
        ablations=ablations,
        out=Path(study.out) if study.out else None,
        settings=settings,
        data=data_cfg,
        protocol=study.protocol,
    )
    config = with_protocol(config)  # the preset's data, run and space settings (explicit flags win)
    assert config.data is not None
    data_cfg, settings = config.data, config.settings
    check_config(config)  # bad input fails here, before any dataset is loaded
    if args.dry_run:
        images = known_train_images(
            data_cfg.dataset, train_subset=data_cfg.train_subset, val_size=data_cfg.val_size, seed=settings.seed
        )
        plan = dry_run(config, train_images=images)
        if args.json:
            print_json({"dry_run": True, **plan.to_dict()})
        else:
            print(format_plan(plan))
            print("dry run: nothing trained")
        return 0
    data = load_data(data_cfg, settings.seed)
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, flush=True))
    outcome = run_rethink(config, data, log=log)
    if args.json:
        print_json(outcome.to_dict())
        return 0
    print()
    print(format_results(outcome))
    print(
        f"{outcome.trained} run(s) trained, {outcome.skipped} found finished, {outcome.wall_time_s:.0f} s; "
        f"study folder {outcome.plan.study_dir} (rethink.txt, rethink.json, rethink.png, one folder per run)"
    )
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
            opset=args.opset,
            space=args.space,
            precision=args.precision,
            runtime=args.runtime,
            calibration_images=args.calibration_images,
            threads=args.threads,
            engine=args.engine,
        )
    except ExportError as exc:  # the export itself is wrong, not the input: exit 1, still one line
        print(f"prunenas: error: {exc}", file=sys.stderr)
        return 1
    s = result.sidecar
    if args.json:
        print_json({**s, "out": str(result.out_dir)})
        return 0
    exp, parity, acc = s["export"], s["parity"], s["accuracy"]
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
        [f"val / test {score_label(s.get('task'))}", f"{pct(acc['val_acc'])} / {pct(acc['test_acc'])}"],
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
    for target in ("openvino", "tensorrt"):
        if parity.get(target):
            rows.append(
                [
                    f"parity in {target}",
                    f"max |diff| {parity[target]['max_abs_diff']:.1e} ({parity[target]['provider']})",
                ]
            )
    extra = ""
    for precision, e in (s.get("precisions") or {}).items():
        name = precision.upper()
        rows.append([f"{name} model", f"{e['file']} ({human(e['bytes'])}B)"])
        rows.append(
            [
                f"{name} test accuracy",
                f"{pct(e['test_acc'])} vs FP32 {pct(e['fp32_test_acc'])}: drop {e['drop_points']:.2f} points "
                f"({e['test_images']} images, {e['runtime']})",
            ]
        )
        rows.append(
            [
                f"{name} vs FP32",
                f"top-1 agreement {pct(e['top1_agreement'])}, largest logit difference {e['max_abs_logit_diff']:.3g}",
            ]
        )
        lat = e["latency"]
        for b, v in lat[precision].items():
            rows.append(
                [
                    f"latency batch {b}",
                    f"FP32 {lat['fp32'][b]['median_ms']:.3g} ms, {name} {v['median_ms']:.3g} ms: "
                    f"{lat['speedup'][b]:.2f}x",
                ]
            )
        extra += f", {result.out_dir / e['file']}"
    for engine, e in (s.get("engines") or {}).items():
        rows.append([f"{engine} engine", f"{e['file']} ({e['precision']}, {e['seconds']:.0f} s to build, {e['gpu']})"])
        extra += f", {result.out_dir / e['file']}"
    print(format_table(rows, ["", ""], "ll"))
    out = result.out_dir
    print(
        f"wrote {out / 'model.onnx'} ({human(s['files']['bytes'])}B), {out / 'model.json'}, {out / 'README.md'}{extra}"
    )
    return 0


def score_label(task: object) -> str:
    """What a run's val_acc/test_acc hold, by the task a model.json or evaluation names (none: classification)."""
    from prunenas.tasks import CLASSIFICATION, get_task

    return get_task(task if isinstance(task, str) else CLASSIFICATION).metric_label


def cmd_evaluate(args: argparse.Namespace) -> int:
    from prunenas.export import evaluate_onnx

    r = evaluate_onnx(
        args.onnx, args.dataset, args.data_dir, provider=args.provider, batch_size=args.batch_size, runtime=args.runtime
    )
    if args.json:
        print_json(r)
        return 0
    where = r["provider"] if r["provider"].startswith(r["runtime"]) else f"{r['runtime']} {r['provider']}"
    score = score_label(r.get("task"))
    counted = f"({r['correct']}/{r['images']})" if score == "accuracy" else f"({r['images']} images)"
    line = (
        f"{r['dataset']} test {score} {100 * r['accuracy']:.2f}% {counted} with {where} "
        f"({r['precision']}, {r['images_per_s']:.0f} img/s)"
    )
    print(line)
    if r["torch_test_acc"] is not None:
        print(
            f"PyTorch test {score} (metrics.json, {r['torch_test_acc_precision']}): {100 * r['torch_test_acc']:.2f}%, "
            f"difference {100 * r['difference']:+.2f} points"
        )
    return 0
