"""Knowledge distillation from the unpruned model (Hinton, Vinyals and Dean 2015): the loss, the recipe
settings, the run identity, `prunenas train/search/rethink --teacher`, and bad input. Tiny ResNet-8
spaces on ~100 digits images: seconds on a CPU."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import tiny_search
import torch
import torch.nn.functional as F
from torch import nn

from prunenas.cli import build_parser, main
from prunenas.config import ConfigError, RunSettings
from prunenas.data import DatasetSplits, load_dataset
from prunenas.genotype import Genotype
from prunenas.recipes import make_recipe
from prunenas.search import BUDGETS, Objective, SearchConfig, SearchSettings
from prunenas.spaces import get_space
from prunenas.spaces.base import Space
from prunenas.train import (
    CHECKPOINT,
    METRICS,
    Teacher,
    TrainStep,
    distillation_loss,
    load_model_state,
    run_id,
    run_identity,
    train,
    weights_sha,
)

SPACE_TOML = """extends = "resnet20_channels"
name = "kd_tiny"
[model]
depth = 8
widths = [6, 8, 12]
shortcut = "B"
[recipe]
batch_size = 32
"""
OTHER_TOML = SPACE_TOML.replace('name = "kd_tiny"', 'name = "kd_tiny_wide"').replace("[6, 8, 12]", "[8, 8, 12]")
SUBSET = ["--dataset", "digits", "--train-subset", "96", "--val-size", "32"]
QUIET = RunSettings(device="cpu", quiet=True, plot=False)
PRUNED = {"stage1_width": 4, "stage1_block1": 3, "stage2_width": 8, "stage2_block1": 4, "stage3_width": 12}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny space, its data, a pruned genotype and a teacher: the reference trained for one epoch."""
    folder = tmp_path_factory.mktemp("kd")
    toml = folder / "kd_tiny.toml"
    toml.write_text(SPACE_TOML, encoding="utf-8")
    (folder / "kd_tiny_wide.toml").write_text(OTHER_TOML, encoding="utf-8")
    space = get_space(str(toml))
    data = load_dataset("digits", seed=0, train_subset=96, val_size=32)
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 1})
    train(space, space.reference(), data, recipe, QUIET, out_dir=folder / "teacher", evaluate_test=False)
    genotype = space.make({**space.reference().genes, **PRUNED})
    path = genotype.save(folder / "pruned.json")
    return {
        "folder": folder, "toml": str(toml), "other_toml": str(folder / "kd_tiny_wide.toml"), "space": space,
        "data": data, "genotype": genotype, "genotype_file": str(path), "teacher": folder / "teacher" / CHECKPOINT,
    }  # fmt: skip


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_model_state(folder / CHECKPOINT)


# -- the loss -------------------------------------------------------------------------------------------------
def test_the_loss_is_hintons_formula_computed_by_hand() -> None:
    s = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -3.0]])
    t = torch.tensor([[1.5, 0.0, -0.5], [-1.0, 2.0, 0.3]])
    y = torch.tensor([0, 2])
    T, w = 4.0, 0.9
    kl = 0.0
    ce = 0.0
    for i in range(2):
        zs = [math.exp(v / T) for v in s[i].tolist()]
        zt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        kl += sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps, strict=True))  # KL(teacher || student)
        ce += -math.log(math.exp(s[i, y[i]].item()) / sum(math.exp(v) for v in s[i].tolist()))
    expected = w * T**2 * kl / 2 + (1 - w) * ce / 2  # each term the mean over the batch of 2
    got = distillation_loss(s, t, y, temperature=T, weight=w)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # w = 0 is the cross-entropy exactly, w = 1 the soft term alone
    assert torch.equal(distillation_loss(s, t, y, temperature=T, weight=0.0), F.cross_entropy(s, y))
    assert distillation_loss(s, t, y, temperature=T, weight=1.0).item() == pytest.approx(T**2 * kl / 2, rel=1e-6)
    # a student that matches the teacher has no soft loss, at any temperature
    assert distillation_loss(t, t, y, temperature=2.0, weight=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_the_teacher_sees_the_students_batch_in_eval_mode_without_gradients(setup: dict[str, Any]) -> None:
    space: Space = setup["space"]
    student = space.build(setup["genotype"], num_classes=10)
    teacher = space.build(space.reference(), num_classes=10).train()
    seen: dict[str, Any] = {}
    student.register_forward_pre_hook(lambda _m, args: seen.__setitem__("student", args[0]))

    def on_teacher(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["teacher"], seen["training"], seen["grad"] = args[0], teacher.training, out.requires_grad

    teacher.register_forward_hook(on_teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    step = TrainStep(student, make_recipe("proxy", space.recipe), amp=False, teacher=teacher)
    step(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert seen["teacher"] is seen["student"]  # the very augmented batch
    assert seen["training"] is False and seen["grad"] is False
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN stats untouched
    assert all(p.grad is None for p in teacher.parameters())


# -- recipe settings and the run identity ------------------------------------------------------------------------
def test_kd_settings_are_checked_recipe_fields_left_out_of_identities_without_a_teacher() -> None:
    recipe = make_recipe("proxy", {}, overrides={"epochs": 1})
    assert (recipe.kd_temperature, recipe.kd_weight) == (4.0, 0.9)
    assert "kd_weight" not in recipe.to_dict()  # at their defaults: run folders of before keep their names
    assert make_recipe("proxy", {}, overrides={"kd_weight": 0.5}).to_dict()["kd_weight"] == 0.5
    with pytest.raises(ConfigError, match=r"--kd-weight must be in \[0, 1\]"):
        make_recipe("proxy", {}, overrides={"kd_weight": 1.5})
    with pytest.raises(ConfigError, match="--kd-temperature must be > 0"):
        make_recipe("proxy", {}, overrides={"kd_temperature": 0})
    # the pinned identity (tests/test_config.py) of a run without a teacher, whatever its kd settings
    genotype = Genotype.load("li2017_resnet56_b")
    data = load_dataset("digits", seed=0, train_subset=64, val_size=32)
    assert run_id(run_identity(genotype, recipe, 0, data)) == "9c5cbc37"
    assert run_id(run_identity(genotype, recipe.replace(kd_weight=0.5, kd_temperature=2.0), 0, data)) == "9c5cbc37"
    # with a teacher: its weights and the kd settings are part of it
    model = nn.Linear(3, 2)
    teacher = Teacher.of(model)
    with_teacher = run_id(run_identity(genotype, recipe, 0, data, teacher=teacher))
    assert with_teacher != "9c5cbc37"
    assert run_id(run_identity(genotype, recipe.replace(kd_weight=0.5), 0, data, teacher=teacher)) != with_teacher
    with torch.no_grad():
        model.weight.add_(1.0)
    assert run_id(run_identity(genotype, recipe, 0, data, teacher=Teacher.of(model))) != with_teacher


def test_kd_flags_are_generated_from_the_recipe() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "search", "rethink"):
        text = " ".join(sub.choices[command].format_help().split())
        assert "--teacher CKPT" in text, command
        assert "--kd-temperature T" in text and "--kd-weight W" in text, command
        assert "the CIFAR practice of the RepDistiller benchmarks) (default 4.0)" in text, command


# -- prunenas train --teacher ----------------------------------------------------------------------------------
def test_train_distills_records_the_teacher_and_gets_its_own_run_folder(
    setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["train", setup["genotype_file"], "--space", setup["toml"], *SUBSET, "--recipe", "proxy", "--epochs", "1"]
    base += ["--device", "cpu", "--quiet", "--json"]
    rc, out, err = run_cli(capsys, *base, "--teacher", str(setup["teacher"]))
    assert rc == 0, err
    kd_dir = Path(json.loads(out)["out"])
    rc, out, err = run_cli(capsys, *base)
    assert rc == 0, err
    plain_dir = Path(json.loads(out)["out"])
    assert kd_dir != plain_dir and kd_dir.parent == plain_dir.parent == Path("runs/train")
    record = json.loads((kd_dir / METRICS).read_text())["teacher"]
    assert record == {
        "checkpoint": str(setup["teacher"]), "given_as": "checkpoint",
        "weights_sha": weights_sha(load_model_state(setup["teacher"])), "temperature": 4.0, "weight": 0.9,
    }  # fmt: skip
    assert "teacher" not in json.loads((plain_dir / METRICS).read_text())
    assert any(not torch.equal(v, final_weights(plain_dir)[k]) for k, v in final_weights(kd_dir).items())
    # other kd settings: another run
    rc, out, err = run_cli(capsys, *base, "--teacher", str(setup["teacher"]), "--set", "kd_temperature=2")
    assert rc == 0, err
    assert Path(json.loads(out)["out"]) not in (kd_dir, plain_dir)
    assert json.loads((Path(json.loads(out)["out"]) / METRICS).read_text())["teacher"]["temperature"] == 2.0


def test_kd_weight_zero_trains_bit_identically_to_no_teacher(setup: dict[str, Any], tmp_path: Path) -> None:
    space, data, genotype = setup["space"], setup["data"], setup["genotype"]
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 2})
    plain = train(space, genotype, data, recipe, QUIET, out_dir=tmp_path / "plain", evaluate_test=False)
    zero = train(
        space, genotype, data, recipe.replace(kd_weight=0.0), QUIET, out_dir=tmp_path / "zero", evaluate_test=False,
        teacher=setup["teacher"],
    )  # fmt: skip
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "zero")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h.train_loss for h in zero.history] == [h.train_loss for h in plain.history]
    assert json.loads((tmp_path / "zero" / METRICS).read_text())["teacher"]["weight"] == 0.0


# -- search ------------------------------------------------------------------------------------------------------
def search_config(setup: dict[str, Any], out: Path, **changes: Any) -> SearchConfig:
    budget = replace(BUDGETS["smoke"], trials=1, proxy_epochs=1, seed_targets=(0.5,), top_k=1, final_epochs=1)
    return tiny_search.search_config(
        setup["space"],
        out,
        "kd",
        budget=budget,
        exports=out / "exports",
        device="cpu",
        proposers=("uniform",),
        **changes,
    )


def test_search_proxies_distill(setup: dict[str, Any], tmp_path: Path) -> None:
    space: Space = setup["space"]
    data: DatasetSplits = setup["data"]
    genes = dict(setup["genotype"].genes)
    teacher = str(setup["teacher"])
    kd = Objective(search_config(setup, tmp_path / "kd", teacher=teacher), space, data)
    plain = Objective(search_config(setup, tmp_path / "plain"), space, data)
    assert kd.run_dir(setup["genotype"]).name != plain.run_dir(setup["genotype"]).name
    values = kd(optuna.trial.FixedTrial(genes))
    assert isinstance(values, tuple) and 0.0 <= values[0] <= 1.0
    record = json.loads((kd.run_dir(setup["genotype"]) / METRICS).read_text())["teacher"]
    assert record["checkpoint"] == teacher and record["weights_sha"] == weights_sha(load_model_state(teacher))
    # --teacher reference is the --reference checkpoint
    ref = Objective(search_config(setup, tmp_path / "ref", teacher="reference", reference=teacher), space, data)
    assert ref.teacher is not None and ref.teacher.given_as == "reference"
    assert ref.teacher.weights_sha == kd.teacher.weights_sha
    # the study is another one (its name and its settings)
    named = SearchSettings(budget="smoke", teacher=teacher)
    from prunenas.search.config import default_study_name

    assert default_study_name(named, 0) != default_study_name(SearchSettings(budget="smoke"), 0)
    assert search_config(setup, tmp_path / "x", teacher=teacher).identity()["search"]["teacher"] == teacher


def test_search_teacher_reference_needs_a_reference() -> None:
    with pytest.raises(ConfigError, match=r"--teacher reference .* pass --reference CKPT"):
        SearchSettings(teacher="reference")
    assert SearchSettings(teacher="reference", reference="ref.pt").teacher == "reference"


# -- rethink ---------------------------------------------------------------------------------------------------
def test_rethink_adds_a_distilled_scratch_e_arm(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study"
    argv = [
        "rethink", "--space", setup["toml"], "--genotype", setup["genotype_file"], *SUBSET, "--budget", "smoke",
        "--epochs", "1", "--finetune-epochs", "1", "--device", "cpu", "--quiet", "--json", "--out", str(study),
    ]  # fmt: skip
    rc, out, err = run_cli(capsys, *argv, "--teacher", "reference", "--dry-run")
    assert rc == 0, err
    planned = {a["arm"]: a for a in json.loads(out)["arms"]}
    assert list(planned) == ["unpruned", "finetune", "scratch-e", "scratch-b", "scratch-e-kd"]
    assert planned["scratch-e-kd"]["recipe"] == "scratch-e" and planned["scratch-e-kd"]["runs"] == 1
    assert "distilled from the unpruned seed-k model (T 4, weight 0.9" in planned["scratch-e-kd"]["what"]
    rc, out, err = run_cli(capsys, *argv, "--dry-run")
    assert rc == 0 and "scratch-e-kd" not in {a["arm"] for a in json.loads(out)["arms"]}  # no teacher, no arm

    rc, out, err = run_cli(capsys, *argv, "--teacher", "reference", "--kd-weight", "0.5")
    assert rc == 0, err
    arms = {a["arm"]: a for a in json.loads(out)["arms"]}
    kd_run = Path(arms["scratch-e-kd"]["runs"][0]["run_dir"])
    unpruned_run = Path(arms["unpruned"]["runs"][0]["run_dir"])
    assert kd_run.name.startswith("scratch-e-kd-e1-s0-") and kd_run != Path(arms["scratch-e"]["runs"][0]["run_dir"])
    record = json.loads((kd_run / METRICS).read_text())["teacher"]
    assert record["given_as"] == "reference" and record["weight"] == 0.5
    assert record["weights_sha"] == weights_sha(load_model_state(unpruned_run / CHECKPOINT))
    assert "teacher" not in json.loads((Path(arms["scratch-e"]["runs"][0]["run_dir"]) / METRICS).read_text())
    # the same command again finds every run finished
    rc, out, err = run_cli(capsys, *argv, "--teacher", "reference", "--kd-weight", "0.5")
    assert rc == 0, err
    assert json.loads(out)["trained"] == 0


# -- bad input ---------------------------------------------------------------------------------------------------
def teacher_of_classes(setup: dict[str, Any], classes: int) -> str:
    """A checkpoint of the space's reference with another number of classes."""
    space: Space = setup["space"]
    path = setup["folder"] / f"teacher-{classes}.pt"
    model = space.build(space.reference(), num_classes=classes)
    torch.save({"model": model.state_dict(), "genotype": space.reference().to_dict(), "num_classes": classes}, path)
    return str(path)


def bare_state_of(toml: str, folder: Path) -> str:
    """The bare state_dict of another space's reference (no genotype to tell it apart)."""
    other = get_space(toml)
    path = folder / "bare.pt"
    torch.save(other.build(other.reference(), num_classes=10).state_dict(), path)
    return str(path)


def random_bytes(folder: Path) -> str:
    path = folder / "random.pt"
    path.write_bytes(bytes(range(256)) * 8)
    return str(path)


def other_space_checkpoint(setup: dict[str, Any], tmp: Path) -> str:
    other = get_space(setup["other_toml"])
    out = tmp / "other"
    train(other, other.reference(), setup["data"], make_recipe("proxy", other.recipe, overrides={"epochs": 1}),
          QUIET, out_dir=out, evaluate_test=False)  # fmt: skip
    return str(out / CHECKPOINT)


# (case, extra argv of `prunenas train`, a fragment the one line must contain: the flag, and what is wrong)
BAD: list[tuple[str, Any, str]] = [
    (
        "other number of classes",
        lambda s, t: ["--teacher", teacher_of_classes(s, 7)],
        "was trained on 7 classes but the data has 10",
    ),
    ("another space", lambda s, t: ["--teacher", other_space_checkpoint(s, t)], "not the reference of 'kd_tiny'"),
    ("state of another input/space", lambda s, t: ["--teacher", bare_state_of(s["other_toml"], t)], "does not fit"),
    ("corrupt checkpoint", lambda s, t: ["--teacher", random_bytes(t)], "not a PyTorch checkpoint"),
    ("missing file", lambda s, t: ["--teacher", str(t / "nothing.pt")], "does not exist"),
    ("kd weight above 1", lambda s, t: ["--teacher", str(s["teacher"]), "--kd-weight", "1.5"], "--kd-weight"),
    ("kd weight via --set", lambda s, t: ["--teacher", str(s["teacher"]), "--set", "kd_weight=-0.1"], "--kd-weight"),
    ("kd temperature 0", lambda s, t: ["--teacher", str(s["teacher"]), "--kd-temperature", "0"], "--kd-temperature"),
    ("kd without a teacher", lambda s, t: ["--kd-weight", "0.5"], "needs a teacher"),
    ("teacher reference in train", lambda s, t: ["--teacher", "reference"], "--teacher CKPT"),
]


@pytest.mark.parametrize(("argv_for", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_teacher_input_is_one_line(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_for: Any, fragment: str
) -> None:
    argv = ["train", setup["genotype_file"], "--space", setup["toml"], *SUBSET, "--epochs", "1", "--device", "cpu"]
    rc, out, err = run_cli(capsys, *argv, "--quiet", "--out", str(tmp_path / "run"), *argv_for(setup, tmp_path))
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunenas: error:") and "Traceback" not in err + out, err
    assert fragment in lines[0], lines[0]
    assert "--teacher" in lines[0] or "--kd-" in lines[0], lines[0]  # the flag it is about
    assert not (tmp_path / "run" / CHECKPOINT).exists()  # nothing trained


@pytest.mark.parametrize(
    ("command", "extra", "fragment"),
    [
        ("search", ["--teacher", "reference"], "pass --reference CKPT"),
        ("search", ["--teacher", "RANDOM"], "not a PyTorch checkpoint"),
        ("rethink", ["--teacher", "RANDOM", "--dry-run"], "not a PyTorch checkpoint"),
        ("rethink", ["--teacher", "CLASSES", "--dry-run"], "7 classes"),
        ("rethink", ["--kd-temperature", "2", "--dry-run"], "add --teacher"),
        ("rethink", ["--teacher", "reference", "--kd-weight", "2", "--dry-run"], "--kd-weight must be in [0, 1]"),
    ],
)
def test_bad_teacher_input_of_search_and_rethink(
    setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    command: str, extra: list[str], fragment: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a search makes its exports folder before it loads the teacher
    paths = {"RANDOM": random_bytes(tmp_path), "CLASSES": teacher_of_classes(setup, 7)}
    extra = [paths.get(x, x) for x in extra]
    if command == "search":
        argv = ["search", "--space", setup["toml"], *SUBSET, "--budget", "smoke", "--trials", "1", "--device", "cpu"]
    else:
        argv = ["rethink", "--space", setup["toml"], "--genotype", setup["genotype_file"], *SUBSET, "--budget", "smoke"]
    rc, out, err = run_cli(capsys, *argv, "--out", str(tmp_path / "out"), "--quiet", *extra)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunenas: error:") and "Traceback" not in err + out, err
    assert fragment in lines[0], lines[0]


def test_search_finals_distill_too(setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The winners' retraining distills from the same teacher as the proxies (one proposer seed, one trial)."""
    teacher = str(setup["teacher"])
    rc, _, err = run_cli(
        capsys, "search", "--space", setup["toml"], *SUBSET, "--budget", "smoke", "--trials", "1",
        "--proxy-epochs", "1", "--final-epochs", "1", "--top-k", "1", "--no-export", "--no-seeding",
        "--teacher", teacher, "--out", str(tmp_path / "s"), "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    finals = list((tmp_path / "s" / "final").glob(f"*/{METRICS}"))
    assert finals
    for path in finals:
        record = json.loads(path.read_text(encoding="utf-8"))["teacher"]
        assert record["checkpoint"] == teacher and record["weights_sha"] == weights_sha(load_model_state(teacher))
