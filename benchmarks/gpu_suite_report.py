"""The GPU suite's results (benchmarks/gpu_suite.py): the device description, the predictions that combine
parts, the summary table against the targets, the Markdown report and the results pair <tag>.json / .md
(merged with an earlier command's file of the same tag).
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import common
import torch
from gpu_suite_common import (
    FORMAT,
    PARTS,
    SPACE,
    TARGET_A_RATIO,
    TARGET_B_SECONDS,
    TARGET_C_RATIO,
    TARGETS,
    fmt,
    say,
)

# --------------------------------------------------------------------------------------------- results


def device_info(device: torch.device) -> dict[str, Any]:
    machine = common.machine()
    info: dict[str, Any] = {
        "name": common.device_name(device),
        "type": device.type,
        "torch": machine["torch"],
        "cuda": machine["cuda"],
        "python": machine["python"],
        "cpus": machine["cpu_count"],
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            memory_gib=round(props.total_memory / 2**30, 1),
            sms=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
            tf32={"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        )
        with contextlib.suppress(Exception):
            q = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            info["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else None
    with contextlib.suppress(Exception):
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = list(ort.get_available_providers())
    return info


def met_text(v: Any) -> str:
    return {True: "yes", False: "NO", None: "-"}.get(v, str(v))


def ratio_distance(value: float | None, target: float) -> str:
    """How far a 'higher is better' ratio is from its target."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "-"
    if value >= target:
        return f"met, {value / target:.2f}x the target"
    return f"{target / value:.2f}x short (needs {target:g}x, has {value:.2f}x)"


def derive(results: dict[str, Any]) -> dict[str, Any]:
    """Predictions that combine parts (the ones the next tuning round tests); stored under results["predictions"]."""
    parts = results.get("parts", {})
    a, b, c, d = (parts.get(p) or {} for p in PARTS)
    out: dict[str, Any] = {}
    rows = [r for r in a.get("rows", []) if r.get("model") == "ResNet-56" and "ms_per_step" in r]
    graphs = next((r for r in rows if r["variant"] == "graphs"), None)
    bf16 = next((r for r in rows if r["variant"] == "bf16cl"), None)
    same_batch = graphs is not None and b.get("batch_size") == (a.get("settings") or {}).get("batch_size")
    if graphs and b.get("ms_per_step") and b.get("median_epoch_wall_s") and same_batch and b.get("space") == SPACE:
        saved = (b["ms_per_step"] - graphs["ms_per_step"]) / 1000 * b["steps_per_epoch"]
        epoch = max(b["median_epoch_wall_s"] - saved, 1e-9)
        total = (b.get("first_epoch_wall_s") or epoch) + (b["epochs_total"] - 1) * epoch
        out["graphs_in_trainer"] = {
            "what": "part b's epochs with the trainer's step at part a's graphs ms/step (validation, checkpoints "
            "and the rest of an epoch unchanged)",
            "epoch_s": epoch,
            "projected_total_s": total,
            "met": total <= TARGET_B_SECONDS,
            "trainer_vs_reference": graphs.get("vs_reference"),
            "bf16cl_ms_per_step_a": bf16["ms_per_step"] if bf16 else None,
            "trainer_ms_per_step_b": b["ms_per_step"],
            "graphs_ms_per_step_a": graphs["ms_per_step"],
        }
    cv = c.get("verdict") or {}
    if cv.get("best_ratio"):
        pred: dict[str, Any] = {
            "what": f"`prunenas search --workers {cv['best_workers']}` on one GPU: trials/hour x part c's ratio",
            "workers": cv["best_workers"],
            "ratio": cv["best_ratio"],
        }
        if d.get("trials_per_hour") and (d.get("settings") or {}).get("workers") == 1:
            pred["trials_per_hour_1_worker"] = d["trials_per_hour"]
            pred["predicted_trials_per_hour"] = d["trials_per_hour"] * cv["best_ratio"]
        out["workers_per_gpu"] = pred
    results["predictions"] = out
    return out


def summary_rows(results: dict[str, Any]) -> list[list[str]]:
    """(part, measured, target, distance, met) lines for the table printed last and the top of the report."""
    parts = results.get("parts", {})
    rows = []
    a = parts.get("a", {}).get("verdict")
    if a:
        measured = (
            f"trainer (bf16cl) {fmt(a['trainer_default_ratio'], '.2f')}x; best {a['best_variant'] or '-'} "
            f"{fmt(a['best_ratio'], '.2f')}x the reference loop (ResNet-56)"
        )
        distance = (
            f"trainer {ratio_distance(a['trainer_default_ratio'], TARGET_A_RATIO)}; best "
            f"{ratio_distance(a['best_ratio'], TARGET_A_RATIO)}"
        )
        met = f"{met_text(a['met_by_trainer'])} / best {met_text(a['met_by_best_variant'])}"
        rows.append(["a", measured, f">= {TARGET_A_RATIO:g}x", distance, met])
    b = parts.get("b")
    if b and b.get("verdict"):
        v = b["verdict"]
        measured = (
            f"{b['epochs_done']} epochs of {b['epochs_total']} in {fmt(b.get('elapsed_s'), '.0f')} s, median epoch "
            f"{fmt(b.get('median_epoch_wall_s'), '.2f')} s ({fmt(b.get('ms_per_step'), '.2f')} ms/step); "
            f"{v['kind']}: {fmt(v['value_s'], '.0f')} s for {b['epochs_total']}"
        )
        if v["value_s"] is None:
            distance = "-"
        elif v["met"]:
            distance = f"met, {TARGET_B_SECONDS - v['value_s']:.0f} s to spare"
        else:
            distance = (
                f"{v['factor_to_target']:.1f}x too slow (+{v['value_s'] - TARGET_B_SECONDS:.0f} s): needs <= "
                f"{b['needed_epoch_s']:.2f} s/epoch, <= {b['needed_ms_per_step']:.2f} ms/step at "
                f"{b['steps_per_epoch']} steps/epoch with everything else free"
            )
        rows.append(["b", measured, f"<= {TARGET_B_SECONDS:.0f} s", distance, met_text(v["met"])])
    c = parts.get("c", {}).get("verdict")
    if c:
        measured = f"{fmt(c['best_ratio'], '.2f')}x the candidates/h of 1 worker, with {c['best_workers']} workers"
        rows.append(
            [
                "c",
                measured,
                f">= {TARGET_C_RATIO:g}x",
                ratio_distance(c["best_ratio"], TARGET_C_RATIO),
                met_text(c["met"]),
            ]
        )
    d = parts.get("d")
    if d and d.get("verdict"):
        onnx = (d.get("best") or {}).get("onnx") or {}
        measured = (
            f"{d['verdict']['trials']} trials ({fmt(d.get('trials_per_hour'), '.0f')}/h), Pareto front of "
            f"{len(d.get('pareto_front') or [])}, ONNX parity {met_text(onnx.get('parity_passed'))} on "
            f"{onnx.get('parity_provider') or '-'} (max abs diff {fmt(onnx.get('parity_max_abs_diff'), '.1e')})"
        )
        if d.get("error"):
            measured += f"; {d['error'][:160]}"
        missing = [
            what
            for what, ok in (
                ("trials", d["verdict"]["trials"].split("/")[0] == d["verdict"]["trials"].split("/")[1]),
                ("Pareto front", bool(d.get("pareto_front"))),
                ("ONNX parity", bool(onnx.get("parity_passed"))),
            )
            if not ok
        ]
        distance = "met" if not missing else "missing: " + ", ".join(missing)
        rows.append(["d", measured, "end to end", distance, met_text(d["verdict"]["met"])])
    for p in PARTS:
        if p in parts and parts[p].get("status") in ("failed", "skipped") and not parts[p].get("verdict"):
            why = f"{parts[p]['status']}: {str(parts[p].get('error', ''))[:100]}"
            rows.append([p, why, TARGETS[p][:30], "not measured", "-"])
    return rows


SUMMARY_HEADER = ["part", "measured", "target", "distance to target", "met"]


def table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _md_a(a: dict[str, Any]) -> list[str]:
    s = a.get("settings", {})
    extra = f" + {fmt(a['extra_seconds'], '.0f')} s at the end" if a.get("extra_seconds") else ""
    out = [f"## a. Trainer throughput, ResNet-56 ({a.get('status')}, {fmt(a.get('seconds'), '.0f')} s{extra})", ""]
    out.append(
        f"Batch {s.get('batch_size')}, {s.get('steps')} timed steps after {s.get('warmup')} warm-up steps; "
        f"{s.get('timing')}; reference loop with {s.get('ref_workers')} DataLoader workers; cudnn.benchmark "
        f"{s.get('cudnn_benchmark')}."
    )
    out += ["", "Variants:", ""] + [f"- `{k}`: {v}" for k, v in (s.get("variants") or {}).items()]
    rows = []
    for r in a.get("rows", []):
        if "images_per_s" in r:
            ratio = fmt(r.get("vs_reference"), ".2f") + "x"
            numbers = [fmt(r["images_per_s"], ".0f"), fmt(r["ms_per_step"], ".2f"), ratio]
            rows.append(
                [r["model"], r["variant"], *numbers, fmt(r.get("setup_s"), ".1f"), fmt(r.get("loss_mean"), ".3f")]
            )
        else:
            rows.append([r["model"], r["variant"], r.get("skipped") or r.get("error", ""), "", "", "", ""])
    header = ["model", "variant", "images/s", "ms/step", "vs reference", "setup s", "mean loss"]
    out += ["", table(rows, header), ""]
    chk = a.get("step_check") or {}
    noise = ", ".join(f"{k} {100 * v:.1f}%" for k, v in (a.get("noise") or {}).items()) or "-"
    out.append(
        f"Step check: StepRunner's SGD vs torch.optim.SGD rel. err {fmt(chk.get('sgd_vs_torch_rel_err'), '.1e')}; "
        f"CUDA graph vs the same step eagerly (ResNet-56-B, fp32, 10 steps) rel. err "
        f"{fmt(chk.get('graph_vs_eager_rel_err'), '.1e')} (captured: {chk.get('graph_captured', '-')}). "
        f"Noise (bf16cl timed twice): {noise}."
    )
    if a.get("notes"):
        out += [""] + [f"- {n}" for n in a["notes"]]
    return [*out, ""]


def _md_b(b: dict[str, Any]) -> list[str]:
    out = [f"## b. Standard recipe, {b.get('space')}, {b.get('epochs_total')} epochs ({b.get('status')})", ""]
    if "epochs_done" in b:
        all_walls = b.get("epoch_wall_s") or []
        walls = ", ".join(fmt(w, ".2f") for w in all_walls[:12]) + (", ..." if len(all_walls) > 12 else "")
        out += [
            f"Same as `{b.get('command')}` (in-process, fresh, stopped after the {fmt(b.get('window_s'), '.0f')} s "
            f"window).",
            "",
            f"- {b.get('space')} on {b.get('dataset')}: {b.get('train_images')} training images, batch "
            f"{b.get('batch_size')}, {b.get('steps_per_epoch')} steps/epoch",
            f"- epochs done: {b['epochs_done']}/{b['epochs_total']}; epoch wall times (training, validation, "
            f"checkpoint; the first with set-up and cudnn autotuning): {walls or '-'} s",
            f"- median epoch {fmt(b.get('median_epoch_wall_s'), '.2f')} s, of which training "
            f"{fmt(b.get('median_epoch_train_s'), '.2f')} s ({fmt(b.get('ms_per_step'), '.2f')} ms/step, "
            f"{fmt(b.get('images_per_s_median'), '.0f')} img/s); the rest (validation, checkpoint, lr, reads) "
            f"{fmt(100 * b['non_training_share'] if b.get('non_training_share') is not None else None, '.0f')}%",
            f"- {b['verdict']['kind']}: {fmt(b['verdict']['value_s'], '.0f')} s for {b['epochs_total']} epochs "
            f"(target {TARGET_B_SECONDS:.0f} s: {fmt(b.get('needed_epoch_s'), '.2f')} s/epoch, "
            f"{fmt(b.get('needed_ms_per_step'), '.2f')} ms/step with everything else free)",
            f"- last validation (epoch, acc): {b.get('last_val')}; test accuracy (finished runs only): "
            f"{fmt(b.get('test_acc'), '.4f')}",
        ]
    if b.get("notes"):
        out += [""] + [f"- {n}" for n in b["notes"]]
    return [*out, ""]


def _md_c(c: dict[str, Any]) -> list[str]:
    s = c.get("settings", {})
    out = [f"## c. Worker processes on one GPU ({c.get('status')})", ""]
    out.append(f"{s.get('candidates')}; {s.get('recipe')}; train subset {s.get('train_subset')}.")
    out.append(f"Measure: {s.get('measure')}.")
    rows = []
    for r in c.get("rows", []):
        if "candidates_per_hour" in r:
            rows.append(
                [
                    r["workers"],
                    r["epochs_in_window"],
                    fmt(r["window_s"], ".0f"),
                    fmt(r["candidates_per_hour"], ".1f"),
                    fmt(r.get("vs_one_worker"), ".2f") + "x",
                    r["candidates_completed"],
                    fmt(r["median_epoch_s_per_worker"], ".2f"),
                    fmt(r["startup_s"], ".1f"),
                    ", ".join(fmt(m, ".2f") for m in r.get("peak_mem_gib_per_worker") or []) or "-",
                ]
            )
        else:
            rows.append([r["workers"], (r.get("skipped") or r.get("error", ""))[:200], "", "", "", "", "", "", ""])
    header = [
        "workers", "epochs in window", "window s", "candidates/h", "vs 1", "completed", "epoch s", "startup s",
        "peak GiB",
    ]  # fmt: skip
    out += ["", table(rows, header), ""]
    if c.get("notes"):
        out += [f"- {n}" for n in c["notes"]] + [""]
    return out


def _md_d(d: dict[str, Any]) -> list[str]:
    out = [f"## d. Short real search ({d.get('status')})", "", f"`{d.get('command')}`", ""]
    if "trials_done" in d:
        run_s = fmt((d.get("run") or {}).get("seconds"), ".0f")
        out.append(
            f"{d['trials_done']}/{d['trials_planned']} trials ({d.get('states')}), mean trial "
            f"{fmt(d.get('mean_trial_s'), '.1f')} s, {fmt(d.get('trials_per_hour'), '.0f')} trials/h "
            f"({d.get('settings', {}).get('workers')} worker(s)), command {run_s} s."
        )
        header = ["trial", "origin", "proposer", "MACs ratio", "val acc"]
        rows = []
        for r in d.get("pareto_front", []):
            acc = fmt(r.get("val_acc"), ".4f")
            rows.append([r["number"], r.get("origin"), r.get("proposer") or "", fmt(r.get("macs_ratio"), ".3f"), acc])
        out += ["", "Pareto front (proxy validation accuracy against MACs):", "", table(rows, header)]
    best = d.get("best") or {}
    if best:
        val = fmt(best.get("val_acc_proxy"), ".4f")
        out += ["", f"Best: trial {best['trial']} ({best['origin']}), key {best['key']}, proxy val {val}."]
        if best.get("final_epochs"):
            test = fmt(best.get("test_acc_final"), ".4f")
            out.append(f"Retrained {best['final_epochs']} epochs: test accuracy {test}.")
    onnx = best.get("onnx")
    if onnx:
        out.append(
            f"ONNX ({onnx.get('exporter')}, {onnx.get('bytes')} bytes): parity {met_text(onnx.get('parity_passed'))}, "
            f"max abs diff {fmt(onnx.get('parity_max_abs_diff'), '.1e')} < {onnx.get('parity_tolerance')} on "
            f"{onnx.get('parity_provider')}."
        )
        lat = onnx.get("latency") or {}
        lines = []
        for provider in ("cuda", "cpu"):
            entry = lat.get(provider)
            if not entry:
                continue
            if entry.get("error"):
                lines.append([provider, entry["error"][:200], "", ""])
                continue
            for batch, v in (entry.get("per_batch") or {}).items():
                lines.append(
                    [
                        entry.get("provider_used"),
                        batch,
                        fmt(v.get("median_ms"), ".3f"),
                        fmt(v.get("images_per_s"), ".0f"),
                    ]
                )
        if lines:
            out += ["", f"ONNX Runtime {lat.get('onnxruntime')} latency (median of the repeats):", ""]
            out.append(table(lines, ["provider", "batch", "median ms", "images/s"]))
    if d.get("notes"):
        out += [""] + [f"- {n}" for n in d["notes"]]
    return [*out, ""]


def _md_predictions(pred: dict[str, Any]) -> list[str]:
    if not pred:
        return []
    out = ["## Predictions to test after tuning", ""]
    g = pred.get("graphs_in_trainer")
    if g:
        out.append(
            f"- CUDA graphs in the trainer: {fmt(g['trainer_ms_per_step_b'], '.2f')} -> "
            f"{fmt(g['graphs_ms_per_step_a'], '.2f')} ms/step, epoch {fmt(g['epoch_s'], '.2f')} s, 160 epochs in "
            f"{fmt(g['projected_total_s'], '.0f')} s (target {TARGET_B_SECONDS:.0f} s: {met_text(g['met'])}); "
            f"{fmt(g.get('trainer_vs_reference'), '.2f')}x the reference loop (target {TARGET_A_RATIO:g}x)."
        )
    w = pred.get("workers_per_gpu")
    if w:
        text = f"- {w['workers']} search workers per GPU: {fmt(w['ratio'], '.2f')}x the candidates/h of one"
        if w.get("predicted_trials_per_hour"):
            text += (
                f"; part d's {fmt(w['trials_per_hour_1_worker'], '.0f')} trials/h with 1 worker -> "
                f"{fmt(w['predicted_trials_per_hour'], '.0f')} with {w['workers']}"
            )
        out.append(text + ".")
    return [*out, ""]


def render_md(results: dict[str, Any]) -> str:
    dev = results["device"]
    parts = results.get("parts", {})
    out = [f"# GPU benchmark suite: {results['tag']}", ""]
    gpu = dev["name"] + (f", {dev.get('memory_gib')} GiB, {dev.get('sms')} SMs" if dev["type"] == "cuda" else "")
    out.append(
        f"Device: {gpu}; torch {dev['torch']} (CUDA {dev.get('cuda')}, cuDNN {dev.get('cudnn')}, driver "
        f"{dev.get('driver')}); Python {dev['python']}; {dev['cpus']} CPUs; onnxruntime {dev.get('onnxruntime')} "
        f"({', '.join(dev.get('onnxruntime_providers') or [])})."
    )
    if results.get("tiny"):
        out += [
            "",
            "**--tiny dry run: sizes shrunk to seconds (parts b, c and d on a ResNet-8); the numbers say nothing "
            "about the targets.**",
        ]
    out += ["", "Commands:", ""]
    for c in results.get("commands", []):
        cmd = c.get("wrapper") or c["argv"]
        load = f", data {c['data_load_s']:.0f} s" if c.get("data_load_s") is not None else ""
        out.append(f"- `{cmd}` ({c['started']}, parts {','.join(c['parts'])}, {c['seconds']:.0f} s{load})")
    out += ["", "## Against the targets of issue #9", ""]
    out.append(table(summary_rows(results), SUMMARY_HEADER))
    data = "CIFAR-10 (JPEG q75 copy)" if results.get("dataset") == "cifar10" else results.get("dataset")
    out += ["", f"Dataset: {data} (part b: CIFAR-10 unless --tiny).", ""]
    out += _md_predictions(results.get("predictions") or {})
    for key, render in (("a", _md_a), ("b", _md_b), ("c", _md_c), ("d", _md_d)):
        if key in parts and parts[key].get("status") not in ("failed", "skipped"):
            out += render(parts[key])
    for p in PARTS:
        if p in parts and parts[p].get("error"):
            out += [f"Part {p} {parts[p].get('status')}: `{parts[p]['error'][:500]}`", ""]
    return "\n".join(out).rstrip() + "\n"


def load_previous(path: Path, device: str, tiny: bool) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        prev = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        say(f"warning: {path} is unreadable; starting a new results file")
        return None
    if prev.get("format") != FORMAT or prev.get("device", {}).get("name") != device or bool(prev.get("tiny")) != tiny:
        say(f"warning: {path} holds another device's, mode's or format's results; not merging (pass another --tag)")
        return None
    return prev


def write_results(results: dict[str, Any], results_dir: Path, out_dir: Path | None) -> list[Path]:
    derive(results)
    tag = results["tag"]
    written: list[Path] = []
    for folder in [results_dir] + ([out_dir] if out_dir is not None else []):
        written += common.write_results(folder / tag, results, render_md(results))
    return written
