"""A third party brings its own channel importance criterion, as it would from its own package: an `Importance`
subclass in plain torch, a `CriterionProposer` subclass that ranks by it, and one entry-point line. The
distribution is "installed" by writing its module and dist-info into tmp_path and putting that on sys.path
(as tests/test_plugins.py does); nothing in prunenas changes.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from prunenas.cli import main
from prunenas.proposers import base
from prunenas.proposers.base import Target, get_proposer, proposers
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.spaces import get_space
from prunenas.surgery import channel_scores

MODULE = "rootmeanabs_plugin"
PLUGIN = '''
"""A channel criterion and the proposer that ranks by it, in plain torch."""
import torch

from prunenas.proposers.structured import CriterionProposer
from prunenas.surgery import DependencyGroup, Importance


class RootMeanAbs(Importance):
    """Each channel scored by the mean |w| of its filter in the group's root layer."""

    name = "root_mean_abs"

    def scores(self, group: DependencyGroup) -> torch.Tensor:
        return group.module.weight.detach().abs().flatten(1).mean(1)


class RootMeanAbsProposer(CriterionProposer):
    name = "root-mean-abs"
    summary = "mean |w| of each filter of the group's root layer, one ranking over all layers"
    needs_trained = False  # scores a seeded init as well as trained weights
    importance = RootMeanAbs()
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The plugin installed, its entry points read (which imports its module); yields the module."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{MODULE}.py").write_text(PLUGIN, encoding="utf-8")
    dist = site / f"{MODULE}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {MODULE}\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[prunenas.proposers]\nroot-mean-abs = {MODULE}:RootMeanAbsProposer\n")
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop(MODULE, None)
    base.clear_cache()
    proposers()
    yield sys.modules[MODULE]
    base.clear_cache()
    sys.modules.pop(MODULE, None)


def _expected_widths(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, int]:
    """What ranking `scores` globally keeps: the int(ratio * N) lowest-scoring channels over all genes go, in
    ascending order, none from a gene down to its last channel."""
    ranked = sorted((float(v), gene) for gene, s in scores.items() for v in s)
    widths = {gene: s.numel() for gene, s in scores.items()}
    to_remove = int(ratio * len(ranked))
    for _, gene in ranked:
        if to_remove == 0:
            break
        if widths[gene] > 1:
            widths[gene] -= 1
            to_remove -= 1
    return widths


def test_the_plugin_proposer_is_registered(plugin: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    proposer = get_proposer("root-mean-abs", "channels")
    assert type(proposer) is plugin.RootMeanAbsProposer
    assert type(proposer) in proposers("channels")
    assert main(["proposers", "--json"]) == 0
    listed = {(p["name"], p["kind"]) for p in json.loads(capsys.readouterr().out)}
    assert ("root-mean-abs", "channels") in listed


def test_it_proposes_by_its_own_scores(plugin: ModuleType) -> None:
    space = get_space("resnet20_channels")
    ctx = make_context(space, seed=0)
    genes = space.structured_genes()
    modules = dict(ctx.model.named_modules())
    own = {g: modules[path].weight.detach().abs().flatten(1).mean(1) for g, path in genes.items()}

    # the criterion sees each gene's group rooted at the gene's own conv, so channel_scores gives its formula
    example = torch.zeros(1, *space.input_shape)
    scored = channel_scores(ctx.model, genes, plugin.RootMeanAbs(), example, ignored=space.output_layers())
    assert all(torch.allclose(scored[g], own[g]) for g in genes)

    proposal = run_proposer(get_proposer("root-mean-abs", "channels"), ctx, Target("ratio", 0.5))
    genotype = space.validate(proposal.genotype)
    assert genotype.provenance["proposer"] == "root-mean-abs"
    assert space.build(genotype)(torch.zeros(2, *space.input_shape)).shape == (2, 10)
    widths = {g: int(genotype.genes[g]) for g in genes}
    assert widths == _expected_widths(own, 0.5)
    assert sum(widths.values()) == sum(s.numel() for s in own.values()) - int(
        0.5 * sum(s.numel() for s in own.values())
    )
    # its own ranking, not a registered criterion's: L1 (normalised per group) keeps other widths
    as_trained = dataclasses.replace(ctx, trained=True)  # l1 scores trained weights; the same init will do here
    l1 = run_proposer(get_proposer("l1", "channels"), as_trained, Target("ratio", 0.5)).genotype
    assert widths != {g: int(l1.genes[g]) for g in genes}
    assert widths != {g: max(1, int(space.gene(g).reference * 0.5)) for g in genes}  # nor a uniform cut


def test_it_meets_a_macs_target(plugin: ModuleType) -> None:
    space = get_space("resnet20_channels")
    proposal = run_proposer(
        get_proposer("root-mean-abs", "channels"), make_context(space, seed=1), Target("macs_ratio", 0.5)
    )
    assert abs(proposal.genotype.provenance["proposer_info"]["achieved_macs_ratio"] - 0.5) <= 0.02 * 0.5
