"""`prunenas fidelity`: the rank statistics against hand-computed values, the --evaluators specs, a real small
study (files, statistics, an evaluator that is the truth itself, a rerun that computes nothing) and the bad input
it refuses."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random

import numpy as np
import pytest

from prunenas.cli import main
from prunenas.config import ConfigError, DataConfig
from prunenas.fidelity.settings import EvaluatorSpec, FidelitySettings, evaluator_specs
from prunenas.fidelity.stats import (
    average_ranks,
    kendall_tau_b,
    mean_pairwise,
    paired_interval,
    spearman_rho,
    within_groups,
)

DIGITS = ["--dataset", "digits", "--train-subset", "160", "--val-size", "48"]


# -- statistics ------------------------------------------------------------------------------------------------
def _brute_tau_b(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b by counting every pair (the textbook definition)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            ties_x += dx == 0
            ties_y += dy == 0
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    n0 = n * (n - 1) / 2
    den = math.sqrt((n0 - ties_x) * (n0 - ties_y))
    return None if den == 0 else (concordant - discordant) / den


def test_average_ranks_share_the_mean_rank_of_a_tie():
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert average_ranks([3, 3, 3]).tolist() == [2.0, 2.0, 2.0]


def test_kendall_tau_b_by_hand():
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    # pairs of [1,2,2,3] vs [1,3,2,4]: 5 concordant, 0 discordant, one tied in x: 5 / sqrt((6 - 1) * 6)
    assert kendall_tau_b([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / math.sqrt(30))
    # [1,1,2,2] vs [1,2,1,2]: one concordant, one discordant, two tied in x only, two tied in y only
    assert kendall_tau_b([1, 1, 2, 2], [1, 2, 1, 2]) == pytest.approx(0.0)
    # [1,2,3,4] vs [1,1,1,2]: 3 concordant, 3 tied in y: 3 / sqrt(6 * 3)
    assert kendall_tau_b([1, 2, 3, 4], [1, 1, 1, 2]) == pytest.approx(3 / math.sqrt(18))


def test_tau_within_groups_counts_only_the_pairs_of_one_group():
    # group a: 3 candidates ordered alike (tau 1, 3 pairs); group b: 2 candidates reversed (tau -1, 1 pair);
    # the pairs across the groups (all concordant here) count for nothing: (3 * 1 + 1 * -1) / 4
    x = [1, 2, 3, 10, 11]
    y = [1, 2, 3, 11, 10]
    assert within_groups(x, y, ["a", "a", "a", "b", "b"]) == pytest.approx(0.5)
    assert kendall_tau_b(x, y) == pytest.approx(_brute_tau_b(x, y))  # over all pairs it is higher
    assert within_groups(x, y, ["a", "b", "c", "d", "e"]) is None  # no group holds a pair
    assert within_groups([1, 2, 3], [5, 5, 6], [0, 0, 1]) is None  # the only pair is tied in y
    with pytest.raises(ValueError, match="one group per candidate"):
        within_groups([1, 2], [1, 2], [0])


def test_spearman_rho_by_hand():
    assert spearman_rho([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert spearman_rho([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks [1, 2.5, 2.5, 4] vs [1, 3, 2, 4]: covariance 4.5 over sqrt(4.5 * 5)
    assert spearman_rho([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    # no ties: 1 - 6 sum(d^2) / (n (n^2 - 1)), d = [0, 1, -1, 0, 0]
    assert spearman_rho([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(1 - 6 * 2 / (5 * 24))


def test_undefined_statistics_are_none():
    assert kendall_tau_b([1, 2, 3], [5, 5, 5]) is None  # no ordered pair on one side
    assert spearman_rho([5, 5, 5], [1, 2, 3]) is None
    assert kendall_tau_b([1], [2]) is None and spearman_rho([1], [2]) is None
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1, 2, 3])


def test_tau_b_matches_counting_pairs_with_many_ties():
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(2, 9)
        x = [float(rng.randint(0, 3)) for _ in range(n)]
        y = [float(rng.randint(0, 3)) for _ in range(n)]
        expected = _brute_tau_b(x, y)
        got = kendall_tau_b(x, y)
        assert (got is None) == (expected is None)
        if expected is not None:
            assert got == pytest.approx(expected, abs=1e-12)


def test_bootstrap_interval_is_fixed_and_holds_the_estimate():
    x = [0.1, 0.4, 0.35, 0.8, 0.5, 0.9, 0.2, 0.6]
    y = [0.2, 0.3, 0.5, 0.7, 0.4, 0.95, 0.1, 0.65]
    a = paired_interval(kendall_tau_b, x, y, resamples=500, seed=0)
    b = paired_interval(kendall_tau_b, x, y, resamples=500, seed=0)
    assert a == b and a is not None
    assert -1.0 <= a.low <= kendall_tau_b(x, y) <= a.high <= 1.0
    assert paired_interval(kendall_tau_b, x, x, resamples=200).low == 1.0  # a ranking agrees with itself
    assert mean_pairwise(np.array([x, y, x])) == pytest.approx(np.mean([kendall_tau_b(x, y), 1.0, kendall_tau_b(y, x)]))


# -- --evaluators ------------------------------------------------------------------------------------------------
def test_evaluator_specs_take_options_after_the_name():
    specs = evaluator_specs(["scratch:epochs=2", "inherit-bn", "inherit-bn:finetune-epochs=1", "images=64"])
    assert specs == [
        EvaluatorSpec("scratch", {"epochs": 2}),
        EvaluatorSpec("inherit-bn"),
        EvaluatorSpec("inherit-bn", {"finetune_epochs": 1, "images": 64}),
    ]
    assert [s.label for s in specs] == ["scratch:epochs=2", "inherit-bn", "inherit-bn:finetune_epochs=1,images=64"]
    for bad in (["=2"], ["scratch:"], ["epochs=2"], ["scratch", "scratch"], ["scratch:epochs=1,epochs=2"]):
        with pytest.raises(ConfigError, match="--evaluators"):
            evaluator_specs(",".join(bad).split(","))


def test_the_default_folder_depends_on_the_candidates_only(space):
    from prunenas.fidelity.study import default_out

    data = DataConfig(dataset="digits")
    base = default_out(space, data, FidelitySettings(), 0)
    more = FidelitySettings(evaluators=("scratch", "inherit-bn"), seeds=3, truth_epochs=5)
    assert default_out(space, data, more, 0) == base  # evaluators, seeds and truth length: the same study
    assert default_out(space, data, FidelitySettings(genotypes=8), 0) != base
    assert default_out(space, data, FidelitySettings(), 1) != base
    assert base.parts[:2] == ("runs", "fidelity") and base.name.startswith(f"{space.slug}-digits-")


def test_help_has_examples_and_states_every_default():
    import argparse

    from prunenas.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["fidelity"]
    text = parser.format_help()
    examples = text.split("\nexamples:\n", 1)[1].strip().splitlines()
    assert examples and all(e.strip().startswith("prunenas fidelity ") for e in examples)
    flags = {o for a in parser._actions for o in a.option_strings}
    assert {
        "--evaluators",
        "--genotypes",
        "--levels",
        "--truth-epochs",
        "--seeds",
        "--reference",
        "--pretrain-epochs",
        "--out",
        "--json",
        "--dataset",
        "--train-subset",
        "--seed",
        "--device",
    } <= flags
    for name in ("genotypes", "levels", "truth-epochs", "seeds", "evaluators", "bootstrap"):
        action = next(a for a in parser._actions if f"--{name}" in a.option_strings)
        assert "(default " in (action.help or ""), name


# -- a real study ------------------------------------------------------------------------------------------------
def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def study(tiny_toml, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fidelity") / "study"
    argv = [
        "fidelity", "--space", str(tiny_toml), *DIGITS, "--genotypes", "6", "--truth-epochs", "1", "--seeds", "2",
        "--evaluators", "scratch:epochs=1,inherit-bn:images=64", "--pretrain-epochs", "1", "--bootstrap", "200",
        "--out", str(folder),
    ]  # fmt: skip
    code, out, err = _run(argv)
    assert code == 0, err
    return argv, folder, out, err


def test_a_study_writes_its_table_json_and_plot(study):
    _, folder, out, err = study
    assert {"fidelity.json", "fidelity.png", "genotypes.json", "results.jsonl"} <= {p.name for p in folder.iterdir()}
    assert (folder / "fidelity.png").stat().st_size > 1000
    assert "kendall tau" in out and "ceiling: truth seed vs seed" in out and "inherit-bn:images=64" in out
    assert "fidelity [1/" in err  # a progress line per finished item
    report = json.loads((folder / "fidelity.json").read_text())
    assert len(report["genotypes"]) == 6 and len({g["key"] for g in report["genotypes"]}) == 6
    assert sorted({g["level"] for g in report["genotypes"]}) == [0.3, 0.5, 0.7]
    assert report["truth"]["seeds"] == [0, 1] and report["machine"]["cpu"]["model"]
    for g in report["genotypes"]:
        assert len(g["truth"]["per_seed"]) == 2 and all(0.0 <= v <= 1.0 for v in g["truth"]["per_seed"])
        assert set(g["scores"]) == {"scratch:epochs=1", "inherit-bn:images=64"}
    for e in report["evaluators"]:
        assert e["n"] == 6 and e["seconds_per_candidate"] >= 0
        for name in ("kendall_tau", "spearman_rho"):
            if e[name] is not None:
                interval = e[f"{name}_interval"]
                assert -1.0 <= e[name] <= 1.0
                assert interval is None or -1.0 <= interval["low"] <= interval["high"] <= 1.0
    ceiling = report["ceiling"]
    assert ceiling["seed_pairs"] == 1
    assert ceiling["kendall_tau"] is None or -1.0 <= ceiling["kendall_tau"] <= 1.0


def test_the_truth_as_an_evaluator_ranks_as_the_truth(study):
    """scratch at the truth's length and seed is the truth's seed-0 run: tau 1 against that seed's ranking,
    and its statistics against the mean are those of counting the pairs."""
    _, folder, _, _ = study
    report = json.loads((folder / "fidelity.json").read_text())
    scratch = next(e for e in report["evaluators"] if e["label"] == "scratch:epochs=1")
    scores = [g["scores"]["scratch:epochs=1"]["score"] for g in report["genotypes"]]
    first_seed = [g["truth"]["per_seed"][0] for g in report["genotypes"]]
    assert scores == first_seed
    assert len(set(first_seed)) > 1, "the truth ranks nothing; use more images"
    assert scratch["kendall_tau_per_seed"][0] == 1.0
    means = [g["truth"]["mean"] for g in report["genotypes"]]
    assert scratch["kendall_tau"] == pytest.approx(_brute_tau_b(scores, means))
    second_seed = [g["truth"]["per_seed"][1] for g in report["genotypes"]]
    assert scratch["kendall_tau_per_seed"][1] == pytest.approx(_brute_tau_b(scores, second_seed))
    if report["ceiling"]["kendall_tau"] is not None:
        assert report["ceiling"]["kendall_tau"] == pytest.approx(_brute_tau_b(first_seed, second_seed))


def test_the_report_ranks_by_macs_alone_and_within_levels(study):
    """The baseline row is the candidates' MACs ratios ranked against the truth's mean; tau in level counts
    only the pairs drawn at one MACs level."""
    _, folder, out, _ = study
    report = json.loads((folder / "fidelity.json").read_text())
    genotypes = report["genotypes"]
    means = [g["truth"]["mean"] for g in genotypes]
    macs = [g["macs_ratio"] for g in genotypes]
    baseline = report["macs_alone"]
    assert baseline["label"] == "baseline: MACs alone" and baseline["seconds_per_candidate"] == 0.0
    assert baseline["kendall_tau"] == pytest.approx(_brute_tau_b(macs, means))
    scratch = next(e for e in report["evaluators"] if e["label"] == "scratch:epochs=1")
    scores = [g["scores"]["scratch:epochs=1"]["score"] for g in genotypes]
    levels = [g["level"] for g in genotypes]
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6) if levels[i] == levels[j]]
    assert len(pairs) == 3  # two candidates at each of three levels
    by_level = [_brute_tau_b([scores[i], scores[j]], [means[i], means[j]]) for i, j in pairs]
    defined = [v for v in by_level if v is not None]
    expected = sum(defined) / len(defined) if defined else None
    assert scratch["kendall_tau_within_levels"] == (pytest.approx(expected) if defined else None)
    assert "baseline: MACs alone" in out and "tau in level" in out


def test_a_rerun_computes_nothing(study, monkeypatch):
    import prunenas.fidelity.study as study_module
    import prunenas.train
    from prunenas.evaluators.builtin import InheritBN

    argv, folder, _, _ = study

    def boom(*args, **kwargs):
        raise AssertionError("a rerun computed something")

    monkeypatch.setattr(prunenas.train, "train", boom)
    monkeypatch.setattr(InheritBN, "evaluate", boom)
    monkeypatch.setattr(study_module, "draw_candidates", boom)
    kept = {p: p.stat().st_mtime_ns for p in [folder / "results.jsonl", folder / "genotypes.json"]}
    kept.update({p: p.stat().st_mtime_ns for p in folder.glob("runs/*/*")})
    code, again, err = _run([*argv, "--json"])
    assert code == 0, err
    assert "0 result(s) to compute" in err and "fidelity [" not in err
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert json.loads(again) == json.loads((folder / "fidelity.json").read_text())  # --json prints the report


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--evaluators", "nope"], "--evaluators: unknown evaluator 'nope'"),
        (["--evaluators", "inherit-bn:foo=1", "--pretrain-epochs", "1"], "--evaluators inherit-bn: unknown setting"),
        (["--evaluators", "scratch:lr=0.1"], "--evaluators scratch takes no options but epochs"),
        (["--evaluators", "inherit-bn"], "pass --reference CKPT"),
        (["--genotypes", "3"], "--genotypes must be in [4,"),
        (["--seeds", "0"], "--seeds must be in [1,"),
        (["--levels", "0.5,1.5"], "--levels must be in (0, 1]"),
        (["--levels", "0"], "--levels must be in (0, 1]"),
        (["--space", "no_such_space"], "unknown space 'no_such_space'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(flags, says, tiny_toml, tmp_path):
    out = tmp_path / "study"
    code, stdout, err = _run(["fidelity", "--space", str(tiny_toml), *DIGITS, "--out", str(out), *flags])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunenas: error: ") and says in lines[0], err
    if "pass --reference" in says:
        assert "--pretrain-epochs" in lines[0]
    assert not out.exists() and stdout == ""
