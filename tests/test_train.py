"""The training engine and recipes, on the embedded digits set with tiny models (CPU, seconds)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from prunenas.cli import main
from prunenas.cost import genotype_cost
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.recipes import make_recipe
from prunenas.spaces import get_space, shipped_genotypes
from prunenas.train import CHECKPOINT, CURVE, METRICS, EpochMetrics, RunSettings, StopTraining, train

QUIET = RunSettings(quiet=True, plot=False)


def tiny_resnet20():
    space = get_space("resnet20_channels")
    genes = {g.name: 4 for g in space.genes}
    genes.update(stage1_width=8, stage2_width=12, stage3_width=16)
    return space, space.make(genes)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def digits_small():
    return load_dataset("digits", seed=0, train_subset=160, val_size=64)


# -- recipes ---------------------------------------------------------------------------------------
def test_scratch_b_gives_220_epochs_for_resnet56_b():
    space = get_space("resnet56_channels")
    genotype = space.validate(Genotype.load(shipped_genotypes()["li2017_resnet56_b"]))
    cost = genotype_cost(space, genotype)
    recipe = make_recipe("scratch-b", space.recipe, macs=cost.macs, reference_macs=cost.reference_macs)
    assert recipe.epochs == 220
    assert recipe.milestones == (0.5, 0.75)
    capped = make_recipe(
        "scratch-b", space.recipe, macs=cost.macs, reference_macs=cost.reference_macs, scratch_b_cap=1.2
    )
    assert capped.epochs == 192


def test_named_recipes():
    space = get_space("resnet56_channels")
    standard = make_recipe("standard", space.recipe)
    assert (standard.epochs, standard.batch_size, standard.lr, standard.weight_decay) == (160, 64, 0.1, 1e-4)
    assert make_recipe("scratch-e", space.recipe).to_dict() | {"name": "standard"} == standard.to_dict()
    ft = make_recipe("finetune", space.recipe)
    assert (ft.epochs, ft.lr, ft.schedule, ft.needs_weights) == (40, 0.001, "constant", True)
    proxy = make_recipe("proxy", space.recipe, overrides={"epochs": 4, "lr": None})
    assert proxy.epochs == 4 and proxy.lr == 0.1


def test_step_schedule_is_compressed_into_short_runs():
    recipe = make_recipe("proxy", {}, overrides={"epochs": 2})
    steps = [recipe.lr_at(s, 100, 50) for s in range(100)]
    assert steps[0] == pytest.approx(0.1) and steps[49] == pytest.approx(0.1)
    assert steps[50] == pytest.approx(0.01) and steps[74] == pytest.approx(0.01)
    assert steps[75] == pytest.approx(0.001) and steps[99] == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("bogus", {}, "unknown recipe"),
        ("standard", {"epochs": 0}, "epochs must be >= 1"),
        ("standard", {"lr": -1.0}, "lr must be > 0"),
        ("standard", {"batch_size": 0}, "--batch-size must be >= 1"),
    ],
)
def test_bad_recipes(name, overrides, message):
    with pytest.raises(PrunenasError, match=message):
        make_recipe(name, {}, overrides=overrides)


def test_every_recipe_field_can_be_overridden():
    recipe = make_recipe(
        "standard",
        {},
        overrides={"milestones": [0.3, 0.6], "nesterov": True, "label_smoothing": 0.1, "gamma": 0.2, "lr": 1},
    )
    assert recipe.milestones == (0.3, 0.6) and recipe.nesterov and recipe.label_smoothing == 0.1
    assert recipe.gamma == 0.2 and recipe.lr == 1.0 and isinstance(recipe.lr, float)


def test_scratch_b_needs_macs():
    with pytest.raises(PrunenasError, match="MACs"):
        make_recipe("scratch-b", {})


# -- training --------------------------------------------------------------------------------------
def test_trainer_learns_digits(digits, tmp_path):
    space, genotype = tiny_resnet20()
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 4, "batch_size": 32})
    seen: list[EpochMetrics] = []
    result = train(space, genotype, digits, recipe, RunSettings(quiet=True), out_dir=tmp_path, callbacks=[seen.append])
    assert [m.epoch for m in seen] == [1, 2, 3, 4]
    assert result.finished and result.epochs_run == 4
    # ten classes: chance is 10%
    assert result.test_acc is not None and result.test_acc > 0.6
    assert result.val_acc is not None and result.val_acc > 0.6
    metrics = json.loads((tmp_path / METRICS).read_text())
    assert metrics["test_acc"] == result.test_acc
    assert metrics["genotype"]["space"] == "resnet20_channels"
    assert metrics["seed"] == 0 and metrics["dataset"]["name"] == "digits"
    assert len(metrics["history"]) == 4 and metrics["images_per_s"] > 0
    assert (tmp_path / CURVE).stat().st_size > 1000
    assert (tmp_path / CHECKPOINT).exists()


def test_resume_equals_uninterrupted_run(digits_small, tmp_path):
    space, genotype = tiny_resnet20()
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 3, "batch_size": 32})
    full = train(space, genotype, digits_small, recipe, QUIET, out_dir=tmp_path / "full")

    def interrupt(m: EpochMetrics) -> None:
        if m.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(space, genotype, digits_small, recipe, QUIET, out_dir=tmp_path / "cut", callbacks=[interrupt])
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["epoch"] == 2
    resumed = train(space, genotype, digits_small, recipe, QUIET, out_dir=tmp_path / "cut")
    assert resumed.epochs_run == 3
    a = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.test_acc == full.test_acc
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in full.history]


def test_resume_refuses_a_different_run(digits_small, tmp_path):
    space, genotype = tiny_resnet20()
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 1, "batch_size": 32})
    train(space, genotype, digits_small, recipe, QUIET, out_dir=tmp_path)
    with pytest.raises(PrunenasError, match="different run"):
        train(space, genotype, digits_small, recipe, RunSettings(quiet=True, seed=1), out_dir=tmp_path)


def test_masks_hold_through_training(digits_small, tmp_path):
    space = get_space("resnet20_density")
    genotype = space.make({g.name: 0.25 for g in space.genes})
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 2, "batch_size": 32})
    train(space, genotype, digits_small, recipe, QUIET, out_dir=tmp_path)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=False)["model"]
    mask_keys = [k for k in state if k.endswith("weight_mask")]
    assert len(mask_keys) == len(space.genes)
    for mk in mask_keys:
        weight = state[mk.replace("weight_mask", "weight")]
        mask = state[mk]
        assert torch.all(weight[mask == 0] == 0), mk
        assert (weight[mask == 1] != 0).float().mean() > 0.99, mk
        assert mask.mean().item() == pytest.approx(0.25, abs=0.02)


def test_non_finite_loss_stops_with_a_reason(digits_small, tmp_path):
    space, genotype = tiny_resnet20()
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 3, "batch_size": 32, "lr": 1e12})
    result = train(space, genotype, digits_small, recipe, QUIET, out_dir=tmp_path)
    assert result.stopped is not None and "non-finite" in result.stopped
    assert result.epochs_run < 3 and not result.finished
    assert json.loads((tmp_path / METRICS).read_text())["stopped"] == result.stopped
    # a stopped run stays stopped when asked to resume
    again = train(space, genotype, digits_small, recipe, QUIET, out_dir=tmp_path)
    assert again.stopped == result.stopped and again.epochs_run == result.epochs_run


def test_callback_can_stop_a_run(digits_small):
    space, genotype = tiny_resnet20()
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 5, "batch_size": 32})

    def stop_at_two(m: EpochMetrics) -> None:
        assert m.val_acc is not None and 0 <= m.val_acc <= 1 and math.isfinite(m.train_loss)
        if m.epoch == 2:
            raise StopTraining("pruned by the search")

    result = train(space, genotype, digits_small, recipe, QUIET, callbacks=[stop_at_two])
    assert result.stopped == "pruned by the search" and result.epochs_run == 2
    assert result.test_acc is None  # the test set is only for finished runs


def test_finetune_needs_weights(digits_small):
    space, genotype = tiny_resnet20()
    recipe = make_recipe("finetune", space.recipe, overrides={"epochs": 1})
    with pytest.raises(PrunenasError, match="trained weights"):
        train(space, genotype, digits_small, recipe, QUIET)


def test_finetune_starts_from_given_weights(digits_small, tmp_path):
    space, genotype = tiny_resnet20()
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 2, "batch_size": 32})
    train(space, genotype, digits_small, recipe, QUIET, out_dir=tmp_path / "a")
    weights = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)["model"]
    ft = make_recipe("finetune", space.recipe, overrides={"epochs": 1, "batch_size": 32, "lr": 1e-9})
    train(space, genotype, digits_small, ft, QUIET, init_state=weights, out_dir=tmp_path / "ft")
    tuned = torch.load(tmp_path / "ft" / CHECKPOINT, weights_only=False)["model"]
    # with a vanishing lr the fine-tuned weights are the given ones, not a fresh init
    for k, v in weights.items():
        if k.endswith("weight") and v.ndim > 1:
            assert torch.allclose(tuned[k], v, atol=1e-6), k
    wrong = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    with pytest.raises(PrunenasError, match="do not fit"):
        train(space, genotype, digits_small, ft, QUIET, init_state=wrong)


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_train_writes_metrics(tmp_path, capsys):
    _space, genotype = tiny_resnet20()
    path = genotype.save(tmp_path / "g.json")
    out = tmp_path / "run"
    code = main(
        [
            "train", str(path), "--dataset", "digits", "--train-subset", "200", "--epochs", "1",
            "--recipe", "proxy", "--batch-size", "32", "--out", str(out), "--quiet", "--json",
        ]
    )  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["epochs_run"] == 1 and printed["macs"] > 0
    metrics = json.loads((out / METRICS).read_text())
    assert metrics["dataset"]["sizes"]["train"] == 200
    assert metrics["cost"]["macs"] == printed["macs"]
    assert Genotype.load(out / "genotype.json") == genotype


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "--data-dir"),
        (["--dataset", "digits", "--recipe", "finetune"], "trained weights"),
        (["--dataset", "digits", "--weights", "/nonexistent.pt"], "does not exist"),
        (["--dataset", "digits", "--epochs", "0"], "epochs must be >= 1"),
        (["--dataset", "digits", "--device", "cuda:7"], "CUDA"),
        (["--dataset", "digits", "--train-subset", "-3"], "train"),
    ],
)
def test_cli_train_bad_input(tmp_path, capsys, argv, message):
    code = main(["train", "li2017_resnet56_b", "--out", str(tmp_path / "r"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("prunenas: error:"), err
    assert message in err
