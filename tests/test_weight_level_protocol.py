"""Weight-level magnitude pruning as the Rethinking paper's CIFAR code runs it (GUIDE 4 "Unstructured"
and 11): one threshold over the |w| of every Conv2d, Linear layers not pruned, each conv keeping the
weights strictly above the threshold, so that a layer may be emptied (proposer options layers=conv,
min_weights=0; density genes of 0.0). The reference masks are computed here from the code's rule."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunenas import surgery
from prunenas.cost import fvcore_macs_by_layer, genotype_cost
from prunenas.errors import PrunenasError
from prunenas.genotype import GeneValue
from prunenas.masks import mask_count, prunable_layers, weight_of
from prunenas.proposers import unstructured as U
from prunenas.proposers.base import Proposal, ProposalContext, Target, get_proposer
from prunenas.proposers.runner import make_context
from prunenas.spaces import get_space
from prunenas.spaces.base import Gene, Space, SpaceKind
from prunenas.spaces.density import DensitySpace

CONV_ONLY = {"layers": "conv", "min_weights": 0}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small CPU work gains nothing from a second thread on a shared 2-core machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def r20() -> ProposalContext:
    """ResNet-20's density space, seeded random init, treated as the trained reference."""
    return dataclasses.replace(make_context(get_space("resnet20_density"), seed=0, device="cpu"), trained=True)


def code_masks(model: nn.Module, percent: float) -> dict[str, torch.Tensor]:
    """The masks of cifar/weight-level/cifar_prune.py: the |w| of every Conv2d sorted ascending, the
    threshold at index int(total * percent), each conv keeping |w| > threshold; Linear layers unpruned."""
    convs = {name: m.weight.detach() for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    magnitudes = torch.cat([w.abs().reshape(-1) for w in convs.values()])
    total = magnitudes.numel()
    threshold = torch.sort(magnitudes).values[int(total * percent)]
    return {name: w.abs().gt(threshold).float() for name, w in convs.items()}


def assert_code_masks(proposal_masks: Mapping[str, torch.Tensor] | None, model: nn.Module, percent: float) -> None:
    assert proposal_masks is not None
    expected = code_masks(model, percent)
    for name, module in prunable_layers(model):
        if isinstance(module, nn.Conv2d):
            assert torch.equal(proposal_masks[name], expected[name]), name
        else:
            assert bool((proposal_masks[name] == 1).all()), f"{name} is not a conv and must stay dense"


# -- the code's masks on a real model ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "percent"),
    [
        (Target("ratio", 0.5), 0.5),
        (Target("ratio", 0.9), 0.9),
        (Target("density", 0.3), 0.7),
        (Target("density", 0.05), 0.95),
    ],
    ids=["ratio0.5", "ratio0.9", "density0.3", "density0.05"],
)
def test_conv_masks_equal_the_rethinking_code(target: Target, percent: float, r20: ProposalContext) -> None:
    p = U.MagnitudeProposer(**CONV_ONLY).propose(r20, target)
    assert_code_masks(p.masks, r20.model, percent)
    convs = [m for _, m in prunable_layers(r20.model) if isinstance(m, nn.Conv2d)]
    total = sum(weight_of(m).numel() for m in convs)
    kept = total - int(total * percent) - 1  # the threshold weight itself is pruned (distinct |w| here)
    assert p.info["ranked_weights"] == total
    assert p.info["ranked_density"] * total == pytest.approx(kept)
    for name, density in p.genotype.genes.items():  # each gene rebuilds its layer's count
        assert p.masks is not None
        assert mask_count(float(density), p.masks[name].numel()) == int(p.masks[name].sum())


def test_the_code_removes_one_weight_more_than_rounding(r20: ProposalContext) -> None:
    """At density 0.5 on ResNet-20's 270,256 conv weights rounding keeps 135,128 and the code 135,127."""
    convs = [m for _, m in prunable_layers(r20.model) if isinstance(m, nn.Conv2d)]
    total = sum(weight_of(m).numel() for m in convs)
    assert total == 270_256
    p = U.MagnitudeProposer(**CONV_ONLY).propose(r20, Target("density", 0.5))
    assert p.masks is not None
    kept_convs = sum(int(p.masks[n].sum()) for n, m in prunable_layers(r20.model) if isinstance(m, nn.Conv2d))
    assert kept_convs == round(0.5 * total) - 1 == 135_127


def test_ties_at_the_threshold_are_pruned_with_it(r20: ProposalContext) -> None:
    """Exact zeros (e.g. weights a previous pruning zeroed) all tie at the threshold: the code prunes all
    of them, more than the ratio asks for."""
    model = r20.space.build()
    model.load_state_dict(r20.model.state_dict())
    with torch.no_grad():
        for _, m in prunable_layers(model):
            if isinstance(m, nn.Conv2d):
                weight_of(m).view(-1)[::5] = 0.0  # a fifth of every conv's weights
    ctx = dataclasses.replace(r20, model=model)
    p = U.MagnitudeProposer(**CONV_ONLY).propose(ctx, Target("ratio", 0.1))
    assert_code_masks(p.masks, model, 0.1)
    assert p.info["ranked_density"] < 0.81  # the zeros (a fifth) are all pruned, not a tenth


def test_linear_layers_keep_every_weight(r20: ProposalContext) -> None:
    for target in (Target("density", 0.1), Target("macs_ratio", 0.3)):
        p = U.MagnitudeProposer(**CONV_ONLY).propose(r20, target)
        assert p.genotype.genes["fc"] == 1.0
        assert p.masks is not None and bool((p.masks["fc"] == 1).all())
        assert "fc" not in p.info["clamped"]
    assert abs(genotype_cost(r20.space, p.genotype).macs_ratio - 0.3) <= 0.02 * 0.3
    # layers=all (the default) does prune the classifier at the same target
    default = U.MagnitudeProposer().propose(r20, Target("density", 0.1))
    assert default.genotype.genes["fc"] < 1.0


def test_default_layers_all_is_unchanged(r20: ProposalContext) -> None:
    """layers=all is the default, and both rank every conv and linear weight and keep round(d * total)."""
    a = U.MagnitudeProposer().propose(r20, Target("density", 0.1))
    b = U.MagnitudeProposer(layers="all", min_weights=1).propose(r20, Target("density", 0.1))
    assert dict(a.genotype.genes) == dict(b.genotype.genes)
    assert a.masks is not None and b.masks is not None
    layers = list(prunable_layers(r20.model))
    flat = torch.cat([weight_of(m).detach().abs().reshape(-1).double() for _, m in layers])
    keep = torch.zeros(flat.numel())
    keep[torch.sort(flat, descending=True, stable=True).indices[: round(0.1 * flat.numel())]] = 1.0
    expected = keep.split([weight_of(m).numel() for _, m in layers])
    for (name, m), mask in zip(layers, expected, strict=True):
        assert torch.equal(a.masks[name], mask.view(weight_of(m).shape)), name
        assert torch.equal(b.masks[name], a.masks[name]), name
    assert "ranked_density" not in a.info


# -- an emptied layer, end to end -------------------------------------------------------------------------------
EMPTIED = "layer2.0.conv1"


@pytest.fixture(scope="module")
def emptied(r20: ProposalContext) -> tuple[ProposalContext, Proposal]:
    model = r20.space.build()
    model.load_state_dict(r20.model.state_dict())
    with torch.no_grad():
        weight_of(dict(model.named_modules())[EMPTIED]).mul_(1e-6)
    ctx = dataclasses.replace(r20, model=model)
    return ctx, U.MagnitudeProposer(**CONV_ONLY).propose(ctx, Target("density", 0.05))


def test_a_conv_layer_can_be_emptied(emptied: tuple[ProposalContext, Proposal]) -> None:
    ctx, p = emptied
    space = ctx.space
    assert p.genotype.genes[EMPTIED] == 0.0
    assert p.masks is not None and int(p.masks[EMPTIED].sum()) == 0
    assert p.info["clamped"] == {}
    assert_code_masks(p.masks, ctx.model, 0.95)
    assert space.validate(p.genotype) == p.genotype
    model = space.build(p.genotype).eval()
    module = dict(model.named_modules())[EMPTIED]
    assert int(module.weight_mask.sum()) == 0 and bool((weight_of(module) == 0).all())
    with torch.no_grad():
        out = model(torch.randn(2, *space.input_shape))
    assert out.shape == (2, space.num_classes) and bool(torch.isfinite(out).all())
    cost = genotype_cost(space, p.genotype)
    by_layer = fvcore_macs_by_layer(space.build(), space.input_shape)
    assert cost.macs == sum(round(n * float(p.genotype.genes[name])) for name, n in by_layer.items())
    kept = {name: int(m.sum()) for name, m in p.masks.items()}
    others = sum(t.numel() for k, t in space.build().named_parameters() if k.removesuffix(".weight") not in kept)
    assert cost.params == sum(kept.values()) + others  # 0 weights counted for the emptied layer
    # the default guard still keeps one weight there and reports it
    guarded = U.MagnitudeProposer(layers="conv").propose(ctx, Target("density", 0.05))
    assert guarded.info["clamped"] == {EMPTIED: 0}
    assert guarded.masks is not None and int(guarded.masks[EMPTIED].sum()) == 1


def test_mask_helpers_and_export_cope_with_an_emptied_layer(emptied: tuple[ProposalContext, Proposal]) -> None:
    ctx, p = emptied
    space = ctx.space
    assert isinstance(space, DensitySpace) and p.masks is not None
    zero = torch.zeros_like(p.masks[EMPTIED])
    shuffled = surgery.shuffle_masks(p.masks, seed=1)
    assert torch.equal(shuffled[EMPTIED], zero)
    fresh = surgery.masked_state(space, p.masks, space.num_classes, init_seed=3)
    assert torch.equal(fresh[f"{EMPTIED}.weight"], zero) and torch.equal(fresh[f"{EMPTIED}.weight_mask"], zero)
    assert bool(torch.isfinite(fresh["layer2.0.conv2.weight"]).all())
    for state in (space.initial_state(ctx.model, p.genotype, p.masks), space.initial_state(ctx.model, p.genotype)):
        assert torch.equal(state[f"{EMPTIED}.weight"], zero)  # the proposal's masks, and magnitude masks
    by_magnitude = surgery.magnitude_masks(space, ctx.model.state_dict(), p.genotype, space.num_classes)
    assert torch.equal(by_magnitude[EMPTIED], zero)
    model = space.build(p.genotype)
    model.load_state_dict(fresh)
    exported = space.export_model(model)
    assert not any(k.endswith("weight_mask") for k in exported.state_dict())
    assert bool((weight_of(dict(exported.named_modules())[EMPTIED]) == 0).all())


# -- density genes of 0.0 ---------------------------------------------------------------------------------------
def test_density_space_accepts_zero_and_keeps_positive_densities_as_before() -> None:
    space = get_space("resnet20_density")
    assert isinstance(space, DensitySpace)
    gene = space.gene(EMPTIED)
    assert gene.bounds_text() == "[0.0, 1.0]"
    assert mask_count(0.0, 576) == 0
    assert [mask_count(d, 576) for d in (1e-9, 1e-6, 0.001, 0.5, 1.0)] == [1, 1, 1, 288, 576]
    g = space.make({**space.reference().genes, EMPTIED: 0.0})
    assert g.genes[EMPTIED] == 0.0
    assert space.achieved(g)["density"] == pytest.approx(1 - 4608 / 270_896)  # a 32x16x3x3 conv emptied
    # a seed's 0.0 does not take the log-scale sampling range to 0; a positive low seed still lowers it
    low_seed = space.make({**space.reference().genes, EMPTIED: 0.003})
    assert space.search_range(gene, [g]) == (0.01, 1.0, True)
    assert space.search_range(gene, [g, low_seed]) == (0.003, 1.0, True)
    assert space.search_range(gene, [g], min_value=0.05) == (0.05, 1.0, True)
    # the smallest genotype still keeps one weight per layer (limits are judged against it)
    assert set(space.smallest_genotype().genes.values()) == {1e-6}
    for bad in (-1e-9, 1.0001):
        with pytest.raises(PrunenasError, match=r"out of range \[0.0, 1.0\]"):
            space.make({**space.reference().genes, EMPTIED: bad})


# -- the code's rule for a density target on a net whose conv count makes 1 - d matter --------------------------
class TenNet(nn.Module):
    """Convs of 10 and 20 weights (30 in all), and a classifier unless `head` is false (then the second
    conv's 4 channels, pooled, are the logits)."""

    def __init__(self, num_classes: int = 3, head: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 5, 1, bias=False)
        self.conv2 = nn.Conv2d(5, 4, 1, bias=False)
        self.fc = nn.Linear(4, num_classes) if head else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TenSpace(Space):
    family: ClassVar[str] = "ten"
    kind: ClassVar[SpaceKind] = "density"
    proposer_kind: ClassVar[str | None] = "density"

    def _make_genes(self) -> list[Gene]:
        return [Gene(name, "float", 0.0, 1.0, 1.0) for name, _ in prunable_layers(self._net())]

    def _net(self, num_classes: int = 4) -> TenNet:
        return TenNet(num_classes, head=bool(self.config.get("head", True)))

    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        return self._net(num_classes)


@pytest.mark.parametrize("head", [True, False], ids=["with_linear", "convs_only"])
def test_density_target_is_the_codes_percent(head: bool) -> None:
    """density 0.9 is --percent 0.1: int(30 * 0.1) = 3, so 4 weights go, where 1 - 0.9 (0.09999999999999998)
    would give index 2 and prune one weight fewer (also on a model without a Linear layer)."""
    space = TenSpace("ten", {"input_shape": [2, 4, 4], "num_classes": 4, "head": head})
    torch.manual_seed(0)
    model = space.build()
    ctx = ProposalContext(space=space, model=model, trained=True, device=torch.device("cpu"))
    for target in (Target("density", 0.9), Target("ratio", 0.1)):
        p = U.MagnitudeProposer(**CONV_ONLY).propose(ctx, target)
        assert_code_masks(p.masks, model, 0.1)
        assert p.masks is not None and int(p.masks["conv1"].sum() + p.masks["conv2"].sum()) == 26
        assert space.validate(p.genotype) == p.genotype


# -- options ----------------------------------------------------------------------------------------------------
def test_layers_option_is_listed_and_checked(r20: ProposalContext) -> None:
    for name in ("magnitude", "magnitude-init", "snip", "grasp", "graspabs", "random"):
        assert get_proposer(name, kind="density").describe()["options"]["layers"] == "all"
    for name in ("synflow", "erk", "uniform"):
        assert "layers" not in get_proposer(name, kind="density").options
    assert U.MagnitudeProposer(min_weights=0).settings["min_weights"] == 0
    for bad in ("dense", "Conv", "linear"):
        with pytest.raises(PrunenasError, match=r"option layers='\w+' must be all .* or conv") as info:
            U.MagnitudeProposer(layers=bad)
        assert "\n" not in str(info.value)
    with pytest.raises(PrunenasError, match="option layers"):
        U.MagnitudeProposer(layers=3)
    with pytest.raises(PrunenasError, match=r"min_weights=-1 must be an integer >= 0"):
        U.MagnitudeProposer(min_weights=-1)
    with pytest.raises(PrunenasError, match="unknown option"):
        U.SynflowProposer(layers="conv")
    half = U.MagnitudeProposer(**CONV_ONLY).propose(r20, Target("ratio", 0.5))
    assert math.isclose(half.info["ranked_density"], 0.5, abs_tol=1e-5)
