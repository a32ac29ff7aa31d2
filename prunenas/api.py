"""The Python API: what a notebook needs, from one import.

    import prunenas as pn

    space = pn.get_space("resnet20_channels")
    genotype = pn.load_genotype("li2017_resnet56_b")          # a file, a shipped name, or a space name
    model = pn.build(genotype)                                # a freshly initialised nn.Module
    print(pn.count_cost(genotype).macs)                       # 90,907,264
    proposal = pn.propose("resnet20_channels", "l1", macs_ratio=0.5)
    trained = pn.train_model(proposal, data="digits", recipe="proxy", epochs=2)
    trained.model, trained.result.val_acc
    found = pn.search_architectures("resnet20_channels", data="digits", budget="smoke", trials=4,
                                    recipe={"lr": 0.05})  # every setting of `prunenas search`
    found.winners, found.study                                # the winners and the Optuna study
    pn.export_onnx(run_dir)                                   # ONNX + parity check

The names avoid those of the submodules (`prunenas.train`, `prunenas.cost`, `prunenas.search`,
`prunenas.export`), which stay importable as modules.

Every function checks its arguments where they enter (`_arg` and its helpers): a wrong type or value is a
`PrunenasError` (a `ConfigError`) of one line naming the function, the parameter, what was given and what is
valid, never a TypeError from torch or pathlib. A genotype is accepted as a `Genotype`, a genotype dict (the
JSON file's mapping), a file path, a shipped genotype name or a space name.
"""

from __future__ import annotations

import inspect
import numbers
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunenas import prepare
from prunenas.config import DATASETS, DEVICES, ConfigError, DataConfig, RunSettings, check_arg
from prunenas.cost import genotype_cost
from prunenas.data import DatasetSplits
from prunenas.evaluators.builtin import CallableEvaluator, function_label
from prunenas.export import export_run
from prunenas.genotype import Genotype
from prunenas.proposers.base import Target, get_proposer
from prunenas.proposers.runner import make_context, run_proposer
from prunenas.recipes import RECIPES, PartialRecipe, Recipe, make_recipe
from prunenas.search import SearchSettings, run_search
from prunenas.search.config import prepare_search
from prunenas.spaces import Space, space_names
from prunenas.spaces import get_space as _get_space
from prunenas.spaces.registry import space_for_genotype
from prunenas.spaces.traced import is_factory_name
from prunenas.train import CHECKPOINT, Teacher, load_model_state
from prunenas.train import train as run_training

if TYPE_CHECKING:
    from torch import nn

    from prunenas.cost import Cost
    from prunenas.data import DatasetSplits
    from prunenas.export import ExportResult
    from prunenas.recipes import Recipe
    from prunenas.search import SearchOutcome
    from prunenas.train import TrainResult

PathLike = str | os.PathLike[str]

# -- arguments, checked where they enter --------------------------------------------------------------------
_GENOTYPE = (
    "a Genotype, a genotype dict {'space': NAME, 'genes': {...}}, the path of a genotype JSON file, a shipped "
    "genotype name (li2017_resnet56_b) or a space name (its reference)"
)
_SPACE = "a Space, a space name (see prunenas.space_names()), a model name (torchvision:NAME) or a .toml path"
_DATA = "a dataset name (digits, cifar10, cifar100, imagefolder), a DataConfig or the DatasetSplits of load_data()"


def _arg(where: str, name: str, value: Any, valid: str, *types: type, **bounds: Any) -> Any:
    """Argument `name` of function `where` checked against `types` and `bounds` (`prunenas.config.check_arg`);
    a path given as text must not be empty."""
    value = check_arg(where, name, value, valid, *types, **bounds)
    if isinstance(value, str) and not value.strip() and os.PathLike in types:
        raise ConfigError(f"{where}: {name} must be {valid}, got an empty string")
    return value


def _path(where: str, name: str, value: Any, what: str, *, optional: bool = False) -> Path | None:
    checked = _arg(where, name, value, f"{what} (str or pathlib.Path)", str, os.PathLike, optional=optional)
    return None if checked is None else Path(checked)


def _seed(where: str, seed: Any) -> int:
    return int(_arg(where, "seed", seed, "an integer in [0, 2**63)", numbers.Integral, low=0, high=2**63 - 1))


def _num_classes(where: str, num_classes: Any) -> int | None:
    """Classes of the model's output (None: the space's own)."""
    return _arg(where, "num_classes", num_classes, "an integer >= 1", numbers.Integral, low=1, optional=True)


def _device(where: str, device: Any) -> str:
    _arg(where, "device", device, DEVICES, str)
    try:
        RunSettings(device=device)
    except ConfigError:
        raise ConfigError(f"{where}: device must be {DEVICES}, got {device!r}") from None
    return str(device)


def _data(where: str, data: Any, *, optional: bool = False, splits: bool = True) -> Any:
    types: tuple[type, ...] = (str, DataConfig, DatasetSplits) if splits else (str, DataConfig)
    valid = _DATA if splits else "a dataset name (digits, cifar10, cifar100, imagefolder) or a DataConfig"
    _arg(where, "data", data, valid, *types, optional=optional)
    if isinstance(data, str) and data not in DATASETS:
        raise ConfigError(f"{where}: data must be {valid}, got {data!r}")
    return data


def _space_of(where: str, space: Any, genotype: Genotype | None = None, name: str = "space") -> Space:
    if isinstance(space, Space):
        return space
    if space is not None:
        return _get_space(os.fspath(_arg(where, name, space, _SPACE, str, os.PathLike)))
    if genotype is None:
        raise ConfigError(f"{where}: {name} must be {_SPACE}, got None")

    return space_for_genotype(genotype)  # by name, else from the files the genotype recorded (space_origin)


def _load_genotype(where: str, name: str, source: Any, space: Any = None) -> Genotype:
    """The validated genotype of argument `name` of `where` (see `load_genotype`)."""

    _arg(where, name, source, _GENOTYPE, Genotype, Mapping, str, os.PathLike)
    target = _space_of(where, space, name="space") if space is not None else None
    if isinstance(source, Genotype):
        genotype = source
    elif isinstance(source, Mapping):
        genotype = Genotype.from_dict(source, origin=f"{where}: {name} (a genotype dict)")
    elif target is not None and isinstance(source, str) and source == target.name:
        genotype = target.reference()  # a space given by its file, named by its name
    elif isinstance(source, str) and source in space_names() and not os.path.exists(source):
        genotype = _get_space(source).reference()
    elif isinstance(source, str) and is_factory_name(source) and not os.path.exists(source):
        genotype = _get_space(source).reference()  # a model factory name: its unpruned model
    else:
        genotype = Genotype.load(source)
    target = target or _space_of(where, None, genotype)
    if target.name != genotype.space:
        genotype = Genotype(target.name, genotype.genes, genotype.provenance)
    return target.validate(genotype)


# -- the functions ------------------------------------------------------------------------------------------
def get_space(name: PathLike, overrides: Mapping[str, Any] | None = None) -> Space:
    """A space by name (see `space_names()`), by a model name (`torchvision:resnet18`) or by the path of a
    TOML file; `overrides` change its [model] settings."""
    _arg("get_space()", "name", name, _SPACE[len("a Space, ") :], str, os.PathLike)
    _arg("get_space()", "overrides", overrides, "a dict of [model] settings", Mapping, optional=True)
    return _get_space(os.fspath(name), overrides)


def load_genotype(source: Genotype | Mapping[str, Any] | PathLike, space: Space | PathLike | None = None) -> Genotype:
    """A validated genotype from a Genotype, a genotype dict (the JSON file's mapping), a JSON file, the name
    of a shipped genotype (`li2017_resnet56_b`), or a space name (its reference genotype). `space` re-targets
    it."""
    return _load_genotype("load_genotype()", "source", source, space)


def build(
    genotype: Genotype | Mapping[str, Any] | PathLike, *, num_classes: int | None = None, seed: int = 0
) -> nn.Module:
    """A freshly initialised model of the genotype (seeded)."""
    import torch

    num_classes = _num_classes("build()", num_classes)
    seed = _seed("build()", seed)
    g = _load_genotype("build()", "genotype", genotype)
    torch.manual_seed(seed)
    return _space_of("build()", None, g).build(g, num_classes=num_classes)


def count_cost(genotype: Genotype | Mapping[str, Any] | PathLike, *, num_classes: int | None = None) -> Cost:
    """MACs and params of a genotype and of its space's reference (see `prunenas.cost`)."""

    num_classes = _num_classes("count_cost()", num_classes)
    g = _load_genotype("count_cost()", "genotype", genotype)
    return genotype_cost(_space_of("count_cost()", None, g), g, num_classes=num_classes)


def load_data(data: DataConfig | DatasetSplits | str = "digits", *, seed: int = 0, **settings: Any) -> DatasetSplits:
    """Train/val/test splits: a dataset name with DataConfig settings (data_dir, train_subset, val_size),
    a DataConfig, or splits already loaded."""

    where = "load_data()"
    _data(where, data)
    seed = _seed(where, seed)
    if settings and not isinstance(data, str):
        raise ConfigError(
            f"{where}: settings {sorted(settings)} apply to a dataset given by name; with a "
            f"{type(data).__name__} give none (a DataConfig changes with .replace(...))"
        )
    if isinstance(data, DatasetSplits):
        return data
    DataConfig.check_values(
        settings, where, sep=": ", allowed=[n for n in DataConfig.setting_names() if n != "dataset"]
    )
    cfg = data if isinstance(data, DataConfig) else DataConfig(dataset=data, **settings)
    return prepare.load_data(cfg, seed)


@dataclass(frozen=True)
class TrainedModel:
    """A trained model with its run's result, genotype, recipe and folder."""

    model: nn.Module
    result: TrainResult
    genotype: Genotype
    recipe: Recipe
    run_dir: Path | None


def make_recipe_for(
    genotype: Genotype | Mapping[str, Any] | PathLike,
    recipe: str = "standard",
    scratch_b_cap: float | None = None,
    **overrides: Any,
) -> Recipe:
    """The named recipe from the genotype's space's defaults, with overrides (scratch-b scaled by MACs)."""

    Recipe.check_values(overrides, "make_recipe_for()", sep=": ")
    g = _load_genotype("make_recipe_for()", "genotype", genotype)
    space = _space_of("make_recipe_for()", None, g)
    c = genotype_cost(space, g)
    return make_recipe(
        recipe, space.recipe, macs=c.macs, reference_macs=c.reference_macs, scratch_b_cap=scratch_b_cap,
        overrides=overrides,
    )  # fmt: skip


def train_model(
    genotype: Genotype | Mapping[str, Any] | PathLike,
    data: DataConfig | DatasetSplits | str = "digits",
    recipe: str = "standard",
    *,
    seed: int = 0,
    out: PathLike | None = None,
    weights: Mapping[str, Any] | PathLike | None = None,
    settings: RunSettings | None = None,
    teacher: Any = None,
    **recipe_overrides: Any,
) -> TrainedModel:
    """Train a genotype from scratch (or from `weights`) and return the trained model with its metrics.
    With `out`, the run folder is kept (and resumed on a second call); without, a temporary one is used.
    `teacher` (a model or a checkpoint.pt of the space's reference) makes the run distill from it.
    `recipe_overrides` are recipe settings by name (epochs=2, lr=0.05, ...)."""
    import torch
    from torch import nn

    where = "train_model()"
    _data(where, data)
    _arg(where, "recipe", recipe, f"one of {', '.join(RECIPES)}", str)
    if recipe not in RECIPES:
        raise ConfigError(f"{where}: recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    seed = _seed(where, seed)
    out_dir = _path(where, "out", out, "a run folder", optional=True)
    _arg(where, "weights", weights, "a state_dict or the path of a checkpoint.pt", Mapping, str, os.PathLike,
         optional=True)  # fmt: skip
    _arg(where, "settings", settings, "a RunSettings", RunSettings, optional=True)
    _arg(where, "teacher", teacher, "a torch.nn.Module or the path of a checkpoint.pt of the space's reference",
         nn.Module, Teacher, str, os.PathLike, optional=True)  # fmt: skip
    Recipe.check_values(recipe_overrides, where, sep=": ")
    g = _load_genotype(where, "genotype", genotype)
    splits = load_data(data, seed=seed)
    # set up as `prunenas train` sets it up: a factory space at the pixel size of the data
    space, fitted = prepare.fit_to_data(_space_of(where, None, g), g, quiet=True, image_size=splits.image_size)
    assert fitted is not None
    g = fitted
    r = make_recipe_for(g, recipe, **recipe_overrides)
    run = (settings or RunSettings(quiet=True)).replace(seed=seed)
    init = load_model_state(Path(weights), f"{where}: weights") if isinstance(weights, str | os.PathLike) else weights
    with tempfile.TemporaryDirectory() as tmp:
        folder = out_dir if out_dir is not None else Path(tmp)
        result = run_training(space, g, splits, r, run, out_dir=folder, init_state=init, teacher=teacher)
        model = space.build(g, num_classes=splits.num_classes)
        state = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=False)["model"]
        model.load_state_dict(state)
    return TrainedModel(model.eval(), result, g, r, out_dir)


def propose(
    space: Space | PathLike,
    proposer: str,
    *,
    ratio: float | None = None,
    macs_ratio: float | None = None,
    density: float | None = None,
    reference: PathLike | None = None,
    data: DataConfig | DatasetSplits | str | None = None,
    seed: int = 0,
    device: str = "auto",
    **options: Any,
) -> Genotype:
    """Run a pruning method on a space and return the genotype it decides (with provenance); `options` are
    the proposer's options by name (see `prunenas proposers`)."""

    where = "propose()"
    _arg(where, "proposer", proposer, "a proposer name (see `prunenas proposers`)", str)
    _arg(where, "ratio", ratio, "a number in [0, 1) (channels or weights removed)", numbers.Real, low=0.0,
         high=1.0, high_open=True, optional=True)  # fmt: skip
    for name, value in (("macs_ratio", macs_ratio), ("density", density)):
        _arg(where, name, value, "a number in (0, 1]", numbers.Real, low=0.0, low_open=True, high=1.0, optional=True)
    given = [(k, v) for k, v in (("ratio", ratio), ("macs_ratio", macs_ratio), ("density", density)) if v is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one target: ratio=R, macs_ratio=R or density=D (got {len(given)})")
    reference_path = _path(where, "reference", reference, "the checkpoint.pt of a trained reference", optional=True)
    _data(where, data, optional=True)
    seed = _seed(where, seed)
    device = _device(where, device)
    s = _space_of(where, space)
    target = Target(given[0][0], float(given[0][1]))  # type: ignore[arg-type]
    method = get_proposer(proposer, s.proposer_kind, **options)
    splits = load_data(data, seed=seed) if data is not None else None
    ctx = make_context(s, data=splits, reference=reference_path, seed=seed, device=device)
    return run_proposer(method, ctx, target).genotype


def search_architectures(
    space: Space | PathLike,
    data: DataConfig | str = "digits",
    budget: str = "smoke",
    *,
    seed: int = 0,
    device: str = "auto",
    recipe: Mapping[str, Any] | PartialRecipe | None = None,
    run: Mapping[str, Any] | RunSettings | None = None,
    metrics: Mapping[str, Any] | None = None,
    evaluators: Mapping[str, Any] | None = None,
    evaluate: Callable[[Any, Any], Mapping[str, Any]] | None = None,
    **settings: Any,
) -> SearchOutcome:
    """Run (or resume) an architecture search, set up as `prunenas search` sets it up. `settings` are the
    search's settings by name (trials, objectives, max, out, ...: `SearchSettings`); `recipe` changes every
    candidate's recipe (a mapping such as {"lr": 0.05}, or a `pn.PartialRecipe`); `run` the run settings
    (`RunSettings` fields but seed and device: amp, threads, eval_every, ...); `metrics` the options of the
    metrics that take some ({"latency": {"batch": 8}}); `evaluators` the options of the evaluator
    ({"inherit-bn": {"images": 256}}). `evaluate=fn` judges every candidate with your function instead:
    `fn(model, budget)` gets the candidate's freshly built model and its budget (`budget.epochs`, `budget.data`
    with the train and validation splits, `budget.device`, `budget.seed`, `budget.genotype`) and returns its
    metrics, at least {"val_acc": ...}, the score the search ranks by. The outcome holds the winners and the
    Optuna study (`outcome.study`)."""

    where = "search_architectures()"
    _data(where, data, splits=False)
    seed = _seed(where, seed)
    device = _device(where, device)
    if evaluate is not None:
        if not callable(evaluate):
            raise ConfigError(f"{where}: evaluate must be a function fn(model, budget) -> {{'val_acc': ...}}, got "
                              f"{type(evaluate).__name__}")  # fmt: skip
        settings = {**settings, "evaluator": "callable"}
    SearchSettings.check_values({**settings, "budget": budget}, where, sep=": ")
    _arg(where, "recipe", recipe, "a dict of recipe settings or a PartialRecipe", Mapping, PartialRecipe,
         optional=True)  # fmt: skip
    if isinstance(recipe, Mapping):
        PartialRecipe.check_values(recipe, f"{where}: recipe", sep=" ")
    _arg(where, "run", run, "a dict of run settings or a RunSettings", Mapping, RunSettings, optional=True)
    if isinstance(run, Mapping):
        RunSettings.check_values(run, f"{where}: run", sep=" ", allowed=[n for n in RunSettings.setting_names()
                                                                         if n not in ("seed", "device")])  # fmt: skip
    _arg(where, "metrics", metrics, "a dict of metric name -> options", Mapping, optional=True)
    s = _space_of(where, space)
    cfg = data if isinstance(data, DataConfig) else DataConfig(dataset=data)
    run_cfg = run if isinstance(run, RunSettings) else RunSettings(**(run or {}))
    _arg(where, "evaluators", evaluators, "a dict of evaluator name -> options", Mapping, optional=True)
    if evaluate is not None:  # the function's name is part of the study (another function: another study)
        evaluators = {**(evaluators or {}), "callable": {"function": function_label(evaluate)}}
    config, fitted = prepare_search(
        s if isinstance(space, Space) else os.fspath(space), search=SearchSettings(budget=budget, **settings),
        data=cfg, run=run_cfg.replace(seed=seed, device=device, quiet=True), recipe=recipe, metrics=metrics,
        evaluators=evaluators, quiet=True,
    )  # fmt: skip
    splits = prepare.load_data(config.data, seed)
    judge = None
    if evaluate is not None:
        judge = CallableEvaluator(fn=evaluate)
    return run_search(config, fitted, splits, log=lambda _msg: None, evaluator=judge)


#: export_onnx's options: (what is valid, types, bounds); the exporter checks the finer points (opset range,
#: batch sizes, providers).
_EXPORT_OPTIONS: dict[str, tuple[str, tuple[type, ...], dict[str, Any]]] = {
    "name": ("a folder name", (str,), {"optional": True}),
    "root": ("a folder (str or pathlib.Path)", (str, os.PathLike), {}),
    "dataset": ("a dataset name", (str,), {"optional": True}),
    "data_dir": ("a folder (str or pathlib.Path)", (str, os.PathLike), {"optional": True}),
    "benchmark": ("True or False", (bool,), {}),
    "latency_batches": ("a list of batch sizes", (list, tuple), {}),
    "latency_repeats": ("an integer >= 1", (numbers.Integral,), {"low": 1}),
    "latency_warmup": ("an integer >= 0", (numbers.Integral,), {"low": 0}),
    "provider": ("an ONNX Runtime provider name", (str,), {"optional": True}),
    "tolerance": ("a number > 0", (numbers.Real,), {"low": 0.0, "low_open": True}),
    "opset": ("an ONNX opset (integer)", (numbers.Integral,), {}),
    "precision": ("fp32, fp16 or int8", (str,), {}),
    "runtime": ("onnxruntime, openvino or tensorrt", (str,), {}),
    "calibration_images": ("an integer >= 1", (numbers.Integral,), {"low": 1}),
    "threads": ("an integer >= 1", (numbers.Integral,), {"optional": True, "low": 1}),
    "engine": ("tensorrt", (str,), {"optional": True}),
}


def export_onnx(run_dir: PathLike, out: PathLike | None = None, **options: Any) -> ExportResult:
    """Export a trained run folder to ONNX, verified with onnx.checker and ONNX Runtime parity; `options` are
    export_run's (name, root, dataset, data_dir, benchmark, latency_batches, latency_repeats, latency_warmup,
    provider, tolerance, opset, precision, runtime, calibration_images, threads, engine)."""

    where = "export_onnx()"
    run = Path(
        _arg(
            where,
            "run_dir",
            run_dir,
            "a run folder (str or pathlib.Path) of train_model(out=...) or `prunenas train`",
            str,
            os.PathLike,
        )
    )
    dest = _path(where, "out", out, "an output folder", optional=True)
    valid = [p for p in inspect.signature(export_run).parameters if p in _EXPORT_OPTIONS]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; valid: {', '.join(valid)}")
    checked = {}
    for key, value in options.items():
        what, types, bounds = _EXPORT_OPTIONS[key]
        checked[key] = _arg(where, key, value, what, *types, **bounds)
    return export_run(run, dest, **checked)
