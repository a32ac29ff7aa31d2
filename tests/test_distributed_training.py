"""Data-parallel training of one run (torch DDP with the gloo backend, 2 processes launched by torchrun)
against one process with the same global batch, and its resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from prunenas.train import CHECKPOINT

FACTORIES = Path(__file__).with_name("factories.py")
# fp32 (--no-amp): the comparison is of data-parallel against one process, not of precisions
COMMON = [
    "--dataset",
    "digits",
    "--train-subset",
    "256",
    "--batch-size",
    "32",
    "--seed",
    "3",
    "--quiet",
    "--json",
    "--no-amp",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PRUNENAS_PROGRESS": "lines"}


def command(args: list[str], processes: int, out: Path) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    head = launcher if processes > 1 else [sys.executable]
    return [*head, "-m", "prunenas.cli", "train", *args, "--out", str(out)]


def run(args: list[str], processes: int, out: Path) -> dict[str, Any]:
    proc = subprocess.run(command(args, processes, out), capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout[proc.stdout.index("{") :])
    return result


def weights(out: Path) -> dict[str, torch.Tensor]:
    model: dict[str, torch.Tensor] = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)["model"]
    return model


def test_two_gloo_processes_train_what_one_process_trains(tmp_path: Path) -> None:
    """Without BatchNorm the only difference is the order of float sums: the weights agree to 1e-4."""
    args = [f"{FACTORIES}:plain_cnn", "--epochs", "2", *COMMON]
    one = run(args, 1, tmp_path / "one")
    two = run(args, 2, tmp_path / "two")
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst
    for h1, h2 in zip(one["history"], two["history"], strict=True):  # losses over all ranks' images
        assert abs(h1["train_loss"] - h2["train_loss"]) < 1e-4 and h1["train_acc"] == h2["train_acc"]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["data_parallel"] == {"processes": 2}


def test_a_batchnorm_model_trains_data_parallel_within_tolerance(tmp_path: Path) -> None:
    """With BatchNorm each rank normalises its half of the batch (no SyncBatchNorm on the CPU): the
    per-epoch training losses agree within 5%."""
    args = ["resnet20_channels", "--epochs", "2", *COMMON]
    one = run(args, 1, tmp_path / "one")
    two = run(args, 2, tmp_path / "two")
    for h1, h2 in zip(one["history"], two["history"], strict=True):
        assert abs(h1["train_loss"] - h2["train_loss"]) <= 0.05 * h1["train_loss"], (h1, h2)


def test_a_killed_data_parallel_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    args = [f"{FACTORIES}:plain_cnn", "--epochs", "6", *COMMON]
    run(args, 2, tmp_path / "whole")
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(args, 2, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / CHECKPOINT).exists():
            try:
                if torch.load(out / CHECKPOINT, weights_only=False)["epoch"] >= 1:
                    break
            except Exception:  # caught mid-write by the atomic rename: look again
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun stops its workers (they run in sessions of their own)
    proc.wait(timeout=120)
    done = torch.load(out / CHECKPOINT, weights_only=False)["epoch"]
    assert 1 <= done < 6, done  # killed mid-run
    resumed = run(args, 2, out)
    assert resumed["resumed_from"] == done and resumed["epochs_run"] == 6
    a, b = weights(tmp_path / "whole"), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_search_trains_each_candidate_on_a_group_of_two_processes(tmp_path: Path) -> None:
    """--gpus-per-trial 2 without GPUs: one torchrun group of 2 gloo processes; rank 0 runs the trials and
    the other rank trains every candidate with it."""
    cmd = [
        sys.executable, "-m", "prunenas.cli", "search", "--space", "resnet20_channels", "--dataset", "digits",
        "--budget", "smoke", "--trials", "3", "--gpus-per-trial", "2", "--no-final", "--out", str(tmp_path / "s"),
        "--exports", str(tmp_path / "exports"), "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((tmp_path / "s" / "runs").glob("*/metrics.json"))
    assert len(runs) == 3
    for path in runs:
        assert json.loads(path.read_text())["data_parallel"] == {"processes": 2}
    bad = subprocess.run([*cmd[:-1], "--workers", "2"], capture_output=True, text=True, env=ENV, timeout=300)
    assert bad.returncode == 2 and "--gpus-per-trial" in bad.stderr and "Traceback" not in bad.stderr
