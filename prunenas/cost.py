"""Cost of a genotype: MACs and parameters in the convention of Li et al. and the Rethinking paper.

`macs` = multiply-accumulates of conv and linear layers for one image (batch 1); BatchNorm, ReLU,
additions and pooling are not counted. fvcore counts one multiply-add as one "flop", so its numbers
are MACs once every non conv/linear handle is made to return 0. For density genotypes each layer's
MACs are multiplied by its density and `params` counts the weights the masks keep.

`analytic_macs_by_layer` is an independent count from forward hooks (output size x kernel volume), used by
the tests as a cross-check of the fvcore path, and where tracing would be too slow (a proposer's bisection,
`fast_macs`; the space listing, `listed_reference_cost`), always with a check that it equals fvcore's.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunenas.config import fingerprint
from prunenas.genotype import Genotype
from prunenas.masks import PRUNABLE, mask_count
from prunenas.paths import cost_cache_dir
from prunenas.plugins import dist_versions

if TYPE_CHECKING:
    from prunenas.spaces.base import Space

# fvcore ops that are not conv/linear but have default handles: count them as 0.
_ZERO_OPS = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)


@dataclass(frozen=True)
class Cost:
    """Cost of one genotype; ratios are relative to its space's reference genotype."""

    macs: int
    params: int
    reference_macs: int
    reference_params: int

    @property
    def macs_ratio(self) -> float:
        return self.macs / self.reference_macs

    @property
    def params_ratio(self) -> float:
        return self.params / self.reference_params

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "macs_ratio": self.macs_ratio, "params_ratio": self.params_ratio}


def _zero_handle(inputs: Any, outputs: Any) -> int:
    return 0


def fvcore_macs_by_layer(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs of every Conv2d/Linear module (by module path) for one input, counted by fvcore."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore/iopath import and torch.jit.trace deprecation noise
        from fvcore.nn import FlopCountAnalysis

        was_training = model.training
        model.eval()
        try:
            x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            for op in _ZERO_OPS:
                analysis.set_op_handle(op, _zero_handle)
            by_module = analysis.by_module()
        finally:
            model.train(was_training)
    return {name: int(by_module.get(name, 0)) for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def analytic_macs_by_layer(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Independent count: conv = output elements x (in/groups) x kernel area; linear = in x out."""
    counts: dict[str, int] = {}
    hooks = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                per_out = (module.in_channels // module.groups) * math.prod(module.kernel_size)
                counts[name] = counts.get(name, 0) + output[0].numel() * per_out
            elif isinstance(module, nn.Linear):  # per output element of the first image: tokens x out x in
                counts[name] = counts.get(name, 0) + output[0].numel() * module.in_features

        return hook

    for name, m in model.named_modules():
        if isinstance(m, PRUNABLE):
            hooks.append(m.register_forward_hook(make_hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {name: counts.get(name, 0) for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def count_params(model: nn.Module, densities: Mapping[str, float] | None = None) -> int:
    """All parameters; with `densities`, the weights of those layers count as their kept number."""
    total = 0
    modules = dict(model.named_modules())
    for mod_name, module in modules.items():
        for p_name, p in module.named_parameters(recurse=False):
            if densities is not None and p_name == "weight" and mod_name in densities:
                total += mask_count(densities[mod_name], p.numel())
            else:
                total += p.numel()
    return total


def model_cost(
    model: nn.Module, input_shape: tuple[int, ...], densities: Mapping[str, float] | None = None
) -> tuple[int, int]:
    """(macs, params) of a model; `densities` weights each named layer's MACs and weights."""
    return _weighted_macs(fvcore_macs_by_layer(model, input_shape), densities), count_params(model, densities)


@lru_cache(maxsize=4096)
def _cost_cached(space: Space, canonical: str, num_classes: int) -> tuple[int, int]:
    # Counted on weights drawn from a fixed seed, the caller's RNG untouched: a count that depends on the weights
    # (a two-stage detector's RoI head runs once per proposal left on a blank input) is the same in every process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, weights = space.counting_model(Genotype.from_json(canonical), num_classes)
        return model_cost(model, space.input_shape, weights)


def genotype_cost(space: Space, genotype: Genotype, num_classes: int | None = None) -> Cost:
    """MACs and params of `genotype` and of its space's reference genotype (memoised by key; reference
    costs also on disk, see `reference_cost`)."""
    genotype = space.validate(genotype)
    n = num_classes or space.num_classes
    ref_macs, ref_params = reference_cost(space, n)
    if genotype == space.reference():
        return Cost(ref_macs, ref_params, ref_macs, ref_params)
    macs, params = _cost_cached(space, genotype.canonical_json(), n)
    return Cost(macs, params, ref_macs, ref_params)


def _space_fingerprint(space: Space) -> str:
    """What a space's costs depend on: its settings and genes, and the code that builds and counts it
    (the family's module and this one, by content), plus the library versions."""

    files = [inspect.getsourcefile(type(space)), __file__]
    code = [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files if f and Path(f).is_file()]
    info = space.describe()
    info.pop("source", None)
    versions = dist_versions("torch", "fvcore")
    return fingerprint(info, type(space).__module__, type(space).__qualname__, code, versions, length=16)


def _reference_cost_file(space: Space, num_classes: int) -> Path | None:
    """Where fvcore's count of the space's reference is kept (None: the cost cache is off)."""
    folder = cost_cache_dir()
    return folder / f"{space.slug}-{_space_fingerprint(space)}-c{num_classes}.json" if folder else None


def _read_reference_cost(path: Path | None) -> tuple[int, int] | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["macs"]), int(data["params"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: count again (and rewrite it)


@lru_cache(maxsize=256)
def reference_cost(space: Space, num_classes: int) -> tuple[int, int]:
    """(MACs, params) of the space's reference model, counted by fvcore once per machine and kept on disk.
    The file is keyed by the space's settings and the code that builds and counts it, so an edit never
    reads a stale count."""
    path = _reference_cost_file(space, num_classes)
    cached = _read_reference_cost(path)
    if cached is not None:
        return cached
    macs, params = _cost_cached(space, space.reference().canonical_json(), num_classes)
    if path is not None:
        with contextlib.suppress(OSError):  # a cache: a read-only home only costs the recount
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"space": space.name, "macs": macs, "params": params}), encoding="utf-8")
            os.replace(tmp, path)
    return macs, params


def listed_reference_cost(space: Space) -> tuple[int, int]:
    """(MACs, params) of the space's reference for a listing (`prunenas spaces`), without tracing: fvcore's
    count when it is on disk (`reference_cost`), else the forward-hook count, which equals fvcore's for
    every space (the space contract in `prunenas.testing` checks it). Writes nothing: the fvcore cache
    holds only fvcore's counts."""
    cached = _read_reference_cost(_reference_cost_file(space, space.num_classes))
    if cached is not None:
        return cached
    model, weights = space.counting_model(space.reference(), space.num_classes)
    return _weighted_macs(analytic_macs_by_layer(model, space.input_shape), weights), count_params(model, weights)


def _weighted_macs(by_layer: Mapping[str, int], weights: Mapping[str, float] | None) -> int:
    """The MACs of a model from its per-layer counts, each layer weighted by its density (None: all 1)."""
    d = weights or {}
    return int(sum(round(n * float(d.get(name, 1.0))) for name, n in by_layer.items()))


@lru_cache(maxsize=65536)
def _fast_macs_cached(space: Space, canonical: str) -> int:
    direct = space.analytic_macs(Genotype.from_json(canonical))
    if direct is not None:
        return direct
    model, weights = space.counting_model(Genotype.from_json(canonical), space.num_classes)
    return _weighted_macs(analytic_macs_by_layer(model, space.input_shape), weights)


def fast_macs(space: Space, genotype: Genotype) -> int:
    """MACs by the forward-hook count (no tracing; several times faster than fvcore), for inner loops
    such as a proposer's bisection. Equal to `genotype_cost(...).macs` (the tests check it per space)."""
    return _fast_macs_cached(space, space.validate(genotype).canonical_json())
