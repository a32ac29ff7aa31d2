"""Model coverage of traced spaces: which classification models of torchvision (and, with --timm, a few of
timm) prunenas turns into a working channel search space, on this machine's CPU.

For each model, in its own subprocess (one torch thread, a wall-clock timeout, a memory cap), six steps, each
timed and marked ok/failed with a one-line reason:

* space      `get_space("torchvision:NAME@SIZE")`: number of genes, fixed groups and their reasons
* reference  build the reference genotype; the eval forward of one image has shape (1, num_classes)
* half       build the genotype with every gene at 50% of its reference width (snapped)
* train_step forward + backward of the 50% model in train mode on 2 random images; all gradients finite
* macs       `genotype_cost` of the reference and the 50% genotype; `fast_macs` must equal it for both
* onnx       the 50% model through the exporter's `_export_onnx` and `_verify_onnx_file`, then
             `check_parity` (ONNX Runtime CPU against torch eval, random batches `PARITY_BATCHES`,
             tolerance `PARITY_TOLERANCE`, as `prunenas export` does); a classifier initialised to zeros
             (torchvision's ViTs: every logit 0, so parity would hold trivially) gets random weights first

Input size: --size (default 64), except torchvision vit_*/swin_*/maxvit_t and timm vit/deit (fixed at 224).
When `get_space` says the model does not run at the size (e.g. inception_v3 at 64), the next size of
75, 80, 96, 112, 128, 160, 192, 224 is tried, so the size recorded is the smallest that works.

A model's status is "ok", "refused (clear error)" (a SpaceError saying the model cannot be grouped), or
"failed at STEP: reason", where the error is either a clear error (a PrunenasError with a one-line message)
or a crash (any other exception; its traceback is kept in the JSON). Models run one at a time; the results
of finished models are appended to a JSONL file in --out and skipped when the command is run again.

    python benchmarks/model_coverage.py                                   # all torchvision models at 64
    python benchmarks/model_coverage.py --timm                            # ... plus the timm list
    python benchmarks/model_coverage.py --models resnet18,mobilenet_v2,vit_b_16
    python benchmarks/model_coverage.py --one torchvision:resnet18 --size 64 --result /tmp/r.json  # one model

Writes OUT/<UTC date>-cpu-model-coverage.json (every record, machine, versions, command) and .md (table).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import common

STEPS = ("space", "reference", "half", "train_step", "macs", "onnx")
TIMM_MODELS = (
    "vit_tiny_patch16_224",
    "resnet18",
    "mobilenetv3_small_100",
    "efficientnet_b0",
    "convnext_atto",
    "regnety_002",
    "deit_tiny_patch16_224",
)
SIZE_LADDER = (64, 75, 80, 96, 112, 128, 160, 192, 224)
FIXED_SIZE = 224
#: SpaceError messages that mean "this model cannot be grouped into channel genes" (a clear refusal).
REFUSAL = re.compile(
    r"no channel group|cannot be grouped|no Conv2d or Linear layer|cannot build the dependency graph|cannot be searched"
)
#: The SpaceError `get_space` raises when the model does not run at the input size.
WRONG_SIZE = "use an input size the model accepts"
LOG_DIR = Path(tempfile.gettempdir()) / "prunenas-model-coverage-logs"


# -- one model (the child process) ----------------------------------------------------------------------------
def is_fixed_size(spec: str) -> bool:
    """Whether the model only runs at 224 pixels (ViTs, Swin, MaxViT, DeiT)."""
    source, name = spec.split(":", 1)
    if source == "torchvision":
        return name.startswith(("vit_", "swin_", "maxvit"))
    return name.startswith(("vit_", "deit_"))


def sizes_to_try(spec: str, size: int) -> list[int]:
    """The input sizes tried in order: --size and the larger sizes of the ladder (224 only for fixed-size models)."""
    if is_fixed_size(spec):
        return [FIXED_SIZE]
    return [size, *(s for s in SIZE_LADDER if s > size)]


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically replace `path` with `data` (the parent may read it at any time)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Runner:
    """Runs the steps of one model, recording each (and the step in progress) in the result file."""

    def __init__(self, spec: str, result: Path) -> None:
        self.result = result
        self.record: dict[str, Any] = {"model": spec, "steps": {}, "current_step": None}
        self.failed = False

    def save(self) -> None:
        self.record["max_rss_mb"] = round(max_rss_mb(), 1)
        write_json(self.result, self.record)

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run one step unless an earlier one failed; its dict of facts is kept with status and seconds."""
        if self.failed:
            self.record["steps"][name] = {"status": "skipped"}
            return None
        self.record["current_step"] = name
        self.save()
        t0 = time.perf_counter()
        try:
            facts = fn()
        except Exception as exc:
            from prunenas.errors import PrunenasError

            self.failed = True
            entry: dict[str, Any] = {"status": "failed", "reason": first_line(exc)}
            if isinstance(exc, PrunenasError):
                entry["error_kind"] = "clear error"
            else:
                entry["error_kind"] = "crash"
                entry["traceback"] = traceback.format_exc()
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            self.record["steps"][name] = entry
            self.save()
            return None
        self.record["steps"][name] = {"status": "ok", "seconds": round(time.perf_counter() - t0, 2), **facts}
        self.save()
        return facts


def finite_grads(model: Any) -> dict[str, Any]:
    import torch

    with_grad = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    bad = [n for n, g in with_grad if not bool(torch.isfinite(g).all())]
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if bad:
        raise RuntimeError(f"non-finite gradients in {len(bad)} parameters, e.g. {bad[:3]}")
    if not with_grad:
        raise RuntimeError("no parameter received a gradient")
    return {"params_with_grad": len(with_grad), "params_without_grad": len(unused), "unused_examples": unused[:3]}


def zero_logits_head(model: Any, space: Any) -> bool:
    """Give a zero-initialised classifier (torchvision's ViTs) random weights, so that the parity check compares
    real logits rather than zeros; True when it did. The model stays the same model for torch and ONNX Runtime."""
    import torch

    with torch.no_grad():
        out = model(torch.randn(2, *space.input_shape))
        if bool((out != 0).any()):
            return False
        head = dict(model.named_modules())[space.output_layer]
        torch.nn.init.normal_(head.weight, std=0.02)
        if getattr(head, "bias", None) is not None:
            torch.nn.init.normal_(head.bias, std=0.02)
    return True


def run_one(spec: str, size: int, result: Path) -> int:
    """The six steps for one model (`torchvision:NAME` or `timm:NAME`); the record goes to `result`."""
    import torch

    torch.set_num_threads(1)
    faulthandler.register(signal.SIGUSR1)  # the driver asks for the stack before it kills a slow or large model
    torch.manual_seed(0)
    from prunenas.cost import fast_macs, genotype_cost
    from prunenas.errors import SpaceError
    from prunenas.export.exporter import _export_onnx, _verify_onnx_file
    from prunenas.export.parity import PARITY_BATCHES, PARITY_TOLERANCE, _random_inputs, check_parity
    from prunenas.spaces import get_space

    runner = Runner(spec, result)
    rec = runner.record
    rec["sizes_tried"] = []
    ctx: dict[str, Any] = {}

    def space_step() -> dict[str, Any]:
        for s in sizes_to_try(spec, size):
            rec["sizes_tried"].append(s)
            rec["input_size"] = s
            runner.save()
            try:
                space = get_space(f"{spec}@{s}")
            except SpaceError as exc:
                if WRONG_SIZE in str(exc) and s != sizes_to_try(spec, size)[-1]:
                    rec.setdefault("size_failures", {})[str(s)] = first_line(exc)
                    continue
                raise
            ctx["space"] = space
            return {
                "genes": len(space.genes),
                "fixed_groups": len(space.fixed_groups),
                "fixed_reasons": dict(space.fixed_groups),
                "output_layer": space.output_layer,
                "num_classes": space.num_classes,
                "input_shape": list(space.input_shape),
            }
        raise AssertionError("unreachable")

    def forward_shape(model: Any) -> list[int]:
        space = ctx["space"]
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(1, *space.input_shape))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, space.num_classes):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RuntimeError(f"eval output is {got}, expected [1, {space.num_classes}]")
        return list(out.shape)

    def reference_step() -> dict[str, Any]:
        space = ctx["space"]
        model = space.build(space.reference())
        params = sum(p.numel() for p in model.parameters())
        shape = forward_shape(model)
        del model
        return {"output_shape": shape, "params": params}

    def half_step() -> dict[str, Any]:
        space = ctx["space"]
        ctx["half"] = space.make({g.name: g.snap(g.reference * 0.5) for g in space.genes})
        ctx["half_model"] = space.build(ctx["half"])
        shape = forward_shape(ctx["half_model"])
        return {"output_shape": shape, "params": sum(p.numel() for p in ctx["half_model"].parameters())}

    def train_step() -> dict[str, Any]:
        space = ctx["space"]
        model = ctx["half_model"].train()
        x = torch.randn(2, *space.input_shape)
        y = torch.randint(0, space.num_classes, (2,))
        out = model(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, space.num_classes):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RuntimeError(f"train-mode output is {got}, expected [2, {space.num_classes}]")
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        if not math.isfinite(float(loss)):
            raise RuntimeError(f"loss is {float(loss)}")
        facts = finite_grads(model)
        model.zero_grad(set_to_none=True)
        return {"loss": float(loss), **facts}

    def macs_step() -> dict[str, Any]:
        space = ctx["space"]
        ref, half = space.reference(), ctx["half"]
        ref_cost, half_cost = genotype_cost(space, ref), genotype_cost(space, half)
        fast_ref, fast_half = fast_macs(space, ref), fast_macs(space, half)
        facts = {
            "reference_macs": ref_cost.macs,
            "reference_params": ref_cost.params,
            "half_macs": half_cost.macs,
            "half_params": half_cost.params,
            "half_macs_ratio": half_cost.macs_ratio,
            "fast_macs_reference": fast_ref,
            "fast_macs_half": fast_half,
        }
        rec["macs"] = facts  # kept even when the equality check fails
        wrong = [
            f"{what}: fast_macs {fast} != fvcore {slow}"
            for what, fast, slow in (("reference", fast_ref, ref_cost.macs), ("half", fast_half, half_cost.macs))
            if fast != slow
        ]
        if wrong:
            raise RuntimeError("; ".join(wrong))
        return facts

    def onnx_step() -> dict[str, Any]:
        space = ctx["space"]
        model = ctx["half_model"].eval()
        reinit = zero_logits_head(model, space)
        LOG_DIR.mkdir(parents=True, exist_ok=True)  # the driver removes what a killed run leaves there
        with tempfile.TemporaryDirectory(prefix=f"onnx-{spec.replace(':', '_')}-", dir=LOG_DIR) as tmp:
            path = Path(tmp) / "model.onnx"
            method = _export_onnx(space.export_model(model), path, space.input_shape)
            graph = _verify_onnx_file(path, {"prunenas.space": space.name})
            inputs = _random_inputs(space.input_shape, PARITY_BATCHES)
            parity = check_parity(model, path, inputs, tolerance=PARITY_TOLERANCE, provider="cpu")
            file_mb = path.stat().st_size / 2**20
        return {
            "exporter": method["exporter"],
            "fallback_reason": method["fallback_reason"],
            "export_seconds": round(method["seconds"], 2),
            "opset": graph["opset"],
            "file_mb": round(file_mb, 2),
            "provider": parity["provider"],
            "max_abs_diff": parity["max_abs_diff"],
            "max_abs_logit": max(c["max_abs_logit"] for c in parity["checks"]),
            "head_reinitialised": reinit,
            "tolerance": parity["tolerance"],
        }

    for name, fn in zip(STEPS, (space_step, reference_step, half_step, train_step, macs_step, onnx_step), strict=True):
        runner.step(name, fn)
    rec["current_step"] = None
    rec["done"] = True
    runner.save()
    return 0


# -- the driver (the parent process) ---------------------------------------------------------------------------
def process_group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in process group `pgid`, in MiB (from /proc)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:  # fields[2] is the pgrp
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024


def stack_dump(path: Path, lines: int = 40) -> str:
    """The innermost frames of the last faulthandler dump in the log (import machinery left out)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    starts = [i for i, line in enumerate(text) if "most recent call first" in line]
    if not starts:
        return "\n".join(text[-lines:])
    frames = [line for line in text[starts[-1] :] if "<frozen importlib" not in line]
    return "\n".join(frames[:lines])


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_child(spec: str, size: int, timeout: float, max_rss_gb: float) -> dict[str, Any]:
    """Run one model in a subprocess; watch its time and memory; return its record with the final status."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    safe = spec.replace(":", "_")
    result = LOG_DIR / f"{safe}.json"
    log_path = LOG_DIR / f"{safe}.log"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", spec, "--size", str(size), "--result", str(result)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PRUNENAS_COST_CACHE": "off"}
    t0 = time.perf_counter()
    peak = 0.0
    killed: str | None = None
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while proc.poll() is None:
            time.sleep(0.5)
            peak = max(peak, process_group_rss_mb(proc.pid))
            elapsed = time.perf_counter() - t0
            if elapsed > timeout:
                killed = "timeout"
            elif peak > max_rss_gb * 1024:
                killed = "memory"
            if killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGUSR1)  # dumps the Python stack into the log
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(3)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
    seconds = time.perf_counter() - t0
    for leftover in LOG_DIR.glob(f"onnx-{safe}-*"):  # a killed run's export folder (up to GBs)
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        rec = json.loads(result.read_text())
    except (OSError, ValueError):
        rec = {"model": spec, "steps": {}, "current_step": None}
    rec.update(
        {
            "seconds": round(seconds, 1),
            "exit_code": proc.returncode,
            "peak_rss_mb": round(peak, 1),
            "requested_size": size,
            "fixed_size_model": is_fixed_size(spec),
            "log": str(log_path),
        }
    )
    rec["status"] = final_status(rec, killed, timeout, max_rss_gb, log_path)
    return rec


def final_status(rec: dict[str, Any], killed: str | None, timeout: float, max_rss_gb: float, log: Path) -> str:
    """ok / refused (clear error) / failed at STEP: reason / too large for this machine."""
    step = rec.get("current_step") or next((s for s in STEPS if s not in rec["steps"]), "space")
    if killed == "memory":
        rec["failure"] = {
            "step": step,
            "kind": "too large",
            "reason": f"RSS over {max_rss_gb:g} GB",
            "stack": stack_dump(log),
        }
        return f"too large for this machine (RSS > {max_rss_gb:g} GB at {step})"
    if killed == "timeout":
        rec["failure"] = {
            "step": step,
            "kind": "timeout",
            "reason": f"timeout after {timeout:g} s",
            "stack": stack_dump(log),
        }
        return f"failed at {step}: timeout after {timeout:g} s"
    for name in STEPS:
        entry = rec["steps"].get(name, {})
        if entry.get("status") == "failed":
            rec["failure"] = {"step": name, "kind": entry["error_kind"], "reason": entry["reason"]}
            if name == "space" and is_refusal(entry):
                return "refused (clear error)"
            return f"failed at {name}: {entry['reason']}"
    if rec.get("done") and all(rec["steps"].get(s, {}).get("status") == "ok" for s in STEPS):
        return "ok"
    reason = f"process died (exit code {rec['exit_code']})"
    rec["failure"] = {"step": step, "kind": "crash", "reason": reason, "log_tail": tail(log)}
    return f"failed at {step}: {reason}"


def is_refusal(entry: dict[str, Any]) -> bool:
    """A SpaceError of the space step saying the model's channels cannot be grouped."""
    return entry.get("error_kind") == "clear error" and bool(REFUSAL.search(entry.get("reason", "")))


def reclassify(rec: dict[str, Any]) -> dict[str, Any]:
    """Apply the current refusal rule to a record kept from an earlier run."""
    space = rec.get("steps", {}).get("space", {})
    if rec["status"].startswith("failed at space:") and space.get("status") == "failed" and is_refusal(space):
        rec["status"] = "refused (clear error)"
    return rec


def model_list(names: str | None, with_timm: bool) -> list[str]:
    import torchvision

    tv = list(torchvision.models.list_models(module=torchvision.models))
    specs = [f"torchvision:{n}" for n in tv]
    if with_timm:
        import timm

        available = set(timm.list_models())
        specs += [f"timm:{n}" for n in TIMM_MODELS if n in available]
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        chosen = []
        for n in wanted:
            if ":" in n:
                chosen.append(n)
            elif n in tv:
                chosen.append(f"torchvision:{n}")
            else:
                raise SystemExit(f"unknown torchvision model {n!r}; use timm:NAME for timm models")
        specs = chosen
    return specs


def versions() -> dict[str, str | None]:
    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    names = ("prunenas", "torch", "torchvision", "timm", "torch-pruning", "fvcore", "onnx", "onnxruntime-gpu")
    out = {n: dist(n) for n in names}
    out["onnxruntime"] = out.pop("onnxruntime-gpu") or dist("onnxruntime")
    out["python"] = platform.python_version()
    return out


def machine() -> dict[str, Any]:
    m = common.machine()
    return {
        "platform": m["platform"],
        "cpu": m["cpu"]["model"],
        "cpu_count": m["cpu_count"],
        "memory_gb": m["memory_gb"],
    }


def load_done(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                rec = json.loads(line)
                done[(rec["model"], rec["requested_size"])] = rec
    return done


def fmt_macs(macs: int | None) -> str:
    if macs is None:
        return "-"
    return f"{macs / 1e9:.2f} G" if macs >= 1e8 else f"{macs / 1e6:.1f} M"


#: Long messages of prunenas shortened for the table (the JSON keeps them whole).
SHORTER = (
    (
        r"ONNX Runtime \(\w+\) disagrees with PyTorch on (.*?) \(batch \d+\): max \|logit difference\| (\S+) >= (\S+)"
        r" \(logits up to (\S+)\).*",
        r"ORT parity on \1: max diff \2 >= allowed \3 (logits up to \4)",
    ),
    (
        r"Torch-Pruning cannot build the dependency graph of '[^']+' \((.*)\); its channels cannot be searched.*",
        r"Torch-Pruning cannot build its dependency graph (\1)",
    ),
    (
        r"Torch-Pruning cannot group the window attention of '[^']+' \((.*?)\); its channels cannot be searched.*",
        r"Torch-Pruning cannot group its window attention (\1)",
    ),
    (r"space '[^']+': ", ""),
    (r"--space \S+: ", ""),
)


def short(text: str, n: int = 110) -> str:
    for pattern, repl in SHORTER:
        text = re.sub(pattern, repl, text)
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."


def input_cell(rec: dict[str, Any]) -> str:
    size = rec.get("input_size", "-")
    notes = []
    if rec.get("fixed_size_model"):
        notes.append("fixed-size model")
    failed = [s for s in rec.get("sizes_tried", []) if s != size]
    if failed:
        notes.append(f"fails at {', '.join(map(str, failed))}")
    return f"{size} ({'; '.join(notes)})" if notes else str(size)


def status_cell(rec: dict[str, Any]) -> str:
    status = rec["status"]
    failure = rec.get("failure")
    if status == "ok" or not failure:
        return status
    if status.startswith("refused"):
        return f"refused (clear error): {short(failure['reason'], 120)}"
    kind = {"clear error": "clear error", "crash": "crash"}.get(failure["kind"])
    text = short(status, 120)
    return f"{text} [{kind}]" if kind else text


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    def count(prefix: str) -> tuple[int, int]:
        group = [r for r in records if r["model"].startswith(prefix)]
        return sum(r["status"] == "ok" for r in group), len(group)

    tv_ok, tv_n = count("torchvision:")
    timm_ok, timm_n = count("timm:")
    line = f"{tv_ok} of {tv_n} torchvision models ok = {100 * tv_ok / tv_n:.0f}%" if tv_n else "no torchvision models"
    if timm_n:
        line += f"; timm {timm_ok} of {timm_n}"
    return {"line": line, "torchvision_ok": tv_ok, "torchvision": tv_n, "timm_ok": timm_ok, "timm": timm_n}


def markdown(meta: dict[str, Any], records: list[dict[str, Any]]) -> str:
    v = meta["versions"]
    m = meta["machine"]
    lines = [
        f"# Traced-space model coverage, CPU ({meta['date']})",
        "",
        f"- date: {meta['date']} (UTC), wall time {meta['wall_seconds_all_models'] / 60:.1f} min over all models"
        f" ({meta['wall_seconds'] / 60:.1f} min in the last invocation; earlier results are kept)",
        f"- machine: {m['cpu']} x{m['cpu_count']}, {m['memory_gb']} GB, {m['platform']}; torch 1 thread per model",
        f"- command: `{meta['command']}`",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- per model: own subprocess, timeout {meta['timeout_s']:g} s, memory cap {meta['max_rss_gb']:g} GB;"
        " steps space, reference, half (every gene at 50%), train_step (batch 2), macs (fvcore = fast_macs),"
        " onnx (`_export_onnx` + `check_parity`, ORT CPU)",
        "- input: --size unless noted; ViT/Swin/MaxViT/DeiT need 224; larger sizes are tried when a model"
        " refuses a size",
        "",
        f"**{meta['summary']['line']}**",
        "",
        "| model | input | genes | fixed groups | ref MACs | 50% MACs ratio | status |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        space = r["steps"].get("space", {})
        macs = r.get("macs", {})
        ratio = macs.get("half_macs_ratio")
        lines.append(
            f"| {r['model']} | {input_cell(r)} | {space.get('genes', '-')} | {space.get('fixed_groups', '-')} | "
            f"{fmt_macs(macs.get('reference_macs'))} | {f'{ratio:.3f}' if ratio is not None else '-'} | "
            f"{status_cell(r)} |"
        )
    reasons: dict[str, list[str]] = {}
    for r in records:
        for reason in r["steps"].get("space", {}).get("fixed_reasons", {}).values():
            key = re.sub(r"\d+", "N", short(reason, 100))
            reasons.setdefault(key, []).append(r["model"])
    if reasons:
        lines += ["", "Why groups are fixed (reason, digits as N: models):", ""]
        for key, models in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            names = sorted(set(models))
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            lines.append(f"- {key} ({len(models)} groups): {shown}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64, help="input pixels (default 64)")
    p.add_argument("--models", help="comma-separated torchvision names (or timm:NAME); default: all")
    p.add_argument("--timm", action="store_true", help="also the timm list")
    p.add_argument("--timeout", type=float, default=300, help="seconds per model (default 300)")
    p.add_argument("--max-rss-gb", type=float, default=16, help="memory cap per model (default 16)")
    common.add_out(p, folder=True, default="benchmarks/results")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return run_one(args.one, args.size, Path(args.result))

    started = time.perf_counter()
    date = common.today()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = common.results_stem(out, "model-coverage", folder=True, date=date)
    jsonl = stem.with_suffix(".jsonl")
    specs = model_list(args.models, args.timm)
    done = load_done(jsonl)
    records: list[dict[str, Any]] = []
    for i, spec in enumerate(specs, 1):
        prefix = f"[{i:>3}/{len(specs)}] {spec:<40}"
        if (spec, args.size) in done:
            rec = reclassify(done[(spec, args.size)])
            print(f"{prefix} {rec['status'][:100]}  (kept from {jsonl.name})", flush=True)
        else:
            rec = run_child(spec, args.size, args.timeout, args.max_rss_gb)
            with jsonl.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"{prefix} {rec['status'][:100]}  {rec['seconds']:.0f} s", flush=True)
        records.append(rec)

    meta: dict[str, Any] = {
        "date": date,
        "machine": machine(),
        "versions": versions(),
        "command": common.command_line(__file__),
        "timeout_s": args.timeout,
        "max_rss_gb": args.max_rss_gb,
        "steps": list(STEPS),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "wall_seconds_all_models": round(sum(r.get("seconds", 0) for r in records), 1),
    }
    meta["summary"] = summary(records)
    json_path, md_path = common.write_results(stem, {**meta, "models": records}, markdown(meta, records), indent=1)
    print(meta["summary"]["line"])
    print(f"wrote {json_path} and {md_path} (records in {jsonl})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
