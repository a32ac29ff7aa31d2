"""`prunenas rethink`: the Rethinking comparison (unpruned / fine-tuned / scratch-E / scratch-B) and
Frankle et al.'s mask ablations, on tiny spaces and the embedded digits set (CPU, seconds)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunenas.cli import main
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.proposers.base import Target, get_proposer
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.rethink import run as rethink_run
from prunenas.spaces import get_space
from prunenas.spaces.base import Space
from prunenas.surgery import inherit_channels
from prunenas.train import CHECKPOINT, METRICS, TrainResult, load_model_state

SUBSET = ["--dataset", "digits", "--train-subset", "96", "--val-size", "32"]
SMOKE = [*SUBSET, "--budget", "smoke", "--finetune-epochs", "1", "--quiet", "--json"]

RESNET = """extends = "resnet20_channels"
name = "{name}"
[model]
depth = 8
widths = [6, 8, 12]
shortcut = "{shortcut}"
"""
DENSITY = """family = "density"
name = "rt_tiny_d"
[model]
base = "{base}"
[recipe]
batch_size = 64
"""
VGG = """family = "cifar_vgg"
name = "rt_tiny_vgg"
[model]
cfg = [8, "M", 12, "M", 16]
classifier = "li"
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths of tiny space TOMLs: ResNet-8 with shortcut B and A, a density space over the B one, a VGG."""
    folder = tmp_path_factory.mktemp("spaces")
    paths = {}
    for key, text in (
        ("b", RESNET.format(name="rt_tiny_b", shortcut="B")),
        ("a", RESNET.format(name="rt_tiny_a", shortcut="A")),
        ("vgg", VGG),
    ):
        paths[key] = str(folder / f"rt_tiny_{key}.toml")
        Path(paths[key]).write_text(text, encoding="utf-8")
    paths["d"] = str(folder / "rt_tiny_d.toml")
    Path(paths["d"]).write_text(DENSITY.format(base=paths["b"]), encoding="utf-8")
    return paths


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every call of train() made by the study (the real trainer still runs)."""
    calls: list[dict[str, Any]] = []
    real: Callable[..., TrainResult] = rethink_run.train

    def wrapper(*args: Any, **kwargs: Any) -> TrainResult:
        calls.append({"recipe": args[3].name, "out": Path(kwargs["out_dir"]), "init_state": kwargs["init_state"]})
        return real(*args, **kwargs)

    monkeypatch.setattr(rethink_run, "train", wrapper)
    yield calls


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def by_arm(outcome: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["arm"]: a for a in outcome["arms"]}


# -- a whole channel study, its files, and the rerun -----------------------------------------------------------
def test_channel_study_trains_every_arm_writes_the_table_and_a_rerun_trains_nothing(
    tiny: dict[str, str], tmp_path: Path, spy: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study"
    argv = ["rethink", "--space", tiny["b"], "--proposer", "l1", "--ratio", "0.3", *SMOKE, "--out", str(study)]
    argv += ["--epochs", "2"]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 0, err
    outcome = json.loads(out)
    arms = by_arm(outcome)
    assert list(arms) == ["unpruned", "finetune", "scratch-e", "scratch-b"]
    assert [c["recipe"] for c in spy] == ["standard", "finetune", "scratch-e", "scratch-b"]
    assert (outcome["trained"], outcome["skipped"]) == (4, 0)
    for arm in arms.values():
        assert arm["n"] == 1 and arm["test_acc_mean"] is not None and arm["test_acc_std"] == 0.0
        assert Path(arm["runs"][0]["run_dir"]).parent == study
    space = get_space(tiny["b"])
    genotype = Genotype.load(study / "genotype.json")
    assert genotype.provenance["proposer"] == "l1" and genotype != space.reference()
    ref_macs, macs = arms["unpruned"]["macs"], arms["scratch-e"]["macs"]
    assert macs < ref_macs and arms["finetune"]["macs"] == macs
    assert [arms[a]["epochs"] for a in ("unpruned", "finetune", "scratch-e")] == [2, 1, 2]
    assert arms["scratch-b"]["epochs"] == int(2 * ref_macs / macs) > 2
    # the table: JSON, text (both formats) and the bar plot
    saved = json.loads((study / "rethink.json").read_text())
    assert [a["test_acc_mean"] for a in saved["arms"]] == [a["test_acc_mean"] for a in outcome["arms"]]
    assert saved["paper_row"]["dataset"] == "digits" and saved["paper_row"]["scratch_b"]["epochs"] >= 1
    text = (study / "rethink.txt").read_text()
    for needle in ("fine-tuned", "scratch-E", "scratch-B", "Table 1", " ± "):
        assert needle in text
    assert (study / "rethink.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # fine-tuning starts from the unpruned model's weights, inherited by filter L1 norm
    ref_model = space.build(space.reference(), num_classes=10)
    unpruned_dir = Path(arms["unpruned"]["runs"][0]["run_dir"])
    assert unpruned_dir.name.startswith("unpruned-e2-s0-")  # then the run's identity hash
    ref_model.load_state_dict(load_model_state(unpruned_dir / CHECKPOINT))
    expected = inherit_channels(space, ref_model, genotype)
    given = spy[1]["init_state"]
    assert given.keys() == expected.keys() and all(torch.equal(given[k], expected[k]) for k in expected)
    assert spy[0]["init_state"] is None and spy[2]["init_state"] is None  # scratch: fresh init

    # the same command again: every arm is found finished, nothing trains
    spy.clear()
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 0, err
    again = json.loads(out)
    assert spy == [] and (again["trained"], again["skipped"]) == (0, 4)
    assert [a["test_acc_mean"] for a in again["arms"]] == [a["test_acc_mean"] for a in outcome["arms"]]

    # a run folder without metrics.json goes through train(), which returns the finished run from its
    # checkpoint without training another epoch
    run_dir = Path(arms["scratch-e"]["runs"][0]["run_dir"])
    (run_dir / METRICS).unlink()
    stamp = (run_dir / CHECKPOINT).stat().st_mtime_ns
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 0, err
    assert [c["out"] for c in spy] == [run_dir]
    assert (run_dir / CHECKPOINT).stat().st_mtime_ns == stamp
    third = by_arm(json.loads(out))
    assert third["scratch-e"]["runs"][0]["epochs_run"] == 2
    assert third["scratch-e"]["test_acc_mean"] == arms["scratch-e"]["test_acc_mean"]


# -- the plan -------------------------------------------------------------------------------------------------
def test_dry_run_shows_220_scratch_b_epochs_for_resnet56_b(capsys: pytest.CaptureFixture[str]) -> None:
    genotype = str(Path(__file__).resolve().parents[1] / "search_spaces/genotypes/li2017_resnet56_b.json")
    rc, out, err = run_cli(capsys, "rethink", "--space", "resnet56_channels", "--genotype", genotype, "--dry-run")
    assert rc == 0, err
    row = next(line for line in out.splitlines() if line.startswith("scratch-B"))
    assert row.split()[1:3] == ["scratch-b", "220"]
    assert "budget paper" in out and "nothing trained" in out

    rc, out, _ = run_cli(
        capsys, "rethink", "--space", "resnet56_channels", "--genotype", "li2017_resnet56_b", "--dry-run",
        "--seeds", "5", "--json",
    )  # fmt: skip
    assert rc == 0
    plan = json.loads(out)
    arms = {a["arm"]: a for a in plan["arms"]}
    assert plan["budget"] == "paper" and plan["genotype_key"] == "4ae1233ffbaf219d"
    assert [arms[a]["epochs"] for a in ("unpruned", "finetune", "scratch-e", "scratch-b")] == [160, 40, 160, 220]
    assert plan["totals"]["training_epochs"] == 5 * (160 + 40 + 160 + 220)
    assert plan["totals"]["image_epochs"] == 5 * (160 + 40 + 160 + 220) * 45_000
    assert plan["study_dir"].endswith("rethink/resnet56_channels-4ae1233ffbaf219d-cifar10")

    # --budget fast is a quarter; --epochs sets E (scratch-B scales it), --finetune-epochs its own
    rc, out, _ = run_cli(
        capsys, "rethink", "--space", "resnet56_channels", "--genotype", "li2017_resnet56_b", "--dry-run",
        "--budget", "fast", "--json",
    )  # fmt: skip
    assert [a["epochs"] for a in json.loads(out)["arms"]] == [40, 10, 40, 55]
    rc, out, _ = run_cli(
        capsys, "rethink", "--space", "resnet56_channels", "--genotype", "li2017_resnet56_b", "--dry-run",
        "--budget", "smoke", "--epochs", "100", "--finetune-epochs", "7", "--json",
    )  # fmt: skip
    assert [a["epochs"] for a in json.loads(out)["arms"]] == [100, 7, 100, 138]
    # smoke: E = 2 and int(2 x 1.38) = 2, so scratch-B is the very scratch-E training, not run twice
    rc, out, _ = run_cli(
        capsys, "rethink", "--space", "resnet56_channels", "--genotype", "li2017_resnet56_b", "--dry-run",
        "--budget", "smoke", "--json",
    )  # fmt: skip
    smoke = {a["arm"]: a for a in json.loads(out)["arms"]}
    assert smoke["scratch-b"]["epochs"] == 2 and smoke["scratch-b"]["shared_with"] == "scratch-e"
    assert smoke["scratch-b"]["runs"] == 0 and json.loads(out)["totals"]["training_epochs"] == 2 + 2 + 2


# -- a density study with Frankle et al.'s ablations -------------------------------------------------------------
def test_density_study_runs_the_ablations_and_the_mask_arm_keeps_the_proposers_zeros(
    tiny: dict[str, str], tmp_path: Path, spy: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "dense"
    rc, out, err = run_cli(
        capsys, "rethink", "--space", tiny["d"], "--proposer", "snip", "--density", "0.3",
        "--ablation", "shuffle,reinit,invert", *SMOKE, "--epochs", "1", "--out", str(study),
    )  # fmt: skip
    assert rc == 0, err
    outcome = json.loads(out)
    arms = by_arm(outcome)
    assert list(arms) == ["unpruned", "finetune", "scratch-e", "scratch-b", "mask", "shuffle", "reinit", "invert"]
    assert all(a["n"] == 1 and a["test_acc_mean"] is not None for a in arms.values())
    assert len(spy) == 7  # the mask arm is the scratch-E runs: same mask, same init, same epochs
    assert arms["mask"]["shared_with"] == "scratch-e" and arms["mask"]["runs"] == arms["scratch-e"]["runs"]

    # the proposer's mask, recomputed independently from the same data and seed
    space = get_space(tiny["d"])
    data = load_dataset("digits", train_subset=96, val_size=32, seed=0)
    ctx = make_context(space, data=data, seed=0)
    proposal = run_proposer(get_proposer("snip", "density"), ctx, Target("density", 0.3))
    assert proposal.masks is not None
    masks = proposal.masks
    saved = torch.load(study / "masks.pt", weights_only=False)
    assert all(torch.equal(saved["masks"][k], masks[k].float()) for k in masks)

    def trained(arm: str) -> dict[str, torch.Tensor]:
        return load_model_state(Path(arms[arm]["runs"][0]["run_dir"]))

    for arm in ("mask", "finetune", "reinit"):
        state = trained(arm)
        for name, mask in masks.items():
            weight = state[f"{name}.weight"]
            assert torch.equal(weight == 0, mask == 0), (arm, name)  # zero exactly where the mask is zero
            assert torch.equal(state[f"{name}.weight_mask"], mask.float())
    # reinit: same mask, another init; shuffle: same per-layer counts, other positions; invert: its own mask
    init_mask = next(c["init_state"] for c in spy if c["recipe"] == "scratch-e" and c["out"].name.startswith("scratch"))
    init_reinit = next(c["init_state"] for c in spy if c["out"].name.startswith("reinit"))
    scored = dict(ctx.model.named_modules())
    for name, mask in masks.items():  # seed 0's fresh init is the very init snip scored, masked and rescaled
        weight = scored[name].weight.detach() * mask / float(mask.mean()) ** 0.5
        torch.testing.assert_close(init_mask[f"{name}.weight"], weight)
        assert not torch.equal(init_mask[f"{name}.weight"], init_reinit[f"{name}.weight"])
    shuffle = trained("shuffle")
    moved = 0
    for name, mask in masks.items():
        assert int(shuffle[f"{name}.weight_mask"].sum()) == int(mask.sum())
        moved += int(not torch.equal(shuffle[f"{name}.weight_mask"], mask.float()))
    assert moved > 0
    inverted = trained("invert")
    assert any(not torch.equal(inverted[f"{n}.weight_mask"], m.float()) for n, m in masks.items())
    assert all(torch.equal(inverted[f"{n}.weight_mask"], saved["invert_masks"][n]) for n in masks)

    # the same genotype from a file: layer-wise magnitude masks of the same reference, so the runs that
    # start from a mask are new ones (tagged folders); the unpruned run is shared
    spy.clear()
    rc, out, err = run_cli(
        capsys, "rethink", "--space", tiny["d"], "--genotype", str(study / "genotype.json"), *SMOKE, "--epochs", "1",
        "--out", str(study),
    )  # fmt: skip
    assert rc == 0, err
    assert [c["recipe"] for c in spy] == ["finetune", "scratch-e", "scratch-b"]
    before = {Path(r["run_dir"]) for a in ("finetune", "scratch-e", "scratch-b") for r in arms[a]["runs"]}
    assert all(c["out"].parent == study and c["out"] not in before for c in spy)


# -- weight inheritance ------------------------------------------------------------------------------------------
def _silence(bns: list[nn.Module], convs: list[nn.Module], drop: list[int]) -> None:
    """Make channels `drop` the weakest filters and exactly zero after their BatchNorm (+ ReLU)."""
    with torch.no_grad():
        for conv in convs:
            assert isinstance(conv, nn.Conv2d)
            conv.weight[drop] *= 1e-3
        for bn in bns:
            assert isinstance(bn, nn.BatchNorm2d)
            bn.weight[drop] = 0.0
            bn.bias[drop] = 0.0


def _randomised(space: Space) -> nn.Module:
    """A reference model with non-trivial BatchNorm statistics (as a trained one has)."""
    torch.manual_seed(0)
    model = space.build(space.reference())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("shortcut", ["a", "b"])
def test_inherited_resnet_computes_what_the_kept_channels_of_the_reference_compute(
    tiny: dict[str, str], shortcut: str
) -> None:
    space = get_space(tiny[shortcut])
    model = _randomised(space)
    genes = dict(space.reference().genes)
    g = torch.Generator().manual_seed(1)
    m = dict(model.named_modules())
    kept: dict[str, torch.Tensor] = {}
    # inner widths: block s drops 2-5 of its conv1's channels
    for s, drop_n in ((1, 3), (2, 2), (3, 5)):
        width = int(genes[f"stage{s}_block1"])
        drop = torch.randperm(width, generator=g)[:drop_n].tolist()
        _silence([m[f"layer{s}.0.bn1"]], [m[f"layer{s}.0.conv1"]], drop)
        genes[f"stage{s}_block1"] = width - drop_n
        kept[f"stage{s}_block1"] = torch.tensor([i for i in range(width) if i not in drop])
    if shortcut == "b":  # residual widths too: every conv writing into the stream is silenced
        for s, drop_n in ((1, 2), (2, 3), (3, 4)):
            width = int(genes[f"stage{s}_width"])
            drop = torch.randperm(width, generator=g)[:drop_n].tolist()
            convs = [m[f"layer{s}.0.conv2"]] + ([m["conv1"]] if s == 1 else [m[f"layer{s}.0.shortcut.0"]])
            bns = [m[f"layer{s}.0.bn2"]] + ([m["bn1"]] if s == 1 else [m[f"layer{s}.0.shortcut.1"]])
            _silence(bns, convs, drop)
            genes[f"stage{s}_width"] = width - drop_n
            kept[f"stage{s}_width"] = torch.tensor([i for i in range(width) if i not in drop])
    genotype = space.make(genes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = inherit_channels(space, model, genotype)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the reference is untouched
    pruned = space.build(genotype)
    pruned.load_state_dict(state)
    x = torch.randn(4, *space.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), model(x), rtol=1e-4, atol=1e-5)

    # and directly: block 1's conv1 keeps its largest-L1 filters in order, conv2 the matching inputs
    conv1, conv2, bn1 = m["layer1.0.conv1"], m["layer1.0.conv2"], m["layer1.0.bn1"]
    assert isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d) and isinstance(bn1, nn.BatchNorm2d)
    inner = kept["stage1_block1"]
    top = torch.argsort(conv1.weight.abs().sum((1, 2, 3)), descending=True)[: len(inner)]
    assert torch.equal(top.sort().values, inner)
    stream = kept.get("stage1_width", torch.arange(conv1.in_channels))
    assert torch.equal(state["layer1.0.conv1.weight"], conv1.weight[inner][:, stream])
    assert torch.equal(state["layer1.0.conv2.weight"], conv2.weight[stream][:, inner])
    assert bn1.running_mean is not None
    assert torch.equal(state["layer1.0.bn1.running_mean"], bn1.running_mean[inner])


def test_inherited_vgg_computes_what_the_kept_channels_compute(tiny: dict[str, str]) -> None:
    space = get_space(tiny["vgg"])
    model = _randomised(space)
    m = dict(model.named_modules())
    genes = dict(space.reference().genes)
    for i, (gene, path) in enumerate(space.structured_genes().items()):
        drop = list(range(i, i + 2 + i))
        conv = m[path]
        bn = m[path[: -len(path.split(".")[-1])] + str(int(path.split(".")[-1]) + 1)]
        _silence([bn], [conv], drop)
        genes[gene] = int(genes[gene]) - len(drop)
    genotype = space.make(genes)
    pruned = space.build(genotype)
    pruned.load_state_dict(inherit_channels(space, model, genotype))
    x = torch.randn(3, *space.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), model(x), rtol=1e-4, atol=1e-5)


def test_inherit_channels_refuses_what_cannot_be_inherited(tiny: dict[str, str]) -> None:
    space = get_space(tiny["a"])
    model = space.build()
    residual = {**space.reference().genes, "stage2_width": 5}  # shortcut A: residual widths are not pruned
    with pytest.raises(PrunenasError, match="stage2_width"):
        inherit_channels(space, model, space.make(residual))
    assert inherit_channels(space, model, space.reference()).keys() == model.state_dict().keys()


# -- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--space", "resnet20_channels"], "--genotype"),
        (["--space", "resnet56_channels", "--proposer", "l1", "--ratio", "0.3", "--genotype", "li2017_resnet56_b"],
         "not both"),
        (["--space", "resnet20_channels", "--proposer", "uniform", "--ratio", "0.3", "--ablation", "shuffle"],
         "density space"),
        (["--space", "resnet20_density", "--proposer", "snip", "--density", "0.3", "--ablation", "shuffle,flip"],
         "flip"),
        (["--space", "resnet20_channels", "--proposer", "uniform", "--ratio", "0.3", "--seeds", "0"], "--seeds"),
        (["--space", "resnet20_density", "--proposer", "erk", "--density", "0.3", "--ablation", "invert"], "invert"),
        (["--space", "resnet20_density", "--genotype", "resnet20_density", "--ablation", "reinit"], "--proposer"),
        (["--space", "resnet20_channels", "--proposer", "uniform"], "target"),
        (["--space", "resnet20_channels", "--proposer", "uniform", "--ratio", "0.3", "--budget", "huge"], "budget"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "prunenas.cli.run_commands.load_data", lambda *_: pytest.fail("data loaded before the input check")
    )
    rc, out, err = run_cli(capsys, "rethink", *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunenas: error:"), err
    assert needle in lines[0] and "Traceback" not in err + out


# -- per-replicate scoring (Frankle et al.: every replicate scores its own init) -------------------------------
def test_each_seed_scores_its_own_init_and_reinit_keeps_that_mask_on_another_init(
    tiny: dict[str, str], tmp_path: Path, spy: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "replicates"
    rc, _out, err = run_cli(
        capsys, "rethink", "--space", tiny["d"], "--proposer", "snip", "--density", "0.3", "--seeds", "2",
        "--ablation", "reinit", *SMOKE, "--epochs", "1", "--out", str(study),
    )  # fmt: skip
    assert rc == 0, err
    space = get_space(tiny["d"])
    data = load_dataset("digits", train_subset=96, val_size=32, seed=0)
    saved = torch.load(study / "masks.pt", weights_only=False)
    assert sorted(saved["per_seed"]) == [0, 1]
    own: dict[int, dict[str, torch.Tensor]] = {}
    scored: dict[int, dict[str, nn.Module]] = {}
    for seed in (0, 1):  # each seed's mask, recomputed independently on that seed's init
        ctx = make_context(space, data=data, seed=seed)
        proposal = run_proposer(get_proposer("snip", "density"), ctx, Target("density", 0.3))
        assert proposal.masks is not None
        own[seed] = {k: v.float() for k, v in proposal.masks.items()}
        scored[seed] = dict(ctx.model.named_modules())
        assert all(torch.equal(saved["per_seed"][seed]["masks"][k], own[seed][k]) for k in own[seed])
    assert any(not torch.equal(own[0][k], own[1][k]) for k in own[0])  # two seeds, two masks

    def init_of(prefix: str, seed: int) -> dict[str, torch.Tensor]:
        return next(c["init_state"] for c in spy if c["out"].name.startswith(f"{prefix}-e1-s{seed}-"))

    for seed in (0, 1):
        mask_arm, reinit = init_of("scratch-e", seed), init_of("reinit", seed)
        for name, mask in own[seed].items():
            assert torch.equal(mask_arm[f"{name}.weight_mask"], mask)
            assert torch.equal(reinit[f"{name}.weight_mask"], mask)  # reinit: seed s's own mask ...
            expected = scored[seed][name].weight.detach() * mask / float(mask.mean()) ** 0.5
            torch.testing.assert_close(mask_arm[f"{name}.weight"], expected)  # ... the mask arm: on the init it scored
            assert not torch.equal(reinit[f"{name}.weight"], mask_arm[f"{name}.weight"])  # reinit: on another init
    # every run says which genotype (that seed's per-layer densities) and which protocol it trained
    for seed in (0, 1):
        run = next(c["out"] for c in spy if c["out"].name.startswith(f"scratch-e-e1-s{seed}-"))
        metrics = json.loads((run / METRICS).read_text())
        assert metrics["genotype"]["genes"] == saved["per_seed"][seed]["genotype"]["genes"]
        assert metrics["protocol"]["protocol"] == "prunenas"
