"""Importance criteria as objects (prunenas.surgery): the registered ones, Torch-Pruning's wrapped, the view of
a dependency group a plain-torch criterion gets, and what becomes of genes without scores."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from prunenas.errors import PrunenasError
from prunenas.spaces import get_space
from prunenas.surgery import (
    IMPORTANCES,
    DependencyGroup,
    Importance,
    TorchPruningImportance,
    channel_scores,
    get_importance,
    register_importance,
)

EXAMPLE = torch.zeros(1, 3, 32, 32)


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, dict[str, str]]:
    space = get_space("resnet20_channels", overrides={"shortcut": "B"})
    torch.manual_seed(0)
    return space.build(), space.structured_genes()


class Recorder(Importance):
    """Scores every channel 1.0 and keeps the groups it was shown."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[DependencyGroup] = []

    def scores(self, group: DependencyGroup) -> torch.Tensor:
        self.seen.append(group)
        return torch.ones(group.width)


class Nothing(Importance):
    """Scores no group."""

    name = "nothing"

    def scores(self, group: DependencyGroup) -> torch.Tensor | None:
        return None


def test_the_named_criteria_are_registered_once() -> None:
    assert list(IMPORTANCES) == ["random", "l1", "l2", "fpgm", "lamp", "taylor", "bn_scale"]
    assert all(isinstance(imp, Importance) and imp.name == name for name, imp in IMPORTANCES.items())
    assert [n for n, imp in IMPORTANCES.items() if imp.keeps_unscored] == ["bn_scale"]
    assert register_importance(IMPORTANCES["l1"]) is IMPORTANCES["l1"]  # the same object again: a no-op
    with pytest.raises(ValueError, match="'l1' is already registered"):
        register_importance(TorchPruningImportance("MagnitudeImportance", name="l1", p=1))
    with pytest.raises(ValueError, match="unknown importance 'nope'; valid: random, l1, l2, fpgm, lamp, taylor"):
        get_importance("nope")
    with pytest.raises(TypeError):
        IMPORTANCES["mine"] = Nothing()  # type: ignore[index]


def test_a_torch_pruning_criterion_by_class_name_or_instance(resnet: tuple[nn.Module, dict[str, str]]) -> None:
    model, genes = resnet
    by_name = channel_scores(model, genes, "l1", EXAMPLE)
    made = TorchPruningImportance("MagnitudeImportance", p=1)
    assert made.name == "MagnitudeImportance"
    wrapped = TorchPruningImportance(made.made(), name="mine")  # an instance of Torch-Pruning's class, wrapped
    for criterion in (IMPORTANCES["l1"], made, wrapped):
        scores = channel_scores(model, genes, criterion, EXAMPLE)
        assert all(torch.equal(scores[g], by_name[g]) for g in genes)
    l2 = channel_scores(model, genes, "l2", EXAMPLE)
    assert any(not torch.equal(l2[g], by_name[g]) for g in genes)
    with pytest.raises(ValueError, match="no criterion class 'NoSuchImportance'"):
        channel_scores(model, genes, TorchPruningImportance("NoSuchImportance"), EXAMPLE)
    with pytest.raises(TypeError):
        TorchPruningImportance(made.made(), p=2)


def test_a_plain_torch_criterion_sees_the_group_in_module_terms() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
    recorder = Recorder()
    scores = channel_scores(model, {"first": "0"}, recorder, EXAMPLE)
    assert torch.equal(scores["first"], torch.ones(8))
    (group,) = recorder.seen
    assert (group.root, group.module, group.width) == ("0", model[0], 8)
    layers = {(layer.path, layer.out): layer for layer in group.layers}
    assert set(layers) == {("0", True), ("1", True), ("3", False)}  # conv out, its BN, the next conv's inputs
    assert layers[("3", False)].module is model[3]
    assert layers[("3", False)].channels == layers[("3", False)].positions == tuple(range(8))


def test_genes_without_scores_are_refused_or_kept_whole(resnet: tuple[nn.Module, dict[str, str]]) -> None:
    model, genes = resnet
    with pytest.raises(PrunenasError, match="importance 'nothing' gives no score for the group"):
        channel_scores(model, genes, Nothing(), EXAMPLE, what="resnet20")

    class KeepWhole(Nothing):
        name = "keep-whole"
        keeps_unscored = True

    kept = channel_scores(model, genes, KeepWhole(), EXAMPLE)
    modules = dict(model.named_modules())
    for gene, path in genes.items():
        assert kept[gene].shape == (modules[path].out_channels,) and bool((kept[gene] == math.inf).all())


def test_bn_scale_keeps_a_layer_without_batchnorm_whole() -> None:
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten(), nn.Linear(4 * 28 * 28, 2))
    scores = channel_scores(model, {"a": "0"}, "bn_scale", EXAMPLE)
    assert torch.equal(scores["a"], torch.full((6,), math.inf))
    with pytest.raises(PrunenasError, match=r"importance 'l1' gives no score for the group\(s\) of \['fc'\]"):
        channel_scores(model, {"a": "0", "fc": "4"}, "l1", EXAMPLE)


def test_a_criterion_must_score_every_channel(resnet: tuple[nn.Module, dict[str, str]]) -> None:
    class Short(Importance):
        name = "short"

        def scores(self, group: DependencyGroup) -> torch.Tensor:
            return torch.ones(group.width - 1)

    model, genes = resnet
    with pytest.raises(PrunenasError, match=r"importance 'short' gave (\d+) scores for the \d+ channels") as err:
        channel_scores(model, genes, Short(), EXAMPLE)
    n = re.search(r"gave (\d+) scores for the (\d+) channels", str(err.value))
    assert n is not None and int(n[1]) + 1 == int(n[2])
