"""Search end to end on a tiny ResNet-8 space and a digits subset (seconds per trial on a CPU)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from tiny_search import search_config

import prunenas.search as search_mod
import prunenas.search.objective as objective_mod
from prunenas.cli import main
from prunenas.cost import genotype_cost
from prunenas.data import load_dataset
from prunenas.search import BUDGETS, Objective, SearchConfig, run_search
from prunenas.spaces import get_space


@pytest.fixture(scope="module")
def tiny_space(tiny_toml):
    return get_space(str(tiny_toml))


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits", seed=0, train_subset=96, val_size=48)


def config_for(tmp_path: Path, space, **changes) -> SearchConfig:
    budget = replace(BUDGETS["smoke"], trials=3, proxy_epochs=1, seed_targets=(0.5,), top_k=1, final_epochs=1)
    settings = {"budget": budget, "exports": tmp_path / "exports", "proposers": ("uniform", "random"), **changes}
    return search_config(space, tmp_path / "study", **settings)


class TrainSpy:
    """Counts the genotypes the search really trains (cache hits do not reach `train`'s loop)."""

    def __init__(self, monkeypatch):
        self.keys: list[str] = []
        real = objective_mod.train

        def spy(space, genotype, *args, **kwargs):
            out = kwargs.get("out_dir")
            if out is None or not (Path(out) / "metrics.json").exists():
                self.keys.append(genotype.key)
            return real(space, genotype, *args, **kwargs)

        monkeypatch.setattr(objective_mod, "train", spy)


def test_tiny_search_writes_everything(tmp_path, tiny_space, data):
    config = config_for(tmp_path, tiny_space)
    outcome = run_search(config, tiny_space, data, log=lambda m: None)
    assert outcome.trials == 3 and outcome.complete == 3
    out = config.out
    rows = json.loads((out / "trials.json").read_text())
    assert len(rows) == 3
    for r in rows:
        assert r["state"] == "COMPLETE"
        assert r["macs"] > 0 and r["params"] > 0 and 0 <= r["val_acc"] <= 1
        assert r["genotype"]["space"] == tiny_space.name and r["key"]
    with (out / "trials.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3
    # the two seeds come first and are marked
    assert [r["origin"] for r in rows[:2]] == ["proposer", "proposer"]
    assert {r["proposer"] for r in rows[:2]} == {"uniform", "random"}
    assert (out / "pareto.png").stat().st_size > 1000
    best = sorted((out / "best").glob("*.json"))
    assert len(best) == 1
    summary = json.loads((out / "summary.json").read_text())
    winner = summary["winners"][0]
    assert winner["final"]["test_acc"] is not None and winner["final"]["finished"]
    export_dir = Path(winner["export_dir"])
    assert export_dir.parent == tmp_path / "exports" / tiny_space.name / "t"
    assert (export_dir / "model.onnx").exists() and (export_dir / "model.json").exists()
    assert summary["settings"]["identity"]["run"]["seed"] == 0 and summary["settings"]["config"]["run"]["seed"] == 0


def test_resume_continues_the_same_study(tmp_path, tiny_space, data, monkeypatch):
    config = config_for(tmp_path, tiny_space, final=False)
    run_search(config.with_settings(trials=2), tiny_space, data, log=lambda m: None)
    first = json.loads((config.out / "trials.json").read_text())
    spy = TrainSpy(monkeypatch)

    # interrupt the next run in the middle of its first trial
    calls = {"n": 0}
    real = objective_mod.train

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_mod, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_search(config.with_settings(trials=4), tiny_space, data, log=lambda m: None)
    spy = TrainSpy(monkeypatch)
    outcome = run_search(config.with_settings(trials=4), tiny_space, data, log=lambda m: None)
    rows = json.loads((config.out / "trials.json").read_text())
    done = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    assert len(done) == 4 and outcome.complete == 4
    # the first two trials are the same records, not recomputed
    assert [(r["number"], r["key"], r["val_acc"]) for r in rows[:2]] == [
        (r["number"], r["key"], r["val_acc"]) for r in first
    ]
    assert not set(spy.keys) & {r["key"] for r in first}
    assert len(spy.keys) <= 2


def test_seeding_enqueues_proposer_genotypes_with_user_attrs(tmp_path, tiny_space, data):
    config = config_for(tmp_path, tiny_space, final=False, budget=replace(BUDGETS["smoke"], trials=2, proxy_epochs=1,
                        seed_targets=(0.4, 0.7), top_k=1, final_epochs=1))  # fmt: skip
    run_search(config, tiny_space, data, log=lambda m: None)
    study = optuna.load_study(study_name="t", storage=search_mod.make_storage(config))
    trials = study.get_trials()
    seeded = [t for t in trials if t.user_attrs.get("origin") == "proposer"]
    assert len(seeded) >= 2
    for t in seeded:
        assert t.user_attrs["proposer"] in ("uniform", "random")
        assert t.user_attrs["target"]["kind"] == "macs_ratio"
        assert t.user_attrs["target"]["value"] in (0.4, 0.7)
        ratio = genotype_cost(tiny_space, tiny_space.make(t.params)).macs_ratio
        assert abs(ratio - t.user_attrs["target"]["value"]) <= 0.02 * t.user_attrs["target"]["value"]
    # the waiting seeds stay in the queue for the next run of the same command
    assert len(trials) == 2


def test_constrained_mode_never_trains_an_infeasible_genotype(tmp_path, tiny_space, data, monkeypatch):
    spy = TrainSpy(monkeypatch)
    limit = 0.45
    config = config_for(
        tmp_path, tiny_space, final=False, sampler="random", pruner="median",
        max_macs_ratio=limit,
        budget=replace(BUDGETS["smoke"], trials=6, proxy_epochs=2, seed_targets=(0.3, 0.9), top_k=1, final_epochs=1),
    )  # fmt: skip
    outcome = run_search(config, tiny_space, data, log=lambda m: None)
    rows = json.loads((config.out / "trials.json").read_text())
    infeasible = [r for r in rows if r["infeasible"]]
    assert infeasible and outcome.infeasible == len(infeasible)
    assert all(r["macs_ratio"] > limit for r in infeasible)
    trained = set(spy.keys)
    assert trained and not trained & {r["key"] for r in infeasible}
    for key in trained:
        row = next(r for r in rows if r["key"] == key)
        assert row["macs_ratio"] <= limit
    assert all(r["epochs_run"] is None for r in infeasible)


def test_a_band_trains_only_candidates_between_min_and_max(tmp_path, tiny_space, data, monkeypatch):
    from prunenas.metrics import Limit

    spy = TrainSpy(monkeypatch)
    low, high = 0.35, 0.6
    config = config_for(
        tmp_path, tiny_space, final=False, sampler="random",
        max=(Limit("macs", high, relative=True),), min=(Limit("macs", low, relative=True, lower=True),),
        budget=replace(BUDGETS["smoke"], trials=10, proxy_epochs=1, seed_targets=(0.2, 0.5, 0.9), top_k=1,
                       final_epochs=1),
    )  # fmt: skip
    assert config.objectives == ("val_acc",)
    run_search(config, tiny_space, data, log=lambda m: None)
    rows = json.loads((config.out / "trials.json").read_text())
    below = [r for r in rows if r["macs_ratio"] < low]
    above = [r for r in rows if r["macs_ratio"] > high]
    inside = [r for r in rows if low <= r["macs_ratio"] <= high]
    assert below and above and inside  # the 0.2 and 0.9 seeds fall outside, the 0.5 ones inside
    assert all(r["infeasible"] and r["epochs_run"] is None for r in below + above)
    assert not any(r["infeasible"] for r in inside)
    assert set(spy.keys) == {r["key"] for r in inside}
    study = optuna.load_study(study_name="t", storage=search_mod.make_storage(config))
    lowest = min(below, key=lambda r: r["macs_ratio"])
    trial = next(t for t in study.get_trials() if t.user_attrs.get("key") == lowest["key"])
    # the shortfall under --min reaches Optuna as a positive constraint, as the excess over --max does
    assert trial.system_attrs["constraints:min_macs"] == pytest.approx(1 - lowest["macs_ratio"] / low, rel=1e-6)
    reference_macs = genotype_cost(tiny_space, tiny_space.reference()).macs
    assert study.user_attrs["floors"]["macs"] == pytest.approx(low * reference_macs)
    summary = json.loads((config.out / "summary.json").read_text())
    assert summary["min_limits"]["macs=0.35x"] == pytest.approx(study.user_attrs["floors"]["macs"])


def test_a_resumed_random_search_draws_new_genotypes(tmp_path, tiny_space, data, monkeypatch):
    """The sampler is seeded from the run seed and the trials already in the study: a resumed study does not
    redraw the genotypes its first session drew (each a wasted, cached trial)."""
    spy = TrainSpy(monkeypatch)
    budget = replace(BUDGETS["smoke"], trials=3, proxy_epochs=1, seed_targets=(), top_k=1, final_epochs=1)
    config = config_for(tmp_path, tiny_space, final=False, sampler="random", budget=budget)
    run_search(config, tiny_space, data, log=lambda m: None)
    run_search(config.with_settings(trials=6), tiny_space, data, log=lambda m: None)
    trials = optuna.load_study(study_name="t", storage=search_mod.make_storage(config)).get_trials()
    keys = [t.user_attrs["key"] for t in trials]
    assert len(keys) == 6 and len(set(keys)) == 6 and len(spy.keys) == 6
    # and a fresh study with the same seed draws the same first genotypes (reproducible)
    again = config.with_settings(out=str(tmp_path / "again"))
    run_search(again, tiny_space, data, log=lambda m: None)
    first = optuna.load_study(study_name="t", storage=search_mod.make_storage(again)).get_trials()
    assert [t.user_attrs["key"] for t in first] == keys[:3]


def _histories(out: Path) -> list[list[dict]]:
    return [json.loads(p.read_text())["history"] for p in sorted((out / "runs").glob("*/metrics.json"))]


def test_proxy_runs_validate_at_the_end_unless_a_pruner_needs_every_epoch(tmp_path, tiny_space, data):
    budget = replace(BUDGETS["smoke"], trials=2, proxy_epochs=3, seed_targets=(), top_k=1, final_epochs=1)
    plain = config_for(tmp_path / "plain", tiny_space, final=False, budget=budget)
    run_search(plain, tiny_space, data, log=lambda m: None)
    histories = _histories(plain.out)
    assert len(histories) == 2
    for history in histories:  # ranked on the final model: one validation pass, after the last epoch
        assert [h["val_acc"] is not None for h in history] == [False, False, True]
        assert all(h["test_acc"] is None for h in history)
    pruned = config_for(tmp_path / "pruned", tiny_space, final=False, budget=budget, objectives=("val_acc",),
                        pruner="median")  # fmt: skip
    run_search(pruned, tiny_space, data, log=lambda m: None)
    for history in _histories(pruned.out):  # the pruner's per-epoch reports need every epoch validated
        assert all(h["val_acc"] is not None for h in history)
    every = config_for(tmp_path / "every", tiny_space, final=False, budget=budget, eval_every=1)
    run_search(every, tiny_space, data, log=lambda m: None)
    for history in _histories(every.out):  # an explicit --eval-every wins
        assert all(h["val_acc"] is not None for h in history)


def test_run_flags_reach_the_search_runs(tmp_path, tiny_toml):
    """--threads, --eval-every and --test-every-epoch were accepted by `prunenas search` and then dropped."""
    from prunenas.cli import build_parser

    args = build_parser().parse_args(
        ["search", "--space", str(tiny_toml), "--dataset", "digits", "--threads", "1", "--eval-every", "2",
         "--test-every-epoch"]
    )  # fmt: skip
    config = SearchConfig.from_args(args)
    final = config.run_settings()
    assert (final.threads, final.eval_every, final.test_every_epoch) == (1, 2, True)
    proxy = config.proxy_settings()
    assert (proxy.threads, proxy.eval_every, proxy.test_every_epoch) == (1, 2, False)  # candidates never see test
    again = SearchConfig.from_dict(json.loads(config.to_json()))  # what a worker process reads
    assert again.proxy_settings() == proxy


def test_duplicate_genotype_hits_the_cache(tmp_path, tiny_space, data, monkeypatch):
    spy = TrainSpy(monkeypatch)
    config = config_for(tmp_path, tiny_space)
    objective = Objective(config, tiny_space, data)
    study = optuna.create_study(directions=["maximize", "minimize"])
    params = dict(tiny_space.random_genotype(5).genes)
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=2)
    first, second = study.trials
    assert first.user_attrs["cached"] is False and second.user_attrs["cached"] is True
    assert first.values == second.values
    assert len(spy.keys) == 1


def test_proposers_mode_samples_proposers(tmp_path, tiny_space, data):
    config = config_for(tmp_path, tiny_space, mode="proposers", final=False)
    run_search(config, tiny_space, data, log=lambda m: None)
    rows = json.loads((config.out / "trials.json").read_text())
    assert len(rows) == 3
    assert all(r["origin"] == "proposer" and r["proposer"] in ("uniform", "random") for r in rows)
    assert all(r["state"] == "COMPLETE" or r["stopped"].startswith("proposer failed") for r in rows)
    assert any(r["state"] == "COMPLETE" for r in rows)


def test_resume_with_other_settings_is_refused(tmp_path, tiny_space, data):
    config = config_for(
        tmp_path, tiny_space, final=False, budget=replace(config_for(tmp_path, tiny_space).budget, trials=1)
    )
    run_search(config, tiny_space, data, log=lambda m: None)
    other = config.with_settings(proxy_epochs=3)
    with pytest.raises(search_mod.PrunenasError, match="other settings"):
        run_search(other, tiny_space, data, log=lambda m: None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--space", "nope"], "unknown space"),
        (["--space", "resnet20_channels", "--trials", "0"], "--trials must be >= 1"),
        (["--space", "resnet20_channels", "--pruner", "median"], "single objective"),
        (["--space", "resnet20_channels", "--max-macs-ratio", "0.00001"], "smallest model"),
        (["--space", "resnet20_channels", "--max-macs-ratio", "1.5"], "--max-macs-ratio"),
        (["--space", "resnet20_channels", "--timeout", "-1"], "--timeout"),
        (["--space", "resnet20_channels", "--min", "macs=0.6x", "--max", "macs=0.5x"], "--min macs=0.6x is not below"),
        (["--space", "resnet20_channels", "--min", "macs=0.6x", "--max-macs-ratio", "0.5"], "is not below --max"),
        (["--space", "resnet20_channels", "--min", "macs=1.5x"], "above the unpruned model"),
        (["--space", "resnet20_channels", "--min", "macs=2M", "--max", "macs=0.01x"], "is not below --max"),
        (["--space", "resnet20_channels", "--min", "macs"], "--min 'macs' must look like METRIC=VALUE"),
        (["--space", "resnet20_channels", "--min", "val_acc=0.5"], "--min 'val_acc=0.5': val_acc is maximised"),
        (["--space", "resnet20_channels", "--min", "macs=0.3x", "--min", "macs=0.4x"], "two lower limits"),
        (["--space", "resnet20_channels", "--storage", "postgresql://u:p@127.0.0.1:1/x"], "storage"),
    ],
)
def test_cli_search_bad_input(tmp_path, capsys, argv, message):
    code = main(["search", *argv, "--dataset", "digits", "--out", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("prunenas: error:") and "Traceback" not in err
    assert message in err


def test_seed_targets_and_no_seeding_set_the_budget_and_name_another_study():
    from prunenas.search import SearchSettings
    from prunenas.search.config import default_study_name

    assert SearchSettings(budget="smoke").resolved_budget(None).seed_targets == BUDGETS["smoke"].seed_targets
    assert SearchSettings(budget="smoke", seed_targets=(0.3, 0.6)).resolved_budget(None).seed_targets == (0.3, 0.6)
    assert SearchSettings(budget="fast", seeding=False).resolved_budget(None).seed_targets == ()
    variants = (SearchSettings(), SearchSettings(seed_targets=(0.3,)), SearchSettings(seeding=False))
    assert len({default_study_name(v, 0) for v in variants}) == 3  # never resumes a study seeded otherwise


def test_the_smoke_budget_trains_with_the_short_recipe_preset_under_the_flags():
    """A smoke search of a classification dataset trains its candidates and winners with the `short` preset
    (batch 32, lr 0.02, cosine after half an epoch of warm-up) under the recipe flags; --preset names another;
    a dense task's smoke search keeps its task's recipe; the preset is part of the study's identity, not of
    its default name."""
    from prunenas.recipes import make_recipe
    from prunenas.search import SearchSettings

    smoke = SearchConfig(space="resnet56_channels", search={"budget": "smoke"}, data={"dataset": "digits"})
    assert smoke.recipe_overrides == {"preset": "short"} and smoke.study == "smoke-genes-tpe-s0"
    assert smoke.identity()["recipe_preset"] == "short"
    proxy = make_recipe("proxy", {"lr": 0.1, "batch_size": 64, "schedule": "step"},
                        overrides={**smoke.recipe_overrides, "epochs": 3})  # fmt: skip
    assert (proxy.batch_size, proxy.lr, proxy.schedule, proxy.warmup_epochs, proxy.epochs) == (
        32,
        0.02,
        "cosine",
        0.5,
        3,
    )
    flagged = SearchConfig(
        space="resnet56_channels", search={"budget": "smoke"}, data={"dataset": "digits"}, recipe={"lr": 0.05}
    )
    assert flagged.recipe_overrides == {"preset": "short", "lr": 0.05}  # a flag over the preset
    other = SearchConfig(
        space="resnet56_channels", search={"budget": "smoke"}, data={"dataset": "digits"},
        recipe={"preset": "imagenet-short"},
    )  # fmt: skip
    assert other.recipe_overrides == {"preset": "imagenet-short"}
    fast = SearchConfig(space="resnet56_channels", search={"budget": "fast"}, data={"dataset": "digits"})
    assert fast.recipe_overrides == {} and "recipe_preset" not in fast.identity()
    assert SearchSettings(budget="smoke").resolved_budget(None, "segmentation").recipe_preset is None


def test_min_names_another_study_and_survives_the_config_round_trip(tmp_path):
    from prunenas.metrics import Limit
    from prunenas.search import SearchSettings
    from prunenas.search.config import default_study_name

    banded = SearchSettings(max=("macs=0.55x",), min=("macs=0.45x",))
    assert default_study_name(banded, 0) != default_study_name(SearchSettings(max=("macs=0.55x",)), 0)
    assert "min-macs=0.45x" in default_study_name(banded, 0)
    config = config_for(tmp_path, get_space("resnet20_channels"), min=(Limit("macs", 0.45, True, lower=True),))
    again = SearchConfig.from_dict(json.loads(config.to_json()))
    assert again.min_limits == config.min_limits and again.min_limits[0].lower
    assert "min macs=0.45x" in again.record()["limits"]


def test_no_seeding_samples_from_the_first_trial(tmp_path, tiny_space, data):
    budget = replace(BUDGETS["smoke"], trials=1, proxy_epochs=1, seed_targets=(), top_k=1, final_epochs=1)
    config = config_for(tmp_path, tiny_space, final=False, budget=budget)
    run_search(config, tiny_space, data, log=lambda m: None)
    trials = optuna.load_study(study_name="t", storage=search_mod.make_storage(config)).get_trials()
    assert len(trials) == 1 and trials[0].user_attrs.get("origin") != "proposer"


@pytest.mark.parametrize("value", ["1.5", "0", "abc"])
def test_bad_seed_targets_are_one_line(value, capsys, tmp_path):
    code = main(["search", "--space", "resnet20_channels", "--dataset", "digits", "--seed-targets", value,
                 "--out", str(tmp_path / "s")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--seed-targets" in err and err.count("\n") == 1 and "Traceback" not in err
