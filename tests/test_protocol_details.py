"""The papers' protocols, the last details, each pinned against the rule of the papers' code
(Eric-mingjie/rethinking-network-pruning, Eric-mingjie/network-slimming, facebookresearch/open_lth):

  1. network slimming prunes and fine-tunes its sparsity-trained model (main_finetune.py --refine)
  2. the Rethinking CIFAR weight-level Scratch-B has no cap (cifar/weight-level/cifar_B.py)
  3. under --protocol rethinking the weight-level spaces build the code's models, and an explicit init wins
  4. the slimming sparsity run keeps the protocol's precision
  5. slimming keeps the channels above the sorted |gamma| at index int(p x N) (resprune.py, vggprune.py)
  6. an epoch ends with its last, partial batch (the DataLoaders' default: 782 steps of 64 on 50,000)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunenas import train as train_module
from prunenas.cli import main
from prunenas.config import DataConfig, RunSettings
from prunenas.cost import genotype_cost
from prunenas.data import load_dataset
from prunenas.proposers.base import ProposalContext, Target, get_proposer
from prunenas.proposers.runner import make_context
from prunenas.protocols import apply_protocol, get_protocol
from prunenas.recipes import make_recipe
from prunenas.rethink import RethinkConfig, dry_run
from prunenas.rethink import run as rethink_run
from prunenas.spaces import get_space
from prunenas.train import TrainResult, run_identity

TINY_VGG = """family = "cifar_vgg"
name = "pd_tiny_vgg"
[model]
cfg = [8, "M", 12, "M", 16]
classifier = "slimming"
"""
SPARSITY = {"sparsity_epochs": 1, "train_subset": None}


def code_slimming_masks(bn_weights: list[torch.Tensor], percent: float) -> list[torch.Tensor]:
    """resprune.py / vggprune.py: every BN's |gamma| sorted together, thre = y[int(total * percent)],
    a channel is kept when its |gamma| is strictly greater."""
    values = torch.cat([w.detach().abs().flatten() for w in bn_weights])
    y, _ = torch.sort(values)
    thre = y[int(values.numel() * percent)]
    return [w.detach().abs().gt(thre) for w in bn_weights]


def batchnorms(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


# -- a slimming study under --protocol rethinking, run once for items 1, 4 and 6 ----------------------------------
@pytest.fixture(scope="module")
def slimming_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny VGG slimming study on digits under --protocol rethinking, every train() call recorded."""
    folder = tmp_path_factory.mktemp("pd")
    space_file = folder / "pd_tiny_vgg.toml"
    space_file.write_text(TINY_VGG, encoding="utf-8")
    space = get_space(str(space_file))
    data = load_dataset("digits", train_subset=100, val_size=0, normalize="cifar", seed=0)
    calls: list[dict[str, Any]] = []
    real: Callable[..., TrainResult] = train_module.train

    def spy(*args: Any, **kwargs: Any) -> TrainResult:
        extra = kwargs.get("extra_metrics") or {}
        arm = extra.get("rethink", {}).get("arm", "sparsity")
        calls.append({"arm": arm, "settings": args[4], "recipe": args[3], "init_state": kwargs.get("init_state")})
        return real(*args, **kwargs)

    config = RethinkConfig(
        space=space, dataset="digits", proposer="slimming", proposer_options=SPARSITY, target=Target("ratio", 0.3),
        budget="smoke", finetune_epochs=1, out=folder / "study", protocol="rethinking",
        data=DataConfig(dataset="digits", train_subset=100, val_size=0, normalize="cifar"),
        settings=RunSettings(device="cpu", quiet=True, seed=0),
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "train", spy)  # the slimming proposer's own sparsity run
        mp.setattr(rethink_run, "train", spy)  # the study's arms
        outcome = rethink_run.run_rethink(config, data, log=lambda _line: None)
    return {"space": space, "data": data, "config": config, "calls": calls, "outcome": outcome}


def test_slimming_fine_tunes_the_sparsity_trained_model(slimming_study: dict[str, Any]) -> None:
    """Item 1: the fine-tuned arm starts from the sparsity-trained model, each BN keeping its channels above
    network slimming's threshold; not from the unpruned model trained without the penalty."""
    data, calls = slimming_study["data"], slimming_study["calls"]
    # the sparsity-trained model, trained again exactly as the study's proposer trained it (the protocol's
    # space: the Rethinking init)
    config = rethink_run.with_protocol(slimming_study["config"])
    space = config.space
    ctx = make_context(space, data=data, seed=0, device="cpu", run=config.settings)
    proposer = get_proposer("slimming", "channels", **SPARSITY)
    source = proposer.scores_and_source(ctx)[1]
    assert source is not None
    sparse = space.build(space.reference(), num_classes=data.num_classes)
    sparse.load_state_dict(source)
    bns = batchnorms(sparse)
    masks = code_slimming_masks([m.weight for _, m in bns], 0.3)
    (finetune,) = [c for c in calls if c["arm"] == "finetune"]
    init = finetune["init_state"]
    for (name, bn), mask in zip(bns, masks, strict=True):
        torch.testing.assert_close(init[f"{name}.weight"], bn.weight.detach()[mask], rtol=0, atol=0)
        torch.testing.assert_close(init[f"{name}.running_var"], bn.running_var[mask], rtol=0, atol=0)
    # ... and not the unpruned arm's weights
    unpruned = torch.load(Path(slimming_study["outcome"].arm("unpruned").runs[0].run_dir) / "checkpoint.pt",
                          map_location="cpu", weights_only=False)["model"]  # fmt: skip
    name = bns[0][0]
    assert not torch.equal(unpruned[f"{name}.weight"][masks[0]], init[f"{name}.weight"])


def test_the_plan_says_where_slimmings_fine_tune_starts(capsys: pytest.CaptureFixture[str]) -> None:
    """Item 1: the dry run names the sparsity-trained model and the BN-scale rule, never the L1 norm, for
    slimming and for the spaces that inherit by BatchNorm scale."""
    rc = main(["rethink", "--space", "vgg19_channels", "--proposer", "slimming", "--ratio", "0.5",
               "--dataset", "digits", "--dry-run", "--json"])  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    what = {a["arm"]: a["what"] for a in plan["arms"]}["finetune"]
    assert rc == 0 and "slimming's own trained seed-0 model" in what and "|BN scale|" in what
    assert "L1" not in what
    rc = main(["rethink", "--space", "preresnet164_channels", "--proposer", "uniform", "--ratio", "0.5",
               "--dataset", "digits", "--dry-run", "--json"])  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    what = {a["arm"]: a["what"] for a in plan["arms"]}["finetune"]
    assert rc == 0 and "|BN scale|" in what and "L1" not in what and "unpruned seed-0 model" in what


def test_slimmings_sparsity_run_keeps_the_protocols_precision(slimming_study: dict[str, Any]) -> None:
    """Item 4: under --protocol rethinking the sparsity run trains in fp32 (amp off) like every arm."""
    calls = slimming_study["calls"]
    sparsity = [c for c in calls if c["arm"] == "sparsity"]
    assert sparsity and all(c["settings"].amp is False for c in sparsity)
    assert all(c["recipe"].bn_l1 > 0 for c in sparsity)
    assert all(c["settings"].amp is False for c in calls)


def test_slimming_removes_int_p_n_plus_one_channels_as_the_code_does() -> None:
    """Item 5: vgg19_channels' BN scales (scored as given: sparsity_epochs=0) pruned at ratio p keep, per BN,
    the channels whose |gamma| is above the sorted value at index int(p x N)."""
    space = get_space("vgg19_channels")
    torch.manual_seed(0)
    model = space.build(space.reference())
    for _, bn in batchnorms(model):
        nn.init.uniform_(bn.weight, -1.0, 1.0)
    ctx = ProposalContext(space=space, model=model, trained=True, device=torch.device("cpu"), seed=0)
    for p in (0.3, 0.5, 0.7):
        genotype = get_proposer("slimming", "channels", sparsity_epochs=0).propose(ctx, Target("ratio", p)).genotype
        masks = code_slimming_masks([bn.weight for _, bn in batchnorms(model)], p)
        widths = [int(v) for v in genotype.genes.values()]
        assert widths == [int(m.sum()) for m in masks], p
        total = sum(m.numel() for m in masks)
        assert total - sum(widths) == int(total * p) + 1


# -- Scratch-B without a cap under the Rethinking protocol --------------------------------------------------------
def test_weight_level_scratch_b_is_uncapped_under_the_rethinking_protocol(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Item 2: cifar_B.py trains int(epochs x FLOPs_full / FLOPs_pruned) epochs with no cap on CIFAR, density
    spaces included; outside the protocol the 2 x E cap stays."""
    plain_space = get_space("preresnet110_density")
    space, _, _ = apply_protocol(get_protocol("rethinking"), plain_space, DataConfig(), RunSettings())
    genotype = space.make({g.name: 0.2 if g.name != "fc" else 1.0 for g in space.genes})  # the code's model
    ratio = genotype_cost(space, genotype).macs / genotype_cost(space, space.reference()).macs
    plan = dry_run(RethinkConfig(space=plain_space, dataset="cifar10", genotype=genotype, protocol="rethinking"))
    assert plan.base_epochs == 160
    assert plan.arm("scratch-b").epochs == int(160 * (1 / ratio)) > 2 * 160
    assert plan.protocol["scratch-B cap"] == "none"
    plain = dry_run(RethinkConfig(space=space, dataset="cifar10", genotype=genotype))
    assert plain.arm("scratch-b").epochs == 2 * 160
    capped = dry_run(
        RethinkConfig(space=plain_space, dataset="cifar10", genotype=genotype, protocol="rethinking", scratch_b_cap=3)
    )
    assert capped.arm("scratch-b").epochs == 3 * 160
    rc = main(["rethink", "--space", "preresnet110_density", "--proposer", "random", "--density", "0.2",
               "--dataset", "cifar10", "--protocol", "rethinking", "--dry-run"])  # fmt: skip
    assert rc == 0 and "scratch-B cap: none" in capsys.readouterr().out


# -- the code's models ------------------------------------------------------------------------------------------------
def code_densenet_params(depth: int = 100, growth: int = 12, compression_rate: int = 2, classes: int = 10) -> int:
    """Parameters of cifar/weight-level/models/cifar/densenet.py's DenseNet with BasicBlock (3n+4 layers,
    stem 2k, BN-ReLU-conv3x3 layers of k outputs, transitions BN-ReLU-conv1x1 to floor(in // rate))."""
    n = (depth - 4) // 3
    planes = 2 * growth
    total = 3 * planes * 9
    for block in range(3):
        for _ in range(n):
            total += 2 * planes + planes * growth * 9
            planes += growth
        if block < 2:
            out = planes // compression_rate
            total += 2 * planes + planes * out
            planes = out
    return total + 2 * planes + planes * classes + classes


def code_preresnet_bottleneck_params(depth: int = 110, classes: int = 10) -> int:
    """Parameters of cifar/weight-level/models/cifar/preresnet.py with Bottleneck blocks ((depth-2)/9 per stage,
    expansion 4, a 1x1 conv + no BN downsample where the shape changes, a final BN)."""
    n = (depth - 2) // 9
    inplanes, total = 16, 3 * 16 * 9
    for planes in (16, 32, 64):
        for b in range(n):
            total += 2 * inplanes + inplanes * planes  # bn1, conv1 1x1
            total += 2 * planes + planes * planes * 9  # bn2, conv2 3x3
            total += 2 * planes + planes * planes * 4  # bn3, conv3 1x1
            if b == 0 and (inplanes != planes * 4):
                total += inplanes * planes * 4  # downsample conv
            inplanes = planes * 4
    return total + 2 * inplanes + inplanes * classes + classes


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("preresnet110_channels", code_preresnet_bottleneck_params()),
        ("preresnet110_density", code_preresnet_bottleneck_params()),
        ("densenet_bc100_channels", code_densenet_params()),
        ("densenet_bc100_density", code_densenet_params()),
    ],
)
def test_the_rethinking_protocol_builds_the_weight_level_codes_models(name: str, expected: int) -> None:
    """Item 3: the models of the weight-level code, BatchNorm weights 1 as its init sets them."""
    space, _, _ = apply_protocol(get_protocol("rethinking"), get_space(name), DataConfig(), RunSettings())
    model = space.build()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert all(torch.all(m.weight == 1) for _, m in batchnorms(model))
    plain = get_space(name).build()  # outside the protocol the shipped default stays
    assert sum(p.numel() for p in plain.parameters()) != expected


def test_an_explicit_init_wins_over_the_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Item 3: an init the user set (an override of a shipped space, or a space file of their own) stays."""
    rethinking = get_protocol("rethinking")
    space, _, _ = apply_protocol(
        rethinking, get_space("densenet_bc100_channels", overrides={"init": "prunenas"}), DataConfig(), RunSettings()
    )
    assert space.config["init"] == "prunenas" and space.config["bottleneck"] is False
    own = tmp_path / "my_densenet.toml"
    own.write_text('family = "cifar_densenet"\n[model]\ndepth = 40\ninit = "open_lth"\n', encoding="utf-8")
    space, _, _ = apply_protocol(rethinking, get_space(str(own)), DataConfig(), RunSettings())
    assert space.config["init"] == "open_lth"
    shipped, _, _ = apply_protocol(rethinking, get_space("resnet20_density"), DataConfig(), RunSettings())
    assert shipped.base.config["init"] == "rethinking"  # a shipped space's own init is the preset's to change
    rc = main(["rethink", "--space", "preresnet110_channels", "--proposer", "uniform", "--ratio", "0.5",
               "--dataset", "cifar10", "--protocol", "rethinking", "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "block = bottleneck" in out and "preresnet --depth 110" in out


# -- the last partial batch --------------------------------------------------------------------------------------------
def test_the_protocols_keep_the_last_partial_batch(slimming_study: dict[str, Any]) -> None:
    """Item 6: ceil(N / batch) steps per epoch under the protocols (the code's 782 at 64 on 50,000), N // batch
    (781) by prunenas's default; run names of the default stay as they were."""
    data, calls = slimming_study["data"], slimming_study["calls"]
    recipe = make_recipe("standard", {}, overrides={"batch_size": 64, "epochs": 1})
    kept, _ = train_module._data_batches(data, recipe, torch.device("cpu"), 0, False, keep_last_batch=True)
    dropped, _ = train_module._data_batches(data, recipe, torch.device("cpu"), 0, False)
    assert (len(kept), len(dropped)) == (math.ceil(100 / 64), 100 // 64) == (2, 1)
    assert sum(len(images) for images, _ in kept.epoch(0)) == 100
    assert calls and all(c["settings"].keep_last_batch for c in calls)  # every arm and the sparsity run
    genotype = get_space("resnet20_channels").reference()
    plain = run_identity(genotype, recipe, 0, data)
    assert "last_batch" not in plain
    assert run_identity(genotype, recipe, 0, data, keep_last_batch=True) == {**plain, "last_batch": "kept"}
    for name in ("rethinking", "frankle"):
        _, _, settings = apply_protocol(get_protocol(name), get_space("resnet20_channels"), DataConfig(), RunSettings())
        assert settings.keep_last_batch is True
    _, _, settings = apply_protocol(get_protocol("prunenas"), get_space("resnet20_channels"), DataConfig(),
                                    RunSettings())  # fmt: skip
    assert settings.keep_last_batch is False


def test_the_dry_run_states_the_last_batch(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["rethink", "--space", "resnet20_density", "--proposer", "magnitude-init", "--density", "0.1",
               "--dataset", "digits", "--protocol", "frankle", "--dry-run"])  # fmt: skip
    assert rc == 0 and "last partial batch: trained" in capsys.readouterr().out


def test_a_conv_only_density_target_is_met_over_the_conv_layers(tmp_path: Path) -> None:
    """Item 7: with layers="conv" the target density counts conv weights, as the code's `percent` does, so a
    model with a large dense classifier (VGG-16's FC-512-BN-FC: 267k linear weights) still meets it."""
    from prunenas.proposers.runner import run_proposer

    own = tmp_path / "pd_vgg16_li_density.toml"
    own.write_text('family = "density"\n[model]\nbase = "vgg16_channels"\n', encoding="utf-8")
    space = get_space(str(own))
    ctx = make_context(space, seed=0, device="cpu")
    proposer = get_proposer("magnitude-init", "density", layers="conv", min_weights=0)
    genotype = run_proposer(proposer, ctx, Target("density", 0.05)).genotype
    layers = dict(ctx.model.named_modules())
    convs = [n for n in genotype.genes if isinstance(layers[n], nn.Conv2d)]
    kept = sum(round(float(genotype.genes[n]) * layers[n].weight.numel()) for n in convs)
    total = sum(layers[n].weight.numel() for n in convs)
    assert abs(kept / total - 0.05) < 1e-3
    assert all(float(v) == 1.0 for n, v in genotype.genes.items() if n not in convs)
    linear = sum(m.weight.numel() for m in ctx.model.modules() if isinstance(m, nn.Linear))
    assert linear > 250_000
