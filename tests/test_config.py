"""The config tree: validation on construction, generated CLI flags, JSON round trips, one run identity."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pytest

from prunenas.cli import build_parser, main
from prunenas.config import ConfigError, DataConfig, RunSettings, parse_bool
from prunenas.data import load_dataset
from prunenas.genotype import Genotype
from prunenas.recipes import Recipe, make_recipe
from prunenas.search import SearchConfig, SearchSettings
from prunenas.search.config import default_study_name
from prunenas.train import run_id, run_identity


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RunSettings(device="mps"), "--device 'mps' is not supported"),
        (lambda: RunSettings(device="meta"), "--device"),
        (lambda: RunSettings(eval_every=0), "--eval-every must be >= 1"),
        (lambda: RunSettings(seed=-1), "--seed"),
        (lambda: Recipe(lr=math.inf), "--lr must be a finite number"),
        (lambda: Recipe(lr=0.0), "--lr must be > 0"),
        (lambda: Recipe(label_smoothing=2.0), "--label-smoothing must be in [0, 1)"),
        (lambda: Recipe(gamma=-1.0), "--gamma must be in (0, 1]"),
        (lambda: Recipe(warmup_epochs=-1.0), "--warmup-epochs must be >= 0"),
        (lambda: Recipe(epochs=5, warmup_epochs=9.0), "must be below --epochs 5"),
        (lambda: Recipe(momentum=1.0), "--momentum must be in [0, 1)"),
        (lambda: Recipe(milestones=(0.5, 1.5)), "--milestones"),
        (lambda: Recipe(schedule="linear"), "--schedule must be one of step, constant, cosine"),
        (lambda: Recipe(nesterov="maybe"), "--nesterov must be true or false"),  # type: ignore[arg-type]
        (lambda: Recipe(epochs=2.5), "--epochs must be an integer"),  # type: ignore[arg-type]
        (lambda: DataConfig(dataset="imagenet"), "--dataset must be one of"),
        (lambda: DataConfig(train_subset=0), "--train-subset must be >= 1"),
        (lambda: SearchSettings(max_macs_ratio=1.5), "--max-macs-ratio must be in (0, 1]"),
        (lambda: SearchSettings(max=("macs=0x",)), "positive"),
        (lambda: SearchSettings(max=("val_acc=0.9",)), "maximised"),
        (lambda: SearchSettings(max=("bogus=3",)), "unknown metric 'bogus'"),
        (lambda: SearchSettings(objectives=("val_acc", "val_acc")), "twice"),
        (lambda: SearchSettings(gpus="first"), "--gpus"),
        (lambda: SearchSettings(max_macs=5, max_macs_ratio=0.5), "not both"),
    ],
)
def test_every_value_is_checked_where_it_enters(make, message):
    with pytest.raises(ConfigError, match=None) as info:
        make()
    assert message in str(info.value)


def test_booleans_parse_strictly():
    assert parse_bool("no", "--x") is False and parse_bool("TRUE", "--x") is True and parse_bool("0", "--x") is False
    with pytest.raises(ConfigError, match="true or false"):
        parse_bool("maybe", "--x")
    assert Recipe(nesterov="false").nesterov is False  # type: ignore[arg-type]


def test_values_from_text_are_typed():
    r = Recipe.from_dict({"lr": "0.05", "milestones": "0.3,0.6", "augment": "no", "epochs": "12"})
    assert r.lr == 0.05 and r.milestones == (0.3, 0.6) and r.augment is False and r.epochs == 12
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['warp'\]"):
        Recipe.from_dict({"warp": 9})


def test_cli_flags_are_generated_from_the_fields():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train_flags = {o for a in sub.choices["train"]._actions for o in a.option_strings}
    search_flags = {o for a in sub.choices["search"]._actions for o in a.option_strings}
    for cls, flags in ((Recipe, train_flags), (RunSettings, train_flags), (DataConfig, train_flags)):
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli", True):
                assert "--" + f.name.replace("_", "-") in flags, f.name
    for f in dataclasses.fields(SearchSettings):
        assert "--" + f.name.replace("_", "-") in search_flags, f.name
    help_text = sub.choices["train"].format_help()
    assert "label smoothing of the cross-entropy (default 0.0)" in " ".join(help_text.split())


def test_run_identity_is_pinned():
    """Changing this hash renames every default run folder and search cache entry: do it on purpose only."""
    genotype = Genotype.load("li2017_resnet56_b")
    data = load_dataset("digits", seed=0, train_subset=64, val_size=32)
    recipe = make_recipe("proxy", {}, overrides={"epochs": 1})
    identity = run_identity(genotype, recipe, 0, data)
    assert run_id(identity) == "9c5cbc37"
    assert run_id(run_identity(genotype, recipe.replace(lr=0.05), 0, data)) != "9c5cbc37"
    assert run_id(run_identity(genotype, recipe, 1, data)) != "9c5cbc37"
    assert run_id(run_identity(genotype, recipe.replace(label_smoothing=0.1), 0, data)) != "9c5cbc37"


def test_changing_a_result_setting_gets_a_new_run_folder(tmp_path, monkeypatch, capsys):
    """`prunenas train ... --epochs 1` then the same with `--lr 0.05` used to clash ("holds a different run")."""
    monkeypatch.chdir(tmp_path)
    base = ["train", "resnet20_channels", "--dataset", "digits", "--train-subset", "64", "--epochs", "1", "-q"]
    assert main([*base, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["out"]
    assert main([*base, "--lr", "0.05", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)["out"]
    assert first != second
    assert Path(first).parent == Path(second).parent == Path("runs/train")
    assert main([*base, "--json"]) == 0  # the first run again: found finished, same folder
    assert json.loads(capsys.readouterr().out)["out"] == first


def test_search_config_round_trips_through_json(tmp_path):
    config = SearchConfig(
        space="resnet20_channels", data=DataConfig(dataset="digits", train_subset=64), recipe={"lr": 0.05},
        search=SearchSettings(budget="smoke", study="s", out=str(tmp_path / "s"), max_macs_ratio=0.5,
                              objectives=("val_acc", "latency")),
        metrics={"latency": {"batch": 4}}, run={"amp": False, "threads": 1},
    )  # fmt: skip
    again = SearchConfig.load(config.save(tmp_path / "c.json"))
    assert again == config
    assert again.limits[0].text() == "macs=0.5x" and again.objectives == ("val_acc", "latency")
    assert again.recipe_overrides == {"preset": "short", "lr": 0.05} and again.metrics["latency"].batch == 4
    assert again.run.amp is False and again.run.threads == 1


def test_default_study_name_covers_what_changes_the_study():
    plain = SearchSettings(budget="smoke")
    assert default_study_name(plain, 0) == "smoke-genes-tpe-s0"
    assert default_study_name(SearchSettings(budget="smoke", trials=20), 0) == "smoke-genes-tpe-s0"  # extends
    assert default_study_name(SearchSettings(budget="smoke", proxy_epochs=5), 0) != "smoke-genes-tpe-s0"
    assert default_study_name(plain, 0, {"lr": 0.05}) != "smoke-genes-tpe-s0"
    assert default_study_name(SearchSettings(budget="smoke", max_macs_ratio=0.5), 0) == "smoke-genes-tpe-s0-max0.5"
