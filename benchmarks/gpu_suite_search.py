"""Parts c and d of the GPU suite (benchmarks/gpu_suite.py): c, 1 and several worker processes on one GPU
training proxy candidates (candidates per hour); d, a short real `prunenas search`, the best retrained and
exported to ONNX, and the export's ONNX Runtime latency.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from gpu_suite_common import (
    TARGET_C_RATIO,
    TARGETS,
    Context,
    _release_gpu,
    arcname,
    fmt,
    fresh_dir,
    pack,
    run_logged,
    say,
    tail,
)

# --------------------------------------------------------------------------------------------- part c


def _c_worker(wid: int, cfg: dict[str, Any], counter: Any, start_at: Any, go: Any, queue: Any) -> None:
    """One worker of part c: trains proxy candidates (the i-th: the space's random genotype i, i from a shared
    counter) back to back from the common start until the window closes; reports each epoch's end time."""
    try:
        if cfg["threads"]:
            torch.set_num_threads(cfg["threads"])
        from prunenas.config import RunSettings
        from prunenas.cost import genotype_cost
        from prunenas.data import load_dataset
        from prunenas.recipes import make_recipe
        from prunenas.spaces import get_space
        from prunenas.train import StopTraining, resolve_device, train

        data = load_dataset(cfg["dataset"], cfg["data"], train_subset=cfg["train_subset"], seed=0)
        space = get_space(cfg["space"])
        recipe = make_recipe("proxy", space.recipe, overrides={"epochs": cfg["epochs"]})
        device = resolve_device(cfg["device"])
        if device.type == "cuda":
            torch.zeros(1, device=device)  # the CUDA context, before the window opens
        queue.put(("ready", wid, None))
        if not go.wait(timeout=cfg["startup_timeout"]):
            queue.put(("error", wid, "no start signal"))
            return
        time.sleep(max(0.0, start_at.value - time.time()))
        deadline = start_at.value + cfg["window"]
        candidates = []
        while time.time() < deadline:
            with counter.get_lock():
                index = counter.value
                counter.value += 1
            genotype = space.random_genotype(seed=cfg["seed"] + index)
            ends: list[float] = []

            def on_epoch(m: Any, ends: list[float] = ends) -> None:
                ends.append(time.time())
                if ends[-1] >= deadline:
                    raise StopTraining("window closed")

            started = time.time()
            train(
                space, genotype, data, recipe,
                RunSettings(device=cfg["device"], seed=0, quiet=True, plot=False, checkpoint=False),
                callbacks=[on_epoch], evaluate_test=False,
            )  # fmt: skip
            cost = genotype_cost(space, genotype, num_classes=data.num_classes)
            candidates.append(
                {"index": index, "key": genotype.key, "macs_ratio": cost.macs_ratio, "start": started, "ends": ends}
            )
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        queue.put(("done", wid, {"candidates": candidates, "deadline": deadline, "peak_mem": peak}))
    except BaseException:
        queue.put(("error", wid, traceback.format_exc()))


def _c_setting(ctx: Context, n: int, cfg: dict[str, Any]) -> dict[str, Any]:
    import multiprocessing as mp
    import queue as queue_mod

    mpc = mp.get_context("spawn")
    counter, start_at, go, q = mpc.Value("i", 0), mpc.Value("d", 0.0), mpc.Event(), mpc.Queue()
    procs = [mpc.Process(target=_c_worker, args=(w, cfg, counter, start_at, go, q), daemon=True) for w in range(n)]
    t_spawn = time.monotonic()
    for p in procs:
        p.start()
    msgs: dict[str, list[Any]] = {"ready": [], "done": [], "error": []}

    def collect(kind: str, until: float) -> None:
        while len(msgs[kind]) + len(msgs["error"]) < n and time.monotonic() < until:
            try:
                k, wid, payload = q.get(timeout=max(0.1, min(5.0, until - time.monotonic())))
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            msgs[k].append((wid, payload))

    try:
        collect("ready", time.monotonic() + cfg["startup_timeout"])
        startup = time.monotonic() - t_spawn
        if msgs["error"] or len(msgs["ready"]) < n:
            errors = [p for _, p in msgs["error"]] or ["workers did not report ready in time"]
            raise RuntimeError(f"{n} worker(s): {errors[0]}")
        start_at.value = time.time() + 0.5
        go.set()
        collect("done", time.monotonic() + 0.5 + cfg["window"] + cfg["drain_timeout"])
        if msgs["error"]:
            raise RuntimeError(f"{n} worker(s): {msgs['error'][0][1]}")
        if len(msgs["done"]) < n:
            raise RuntimeError(f"{n} worker(s): only {len(msgs['done'])} reported within the window + drain time")
    finally:
        for p in procs:
            p.join(timeout=5)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    window, epochs = cfg["window"], cfg["epochs"]
    epochs_in = 0
    completed = started = 0
    epoch_times: list[float] = []
    for _, payload in msgs["done"]:
        deadline = payload["deadline"]
        for c in payload["candidates"]:
            started += 1
            ok = [t for t in c["ends"] if t <= deadline]
            epochs_in += len(ok)
            completed += int(len(ok) >= epochs)
            marks = [c["start"], *c["ends"]]
            epoch_times += [b - a for a, b in itertools.pairwise(marks)]
    return {
        "workers": n,
        "startup_s": startup,
        "window_s": window,
        "epochs_in_window": epochs_in,
        "candidates_started": started,
        "candidates_completed": completed,
        "candidates_per_hour": epochs_in / epochs * 3600 / window,
        "median_epoch_s_per_worker": statistics.median(epoch_times) if epoch_times else None,
        "peak_mem_gib_per_worker": [
            round(p["peak_mem"] / 2**30, 2) for _, p in msgs["done"] if p.get("peak_mem") is not None
        ],
    }


def part_c(ctx: Context, cap: float) -> dict[str, Any]:
    t_part = time.monotonic()
    plan = ctx.plan
    ctx.data()  # fill the dataset cache the workers read
    _release_gpu()
    cfg = {
        "dataset": ctx.dataset,
        "data": ctx.data_dir(),
        "train_subset": plan.c_train_subset,
        "space": ctx.space_bcd,
        "epochs": plan.c_proxy_epochs,
        "device": str(ctx.device),
        "seed": 1000,
        "window": plan.c_window_s,
        "threads": plan.c_threads,
        "startup_timeout": plan.c_startup_timeout_s,
        "drain_timeout": plan.c_drain_s,
    }
    result: dict[str, Any] = {
        "settings": {
            **{k: cfg[k] for k in ("train_subset", "space", "epochs", "window", "threads")},
            "candidates": f"{ctx.space_bcd} random genotypes (seed 1000 + i, the same sequence for every setting)",
            "recipe": f"proxy, {plan.c_proxy_epochs} epochs, validation every epoch (as the search's trials)",
            "measure": "epochs finished inside the common window, all workers; candidates/hour = that / "
            "proxy epochs x 3600 / window (so per-candidate costs inside the window count, partial ones too)",
        },
        "rows": [],
        "notes": [],
    }
    for n in plan.c_workers:
        left = min(cap - (time.monotonic() - t_part), ctx.left())
        need = plan.c_window_s + (8 if ctx.args.tiny else 12) + n + min(plan.c_drain_s, 5)
        if left < need:
            result["rows"].append({"workers": n, "skipped": f"time cap ({left:.0f} s left, ~{need:.0f} s needed)"})
            say(f"part c: {n} worker(s) skipped: {left:.0f} s left")
            continue
        say(f"part c: {n} worker(s), {plan.c_window_s:.0f} s window")
        try:
            row = _c_setting(ctx, n, cfg)
        except Exception as exc:
            traceback.print_exc()
            result["rows"].append({"workers": n, "error": f"{type(exc).__name__}: {str(exc)[-2000:]}"})
            say(f"  {n} worker(s) FAILED: {str(exc)[:300]}")
            continue
        result["rows"].append(row)
        ctx.save("c", {**result, "status": "running"})
        say(
            f"  {n} worker(s): {row['epochs_in_window']} epochs in {row['window_s']:.0f} s -> "
            f"{row['candidates_per_hour']:.1f} candidates/h ({row['candidates_completed']} completed, "
            f"median epoch {row['median_epoch_s_per_worker'] or 0:.2f} s per worker, startup {row['startup_s']:.1f} s)"
        )
    result["rows"].sort(key=lambda r: r.get("workers", 0))
    one = next((r for r in result["rows"] if r.get("workers") == 1 and "candidates_per_hour" in r), None)
    for r in result["rows"]:
        if one and "candidates_per_hour" in r:
            r["vs_one_worker"] = (
                r["candidates_per_hour"] / one["candidates_per_hour"] if one["candidates_per_hour"] else None
            )
    several = [r for r in result["rows"] if r.get("workers", 1) > 1 and r.get("vs_one_worker") is not None]
    best = max(several, key=lambda r: r["vs_one_worker"], default=None)
    result["verdict"] = {
        "target": TARGETS["c"],
        "best_workers": best["workers"] if best else None,
        "best_ratio": best["vs_one_worker"] if best else None,
        "met": None if best is None else best["vs_one_worker"] >= TARGET_C_RATIO,
    }
    if one and not one["epochs_in_window"]:
        result["notes"].append("1 worker finished no epoch inside the window: the ratio is undefined; widen --c-window")
    ok = [r for r in result["rows"] if "candidates_per_hour" in r]
    result["status"] = "ok" if len(ok) == len(result["rows"]) else ("partial" if ok else "failed")
    if not ok:
        result["error"] = "; ".join(str(r.get("error") or r.get("skipped"))[:200] for r in result["rows"])
    return result


# --------------------------------------------------------------------------------------------- part d


def _trial_span(study_dir: Path, study: str) -> dict[str, Any]:
    """First start and last end of the finished trials, from the study's journal (optuna reads it)."""
    try:
        import optuna
        from optuna.storages.journal import JournalFileBackend

        from prunenas.search import JOURNAL

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        done = [
            t for t in trials if t.datetime_start and t.datetime_complete and t.state.name in ("COMPLETE", "PRUNED")
        ]
        if not done:
            return {}
        first = min(t.datetime_start for t in done if t.datetime_start)
        last = max(t.datetime_complete for t in done if t.datetime_complete)
        span = (last - first).total_seconds()
        return {"trials_span_s": span, "trials_per_hour": len(done) * 3600 / span if span > 0 else None}
    except Exception as exc:  # the report goes on without the rate
        return {"trials_span_error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def _onnx_latency(onnx_path: Path, repeats: int, cuda: bool) -> dict[str, Any]:
    """ONNX Runtime latency of the export: CUDA provider where this onnxruntime has it, and CPU."""
    import onnxruntime as ort

    from prunenas.export import onnx_latency

    available = list(ort.get_available_providers())
    out: dict[str, Any] = {"available_providers": available, "onnxruntime": ort.__version__}
    providers = (["cuda"] if cuda and "CUDAExecutionProvider" in available else []) + ["cpu"]
    for provider in providers:
        try:
            lat = onnx_latency(onnx_path, (1, 64), repeats=repeats, warmup=min(10, repeats), provider=provider)
            out[provider] = {
                "provider_used": lat.get("provider"),
                "per_batch": {
                    b: {k: v.get(k) for k in ("median_ms", "p90_ms", "images_per_s")}
                    for b, v in (lat.get("per_batch") or {}).items()
                },
            }
        except Exception as exc:
            out[provider] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


def part_d(ctx: Context, cap: float) -> dict[str, Any]:
    t_part = time.monotonic()
    plan = ctx.plan
    suffix = "-tiny" if ctx.args.tiny else ""
    study = f"gpu-suite{suffix}"
    study_dir = ctx.work / f"d-search{suffix}"
    exports = ctx.work / f"d-exports{suffix}"
    for folder in (study_dir, exports):  # a fresh study every command: 6 trials are a measurement, not a resume
        fresh_dir(folder, ctx.work)
    ctx.data()  # fill the cache first
    latency_s = 10 if ctx.args.tiny else 20
    startup_s = 20 if ctx.args.tiny else 30  # process start, data from the cache, the proposers' seeding
    cap -= time.monotonic() - t_part
    trial_timeout = max(10.0, cap - plan.d_reserve_s - startup_s - latency_s)
    argv = [
        "search", "--space", ctx.space_bcd, "--budget", plan.d_budget, "--trials", str(plan.d_trials),
        "--proxy-epochs", str(plan.d_proxy_epochs), "--top-k", "1", "--final-epochs", str(plan.d_final_epochs),
        "--proposers", plan.d_proposers, "--study", study, "--out", str(study_dir),
        "--exports", str(exports), "--device", str(ctx.device), "--timeout", f"{trial_timeout:.0f}",
        "--workers", str(plan.d_workers), "--json", "--quiet", *ctx.data_args(),
    ]  # fmt: skip
    if plan.d_train_subset:
        argv += ["--train-subset", str(plan.d_train_subset)]
    say(
        f"part d: prunenas search ({plan.d_trials} trials x {plan.d_proxy_epochs} epochs, {plan.d_workers} "
        f"worker(s)), cap {cap:.0f} s"
    )
    run = run_logged(ctx.cli(*argv), ctx.work / "logs" / f"d-search{suffix}.log", timeout=cap - latency_s - 5)
    result: dict[str, Any] = {
        "command": "prunenas " + " ".join(argv),
        "study_dir": str(study_dir),
        "run": run,
        "settings": {
            "space": ctx.space_bcd,
            "trials": plan.d_trials,
            "proxy_epochs": plan.d_proxy_epochs,
            "final_epochs": plan.d_final_epochs,
            "train_subset": plan.d_train_subset,
            "proposers": plan.d_proposers,
            "budget": plan.d_budget,
            "workers": plan.d_workers,
            "trial_timeout_s": trial_timeout,
        },
        "notes": [],
    }
    trials_file, summary_file = study_dir / "trials.json", study_dir / "summary.json"
    rows = json.loads(trials_file.read_text()) if trials_file.exists() else []
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    by_number = {r["number"]: r for r in rows}
    done = [r for r in rows if r.get("state") in ("COMPLETE", "PRUNED")]
    durations = [float(r["duration_s"]) for r in done if r.get("duration_s")]
    front = [by_number[n] for n in summary.get("pareto_front", []) if n in by_number]
    result.update(
        trials_done=len(done),
        trials_planned=plan.d_trials,
        states={s: sum(1 for r in rows if r.get("state") == s) for s in sorted({str(r.get("state")) for r in rows})},
        mean_trial_s=statistics.mean(durations) if durations else None,
        pareto_front=[
            {k: r.get(k) for k in ("number", "origin", "proposer", "macs_ratio", "val_acc", "train_time_s")}
            for r in sorted(front, key=lambda r: r.get("macs_ratio") or 0)
        ],
        **(_trial_span(study_dir, study) if done else {}),
    )
    winners = summary.get("winners") or []
    if winners:
        w = winners[0]
        final = w.get("final") or {}
        result["best"] = {
            "trial": w.get("trial"), "key": w.get("key"), "origin": w.get("origin"), "macs": w.get("macs"),
            "val_acc_proxy": w.get("val_acc_proxy"), "test_acc_final": final.get("test_acc"),
            "final_epochs": final.get("epochs_run"), "export_dir": w.get("export_dir"),
        }  # fmt: skip
        sidecar = Path(w["export_dir"]) / "model.json" if w.get("export_dir") else None
        if sidecar is not None and sidecar.exists():
            s = json.loads(sidecar.read_text())
            parity = s.get("parity") or {}
            onnx_path = Path(w["export_dir"]) / "model.onnx"
            result["best"]["onnx"] = {
                "file": str(onnx_path),
                "bytes": (s.get("files") or {}).get("bytes"),
                "exporter": (s.get("export") or {}).get("method"),
                "parity_passed": parity.get("passed"),
                "parity_max_abs_diff": parity.get("max_abs_diff"),
                "parity_tolerance": parity.get("tolerance"),
                "parity_provider": parity.get("provider"),
                "parity_checks": [
                    {k: c.get(k) for k in ("input", "batch", "max_abs_diff", "argmax_agreement")}
                    for c in parity.get("checks") or []
                ],
            }
            say("  d: ONNX Runtime latency of the export")
            lat = _onnx_latency(onnx_path, plan.d_latency_repeats, ctx.cuda)
            result["best"]["onnx"]["latency"] = lat
            if ctx.cuda and "CUDAExecutionProvider" not in lat["available_providers"]:
                result["notes"].append(
                    f"onnxruntime {lat['onnxruntime']} here has no CUDAExecutionProvider (providers: "
                    f"{', '.join(lat['available_providers'])}): parity and latency ran on the CPU provider; the "
                    "CUDA provider needs onnxruntime-gpu on the machine"
                )
    onnx = (result.get("best") or {}).get("onnx") or {}
    complete = len(done) >= plan.d_trials
    met = bool(front) and bool(onnx.get("parity_passed")) and complete
    if run["timed_out"]:
        result["notes"].append("the search hit the part's cap and was stopped (raise --cap-d or run --parts d alone)")
    elif run["rc"] != 0:
        result["error"] = f"prunenas search exited with {run['rc']}: {tail(run['log'], 1)}"
        result["notes"].append(f"prunenas search exited with {run['rc']}: {tail(run['log'], 8)}")
    if not complete:
        result["notes"].append(f"{len(done)}/{plan.d_trials} trials done (the --timeout for trials ran out)")
    result["verdict"] = {"target": TARGETS["d"], "met": met, "trials": f"{len(done)}/{plan.d_trials}"}
    result["status"] = "ok" if met else ("failed" if run["rc"] not in (0, None) and not rows else "partial")
    say(
        f"  d: {len(done)}/{plan.d_trials} trials ({fmt(result.get('trials_per_hour'), '.0f')} trials/h), Pareto "
        f"front {len(front)}, best {(result.get('best') or {}).get('key')}, ONNX parity {onnx.get('parity_passed')} "
        f"on {onnx.get('parity_provider')} (max |diff| {fmt(onnx.get('parity_max_abs_diff'), '.1e')})"
    )
    if ctx.out_dir is not None:

        def skip(p: Path) -> bool:  # the trial checkpoints are too many to carry
            return p.name == "checkpoint.pt" or p.name.endswith((".tmp", ".lock"))

        result["packed"] = pack(
            ctx.out_dir / "d-search.tar.gz", [(study_dir, arcname(study_dir)), (exports, arcname(exports))], skip
        )
    return result
