"""The latency metric: units, providers, the measurement, its cache, and a search that optimises it."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from prunenas.cli import main
from prunenas.config import ConfigError
from prunenas.latency import check_provider, genotype_latency
from prunenas.metrics import Limit, get_metric
from prunenas.spaces import get_space


def test_latency_amounts_and_limits():
    metric = get_metric("latency")
    assert (metric.direction, metric.unit, metric.after_training) == ("minimize", "ms", False)
    assert metric.parse_amount("8ms") == 8 and metric.parse_amount("800us") == pytest.approx(0.8)
    assert metric.parse_amount("0.01s") == pytest.approx(10) and metric.parse_amount("3") == 3
    assert Limit.parse("latency=8ms") == Limit("latency", 8.0)
    assert Limit.parse("latency=0.6x") == Limit("latency", 0.6, relative=True)
    for bad in ("latency=3parsecs", "latency=-1ms", "latency=0x"):
        with pytest.raises(ConfigError):
            Limit.parse(bad)


def test_providers_are_checked_never_silently_replaced():
    assert check_provider("cpu") == "cpu" and check_provider("torch") == "torch"
    with pytest.raises(ConfigError, match="not one of"):
        check_provider("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--latency-provider cuda"):
            check_provider("cuda")


def test_measurement_is_interleaved_with_the_reference_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(tmp_path))
    space = get_space("resnet20_channels")
    narrow = space.make({**space.reference().genes, **{f"stage3_block{i}": 8 for i in (1, 2, 3)}})
    first = genotype_latency(space, narrow, 10)
    assert first.ms > 0 and first.reference_ms > 0 and first.ratio > 0 and first.cv >= 0
    assert (first.provider, first.batch, first.threads) == ("cpu", 1, first.threads) and first.runs >= 50
    files = list((tmp_path / "latency").glob(f"resnet20_channels-{narrow.key}-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["ms"] == first.ms
    assert genotype_latency(space, narrow, 10) == first  # from the cache
    other = genotype_latency(space, narrow, 10, batch=2)
    assert other.batch == 2 and len(list((tmp_path / "latency").glob("*.json"))) == 2


def test_search_optimises_latency_and_records_it(tmp_path, monkeypatch, tiny_toml):
    monkeypatch.chdir(tmp_path)
    argv = ["search", "--space", str(tiny_toml), "--dataset", "digits", "--train-subset", "64", "--budget", "smoke",
            "--trials", "2", "--proxy-epochs", "1", "--no-final", "--objectives", "val_acc,latency",
            "--out", "s", "-q"]  # fmt: skip
    assert main(argv) == 0
    with open("s/trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(float(r["latency"]) > 0 and float(r["latency_ratio"]) > 0 for r in rows)
    assert all(r["latency_setup"].startswith("ONNX Runtime cpu, batch 1, ") for r in rows)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [o["name"] for o in summary["objectives"]] == ["val_acc", "latency"]
    assert summary["objectives"][1]["unit"] == "ms" and "threads" in summary["objectives"][1]["setup"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--latency-provider", "gpu"], "--latency-provider"),
        (["--latency-batch", "0"], "--latency-batch"),
        (["--max", "latency=5parsecs"], "duration"),
        (["--max", "latency=0ms"], "positive"),
    ],
)
def test_latency_bad_input(tmp_path, capsys, extra, fragment):
    code = main(["search", "--space", "resnet20_channels", "--dataset", "digits", "--out", str(tmp_path / "s"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and fragment in err
