"""Interruptions survived and studies counted right: a journal cut off mid-line, a sampler that suggests a
trained genotype again, more seeds than trials, a failed trial, an export interrupted half-way."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from tiny_search import tiny_search_config

from prunenas.errors import PrunenasError
from prunenas.search import BUDGETS, SearchConfig, make_storage, run_search
from prunenas.search.storage import n_done


def config_for(tmp_path: Path, space, **changes) -> SearchConfig:
    return tiny_search_config(tmp_path, space, "r", **{"proposers": ("uniform", "random"), **changes})


def test_a_journal_cut_off_mid_line_is_refused_untouched_and_resumes_once_repaired(tmp_path, space, data):
    config = config_for(tmp_path, space)
    run_search(config, space, data, log=lambda m: None)
    journal = config.out / "study.journal"
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "user_at')  # a write cut off
    cut = journal.read_bytes()
    more = config.with_settings(trials=3)
    with pytest.raises(PrunenasError, match=r"cut off by an interrupted write.*head -n") as info:
        run_search(more, space, data, log=lambda m: None)
    assert journal.read_bytes() == cut  # nothing appended to the corrupt journal
    lines = int(str(info.value).split("head -n ")[1].split()[0])
    journal.write_bytes(b"\n".join(cut.split(b"\n")[:lines]) + b"\n")  # the repair the message gives
    outcome = run_search(more, space, data, log=lambda m: None)
    assert outcome.complete == 3


def test_trials_count_distinct_architectures(tmp_path, space, data):
    """A sampler that suggests a trained genotype again does not use up the study's --trials."""
    config = config_for(tmp_path, space, budget=replace(config_for(tmp_path, space).budget, trials=3))
    storage = make_storage(config)
    study = optuna.create_study(study_name="r", storage=storage, directions=["maximize", "minimize"])
    genes = dict(space.reference().genes)
    for _ in range(2):  # the same architecture queued twice before the search starts
        study.enqueue_trial(genes)
    outcome = run_search(config, space, data, log=lambda m: None)
    rows = json.loads((config.out / "trials.json").read_text())
    keys = [r["key"] for r in rows if r["state"] == "COMPLETE"]
    assert len(set(keys)) == 3 and len(keys) >= 4  # three distinct candidates, the duplicate came on top
    assert n_done(outcome.study) == 3
    assert sum(1 for r in rows if r["cached"]) >= 1  # the duplicate was read from its run folder, not trained


def test_more_seeds_than_trials_leaves_no_waiting_trials(tmp_path, space, data):
    budget = replace(BUDGETS["smoke"], trials=2, proxy_epochs=1, seed_targets=(0.3, 0.5, 0.7), top_k=1, final_epochs=1)
    config = config_for(tmp_path, space, budget=budget)
    outcome = run_search(config, space, data, log=lambda m: None)
    states = [t.state for t in outcome.study.get_trials()]
    assert optuna.trial.TrialState.WAITING not in states
    assert outcome.trials == 2


def test_a_failed_trial_is_retried_once(tmp_path, space, data, monkeypatch):
    import prunenas.search.objective as objective_mod

    real = objective_mod.train
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a passing failure (e.g. out of memory)")
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_mod, "train", flaky)
    config = config_for(tmp_path, space)
    outcome = run_search(config, space, data, log=lambda m: None)
    trials = outcome.study.get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs.get("origin") == "proposer"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == failed[0].params  # the same seeded genotype, not lost


def test_an_interrupted_export_leaves_no_staging_folder_behind(tmp_path, space, data):
    from prunenas.export import export_run
    from prunenas.recipes import make_recipe
    from prunenas.train import RunSettings, train

    run = tmp_path / "run"
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": 1, "batch_size": 32})
    train(space, space.reference(), data, recipe, RunSettings(quiet=True, plot=False), out_dir=run)
    dest = tmp_path / "exports" / "m"
    stale = dest.parent / f".{dest.name}.staging-abc123"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"half")
    result = export_run(run, dest)
    assert (result.out_dir / "model.onnx").exists()
    assert not any(p.name.startswith(f".{dest.name}.staging-") for p in dest.parent.iterdir())


def test_a_run_of_a_user_toml_space_exports_from_anywhere(tmp_path, monkeypatch, data):
    """The run records where its space is defined, so export finds a space that is not on the spaces path."""
    from prunenas.cli import main

    toml = tmp_path / "mine" / "my_tiny.toml"
    toml.parent.mkdir()
    toml.write_text('extends = "resnet20_channels"\nname = "my_tiny"\n[model]\ndepth = 8\nwidths = [4, 8, 8]\n')
    run = tmp_path / "run"
    assert main(["train", "my_tiny", "--space", str(toml), "--dataset", "digits", "--train-subset", "64",
                 "--epochs", "1", "--out", str(run), "-q"]) == 0  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from prunenas.spaces import registry

    registry.clear_cache()  # a new process: the space is not loaded under its name
    assert main(["export", str(run), "-o", str(tmp_path / "onnx"), "--json"]) == 0
    assert (tmp_path / "onnx" / "model.onnx").exists()
