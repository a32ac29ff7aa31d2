"""The CIFAR PreResNet and DenseNet families: network slimming's PreResNet-164 and DenseNet-40 (with their
channel selections) and the bases of the Rethinking paper's weight-level experiments (PreResNet-110,
DenseNet-BC-100). They build and run, count as the papers do, and pruned and slimming-style genotypes
build, run, cost less and inherit weights exactly."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from prunenas.cost import fast_macs, genotype_cost
from prunenas.errors import PrunenasError, SpaceError
from prunenas.genotype import GeneValue
from prunenas.proposers.base import Target, get_proposer
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.spaces import Space, get_space
from prunenas.spaces.cifar_densenet import CifarDenseNetSpace
from prunenas.spaces.cifar_preresnet import ChannelSelection, CifarPreResNetSpace
from prunenas.spaces.density import DensitySpace
from prunenas.surgery import channel_scores

CHANNEL_SPACES = ["preresnet164_channels", "densenet40_channels", "preresnet110_channels", "densenet_bc100_channels"]
DENSITY_SPACES = ["preresnet110_density", "densenet_bc100_density"]
SLIMMING_SPACES = ["preresnet164_channels", "densenet40_channels"]  # the ones with channel selections

# Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming", Table 1 (CIFAR-10
# baselines): (parameters, FLOPs). The paper does not define its FLOPs; twice the conv + linear multiply-adds
# (prunenas's MACs) comes to 0.6-0.75% under both figures, which fits FLOPs that count a multiply-add as two
# operations plus a few element-wise ones (one per BN element would close the gap to 0.1-0.2%). The FLOPs are
# therefore compared within 1%, the parameters within 0.5%.
SLIMMING_TABLE1 = {"resnet164": (1.70e6, 4.99e8), "densenet40": (1.02e6, 5.33e8)}
# The network-slimming PyTorch code's README (github Eric-mingjie/network-slimming, "Results", CIFAR-10
# baselines), whose models the Rethinking repository reuses: ResNet-164 1.71M and DenseNet-40 1.07M
# parameters. They count each channel selection's `indexes` vector (one entry per BN channel) as
# parameters; here the selection is a buffer.
SLIMMING_CODE_README = {"preresnet164_channels": 1.71e6, "densenet40_channels": 1.07e6}
# The weight-level bases, from the architectures' own papers, given to two significant digits: the 110-layer
# CIFAR ResNet 1.7M (He et al. 2016, "Deep Residual Learning", Table 6; pre-activation and 1x1 projection
# shortcuts add 0.15%) and DenseNet-BC (L=100, k=12) 0.8M (Huang et al. 2017, Table 2).
ARCH_PAPERS = {"preresnet110_channels": 1.7e6, "densenet_bc100_channels": 0.8e6}
# Exact counts of the models as built (CIFAR-10 head): (MACs, params).
EXACT = {
    "preresnet164_channels": (247_646_720, 1_703_258),
    "densenet40_channels": (282_917_328, 1_059_298),
    "preresnet110_channels": (253_149_824, 1_730_522),
    "densenet_bc100_channels": (287_929_692, 769_162),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small batches: one intra-op thread is about as fast and does not fight other processes for the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def forward(model: nn.Module, batch: int = 2) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, 3, 32, 32))


def rel(value: float, paper: float) -> float:
    return abs(value - paper) / paper


def selections(space: Space) -> int:
    """Sum of the channel selections' widths: what the slimming code's `indexes` parameters add."""
    return sum(int(g.reference) for g in space.genes if g.name.endswith("_select"))


# -- the reference models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CHANNEL_SPACES + DENSITY_SPACES)
def test_reference_builds_and_runs_with_10_and_100_classes(name: str) -> None:
    space = get_space(name)
    for classes in (10, 100):
        out = forward(space.build(num_classes=classes))
        assert out.shape == (2, classes) and torch.isfinite(out).all()


def test_preresnet164_matches_network_slimming_table1() -> None:
    space = get_space("preresnet164_channels")
    cost = genotype_cost(space, space.reference(), num_classes=10)
    params, flops = SLIMMING_TABLE1["resnet164"]
    assert rel(cost.params, params) < 0.005, cost.params
    assert rel(2 * cost.macs, flops) < 0.01, cost.macs


def test_densenet40_matches_network_slimming_table1_with_the_papers_stem() -> None:
    """The paper's DenseNet-40 (Torch, after Huang et al.) starts with a 16-channel conv; the PyTorch code
    that the Rethinking paper ran (and densenet40_channels) with 24 = 2k, 3.9% more parameters."""
    paper = get_space("densenet40_channels", overrides={"stem_width": 16})
    cost = genotype_cost(paper, paper.reference(), num_classes=10)
    params, flops = SLIMMING_TABLE1["densenet40"]
    assert rel(cost.params, params) < 0.005, cost.params
    assert rel(2 * cost.macs, flops) < 0.01, cost.macs
    shipped = get_space("densenet40_channels")
    assert rel(genotype_cost(shipped, shipped.reference(), num_classes=10).params, params) > 0.03


@pytest.mark.parametrize("name", SLIMMING_SPACES)
def test_the_slimming_codes_parameter_counts(name: str) -> None:
    space = get_space(name)
    cost = genotype_cost(space, space.reference(), num_classes=10)
    assert rel(cost.params + selections(space), SLIMMING_CODE_README[name]) < 0.005, cost.params


@pytest.mark.parametrize("name", ["preresnet110_channels", "densenet_bc100_channels"])
def test_weight_level_bases_match_their_papers(name: str) -> None:
    space = get_space(name)
    params = genotype_cost(space, space.reference(), num_classes=10).params
    assert round(params, -5) == ARCH_PAPERS[name], params  # the paper's two significant digits


@pytest.mark.parametrize("name", CHANNEL_SPACES)
def test_exact_counts(name: str) -> None:
    space = get_space(name)
    cost = genotype_cost(space, space.reference(), num_classes=10)
    assert (cost.macs, cost.params) == EXACT[name]
    assert fast_macs(space, space.reference()) == cost.macs  # analytic_macs agrees with the traced count


@pytest.mark.parametrize(
    ("name", "base"),
    [("preresnet110_density", "preresnet110_channels"), ("densenet_bc100_density", "densenet_bc100_channels")],
)
def test_density_spaces_cover_every_conv_and_the_classifier(name: str, base: str) -> None:
    space, channels = get_space(name), get_space(base)
    model = channels.build()
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert [g.name for g in space.genes] == layers and layers[-1] == "fc"
    dense = genotype_cost(space, space.reference())
    assert (dense.macs, dense.params) == EXACT[base]
    half = genotype_cost(space, space.make({g.name: 0.5 for g in space.genes}))
    assert abs(half.macs_ratio - 0.5) < 0.01


# -- genes ------------------------------------------------------------------------------------------------------
def slimming_cfg_preresnet(n: int) -> list[GeneValue]:
    """The slimming code's default cfg of a bottleneck PreResNet: per block (bn1, bn2, bn3) channels, then the
    final BN's."""
    cfg: list[GeneValue] = []
    stream = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            cfg += [stream, planes, planes]
            stream = 4 * planes
    return [*cfg, stream]


def slimming_cfg_densenet(n: int, growth: int = 12, stem: int = 24) -> list[GeneValue]:
    """The slimming code's default cfg of a DenseNet: every BN's channels (layers, transitions, final)."""
    cfg: list[GeneValue] = []
    planes = stem
    for block in range(3):
        for _ in range(n):
            cfg.append(planes)
            planes += growth
        if block < 2:
            cfg.append(planes)
    return [*cfg, planes]


def test_genes_are_the_slimming_cfg_in_order() -> None:
    resnet = get_space("preresnet164_channels")
    assert len(resnet.genes) == 3 * 18 * 3 + 1 == 163
    assert resnet.make(slimming_cfg_preresnet(18)) == resnet.reference()
    dense = get_space("densenet40_channels")
    assert len(dense.genes) == 3 * 12 + 3 == 39
    assert dense.make(slimming_cfg_densenet(12)) == dense.reference()


def test_structured_genes() -> None:
    """Conv widths map to their convs; a space of selections only maps them to the selection modules."""
    for name, count in (("preresnet164_channels", 108), ("preresnet110_channels", 54), ("densenet_bc100_channels", 48)):
        space = get_space(name)
        model = space.build()
        modules = dict(model.named_modules())
        structured = space.structured_genes()
        assert len(structured) == count and not any(g.endswith("_select") for g in structured)
        for gene, path in structured.items():
            conv = modules[path]
            assert isinstance(conv, nn.Conv2d) and conv.out_channels == space.gene(gene).reference
    dense = get_space("densenet40_channels")
    modules = dict(dense.build().named_modules())
    structured = dense.structured_genes()
    assert list(structured) == [g.name for g in dense.genes]
    assert all(isinstance(modules[p], ChannelSelection) for p in structured.values())
    for name in CHANNEL_SPACES:  # every gene keeps channels of one BN, the one network slimming ranks
        space = get_space(name)
        assert isinstance(space, CifarPreResNetSpace | CifarDenseNetSpace)
        modules = dict(space.build().named_modules())
        bns = space.gene_batchnorms()
        assert list(bns) == [g.name for g in space.genes]
        assert all(modules[bns[g.name]].num_features == g.reference for g in space.genes)


def test_scores_on_the_reference() -> None:
    """Torch-Pruning scores one value per channel of every conv gene; a space of selections gets a clear error."""
    example = torch.zeros(1, 3, 32, 32)
    for name in ("preresnet110_channels", "densenet_bc100_channels"):
        space = get_space(name)
        scores = channel_scores(space.build(), space.structured_genes(), "l1", example, what=name)
        assert {g: s.numel() for g, s in scores.items()} == {g: space.gene(g).reference for g in scores}
    dense = get_space("densenet40_channels")
    with pytest.raises(PrunenasError, match="no score"):
        channel_scores(dense.build(), dense.structured_genes(), "l1", example, what=dense.name)


# -- pruned genotypes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CHANNEL_SPACES)
def test_uniform_half_macs_builds_runs_and_costs_less(name: str) -> None:
    space = get_space(name)
    proposal = run_proposer(get_proposer("uniform", "channels"), make_context(space), Target("macs_ratio", 0.5))
    genotype = proposal.genotype
    cost = genotype_cost(space, genotype)
    assert cost.macs < cost.reference_macs and abs(cost.macs_ratio - 0.5) <= 0.01
    assert fast_macs(space, genotype) == cost.macs
    out = forward(space.build(genotype))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def slimming_genotype(space: Space, seed: int) -> dict[str, int]:
    """Random keep counts per gene (what one global |gamma| threshold leaves), at least one channel each."""
    rng = random.Random(seed)
    return {g.name: rng.randint(1, int(g.reference)) for g in space.genes}


@pytest.mark.parametrize("name", SLIMMING_SPACES)
def test_slimming_genotype_builds_runs_and_inherits_exactly(name: str) -> None:
    """With the dropped channels' BN scale and shift at zero (network slimming's pre-processing), the pruned
    model with inherited weights computes exactly what the reference computes."""
    space = get_space(name)
    assert isinstance(space, CifarPreResNetSpace | CifarDenseNetSpace)
    genotype = space.make(slimming_genotype(space, 3))
    assert genotype_cost(space, genotype).macs < genotype_cost(space, space.reference()).macs
    torch.manual_seed(0)
    reference = space.build()
    modules = dict(reference.named_modules())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.1, 1.0, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
                mean, var = m.running_mean, m.running_var
                assert mean is not None and var is not None
                mean.uniform_(-0.1, 0.1, generator=gen)
                var.uniform_(0.5, 1.5, generator=gen)
        for gene, link in space.links.items():
            bn = modules[link.bn]
            assert isinstance(bn, nn.BatchNorm2d)
            dropped = torch.randperm(bn.num_features, generator=gen)[int(genotype.genes[gene]) :]
            bn.weight[dropped] = 0.0
            bn.bias[dropped] = 0.0
    state = space.initial_state(reference, genotype)
    pruned = space.build(genotype)
    pruned.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    reference.eval()
    pruned.eval()
    with torch.no_grad():
        want, got = reference(x), pruned(x)
    assert torch.allclose(want, got, atol=1e-4, rtol=1e-4), (want - got).abs().max()
    kept = [m for m in pruned.modules() if isinstance(m, ChannelSelection) and m.index.numel() < m.channels]
    assert kept and all(bool((m.index[1:] > m.index[:-1]).all()) for m in kept)  # chosen channels, in order


def test_inheriting_a_wider_genotype_is_refused() -> None:
    space = CifarPreResNetSpace("wide", {"depth": 11, "max_width_multiplier": 2.0})
    wider = space.make({**space.reference().genes, "stage1_block1_conv1": 20})
    with pytest.raises(PrunenasError, match="wider"):
        space.initial_state(space.build(), wider)


# -- settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "config", "match"),
    [
        (CifarPreResNetSpace, {"depth": 32, "block": "bottleneck"}, "9n\\+2"),
        (CifarPreResNetSpace, {"depth": 29, "block": "basic"}, "6n\\+2"),
        (CifarPreResNetSpace, {"block": "wide"}, "block must be"),
        (CifarPreResNetSpace, {"selection": "maybe"}, "selection must be true or false"),
        (CifarPreResNetSpace, {"init": "kaiming"}, "init must be one of"),
        (CifarDenseNetSpace, {"depth": 41}, "3n\\+4"),
        (CifarDenseNetSpace, {"depth": 43, "bottleneck": True}, "6n\\+4"),
        (CifarDenseNetSpace, {"compression": 1.5}, "compression"),
        (CifarDenseNetSpace, {"selection": False}, "no conv whose width is a gene"),
        (CifarDenseNetSpace, {"growth": 12}, "unknown \\[model\\] setting"),
    ],
)
def test_bad_settings_raise_space_error(family: type[Space], config: dict[str, object], match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        family("bad", config)


def test_init_schemes() -> None:
    """Under init = "rethinking" BN scales start as in the Rethinking code: 0.5 in its network-slimming models
    (those with channel selections), 1 in its weight-level ones. The protocols' schemes reach the density
    spaces' bases."""

    def bn_weights(model: nn.Module) -> set[float]:
        return {float(v) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for v in m.weight.detach().unique()}

    assert bn_weights(get_space("preresnet164_channels").build()) == {0.5}
    assert bn_weights(get_space("densenet40_channels").build()) == {0.5}
    assert bn_weights(get_space("preresnet110_channels").build()) == {1.0}
    assert bn_weights(get_space("densenet40_channels", overrides={"init": "prunenas"}).build()) == {1.0}
    for name in DENSITY_SPACES:
        lth = get_space(name, overrides={"init": "open_lth", "rescale": False})
        assert isinstance(lth, DensitySpace) and lth.base.config["init"] == "open_lth"
        assert len(bn_weights(lth.build())) > 2  # U(0, 1)


def test_the_weight_level_codes_own_models_are_one_setting_away() -> None:
    """The Rethinking weight-level code builds "preresnet --depth 110" with bottlenecks ((110 - 2) // 9 = 12 per
    stage) and "densenet --depth 100 --compressionRate 2" without them (32 basic layers per block)."""
    code_resnet = get_space("preresnet110_channels", overrides={"block": "bottleneck"})
    assert len(code_resnet.genes) == 3 * 12 * 2
    assert genotype_cost(code_resnet, code_resnet.reference()).params == 1_146_842
    code_dense = get_space("densenet_bc100_channels", overrides={"bottleneck": False, "selection": True})
    assert len(code_dense.genes) == 3 * 32 + 3


@pytest.mark.parametrize("name", ["densenet40_channels", "preresnet164_channels"])
def test_slimming_ranks_every_gene_by_its_batchnorm_scales(name: str) -> None:
    """Network slimming on the selection families: one global threshold over the |gamma| of every gene's
    BatchNorm (selections included); the genes whose scales were made small lose the most channels."""
    from prunenas.proposers.base import ProposalContext

    space = get_space(name)
    torch.manual_seed(0)
    model = space.build()
    bns = space.gene_batchnorms()  # type: ignore[attr-defined]
    modules = dict(model.named_modules())
    weak = sorted(bns)[::3]
    with torch.no_grad():
        for gene, path in bns.items():
            modules[path].weight.copy_(torch.rand_like(modules[path].weight) + (0.0 if gene in weak else 1.0))
    ctx = ProposalContext(space=space, model=model, trained=True, device=torch.device("cpu"))
    proposer = get_proposer("slimming", "channels", sparsity_epochs=0)
    genotype = proposer.propose(ctx, Target("ratio", 0.3)).genotype  # trained weights given: no data needed
    ref = space.reference().genes
    kept = {g: int(genotype.genes[g]) / int(ref[g]) for g in bns}
    assert max(kept[g] for g in weak) < min(kept[g] for g in bns if g not in weak)
    selections = [g for g in bns if g.endswith("_select")]  # the channel-selection genes
    assert selections and any(kept[g] < 1 for g in selections)
