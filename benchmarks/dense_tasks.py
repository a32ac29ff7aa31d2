"""Segmentation and detection on this CPU: MACs of the listed torchvision models against torchvision's published
figures, and the README's smoke searches on the generated shapes sets (wall time, score, export, evaluation).

    python benchmarks/dense_tasks.py                      # both parts
    python benchmarks/dense_tasks.py --part macs          # the MACs table only (minutes: spaces are derived once)
    python benchmarks/dense_tasks.py --part smoke         # the two smoke searches (each in a fresh folder)
    python benchmarks/dense_tasks.py --part recipes       # the segmentation recipe's lr: 0.01, 0.05, 0.2

MACs: `get_space("torchvision:NAME")` at the model's documented size (segmentation 520 px, a detector its
transform's size), its reference counted by fvcore at the weights' class count (`TracedSpace.published_figures`)
beside the weights' meta `_ops` (GFLOPS counted as multiply-adds) and `num_params`.

Smoke: `prunenas search --space S --dataset D --budget smoke` run as a user runs it, in a fresh temporary folder
(`--out` there), timed; then `prunenas evaluate` on the exported model. Recorded: the study's trials, the
winner's validation and test score (the task's: mean IoU, mAP@[.5:.95]), the export's parity and the score of
the exported graph on the test split.

Writes benchmarks/results/<UTC date>-cpu-dense-tasks[-macs|-smoke|-recipes].json and .md (or --out PATH without suffix).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

LISTED = (
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet50",
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
)
#: The README's smoke searches: (space, dataset).
SMOKE = (
    ("torchvision:lraspp_mobilenet_v3_large@32", "shapes-seg"),
    ("torchvision:ssdlite320_mobilenet_v3_large", "shapes-det"),
)


def macs_rows() -> list[dict[str, Any]]:
    from prunenas.spaces import get_space

    rows = []
    for name in LISTED:
        t0 = time.perf_counter()
        space = get_space(f"torchvision:{name}")
        figures = space.published_figures()  # type: ignore[attr-defined]
        rows.append({
            "model": name, "task": space.task, "input": space.input_shape[-1], "genes": len(space.genes),
            "heads": len(space.describe().get("heads", [])), "fixed_groups": len(space.fixed_groups),  # type: ignore[attr-defined]
            **{k: v for k, v in figures.items() if k != "line"}, "seconds": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
        print(figures["line"], flush=True)
    return rows


#: The segmentation recipe's learning-rate check: LRASPP at 64 px on 512 shapes-seg images, 10 epochs, batch 32,
#: cosine after half an epoch of warm-up (the task's defaults but the lr).
RECIPE_LRS = (0.01, 0.05, 0.2)


def recipe_rows() -> list[dict[str, Any]]:
    import dataclasses

    from prunenas.config import RunSettings
    from prunenas.data import load_dataset
    from prunenas.recipes import make_recipe
    from prunenas.spaces import get_space
    from prunenas.train import train

    data = load_dataset("shapes-seg", image_size=64, val_size=100, train_subset=512)
    space = get_space("torchvision:lraspp_mobilenet_v3_large@64")
    rows = []
    for lr in RECIPE_LRS:
        recipe = dataclasses.replace(make_recipe("proxy", space.recipe), epochs=10, lr=lr)
        t0 = time.perf_counter()
        result = train(space, space.reference(), data, recipe, RunSettings(device="cpu", quiet=True, seed=0))
        rows.append({"lr": lr, "epochs": 10, "batch_size": recipe.batch_size, "val_miou": result.val_acc,
                     "test_miou": result.test_acc, "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def _prunenas(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prunenas.cli", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def smoke_rows() -> list[dict[str, Any]]:
    rows = []
    for space, dataset in SMOKE:
        with tempfile.TemporaryDirectory(prefix="prunenas-smoke-") as tmp:
            folder = Path(tmp)
            command = ["search", "--space", space, "--dataset", dataset, "--budget", "smoke", "--out", "study"]
            t0 = time.perf_counter()
            done = _prunenas(*command, cwd=folder)
            wall = time.perf_counter() - t0
            row: dict[str, Any] = {"command": "prunenas " + " ".join(command), "rc": done.returncode,
                                   "wall_s": round(wall, 1)}  # fmt: skip
            if done.returncode != 0:
                row["error"] = done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []
                rows.append(row)
                print(row, flush=True)
                continue
            summary = json.loads((folder / "study" / "summary.json").read_text())
            sidecar_path = next((folder / "exports").rglob("model.json"))
            sidecar = json.loads(sidecar_path.read_text())
            evaluated = _prunenas("evaluate", str(sidecar_path.with_name("model.onnx")), "--json", cwd=folder)
            result = json.loads(evaluated.stdout) if evaluated.returncode == 0 else {"error": evaluated.stderr}
            trials = summary.get("trials")
            row.update(
                score=summary["objectives"][0]["name"],
                trials=trials,
                val=sidecar["accuracy"]["val_acc"], test=sidecar["accuracy"]["test_acc"],
                train_images=sidecar["dataset"]["sizes"]["train"], exporter=sidecar["export"]["method"],
                parity_max_abs_diff=sidecar["parity"]["max_abs_diff"],
                parity_agreement=min(c["argmax_agreement"] for c in sidecar["parity"]["checks"]),
                macs=sidecar["macs"], macs_ratio=sidecar["cost"]["macs_ratio"],
                onnx_test=result.get("accuracy"), onnx_images_per_s=result.get("images_per_s"),
            )  # fmt: skip
            rows.append(row)
            print({k: row[k] for k in ("command", "wall_s", "val", "test", "onnx_test")}, flush=True)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Segmentation and detection on the CPU",
        "",
        f"{payload['date']}, {payload['cpu']}, torch {payload['versions']['torch']}, torchvision "
        f"{payload['versions']['torchvision']}. Command: `{payload['command']}`.",
        "",
    ]
    if payload.get("macs"):
        lines += [
            "## MACs against torchvision's published figures",
            "",
            "The reference of each space at the model's documented size, counted by fvcore at the weights' class "
            "count, beside the weights' `meta['_ops']` (GFLOPS, counted as multiply-adds) and `num_params`.",
            "",
            "| model | task | input | genes | heads | torchvision GMACs | counted GMACs | ratio | params (tv / here) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in payload["macs"]:
            ratio = f"{r['ratio']:.4f}"
            if "without_roi_heads_ratio" in r:
                ratio += f" ({r['without_roi_heads_ratio']:.4f} without the RoI heads)"
            lines.append(
                f"| {r['model']} | {r['task']} | {r['input']} | {r['genes']} | {r['heads']} | {r['gmacs']:.3f} | "
                f"{r['counted_gmacs']:.3f} | {ratio} | {r['params']:,} / {r['counted_params']:,} |"
            )
        lines += [
            "",
            "Faster R-CNN's RoI heads run once per proposal (those of a blank input here); torchvision's figure "
            "leaves them out. Faster R-CNN, RetinaNet and FCOS have more parameters here: without pretrained weights "
            "their backbone uses BatchNorm (scales are parameters) where the weights' FrozenBatchNorm keeps them as "
            "buffers.",
            "",
        ]
    if payload.get("recipes"):
        lines += ["## The segmentation recipe's learning rate", "",
                  "LRASPP (`torchvision:lraspp_mobilenet_v3_large@64`) on 512 shapes-seg images at 64 px, 10 epochs, "
                  "the task's recipe but the lr; mean IoU of the final model (predicting background everywhere: "
                  "about 0.19).", "",
                  "| lr | val mean IoU | test mean IoU | seconds |", "| --- | --- | --- | --- |"]  # fmt: skip
        for r in payload["recipes"]:
            lines.append(f"| {r['lr']} | {r['val_miou']:.4f} | {r['test_miou']:.4f} | {r['seconds']} |")
        lines.append("")
    if payload.get("smoke"):
        lines += ["## Smoke searches (the README's commands)", "",
                  "| command | wall | train images | winner val | winner test | ONNX test | parity | MACs ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in payload["smoke"]:
            if r["rc"] != 0:
                lines.append(f"| `{r['command']}` | {r['wall_s']} s | failed: {r.get('error')} | | | | | |")
                continue
            lines.append(
                f"| `{r['command']}` | {r['wall_s']:.0f} s | {r['train_images']} | {r['score']} {r['val']:.4f} | "
                f"{r['test']:.4f} | {r['onnx_test']:.4f} | max diff {r['parity_max_abs_diff']:.1e}, agreement "
                f"{r['parity_agreement']:.3f} | {r['macs_ratio']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "macs", "smoke", "recipes"), default="all")
    common.add_out(parser, folder=False)
    args = parser.parse_args(argv)
    import torch
    import torchvision

    payload: dict[str, Any] = {
        "date": common.stamp(), "machine": common.machine(), "cpu": common.cpu_text(),
        "command": common.command_line(__file__, argv),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
        "threads": os.cpu_count(),
    }  # fmt: skip
    if args.part in ("all", "macs"):
        payload["macs"] = macs_rows()
    if args.part in ("all", "smoke"):
        payload["smoke"] = smoke_rows()
    if args.part in ("all", "recipes"):
        payload["recipes"] = recipe_rows()
    stem = common.results_stem(args.out, "dense-tasks" if args.part == "all" else f"dense-tasks-{args.part}")
    json_path, md_path = common.write_results(stem, payload, markdown(payload))
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
