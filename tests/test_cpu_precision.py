"""CPU mixed precision and threads (prunenas.hardware, train.resolve_precision): bf16 autocast only where
the CPU has bf16 units, fp32 under --no-amp and the papers' protocols, --amp refused where bf16 would be
emulated, and training processes of one machine sharing its cores."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from prunenas import hardware
from prunenas.cli import main
from prunenas.config import RunSettings
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.recipes import make_recipe
from prunenas.spaces import get_space
from prunenas.train import METRICS, resolve_precision, train

AMX = hardware.CpuInfo(model="Xeon with AMX", cores=2, capability="AVX512", avx512_bf16=True, amx=True)
EPYC = hardware.CpuInfo(model="EPYC without bf16", cores=2, capability="AVX2", avx512_bf16=False, amx=False)
CPU = torch.device("cpu")


CpuIs = Callable[[hardware.CpuInfo], None]


@pytest.fixture
def cpu_is(monkeypatch: pytest.MonkeyPatch) -> CpuIs:
    """Make prunenas.hardware see the given CPU."""

    def use(info: hardware.CpuInfo) -> None:
        monkeypatch.setattr(hardware, "cpu_info", lambda: info)

    return use


@pytest.mark.parametrize(
    ("info", "amp", "expected"),
    [
        (AMX, None, True),  # the default where bf16 runs on AMX
        (AMX, False, False),  # --no-amp: fp32
        (AMX, True, True),
        (EPYC, None, False),  # no bf16 units: never a silent slow-down
        (EPYC, False, False),
    ],
)
def test_bf16_only_where_the_cpu_has_bf16_units(
    cpu_is: CpuIs, info: hardware.CpuInfo, amp: bool | None, expected: bool
) -> None:
    cpu_is(info)
    precision = resolve_precision(CPU, RunSettings(amp=amp, threads=1))
    assert precision["amp"] is expected
    assert precision["dtype"] == ("bfloat16" if expected else "float32")
    assert precision["channels_last"] is expected  # the measured-faster layout; --no-amp keeps NCHW
    assert precision["cpu"]["model"] == info.model and precision["threads"] == 1


def test_depthwise_models_train_in_fp32_channels_last_on_amx(cpu_is: CpuIs) -> None:
    """MobileNetV2 trained slower in bf16 than in fp32 on the AMX machine, faster in channels_last."""
    depthwise = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.Conv2d(8, 4, 1))
    cpu_is(AMX)
    precision = resolve_precision(CPU, RunSettings(threads=1), depthwise)
    assert (precision["amp"], precision["channels_last"]) == (False, True) and "depthwise" in precision["why"]
    assert resolve_precision(CPU, RunSettings(amp=True, threads=1), depthwise)["amp"] is True  # asked for
    cpu_is(EPYC)
    assert resolve_precision(CPU, RunSettings(threads=1), depthwise)["channels_last"] is False
    cpu_is(AMX)
    dense = resolve_precision(CPU, RunSettings(threads=1, channels_last=False))
    assert (dense["amp"], dense["channels_last"]) == (True, False)  # --no-channels-last wins


def test_amp_on_a_cpu_without_bf16_is_one_line_exit_2(cpu_is: CpuIs, capsys: pytest.CaptureFixture[str]) -> None:
    cpu_is(EPYC)
    with pytest.raises(PrunenasError, match="--amp"):
        resolve_precision(CPU, RunSettings(amp=True))
    rc = main(["train", "resnet20_channels", "--dataset", "digits", "--train-subset", "64", "--epochs", "1",
               "--amp", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--amp" in err and "EPYC without bf16" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_protocols_train_in_fp32_whatever_the_cpu(cpu_is: CpuIs) -> None:
    from prunenas.config import DataConfig
    from prunenas.protocols import apply_protocol, get_protocol

    cpu_is(AMX)
    for name in ("rethinking", "frankle"):
        _, _, settings = apply_protocol(get_protocol(name), get_space("resnet20_channels"), DataConfig(), RunSettings())
        assert resolve_precision(CPU, settings)["amp"] is False


def test_metrics_record_how_the_run_computed(tmp_path: Path) -> None:
    data = load_dataset("digits", train_subset=64, val_size=32, seed=0)
    space = get_space("resnet20_channels")
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 1, "batch_size": 32})
    for amp in (False, None):
        out = tmp_path / f"run-{amp}"
        train(space, space.reference(), data, recipe, RunSettings(amp=amp, quiet=True, plot=False), out_dir=out)
        precision = json.loads((out / METRICS).read_text(encoding="utf-8"))["precision"]
        expected = False if amp is False else hardware.cpu_amp_default()
        assert precision["amp"] is expected and precision["cpu"] == hardware.cpu_info().to_dict()
        assert precision["threads"] >= 1 and precision["threads_from"] == "share of the cores"


def test_training_processes_share_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_registry", lambda: tmp_path)
    monkeypatch.setattr(hardware, "available_cores", lambda: 4)
    monkeypatch.setattr(hardware, "_REGISTERED", set())
    assert hardware.share_cores() == 4  # alone: every core it may use
    (tmp_path / str(os.getppid())).touch()  # a second live training process (the parent is alive)
    assert hardware.share_cores() == 2
    dead = 2**22 + 12345  # above the default pid_max of 4,194,304: no such process
    (tmp_path / str(dead)).touch()
    assert hardware.share_cores() == 2 and not (tmp_path / str(dead)).exists()  # a dead one is cleaned up
    monkeypatch.setattr(hardware, "available_cores", lambda: 1)
    assert hardware.share_cores() == 1  # never below one thread
    assert resolve_precision(CPU, RunSettings(threads=3))["threads"] == 3  # --threads wins


@pytest.mark.parametrize(
    ("layout", "cores", "threads"),
    [
        ({"workers": 2}, 2, 1),
        ({"workers": 3}, 8, 2),
        ({"workers": 4}, 2, 1),  # more processes than cores: one thread each, never 0
        ({"workers": 2, "gpus": "0,1"}, 16, 4),  # 2 per GPU on 2 GPUs: 4 processes
        ({"gpus_per_trial": 2}, 8, 4),  # one torchrun group of 2 CPU processes
        ({"gpus_per_trial": 2, "gpus": "0,1,2,3"}, 16, 4),  # two groups of 2
    ],
)
def test_worker_processes_split_the_cores_before_they_start(tmp_path, monkeypatch, layout, cores, threads):
    """Each worker's thread count is decided by the parent and written into the configuration the workers
    read: processes that each take their share as they register would race (the first takes every core)."""
    from prunenas.search.config import CONFIG_FILE, SearchConfig
    from prunenas.search.storage import worker_commands

    monkeypatch.setattr(hardware, "available_cores", lambda: cores)
    base = SearchConfig(
        space="resnet20_channels", data={"dataset": "digits"}, run={"quiet": True},
        search={"study": "w", "out": str(tmp_path), "budget": "smoke", "final": False, "export": False},
    )  # fmt: skip
    assert worker_commands(base.with_settings(**layout))
    written = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert written["run"]["threads"] == threads
    assert worker_commands(base.with_settings(threads=3, **layout))  # an explicit --threads is kept as given
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["run"]["threads"] == 3
