"""The Python API: what a notebook needs, from one import.

    import prunenas as pn

    space = pn.get_space("resnet20_channels")
    genotype = pn.load_genotype("li2017_resnet56_b")          # a file, a shipped name, or a space name
    model = pn.build(genotype)                                # a freshly initialised nn.Module
    print(pn.count_cost(genotype).macs)                       # 90,907,264
    proposal = pn.propose("resnet20_channels", "l1", macs_ratio=0.5)
    trained = pn.train_model(proposal, data="digits", recipe="proxy", epochs=2)
    trained.model, trained.result.val_acc
    found = pn.search_architectures("resnet20_channels", data="digits", budget="smoke", trials=4)
    found.winners, found.study                                # the winners and the Optuna study
    pn.export_onnx(run_dir)                                   # ONNX + parity check

The names avoid those of the submodules (`prunenas.train`, `prunenas.cost`, `prunenas.search`,
`prunenas.export`), which stay importable as modules.

Every function validates its arguments like the CLI does (`PrunenasError` with a one-line message).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunenas.config import DataConfig, RunSettings
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.spaces import Space, get_space

if TYPE_CHECKING:
    from torch import nn

    from prunenas.cost import Cost
    from prunenas.data import DatasetSplits
    from prunenas.export import ExportResult
    from prunenas.recipes import Recipe
    from prunenas.search import SearchOutcome
    from prunenas.train import TrainResult


def _space_of(space: Space | str | None, genotype: Genotype | None = None) -> Space:
    if isinstance(space, Space):
        return space
    if space is not None:
        return get_space(space)
    if genotype is None:
        raise PrunenasError("name a space (e.g. resnet20_channels) or pass a genotype")
    return get_space(genotype.space)


def load_genotype(source: Genotype | str | Path, space: Space | str | None = None) -> Genotype:
    """A validated genotype from a Genotype, a JSON file, the name of a shipped genotype
    (`li2017_resnet56_b`), or a space name (its reference genotype). `space` re-targets it."""
    from prunenas.spaces import space_names
    from prunenas.spaces.traced import is_factory_name

    if isinstance(source, Genotype):
        genotype = source
    elif space is not None and isinstance(source, str) and source == _space_of(space).name:
        genotype = _space_of(space).reference()  # a space given by its file, named by its name
    elif isinstance(source, str) and source in space_names() and not os.path.exists(source):
        genotype = get_space(source).reference()
    elif isinstance(source, str) and is_factory_name(source) and not os.path.exists(source):
        genotype = get_space(source).reference()  # a model factory name: its unpruned model
    else:
        genotype = Genotype.load(source)
    target = _space_of(space, genotype)
    if target.name != genotype.space:
        genotype = Genotype(target.name, genotype.genes, genotype.provenance)
    return target.validate(genotype)


def build(genotype: Genotype | str | Path, *, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """A freshly initialised model of the genotype (seeded)."""
    import torch

    g = load_genotype(genotype)
    torch.manual_seed(seed)
    return _space_of(None, g).build(g, num_classes=num_classes)


def count_cost(genotype: Genotype | str | Path, *, num_classes: int | None = None) -> Cost:
    """MACs and params of a genotype and of its space's reference (see `prunenas.cost`)."""
    from prunenas.cost import genotype_cost

    g = load_genotype(genotype)
    return genotype_cost(_space_of(None, g), g, num_classes=num_classes)


def load_data(data: DataConfig | DatasetSplits | str = "digits", *, seed: int = 0, **settings: Any) -> DatasetSplits:
    """Train/val/test splits: a dataset name with DataConfig settings (data_dir, train_subset, val_size),
    a DataConfig, or splits already loaded."""
    from prunenas.data import DatasetSplits, load_dataset

    if isinstance(data, DatasetSplits):
        return data
    cfg = data if isinstance(data, DataConfig) else DataConfig(dataset=data, **settings)
    data_dir = cfg.data_dir or os.environ.get("PRUNENAS_DATA") or None
    return load_dataset(
        cfg.dataset, data_dir, val_size=cfg.val_size, train_subset=cfg.train_subset, seed=seed,
        normalize=cfg.normalize, image_size=cfg.image_size, stored_size=cfg.stored_size, data_cache=cfg.data_cache,
        bad_images=cfg.bad_images,
    )  # fmt: skip


@dataclass(frozen=True)
class TrainedModel:
    """A trained model with its run's result, genotype, recipe and folder."""

    model: nn.Module
    result: TrainResult
    genotype: Genotype
    recipe: Recipe
    run_dir: Path | None


def make_recipe_for(
    genotype: Genotype, recipe: str = "standard", scratch_b_cap: float | None = None, **overrides: Any
) -> Recipe:
    """The named recipe from the genotype's space's defaults, with overrides (scratch-b scaled by MACs)."""
    from prunenas.cost import genotype_cost
    from prunenas.recipes import make_recipe

    space = _space_of(None, genotype)
    c = genotype_cost(space, genotype)
    return make_recipe(
        recipe, space.recipe, macs=c.macs, reference_macs=c.reference_macs, scratch_b_cap=scratch_b_cap,
        overrides=overrides,
    )  # fmt: skip


def train_model(
    genotype: Genotype | str | Path,
    data: DataConfig | DatasetSplits | str = "digits",
    recipe: str = "standard",
    *,
    seed: int = 0,
    out: str | Path | None = None,
    weights: Mapping[str, Any] | str | Path | None = None,
    settings: RunSettings | None = None,
    teacher: Any = None,
    **recipe_overrides: Any,
) -> TrainedModel:
    """Train a genotype from scratch (or from `weights`) and return the trained model with its metrics.
    With `out`, the run folder is kept (and resumed on a second call); without, a temporary one is used.
    `teacher` (a model or a checkpoint.pt of the space's reference) makes the run distill from it."""
    import torch

    from prunenas.train import CHECKPOINT, load_model_state
    from prunenas.train import train as run_training

    g = load_genotype(genotype)
    space = _space_of(None, g)
    splits = load_data(data, seed=seed)
    r = make_recipe_for(g, recipe, **recipe_overrides)
    run = (settings or RunSettings(quiet=True)).replace(seed=seed)
    init = load_model_state(weights) if isinstance(weights, str | Path) else weights
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        result = run_training(space, g, splits, r, run, out_dir=folder, init_state=init, teacher=teacher)
        model = space.build(g, num_classes=splits.num_classes)
        state = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=False)["model"]
        model.load_state_dict(state)
    return TrainedModel(model.eval(), result, g, r, Path(out) if out is not None else None)


def propose(
    space: Space | str,
    proposer: str,
    *,
    ratio: float | None = None,
    macs_ratio: float | None = None,
    density: float | None = None,
    reference: str | Path | None = None,
    data: DataConfig | DatasetSplits | str | None = None,
    seed: int = 0,
    device: str = "auto",
    **options: Any,
) -> Genotype:
    """Run a pruning method on a space and return the genotype it decides (with provenance)."""
    from prunenas.proposers.base import Target, get_proposer
    from prunenas.proposers.runner import make_context, run_proposer

    s = _space_of(space)
    given = [(k, v) for k, v in (("ratio", ratio), ("macs_ratio", macs_ratio), ("density", density)) if v is not None]
    if len(given) != 1:
        raise PrunenasError("give exactly one target: ratio=R, macs_ratio=R or density=D")
    target = Target(given[0][0], given[0][1])  # type: ignore[arg-type]
    method = get_proposer(proposer, s.proposer_kind, **options)
    splits = load_data(data, seed=seed) if data is not None else None
    ctx = make_context(s, data=splits, reference=reference, seed=seed, device=device)
    return run_proposer(method, ctx, target).genotype


def search_architectures(
    space: Space | str,
    data: DataConfig | str = "digits",
    budget: str = "smoke",
    *,
    seed: int = 0,
    device: str = "auto",
    **settings: Any,
) -> SearchOutcome:
    """Run (or resume) an architecture search; `settings` are `SearchSettings` fields (trials, objectives,
    max, out, ...). The outcome holds the winners and the Optuna study (`outcome.study`)."""
    from prunenas.search import SearchSettings, run_search
    from prunenas.search.config import resolve_search

    s = _space_of(space)
    cfg = data if isinstance(data, DataConfig) else DataConfig(dataset=data)
    search_settings = SearchSettings(budget=budget, **settings)
    config = resolve_search(
        s, str(space) if not isinstance(space, Space) else s.source, cfg, search_settings,
        RunSettings(seed=seed, device=device, quiet=True), {},
    )  # fmt: skip
    splits = load_data(config.data_config(), seed=seed)
    return run_search(config, s, splits, log=lambda _msg: None)


def export_onnx(run_dir: str | Path, out: str | Path | None = None, **options: Any) -> ExportResult:
    """Export a trained run folder to ONNX, verified with onnx.checker and ONNX Runtime parity."""
    from prunenas.export import export_run

    return export_run(run_dir, out, **options)
