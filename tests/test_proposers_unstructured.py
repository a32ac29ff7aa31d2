"""Unstructured proposers (magnitude, SNIP, GraSP, SynFlow, random, ERK, uniform): the contract on
ResNet-20, exact scores against independent autograd on a tiny net, the ranking conventions, the
collapse guard and the mask ablations (GUIDE 1 and 4, "Pruning at initialization")."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from prunenas import surgery
from prunenas.cost import fvcore_macs_by_layer, genotype_cost
from prunenas.data import DatasetSplits, ImageSet, load_dataset
from prunenas.errors import PrunenasError
from prunenas.genotype import GeneValue
from prunenas.masks import mask_count, prunable_layers, weight_of
from prunenas.proposers import at_init_scores as S
from prunenas.proposers import unstructured as U
from prunenas.proposers.allocation import GlobalRanking
from prunenas.proposers.base import Proposal, ProposalContext, Proposer, Target, get_proposer
from prunenas.spaces import get_space
from prunenas.spaces.base import Gene, Space, SpaceKind

CPU = torch.device("cpu")
TARGETS = [Target("density", 0.5), Target("density", 0.1), Target("macs_ratio", 0.3)]
# Fast settings for ResNet-20 (defaults are exercised on the tiny net and in the benchmark).
CONTRACT: list[tuple[type[Proposer], dict[str, Any]]] = [
    (U.MagnitudeProposer, {}),
    (U.SnipProposer, {"samples_per_class": 1}),
    (U.GraspProposer, {"samples_per_class": 1}),
    (U.GraspAbsProposer, {"samples_per_class": 1}),
    (U.SynflowProposer, {"iterations": 10}),
    (U.RandomDensityProposer, {}),
    (U.ERKProposer, {}),
    (U.UniformDensityProposer, {}),
]


# -- fixtures -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small-batch CPU work gains little from 2 threads, and on a shared 2-core machine an oversubscribed
    OpenMP region stalls every op (GraSP's double backward ran 5x slower); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits", train_subset=200)


@pytest.fixture(scope="module")
def r20() -> ProposalContext:
    space = get_space("resnet20_density")
    torch.manual_seed(0)
    return ProposalContext(space=space, model=space.build(), trained=True, device=CPU, seed=2, data=None)


@pytest.fixture(scope="module")
def r20_macs(r20: ProposalContext) -> dict[str, int]:
    return fvcore_macs_by_layer(r20.model, r20.space.input_shape)


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TinySpace(Space):
    family: ClassVar[str] = "tiny"
    kind: ClassVar[SpaceKind] = "density"
    proposer_kind: ClassVar[str | None] = "density"  # density proposers serve it

    def _make_genes(self) -> list[Gene]:
        return [Gene(name, "float", 0.0, 1.0, 1.0, low_open=True) for name, _ in prunable_layers(TinyNet())]

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        return TinyNet(num_classes)


def tiny_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet()
    with torch.no_grad():  # non-trivial BN state: SynFlow must make it absolute too
        model.bn1.weight.uniform_(-1.5, 1.5)
        model.bn1.bias.uniform_(-0.5, 0.5)
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model


def tiny_data(n: int = 30) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 3)
    return DatasetSplits("tiny", ("a", "b", "c"), images, images, images, (0.5,) * 3, (0.25,) * 3, 0, "test")


@pytest.fixture
def tiny() -> ProposalContext:
    space = TinySpace("tiny", {"input_shape": [3, 8, 8], "num_classes": 3})
    return ProposalContext(space=space, model=tiny_model(), trained=True, device=CPU, seed=0, data=tiny_data())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: Mapping[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(p.requires_grad for p in model.parameters())


def kept_counts(proposal: Proposal) -> dict[str, int]:
    assert proposal.masks is not None
    return {name: int(m.sum()) for name, m in proposal.masks.items()}


# -- the contract on ResNet-20 --------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "options"), CONTRACT, ids=[c.name for c, _ in CONTRACT])
def test_contract_resnet20(
    cls: type[Proposer], options: dict[str, Any], r20: ProposalContext, digits: DatasetSplits, r20_macs: dict[str, int]
) -> None:
    ctx = ProposalContext(r20.space, r20.model, True, CPU, seed=2, data=digits)
    before = snapshot(ctx.model)
    space = ctx.space
    layers = dict(prunable_layers(ctx.model))
    total = sum(weight_of(m).numel() for m in layers.values())
    proposer = cls(**options, min_density=0.002)
    results = {}
    for target in TARGETS:
        p = proposer.propose(ctx, target)
        assert space.validate(p.genotype) == p.genotype
        assert p.masks is not None and list(p.masks) == [g.name for g in space.genes]
        kept = 0
        for name, density in p.genotype.genes.items():
            n = weight_of(layers[name]).numel()
            mask = p.masks[name]
            assert mask.shape == weight_of(layers[name]).shape and mask.device == CPU
            assert set(mask.unique().tolist()) <= {0.0, 1.0}
            assert int(mask.sum()) == mask_count(float(density), n)  # the gene rebuilds the same count
            assert int(mask.sum()) >= max(1, math.ceil(0.002 * n))  # the collapse guard's floor
            kept += int(mask.sum())
        macs = sum(round(m * float(p.genotype.genes[name])) for name, m in r20_macs.items()) / sum(r20_macs.values())
        if target.kind == "density":
            assert abs(kept / total - target.value) <= 0.005
        else:
            assert abs(macs - target.value) <= 0.02 * target.value
        assert p.info["density"] == pytest.approx(kept / total)
        assert p.info["macs_ratio"] == pytest.approx(macs)
        assert set(p.info) >= {"density", "macs_ratio", "clamped", "time_s", "options", "target"}
        assert p.info["options"]["min_density"] == 0.002
        results[target] = p
    again = proposer.propose(ctx, TARGETS[1])
    first = results[TARGETS[1]]
    assert dict(again.genotype.genes) == dict(first.genotype.genes)
    assert again.masks is not None and first.masks is not None
    assert all(torch.equal(again.masks[k], first.masks[k]) for k in first.masks)
    assert_unchanged(ctx.model, before)


def test_defaults_resnet20(r20: ProposalContext, digits: DatasetSplits) -> None:
    """Every proposer with its default options (SynFlow K=100, 10 images per class, T=200)."""
    ctx = ProposalContext(r20.space, r20.model, True, CPU, seed=2, data=digits)
    before = snapshot(ctx.model)
    for cls, _ in CONTRACT:
        p = cls().propose(ctx, Target("density", 0.1))
        assert abs(p.info["density"] - 0.1) <= 0.005
        assert p.info["options"] == dict(cls.options)
    assert_unchanged(ctx.model, before)


def test_macs_ratio_matches_genotype_cost(r20: ProposalContext) -> None:
    p = U.UniformDensityProposer().propose(r20, Target("macs_ratio", 0.3))
    assert genotype_cost(r20.space, p.genotype).macs_ratio == pytest.approx(p.info["macs_ratio"])


def test_ratio_target_is_one_minus_density(r20: ProposalContext) -> None:
    a = U.MagnitudeProposer().propose(r20, Target("ratio", 0.9))
    b = U.MagnitudeProposer().propose(r20, Target("density", 0.1))
    assert dict(a.genotype.genes) == dict(b.genotype.genes)


def test_different_seeds_give_different_random_masks(r20: ProposalContext) -> None:
    other = ProposalContext(r20.space, r20.model, True, CPU, seed=3)
    a, b = (U.RandomDensityProposer().propose(c, Target("density", 0.5)) for c in (r20, other))
    assert a.masks is not None and b.masks is not None
    assert not torch.equal(a.masks["layer2.0.conv1"], b.masks["layer2.0.conv1"])


# -- scores against independent autograd on a tiny net --------------------------------------------------------
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])


def weight_names(model: nn.Module) -> list[str]:
    return [f"{name}.weight" for name, _ in prunable_layers(model)]


def test_snip_scores_equal_autograd() -> None:
    model = tiny_model().double().eval()
    x, y = tiny_batch()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    g = grad(loss)(params)
    scores = S.snip_scores(model, x, y)
    for name in weight_names(model):
        torch.testing.assert_close(scores[name.removesuffix(".weight")], (params[name] * g[name]).abs())


def test_grasp_scores_equal_forward_over_reverse_hvp() -> None:
    model = tiny_model().double().eval()
    x, y = tiny_batch()
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = weight_names(model)

    def loss(ws: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, {**params, **ws}, (x,)) / 200.0, y)

    ws = {n: params[n] for n in names}
    g = grad(loss)(ws)
    _, hg = jvp(grad(loss), (ws,), (g,))  # H g without double backward
    scores = S.grasp_scores(model, x, y, temperature=200.0)
    for name in names:
        torch.testing.assert_close(scores[name.removesuffix(".weight")], -ws[name] * hg[name], rtol=1e-9, atol=1e-30)


def synflow_by_hand(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    net = TinyNet().double().eval()
    state = {k: v.detach().double().abs() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    names = weight_names(model)
    for name in names:
        if masks is not None:
            state[name] = state[name] * masks[name.removesuffix(".weight")].double()

    def r(ws: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(net, {**state, **ws}, (torch.ones(1, 3, 8, 8, dtype=torch.float64),)).sum()

    ws = {n: state[n] for n in names}
    g = grad(r)(ws)
    return {n.removesuffix(".weight"): (ws[n] * g[n]).abs() for n in names}


def test_synflow_scores_equal_autograd_in_float64() -> None:
    model = tiny_model()
    before = snapshot(model)
    scores = S.synflow_scores(model, (3, 8, 8))
    expected = synflow_by_hand(model)
    for name, s in expected.items():
        assert scores[name].dtype == torch.float64
        torch.testing.assert_close(scores[name], s, rtol=1e-12, atol=0.0)
    g = torch.Generator().manual_seed(0)
    masks = {name: (torch.rand(s.shape, generator=g) < 0.5).float() for name, s in expected.items()}
    masked = S.synflow_scores(model, (3, 8, 8), masks)
    for name, s in synflow_by_hand(model, masks).items():
        torch.testing.assert_close(masked[name], s, rtol=1e-12, atol=0.0)
    assert_unchanged(model, before)


def naive_top(scores: Mapping[str, torch.Tensor], keep: int, alive: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Keep the `keep` highest live scores (a plain global sort)."""
    flat = torch.cat([torch.where(alive[n].reshape(-1) > 0, s.reshape(-1), -1.0) for n, s in scores.items()])
    chosen = torch.zeros(flat.numel())
    chosen[torch.sort(flat, descending=True, stable=True).indices[:keep]] = 1.0
    return {
        n: part.view(s.shape)
        for (n, s), part in zip(scores.items(), chosen.split([s.numel() for s in scores.values()]), strict=True)
    }


def test_synflow_iterative_matches_a_plain_loop(tiny: ProposalContext) -> None:
    iterations, density = 4, 0.2
    total = sum(weight_of(m).numel() for _, m in prunable_layers(tiny.model))
    masks = {n: torch.ones(weight_of(m).shape) for n, m in prunable_layers(tiny.model)}
    for k in range(1, iterations + 1):
        masks = naive_top(
            S.synflow_scores(tiny.model, (3, 8, 8), masks), round(total * density ** (k / iterations)), masks
        )
    p = U.SynflowProposer(iterations=iterations).propose(tiny, Target("density", density))
    assert p.masks is not None
    for name, mask in masks.items():
        assert torch.equal(p.masks[name], mask), name
    single = U.SynflowProposer(iterations=1).propose(tiny, Target("density", density))
    assert single.masks is not None
    once = naive_top(S.synflow_scores(tiny.model, (3, 8, 8)), round(total * density), {n: torch.ones(1) for n in masks})
    assert all(torch.equal(single.masks[n], once[n]) for n in masks)


def test_synflow_macs_target_iterates_to_the_density_it_keeps(r20: ProposalContext) -> None:
    p = U.SynflowProposer(iterations=20).propose(r20, Target("macs_ratio", 0.3))
    assert abs(p.info["macs_ratio"] - 0.3) <= 0.006
    assert p.info["synflow_passes"] in (1, 2)
    # the last step prunes from (about) the density the iterations went to, not from a far one
    assert abs(p.info["density"] - p.info["synflow_density"]) <= 0.05 * p.info["synflow_density"]


# -- ranking conventions --------------------------------------------------------------------------------------
def constructed_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    layers = list(prunable_layers(model))
    total = sum(weight_of(m).numel() for _, m in layers)
    # distinct values and distinct magnitudes (no x, -x pairs), in a seeded random order
    values = (torch.linspace(-1.0, 1.0, total, dtype=torch.float64) + 0.3 / total)[
        torch.randperm(total, generator=torch.Generator().manual_seed(0))
    ]
    return {
        n: part.view(weight_of(m).shape)
        for (n, m), part in zip(layers, values.split([weight_of(m).numel() for _, m in layers]), strict=True)
    }


def kept_values(p: Proposal, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    assert p.masks is not None
    return torch.cat([scores[n][p.masks[n] > 0] for n in scores])


@pytest.mark.parametrize(
    ("cls", "invert", "expect"),
    [
        (U.GraspProposer, False, "lowest"),
        (U.GraspProposer, True, "highest"),
        (U.GraspAbsProposer, False, "highest_abs"),
        (U.GraspAbsProposer, True, "lowest_abs"),
    ],
)
def test_grasp_keeps_the_lowest_scores_and_graspabs_the_highest_magnitudes(
    cls: type[Proposer], invert: bool, expect: str, tiny: ProposalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = constructed_scores(tiny.model)
    # patched where GraspProposer looks it up: unstructured imports it from at_init_scores
    monkeypatch.setattr(U, "grasp_scores", lambda model, x, y, temperature=200.0: scores)
    p = cls(invert=invert, samples_per_class=1).propose(tiny, Target("density", 0.3))
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    m = round(0.3 * flat.numel())
    key = {"lowest": -flat, "highest": flat, "highest_abs": flat.abs(), "lowest_abs": -flat.abs()}[expect]
    expected = flat[torch.sort(key, descending=True).indices[:m]]
    assert torch.equal(kept_values(p, scores).sort().values, expected.sort().values)


def test_invert_keeps_the_smallest_magnitudes(tiny: ProposalContext) -> None:
    with torch.no_grad():
        tiny.model.fc.weight.uniform_(-0.18, 0.18)  # spans the convs' range: no layer needs the guard
    scores = S.magnitude_scores(tiny.model)
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    m = round(0.4 * flat.numel())
    for invert in (True, False):
        p = U.MagnitudeProposer(invert=invert).propose(tiny, Target("density", 0.4))
        assert p.info["clamped"] == {}
        expected = flat.sort().values[:m] if invert else flat.sort().values[-m:]
        assert torch.equal(kept_values(p, scores).sort().values, expected)


# -- the collapse guard ---------------------------------------------------------------------------------------
def test_collapse_guard_keeps_a_floor_and_still_meets_the_density(r20: ProposalContext) -> None:
    model = r20.space.build()
    with torch.no_grad():
        model.fc.weight.mul_(1e-6)  # by magnitude, fc would keep nothing at 1% density
        model.layer3[0].shortcut[0].weight.mul_(1e-6)
    ctx = ProposalContext(r20.space, model, True, CPU, seed=0)
    total = sum(weight_of(m).numel() for _, m in prunable_layers(model))
    unguarded = U.MagnitudeProposer().propose(ctx, Target("density", 0.01))
    assert unguarded.info["clamped"] == {"fc": 0, "layer3.0.shortcut.0": 0}
    assert kept_counts(unguarded)["fc"] == 1  # the default floor: one weight
    p = U.MagnitudeProposer(min_weights=5).propose(ctx, Target("density", 0.01))
    counts = kept_counts(p)
    assert counts["fc"] == 5 and counts["layer3.0.shortcut.0"] == 5
    assert p.info["clamped"] == {"fc": 0, "layer3.0.shortcut.0": 0}
    assert sum(counts.values()) == round(0.01 * total)
    p = U.MagnitudeProposer(min_density=0.02).propose(ctx, Target("density", 0.05))
    counts = kept_counts(p)
    numels = {n: weight_of(m).numel() for n, m in prunable_layers(model)}
    assert all(c >= math.ceil(0.02 * numels[n]) for n, c in counts.items())
    assert abs(sum(counts.values()) / total - 0.05) <= 0.005
    assert {"fc", "layer3.0.shortcut.0"} <= set(p.info["clamped"])
    with pytest.raises(PrunenasError, match="collapse guard"):
        U.MagnitudeProposer(min_density=0.02).propose(ctx, Target("density", 0.01))


def test_guarded_top_m_agrees_with_the_global_ranking() -> None:
    g = torch.Generator().manual_seed(0)
    sizes, floors = [50, 7, 300, 20], [3, 5, 2, 15]
    keys = [
        torch.rand(n, generator=g, dtype=torch.float64) * scale
        for n, scale in zip(sizes, [1.0, 1e-3, 1.0, 1e-2], strict=True)
    ]
    ranking = GlobalRanking(keys, ["a", "b", "c", "d"], floors)
    for m in (30, 60, 200):
        allocation = ranking.allocate(m)
        keep, low = S._guarded_top_m(torch.cat(keys), m, sizes, floors)
        assert torch.equal(keep, torch.cat(ranking.masks(allocation.counts)))
        assert {["a", "b", "c", "d"][i]: c for i, c in low.items()} == allocation.clamped
        assert sum(allocation.counts) == m and all(c >= f for c, f in zip(allocation.counts, floors, strict=True))


# -- ERK and uniform ------------------------------------------------------------------------------------------
def test_erk_densities_follow_the_formula(r20: ProposalContext) -> None:
    p = U.ERKProposer().propose(r20, Target("density", 0.1))
    layers = dict(prunable_layers(r20.model))
    ratios = []
    for name, density in p.genotype.genes.items():
        shape = weight_of(layers[name]).shape
        erk = sum(shape) / math.prod(shape)
        if density < 1.0:
            ratios.append((float(density) / erk, 1.0 / (erk * math.prod(shape))))
    assert len(ratios) > 10
    eps, eps_tol = sorted(ratios)[len(ratios) // 2]
    assert all(abs(r - eps) <= (tol + eps_tol) * 1.01 for r, tol in ratios)  # equal up to a weight of rounding
    dense = [n for n, d in p.genotype.genes.items() if d == 1.0]
    for name in dense:  # layers set dense are those the formula would push past 1
        shape = weight_of(layers[name]).shape
        assert eps * sum(shape) / math.prod(shape) >= 0.95


def test_uniform_gives_the_same_density_everywhere(r20: ProposalContext) -> None:
    p = U.UniformDensityProposer().propose(r20, Target("density", 0.3))
    layers = dict(prunable_layers(r20.model))
    for name, density in p.genotype.genes.items():
        assert abs(float(density) - 0.3) <= 1.0 / weight_of(layers[name]).numel()


# -- ablation helpers -----------------------------------------------------------------------------------------
def test_shuffle_masks_keeps_counts_and_moves_positions(r20: ProposalContext) -> None:
    p = U.MagnitudeProposer().propose(r20, Target("density", 0.2))
    assert p.masks is not None
    shuffled = surgery.shuffle_masks(p.masks, seed=1)
    assert kept_counts(Proposal(p.genotype, shuffled)) == kept_counts(p)
    assert all(shuffled[n].shape == m.shape for n, m in p.masks.items())
    assert not torch.equal(shuffled["layer2.1.conv2"], p.masks["layer2.1.conv2"])
    again = surgery.shuffle_masks(p.masks, seed=1)
    assert all(torch.equal(again[n], shuffled[n]) for n in shuffled)


@pytest.mark.parametrize("rescale", [False, True])
def test_apply_masks_to_model_zeros_the_right_weights(r20: ProposalContext, rescale: bool) -> None:
    p = U.MagnitudeProposer().propose(r20, Target("density", 0.2))
    assert p.masks is not None
    torch.manual_seed(5)
    fresh = r20.space.build()
    before = {n: weight_of(m).detach().clone() for n, m in prunable_layers(fresh)}
    assert surgery.apply_masks_to_model(fresh, p.masks, rescale=rescale) is fresh
    for name, module in prunable_layers(fresh):
        mask = p.masks[name]
        w = weight_of(module)
        assert torch.equal(module.weight_mask, mask)
        assert bool((w[mask == 0] == 0).all())
        scale = 1.0 / math.sqrt(float(mask.mean())) if rescale and float(mask.mean()) < 1 else 1.0
        torch.testing.assert_close(w[mask > 0], before[name][mask > 0] * scale)
    with pytest.raises(PrunenasError, match="unknown layer"):
        surgery.apply_masks_to_model(fresh, {"nope": torch.ones(1)})


# -- bad input and registry -----------------------------------------------------------------------------------
def test_bad_input_is_one_line(r20: ProposalContext) -> None:
    cases: list[Any] = [
        lambda: U.SnipProposer().propose(r20, Target("density", 0.1)),
        lambda: Target("density", 1.5),
        lambda: Target("ratio", 1.0),
        lambda: U.MagnitudeProposer(min_weights=-1),  # 0 is valid: a layer may be emptied
        lambda: U.MagnitudeProposer(layers="linear"),
        lambda: U.SynflowProposer(iterations="many"),
        lambda: U.GraspProposer(temperature=0),
        lambda: U.ERKProposer(invert=True),
        lambda: U.MagnitudeProposer().propose(
            ProposalContext(r20.space, r20.model, False, CPU), Target("density", 0.1)
        ),
        lambda: U.ERKProposer().propose(
            ProposalContext(get_space("resnet20_channels"), r20.model, False, CPU), Target("ratio", 0.1)
        ),
    ]
    for case in cases:
        with pytest.raises(PrunenasError) as info:
            case()
        assert "\n" not in str(info.value)
    with pytest.raises(PrunenasError, match="--dataset"):
        cases[0]()


def test_registered_under_their_names() -> None:
    names = {"magnitude", "snip", "grasp", "graspabs", "synflow", "random", "erk", "uniform"}
    for name in names:
        proposer = get_proposer(name, kind="density")
        assert proposer.kind == "density" and proposer.name == name
        assert set(proposer.targets) == {"density", "ratio", "macs_ratio"}
        assert {"min_weights", "min_density"} <= set(proposer.options)
    assert U.SynflowProposer.options["iterations"] == 100
    assert U.GraspProposer.options["temperature"] == 200.0
    assert U.SnipProposer.needs_data and not U.SynflowProposer.needs_data and U.MagnitudeProposer.needs_trained
