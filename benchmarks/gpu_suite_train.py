"""Parts a and b of the GPU suite (benchmarks/gpu_suite.py): a, trainer images/s on ResNet-56 (the CUDA-graph
step check first, then each variant of train_throughput's loops); b, the standard recipe with the trainer
itself for as many epochs as fit in the window, and the projected 160-epoch time.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import statistics
import time
import traceback
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from gpu_suite_common import (
    MODELS,
    SPACE,
    TARGET_A_RATIO,
    TARGET_B_EPOCHS,
    TARGET_B_SECONDS,
    TARGETS,
    VARIANT_TEXT,
    VARIANTS,
    Context,
    _release_gpu,
    arcname,
    fmt,
    fresh_dir,
    hard_stop,
    pack,
    say,
)
from torch import nn
from train_throughput import StepRunner, prunenas_loop, reference_loop

# --------------------------------------------------------------------------------------------- part a


def check_step_runner(space: Any, genotype: Any, data: Any, device: torch.device) -> dict[str, Any]:
    """Correctness of the graph-ready step before timing it: (1) its SGD matches torch.optim.SGD (momentum,
    weight decay) on a small model; (2) on CUDA, the captured graph replays to the same weights as the same
    step run eagerly (ResNet-56-B, fp32, same batches). Relative L2 errors over all parameters/buffers."""
    from prunenas.data import DeviceBatches

    def rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a if a[k].is_floating_point())
        den = sum(float(a[k].double().pow(2).sum()) for k in a if a[k].is_floating_point())
        return math.sqrt(num / max(den, 1e-30))

    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(8, 3, 8, 8, generator=gen) for _ in range(4)]
    ys = [torch.randint(0, 10, (8,), generator=gen) for _ in range(4)]

    def small() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
        )

    ref = small()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for x, y in zip(xs, ys, strict=True):
        loss = F.cross_entropy(ref(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    mine = small()
    runner = StepRunner(mine, xs[0], ys[0], lr=0.1, momentum=0.9, weight_decay=1e-4, capture=False, warmup=0)
    for x, y in zip(xs, ys, strict=True):
        runner.step(x, y)
    out["sgd_vs_torch_rel_err"] = rel(ref.state_dict(), mine.state_dict())
    out["sgd_ok"] = out["sgd_vs_torch_rel_err"] < 1e-5
    if device.type == "cuda":
        batches = DeviceBatches(
            data.train, batch_size=64, device=device, mean=data.mean, std=data.std, augment=True, shuffle=True,
            drop_last=True, seed=0, channels_last=True,
        )  # fmt: skip
        it = batches.epoch(0)
        seq = [next(it) for _ in range(11)]
        states = []
        for capture in (False, True):
            torch.manual_seed(0)
            model = space.build(genotype, num_classes=data.num_classes).to(device)
            model.to(memory_format=torch.channels_last)
            r = StepRunner(model, *seq[0], lr=0.05, momentum=0.9, weight_decay=1e-4, amp=False, capture=capture)
            for x, y in seq[1:]:
                r.step(x, y)
            torch.cuda.synchronize(device)
            states.append({k: v.detach().cpu() for k, v in model.state_dict().items()})
            out["graph_captured" if capture else "eager_loss_sum"] = r.captured if capture else float(r.loss_sum)
            if capture:
                out["graph_loss_sum"] = float(r.loss_sum)
            del model, r
        out["graph_vs_eager_rel_err"] = rel(states[0], states[1])
        out["graph_ok"] = out["graph_vs_eager_rel_err"] < 1e-3 and math.isfinite(out["graph_loss_sum"])
        _release_gpu()
    return out


def _a_models(names: Sequence[str]) -> list[tuple[str, Any]]:
    from prunenas.genotype import Genotype
    from prunenas.space_files import genotype_path
    from prunenas.spaces import get_space

    space = get_space(SPACE)
    out = []
    for label in names:
        shipped = MODELS[label]
        out.append(
            (label, space.reference() if shipped is None else space.validate(Genotype.load(genotype_path(shipped))))
        )
    return out


def _variant_estimate(ctx: Context, variant: str) -> float:
    """Seconds a variant needs at least (setup + warm-up + timed steps); one that would not fit is skipped."""
    spec = VARIANTS[variant]
    if ctx.args.tiny or ctx.plan.a_steps < 20:
        return 30.0 if spec.get("compile") else 3.0
    if spec.get("compile"):
        return 90.0  # tens of seconds of compilation for the forward and the backward, then the steps
    if ctx.cuda:
        return 15.0 if variant == "ref" else 8.0
    return 60.0


def time_variants(
    ctx: Context, result: dict[str, Any], models: Sequence[tuple[str, Any]], variants: Sequence[str], deadline: float
) -> None:
    """Time each (model, variant); rows go to result["rows"]. A variant that would not end by `deadline`
    (monotonic) is skipped; one that fails is recorded and the others go on; one still running 10 s past the
    deadline is stopped (KeyboardInterrupt) and recorded."""
    current: list[str] = []
    try:
        with hard_stop(min(deadline - time.monotonic(), ctx.left()) + 10):
            _time_variants(ctx, result, models, variants, deadline, current)
    except KeyboardInterrupt:
        label, name = current[-2:] if len(current) >= 2 else ("?", "?")
        result["rows"].append({"model": label, "variant": name, "error": "stopped: still running at the cap"})
        say(f"  {label:12s} {name:18s} stopped: still running at the cap")
        if any(VARIANTS[v].get("compile") for v in variants):
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
        _release_gpu()


def _time_variants(
    ctx: Context,
    result: dict[str, Any],
    models: Sequence[tuple[str, Any]],
    variants: Sequence[str],
    deadline: float,
    current: list[str],
) -> None:
    from prunenas.spaces import get_space

    space = get_space(SPACE)
    data = ctx.data()
    batch = result["settings"]["batch_size"]
    for label, genotype in models:
        seen = {r["variant"].split(" ")[0] for r in result["rows"] if r["model"] == label}
        for variant in variants:
            name = variant if variant not in seen else f"{variant} (again)"
            seen.add(variant)
            spec = VARIANTS[variant]
            left = min(deadline - time.monotonic(), ctx.left())
            if left < _variant_estimate(ctx, variant):
                result["rows"].append({"model": label, "variant": name, "skipped": f"time cap ({left:.0f} s left)"})
                say(f"  {label:12s} {name:18s} skipped: {left:.0f} s left of the cap")
                continue
            ns = argparse.Namespace(
                batch_size=batch, steps=ctx.plan.a_steps, warmup=ctx.plan.a_warmup, workers=ctx.plan.a_ref_workers,
                seed=0, **{k: v for k, v in spec.items() if k != "loop"},
            )  # fmt: skip
            current[:] = [label, name]
            torch.manual_seed(0)
            model = space.build(genotype, num_classes=data.num_classes).to(ctx.device)
            stats: dict[str, Any] = {}
            loop = reference_loop if spec.get("loop") == "reference" else prunenas_loop
            try:
                ips = loop(model, data, ns, ctx.device, stats)
            except Exception as exc:  # one variant failing (e.g. compile) must not end the part
                traceback.print_exc()
                result["rows"].append({"model": label, "variant": name, "error": f"{type(exc).__name__}: {exc}"})
                say(f"  {label:12s} {name:18s} FAILED: {type(exc).__name__}: {str(exc)[:200]}")
            else:
                row = {"model": label, "variant": name, "images_per_s": ips, **stats}
                row["ms_per_step"] = 1000 * stats["seconds"] / max(1, stats["steps"])
                result["rows"].append(row)
                ctx.save("a", {**result, "status": "running"})
                say(
                    f"  {label:12s} {name:18s} {ips:9.0f} img/s  {row['ms_per_step']:7.2f} ms/step  "
                    f"setup {stats['setup_s']:5.1f} s  loss {stats['loss_mean']:.3f}"
                )
            finally:
                del model
                if spec.get("compile"):
                    with contextlib.suppress(Exception):
                        torch._dynamo.reset()
                _release_gpu()
            current.clear()


def finish_a(ctx: Context, result: dict[str, Any]) -> dict[str, Any]:
    """Ratios against the reference loop of the same model, loss agreement, noise, the verdict."""
    result["notes"] = [n for n in result.get("notes", []) if not n.startswith("loss check: ")]
    result.pop("noise", None)
    for label in dict.fromkeys(r["model"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["model"] == label and "images_per_s" in r]
        ref = next((r["images_per_s"] for r in rows if r["variant"] == "ref"), None)
        for r in rows:
            r["vs_reference"] = r["images_per_s"] / ref if ref else None
        base = [r for r in rows if r["variant"] == "bf16cl"]
        for r in rows:
            if r["variant"] != "ref" and base and r.get("loss_mean") is not None:
                d = abs(r["loss_mean"] - base[0]["loss_mean"]) / max(abs(base[0]["loss_mean"]), 1e-9)
                r["loss_vs_bf16cl"] = d
                if ctx.cuda and ctx.plan.a_steps >= 100 and d > 0.15:
                    result["notes"].append(
                        f"loss check: {label} {r['variant']}: mean loss {r['loss_mean']:.3f} differs by "
                        f"{100 * d:.0f}% from bf16cl's {base[0]['loss_mean']:.3f} (same init and batches)"
                    )
        repeats = [r["images_per_s"] for r in rows if r["variant"].startswith("bf16cl")]
        if len(repeats) == 2:
            result.setdefault("noise", {})[label] = abs(repeats[0] - repeats[1]) / statistics.mean(repeats)
    main = [r for r in result["rows"] if r["model"] == "ResNet-56" and r.get("vs_reference")]
    default = next((r for r in main if r["variant"] == "bf16cl"), None)
    best = max((r for r in main if r["variant"] != "ref"), key=lambda r: r["vs_reference"], default=None)
    result["verdict"] = {
        "target": TARGETS["a"],
        "trainer_default_ratio": default["vs_reference"] if default else None,
        "best_variant": best["variant"] if best else None,
        "best_ratio": best["vs_reference"] if best else None,
        "met_by_trainer": None if default is None else default["vs_reference"] >= TARGET_A_RATIO,
        "met_by_best_variant": None if best is None else best["vs_reference"] >= TARGET_A_RATIO,
    }
    result["status"] = "ok" if not any("skipped" in r or "error" in r for r in result["rows"]) else "partial"
    return result


def part_a(ctx: Context, cap: float) -> dict[str, Any]:
    from prunenas.spaces import get_space

    deadline = time.monotonic() + cap
    plan = ctx.plan
    space = get_space(SPACE)
    data = ctx.data()
    batch = plan.a_batch_size or int(space.recipe.get("batch_size", 64))
    models = _a_models(plan.a_models)
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True  # as the trainer does; the reference loop gets it too
    result: dict[str, Any] = {
        "settings": {
            "batch_size": batch,
            "steps": plan.a_steps,
            "warmup": plan.a_warmup,
            "ref_workers": plan.a_ref_workers,
            "variants": {v: VARIANT_TEXT[v] for v in dict.fromkeys([*plan.a_variants, *plan.a_extra_variants])},
            "extra_variants": plan.a_extra_variants,
            "cudnn_benchmark": ctx.cuda,
            "timing": "CUDA events around the timed steps" if ctx.cuda else "perf_counter",
        },
        "rows": [],
        "notes": [],
    }
    say("part a: checking the graph-ready step (SGD vs torch.optim.SGD; CUDA graph vs the same step eagerly)")
    try:
        check_model = _a_models(["ResNet-56-B"])[0][1]
        result["step_check"] = check_step_runner(space, check_model, data, ctx.device)
    except Exception as exc:  # the timings still run; the report says the check failed
        traceback.print_exc()
        result["step_check"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    say(f"  {result['step_check']}")
    chk = result["step_check"]
    if chk.get("error") or chk.get("sgd_ok") is False or chk.get("graph_ok") is False:
        result["notes"].append(f"the step check FAILED ({chk}): do not trust the graphs variants' numbers")
    if not ctx.cuda:
        result["notes"].append("CPU: bf16 autocast is off (the trainer uses it on CUDA only); no graph capture")
    variants = list(plan.a_variants)
    if plan.a_repeat and "bf16cl" in variants:
        variants.append("bf16cl")  # the same variant twice, last: the spread says what difference is noise
    time_variants(ctx, result, models, variants, deadline)
    if plan.a_extra_variants:
        result["notes"].append(
            f"{', '.join(plan.a_extra_variants)}: timed at the end of the command, only if time is left"
        )
    return finish_a(ctx, result)


def extra_a(ctx: Context, a: dict[str, Any], cap: float) -> dict[str, Any]:
    """The leftover-time variants of part a (torch.compile), appended to this command's part a."""
    t = time.monotonic()
    say(f"part a, leftover time: {', '.join(ctx.plan.a_extra_variants)} (cap {cap:.0f} s)")
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True
    time_variants(ctx, a, _a_models(ctx.plan.a_models), ctx.plan.a_extra_variants, time.monotonic() + cap)
    a["extra_seconds"] = time.monotonic() - t
    return finish_a(ctx, a)


# --------------------------------------------------------------------------------------------- part b


def part_b(ctx: Context, cap: float) -> dict[str, Any]:
    """The standard recipe with the trainer itself (prunenas.train.train, as `prunenas train SPACE --recipe
    standard --out DIR` runs it: checkpoint every epoch, validation every --eval-every epochs), fresh, for
    as many epochs as fit in the window; the 160-epoch time projected from them."""
    from prunenas.config import RunSettings
    from prunenas.data import load_dataset
    from prunenas.recipes import make_recipe
    from prunenas.spaces import get_space
    from prunenas.train import StopTraining, train

    t_part = time.monotonic()
    plan = ctx.plan
    space = get_space(ctx.space_bcd)
    dataset = ctx.dataset if ctx.args.tiny else "cifar10"  # the real part b always trains on CIFAR-10
    if dataset == ctx.dataset and not plan.b_train_subset:
        data = ctx.data()
    else:
        data = load_dataset(dataset, ctx.data_dir(dataset), train_subset=plan.b_train_subset, seed=0)
    recipe = make_recipe("standard", space.recipe)
    settings = RunSettings(
        device=str(ctx.device), seed=0, quiet=True, plot=False, eval_every=plan.b_eval_every,
        compile=plan.b_compile, resume=False,
    )  # fmt: skip
    run_dir = ctx.work / f"b-{space.name}-standard"
    fresh_dir(run_dir, ctx.work)
    steps_per_epoch = len(data.train) // recipe.batch_size if len(data.train) > recipe.batch_size else 1
    window = min(plan.b_window_s, cap - (time.monotonic() - t_part) - 5)
    hard_s = cap - (time.monotonic() - t_part) - 3
    equivalent = (
        f"prunenas train {ctx.space_bcd} --recipe standard --out {run_dir} --eval-every {plan.b_eval_every} "
        f"{' '.join(ctx.data_args(dataset))}"
        + (f" --train-subset {plan.b_train_subset}" if plan.b_train_subset else "")
        + (" --compile" if plan.b_compile else "")
    )
    say(
        f"part b: {space.name}, standard recipe ({recipe.epochs} epochs, batch {recipe.batch_size}, "
        f"{steps_per_epoch} steps/epoch) for {window:.0f} s"
    )
    marks: list[float] = []
    history: list[Any] = []
    t_start = time.perf_counter()

    def on_epoch(m: Any) -> None:
        now = time.perf_counter()
        walls = [b - a for a, b in itertools.pairwise([t_start, *marks, now])]
        marks.append(now)
        history.append(m)
        nxt = statistics.median(walls[1:]) if len(walls) > 1 else walls[0]
        if now - t_start + nxt > window:
            raise StopTraining("gpu_suite: part b window")

    # An epoch that runs past the cap is stopped (KeyboardInterrupt; the trainer has saved every finished
    # epoch, and the part reports those).
    interrupted = False
    res = None
    try:
        with hard_stop(hard_s):
            res = train(space, space.reference(), data, recipe, settings, out_dir=run_dir, callbacks=[on_epoch])
    except KeyboardInterrupt:
        interrupted = True
        say("  part b: stopped at its cap inside an epoch")
    t_end = time.perf_counter()
    walls = [b - a for a, b in itertools.pairwise([t_start, *marks])]
    done_epochs = len(history)
    finished = bool(res is not None and res.finished)
    steady = walls[1:] or walls
    median_wall = statistics.median(steady) if steady else None
    train_s = [float(h.seconds) for h in history]
    median_train = statistics.median(train_s[1:] or train_s) if train_s else None
    projected = None
    if median_wall is not None:
        projected = sum(walls) + (recipe.epochs - done_epochs) * median_wall
    value = (t_end - t_start) if finished else projected
    ms_step = 1000 * median_train / steps_per_epoch if median_train else None
    need_epoch = TARGET_B_SECONDS / TARGET_B_EPOCHS
    val = [(h.epoch, h.val_acc) for h in history if h.val_acc is not None]
    result: dict[str, Any] = {
        "command": equivalent,
        "run_dir": str(run_dir),
        "space": space.name,
        "dataset": dataset,
        "train_images": len(data.train),
        "batch_size": recipe.batch_size,
        "steps_per_epoch": steps_per_epoch,
        "window_s": window,
        "elapsed_s": t_end - t_start,
        "epochs_done": done_epochs,
        "epochs_total": recipe.epochs,
        "finished": finished,
        "interrupted": interrupted,
        "stopped": None if res is None else res.stopped,
        "epoch_wall_s": walls,
        "median_epoch_wall_s": median_wall,
        "first_epoch_wall_s": walls[0] if walls else None,
        "median_epoch_train_s": median_train,
        "ms_per_step": ms_step,
        "images_per_s_median": statistics.median([h.images_per_s for h in history[1:] or history]) if history else None,
        "non_training_share": (1 - median_train / median_wall) if median_train and median_wall else None,
        "projected_total_s": projected,
        "measured_total_s": (t_end - t_start) if finished else None,
        "last_val": val[-1] if val else None,
        "test_acc": None if res is None else res.test_acc,
        "needed_epoch_s": need_epoch,
        "needed_ms_per_step": 1000 * need_epoch / steps_per_epoch,
        "notes": [],
    }
    result["verdict"] = {
        "target": TARGETS["b"],
        "value_s": value,
        "kind": "measured" if finished else f"projected from {done_epochs} epoch(s)",
        "met": None if value is None else value <= TARGET_B_SECONDS,
        "factor_to_target": None if value is None else value / TARGET_B_SECONDS,
    }
    result["status"] = "ok" if done_epochs >= 2 or finished else ("partial" if done_epochs else "failed")
    if done_epochs == 0:
        result["error"] = "no epoch finished inside the cap: raise --cap-b / --b-window"
    elif done_epochs == 1:
        result["notes"].append("one epoch only: the projection uses the first epoch (cudnn autotuning included)")
    say(
        f"  b: {done_epochs}/{recipe.epochs} epochs in {t_end - t_start:.0f} s; median epoch "
        f"{fmt(median_wall, '.2f')} s "
        f"(training {fmt(median_train, '.2f')} s, {fmt(ms_step, '.2f')} ms/step); {result['verdict']['kind']}: "
        f"{fmt(value, '.0f')} s for {recipe.epochs} epochs (target {TARGET_B_SECONDS:.0f} s)"
    )
    if ctx.out_dir is not None:
        result["packed"] = pack(
            ctx.out_dir / "b-run.tar.gz",
            [(run_dir, arcname(run_dir))],
            skip=lambda p: p.name == "checkpoint.pt" or p.name.endswith(".tmp"),
        )
    return result
