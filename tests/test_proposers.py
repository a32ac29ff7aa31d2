"""Contract suite over every registered proposer, plus Li et al.'s exact rule and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from prunenas.cli import main
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.proposers.base import Target, get_proposer, proposers
from prunenas.proposers.runner import MACS_TOLERANCE, make_context, run_proposer
from prunenas.proposers.widths import global_widths, local_widths
from prunenas.spaces import get_space, shipped_genotypes

# Keep the slow ones fast in tests: fewer SynFlow iterations, one sparsity epoch for slimming.
FAST_OPTIONS = {"synflow": {"iterations": 10}, "slimming": {"sparsity_epochs": 1}}
ALL = [(cls.name, cls.kind) for cls in proposers()]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, train_subset=160, val_size=32)


def space_for(kind: str, name: str):
    if kind == "density":
        return get_space("resnet20_density")
    if name == "l1-paper":
        return get_space("resnet56_channels")
    return get_space("resnet20_channels", overrides={"shortcut": "B"})


def context(space, data, seed=0, trained=True):
    ctx = make_context(space, data=data, seed=seed)
    # Contract tests score a seeded init as if trained: the rules are what is under test.
    return type(ctx)(**{**ctx.__dict__, "trained": trained})


def test_every_builtin_is_registered():
    names = {(n, k) for n, k in ALL}
    for expected in ["uniform", "random", "l1", "l2", "slimming", "taylor", "fpgm", "lamp", "l1-paper"]:
        assert (expected, "channels") in names
    for expected in ["magnitude", "snip", "grasp", "graspabs", "synflow", "random", "erk", "uniform"]:
        assert (expected, "density") in names


@pytest.mark.parametrize(("name", "kind"), ALL, ids=[f"{n}-{k}" for n, k in ALL])
def test_contract(name, kind, digits):
    space = space_for(kind, name)
    proposer = get_proposer(name, kind, **FAST_OPTIONS.get(name, {}))
    ctx = context(space, digits)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    target = Target("density", 0.2) if kind == "density" else Target("macs_ratio", 0.5)
    if name == "l1-paper":
        target = Target("macs_ratio", 0.8)
    first = run_proposer(proposer, ctx, target).genotype
    # a valid genotype of the space
    assert space.validate(first) == first
    # the target is met
    achieved = first.provenance["achieved"]
    if kind == "density":
        assert space.achieved(first)["density"] == pytest.approx(0.2, abs=0.005)
        assert achieved["density"] == pytest.approx(0.2, abs=0.005)
    else:
        assert abs(achieved["macs_ratio"] - target.value) <= MACS_TOLERANCE * target.value
    # provenance says who, what and how
    assert first.provenance["proposer"] == name
    assert first.provenance["target"] == target.to_dict()
    assert first.provenance["seed"] == 0
    assert "clamped" in first.provenance
    # the context's model is left alone
    after = ctx.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # same seed, same genotype
    again = run_proposer(get_proposer(name, kind, **FAST_OPTIONS.get(name, {})), context(space, digits), target)
    assert again.genotype == first


@pytest.mark.parametrize(("name", "kind"), ALL, ids=[f"{n}-{k}" for n, k in ALL])
def test_needs_trained_is_honoured(name, kind, digits):
    cls = next(c for c in proposers(kind) if c.name == name)
    space = space_for(kind, name)
    proposer = cls(**FAST_OPTIONS.get(name, {}))
    target = Target("density", 0.3) if kind == "density" else Target("macs_ratio", 0.8)
    ctx = context(space, digits, trained=False)
    if cls.needs_trained:
        with pytest.raises(PrunenasError, match="--reference"):
            run_proposer(proposer, ctx, target)
    else:
        assert run_proposer(proposer, ctx, target).genotype.provenance["trained_reference"] is False


@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_ratio_targets(ratio, digits):
    space = get_space("resnet20_channels", overrides={"shortcut": "B"})
    proposal = run_proposer(get_proposer("l1", "channels"), context(space, digits), Target("ratio", ratio))
    info = proposal.genotype.provenance["proposer_info"]
    assert info["ratio"] == ratio
    # int(ratio * N) of the prunable channels go
    total = sum(space.reference().genes[g] for g in space.structured_genes())
    kept = sum(proposal.genotype.genes[g] for g in space.structured_genes())
    assert total - kept == int(ratio * total)


def test_local_ranking_gives_the_same_widths_for_every_criterion(digits):
    """The GUIDE's warning, as a property: local ranking is a uniform multiplier."""
    space = get_space("resnet20_channels", overrides={"shortcut": "B"})
    found = set()
    for name in ["l1", "l2", "fpgm", "random"]:
        p = get_proposer(name, "channels", global_ranking=False)
        found.add(run_proposer(p, context(space, digits), Target("ratio", 0.5)).genotype)
    found.add(run_proposer(get_proposer("uniform", "channels"), context(space, digits), Target("ratio", 0.5)).genotype)
    assert len(found) == 1


def test_option_a_prunes_only_inner_widths(digits):
    space = get_space("resnet56_channels")
    g = run_proposer(get_proposer("l1", "channels"), context(space, digits), Target("macs_ratio", 0.5)).genotype
    assert [g.genes[f"stage{s}_width"] for s in (1, 2, 3)] == [16, 32, 64]
    # and the genotype builds and runs (Torch-Pruning never touched the option-A model)
    assert space.build(g)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_criteria_table_makes_one_importable_class_per_row():
    from prunenas.proposers import structured
    from prunenas.surgery import IMPORTANCES, Importance

    for row in structured.CRITERIA:
        cls = getattr(structured, row.cls)
        assert cls.__name__ == row.cls and cls.__module__ == structured.__name__
        assert (cls.name, cls.importance, cls.needs_trained, cls.quick) == (
            row.proposer, row.importance, row.needs_trained, row.quick,
        )  # fmt: skip
        assert isinstance(row.importance, Importance)
        assert IMPORTANCES[row.importance.name] is row.importance  # a registered criterion, registered once
        assert get_proposer(row.proposer, "channels").__class__ is cls
    taylor = structured.TaylorProposer
    assert taylor.needs_data and taylor.gradient and taylor.options["batch_size"] == 128
    assert not structured.L1Proposer.needs_data and "batch_size" not in structured.L1Proposer.options


@pytest.mark.parametrize(("space_name", "lam"), [("vgg16_channels", 1e-4), ("resnet20_channels", 1e-5)])
def test_slimming_default_lambda_comes_from_the_space(space_name, lam, digits, monkeypatch):
    seen = {}

    def recipe(*args, overrides=None, **kwargs):
        seen.update(overrides or {})
        raise RuntimeError("stop before training")

    monkeypatch.setattr("prunenas.recipes.make_recipe", recipe)
    ctx = context(get_space(space_name), digits)
    with pytest.raises(RuntimeError, match="stop before training"):
        get_proposer("slimming", "channels").propose(ctx, Target("ratio", 0.3))
    assert seen["bn_l1"] == lam


@pytest.mark.parametrize(
    ("shipped", "space", "variant", "ratio"),
    [
        ("li2017_resnet56_a", "resnet56_channels", "A", 0.1),
        ("li2017_resnet56_b", "resnet56_channels", "B", 0.6),
        ("li2017_resnet110_a", "resnet110_channels", "A", 0.5),
        ("li2017_resnet110_b", "resnet110_channels", "B", 0.5),
        ("li2017_vgg16_a", "vgg16_channels", "A", 0.5),
    ],
)
def test_l1_paper_equals_the_shipped_files(shipped, space, variant, ratio):
    s = get_space(space)
    ctx = make_context(s, seed=0)
    proposal = run_proposer(get_proposer("l1-paper", "channels", variant=variant), ctx, Target("ratio", ratio))
    expected = Genotype.load(shipped_genotypes()[shipped])
    assert dict(proposal.genotype.genes) == dict(expected.genes)


def test_l1_paper_refuses_other_depths():
    s = get_space("resnet20_channels")
    with pytest.raises(PrunenasError, match="ResNet-56"):
        run_proposer(get_proposer("l1-paper", "channels"), make_context(s), Target("ratio", 0.5))


def test_global_widths_respect_the_floor_and_report_clamping():
    scores = {"a": torch.tensor([0.0, 0.1, 0.2, 0.3]), "b": torch.tensor([5.0, 6.0, 7.0, 8.0])}
    widths, clamped = global_widths(scores, 0.5, floor=2)
    # the four lowest scores all sit in "a", which may only lose two: "b" gives up the other two
    assert widths == {"a": 2, "b": 2}
    assert clamped == {"a": 0}
    widths, clamped = global_widths(scores, 0.5, floor=1)
    assert widths == {"a": 1, "b": 3} and clamped == {"a": 0}
    assert local_widths({"a": 16, "b": 3}, 0.9, floor=1) == ({"a": 1, "b": 1}, {"b": 0})


def test_channel_proposers_refuse_density_spaces_and_bad_targets(digits):
    with pytest.raises(PrunenasError, match="density"):
        get_proposer("l1", "density")
    with pytest.raises(PrunenasError, match="unknown proposer"):
        get_proposer("nope")
    with pytest.raises(PrunenasError, match="unknown option"):
        get_proposer("l1", "channels", bogus=1)
    with pytest.raises(PrunenasError, match="in \\(0, 1\\]"):
        Target("macs_ratio", 0.0)
    with pytest.raises(PrunenasError, match="in \\[0, 1\\)"):
        Target("ratio", 1.0)
    space = get_space("resnet20_channels")
    with pytest.raises(PrunenasError, match="--density"):
        run_proposer(get_proposer("uniform", "channels"), context(space, digits), Target("density", 0.5))
    with pytest.raises(PrunenasError, match="reach"):
        run_proposer(get_proposer("uniform", "channels"), context(space, digits), Target("macs_ratio", 0.001))


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_propose_writes_a_genotype(tmp_path, capsys):
    out = tmp_path / "g.json"
    code = main(
        ["propose", "--space", "resnet20_channels", "--proposer", "uniform", "--macs-ratio", "0.5", "-o", str(out)]
    )
    assert code == 0
    g = Genotype.load(out)
    assert g.space == "resnet20_channels" and g.provenance["proposer"] == "uniform"
    assert abs(g.provenance["achieved"]["macs_ratio"] - 0.5) <= 0.01
    assert "wrote" in capsys.readouterr().out


def test_cli_propose_with_quick_reference_and_show(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "propose", "--space", "resnet20_channels", "--proposer", "l1", "--ratio", "0.4", "--dataset", "digits",
            "--train-subset", "64", "--pretrain-epochs", "1", "--quiet", "-o", "g.json", "--json",
        ]
    )  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["trained_reference"] is True and printed["reference"].endswith("checkpoint.pt")
    assert main(["show", "g.json", "--plot", "profile.png"]) == 0
    assert (tmp_path / "profile.png").stat().st_size > 1000
    assert "stage1_block1" in capsys.readouterr().out


def test_cli_proposers_lists_needs(capsys):
    assert main(["proposers", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["name"], r["kind"]): r for r in rows}
    assert by[("l1", "channels")]["needs_trained"] is True
    assert by[("synflow", "density")]["needs_data"] is False
    assert by[("snip", "density")]["needs_data"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--space", "resnet20_channels", "--proposer", "l1", "--ratio", "0.5"], "--reference"),
        (["--space", "resnet20_channels", "--proposer", "nope", "--ratio", "0.5"], "unknown proposer"),
        (["--space", "resnet20_channels", "--proposer", "uniform"], "exactly one"),
        (
            ["--space", "resnet20_channels", "--proposer", "uniform", "--ratio", "0.5", "--density", "0.5"],
            "exactly one",
        ),
        (["--space", "resnet20_channels", "--proposer", "uniform", "--ratio", "1.5"], "out of range"),
        (["--space", "resnet20_density", "--proposer", "l1-paper", "--density", "0.5"], "channels"),
        (["--space", "resnet20_channels", "--proposer", "l1", "--ratio", "0.5", "--reference", "/nope.pt"], "exist"),
        (["--space", "resnet20_channels", "--proposer", "uniform", "--ratio", "0.5", "--option", "x"], "NAME=VALUE"),
    ],
)
def test_cli_propose_bad_input(capsys, argv, message):
    code = main(["propose", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("prunenas: error:") and "Traceback" not in err
    assert message in err


def test_reference_of_another_space_is_refused(tmp_path, digits):
    from prunenas.recipes import make_recipe
    from prunenas.train import RunSettings, train

    space = get_space("resnet20_channels")
    g = space.make({**space.reference().genes, "stage1_block1": 4})
    recipe = make_recipe("proxy", {}, overrides={"epochs": 1, "batch_size": 32})
    train(space, g, digits, recipe, RunSettings(quiet=True, plot=False), out_dir=tmp_path)
    with pytest.raises(PrunenasError, match="not the reference"):
        make_context(space, reference=tmp_path / "checkpoint.pt")
