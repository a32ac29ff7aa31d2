"""Cost: MACs (conv + linear multiply-adds, batch 1) and params, checked against the papers (GUIDE 3/4)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from prunenas.cost import Cost, count_params, genotype_cost
from prunenas.errors import GenotypeError
from prunenas.genotype import Genotype
from prunenas.masks import prunable_layers
from prunenas.spaces import get_space, shipped_genotypes

# GUIDE section 4: Li et al.'s cfg, one inner width per BasicBlock (the first conv of the block).
CFG_56_A = [14, 14, 14, 14, 14, 14, 14, 16, 14, 32, 28, 28, 28, 28, 28, 28, 28, 28, 64, 57, 57, 57, 57, 57, 57, 57, 64]
CFG_56_B = [6, 6, 6, 6, 6, 6, 6, 16, 16, 32, 22, 22, 22, 22, 22, 22, 32, 22, 64, 57, 57, 57, 57, 57, 57, 57, 64]
CFG_VGG16_A = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]

SHIPPED = ["li2017_resnet56_a", "li2017_resnet56_b", "li2017_resnet110_a", "li2017_resnet110_b", "li2017_vgg16_a"]


def within(value: int, paper_millions: float, rel: float = 0.005) -> bool:
    return abs(value - paper_millions * 1e6) <= rel * paper_millions * 1e6


@pytest.fixture(scope="module")
def shipped_cost() -> dict[str, Cost]:
    """Cost of every shipped Li et al. genotype (computed once: ResNet-110 through fvcore is slow-ish)."""
    out = {}
    for name in SHIPPED:
        g = Genotype.load(shipped_genotypes()[name])
        out[name] = genotype_cost(get_space(g.space), g)
    return out


# -- the papers' numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("space", "overrides", "paper"),
    [
        pytest.param("resnet56_channels", None, 125.5, id="resnet56-A"),
        pytest.param("resnet56_channels", {"shortcut": "B"}, 125.75, id="resnet56-B"),
        pytest.param("resnet110_channels", None, 252.9, id="resnet110"),
        pytest.param("resnet20_channels", {"shortcut": "B"}, 40.8, id="resnet20-B"),
        pytest.param("vgg16_channels", None, 313.5, id="vgg16"),
    ],
)
def test_reference_macs_match_the_papers(space: str, overrides: dict[str, str] | None, paper: float) -> None:
    s = get_space(space, overrides=overrides)
    cost = genotype_cost(s, s.reference())
    assert isinstance(cost.macs, int)
    assert within(cost.macs, paper), cost.macs
    assert cost.macs == cost.reference_macs
    assert cost.macs_ratio == 1.0


@pytest.mark.parametrize(
    ("name", "paper"),
    [
        ("li2017_resnet56_a", 112.4),
        ("li2017_resnet56_b", 90.9),
        ("li2017_resnet110_a", 212.8),
        ("li2017_resnet110_b", 155.1),
        ("li2017_vgg16_a", 206.3),
    ],
)
def test_shipped_genotype_macs_match_li2017(shipped_cost: dict[str, Cost], name: str, paper: float) -> None:
    cost = shipped_cost[name]
    assert within(cost.macs, paper), cost.macs
    assert cost.macs < cost.reference_macs
    assert cost.params < cost.reference_params


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_reduction_matches_the_paper_figure_in_provenance(shipped_cost: dict[str, Cost], name: str) -> None:
    g = Genotype.load(shipped_genotypes()[name])
    paper = float(str(g.provenance["paper_macs_reduction"]).rstrip("%"))
    assert abs(100 * (1 - shipped_cost[name].macs_ratio) - paper) <= 0.5


def test_resnet56_b_exact_values(shipped_cost: dict[str, Cost]) -> None:
    # Pinned from this implementation (90.9M in the paper): a change here changes every stored cost.
    cost = shipped_cost["li2017_resnet56_b"]
    assert (cost.macs, cost.reference_macs) == (90907264, 125485696)
    assert (cost.params, cost.reference_params) == (735712, 853018)


# -- the shipped files are the GUIDE's cfgs --------------------------------------------------------------
@pytest.mark.parametrize(("name", "cfg"), [("li2017_resnet56_a", CFG_56_A), ("li2017_resnet56_b", CFG_56_B)])
def test_shipped_resnet56_inner_widths_are_the_li2017_cfg(name: str, cfg: list[int]) -> None:
    g = Genotype.load(shipped_genotypes()[name])
    space = get_space("resnet56_channels")
    assert g.space == "resnet56_channels"
    inner = [v for k, v in g.genes.items() if "_block" in k]
    assert inner == cfg
    assert [g.genes[f"stage{s}_width"] for s in (1, 2, 3)] == [16, 32, 64]
    assert list(g.genes) == [gene.name for gene in space.genes]  # network order
    assert Genotype(space.name, space.inner_widths(cfg)) == g


def test_shipped_vgg16_a_is_the_li2017_cfg() -> None:
    g = Genotype.load(shipped_genotypes()["li2017_vgg16_a"])
    space = get_space("vgg16_channels")
    assert g.space == "vgg16_channels"
    assert list(g.genes.values()) == [c for c in CFG_VGG16_A if c != "M"]
    assert space.cfg_of(g.genes) == CFG_VGG16_A


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_have_provenance(name: str) -> None:
    g = Genotype.load(shipped_genotypes()[name])
    assert g.provenance["proposer"]
    assert "Li et al. 2017" in g.provenance["source"]
    assert get_space(g.space).validate(g) == g


# -- independent cross-check with torch's own flop counter ---------------------------------------------
CONV_LINEAR_OPS = {"aten.convolution", "aten.addmm", "aten.mm"}


@pytest.mark.parametrize("name", ["resnet20_channels", "vgg16_channels"])
def test_torch_flop_counter_agrees(name: str) -> None:
    space = get_space(name)
    model = space.build().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *space.input_shape))
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert "aten.convolution" in counts
    torch_macs = sum(n for op, n in counts.items() if op in CONV_LINEAR_OPS) // 2  # it reports 2 flops per MAC
    assert torch_macs == genotype_cost(space, space.reference()).macs


# -- params, density weighting, num_classes -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet20_channels", "resnet56_stages", "vgg16_channels"])
def test_channel_params_are_all_parameters(name: str) -> None:
    space = get_space(name)
    g = space.random_genotype(5)
    model = space.build(g)
    cost = genotype_cost(space, g)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.params == count_params(model)
    assert cost.reference_params == sum(p.numel() for p in space.build().parameters())


def test_density_cost_halves_at_half_density() -> None:
    space = get_space("resnet20_density")
    half = space.make(dict.fromkeys((g.name for g in space.genes), 0.5))
    cost = genotype_cost(space, half)
    assert abs(cost.macs - cost.reference_macs / 2) <= 1
    # Init draws an exact 0.0 about once per 2**24 weights: seed so that a kept weight is never zero here.
    torch.manual_seed(0)
    model = space.build(half)
    prunable = {name for name, _ in prunable_layers(model)}
    nonzero = sum(int((m.weight != 0).sum()) for _, m in prunable_layers(model))
    other = sum(
        p.numel()
        for mod_name, m in model.named_modules()
        for p_name, p in m.named_parameters(recurse=False)
        if not (mod_name in prunable and p_name == "weight")
    )
    assert cost.params == nonzero + other
    dense = sum(p.numel() for p in model.parameters())
    assert cost.reference_params == dense
    # the reference of the density space is its dense base (ResNet-20 with shortcut B)
    base = get_space("resnet20_channels", overrides={"shortcut": "B"})
    assert cost.reference_macs == genotype_cost(base, base.reference()).macs


def test_density_cost_weights_each_layer() -> None:
    space = get_space("resnet20_density")
    ref = genotype_cost(space, space.reference())
    genes = dict(space.reference().genes)
    genes["fc"] = 0.1  # 64 x 10 linear: 640 MACs, 640 weights
    cost = genotype_cost(space, space.make(genes))
    assert ref.macs - cost.macs == 640 - 64
    assert ref.params - cost.params == 640 - 64


def test_num_classes_changes_only_the_classifier() -> None:
    space = get_space("resnet56_channels")
    g = Genotype.load(shipped_genotypes()["li2017_resnet56_b"])
    c10 = genotype_cost(space, g)
    c100 = genotype_cost(space, g, num_classes=100)
    assert c100.macs - c10.macs == 64 * 90
    assert c100.params - c10.params == 64 * 90 + 90
    assert c100.reference_macs - c10.reference_macs == 64 * 90


def test_cost_to_dict_and_ratios(shipped_cost: dict[str, Cost]) -> None:
    cost = shipped_cost["li2017_resnet56_b"]
    d = cost.to_dict()
    assert set(d) == {"macs", "params", "reference_macs", "reference_params", "macs_ratio", "params_ratio"}
    assert d["macs_ratio"] == pytest.approx(cost.macs / cost.reference_macs)
    assert d["params_ratio"] == pytest.approx(cost.params / cost.reference_params)
    assert 0.72 < d["macs_ratio"] < 0.73


def test_cost_validates_the_genotype() -> None:
    space = get_space("resnet20_channels")
    bad = Genotype(space.name, {**space.reference().genes, "stage1_block1": 99})
    with pytest.raises(GenotypeError, match="stage1_block1"):
        genotype_cost(space, bad)


def test_cost_is_the_same_for_equal_genotypes() -> None:
    space = get_space("resnet20_channels")
    g = space.random_genotype(11)
    assert genotype_cost(space, g) == genotype_cost(space, g.with_provenance(proposer="other"))


def test_reference_costs_are_cached_on_disk_and_keyed_by_the_space(tmp_path, monkeypatch):
    from prunenas.cost import reference_cost

    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(tmp_path))
    space = get_space("resnet20_channels", overrides={"widths": [16, 32, 48]})
    reference_cost.cache_clear()
    first = reference_cost(space, 10)
    files = list(tmp_path.glob("resnet20_channels-*-c10.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["macs"] == first[0]
    # the next process reads the file instead of tracing the model: prove it by planting another number
    files[0].write_text(json.dumps({"macs": 123, "params": 456}))
    reference_cost.cache_clear()
    assert reference_cost(space, 10) == (123, 456)
    # other settings, other file; a damaged file is counted again
    other = get_space("resnet20_channels", overrides={"widths": [16, 32, 40]})
    assert reference_cost(other, 10) != (123, 456) and len(list(tmp_path.glob("*.json"))) == 2
    files[0].write_text("{")
    reference_cost.cache_clear()
    assert reference_cost(space, 10) == first
    monkeypatch.setenv("PRUNENAS_COST_CACHE", "off")
    reference_cost.cache_clear()
    assert reference_cost(space, 10) == first


def test_space_listing_is_cached_and_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PRUNENAS_COST_CACHE": str(tmp_path)}
    code = "import sys; from prunenas.cli import main; main(['spaces', '--json']); print('torch' in sys.modules)"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.strip().endswith("True") and second.stdout.strip().endswith("False")
    rows = json.loads(second.stdout.strip().rsplit("\n", 1)[0])
    assert rows == json.loads(first.stdout.strip().rsplit("\n", 1)[0])
    assert next(r for r in rows if r["space"] == "resnet56_channels")["reference_macs"] == 125_485_696
