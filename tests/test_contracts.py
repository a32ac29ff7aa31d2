"""The shipped contract suites (prunenas.testing) run over every registered space, proposer and metric,
plus one Optuna `FixedTrial` through the search objective on the tiny ResNet-8 space."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from tiny_search import search_config

from prunenas import latency_model
from prunenas.cost import genotype_cost
from prunenas.data import DatasetSplits, load_dataset
from prunenas.latency_model import FEATURES, LatencyPredictor, features
from prunenas.metrics import Metric, get_metric, metric_names
from prunenas.proposers.base import Proposer, TargetKind, proposers
from prunenas.recipes import make_recipe
from prunenas.search import BUDGETS, Objective
from prunenas.spaces import Space, all_spaces, get_space
from prunenas.testing import MetricContract, ProposerContract, SpaceContract
from prunenas.train import RunSettings, train

TINY = "tiny_resnet8"  # conftest's tiny ResNet-8 TOML space
SPACES = [s.name for s in all_spaces()]
PROPOSERS = proposers()
METRICS = metric_names()

# Keep the slow ones fast: fewer SynFlow iterations, one sparsity epoch for slimming, fewer scored images.
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "synflow": {"iterations": 10},
    "slimming": {"sparsity_epochs": 1},
    "snip": {"samples_per_class": 2},
    "grasp": {"samples_per_class": 2},
    "graspabs": {"samples_per_class": 2},
}
# Li et al.'s fixed rule fits only ResNet-56/110 and VGG-16; a MACs ratio of 0.5 is not one it can meet.
PAPER_SPACE = {"l1-paper": "resnet56_channels"}
ONLY_TARGETS: dict[str, tuple[TargetKind, ...]] = {"l1-paper": ("ratio",)}


def proposer_id(cls: type[Proposer]) -> str:
    return f"{cls.name}-{cls.kind}"


def space_by_name(name: str, tiny_toml: Path) -> Space:
    return get_space(str(tiny_toml)) if name == TINY else get_space(name)


def proposer_space(cls: type[Proposer]) -> Space:
    """A small space the proposer serves."""
    if cls.name in PAPER_SPACE:
        return get_space(PAPER_SPACE[cls.name])
    if cls.kind == "density":
        return get_space("resnet20_density")
    # Not the tiny ResNet-8: its widths (6, 8, 12) are too coarse for some rankings (lamp, taylor) to land
    # within 2% of a MACs ratio of 0.5.
    return get_space("resnet20_channels", overrides={"shortcut": "B"})


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread while this module runs: its models are tiny (a few images of 32x32), so one
    thread is about as fast, and it does not collapse when the CPU is shared with other processes (with
    two or more, OpenMP threads spin against them: several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits() -> DatasetSplits:
    return load_dataset("digits", seed=0, train_subset=64, val_size=32)


@pytest.fixture(scope="session")
def trained_reference(tmp_path_factory: pytest.TempPathFactory, digits: DatasetSplits) -> Callable[[Space], Path]:
    """Checkpoint of a space's reference after one epoch on digits (made once per space and session)."""
    made: dict[str, Path] = {}

    def get(space: Space) -> Path:
        if space.name not in made:
            out = tmp_path_factory.mktemp(f"reference-{space.name}")
            recipe = make_recipe("proxy", {}, overrides={"epochs": 1, "batch_size": 32})
            settings = RunSettings(device="cpu", quiet=True, plot=False)
            train(space, space.reference(), digits, recipe, settings, out_dir=out, evaluate_test=False)
            made[space.name] = out / "checkpoint.pt"
            assert made[space.name].exists()
        return made[space.name]

    return get


def test_everything_registered_is_covered() -> None:
    assert TINY not in SPACES and len(SPACES) == len(set(SPACES)) and SPACES
    assert {proposer_id(c) for c in PROPOSERS} >= {"l1-channels", "l1-paper-channels", "synflow-density"}
    assert len({proposer_id(c) for c in PROPOSERS}) == len(PROPOSERS)
    assert set(METRICS) >= {"val_acc", "macs", "params"}


# -- spaces ---------------------------------------------------------------------------------------------------
class TestSpaceContract(SpaceContract):
    @pytest.fixture(params=[*SPACES, TINY])
    def space(self, request: pytest.FixtureRequest, tiny_toml: Path) -> Space:
        return space_by_name(request.param, tiny_toml)


# -- proposers ------------------------------------------------------------------------------------------------
def fixed_latency_predictor(space: Space, **_: Any) -> LatencyPredictor:
    """A latency predictor with fixed coefficients (no timing): 10% fixed cost, 60% in proportion to the MACs
    and 30% to the activations of the space's reference, so a latency target is met on the same model every
    run, however busy the machine is (the real predictor is fitted to measured timings: test_latency.py)."""
    ref = features(space.counting_model(space.reference(), space.num_classes)[0], space.input_shape)
    macs = ref[0] + ref[1] + ref[2]
    per = {"dense_macs": 0.6 / macs, "grouped_macs": 0.6 / macs, "linear_macs": 0.6 / macs,
           "activations": 0.3 / ref[3], "weights": 0.0, "constant": 0.1 / ref[5]}  # fmt: skip
    return LatencyPredictor(
        space=space.name, provider="cpu", batch=1, threads=1, machine="fixed", reference_ms=1.0,
        coefficients=tuple(per[f] for f in FEATURES), calibration=0, loo_median=0.0, loo_p90=0.0,
    )  # fmt: skip


class TestProposerContract(ProposerContract):
    @pytest.fixture(autouse=True)
    def _fixed_latency(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(latency_model, "latency_predictor", fixed_latency_predictor)

    @pytest.fixture(params=PROPOSERS, ids=proposer_id)
    def proposer_class(self, request: pytest.FixtureRequest) -> type[Proposer]:
        cls: type[Proposer] = request.param
        return cls

    @pytest.fixture
    def space(self, proposer_class: type[Proposer]) -> Space:
        return proposer_space(proposer_class)

    @pytest.fixture
    def data(self, digits: DatasetSplits) -> DatasetSplits:
        return digits

    @pytest.fixture
    def reference(
        self, proposer_class: type[Proposer], space: Space, trained_reference: Callable[[Space], Path]
    ) -> Path | None:
        # every proposer that scores trained weights gets them: none of its checks is skipped
        return trained_reference(space) if proposer_class.needs_trained else None

    @pytest.fixture
    def proposer_options(self, proposer_class: type[Proposer]) -> Mapping[str, Any]:
        return FAST_OPTIONS.get(proposer_class.name, {})

    @pytest.fixture
    def targets(self, proposer_class: type[Proposer]) -> tuple[TargetKind, ...]:
        return ONLY_TARGETS.get(proposer_class.name, tuple(proposer_class.targets))


# -- metrics --------------------------------------------------------------------------------------------------
class TestMetricContract(MetricContract):
    @pytest.fixture(params=METRICS)
    def metric(self, request: pytest.FixtureRequest) -> Metric:
        return get_metric(request.param)

    @pytest.fixture
    def space(self, tiny_toml: Path) -> Space:
        return space_by_name(TINY, tiny_toml)


# -- the search objective -------------------------------------------------------------------------------------
def test_objective_with_a_fixed_trial(tmp_path: Path, tiny_toml: Path) -> None:
    space = space_by_name(TINY, tiny_toml)
    data = load_dataset("digits", seed=0, train_subset=96, val_size=48)
    budget = replace(BUDGETS["smoke"], trials=1, proxy_epochs=1, seed_targets=(0.5,), top_k=1, final_epochs=1)
    config = search_config(
        space,
        tmp_path / "study",
        "contract",
        budget=budget,
        exports=tmp_path / "exports",
        device="cpu",
        proposers=("uniform", "random"),
    )
    assert config.objectives == ("val_acc", "macs")
    genotype = space.random_genotype(7)
    values = Objective(config, space, data)(optuna.trial.FixedTrial(dict(genotype.genes)))
    assert isinstance(values, tuple) and len(values) == len(config.objectives)
    got = dict(zip(config.objectives, values, strict=True))
    assert 0.0 <= got["val_acc"] <= 1.0
    assert got["macs"] == genotype_cost(space, genotype, num_classes=data.num_classes).macs
    assert got["macs"] < genotype_cost(space, space.reference()).macs
