"""Contract tests over every registered space, plus the families' specifics and the TOML registry."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from prunenas.cost import analytic_macs_by_layer, fvcore_macs_by_layer
from prunenas.errors import GenotypeError, PrunenasError, SpaceError
from prunenas.genotype import Genotype
from prunenas.masks import apply_masks, densities, masked_layers, prunable_layers
from prunenas.spaces import Gene, Space, get_space, shipped_genotypes, space_names
from prunenas.spaces.cifar_resnet import ShortcutA

REPO = Path(__file__).resolve().parents[1]
SPACES = space_names()
DENSITY_SPACES = [n for n in SPACES if get_space(n).kind == "density"]
SEEDS = [0, 1, 2]


def forward(model: nn.Module, batch: int = 2) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(batch, 3, 32, 32))


def test_builtin_spaces_are_registered() -> None:
    expected = {
        "resnet20_channels",
        "resnet32_channels",
        "resnet56_channels",
        "resnet110_channels",
        "resnet56_stages",
        "resnet20_density",
        "resnet56_density",
        "vgg16_channels",
        "vgg19_channels",
        "vgg16_density",
    }
    assert expected <= set(SPACES)
    assert len(SPACES) == len(set(SPACES))


# -- the contract, for every space ------------------------------------------------------------------
@pytest.mark.parametrize("name", SPACES)
def test_reference_validates_and_builds(name: str) -> None:
    space = get_space(name)
    assert isinstance(space, Space)
    assert space.name == name
    assert get_space(name) is space  # cached
    ref = space.reference()
    assert ref.space == name
    assert list(ref.genes) == [g.name for g in space.genes]
    assert space.validate(ref) == ref
    for gene in space.genes:
        assert gene.check(gene.reference) == gene.reference
    model = space.build(ref)
    assert isinstance(model, nn.Module)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", SPACES)
def test_forward_shapes(name: str) -> None:
    space = get_space(name)
    assert forward(space.build()).shape == (2, 10)
    assert forward(space.build(num_classes=100)).shape == (2, 100)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", SPACES)
def test_random_genotypes_build_and_run(name: str, seed: int) -> None:
    space = get_space(name)
    g = space.random_genotype(seed)
    assert g == space.random_genotype(seed)  # deterministic
    assert g.provenance["seed"] == seed
    assert space.validate(g) == g
    out = forward(space.build(g))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SPACES)
def test_random_genotypes_differ_by_seed(name: str) -> None:
    space = get_space(name)
    assert len({space.random_genotype(s).key for s in SEEDS}) == len(SEEDS)


@pytest.mark.parametrize("name", SPACES)
def test_fvcore_macs_equal_independent_count_layer_by_layer(name: str) -> None:
    space = get_space(name)
    for genotype in (space.reference(), space.random_genotype(0)):
        model = space.build(genotype)
        fv = fvcore_macs_by_layer(model, space.input_shape)
        an = analytic_macs_by_layer(model, space.input_shape)
        assert list(fv) == [n for n, _ in prunable_layers(model)]
        assert fv == an
        assert all(v > 0 for v in an.values())


def test_make_from_a_list_and_wrong_length() -> None:
    space = get_space("resnet20_channels")
    g = space.make(space.reference().values(), proposer="test")
    assert g == space.reference()
    assert g.provenance["proposer"] == "test"
    with pytest.raises(GenotypeError, match="12 genes"):
        space.make([16] * 3)


# -- validation errors name the gene, the value and the range --------------------------------------------
def bad_values(gene: Gene) -> list[tuple[float, str]]:
    """(bad value, text the error must contain) for a gene of any kind."""
    if gene.kind == "int":
        return [(0, "out of range"), (int(gene.high) + 1, "out of range"), (2.5, "integer")]
    low = gene.low if gene.low_open else gene.low - 0.125
    return [(low, "out of range"), (gene.high + 0.5, "out of range")]


@pytest.mark.parametrize("name", SPACES)
def test_out_of_range_values_name_gene_value_and_range(name: str) -> None:
    space = get_space(name)
    ref = dict(space.reference().genes)
    for gene in (space.genes[0], space.genes[-1]):
        for value, what in bad_values(gene):
            genes = {**ref, gene.name: value}
            with pytest.raises(GenotypeError) as info:
                space.validate(Genotype(name, genes))
            msg = str(info.value)
            assert f"'{gene.name}'" in msg
            assert repr(value) in msg
            assert gene.bounds_text() in msg
            assert what in msg
            with pytest.raises(GenotypeError):
                space.build(Genotype(name, genes))


def test_width_zero_message() -> None:
    space = get_space("resnet56_channels")
    genes = {**space.reference().genes, "stage2_block3": 0}
    with pytest.raises(GenotypeError) as info:
        space.validate(Genotype("resnet56_channels", genes))
    assert str(info.value).startswith("gene 'stage2_block3' = 0 is out of range [1, 32]")


@pytest.mark.parametrize("name", DENSITY_SPACES)
def test_density_outside_zero_to_one_rejected(name: str) -> None:
    """Densities live in [0, 1]: 0 empties a layer (the Rethinking weight-level code can), above 1 or below 0
    is refused naming the gene and the range."""
    space = get_space(name)
    gene = space.genes[1]
    assert gene.bounds_text() == "[0.0, 1.0]"
    for value in (-1e-9, -0.5, 1.0001, 2):
        genes = {**space.reference().genes, gene.name: value}
        with pytest.raises(GenotypeError) as info:
            space.validate(Genotype(name, genes))
        assert f"'{gene.name}'" in str(info.value)
        assert "[0.0, 1.0]" in str(info.value)
    for value in (0, 0.0, 1e-6):
        ok = space.validate(Genotype(name, {**space.reference().genes, gene.name: value}))
        assert ok.genes[gene.name] == value


@pytest.mark.parametrize("name", SPACES)
def test_unknown_gene_named(name: str) -> None:
    space = get_space(name)
    genes = {**space.reference().genes, "bogus_gene": 1}
    with pytest.raises(GenotypeError) as info:
        space.validate(Genotype(name, genes))
    msg = str(info.value)
    assert "bogus_gene" in msg
    assert name in msg
    assert space.genes[0].name in msg  # lists valid genes


@pytest.mark.parametrize("name", SPACES)
def test_missing_gene_named(name: str) -> None:
    space = get_space(name)
    genes = dict(space.reference().genes)
    last = space.genes[-1].name
    del genes[last]
    with pytest.raises(GenotypeError) as info:
        space.validate(Genotype(name, genes))
    assert last in str(info.value)
    assert "missing" in str(info.value)


@pytest.mark.parametrize("name", SPACES)
def test_genotype_of_another_space_rejected(name: str) -> None:
    space = get_space(name)
    other = next(n for n in SPACES if n != name)
    with pytest.raises(GenotypeError) as info:
        space.validate(Genotype(other, dict(space.reference().genes)))
    assert repr(other) in str(info.value)
    assert repr(name) in str(info.value)


def test_validate_normalises_values_and_order() -> None:
    space = get_space("resnet20_channels")
    ref = space.reference()
    as_floats = {k: float(v) for k, v in reversed(list(ref.genes.items()))}
    g = space.validate(Genotype(space.name, as_floats, {"proposer": "x"}))
    assert list(g.genes) == list(ref.genes)
    assert all(type(v) is int for v in g.values())
    assert g.key == ref.key
    assert g.provenance["proposer"] == "x"
    dens = get_space("resnet20_density")
    d = dens.validate(Genotype(dens.name, dict.fromkeys(dens.reference().genes, 1)))
    assert all(type(v) is float for v in d.values())
    assert d.key == dens.reference().key


# -- density spaces -----------------------------------------------------------------------------------------
# Kaiming-normal init draws an exact 0.0 about once per 2**24 weights, so a kept weight can be zero:
# measured densities are compared "to within one weight".
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", DENSITY_SPACES)
def test_measured_density_equals_genes(name: str, seed: int) -> None:
    space = get_space(name)
    g = space.random_genotype(seed)
    torch.manual_seed(seed)  # init and masks are random: seed right before building, for a repeatable check
    model = space.build(g)
    measured = densities(model)
    assert list(measured) == list(g.genes)
    masks = {n: mask for n, _, mask in masked_layers(model)}
    assert list(masks) == list(g.genes)
    for layer, module in prunable_layers(model):
        numel = module.weight.numel()
        want = g.genes[layer] * numel
        assert abs(measured[layer] * numel - want) <= 1, layer
        assert abs(int(masks[layer].sum()) - want) <= 0.5, layer  # the mask keeps round(density * numel)
        assert not ((module.weight != 0) & (masks[layer] == 0)).any(), layer  # nothing survives outside the mask


@pytest.mark.parametrize("name", DENSITY_SPACES)
def test_reference_density_is_dense(name: str) -> None:
    space = get_space(name)
    torch.manual_seed(0)
    model = space.build()
    layers = dict(prunable_layers(model))
    for layer, d in densities(model).items():
        numel = layers[layer].weight.numel()
        assert abs(d * numel - numel) <= 1, layer


@pytest.mark.parametrize("name", DENSITY_SPACES)
def test_apply_masks_keeps_zeros_zero(name: str) -> None:
    space = get_space(name)
    genotype = space.random_genotype(3)
    torch.manual_seed(3)
    model = space.build(genotype)
    assert all((m.weight[mask == 0] == 0).all() for _, m, mask in masked_layers(model))
    assert any((mask == 0).any() for _, _, mask in masked_layers(model))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p) + 0.5)  # strictly positive: every weight moves off zero
    assert all((m.weight != 0).all() for _, m, _ in masked_layers(model))
    apply_masks(model)
    for n, m, mask in masked_layers(model):
        assert torch.equal(m.weight == 0, mask == 0), n
    # a real optimizer step behaves the same way
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    apply_masks(model)
    for n, m, mask in masked_layers(model):
        assert (m.weight[mask == 0] == 0).all(), n


def test_density_space_genes_cover_shortcuts_and_classifier() -> None:
    space = get_space("resnet20_density")
    names = [g.name for g in space.genes]
    # stem + 18 block convs + 2 shortcut 1x1 convs (base uses shortcut B) + fc
    assert len(names) == 22
    assert names[0] == "conv1"
    assert names[-1] == "fc"
    assert sum(".shortcut." in n for n in names) == 2


# -- ResNet shortcuts ------------------------------------------------------------------------------------------
def shortcut_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".shortcut." in n)


def test_resnet56_channels_uses_parameter_free_shortcut_a() -> None:
    space = get_space("resnet56_channels")
    assert space.config["shortcut"] == "A"
    model = space.build()
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())
    assert sum(isinstance(m, ShortcutA) for m in model.modules()) == 2
    assert shortcut_params(model) == 0


def test_shortcut_b_override_adds_projections() -> None:
    a = get_space("resnet56_channels")
    b = get_space("resnet56_channels", overrides={"shortcut": "B"})
    assert b is not a
    assert get_space("resnet56_channels") is a  # the override does not leak into the plain space
    assert a.config["shortcut"] == "A"
    model_b = b.build()
    one_by_one = [m for m in model_b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(m.in_channels, m.out_channels) for m in one_by_one] == [(16, 32), (32, 64)]
    assert not any(isinstance(m, ShortcutA) for m in model_b.modules())
    # 1x1 conv weights + BN weight and bias for each projection
    assert shortcut_params(model_b) == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    params_a = sum(p.numel() for p in a.build().parameters())
    params_b = sum(p.numel() for p in model_b.parameters())
    assert params_b - params_a == shortcut_params(model_b)


def test_bad_shortcut_override_raises() -> None:
    with pytest.raises(SpaceError, match="shortcut"):
        get_space("resnet20_channels", overrides={"shortcut": "C"})


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_narrowing_stage_builds_and_runs(shortcut: str) -> None:
    space = get_space("resnet20_channels", overrides={"shortcut": shortcut})
    genes = {**space.reference().genes, "stage1_width": 16, "stage2_width": 8, "stage3_width": 4}
    model = space.build(Genotype(space.name, genes))
    out = forward(model)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    assert model.fc.in_features == 4
    if shortcut == "A":
        assert shortcut_params(model) == 0
        assert [(m.in_planes, m.out_planes) for m in model.modules() if isinstance(m, ShortcutA)] == [(16, 8), (8, 4)]


def test_resnet_block_widths_follow_genes() -> None:
    space = get_space("resnet20_channels")
    genes = {**space.reference().genes, "stage1_block2": 5, "stage3_block3": 7, "stage2_width": 24}
    model = space.build(Genotype(space.name, genes))
    assert model.layer1[1].conv1.out_channels == 5
    assert model.layer3[2].conv1.out_channels == 7
    assert model.layer3[2].conv2.in_channels == 7
    assert model.layer2[0].conv2.out_channels == 24
    assert model.layer3[0].conv1.in_channels == 24


def test_resnet56_stages_ratio_rounding() -> None:
    space = get_space("resnet56_stages")
    assert [g.name for g in space.genes] == ["stage1_ratio", "stage2_ratio", "stage3_ratio"]
    g = space.make({"stage1_ratio": 0.6, "stage2_ratio": 0.3, "stage3_ratio": 0.1})
    model = space.build(g)
    inner = [[block.conv1.out_channels for block in stage] for stage in (model.layer1, model.layer2, model.layer3)]
    assert inner == [[int(16 * 0.4)] * 9, [22] * 9, [57] * 9]
    assert inner[0][0] == 6
    residual = [[block.conv2.out_channels for block in stage] for stage in (model.layer1, model.layer2, model.layer3)]
    assert residual == [[16] * 9, [32] * 9, [64] * 9]
    with pytest.raises(GenotypeError, match="stage1_ratio"):
        space.make({"stage1_ratio": 0.95, "stage2_ratio": 0.0, "stage3_ratio": 0.0})


# -- VGG ---------------------------------------------------------------------------------------------------------
def test_vgg_classifier_li_and_slimming() -> None:
    li = get_space("vgg16_channels")
    assert li.classifier == "li"
    head = li.build().classifier
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (512, 512, 10)

    slim = get_space("vgg16_channels", overrides={"classifier": "slimming"})
    assert slim.classifier == "slimming"
    g = Genotype(slim.name, {**slim.reference().genes, "conv13": 100})
    head = slim.build(g).classifier
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (100, 10)
    assert get_space("vgg16_channels").classifier == "li"


def test_vgg_widths_follow_genes() -> None:
    space = get_space("vgg16_channels")
    g = Genotype.load(shipped_genotypes()["li2017_vgg16_a"])
    model = space.build(g)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert widths == list(g.genes.values())
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4


def test_bad_vgg_classifier_raises() -> None:
    with pytest.raises(SpaceError, match="classifier"):
        get_space("vgg16_channels", overrides={"classifier": "resnet"})


# -- TOML registry ---------------------------------------------------------------------------------------------
def test_user_toml_extends_a_named_space(tmp_path: Path) -> None:
    path = tmp_path / "my_r20b.toml"
    path.write_text(
        'extends = "resnet20_channels"\ndescription = "ResNet-20 with B"\n[model]\nshortcut = "B"\n'
        "[recipe]\nepochs = 10\n",
        encoding="utf-8",
    )
    space = get_space(str(path))
    assert space.name == "my_r20b"
    assert space.family == "cifar_resnet"
    assert space.description == "ResNet-20 with B"
    assert space.config["shortcut"] == "B"
    assert space.config["depth"] == 20  # inherited
    assert space.recipe["epochs"] == 10
    assert space.recipe["batch_size"] == 64  # inherited
    assert len(space.genes) == 12
    assert space.reference().space == "my_r20b"
    model = space.build()
    assert shortcut_params(model) > 0
    assert forward(model).shape == (2, 10)
    # the parent is unchanged
    assert get_space("resnet20_channels").config["shortcut"] == "A"


def test_user_toml_extends_a_relative_toml_path(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text('family = "cifar_resnet"\nname = "base"\n[model]\ndepth = 20\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[model]\ndepth = 32\n')
    space = get_space(str(child))
    assert space.name == "child"  # a child never inherits its parent's name
    assert len(space.genes) == 1 + 5 + 1 + 5 + 1 + 5


def test_spaces_path_env_adds_spaces_and_genotypes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "envtest_r20b.toml").write_text('extends = "resnet20_channels"\n[model]\nshortcut = "B"\n')
    (tmp_path / "genotypes").mkdir()
    g = Genotype("envtest_r20b", {**get_space("resnet20_channels").reference().genes, "stage1_block1": 4})
    g.save(tmp_path / "genotypes" / "envtest_g.json")
    monkeypatch.setenv("PRUNENAS_SPACES_PATH", str(tmp_path))
    assert "envtest_r20b" in space_names()
    assert "resnet56_channels" in space_names()
    space = get_space("envtest_r20b")
    assert space.config["shortcut"] == "B"
    assert space.validate(Genotype.load(shipped_genotypes()["envtest_g"])) == g
    assert "li2017_resnet56_b" in shipped_genotypes()


def test_malformed_toml_raises_space_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('family = "cifar_resnet"\n[model\ndepth = 20\n')
    with pytest.raises(SpaceError) as info:
        get_space(str(path))
    assert "not valid TOML" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_family_lists_valid_families(tmp_path: Path) -> None:
    path = tmp_path / "alien.toml"
    path.write_text('family = "transformer"\n[model]\ndepth = 20\n')
    with pytest.raises(SpaceError) as info:
        get_space(str(path))
    msg = str(info.value)
    assert "'transformer'" in msg
    for family in ("cifar_resnet", "cifar_resnet_stages", "cifar_vgg", "density"):
        assert family in msg


def test_unknown_space_lists_valid_spaces() -> None:
    with pytest.raises(SpaceError) as info:
        get_space("resnet57_channels")
    msg = str(info.value)
    assert "'resnet57_channels'" in msg
    for name in SPACES:
        assert name in msg


def test_missing_toml_path_raises(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="does not exist"):
        get_space(str(tmp_path / "nowhere.toml"))


def test_unknown_extends_raises(tmp_path: Path) -> None:
    path = tmp_path / "orphan.toml"
    path.write_text('extends = "resnet999_channels"\n')
    with pytest.raises(SpaceError, match="resnet999_channels"):
        get_space(str(path))


def test_extends_loop_raises(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(SpaceError, match="loops"):
        get_space(str(tmp_path / "a.toml"))


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("depth = 21", id="depth-not-6n+2"),
        pytest.param('depth = "deep"', id="depth-not-a-number"),
        pytest.param("widths = [16, 32]", id="two-widths"),
        pytest.param("widths = [16, 0, 64]", id="zero-width"),
        pytest.param("widths = 16", id="widths-not-a-list"),
        pytest.param("input_shape = [3, 32]", id="input-shape-2d"),
    ],
)
def test_bad_model_settings_raise_space_error(tmp_path: Path, model: str) -> None:
    path = tmp_path / "bad_model.toml"
    path.write_text(f'family = "cifar_resnet"\n[model]\n{model}\n')
    with pytest.raises(SpaceError):
        get_space(str(path))


def test_density_toml_with_non_table_base_overrides_raises_space_error(tmp_path: Path) -> None:
    path = tmp_path / "bad_density.toml"
    path.write_text('family = "density"\n[model]\nbase = "resnet20_channels"\nbase_overrides = "B"\n')
    with pytest.raises(SpaceError):
        get_space(str(path))


def test_space_errors_are_prunenas_errors() -> None:
    assert issubclass(SpaceError, PrunenasError)
    assert issubclass(GenotypeError, PrunenasError)


def test_shipped_genotypes_found_and_valid() -> None:
    shipped = shipped_genotypes()
    assert {p.stem for p in (REPO / "search_spaces" / "genotypes").glob("*.json")} <= set(shipped)
    for path in shipped.values():
        g = Genotype.load(path)
        space = get_space(g.space)
        assert space.validate(g) == g


# -- non-editable install -----------------------------------------------------------------------------------------
_PROBE = """
import json, prunenas
from prunenas.spaces import get_space, shipped_genotypes, space_names
from prunenas.genotype import Genotype
shipped = shipped_genotypes()
g = Genotype.load(shipped["li2017_resnet56_b"])
get_space(g.space).validate(g)
print(json.dumps({
    "file": prunenas.__file__,
    "names": space_names(),
    "shipped": {k: str(v) for k, v in shipped.items()},
    "source": get_space("resnet56_channels").source,
}))
"""


def test_search_spaces_found_in_a_non_editable_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling (the build backend) is not importable, so the wheel cannot be built offline")
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    run = {"capture_output": True, "text": True, "timeout": 300, "cwd": tmp_path}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
        **run,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheel_dir.glob("prunenas-*.whl")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)], **run
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert (target / "prunenas" / "search_spaces" / "resnet56_channels.toml").is_file()
    assert not (target / "search_spaces").exists()

    env = {k: v for k, v in os.environ.items() if k not in ("PRUNENAS_SPACES_PATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, **run)
    assert probe.returncode == 0, probe.stderr[-2000:]
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    installed_pkg = (target / "prunenas").resolve()
    assert Path(info["file"]).resolve().parent == installed_pkg  # not the source tree
    assert "resnet56_channels" in info["names"]
    assert {p.stem for p in (REPO / "search_spaces").glob("*.toml")} <= set(info["names"])
    assert {p.stem for p in (REPO / "search_spaces" / "genotypes").glob("*.json")} <= set(info["shipped"])
    for path in info["shipped"].values():
        assert Path(path).resolve().is_relative_to(installed_pkg / "search_spaces" / "genotypes")
    assert Path(info["source"]).resolve().is_relative_to(installed_pkg / "search_spaces")


def test_a_channel_divisor_makes_widths_multiples_and_proposers_respect_it(tmp_path):
    from prunenas.cost import genotype_cost
    from prunenas.errors import GenotypeError
    from prunenas.genotype import Genotype
    from prunenas.proposers.base import Target, get_proposer
    from prunenas.proposers.runner import make_context, run_proposer

    path = tmp_path / "r20d8.toml"
    path.write_text('extends = "resnet20_channels"\nname = "r20d8"\n[model]\ndivisor = 8\n')
    space = get_space(str(path))
    assert all(g.step == 8 and g.low == 8 and g.reference % 8 == 0 for g in space.genes)
    ref = dict(space.reference().genes)
    with pytest.raises(GenotypeError, match="multiple of 8"):
        space.validate(Genotype(space.name, {**ref, "stage2_block1": 20}))
    assert all(int(v) % 8 == 0 for v in space.random_genotype(3).genes.values())
    for name in ("uniform", "random"):
        proposal = run_proposer(get_proposer(name, "channels"), make_context(space), Target("macs_ratio", 0.5))
        assert all(int(v) % 8 == 0 for v in proposal.genotype.genes.values())
        assert abs(genotype_cost(space, proposal.genotype).macs_ratio - 0.5) <= 0.01
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "resnet20_channels"\nname = "bad_div"\n[model]\ndivisor = 0\n')
    with pytest.raises(SpaceError, match="divisor"):
        get_space(str(bad))
