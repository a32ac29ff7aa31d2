"""The supernet evaluator: the evaluator contract, exact channel masks, the sandwich step, a resume that ends with
the weights of an uninterrupted run, `prunenas supernet`, a search judged by it, and the input it refuses."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from prunenas.cli import main
from prunenas.config import RunSettings
from prunenas.data import load_dataset
from prunenas.errors import PrunenasError
from prunenas.evaluators import get_evaluator
from prunenas.evaluators.supernet import Supernet, SupernetOptions
from prunenas.evaluators.supernet_masks import ChannelMasks, smallest_genotype, widest_genotype, widths_of
from prunenas.evaluators.supernet_train import SUPERNET_CHECKPOINT, train_supernet
from prunenas.recipes import make_recipe
from prunenas.spaces import get_space
from prunenas.testing import EvaluatorContract

DIGITS = ["--dataset", "digits", "--train-subset", "96", "--val-size", "32"]
SMALL = SupernetOptions(epochs=1, random_widths=1, images=64)


class TestSupernetContract(EvaluatorContract):
    @pytest.fixture
    def evaluator(self, tmp_path):
        return Supernet(SMALL, root=tmp_path / "supernets")

    @pytest.fixture
    def space(self, space):
        return space


def _candidates(space, n: int) -> list:
    """Random genotypes that narrow only what a supernet can narrow."""
    widest = widest_genotype(space)
    out = []
    for seed in range(n):
        drawn = space.random_genotype(seed).genes
        out.append(space.make({**widest.genes, **{g: drawn[g] for g in space.structured_genes()}}))
    return out


def _with_random_statistics(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # not the init's 0/1: BN's shift must be masked, not just the conv
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    return model


def _narrow_copy(space, genotype, model: nn.Module) -> nn.Module:
    """`space.build(genotype)` holding the leading slices of every tensor of `model` (the widest)."""
    narrow = space.build(genotype, num_classes=10)
    wide = model.state_dict()
    narrow.load_state_dict({k: wide[k][tuple(slice(0, n) for n in v.shape)] for k, v in narrow.state_dict().items()})
    return narrow


def test_a_masked_supernet_computes_the_narrow_model(space):
    """Shortcut B shares each stage's residual width among the stem or first block's conv, every block's second
    conv and the shortcut's conv: all their BatchNorms are masked, so the masked supernet gives the logits of the
    narrow model built with the leading channels, in eval and in train mode (batch statistics included)."""
    torch.manual_seed(0)
    model = _with_random_statistics(space.build(widest_genotype(space), num_classes=10))
    masks = ChannelMasks(space, model)
    x = torch.randn(6, *space.input_shape)
    for genotype in [*_candidates(space, 4), smallest_genotype(space)]:
        masks.apply(widths_of(space, genotype))
        narrow = _narrow_copy(space, genotype, model)
        for train_mode in (False, True):
            model.train(train_mode)
            narrow.train(train_mode)
            with torch.no_grad():
                torch.testing.assert_close(model(x), narrow(x), rtol=1e-5, atol=1e-5)
    masks.apply(None)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), _narrow_copy(space, widest_genotype(space), model).eval()(x))


def test_the_masked_channels_are_exactly_zero_downstream_and_masking_the_genes_layer_alone_is_not_enough(space):
    torch.manual_seed(0)
    model = _with_random_statistics(space.build(widest_genotype(space), num_classes=10)).eval()
    genotype = smallest_genotype(space)
    widths = widths_of(space, genotype)
    seen: dict[str, torch.Tensor] = {}
    blocks = {f"layer{s}.0": f"stage{s}_width" for s in (1, 2, 3)}  # a block's output: its stage's residual stream
    modules = dict(model.named_modules())
    for path in blocks:
        modules[path].register_forward_hook(lambda m, i, o, path=path: seen.__setitem__(path, o.detach()))
    x = torch.randn(4, *space.input_shape)
    narrow = _narrow_copy(space, genotype, model).eval()

    # the check can fail: a mask on each gene's own layer only (a conv, before its BN) leaves the channels alive
    naive = [
        modules[path].register_forward_hook(
            lambda m, i, o, w=widths[gene]: o * (torch.arange(o.shape[1]) < w).float().view(1, -1, 1, 1)
        )
        for gene, path in space.structured_genes().items()
    ]
    with torch.no_grad():
        wrong = model(x)
    assert any(bool(seen[p][:, widths[g] :].abs().sum() > 0) for p, g in blocks.items())
    assert not torch.allclose(wrong, narrow(x), atol=1e-3)
    for h in naive:
        h.remove()

    masks = ChannelMasks(space, model)
    masks.apply(widths)
    with torch.no_grad():
        right = model(x)
    for path, gene in blocks.items():
        assert widths[gene] < seen[path].shape[1]
        assert torch.equal(seen[path][:, widths[gene] :], torch.zeros_like(seen[path][:, widths[gene] :]))
    torch.testing.assert_close(right, narrow(x), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, train_subset=64, val_size=32)


def _train(space, data, folder, epochs: int = 2, random_count: int = 2, log=None):
    recipe = make_recipe("proxy", space.recipe, overrides={"epochs": epochs})
    settings = RunSettings(device="cpu", quiet=True, amp=False)
    return train_supernet(
        space, data, recipe, settings, seed=0, random_count=random_count, folder=folder, log=log or (lambda s: None)
    )


def test_each_step_trains_widest_smallest_and_random_widths_then_steps_once(space, digits, tmp_path, monkeypatch):
    applied: list = []
    steps: list[int] = []
    original_apply, original_step = ChannelMasks.apply, torch.optim.SGD.step

    def apply(self, widths):
        applied.append(None if widths is None else dict(widths))
        original_apply(self, widths)

    def step(self, *args, **kwargs):
        steps.append(len(applied))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(ChannelMasks, "apply", apply)
    monkeypatch.setattr(torch.optim.SGD, "step", step)
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in space.build(widest_genotype(space), num_classes=10).state_dict().items()}
    net = _train(space, digits, tmp_path / "a", epochs=1, random_count=2)
    monkeypatch.undo()

    assert len(steps) == 2  # 64 images, batches of 32: two optimizer steps
    smallest = widths_of(space, smallest_genotype(space))
    first = applied[: steps[0]]
    assert first[0] is None and first[1] == smallest and first[-1] is None and len(first) == 5
    for drawn in first[2:4]:  # random widths: within each gene's bounds, on its step
        for gene, w in drawn.items():
            g = space.gene(gene)
            assert g.smallest() <= w <= g.high and w % g.step == 0
    assert applied[steps[0] : steps[1]][2:4] != first[2:4]  # drawn anew each step
    trained = net.model.state_dict()
    changed = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, trained[k].cpu())]
    assert {k for k in init if k.endswith("conv1.weight")} <= set(changed)
    assert "fc.weight" in changed


def test_a_resumed_supernet_ends_with_the_weights_of_an_uninterrupted_one(space, digits, tmp_path):
    whole = _train(space, digits, tmp_path / "whole").model.state_dict()

    class Killed(Exception):
        pass

    def kill_after_first_epoch(line: str) -> None:
        if "epoch 1/2" in line:
            raise Killed

    with pytest.raises(Killed):
        _train(space, digits, tmp_path / "cut", log=kill_after_first_epoch)
    assert torch.load(tmp_path / "cut" / SUPERNET_CHECKPOINT, weights_only=False)["epoch"] == 1
    lines: list[str] = []
    resumed = _train(space, digits, tmp_path / "cut", log=lines.append)
    assert resumed.trained_now == 1 and "resuming after epoch 1/2" in lines[0]
    again = resumed.model.state_dict()
    assert all(torch.equal(whole[k], again[k]) for k in whole)  # bit for bit

    # read back whole: nothing trained, the same score twice (the trained statistics are put back)
    read = _train(space, digits, tmp_path / "whole", log=lines.append)
    genotype = _candidates(space, 1)[0]
    assert read.trained_now == 0 and read.score(genotype, 64) == read.score(genotype, 64)
    assert all(torch.equal(whole[k], v) for k, v in read.model.state_dict().items())


def test_a_foreign_or_damaged_checkpoint_is_refused_in_one_line(space, digits, tmp_path):
    _train(space, digits, tmp_path / "a", epochs=1)
    with pytest.raises(PrunenasError, match=r"trained otherwise .* --supernet-random-widths") as info:
        _train(space, digits, tmp_path / "a", epochs=1, random_count=0)
    assert "\n" not in str(info.value) and SUPERNET_CHECKPOINT in str(info.value)
    state = torch.load(tmp_path / "a" / SUPERNET_CHECKPOINT, weights_only=False)
    torch.save({**state, "space": "resnet20_channels"}, tmp_path / "a" / SUPERNET_CHECKPOINT)
    with pytest.raises(PrunenasError, match="holds the supernet of space 'resnet20_channels', not 'tiny_resnet8'"):
        _train(space, digits, tmp_path / "a", epochs=1)
    (tmp_path / "a" / SUPERNET_CHECKPOINT).write_bytes(b"\x80\x02truncated")
    with pytest.raises(PrunenasError, match=r"unreadable .* delete it to train the supernet again"):
        _train(space, digits, tmp_path / "a", epochs=1)


def test_prunenas_supernet_trains_once_then_reads_it_back(tmp_path, tiny_toml, capsys):
    argv = ["supernet", "--space", str(tiny_toml), *DIGITS, "--supernet-epochs", "1", "--supernet-images", "64",
            "--device", "cpu", "--out", str(tmp_path / "sn"), "--json"]  # fmt: skip
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["trained_now"] == 1 and (tmp_path / "sn" / SUPERNET_CHECKPOINT).exists()
    assert 0.0 <= first["widest"]["val_acc"] <= 1.0 and first["smallest"]["macs"] < first["widest"]["macs"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    second = json.loads(captured.out)
    assert second["trained_now"] == 0 and "epoch" not in captured.err  # read back, not trained
    assert second["widest"] == first["widest"] and second["smallest"] == first["smallest"]
    assert main([*argv[:-1]]) == 0  # the table
    out = capsys.readouterr().out
    assert "val accuracy, smallest widths" in out and str(tmp_path / "sn") in out


def test_a_search_judged_by_the_supernet_trains_it_once(tmp_path, tiny_toml, capsys):
    out = tmp_path / "s"
    argv = ["search", "--space", str(tiny_toml), *DIGITS, "--budget", "smoke", "--trials", "4", "--no-final",
            "--evaluator", "supernet", "--supernet-epochs", "1", "--supernet-images", "64", "--out", str(out),
            "--json"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "trials.json").read_text())
    judged = [r for r in rows if r["state"] == "COMPLETE"]
    assert judged and all(r["evaluator"] == "supernet" and r["epochs_run"] == 0 for r in judged)
    assert all(0.0 <= r["val_acc"] <= 1.0 and r["eval_time_s"] >= 0 for r in judged)
    assert len(list((out / "supernet").glob(f"*/{SUPERNET_CHECKPOINT}"))) == 1  # trained once, in the study
    assert "supernet tiny_resnet8: epoch 1/1" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluator"]["name"] == "supernet"


def test_what_it_serves_and_the_genes_it_keeps():
    supernet = get_evaluator("supernet", {"epochs": 3})
    assert isinstance(supernet, Supernet) and supernet.options == SupernetOptions(epochs=3)
    density = get_space("resnet20_density")
    why = supernet.serves(density)
    assert why is not None and "density space" in why and "\n" not in why
    shortcut_a = get_space("resnet20_channels")
    assert supernet.serves(shortcut_a) is None
    assert set(supernet.fixed_genes(shortcut_a)) == {"stage1_width", "stage2_width", "stage3_width"}
    widened = shortcut_a.make({**shortcut_a.reference().genes, "stage1_width": 8})
    with pytest.raises(PrunenasError, match="no channel mask of a supernet can narrow"):
        widths_of(shortcut_a, widened)


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--space", "resnet20_density", *DIGITS, "--budget", "smoke", "--evaluator", "supernet"],
        ["supernet", "--space", "resnet20_density", *DIGITS],
        ["supernet", "--space", "resnet20_channels", *DIGITS, "--supernet-epochs", "0"],
        ["supernet", "--space", "resnet20_channels", *DIGITS, "--supernet-random-widths", "x"],
    ],
)
def test_bad_input_is_one_line(argv, tmp_path, capsys):
    code = main([*argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert ("density space" in err) or ("--supernet-" in err)
    assert not (tmp_path / "o").exists()


def test_random_widths_are_reproducible(space):
    from prunenas.evaluators.supernet_masks import random_widths

    a = random_widths(space, random.Random("x"))
    assert a == random_widths(space, random.Random("x")) and set(a) == set(space.structured_genes())


def test_help_has_examples_and_states_every_default():
    import argparse

    from prunenas.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["supernet"].format_help()
    examples = text.split("\nexamples:\n", 1)[1].strip().splitlines()
    assert examples and all(e.strip().startswith("prunenas supernet") for e in examples)
    stated = [
        a.option_strings[-1]
        for a in sub.choices["supernet"]._actions
        if a.option_strings and a.default not in (None, False, argparse.SUPPRESS) and "default" not in (a.help or "")
    ]
    assert not stated
    flat = " ".join(text.split())
    assert "--supernet-random-widths N random sub-networks" in flat and "sandwich rule) (default 2)" in flat


def test_a_search_uses_the_supernet_prunenas_supernet_trained(tmp_path, tiny_toml, monkeypatch, capsys):
    """`prunenas supernet` keeps its supernet in runs/supernet; `--supernet-dir runs/supernet` makes a search
    read it back instead of training its own in the study folder."""
    from prunenas.cli import main

    monkeypatch.chdir(tmp_path)
    data = ["--dataset", "digits", "--train-subset", "96", "--val-size", "32"]
    assert main(["supernet", "--space", str(tiny_toml), *data, "--supernet-epochs", "1", "--json"]) == 0
    trained = sorted((tmp_path / "runs" / "supernet").glob("*/supernet.pt"))
    assert len(trained) == 1
    before = trained[0].stat().st_mtime_ns
    capsys.readouterr()
    argv = ["search", "--space", str(tiny_toml), *data, "--budget", "smoke", "--trials", "2", "--no-final",
            "--proposers", "uniform", "--evaluator", "supernet", "--supernet-epochs", "1", "--supernet-dir",
            "runs/supernet", "--out", "s", "-q"]  # fmt: skip
    assert main(argv) == 0
    assert trained[0].stat().st_mtime_ns == before  # read back, not trained again
    assert not (tmp_path / "s" / "supernet").exists()


def test_an_unwritable_supernet_dir_is_refused_before_the_study_exists(tmp_path, tiny_toml, monkeypatch, capsys):
    from prunenas.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file where the folder should go\n")
    argv = ["search", "--space", str(tiny_toml), "--dataset", "digits", "--train-subset", "96", "--budget", "smoke",
            "--trials", "1", "--no-final", "--evaluator", "supernet", "--supernet-dir", "taken/sub",
            "--out", "s"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--supernet-dir" in err and "Traceback" not in err, err
    assert not (tmp_path / "s" / "study.journal").exists() and not list(tmp_path.glob("s/**/*.journal"))
