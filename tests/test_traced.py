"""Traced spaces: torchvision, timm and user models as channel (and density) search spaces."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from prunenas.cli import main
from prunenas.cost import fast_macs, genotype_cost
from prunenas.data import DatasetSplits, load_dataset
from prunenas.errors import GenotypeError, SpaceError
from prunenas.genotype import Genotype
from prunenas.proposers.base import Proposer, proposers
from prunenas.spaces import Space, get_space
from prunenas.spaces.registry import clear_cache
from prunenas.testing import ProposerContract, SpaceContract

FACTORIES = Path(__file__).resolve().parent / "factories.py"
TINY = f"{FACTORIES}:tiny_net@32"
# Small inputs keep these fast; the sizes are part of the names (MACs are counted at them).
SPACES = [
    TINY,
    "torchvision:resnet18@32",
    "torchvision:mobilenet_v2@32",
    "torchvision:resnext50_32x4d@32",
    "timm:mobilenetv3_small_050@32",
    f"density:{FACTORIES}:tiny_net@32",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the contract suite over traced spaces --------------------------------------------------------------------
class TestTracedSpaceContract(SpaceContract):
    @pytest.fixture(params=SPACES, ids=lambda n: n.rsplit("/", 1)[-1])
    def space(self, request: pytest.FixtureRequest) -> Space:
        return get_space(request.param)


@pytest.mark.parametrize("name", SPACES[:4], ids=lambda n: n.rsplit("/", 1)[-1])
def test_fast_macs_equal_fvcore_and_widths_follow_genes(name):
    space = get_space(name)
    for seed in range(3):
        g = space.random_genotype(seed)
        assert fast_macs(space, g) == genotype_cost(space, g).macs
        model = space.build(g)
        modules = dict(model.named_modules())
        for gene, value in g.genes.items():
            root = modules[gene]
            assert (root.out_channels if isinstance(root, nn.Conv2d) else root.out_features) == value
        model.train()
        out = model(torch.randn(2, *space.input_shape))
        out.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_genes_are_named_by_module_and_skip_the_classifier():
    space = get_space("torchvision:resnet18@32")
    names = [g.name for g in space.genes]
    assert names[0] == "conv1" and "layer1.0.conv1" in names and "layer4.1.conv1" in names
    assert space.output_layer == "fc" and "fc" not in names
    assert all(g.step == 8 and g.reference % 8 == 0 and g.low % 8 == 0 for g in space.genes)
    # the residual stream of a stage is one gene: conv1 with layer1's second convs
    assert "layer1.0.conv2" not in names and "layer1.1.conv2" not in names
    mnv2 = get_space("torchvision:mobilenet_v2@32")
    assert mnv2.output_layer == "classifier.1" and all("classifier" not in g.name for g in mnv2.genes)


def test_grouped_conv_genes_step_by_their_groups():
    space = get_space("torchvision:resnext50_32x4d@32")
    steps = {g.name: g.step for g in space.genes}
    assert steps["layer1.0.conv1"] == 32  # conv2 is a 32-group conv: widths stay divisible by 32
    with pytest.raises(GenotypeError, match="multiple of 32"):
        space.validate(Genotype(space.name, {**space.reference().genes, "layer1.0.conv1": 120}))


def test_a_group_that_breaks_the_model_is_fixed_with_its_reason(capsys):
    space = get_space(f"{FACTORIES}:fixed_reshape@32")
    assert [g.name for g in space.genes] == ["conv1"]
    assert "conv2" in space.fixed_groups and "pruning fails" in space.fixed_groups["conv2"]
    assert main(["spaces", "show", space.name]) == 0
    out = capsys.readouterr().out
    assert "fixed groups (1" in out and "conv2" in out


def test_same_genotype_and_seed_give_identical_weights_and_reinit_follows_the_family():
    space = get_space("torchvision:resnet18@32")
    g = space.make({x.name: x.snap(x.reference / 2) for x in space.genes})
    builds = []
    for _ in range(2):
        torch.manual_seed(7)
        builds.append(space.build(g).state_dict())
    assert all(torch.equal(builds[0][k], builds[1][k]) for k in builds[0])
    # torchvision's ResNet: kaiming_normal_(mode="fan_out", relu); a conv with half its filters must
    # have the std of that rule at its new fan_out, not the reference's.
    assert space.init_modes["Conv2d"] == "fan_out"
    torch.manual_seed(0)
    model = space.build(g)
    w = model.layer3[0].conv1.weight
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    expected = math.sqrt(2.0 / fan_out)
    assert abs(float(w.std()) / expected - 1) < 0.05


def test_reference_costs_match_torchvision_published_figures():
    """fvcore MACs and the parameter count of torchvision references at 224x224 equal the figures
    torchvision publishes in its weights' metadata (GFLOPS, i.e. GMACs, and num_params)."""
    from torchvision import models

    for name in ("resnet18", "mobilenet_v2", "squeezenet1_1"):
        space = get_space(f"torchvision:{name}")
        meta = models.get_model_weights(name).DEFAULT.meta
        cost = genotype_cost(space, space.reference())
        assert abs(cost.macs / (meta["_ops"] * 1e9) - 1) < 0.01, (name, cost.macs, meta["_ops"])
        assert cost.params == meta["num_params"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
     "regnet_x_400mf", "regnet_y_400mf", "densenet121", "convnext_tiny", "vgg11_bn", "googlenet", "mnasnet1_0"],
)  # fmt: skip
def test_more_reference_costs_match_torchvision(name):
    from torchvision import models

    space = get_space(f"torchvision:{name}")
    meta = models.get_model_weights(name).DEFAULT.meta
    cost = genotype_cost(space, space.reference())
    assert abs(cost.macs / (meta["_ops"] * 1e9) - 1) < 0.01, (name, cost.macs, meta["_ops"])


def test_space_follows_the_data_size_and_moves_the_genotype():
    from prunenas.cli.common import fit_to_data

    space = get_space("torchvision:mobilenet_v2")
    assert space.input_shape == (3, 224, 224)
    g = space.make({x.name: x.snap(x.reference / 2) for x in space.genes})
    fitted, moved = fit_to_data(space, g, quiet=True)
    assert fitted.name == "torchvision:mobilenet_v2@32" and fitted.input_shape == (3, 32, 32)
    assert moved.space == fitted.name and dict(moved.genes) == dict(g.genes)
    tiny = get_space("resnet20_channels")
    assert fit_to_data(tiny, None, quiet=True)[0] is tiny


def test_toml_traced_space_extends(tmp_path):
    base = tmp_path / "tiny_base.toml"
    base.write_text(
        f'family = "traced"\nname = "tiny_base"\n[model]\nfactory = "{FACTORIES}:tiny_net"\ninput_size = 32\n'
        "divisor = 4\nmin_fraction = 0.5\n"
    )
    child = tmp_path / "tiny_child.toml"
    child.write_text('extends = "tiny_base.toml"\nname = "tiny_child"\n[model]\nignored_layers = ["head.0"]\n')
    clear_cache()
    a, b = get_space(str(base)), get_space(str(child))
    assert all(g.step == 4 and g.low >= g.reference / 2 for g in a.genes)
    assert "head.0" in [g.name for g in a.genes] and "head.0" not in [g.name for g in b.genes]
    bad = tmp_path / "bad.toml"
    bad.write_text(f'family = "traced"\n[model]\nfactory = "{FACTORIES}:tiny_net"\ndivisr = 4\n')
    with pytest.raises(SpaceError, match="divisr"):
        get_space(str(bad))


# -- proposers on traced spaces ----------------------------------------------------------------------------------
CHANNEL_PROPOSERS = [c for c in proposers() if c.kind == "channels" and c.name not in ("l1-paper", "slimming")]


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits", seed=0, train_subset=64, val_size=32)


@pytest.fixture(scope="module")
def resnet18_reference(tmp_path_factory: pytest.TempPathFactory, digits: DatasetSplits) -> Path:
    from prunenas.recipes import make_recipe
    from prunenas.train import RunSettings, train

    space = get_space("torchvision:resnet18@32")
    out = tmp_path_factory.mktemp("resnet18-reference")
    recipe = make_recipe("proxy", {}, overrides={"epochs": 1, "batch_size": 32})
    train(space, space.reference(), digits, recipe, RunSettings(device="cpu", quiet=True, plot=False), out_dir=out,
          evaluate_test=False)  # fmt: skip
    return out / "checkpoint.pt"


class TestTracedProposerContract(ProposerContract):
    @pytest.fixture(params=CHANNEL_PROPOSERS, ids=lambda c: c.name)
    def proposer_class(self, request: pytest.FixtureRequest) -> type[Proposer]:
        cls: type[Proposer] = request.param
        return cls

    @pytest.fixture
    def space(self) -> Space:
        return get_space("torchvision:resnet18@32")

    @pytest.fixture
    def reference(self, resnet18_reference: Path) -> Path:
        return resnet18_reference

    @pytest.fixture
    def data(self, digits: DatasetSplits) -> DatasetSplits:
        return digits


def test_proposals_respect_the_divisor():
    from prunenas.proposers.base import Target, get_proposer
    from prunenas.proposers.runner import make_context, run_proposer

    space = get_space("torchvision:mobilenet_v2@32")
    proposal = run_proposer(get_proposer("uniform", "channels"), make_context(space), Target("macs_ratio", 0.5))
    assert all(int(v) % space.gene(k).step == 0 for k, v in proposal.genotype.genes.items())
    assert abs(genotype_cost(space, proposal.genotype).macs_ratio - 0.5) <= 0.02 * 0.5


def test_weights_inherited_from_a_trained_traced_model_fit(resnet18_reference):
    from prunenas.train import read_checkpoint

    space = get_space("torchvision:resnet18@32")
    state = read_checkpoint(resnet18_reference)[1]["model"]
    reference = space.build(space.reference(), num_classes=10)
    reference.load_state_dict(state)
    g = space.make({x.name: x.snap(x.reference * 0.5) for x in space.genes})
    inherited = space.initial_state(reference, g)
    space.build(g, num_classes=10).load_state_dict(inherited)  # shapes fit exactly


# -- the command line ---------------------------------------------------------------------------------------------
def test_search_a_user_model_end_to_end(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(
        ["search", "--space", f"{FACTORIES}:tiny_net", "--dataset", "digits", "--budget", "smoke", "--trials", "3",
         "--proxy-epochs", "1", "--final-epochs", "1", "--top-k", "1", "--out", str(out),
         "--exports", str(tmp_path / "exports"), "--quiet", "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["complete"] >= 1 and result["winners"]
    assert "runs as" in captured.err  # the 224 default moved to the data's 32 pixels, said once
    onnx = list((tmp_path / "exports").rglob("*.onnx"))
    assert onnx, "the winner is exported"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("torchvision:resnet1800", "unknown torchvision model"),
        (f"{FACTORIES}:raises", "raised ValueError: this factory always fails"),
        (f"{FACTORIES}:not_a_module", "not a torch.nn.Module"),
        (f"{FACTORIES}:no_classifier", "class scores"),
        (f"{FACTORIES}:NOT_CALLABLE", "not a function or class"),
        (f"{FACTORIES}:missing", "has no 'missing'"),
        ("no_such_package.models:net", "not found"),
        ("torchvision:resnet18@3", "input size"),
        ("torchvision:swin_t", "window attention"),
    ],
)
def test_bad_model_factories_fail_in_one_line(capsys, space, message):
    code = main(["spaces", "show", space])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "SPACE" in err and "--space" not in err  # `spaces show` takes the space as its positional SPACE
    assert message in err


def test_timm_not_installed_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    clear_cache()
    code = main(["spaces", "show", "timm:resnet18@32"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'pip install "prunenas[timm]"' in err


def test_train_resume_export_and_evaluate_a_user_model(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", f"{FACTORIES}:tiny_net", "--dataset", "digits", "--epochs", "1", "--out", str(run), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    # a plain state_dict and the genotype: loadable without unpickling any module
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0  # the same run again: resumed from its last epoch, nothing retrained
    again = json.loads(capsys.readouterr().out)
    assert again["resumed_from"] == 1
    onnx = tmp_path / "model.onnx"
    assert main(["export", str(run), "-o", str(onnx)]) == 0, capsys.readouterr().err
    assert main(["evaluate", str(onnx), "--dataset", "digits"]) == 0, capsys.readouterr().err
