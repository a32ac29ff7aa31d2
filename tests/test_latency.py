"""The latency metric: units, providers, the measurement, its cache, and a search that optimises it."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from prunenas.cli import main
from prunenas.config import ConfigError
from prunenas.latency import check_provider, genotype_latency
from prunenas.metrics import Limit, get_metric
from prunenas.spaces import get_space


def test_latency_amounts_and_limits():
    metric = get_metric("latency")
    assert (metric.direction, metric.unit, metric.after_training) == ("minimize", "ms", False)
    assert metric.parse_amount("8ms") == 8 and metric.parse_amount("800us") == pytest.approx(0.8)
    assert metric.parse_amount("0.01s") == pytest.approx(10) and metric.parse_amount("3") == 3
    assert Limit.parse("latency=8ms") == Limit("latency", 8.0)
    assert Limit.parse("latency=0.6x") == Limit("latency", 0.6, relative=True)
    for bad in ("latency=3parsecs", "latency=-1ms", "latency=0x"):
        with pytest.raises(ConfigError):
            Limit.parse(bad)


def test_providers_are_checked_never_silently_replaced():
    assert check_provider("cpu") == "cpu" and check_provider("torch") == "torch"
    with pytest.raises(ConfigError, match="not one of"):
        check_provider("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--latency-provider cuda"):
            check_provider("cuda")


def test_measurement_is_interleaved_with_the_reference_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(tmp_path))
    space = get_space("resnet20_channels")
    narrow = space.make({**space.reference().genes, **{f"stage3_block{i}": 8 for i in (1, 2, 3)}})
    first = genotype_latency(space, narrow, 10)
    assert first.ms > 0 and first.reference_ms > 0 and first.ratio > 0 and first.cv >= 0
    assert (first.provider, first.batch, first.threads) == ("cpu", 1, first.threads) and first.runs >= 50
    files = list((tmp_path / "latency").glob(f"resnet20_channels-{narrow.key}-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["ms"] == first.ms
    assert genotype_latency(space, narrow, 10) == first  # from the cache
    other = genotype_latency(space, narrow, 10, batch=2)
    assert other.batch == 2 and len(list((tmp_path / "latency").glob("*.json"))) == 2


def test_search_optimises_latency_and_records_it(tmp_path, monkeypatch, tiny_toml):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(tmp_path / "costs"))
    argv = ["search", "--space", str(tiny_toml), "--dataset", "digits", "--train-subset", "64", "--budget", "smoke",
            "--trials", "2", "--proxy-epochs", "1", "--no-final", "--objectives", "val_acc,latency",
            "--latency-threads", "1", "--out", "s", "-q"]  # fmt: skip
    assert main(argv) == 0
    measured = [json.loads(p.read_text()) for p in (tmp_path / "costs" / "latency").glob("*.json")]
    assert measured and all(m["threads"] == 1 for m in measured)  # --latency-threads reached the measurement
    with open("s/trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(float(r["latency"]) > 0 and float(r["latency_ratio"]) > 0 for r in rows)
    assert all(r["latency_setup"].startswith("ONNX Runtime cpu fp32, batch 1, 1 threads, ") for r in rows)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [o["name"] for o in summary["objectives"]] == ["val_acc", "latency"]
    assert summary["objectives"][1]["unit"] == "ms" and "threads" in summary["objectives"][1]["setup"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--latency-provider", "gpu"], "--latency-provider"),
        (["--latency-batch", "0"], "--latency-batch"),
        (["--latency-threads", "0"], "--latency-threads"),
        (["--max", "latency=5parsecs"], "duration"),
        (["--max", "latency=0ms"], "positive"),
    ],
)
def test_latency_bad_input(tmp_path, capsys, extra, fragment):
    code = main(["search", "--space", "resnet20_channels", "--dataset", "digits", "--out", str(tmp_path / "s"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and fragment in err


# -- the predictor ---------------------------------------------------------------------------------------------
def _synthetic(space, genotypes, coef):
    """A predictor fitted to latencies that are an exact non-negative combination of the features."""
    from prunenas.latency_model import features, fit_predictor

    def ms(g):
        return sum(c * x for c, x in zip(coef, features(space.build(g), space.input_shape), strict=True))

    reference_ms = ms(space.reference())
    ratios = {g.key: ms(g) / reference_ms for g in genotypes}
    return fit_predictor(
        space, ratios, genotypes, reference_ms=reference_ms, provider="cpu", batch=1, threads=1, machine="test"
    )


def test_predictor_recovers_a_known_cost_model_and_reports_its_error():
    from prunenas.latency_model import calibration_genotypes, features

    space = get_space("resnet20_channels")
    genotypes = calibration_genotypes(space, 12)
    assert len({g.key for g in genotypes}) == 12 and genotypes[0] == space.reference()
    coef = (0.02, 0.0, 0.0, 0.05, 0.0, 0.3)  # ms per M dense MACs, per M activations, fixed
    predictor = _synthetic(space, genotypes, coef)
    assert predictor.loo_p90 < 1e-6 and predictor.loo_median < 1e-6
    g = space.random_genotype(99)
    truth = sum(c * x for c, x in zip(coef, features(space.build(g), space.input_shape), strict=True))
    assert predictor.predict(space, g) == pytest.approx(truth, rel=1e-6)
    ref_features = features(space.build(space.reference()), space.input_shape)
    reference_truth = sum(c * x for c, x in zip(coef, ref_features, strict=True))
    assert predictor.ratio(space, g) == pytest.approx(truth / reference_truth, rel=1e-6)
    assert predictor.confidently_over(1.2, 1.0) and not predictor.confidently_over(0.99, 1.0)
    # no negative coefficient: more of anything never predicts faster
    noisy = _synthetic(space, genotypes, (0.02, 0.0, 0.0, 0.0, 0.0, 0.3))
    assert all(c >= 0 for c in noisy.coefficients)


def test_propose_meets_a_latency_ratio_on_the_predictor(monkeypatch, capsys, tmp_path):
    import prunenas.latency_model as lm
    from prunenas.proposers.base import Target, get_proposer
    from prunenas.proposers.runner import make_context, run_proposer

    space = get_space("resnet20_channels")
    predictor = _synthetic(space, lm.calibration_genotypes(space, 10), (0.02, 0.0, 0.0, 0.05, 0.0, 0.3))
    monkeypatch.setattr(lm, "latency_predictor", lambda *a, **k: predictor)
    proposal = run_proposer(get_proposer("uniform", "channels"), make_context(space), Target("latency_ratio", 0.6))
    achieved = proposal.genotype.provenance["achieved"]
    assert achieved["latency_ratio_predicted"] == pytest.approx(0.6, rel=0.02)
    assert achieved["macs_ratio"] < 0.6  # the fixed cost makes the latency ratio higher than the MACs ratio
    out = tmp_path / "g.json"
    argv = [
        "propose",
        "--space",
        "resnet20_channels",
        "--proposer",
        "uniform",
        "--latency-ratio",
        "0.6",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    assert json.loads(out.read_text())["target"] == {"kind": "latency_ratio", "value": 0.6}


def test_a_real_predictor_is_calibrated_once_and_cached(tmp_path, monkeypatch):
    import prunenas.latency_model as lm

    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(tmp_path))
    monkeypatch.setattr(lm, "CALIBRATION", 5)
    space = get_space("resnet20_channels")
    lines: list[str] = []
    first = lm.latency_predictor(space, threads=1, log=lines.append)
    assert len(lines) == 5 and first.calibration == 5 and first.reference_ms > 0
    assert all(c >= 0 for c in first.coefficients)
    again = lm.latency_predictor(space, threads=1, log=lines.append)
    assert again == first and len(lines) == 5  # read from disk: nothing measured again


def test_search_discards_candidates_confidently_predicted_over_the_limit(monkeypatch, tmp_path, tiny_toml):
    import prunenas.latency_model as lm
    from prunenas.config import DataConfig, RunSettings
    from prunenas.data import load_dataset
    from prunenas.search import SearchSettings
    from prunenas.search.config import prepare_search
    from prunenas.search.objective import Objective

    space = get_space(str(tiny_toml))
    predictor = _synthetic(space, lm.calibration_genotypes(space, 8), (0.02, 0.0, 0.0, 0.05, 0.0, 0.3))
    monkeypatch.setattr(lm, "latency_predictor", lambda *a, **k: predictor)
    settings = SearchSettings(max=("latency=0.95x",), out=str(tmp_path / "s"))
    config, _ = prepare_search(
        str(tiny_toml),
        search=settings,
        data=DataConfig(dataset="digits"),
        run=RunSettings(),
        metrics={"latency": {"predictor": True}},
    )
    data = load_dataset("digits", seed=0, train_subset=64, val_size=32)
    objective = Objective(config, space, data)
    objective.references["latency"], objective.limits["latency"] = 2.0, 0.95 * 2.0  # ms: a 0.95x limit
    assert objective.predicted_over(space.reference())["latency"] == pytest.approx(2.0, rel=1e-6)
    assert predictor.ratio(space, space.smallest_genotype()) < 0.95
    assert objective.predicted_over(space.smallest_genotype()) == {}  # under the limit: it is timed


def test_default_threads_follow_the_cores_this_process_may_use(monkeypatch):
    import os

    from prunenas.latency import default_threads

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # as under `taskset -c 3`
    assert default_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert default_threads() == 3
