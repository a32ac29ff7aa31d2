"""Evaluators: the contract over every registered one, adaptive BatchNorm's recalibration, a search judged by
inherit-bn (its reference pretrained in the study) and by a Python function, and the bad input they refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import prunenas as pn
from prunenas.cli import main
from prunenas.config import ConfigError, DataConfig
from prunenas.cost import genotype_cost
from prunenas.errors import PrunenasError
from prunenas.evaluators import Evaluator, evaluator_names, get_evaluator
from prunenas.evaluators.builtin import CallableEvaluator, recalibrate_batchnorm
from prunenas.search import SearchConfig
from prunenas.spaces import get_space
from prunenas.testing import EvaluatorContract

DIGITS = ["--dataset", "digits", "--train-subset", "96", "--val-size", "32"]


def _accuracy_by_width(model: nn.Module, budget) -> dict[str, float]:
    """A deterministic stand-in for a user's training loop: a score that grows with the model's width."""
    width = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    return {"val_acc": width / (width + 1000.0)}


@pytest.fixture(params=evaluator_names())
def any_evaluator(request, tmp_path, monkeypatch) -> Evaluator:
    monkeypatch.chdir(tmp_path)  # an evaluator without a study folder keeps what it trains under ./runs
    if request.param == "callable":
        return CallableEvaluator(fn=_accuracy_by_width)
    return get_evaluator(request.param)


class TestEveryEvaluator(EvaluatorContract):
    @pytest.fixture
    def evaluator(self, any_evaluator):
        return any_evaluator

    @pytest.fixture
    def space(self, space):
        return space


def test_recalibration_sets_batchnorm_statistics_to_the_average_of_the_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    images = [torch.randn(8, 3, 2, 2) * 3 + 1 for _ in range(4)]

    class Batches:
        def epoch(self, _):
            return ((x, None) for x in images)

    seen = recalibrate_batchnorm(model, Batches(), images=24)
    assert seen == 24  # three batches of 8, then it stops
    with torch.no_grad():
        out = torch.cat([model[0](x) for x in images[:3]])
    bn = model[1]
    assert torch.allclose(bn.running_mean, out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.1 and bn.num_batches_tracked.item() == 3  # its momentum given back


def test_a_search_judged_by_inherit_bn_pretrains_its_reference_once(tmp_path, tiny_toml, capsys):
    out = tmp_path / "s"
    argv = ["search", "--space", str(tiny_toml), *DIGITS, "--budget", "smoke", "--trials", "4", "--no-final",
            "--evaluator", "inherit-bn", "--pretrain-epochs", "1", "--inherit-bn-images", "64", "--out", str(out),
            "--json"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "trials.json").read_text())
    judged = [r for r in rows if r["state"] == "COMPLETE"]
    assert judged and all(r["evaluator"] == "inherit-bn" and r["epochs_run"] == 0 for r in judged)
    assert all(0.0 <= r["val_acc"] <= 1.0 and r["eval_time_s"] >= 0 for r in judged)
    assert len(list((out / "reference").glob("*/checkpoint.pt"))) == 1  # trained once, in the study folder
    assert all((out / "runs" / r["run"] / "evaluation.json").exists() for r in judged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluator"]["name"] == "inherit-bn" and summary["evaluator"]["seconds_per_candidate"] >= 0
    capsys.readouterr()
    assert main(argv) == 0  # resumed: the same study, nothing judged twice
    assert len(json.loads((out / "trials.json").read_text())) == len(rows)
    # the plot's unpruned point: the pretrained weights' own validation accuracy, at the reference's MACs
    from prunenas.search.outputs import reference_point

    space = get_space(str(tiny_toml))
    config = SearchConfig(space=space.name, search={"evaluator": "inherit-bn", "pretrain_epochs": 1, "out": str(out)})
    (metrics_file,) = (out / "reference").glob("*/metrics.json")
    pretrained = json.loads(metrics_file.read_text())
    others = [r for r in rows if r["key"] != space.reference().key]
    point, label = reference_point(config, space, others, "macs", "val_acc")
    assert point == {
        "macs": pytest.approx(genotype_cost(space, space.reference()).macs),
        "val_acc": pretrained["val_acc"],
    }
    assert "trained weights" in label
    plain = SearchConfig(space=space.name, search={"out": str(out)})  # scratch: its score is not known, its place is
    assert reference_point(plain, space, others, "macs_ratio", "val_acc") == (
        {"macs_ratio": 1.0},
        "reference (unpruned)",
    )
    assert reference_point(plain, space, others, "latency_ms", "val_acc")[0] is None


def test_promotion_retrains_the_best_cheaply_judged_candidates_from_scratch(tmp_path, tiny_toml, capsys):
    out = tmp_path / "p"
    argv = ["search", "--space", str(tiny_toml), *DIGITS, "--budget", "smoke", "--trials", "6", "--top-k", "1",
            "--final-epochs", "1", "--no-export", "--proxy-epochs", "1", "--evaluator", "inherit-bn",
            "--pretrain-epochs", "1", "--promote", "scratch:0.5", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    outcome = json.loads(capsys.readouterr().out)
    rows = {r["number"]: r for r in json.loads((out / "trials.json").read_text())}
    judged = {}
    for r in sorted(rows.values(), key=lambda r: -r["val_acc"]):  # one per genotype, best first
        if r["state"] == "COMPLETE" and r["key"] not in {x["key"] for x in judged.values()}:
            judged[r["number"]] = r
    promoted = json.loads((out / "promoted.json").read_text())
    assert len(promoted) == -(-len(judged) // 2)  # the best half, rounded up
    best_cheap = sorted(judged.values(), key=lambda r: -r["val_acc"])[: len(promoted)]
    assert {p["cheap_val_acc"] for p in promoted} == {r["val_acc"] for r in best_cheap}
    assert all(p["evaluator"] == "scratch" and p["cheap_evaluator"] == "inherit-bn" for p in promoted)
    # each promoted genotype was trained from scratch (a proxy run of 1 epoch, in its own run folder)
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/metrics.json")]
    promoted_runs = [r for r in runs if r.get("promoted")]
    assert len(promoted_runs) == len(promoted) and all(r["recipe"] == "proxy" and r["epochs_run"] == 1 for r in
                                                       promoted_runs)  # fmt: skip
    winner = outcome["winners"][0]
    best = max(p["val_acc"] for p in promoted)  # ties go to the next objective (fewer MACs)
    assert winner["val_acc"] == best and winner["trial"] in {p["trial"] for p in promoted if p["val_acc"] == best}
    assert winner["test_acc"] is not None  # retrained from scratch with the final recipe, tested once


def test_inherit_bn_keeps_the_genes_channel_pruning_keeps(tmp_path):
    """Shortcut-A ResNets share their residual widths: no weights can be inherited for other values, so a
    search judged by inherit-bn samples only the blocks' widths (shortcut B's are all prunable)."""
    space = get_space("resnet20_channels")
    fixed = get_evaluator("inherit-bn").fixed_genes(space)
    assert set(fixed) == {"stage1_width", "stage2_width", "stage3_width"}
    assert all(fixed[g] == space.gene(g).reference for g in fixed)
    config = SearchConfig(space=space.name, search={"evaluator": "inherit-bn", "reference": "r.pt"})
    from prunenas.search import Objective

    bounds = Objective.search_bounds.__get__(
        type("O", (), {"evaluator": config.evaluator(), "space": space, "config": config})()
    )()
    assert all(bounds[g][0] == bounds[g][1] == fixed[g] for g in fixed)
    assert all(bounds[g.name][0] < bounds[g.name][1] for g in space.genes if g.name not in fixed)


def test_a_python_function_judges_the_candidates(tmp_path, space):
    data = DataConfig(dataset="digits", train_subset=64, val_size=32)
    common = {"trials": 3, "proposers": ("uniform",), "final": False, "out": str(tmp_path / "f")}
    found = pn.search_architectures(space, data, "smoke", evaluate=_accuracy_by_width, **common)
    rows = json.loads((tmp_path / "f" / "trials.json").read_text())
    assert found.trials == 3 and all(r["evaluator"] == "callable" for r in rows)
    for r in rows:
        model = space.build(space.make(r["genotype"]["genes"]), num_classes=10)
        assert r["val_acc"] == pytest.approx(_accuracy_by_width(model, None)["val_acc"])

    def broken(model, budget):
        raise RuntimeError("out of memory")

    with pytest.raises(PrunenasError, match="evaluate function raised RuntimeError: out of memory"):
        pn.search_architectures(space, data, "smoke", evaluate=broken, **{**common, "out": str(tmp_path / "b")})
    with pytest.raises(PrunenasError, match="must return a dict with a finite 'val_acc'"):
        pn.search_architectures(
            space, data, "smoke", evaluate=lambda m, b: {"acc": 1.0}, **{**common, "out": str(tmp_path / "n")}
        )
    with pytest.raises(ConfigError, match="evaluate must be a function"):
        pn.search_architectures(space, data, "smoke", evaluate=3, **common)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--evaluator", "inherit-bn"], "--reference CKPT"),
        (["--evaluator", "warp"], "unknown evaluator 'warp'"),
        (["--inherit-bn-images", "64"], "--inherit-bn-images is an option of --evaluator inherit-bn"),
        (["--evaluator", "inherit-bn", "--pretrain-epochs", "1", "--inherit-bn-images", "0"], "--inherit-bn-images"),
        (["--pretrain-epochs", "2"], "--pretrain-epochs 2 does not apply"),
        (["--evaluator", "callable"], "pn.search_architectures(..., evaluate=fn)"),
        (["--evaluator", "inherit-bn", "--pretrain-epochs", "1", "--promote", "scratch:1.5"], "FRACTION in (0, 1]"),
        (["--promote", "scratch:0.5"], "judges again with the evaluator that scored them"),
    ],
)
def test_bad_evaluator_input_is_one_line(extra, expected, tmp_path, tiny_toml, capsys):
    code = main(["search", "--space", str(tiny_toml), *DIGITS, "--budget", "smoke", "--out", str(tmp_path / "s"),
                 *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_a_density_space_is_refused_by_inherit_bn(tmp_path, capsys):
    code = main(["search", "--space", "resnet20_density", *DIGITS, "--budget", "smoke", "--evaluator", "inherit-bn",
                 "--pretrain-epochs", "1", "--out", str(tmp_path / "d")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "cannot judge --space resnet20_density" in err and err.count("\n") == 1


def test_the_evaluator_is_part_of_the_study():
    plain = SearchConfig(space="resnet20_channels")
    judged = SearchConfig(space="resnet20_channels", search={"evaluator": "inherit-bn", "reference": "r.pt"})
    assert plain.study != judged.study and "inherit-bn" in judged.study
    assert plain.identity() != judged.identity()
    more = judged.with_settings(inherit_bn_images=128)
    assert more.identity() != judged.identity() and more.study != judged.study


def test_evaluators_are_listed_with_their_options(capsys):
    assert main(["evaluators", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(evaluator_names()) >= {"scratch", "inherit-bn", "callable"}
    assert rows["inherit-bn"]["needs_trained"] and rows["inherit-bn"]["options"]["images"] == 512
    assert main(["evaluators"]) == 0
    assert "--inherit-bn-images" in capsys.readouterr().out


def test_a_search_summary_points_to_the_fidelity_results_of_its_space_and_data(tmp_path, tiny_toml, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = get_space(str(tiny_toml))
    for folder, dataset in (("a", "digits"), ("b", "cifar10")):
        path = tmp_path / "runs" / "fidelity" / f"{space.slug}-{dataset}-{folder}" / "fidelity.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"space": space.name, "dataset": {"name": dataset}}))
    argv = ["search", "--space", str(tiny_toml), *DIGITS, "--budget", "smoke", "--trials", "2", "--no-final",
            "--proposers", "uniform", "--proxy-epochs", "1", "--out", "s", "-q"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["evaluator"]["fidelity"] == [
        str(Path("runs") / "fidelity" / f"{space.slug}-digits-a" / "fidelity.json")
    ]


def test_another_function_is_another_study():
    def first(model, budget):
        return {"val_acc": 0.5}

    def second(model, budget):
        return {"val_acc": 0.5}

    configs = [
        SearchConfig(
            space="resnet20_channels",
            search={"evaluator": "callable"},
            evaluators={"callable": {"function": CallableEvaluator(fn=fn).options.function}},
        )
        for fn in (first, second)
    ]
    assert configs[0].identity() != configs[1].identity() and configs[0].study != configs[1].study
    assert configs[0].identity()["evaluator"]["function"].endswith("first")
