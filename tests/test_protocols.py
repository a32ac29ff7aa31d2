"""The papers' protocols: initialisation schemes, the kept-weight rescale switch, the Rethinking option-A
shortcut, training on every image, fixed normalisation, test-selected accuracy, the --protocol presets,
Scratch-B's density cap and VGG-16-A's inherited filters as the Rethinking repository picks them."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunenas.cli import main
from prunenas.config import RunSettings
from prunenas.data import load_dataset
from prunenas.protocols import PROTOCOLS, apply_protocol, get_protocol
from prunenas.recipes import make_recipe
from prunenas.spaces import get_space
from prunenas.spaces.cifar_resnet import ShortcutA
from prunenas.surgery import inherit_channels, masked_state
from prunenas.train import run_identity, train

# VGG-16-A (Li et al. 2017): conv 1 and convs 8-13 keep half their filters.
VGG16_A = [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]


# -- initialisation schemes ----------------------------------------------------------------------------------
def test_rethinking_vgg_init_sets_bn_to_half_and_linear_to_n_0_001() -> None:
    torch.manual_seed(0)
    model = get_space("vgg16_channels").build()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.all(m.weight == 0.5) and torch.all(m.bias == 0) for m in bns)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(torch.all(m.bias == 0) for m in linears)
    big = linears[0].weight.detach()  # 512 x 512
    assert abs(float(big.std()) - 0.01) < 0.001
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 512)
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / (9 * 512))) < 0.1 * math.sqrt(2 / (9 * 512))  # fan_out


def test_open_lth_init_is_fan_in_with_uniform_bn_and_vgg_convs_carry_a_bias() -> None:
    space = get_space("vgg16_density")
    assert space.base.config["init"] == "open_lth" and space.rescale is False
    torch.manual_seed(0)
    model = space.build()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None for c in convs)
    conv = convs[1]  # 64 -> 64: fan_in = 9 * 64
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / (9 * 64))) < 0.05 * math.sqrt(2 / (9 * 64))
    first = convs[0]  # 3 -> 64: fan_in 27 differs from fan_out 576, so the scheme shows
    assert abs(float(first.weight.detach().std()) - math.sqrt(2 / 27)) < 0.1 * math.sqrt(2 / 27)
    bn = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    values = torch.cat([w.detach() for w in bn])
    assert float(values.min()) >= 0 and float(values.max()) <= 1 and float(values.std()) > 0.2


def test_the_prunenas_and_rethinking_resnet_inits_are_the_same_weights() -> None:
    a = get_space("resnet20_channels")
    b = get_space("resnet20_channels", overrides={"init": "prunenas"})
    torch.manual_seed(3)
    wa = a.build().state_dict()
    torch.manual_seed(3)
    wb = b.build().state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_unknown_init_is_one_line() -> None:
    from prunenas.errors import SpaceError

    with pytest.raises(SpaceError, match="init must be one of prunenas, rethinking, open_lth"):
        get_space("resnet20_channels", overrides={"init": "xavier"})


@pytest.mark.parametrize("rescale", [True, False])
def test_rescale_switch_of_density_spaces(rescale: bool) -> None:
    space = get_space("resnet20_density", overrides={"rescale": rescale})
    torch.manual_seed(0)
    dense = space.build().state_dict()
    masks = {name: (torch.rand_like(dense[f"{name}.weight"]) < 0.25).float() for name in space._by_name}
    state = masked_state(space, masks, 10, init_seed=0)
    for name, mask in masks.items():
        factor = 1 / math.sqrt(float(mask.mean())) if rescale else 1.0
        torch.testing.assert_close(state[f"{name}.weight"], dense[f"{name}.weight"] * mask * factor)


# -- the Rethinking repository's option-A shortcut --------------------------------------------------------------
def test_a_pool_shortcut_averages_appends_zero_channels_and_passes_no_gradient() -> None:
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = ShortcutA(4, 8, 2, pool=True)(x)
    assert out.shape == (2, 8, 4, 4) and not out.requires_grad
    torch.testing.assert_close(out[:, :4], F.avg_pool2d(x.detach(), 2))
    assert torch.all(out[:, 4:] == 0)
    plain = ShortcutA(4, 8, 2)(x)
    assert plain.requires_grad and torch.all(plain[:, :2] == 0)  # prunenas's "A": half the zeros in front
    space = get_space("resnet56_channels", overrides={"shortcut": "A-pool"})
    model = space.build()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert space.structured_genes() == get_space("resnet56_channels").structured_genes()


# -- data and training switches ------------------------------------------------------------------------------
def test_val_size_zero_trains_on_every_image_and_fixed_constants_are_used() -> None:
    full = load_dataset("digits", val_size=0, normalize="cifar")
    held = load_dataset("digits")
    assert len(full.val) == 0 and len(full.train) == len(held.train) + len(held.val)
    assert full.mean == (0.4914, 0.4822, 0.4465) and full.std == (0.2023, 0.1994, 0.2010)
    assert load_dataset("digits", val_size=0, normalize="imagenet").mean == (0.485, 0.456, 0.406)
    assert held.normalize == "train" and held.mean != full.mean
    g = get_space("resnet20_channels").reference()
    recipe = make_recipe("standard")
    ids = {run_identity(g, recipe, 0, d)["val_size"] for d in (full, held)}
    assert len(ids) == 2
    assert "normalize" not in run_identity(g, recipe, 0, held)  # runs without the setting keep their names
    assert run_identity(g, recipe, 0, full)["normalize"] == "cifar"


def test_test_every_epoch_reports_the_test_selected_best_epoch() -> None:
    data = load_dataset("digits", val_size=0, train_subset=128)
    space = get_space("resnet20_channels", overrides={"depth": 8, "widths": [4, 8, 8]})
    recipe = make_recipe("standard", space.recipe, overrides={"epochs": 3, "batch_size": 32})
    result = train(space, space.reference(), data, recipe, RunSettings(quiet=True, test_every_epoch=True))
    tests = [h.test_acc for h in result.history]
    assert all(t is not None for t in tests) and result.val_acc is None
    assert result.best_test_acc == max(t for t in tests if t is not None)
    assert result.history[(result.best_test_epoch or 0) - 1].test_acc == result.best_test_acc
    assert result.test_acc == tests[-1]  # the final model's, evaluated the same way
    plain = train(space, space.reference(), data, recipe, RunSettings(quiet=True))
    assert plain.best_test_acc is None and all(h.test_acc is None for h in plain.history)


# -- presets -----------------------------------------------------------------------------------------------------
def test_presets_change_only_what_the_user_did_not_set() -> None:
    from prunenas.config import DataConfig

    space, data, settings = apply_protocol(
        get_protocol("rethinking"), get_space("resnet56_channels"), DataConfig(), RunSettings()
    )
    assert (data.val_size, data.normalize, settings.amp, settings.test_every_epoch) == (0, "cifar", False, True)
    assert space.config["shortcut"] == "A-pool" and space.config["init"] == "rethinking"
    space, data, _ = apply_protocol(
        get_protocol("frankle"), get_space("resnet20_density"), DataConfig(val_size=100), RunSettings(),
        given=frozenset({"val_size"}),
    )  # fmt: skip
    assert data.val_size == 100 and data.normalize == "imagenet"
    assert space.rescale is False and space.base.config["init"] == "open_lth"
    assert set(PROTOCOLS) == {"prunenas", "rethinking", "frankle"}


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("frankle", ["validation split: none", "precision: fp32", "normalisation: fixed imagenet", "init: open_lth",
                     "kept-weight rescale (density): False", "scratch-B cap: 2 x E", "each seed scores its own init"]),
        ("rethinking", ["validation split: none", "best epoch by test (test-selected)", "normalisation: fixed cifar",
                        "init: rethinking", "precision: fp32"]),
    ],
)  # fmt: skip
def test_dry_run_shows_the_protocol_settings(
    protocol: str, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main([
        "rethink", "--space", "resnet20_density", "--proposer", "magnitude-init", "--density", "0.1",
        "--dataset", "digits", "--protocol", protocol, "--dry-run",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert f"protocol {protocol}:" in out
    for line in expected:
        assert line in out, line
    rc = main([
        "rethink", "--space", "resnet20_density", "--proposer", "magnitude-init", "--density", "0.1",
        "--dataset", "digits", "--protocol", protocol, "--dry-run", "--json",
    ])  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    assert plan["protocol"]["protocol"] == protocol


def test_unknown_protocol_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["rethink", "--space", "resnet20_density", "--proposer", "snip", "--density", "0.1",
               "--protocol", "lottery", "--dry-run"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--protocol" in err and "rethinking" in err and "Traceback" not in err


def test_scratch_b_of_density_spaces_is_capped_at_2x_unless_asked() -> None:
    from prunenas.proposers.base import Target
    from prunenas.rethink import RethinkConfig, dry_run

    space = get_space("resnet20_density")
    genotype = space.make({g.name: 0.05 for g in space.genes})
    plan = dry_run(RethinkConfig(space=space, dataset="digits", genotype=genotype, epochs=10))
    assert plan.arm("scratch-b").epochs == 20
    plan = dry_run(RethinkConfig(space=space, dataset="digits", genotype=genotype, epochs=10, scratch_b_cap=50))
    assert plan.arm("scratch-b").epochs == 199  # int(10 x 19.9...): the uncapped same-compute rule
    channels = get_space("resnet56_channels")
    plan = dry_run(RethinkConfig(space=channels, dataset="digits", proposer="l1-paper", target=Target("ratio", 0.6)))
    assert plan.arm("scratch-b").epochs is not None and plan.arm("scratch-b").epochs > 160  # channels: no cap


# -- VGG-16-A's inherited filters, as the Rethinking repository's vggprune picks them ---------------------------------
def test_vgg16_a_inherits_the_filters_vggprune_keeps() -> None:
    space = get_space("vgg16_channels")
    torch.manual_seed(0)
    reference = space.build()
    with torch.no_grad():  # heavy-tailed scales per (filter, input channel): which filters are largest depends
        for m in reference.modules():  # on whether the pruned inputs count, as with trained weights
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(torch.exp(1.5 * torch.randn(m.out_channels, m.in_channels, 1, 1)))
    genotype = space.make(VGG16_A)
    state = inherit_channels(space, reference, genotype)
    modules = dict(reference.named_modules())
    kept_in = torch.arange(3)
    for gene, path in space.structured_genes().items():
        weight = modules[path].weight.detach()
        # vggprune: L1 norm of each filter of the ORIGINAL model, the largest k, in their original order
        keep = torch.argsort(weight.abs().sum(dim=(1, 2, 3)), descending=True)[: int(genotype.genes[gene])]
        kept_out = keep.sort().values
        torch.testing.assert_close(state[f"{path}.weight"], weight[kept_out][:, kept_in])
        kept_in = kept_out
