"""Bad input refused where it enters, before anything is written, with messages about what was typed
(issue 32, causes 1, 7, 9 and 10): family settings, empty lists, $PRUNENAS_PROGRESS and flags that cannot
apply; a refused search leaves no study behind and a failed trial is retried whatever failed it; ImageFolder
links; limits quoted as typed, files named for what they are."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from tiny_search import tiny_search_config

from prunenas.cli import main
from prunenas.config import ConfigError, DataConfig
from prunenas.data import load_dataset
from prunenas.errors import DataError, PrunenasError, SpaceError
from prunenas.search import SearchConfig, run_search
from prunenas.spaces import get_space
from prunenas.spaces.cifar_densenet import CifarDenseNetSpace
from prunenas.spaces.cifar_preresnet import CifarPreResNetSpace
from prunenas.spaces.cifar_resnet import CifarResNetSpace, CifarResNetStagesSpace
from prunenas.spaces.cifar_vgg import CifarVGGSpace

#: Flags that keep a search cheap, should a case not be refused.
CHEAP = ["--budget", "smoke", "--trials", "1", "--proxy-epochs", "1", "--train-subset", "32", "--val-size", "16",
         "--no-final", "--no-seeding", "-q"]  # fmt: skip


def one_line_error(code: int, err: str, out: str = "") -> str:
    """The bad-input contract: exit 2, one line on stderr, no traceback; returns the line."""
    assert code == 2, err
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("prunenas: error:"), lines[0]
    return lines[0]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err, captured.out


# -- cause 1: family settings, checked in one place for every family ----------------------------------------------
FAMILIES = [
    (CifarResNetSpace, {"depth": 8, "widths": [4, 8, 8]}),
    (CifarVGGSpace, {"cfg": [8, "M", 16]}),
    (CifarDenseNetSpace, {"depth": 10, "growth_rate": 4}),
    (CifarPreResNetSpace, {"depth": 11, "widths": [4, 8, 8]}),
]


@pytest.mark.parametrize("value", [0, -1, 0.5, 0.99, "2", True, math.nan])
@pytest.mark.parametrize(("family", "base"), FAMILIES, ids=lambda v: getattr(v, "__name__", ""))
def test_max_width_multiplier_below_one_or_not_a_number_is_refused_by_every_family(family, base, value):
    with pytest.raises(SpaceError, match=r"\[model\] max_width_multiplier .*must be a number >= 1") as info:
        family("bad", {**base, "max_width_multiplier": value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("family", "config", "key"),
    [
        (CifarResNetSpace, {"depth": "20"}, "depth"),  # was int("20")
        (CifarResNetSpace, {"depth": 20, "num_classes": 0}, "num_classes"),
        (CifarResNetSpace, {"depth": 20, "divisor": 0}, "divisor"),
        (CifarResNetStagesSpace, {"depth": 20, "max_ratio": "0.5"}, "max_ratio"),  # was float("0.5")
        (CifarDenseNetSpace, {"depth": 10, "growth_rate": 4.5}, "growth_rate"),  # was int(4.5) = 4
        (CifarDenseNetSpace, {"depth": 10, "growth_rate": 4, "stem_width": 7.9}, "stem_width"),
        (CifarVGGSpace, {"depth": 16.5}, "depth"),
        (CifarPreResNetSpace, {"depth": 11, "widths": [4, 8.5, 8]}, "widths"),
    ],
)
def test_family_settings_of_the_wrong_type_are_refused_not_converted(family, config, key):
    with pytest.raises(SpaceError, match=rf"\[model\] {key}\b.* must be"):
        family("bad", config)


def test_a_toml_max_width_multiplier_below_one_is_one_line_naming_the_key(tmp_path, capsys):
    toml = tmp_path / "narrow.toml"
    toml.write_text('extends = "resnet20_channels"\nname = "narrow"\n[model]\nmax_width_multiplier = 0.5\n')
    line = one_line_error(*run_cli(capsys, "spaces", "show", str(toml)))
    assert "max_width_multiplier" in line and "0.5" in line and ">= 1" in line


def test_a_valid_multiplier_still_widens_the_genes():
    space = CifarResNetSpace("wide", {"depth": 8, "widths": [4, 8, 8], "max_width_multiplier": 2})
    assert space.gene("stage1_width").high == 8 and space.gene("stage1_width").reference == 4


# -- cause 1: empty lists, $PRUNENAS_PROGRESS ---------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--objectives", "--proposers", "--max", "--min", "--seed-targets"])
@pytest.mark.parametrize("text", ["", ","])
def test_a_list_flag_given_nothing_is_refused_not_taken_for_its_default(tmp_path, capsys, flag, text, tiny_toml):
    argv = ["search", "--space", str(tiny_toml), "--dataset", "digits", *CHEAP, "--out", str(tmp_path / "s")]
    line = one_line_error(*run_cli(capsys, *argv, f"{flag}={text}"))
    assert f"{flag} {text!r} lists nothing" in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", ["fancy", "bars", "1"])
def test_an_unknown_progress_style_is_refused_before_any_work(tmp_path, capsys, monkeypatch, tiny_toml, value):
    monkeypatch.setenv("PRUNENAS_PROGRESS", value)
    out = tmp_path / "run"
    argv = ["pretrain", "--space", str(tiny_toml), "--dataset", "digits", "--epochs", "1", "--train-subset", "32"]
    line = one_line_error(*run_cli(capsys, *argv, "--out", str(out)))
    assert f"PRUNENAS_PROGRESS={value!r}" in line and "bar" in line and "lines" in line
    assert not out.exists()


def test_the_progress_styles_and_auto_are_accepted(monkeypatch):
    from prunenas.progress import LineProgress, make_progress

    for value, kind in (("lines", LineProgress), (" LINES ", LineProgress), ("auto", LineProgress), ("", LineProgress)):
        monkeypatch.setenv("PRUNENAS_PROGRESS", value)
        assert isinstance(make_progress(3, "x"), kind)  # pytest's stderr is not a terminal: auto is lines
    monkeypatch.setenv("PRUNENAS_PROGRESS", "fancy")
    with pytest.raises(PrunenasError, match="PRUNENAS_PROGRESS"):
        make_progress(3, "x", quiet=True)


# -- cause 1: a flag that cannot apply is refused -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "flags"),
    [
        (["--data-dir", "/tmp"], ["--data-dir"]),
        (["--stored-size", "40"], ["--stored-size"]),
        (["--data-cache", "disk"], ["--data-cache"]),
        (["--bad-images", "skip"], ["--bad-images"]),
        (["--data-dir", "/tmp", "--stored-size", "40"], ["--data-dir", "--stored-size"]),
    ],
)
def test_data_flags_that_cannot_apply_to_the_embedded_digits_are_refused(tmp_path, capsys, tiny_toml, extra, flags):
    out = tmp_path / "run"
    argv = ["pretrain", "--space", str(tiny_toml), "--dataset", "digits", "--epochs", "1", "--train-subset", "32"]
    line = one_line_error(*run_cli(capsys, *argv, "--out", str(out), *extra))
    assert all(f in line for f in flags) and "digits" in line and "not apply" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--latency-predictor"], "--latency-predictor"),
        (["--latency-predictor", "--objectives", "val_acc,latency"], "--latency-predictor"),  # no --max latency
        (["--latency-batch", "8"], "--latency-batch"),
        (["--latency-threads", "1"], "--latency-threads"),
        (["--latency-provider", "torch"], "--latency-provider"),
        (["--heartbeat", "5"], "--heartbeat"),
        (["--final-epochs", "3"], "--final-epochs"),  # CHEAP has --no-final
        (["--mode", "proposers", "--seed-targets", "0.5"], "--seed-targets"),
        (["--proposers", "l1"], "--proposers"),  # CHEAP has --no-seeding in genes mode
        (["--min-density", "0.05"], "--min-density"),  # a channels space has no densities
    ],
)
def test_search_flags_that_cannot_apply_are_refused_not_dropped(tmp_path, capsys, tiny_toml, extra, flag):
    argv = ["search", "--space", str(tiny_toml), "--dataset", "digits", *CHEAP, "--out", str(tmp_path / "s")]
    line = one_line_error(*run_cli(capsys, *argv, *extra))
    assert flag in line and "not apply" in line
    assert not (tmp_path / "s").exists()


def test_the_rule_is_in_the_settings_so_the_python_api_refuses_too():
    with pytest.raises(ConfigError, match="--data-dir"):
        DataConfig(dataset="digits", data_dir="/data")
    # the latency metric's options live in the search's tree (SearchConfig.metrics), checked against its limits
    with pytest.raises(ConfigError, match="--latency-predictor"):
        SearchConfig(metrics={"latency": {"predictor": True}})
    with pytest.raises(ConfigError, match="--latency-predictor"):  # a latency objective is not a --max limit
        SearchConfig(search={"objectives": ("val_acc", "latency")}, metrics={"latency": {"predictor": True}})
    limited = SearchConfig(search={"max": ("latency=5ms",)}, metrics={"latency": {"predictor": True}})
    assert limited.metrics["latency"].predictor
    assert DataConfig(dataset="cifar10", data_dir="/data", stored_size=40).stored_size == 40
    plain = SearchConfig(metrics={"latency": {"batch": 1}})  # the default, given explicitly: nothing changes
    assert plain.identity() == SearchConfig().identity()


def test_evaluate_refuses_a_data_dir_for_the_digits(tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07")
    (tmp_path / "model.json").write_text(json.dumps({"input": {"mean": [0, 0, 0], "std": [1, 1, 1]}}))
    line = one_line_error(*run_cli(capsys, "evaluate", str(onnx), "--dataset", "digits", "--data-dir", "/tmp"))
    assert "--data-dir" in line and "digits" in line


# -- cause 7: nothing written before the last check; one retry rule ----------------------------------------------
def config_for(tmp_path: Path, space, **changes) -> SearchConfig:
    return tiny_search_config(tmp_path, space, "h", **changes)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, space, data) -> Path:
    from prunenas.recipes import make_recipe
    from prunenas.train import CHECKPOINT, RunSettings, train

    run = tmp_path_factory.mktemp("reference")
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 1, "batch_size": 32})
    train(space, space.reference(), data, recipe, RunSettings(quiet=True, plot=False), out_dir=run)
    return run / CHECKPOINT


@pytest.mark.parametrize("bad", ["missing.pt", "not-a-checkpoint.json"])
def test_a_search_refused_for_its_reference_writes_nothing_and_the_corrected_rerun_runs(
    tmp_path, space, data, reference, bad
):
    (tmp_path / "not-a-checkpoint.json").write_text("{}")
    config = config_for(tmp_path, space, reference=str(tmp_path / bad))
    with pytest.raises(PrunenasError, match="--reference"):
        run_search(config, space, data, log=lambda m: None)
    assert not config.out.exists()  # no study, no journal: nothing to turn the rerun away
    outcome = run_search(config.with_settings(reference=str(reference)), space, data, log=lambda m: None)
    assert outcome.complete == 2


def test_a_study_of_other_objectives_or_settings_is_refused_before_anything_is_appended(tmp_path, space, data):
    config = config_for(tmp_path, space, budget=replace(config_for(tmp_path, space).budget, trials=1))
    run_search(config, space, data, log=lambda m: None)
    journal = config.out / "study.journal"
    before = journal.read_bytes()
    for objectives, why in ((("val_acc",), "other objectives"), (("val_acc", "params"), "other settings")):
        with pytest.raises(PrunenasError, match=why):
            run_search(config.with_settings(objectives=objectives), space, data, log=lambda m: None)
        assert journal.read_bytes() == before


def test_a_trial_failed_by_an_error_is_retried_like_an_interrupted_one(tmp_path, space, data, monkeypatch):
    """An error that ends the search fails its trial; the next run queues that seeded genotype again, as it
    does for a trial stopped by Ctrl-C or a dead worker."""
    import prunenas.search.objective as objective_mod

    real = objective_mod.train
    calls = {"n": 0}

    def fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise DataError("the disk cache went away")  # bad input met mid-trial: the search stops
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_mod, "train", fails_once)
    config = config_for(tmp_path, space)
    with pytest.raises(DataError):
        run_search(config, space, data, log=lambda m: None)
    outcome = run_search(config, space, data, log=lambda m: None)
    trials = outcome.study.get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs.get("origin") == "proposer"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == failed[0].params and retries[0].user_attrs.get("proposer") == "uniform"
    assert outcome.complete == 2


def test_a_retry_that_fails_again_waits_for_the_next_run_instead_of_looping(tmp_path, space, data, monkeypatch):
    import prunenas.search.objective as objective_mod

    real = objective_mod.train
    seeded: dict[str, int] = {"n": 0}

    def seed_always_fails(space_, genotype, *args, **kwargs):
        if genotype.key == seeded.setdefault("key", genotype.key):
            seeded["n"] += 1
            raise RuntimeError("fails every time")
        return real(space_, genotype, *args, **kwargs)

    monkeypatch.setattr(objective_mod, "train", seed_always_fails)
    config = config_for(tmp_path, space)
    run_search(config, space, data, log=lambda m: None)
    assert seeded["n"] == 2  # the seed and its one retry in this run
    more = config.with_settings(trials=3)
    run_search(more, space, data, log=lambda m: None)
    assert seeded["n"] == 3  # the next run tried it once more


# -- cause 9: ImageFolder links -------------------------------------------------------------------------------------
def image_tree(root: Path, classes=("cat", "dog"), n_train: int = 3, n_test: int = 1) -> Path:
    from PIL import Image

    for split, n in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * c, 20 * i, 0)).save(root / split / cls / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("train/cat/up", ".."),  # a loop through the split folder: dog's images would be filed under cat
        ("train/cat/dogs", "../dog"),  # a link into another class
        ("train/cat/out", "../../../elsewhere"),  # a folder outside the tree
    ],
)
def test_a_link_out_of_a_class_folder_is_refused(tmp_path, link, target):
    root = image_tree(tmp_path / "tree")
    image_tree(tmp_path / "elsewhere", classes=("x",))
    (root / link).symlink_to(target)
    with pytest.raises(DataError, match="outside its class folder") as info:
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache", val_size=1)
    assert link.split("/")[-1] in str(info.value)


def test_a_class_folder_that_is_a_link_to_another_class_is_refused(tmp_path):
    root = image_tree(tmp_path / "tree")
    (root / "train" / "cow").symlink_to("dog")
    with pytest.raises(DataError, match="overlaps class folder dog"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache", val_size=1)


def test_loops_and_second_links_inside_a_class_count_each_image_once(tmp_path):
    root = image_tree(tmp_path / "tree")
    (root / "train" / "cat" / "loop").symlink_to(".")  # a loop inside the class: cut, nothing duplicated
    (root / "train" / "cat" / "again.png").symlink_to("0.png")  # the same image under a second name
    (root / "train" / "cat" / "sub").mkdir()
    (root / "train" / "cat" / "sub" / "back").symlink_to("..")  # a loop back to the class folder
    s = load_dataset("imagefolder", root, cache_dir=tmp_path / "cache", val_size=1)
    assert len(s.train) + len(s.val) == 6 and s.classes == ("cat", "dog")


def test_class_folders_linked_from_outside_the_tree_still_load(tmp_path):
    """A subset built of links to class folders elsewhere (ImageNet-100 style) is a tree like any other."""
    pool = image_tree(tmp_path / "pool")
    root = tmp_path / "subset"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for cls in ("cat", "dog"):
            (root / split / cls).symlink_to(pool / split / cls)
    s = load_dataset("imagefolder", root, cache_dir=tmp_path / "cache", val_size=1)
    assert len(s.train) + len(s.val) == 6 and len(s.test) == 2


# -- cause 10: messages about what was typed ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "typed", "meant", "raise_flag"),
    [
        (["--max", "macs=0.5"], "--max macs=0.5", "--max macs=0.5x", "raise --max macs"),
        (["--max", "params=0.25"], "--max params=0.25", "--max params=0.25x", "raise --max params"),
        (["--max-macs", "10"], "--max-macs 10", None, "raise --max-macs"),
        (["--max-macs-ratio", "0.00001"], "--max-macs-ratio 1e-05", None, "raise --max-macs-ratio to at least 0."),
        (["--min", "macs=0.5"], "--min macs=0.5", "--min macs=0.5x", "raise --min macs"),
    ],
)
def test_a_limit_is_quoted_as_typed_with_its_likely_meaning(
    tmp_path, capsys, tiny_toml, extra, typed, meant, raise_flag
):
    argv = ["search", "--space", str(tiny_toml), "--dataset", "digits", *CHEAP, "--out", str(tmp_path / "s")]
    line = one_line_error(*run_cli(capsys, *argv, *extra))
    assert typed in line and raise_flag in line
    assert "limit 0 " not in line
    if meant:
        assert f"did you mean {meant}" in line
    if "--max-macs-ratio" not in extra:
        assert "--max-macs-ratio" not in line  # a flag the user did not use
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda t: t / "g.json", "genotype"),
        (lambda t: t / "space.toml", "space definition"),
        (lambda t: t / "ckpt.pt", "PyTorch checkpoint"),
        (lambda t: t / "run", "run folder"),
    ],
)
def test_evaluate_names_what_it_was_given_and_what_it_wants(tmp_path, capsys, make: Callable[[Path], Path], what):
    import torch

    (tmp_path / "g.json").write_text(json.dumps({"space": "resnet20_channels", "genes": {}}))
    (tmp_path / "space.toml").write_text('extends = "resnet20_channels"\nname = "s"\n')
    torch.save({"model": {}}, tmp_path / "ckpt.pt")
    (tmp_path / "run").mkdir()
    torch.save({"model": {}}, tmp_path / "run" / "checkpoint.pt")
    line = one_line_error(*run_cli(capsys, "evaluate", str(make(tmp_path))))
    assert what in line and "model.onnx" in line and "sidecar" not in line


def test_errors_of_spaces_show_name_its_positional_space(capsys):
    for name in ("torchvision:no_such_model", "density:nothing"):
        line = one_line_error(*run_cli(capsys, "spaces", "show", name))
        assert "--space" not in line and "SPACE" in line and name in line


def test_an_untraceable_model_is_not_sent_to_its_density_space(tmp_path, monkeypatch):
    """The density: space of a factory is built on the same trace, so it fails the same way: it is not offered."""
    import prunenas.surgery
    from prunenas.spaces import registry

    def cannot_trace(*args, **kwargs):
        raise ZeroDivisionError("division by zero in index mapping")

    monkeypatch.setattr(prunenas.surgery, "channel_groups", cannot_trace)
    module = tmp_path / "untraceable_model.py"
    module.write_text(
        "from torch import nn\n\n"
        "def net(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(8, num_classes))\n"
    )
    registry.clear_cache()
    messages = []
    for name in (f"{module}:net@32", f"density:{module}:net@32"):
        with pytest.raises(SpaceError) as info:
            get_space(name)
        messages.append(str(info.value))
    assert all("dependency graph" in m for m in messages)  # the density: space fails the same way
    assert not any("try its density" in m for m in messages)
