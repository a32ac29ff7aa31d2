"""The nested configuration tree: a search holds its search settings, run settings, data, recipe changes and
each metric's options; flags come from it recursively; one identity decides run folders and resumes; the
Python API sets whatever the command line sets; a third-party metric declares options of its own."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import prunenas as pn
from prunenas import metrics
from prunenas.cli import build_parser, main
from prunenas.config import ConfigError, DataConfig
from prunenas.errors import PrunenasError
from prunenas.recipes import PartialRecipe
from prunenas.search import SearchConfig, SearchSettings


def _search_args(*extra: str) -> SearchConfig:
    args = build_parser().parse_args(["search", "--space", "resnet20_channels", *extra])
    return SearchConfig.from_args(args)


def test_flags_are_generated_recursively_from_the_tree():
    config = _search_args(
        "--trials", "5", "--lr", "0.05", "--val-size", "40", "--amp", "--threads", "1", "--objectives",
        "val_acc,latency", "--latency-batch", "8", "--latency-provider", "torch",
    )  # fmt: skip
    assert config.search.trials == 5 and config.recipe.lr == 0.05 and config.data.val_size == 40
    assert config.run.amp is True and config.run.threads == 1
    assert config.metrics["latency"].batch == 8 and config.metrics["latency"].provider == "torch"
    # a candidate's epochs are --proxy-epochs: the partial recipe's --epochs is not a search flag
    with pytest.raises(PrunenasError, match="unrecognized arguments: --epochs 3"):
        build_parser().parse_args(["search", "--space", "resnet20_channels", "--epochs", "3"])


def test_the_tree_round_trips_through_json_and_settings_are_set_by_flag_name(tmp_path):
    config = SearchConfig(
        space="resnet20_channels", search={"objectives": ("val_acc", "latency"), "budget": "smoke"},
        recipe=PartialRecipe(lr=0.05), metrics={"latency": {"threads": 1}},
    )  # fmt: skip
    assert SearchConfig.load(config.save(tmp_path / "c.json")) == config
    changed = config.with_settings(trials=7, weight_decay=5e-4, latency_batch=4, amp=False, val_size=30)
    assert changed.search.trials == 7 and changed.recipe.weight_decay == 5e-4 and changed.recipe.lr == 0.05
    assert changed.metrics["latency"].batch == 4 and changed.metrics["latency"].threads == 1
    assert changed.run.amp is False and changed.data.val_size == 30
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['trails'\]"):
        config.with_settings(trails=3)


def test_one_identity_what_changes_a_study_and_what_does_not():
    base = SearchConfig(space="resnet20_channels", search={"budget": "smoke"})
    same = [
        base.with_settings(trials=50, top_k=3, workers=2, quiet=True, threads=1, amp=False, study="x", timeout=9.0),
        base.with_settings(proxy_epochs=3),  # the smoke preset's own proxy length, given explicitly
        base.with_settings(max=["macs=0.5x"]).with_settings(max=[]),  # a limit given and taken back
    ]
    for other in same:
        assert other.identity() == base.identity()
    differs = [
        base.with_settings(lr=0.05),
        base.with_settings(val_size=300),
        base.with_settings(seed=1),
        base.with_settings(proxy_epochs=4),
        base.with_settings(max_macs_ratio=0.5),
        base.with_settings(mode="proposers"),
    ]
    for other in differs:
        assert other.identity() != base.identity(), other
    # the --max-macs-ratio alias and the --max limit it stands for are one study
    assert base.with_settings(max_macs_ratio=0.5).identity() == base.with_settings(max=["macs=0.5x"]).identity()
    # a metric's options are part of it while the metric is measured, given or at their defaults
    timed = base.with_settings(objectives=["val_acc", "latency"])
    assert timed.identity()["metrics"] == {"latency": {"batch": 1, "provider": "cpu"}}
    assert timed.with_settings(latency_batch=1).identity() == timed.identity()
    assert timed.with_settings(latency_batch=8).identity() != timed.identity()
    assert timed.with_settings(latency_predictor=True, max=["latency=5ms"]).identity()["metrics"] == {
        "latency": {"batch": 1, "provider": "cpu"}  # the predictor only screens: not part of it
    }


def test_a_resumed_study_is_checked_against_the_identity(tmp_path, capsys, tiny_toml):
    out = tmp_path / "s"
    base = ["search", "--space", str(tiny_toml), "--dataset", "digits", "--train-subset", "64", "--val-size", "32",
            "--budget", "smoke", "--trials", "1", "--proxy-epochs", "1", "--proposers", "uniform", "--no-final",
            "--out", str(out), "-q"]  # fmt: skip
    assert main(base) == 0
    assert main([*base, "--trials", "2", "--workers", "1"]) == 0  # extended: the same study
    capsys.readouterr()
    assert main([*base, "--lr", "0.05", "--study", json.loads((out / "summary.json").read_text())["study"]]) == 2
    err = capsys.readouterr().err
    assert "other settings (recipe.lr)" in err and err.count("\n") == 1


def test_the_python_api_sets_the_recipe_of_the_candidates(tmp_path, space):
    """`pn.search_architectures(..., recipe={"lr": 0.05})` trains every candidate at lr 0.05 (the same as
    `prunenas search --lr 0.05`); a PartialRecipe is the same study."""
    common = {"trials": 1, "proxy_epochs": 1, "top_k": 1, "final": False, "proposers": ("uniform",)}
    data = DataConfig(dataset="digits", train_subset=64, val_size=32)
    found = pn.search_architectures(
        space, data, "smoke", out=str(tmp_path / "s"), recipe={"lr": 0.05}, run={"threads": 1}, **common
    )
    runs = sorted((tmp_path / "s" / "runs").glob("*/metrics.json"))
    assert runs and found.trials == 1
    for path in runs:
        record = json.loads(path.read_text())
        assert record["recipe"] == "proxy" and record["recipe_settings"]["lr"] == 0.05
        assert record["precision"]["threads"] == 1  # the run settings reach the candidates too
    again = pn.search_architectures(
        space, data, "smoke", out=str(tmp_path / "s"), recipe=PartialRecipe(lr=0.05), **common
    )
    assert again.trials == 1  # the same study, found complete: nothing trained again
    with pytest.raises(ConfigError, match=r"search_architectures\(\): recipe lr must be"):
        pn.search_architectures(space, data, "smoke", recipe={"lr": -1.0}, **common)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['lrr'\]"):
        pn.search_architectures(space, data, "smoke", recipe={"lrr": 0.05}, **common)


# -- a third party's metric with an option of its own ---------------------------------------------------------
METRIC_WITH_OPTIONS = '''
"""A third-party metric with an option: the number of output channels of the convolutions, times a weight."""
from dataclasses import dataclass
from typing import ClassVar

from prunenas.config import Config, setting
from prunenas.metrics import Metric, MetricContext


@dataclass(frozen=True)
class WidthOptions(Config):
    cli_group: ClassVar[str] = "width metric"

    weight: float = setting(1.0, "multiplies the channel count", low=0.0, low_open=True)


class Width(Metric):
    name = "width"
    unit = "channels"
    options_class = WidthOptions

    def measure(self, ctx: MetricContext) -> float:
        options = self.options_in(ctx.options)
        model = ctx.space.build(ctx.genotype, num_classes=ctx.num_classes)
        return options.weight * sum(m.out_channels for m in model.modules() if hasattr(m, "out_channels"))
'''


@pytest.fixture
def width_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The metric above installed as a third party would: a module and an entry point in a site folder."""
    site = tmp_path / "site"
    dist = site / "width_metric-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "width_metric.py").write_text(METRIC_WITH_OPTIONS, encoding="utf-8")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: width_metric\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[prunenas.metrics]\nwidth = width_metric:Width\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    metrics.clear_cache()
    yield
    metrics.clear_cache()
    sys.modules.pop("width_metric", None)


def test_a_third_party_metric_declares_an_option(width_metric, tmp_path, space, capsys):
    assert "--width-weight" in _search_help()
    config = _search_args("--objectives", "val_acc,width", "--width-weight", "2")
    assert config.metrics["width"].weight == 2.0
    assert config.identity()["metrics"]["width"] == {"weight": 2.0}
    with pytest.raises(ConfigError, match="--width-weight must be > 0"):
        _search_args("--objectives", "val_acc,width", "--width-weight", "0")
    with pytest.raises(ConfigError, match="--width-weight does not apply without a width objective"):
        _search_args("--width-weight", "3")
    # measured with its option in a search from the Python API
    data = DataConfig(dataset="digits", train_subset=64, val_size=32)
    pn.search_architectures(
        space, data, "smoke", out=str(tmp_path / "w"), objectives=("val_acc", "width"), trials=1, proxy_epochs=1,
        top_k=1, final=False, proposers=("uniform",), metrics={"width": {"weight": 2.0}},
    )  # fmt: skip
    rows = json.loads((tmp_path / "w" / "trials.json").read_text())
    model = space.build(space.make(rows[0]["genotype"]["genes"]), num_classes=10)
    channels = sum(m.out_channels for m in model.modules() if hasattr(m, "out_channels"))
    assert rows[0]["width"] == pytest.approx(2.0 * channels)


def _search_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return str(sub.choices["search"].format_help())  # type: ignore[attr-defined]


def test_search_settings_are_still_a_config_of_their_own():
    assert SearchSettings(budget="smoke").resolved_objectives() == ("val_acc", "macs")
