"""Issue 32, causes 5 and 6: the Python API checks its arguments where they enter, one boolean parser, one
list of valid recipe settings."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import prunenas as pn
from prunenas.cli import build_parser, main
from prunenas.cli.common import recipe_overrides
from prunenas.config import ConfigError, parse_bool
from prunenas.errors import PrunenasError
from prunenas.recipes import make_recipe, recipe_settings

R20 = "resnet20_channels"
DIGITS = pn.DataConfig(dataset="digits", train_subset=64)


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI on bad input: exit 2, one `prunenas: error:` line, no traceback; the line."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunenas: error:"), captured.err
    return lines[0]


# -- cause 5: the Python API checks every argument -------------------------------------------------------------
def _reference() -> pn.Genotype:
    return pn.load_genotype(R20)


# (call, function, parameter): each call raises PrunenasError naming the function and the parameter.
BAD_CALLS: list[tuple[str, Callable[[], Any], str, str]] = [
    ("num_classes as text", lambda: pn.build(R20, num_classes="10"), "build()", "num_classes"),
    ("zero classes", lambda: pn.build(R20, num_classes=0), "build()", "num_classes"),
    ("negative classes", lambda: pn.build(R20, num_classes=-3), "build()", "num_classes"),
    ("a bool as classes", lambda: pn.build(R20, num_classes=True), "build()", "num_classes"),
    ("seed as text", lambda: pn.build(R20, seed="a"), "build()", "seed"),
    ("negative seed", lambda: pn.build(R20, seed=-1), "build()", "seed"),
    ("no genotype", lambda: pn.build(None), "build()", "genotype"),
    ("genotype as a number", lambda: pn.build(42), "build()", "genotype"),
    ("zero classes counted", lambda: pn.count_cost(R20, num_classes=0), "count_cost()", "num_classes"),
    ("genotype as a float", lambda: pn.count_cost(3.5), "count_cost()", "genotype"),
    ("no space name", lambda: pn.get_space(None), "get_space()", "name"),
    ("space name as a number", lambda: pn.get_space(42), "get_space()", "name"),
    ("empty space name", lambda: pn.get_space(""), "get_space()", "name"),
    ("no source", lambda: pn.load_genotype(None), "load_genotype()", "source"),
    ("source as a number", lambda: pn.load_genotype(42), "load_genotype()", "source"),
    ("space as a number", lambda: pn.load_genotype(R20, space=5), "load_genotype()", "space"),
    ("dict without genes", lambda: pn.load_genotype({"space": R20}), "load_genotype()", "source"),
    ("space of propose", lambda: pn.propose(42, "uniform", ratio=0.5), "propose()", "space"),
    ("no proposer", lambda: pn.propose(R20, None, ratio=0.5), "propose()", "proposer"),
    ("ratio as text", lambda: pn.propose(R20, "uniform", ratio="a"), "propose()", "ratio"),
    ("ratio as a bool", lambda: pn.propose(R20, "uniform", ratio=True), "propose()", "ratio"),
    ("reference as a number", lambda: pn.propose(R20, "uniform", ratio=0.5, reference=5), "propose()", "reference"),
    ("device that is not one", lambda: pn.propose(R20, "uniform", ratio=0.5, device="mps"), "propose()", "device"),
    ("data as a number", lambda: pn.load_data(5), "load_data()", "data"),
    ("unknown dataset", lambda: pn.load_data("imagenet"), "load_data()", "data"),
    ("unknown data setting", lambda: pn.load_data("digits", foo=1), "load_data()", "foo"),
    ("settings beside a DataConfig", lambda: pn.load_data(DIGITS, val_size=5), "load_data()", "val_size"),
    ("recipe as a number", lambda: pn.train_model(R20, DIGITS, recipe=5), "train_model()", "recipe"),
    ("out as a number", lambda: pn.train_model(R20, DIGITS, out=5), "train_model()", "out"),
    ("weights as a number", lambda: pn.train_model(R20, DIGITS, weights=5), "train_model()", "weights"),
    ("settings not RunSettings", lambda: pn.train_model(R20, DIGITS, settings=5), "train_model()", "settings"),
    ("teacher as a number", lambda: pn.train_model(R20, DIGITS, teacher=5), "train_model()", "teacher"),
    ("epochs as text", lambda: pn.train_model(R20, DIGITS, epochs="x"), "train_model()", "epochs"),
    ("unknown search setting", lambda: pn.search_architectures(R20, trails=4), "search_architectures()", "trails"),
    ("search data as a number", lambda: pn.search_architectures(R20, data=5), "search_architectures()", "data"),
    ("unknown budget", lambda: pn.search_architectures(R20, budget="huge"), "search_architectures()", "budget"),
    ("no run folder", lambda: pn.export_onnx(None), "export_onnx()", "run_dir"),
    ("unknown export option", lambda: pn.export_onnx("run", opsett=17), "export_onnx()", "opsett"),
    ("export root as a number", lambda: pn.export_onnx("run", root=5), "export_onnx()", "root"),
    ("misspelt DataConfig field", lambda: pn.DataConfig(datset="digits"), "DataConfig()", "datset"),
    ("unknown Recipe field", lambda: pn.Recipe(warp=9), "Recipe()", "warp"),
    ("overrides not a dict", lambda: pn.make_recipe("standard", overrides=5), "make_recipe()", "overrides"),
    ("macs as text", lambda: pn.make_recipe("scratch-b", macs="x", reference_macs=5), "make_recipe()", "macs"),
]


@pytest.mark.parametrize(("call", "function", "parameter"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_a_bad_argument_is_the_projects_error_naming_it(call, function, parameter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written where the tests run
    with pytest.raises(PrunenasError) as info:
        call()
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert function in message and parameter in message, message
    assert not (tmp_path / "runs").exists()


def test_the_message_says_what_was_given_and_what_is_valid():
    with pytest.raises(PrunenasError) as info:
        pn.build(R20, num_classes="10")
    assert "'10' (str)" in str(info.value) and "an integer >= 1" in str(info.value)
    with pytest.raises(PrunenasError) as info:
        pn.load_data("digits", foo=1)
    assert "valid:" in str(info.value) and "train_subset" in str(info.value)


def test_a_genotype_can_be_given_as_a_dict():
    reference = _reference()
    as_dict = json.loads(reference.to_json())
    assert pn.load_genotype(as_dict) == reference
    assert pn.count_cost(as_dict).macs == pn.count_cost(reference).macs
    model = pn.build(as_dict, num_classes=3)
    assert model.fc.out_features == 3
    assert pn.load_genotype(as_dict, space=R20).space == R20


def test_numbers_from_numpy_and_paths_are_accepted(tmp_path):
    assert pn.build(R20, num_classes=np.int64(4), seed=np.int64(1)).fc.out_features == 4
    path = _reference().save(tmp_path / "g.json")
    assert pn.load_genotype(Path(path)) == _reference()
    assert pn.get_space(Path(pn.get_space(R20).source)).name == R20


# -- cause 6: one boolean parser -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("Yes", True), ("on", True), ("1", True), (1, True), (True, True),
     ("false", False), ("NO", False), ("off", False), ("0", False), (0, False), (False, False)],
)  # fmt: skip
def test_every_boolean_word_of_the_readme_parses(value, expected):
    assert parse_bool(value, "--x") is expected


@pytest.mark.parametrize("value", ["maybe", 2, -1, 1.0, None, "", [1]])
def test_anything_else_is_not_a_boolean(value):
    with pytest.raises(ConfigError, match=r"--x must be true or false \(true/false, yes/no, on/off or 1/0\)"):
        parse_bool(value, "--x")


def _set(*assignments: str) -> dict[str, Any]:
    """The recipe overrides of `prunenas train` given these --set KEY=VALUE, as the command reads them."""
    args = build_parser().parse_args(["train", R20, *[a for kv in assignments for a in ("--set", kv)]])
    return recipe_overrides(args)


@pytest.mark.parametrize("text", ["0", "1", "off", "on", "no", "yes", "false", "true"])
def test_set_takes_every_boolean_word(text):
    recipe = make_recipe("standard", {}, overrides=_set(f"nesterov={text}"))
    assert recipe.nesterov is (text in ("1", "on", "yes", "true"))


def test_set_nesterov_0_trains(tmp_path, capsys, tiny_toml):
    out = tmp_path / "run"
    argv = ["train", "tiny_resnet8", "--space", str(tiny_toml), "--dataset", "digits", "--train-subset", "64"]
    code = main([*argv, "--epochs", "1", "--set", "nesterov=0", "--set", "augment=off", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    recipe = json.loads((out / "metrics.json").read_text())["recipe_settings"]
    assert recipe["nesterov"] is False and recipe["augment"] is False


def test_a_bad_set_value_names_set_and_the_key(capsys):
    line = one_line_error(["train", R20, "--dataset", "digits", "--set", "nesterov=5"], capsys)
    assert "--set nesterov" in line and "1/0" in line and "got 5" in line


@pytest.mark.parametrize("text", ["1", "0", "on", "no"])
def test_option_global_ranking_takes_every_boolean_word(text, capsys):
    argv = ["propose", "--space", R20, "--proposer", "random", "--ratio", "0.5", "--option", f"global_ranking={text}"]
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["space"] == R20


def test_proposer_options_of_every_kind_share_the_parser():
    genotype = pn.propose("resnet20_density", "magnitude-init", density=0.5, invert=1)
    assert genotype.space == "resnet20_density"
    with pytest.raises(PrunenasError, match="invert must be true or false"):
        pn.propose("resnet20_density", "magnitude-init", density=0.5, invert=2)


def test_a_toml_recipe_boolean_may_be_1_or_0():
    assert make_recipe("standard", {"nesterov": 1, "augment": 0}).nesterov is True
    assert make_recipe("standard", {"augment": 0}).augment is False
    with pytest.raises(ConfigError, match=r"\[recipe\] nesterov must be true or false"):
        make_recipe("standard", {"nesterov": 5})


# -- cause 6: one list of valid recipe settings ----------------------------------------------------------------
def _offered(message: str) -> list[str]:
    match = re.search(r"valid: (.*)$", message)
    assert match is not None, message
    return [k.strip() for k in match.group(1).split(",")]


def test_the_valid_settings_lists_agree(capsys):
    from_set = _offered(one_line_error(["train", R20, "--dataset", "digits", "--set", "warp=9"], capsys))
    with pytest.raises(ConfigError) as info:
        make_recipe("standard", {"warp": 9})  # a space's TOML [recipe]
    from_toml = _offered(str(info.value))
    with pytest.raises(PrunenasError) as api:
        pn.train_model(R20, DIGITS, warp=9)
    assert from_set == from_toml == _offered(str(api.value)) == list(recipe_settings())


def test_every_offered_setting_is_accepted_everywhere():
    defaults = pn.Recipe()
    samples = {"preset": "imagenet-short", "lr_batch": 256, "kd_weight": 0.5}
    for key in recipe_settings():
        value = samples.get(key, getattr(defaults, key))
        text = json.dumps(list(value) if isinstance(value, tuple) else value)
        from_set = make_recipe("standard", {}, overrides=_set(f"{key}={text}"))  # --set KEY=VALUE
        from_toml = make_recipe("standard", {key: value})  # a space's TOML [recipe]
        assert getattr(from_set, key) == getattr(from_toml, key) == (tuple(value) if isinstance(value, list) else value)


@pytest.mark.parametrize("key", ["cli_group", "name", "needs_weights", "extra"])
def test_a_key_refused_somewhere_is_offered_nowhere(key, capsys):
    line = one_line_error(["train", R20, "--dataset", "digits", "--set", f"{key}=1"], capsys)
    assert f"unknown setting(s) ['{key}']" in line
    with pytest.raises(ConfigError, match="unknown setting"):
        make_recipe("standard", {key: 1})


def test_scratch_b_epochs_from_a_flag_are_read_as_a_number():
    args = build_parser().parse_args(["train", R20, "--recipe", "scratch-b", "--epochs", "3"])
    recipe = make_recipe("scratch-b", {}, macs=1, reference_macs=2, overrides=recipe_overrides(args))
    assert recipe.epochs == 6
    with pytest.raises(ConfigError, match="--epochs must be >= 1"):
        make_recipe("scratch-b", {}, macs=1, reference_macs=2, overrides={"epochs": "0"})


def test_the_proposer_plugin_point_is_in_the_top_level_api():
    """A third party writes a proposer against `prunenas` alone: the base class, its context and result
    types, the target and the lookup are top-level names (issue 25, item 3)."""
    import prunenas as pn
    from prunenas.proposers import base

    for name in ("Proposer", "Proposal", "ProposalContext", "Target", "get_proposer"):
        assert getattr(pn, name) is getattr(base, name), name
        assert name in pn.__all__ and name in dir(pn)
    proposer = pn.get_proposer("uniform", "channels")
    assert isinstance(proposer, pn.Proposer)
    assert pn.Target("macs_ratio", 0.5).describe() == "macs_ratio=0.5"
