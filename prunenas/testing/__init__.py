"""Contract test suites for plugins: spaces, proposers, metrics, evaluators and tasks, shipped inside the package.

Like Optuna's importable sampler tests, these are plain base classes (their names do not start with
`Test`, so pytest never collects them on their own). A third-party package runs one against its own
plugin by subclassing it in a test module, under a name that starts with `Test`, and providing the
fixtures it needs:

    import pytest
    from prunenas.spaces import get_space
    from prunenas.testing import MetricContract, ProposerContract, SpaceContract
    from my_plugin import MyMetric, MyProposer

    class TestMySpace(SpaceContract):
        @pytest.fixture
        def space(self):
            return get_space("my_space")          # any Space instance

    class TestMyProposer(ProposerContract):
        @pytest.fixture
        def proposer_class(self):
            return MyProposer                     # the Proposer subclass, not an instance

        @pytest.fixture
        def space(self):
            return get_space("resnet20_channels") # a space it serves (proposer_kind == MyProposer.kind)

    class TestMyMetric(MetricContract):
        @pytest.fixture
        def metric(self):
            return MyMetric()

        @pytest.fixture
        def space(self):
            return get_space("resnet20_channels")

Required fixtures: `space` (every suite), `proposer_class` (ProposerContract), `metric`
(MetricContract), `evaluator` (EvaluatorContract: an Evaluator instance), `task`, `data` and `model`
(TaskContract: see prunenas.testing.tasks). Optional fixtures, with their defaults:

    ProposerContract.reference         None: a checkpoint (path) of the space's trained reference, from
                                       `prunenas pretrain`; without it, the target and determinism checks
                                       of a proposer with `needs_trained = True` are skipped (with a reason)
    ProposerContract.data              the digits set, 64 training and 32 validation images
    ProposerContract.proposer_options  {}: options passed to the proposer (e.g. fewer iterations)
    ProposerContract.targets           the proposer's own `targets` (but latency_ratio): the target kinds checked
    MetricContract.train_result        a TrainResult with val_acc = 0.5 (what an after-training metric sees)
    EvaluatorContract.reference        for an evaluator with `needs_trained`, a checkpoint of the space's
                                       reference trained one epoch here; else None

Class attributes a subclass may change: `SpaceContract.seeds` (random genotypes built),
`ProposerContract.target_value` (0.5) and `ProposerContract.device` ("cpu").

pytest is imported at the top of this module. It is a development dependency of prunenas only: this
module is meant to be imported by test suites, and nothing else in prunenas imports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import pytest
import torch

from prunenas.cost import fast_macs, genotype_cost, listed_reference_cost
from prunenas.data import DatasetSplits, load_dataset
from prunenas.errors import GenotypeError, PrunenasError
from prunenas.genotype import GeneValue, Genotype
from prunenas.metrics import Metric, MetricContext
from prunenas.proposers.base import TARGET_KINDS, Proposal, ProposalContext, Proposer, Target, TargetKind
from prunenas.proposers.runner import DENSITY_TOLERANCE, MACS_TOLERANCE, make_context, run_proposer
from prunenas.spaces.base import Gene, Space
from prunenas.train_results import TrainResult

__all__ = ["MetricContract", "ProposerContract", "SpaceContract"]


def _missing(suite: object, fixture: str, what: str) -> NoReturn:
    pytest.fail(f"{type(suite).__name__} must define a `{fixture}` fixture returning {what}", pytrace=False)


def _json_roundtrip(obj: Any) -> Any:
    """`obj` through JSON (fails the test if it is not JSON-serialisable)."""
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as exc:
        pytest.fail(f"not JSON-serialisable: {exc}")


def _forward(space: Space, genotype: Genotype) -> torch.Tensor:
    model = space.build(genotype)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *space.input_shape))
    assert isinstance(out, torch.Tensor)
    return out


def _out_of_range(gene: Gene) -> list[GeneValue]:
    """Values just outside a gene's bounds, below and above."""
    if gene.kind == "int":
        low = math.ceil(gene.low) if gene.low_open else math.ceil(gene.low) - 1
        return [low, math.floor(gene.high) + 1]
    below = float(gene.low) if gene.low_open else float(gene.low) - 1.0
    return [below, float(gene.high) + 1.0]


@cache
def _digits() -> DatasetSplits:
    return load_dataset("digits", seed=0, train_subset=64, val_size=32)


# -- spaces ---------------------------------------------------------------------------------------------------
class SpaceContract:
    """What every Space must do. Subclass it as `Test...` and define a `space` fixture."""

    #: Seeds of the random genotypes that are built and run.
    seeds: ClassVar[tuple[int, ...]] = (0,)

    @pytest.fixture
    def space(self) -> Space:
        _missing(self, "space", "a Space instance")

    def test_genes(self, space: Space) -> None:
        assert isinstance(space, Space)
        assert len(space.genes) > 0, "a space needs at least one gene"
        names = [g.name for g in space.genes]
        assert len(set(names)) == len(names), f"duplicate gene names: {names}"
        for gene in space.genes:
            assert isinstance(gene.name, str) and gene.name
            assert gene.kind in ("int", "float"), f"gene {gene.name!r}: kind {gene.kind!r}"
            assert gene.low <= gene.high, f"gene {gene.name!r}: low {gene.low} > high {gene.high}"
            assert gene.check(gene.reference) == gene.reference, f"gene {gene.name!r}: reference out of bounds"
            assert space.gene(gene.name) is gene

    def test_reference_validates_and_round_trips(self, space: Space) -> None:
        ref = space.reference()
        assert ref.space == space.name
        assert list(ref.genes) == [g.name for g in space.genes]
        assert space.validate(ref) == ref
        again = Genotype.from_json(ref.to_json())
        assert again == ref
        assert dict(again.genes) == dict(ref.genes)
        assert space.validate(again) == ref

    def test_reference_forward_shape(self, space: Space) -> None:
        out = _forward(space, space.reference())
        assert tuple(out.shape) == (2, space.num_classes)
        assert torch.isfinite(out).all()

    def test_random_genotypes_build_and_run(self, space: Space) -> None:
        for seed in self.seeds:
            g = space.random_genotype(seed)
            assert space.validate(g) == g
            assert g == space.random_genotype(seed), f"random_genotype({seed}) is not deterministic"
            out = _forward(space, g)
            assert tuple(out.shape) == (2, space.num_classes)
            assert torch.isfinite(out).all()

    def test_out_of_range_values_are_refused(self, space: Space) -> None:
        ref = dict(space.reference().genes)
        for gene in space.genes:
            for bad in _out_of_range(gene):
                with pytest.raises(GenotypeError):
                    space.validate(Genotype(space.name, {**ref, gene.name: bad}))

    def test_smallest_genotype(self, space: Space) -> None:
        smallest = space.smallest_genotype()
        assert space.validate(smallest) == smallest
        small = genotype_cost(space, smallest)
        ref = genotype_cost(space, space.reference())
        assert 0 < small.macs <= ref.macs, f"smallest genotype: {small.macs} MACs, reference: {ref.macs}"
        assert tuple(_forward(space, smallest).shape) == (2, space.num_classes)

    def test_cost_is_positive(self, space: Space) -> None:
        ref = space.reference()
        model, weights = space.counting_model(ref, space.num_classes)
        assert isinstance(model, torch.nn.Module)
        if weights is not None:
            assert all(math.isfinite(float(w)) and float(w) >= 0 for w in weights.values()), weights
        cost = genotype_cost(space, ref)
        assert cost.macs > 0 and cost.params > 0
        assert (cost.reference_macs, cost.reference_params) == (cost.macs, cost.params)
        rand = genotype_cost(space, space.random_genotype(self.seeds[0]))
        assert rand.macs > 0 and rand.params > 0

    def test_counts_without_tracing_equal_fvcore(self, space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
        """The forward-hook count (a proposer's bisection, the space listing) equals fvcore's, the convention."""

        monkeypatch.setenv("PRUNENAS_COST_CACHE", "off")  # the listing counts, not reads fvcore's cached count
        ref = genotype_cost(space, space.reference())
        assert listed_reference_cost(space) == (ref.macs, ref.params)
        for genotype in (space.reference(), space.random_genotype(self.seeds[0])):
            assert fast_macs(space, genotype) == genotype_cost(space, genotype).macs

    def test_search_range_within_bounds(self, space: Space) -> None:
        for gene in space.genes:
            low, high, log = space.search_range(gene)
            assert isinstance(log, bool)
            assert low <= high, f"gene {gene.name!r}: search range ({low}, {high})"
            assert gene.low <= low and high <= gene.high, (
                f"gene {gene.name!r}: search range ({low}, {high}) leaves its bounds {gene.bounds_text()}"
            )
            if log:
                assert low > 0, f"gene {gene.name!r}: a log-scale range must start above 0, got {low}"

    def test_same_seed_same_weights(self, space: Space) -> None:
        g = space.random_genotype(self.seeds[0])
        states = []
        with torch.random.fork_rng(devices=[]):
            for _ in range(2):
                torch.manual_seed(1234)
                states.append(space.build(g).state_dict())
        first, second = states
        assert list(first) == list(second)
        for k in first:
            assert torch.equal(first[k], second[k]), f"{k} differs between two builds with the same seed"

    def test_describe_is_json(self, space: Space) -> None:
        info = _json_roundtrip(space.describe())
        assert isinstance(info, dict)

    def test_channel_hooks_name_real_layers(self, space: Space) -> None:
        """`structured_genes` and `gene_batchnorms` name layers of the reference model (a conv or linear layer
        with as many output channels as the gene's reference value, where it is one); `gene_splits` divides
        each structured gene's reference width."""
        structured, bns = space.structured_genes(), space.gene_batchnorms()
        if not structured and not bns:
            return  # a space channel pruning does not narrow
        modules = dict(space.build().named_modules())
        for gene, path in structured.items():
            assert path in modules, f"structured gene {gene!r}: the reference model has no module {path!r}"
            layer = modules[path]
            if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear):
                width = layer.out_channels if isinstance(layer, torch.nn.Conv2d) else layer.out_features
                assert width == space.gene(gene).reference, f"structured gene {gene!r}: {path!r} has {width} channels"
            splits = space.gene_splits(gene)
            assert splits >= 1 and int(space.gene(gene).reference) % splits == 0, f"gene {gene!r}: {splits} splits"
        for gene, path in (bns or {}).items():
            bn = modules.get(path)
            assert isinstance(bn, torch.nn.modules.batchnorm._BatchNorm), f"gene {gene!r}: {path!r} is no BatchNorm"
            assert bn.num_features == space.gene(gene).reference, f"gene {gene!r}: {path!r} has another width"


# -- proposers ------------------------------------------------------------------------------------------------
class ProposerContract:
    """What every Proposer must do. Subclass it as `Test...` and define `proposer_class` and `space`."""

    #: The value of every target checked (a ratio, a MACs ratio or a density).
    target_value: ClassVar[float] = 0.5
    #: Where the proposer runs (cpu keeps the determinism check exact).
    device: ClassVar[str] = "cpu"

    @pytest.fixture
    def proposer_class(self) -> type[Proposer]:
        _missing(self, "proposer_class", "a Proposer subclass")

    @pytest.fixture
    def space(self) -> Space:
        _missing(self, "space", "a Space that the proposer serves")

    @pytest.fixture
    def reference(self) -> str | Path | None:
        return None

    @pytest.fixture
    def data(self) -> DatasetSplits:
        return _digits()

    @pytest.fixture
    def proposer_options(self) -> Mapping[str, Any]:
        return {}

    @pytest.fixture
    def targets(self, proposer_class: type[Proposer]) -> tuple[TargetKind, ...]:
        # latency_ratio is met on a predictor calibrated by timing the space (seconds to minutes): its own
        # tests check it, on a small calibration set.
        return tuple(t for t in proposer_class.targets if t != "latency_ratio")

    # helpers ------------------------------------------------------------------------------------------------
    def context(
        self, proposer_class: type[Proposer], space: Space, data: DatasetSplits, reference: str | Path | None
    ) -> ProposalContext:
        if proposer_class.needs_trained and reference is None:
            pytest.skip(f"proposer {proposer_class.name!r} scores trained weights and no `reference` fixture is set")
        return make_context(space, data=data, reference=reference, seed=0, device=self.device)

    def propose(
        self,
        proposer_class: type[Proposer],
        options: Mapping[str, Any],
        space: Space,
        data: DatasetSplits,
        reference: str | Path | None,
        kind: TargetKind,
    ) -> tuple[Proposal, ProposalContext]:
        ctx = self.context(proposer_class, space, data, reference)
        proposal = run_proposer(proposer_class(**options), ctx, Target(kind, self.target_value))
        return proposal, ctx

    # the checks ---------------------------------------------------------------------------------------------
    def test_class_attributes(self, proposer_class: type[Proposer], proposer_options: Mapping[str, Any]) -> None:
        assert isinstance(proposer_class, type) and issubclass(proposer_class, Proposer)
        assert isinstance(proposer_class.name, str) and proposer_class.name
        assert proposer_class.kind in ("channels", "density")
        assert proposer_class.targets, "a proposer takes at least one target kind"
        assert set(proposer_class.targets) <= set(TARGET_KINDS), proposer_class.targets
        assert isinstance(proposer_class.summary, str) and proposer_class.summary.strip()
        assert isinstance(proposer_class.options, Mapping)
        proposer = proposer_class(**proposer_options)
        info = _json_roundtrip(proposer.describe())
        assert info["name"] == proposer_class.name and info["kind"] == proposer_class.kind

    def test_unknown_option_is_refused(self, proposer_class: type[Proposer]) -> None:
        with pytest.raises(PrunenasError):
            proposer_class(no_such_option_for_the_contract=1)

    def test_space_is_served(self, proposer_class: type[Proposer], space: Space) -> None:
        assert space.proposer_kind == proposer_class.kind, (
            f"space {space.name!r} is served by {space.proposer_kind} proposers, not {proposer_class.kind}"
        )

    @pytest.mark.parametrize("kind", TARGET_KINDS)
    def test_meets_target(
        self,
        kind: TargetKind,
        proposer_class: type[Proposer],
        proposer_options: Mapping[str, Any],
        space: Space,
        data: DatasetSplits,
        reference: str | Path | None,
        targets: tuple[TargetKind, ...],
    ) -> None:
        if kind not in proposer_class.targets:
            pytest.skip(f"proposer {proposer_class.name!r} takes no {kind} target")
        if kind not in targets:
            pytest.skip(f"{kind} is not among the targets checked for {proposer_class.name!r} (`targets` fixture)")
        ctx = self.context(proposer_class, space, data, reference)
        before = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        target = Target(kind, self.target_value)
        proposal = run_proposer(proposer_class(**proposer_options), ctx, target)
        genotype = proposal.genotype
        assert genotype.space == space.name
        assert space.validate(genotype) == genotype
        cost = genotype_cost(space, genotype)
        achieved = space.achieved(genotype)
        if kind == "macs_ratio":
            assert abs(cost.macs_ratio - target.value) <= MACS_TOLERANCE * target.value, (
                f"MACs ratio {cost.macs_ratio:.4f}, target {target.value}"
            )
        elif "density" in achieved:
            want = target.value if kind == "density" else 1.0 - target.value
            assert abs(achieved["density"] - want) <= DENSITY_TOLERANCE, (
                f"density {achieved['density']:.4f}, wanted {want}"
            )
        else:  # a ratio of channels removed: the genotype must be cheaper than the reference
            assert cost.macs < cost.reference_macs, f"ratio {target.value} removed no MACs"
        after = ctx.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "the proposer modified the context's model"

    def test_deterministic(
        self,
        proposer_class: type[Proposer],
        proposer_options: Mapping[str, Any],
        space: Space,
        data: DatasetSplits,
        reference: str | Path | None,
        targets: tuple[TargetKind, ...],
    ) -> None:
        kinds = [k for k in targets if k in proposer_class.targets]
        assert kinds, f"no target of {proposer_class.name!r} is checked (`targets` fixture: {targets})"
        first, _ = self.propose(proposer_class, proposer_options, space, data, reference, kinds[0])
        second, _ = self.propose(proposer_class, proposer_options, space, data, reference, kinds[0])
        assert dict(first.genotype.genes) == dict(second.genotype.genes), "same seed, different genotypes"
        if first.masks is not None and second.masks is not None:
            assert list(first.masks) == list(second.masks)
            assert all(torch.equal(first.masks[k], second.masks[k]) for k in first.masks), "same seed, other masks"


# -- metrics --------------------------------------------------------------------------------------------------
class MetricContract:
    """What every Metric must do. Subclass it as `Test...` and define `metric` and `space`."""

    @pytest.fixture
    def metric(self) -> Metric:
        _missing(self, "metric", "a Metric instance")

    @pytest.fixture
    def space(self) -> Space:
        _missing(self, "space", "a Space instance")

    @pytest.fixture
    def train_result(self, space: Space) -> TrainResult:
        return TrainResult(
            genotype_key=space.reference().key,
            recipe="proxy",
            epochs=1,
            epochs_run=1,
            val_acc=0.5,
            best_val_acc=0.5,
            best_epoch=1,
            test_acc=None,
            wall_time_s=1.0,
            images_per_s=100.0,
            seed=0,
            stopped=None,
        )

    def test_attributes(self, metric: Metric) -> None:
        assert isinstance(metric, Metric)
        assert isinstance(metric.name, str) and metric.name
        assert metric.direction in ("maximize", "minimize")
        assert isinstance(metric.after_training, bool)
        assert isinstance(metric.worst, float)
        info = _json_roundtrip(metric.describe())
        assert info["name"] == metric.name and info["direction"] == metric.direction

    def test_measure_without_training(self, metric: Metric, space: Space) -> None:
        ctx = MetricContext(space, space.reference(), space.num_classes, result=None)
        value = metric.measure(ctx)
        assert isinstance(value, float), f"measure returned {type(value).__name__}, not float"
        if metric.after_training:
            # never trained: a float, or the metric's `worst` (NaN by default)
            assert math.isfinite(value) or (math.isnan(metric.worst) and math.isnan(value)), value
            assert metric.reference_value(space, space.num_classes) is None
        else:
            assert math.isfinite(value), value
            assert metric.reference_value(space, space.num_classes) == value
            assert metric.parse_amount("1500") == 1500  # a plain number is in the metric's unit
        assert isinstance(metric.format(value), str) and isinstance(metric.format(None), str)

    def test_measure_after_training(self, metric: Metric, space: Space, train_result: TrainResult) -> None:
        ref = space.reference()
        value = metric.measure(MetricContext(space, ref, space.num_classes, result=train_result))
        assert isinstance(value, float) and math.isfinite(value), value
        if not metric.after_training:  # a value known before training does not depend on it
            assert value == metric.measure(MetricContext(space, ref, space.num_classes, result=None))


from prunenas.testing.evaluators import EvaluatorContract  # noqa: E402, F401  (it uses the helpers above)
from prunenas.testing.tasks import TaskContract  # noqa: E402, F401
