"""Weight surgery: the one module that calls Torch-Pruning.

Everything that cuts, scores or carries channels between architectures lives here:

  channel_groups     the prunable dependency groups of any model (traced spaces' genes)
  prune_channels     remove given channels of given groups, coupled layers included (traced spaces' builder)
  Importance         a channel importance criterion: scores for the output channels of a dependency group
                     (`DependencyGroup`, plain torch); `TorchPruningImportance` wraps any Torch-Pruning criterion;
                     the named ones the structured proposers use are registered once, in IMPORTANCES
  channel_scores     importance per output channel of every structured gene, from the gene's
                     Torch-Pruning dependency group (nothing is pruned in place)
  inherit_channels   a pruned genotype's weights cut out of a trained reference (Li et al.'s rule)

The masks of density spaces (chosen from weights, applied, shuffled, folded) are `prunenas.masking`'s,
re-exported here.

Torch-Pruning traces the model through autograd: models are traced with `requires_grad` on and in
eval mode, on a plain tensor input. It silently corrupts models with parameter-free channel ops
(the option-A zero-padding shortcut), so the structured genes of such spaces exclude the tied widths
(`Space.structured_genes`) and a genotype is always rebuilt from scratch, never pruned in place.
"""

from __future__ import annotations

import copy
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunenas.errors import PrunenasError
from prunenas.masking import apply_masks_to_model as apply_masks_to_model
from prunenas.masking import fold_masks as fold_masks
from prunenas.masking import magnitude_masks as magnitude_masks
from prunenas.masking import masked_state as masked_state
from prunenas.masking import shuffle_masks as shuffle_masks
from prunenas.tasks import output_classes, trace_forward_for

if TYPE_CHECKING:
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space


def _tp() -> Any:
    import torch_pruning as tp

    return tp


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Torch-Pruning warns about every unwrapped parameter and tracing detail: not the user's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def dependency_graph(model: nn.Module, example: torch.Tensor) -> Any:
    """Torch-Pruning's dependency graph of `model` (traced in eval mode with gradients on; the model's
    training flag and requires_grad flags are restored), through the forward its task traces
    (`prunenas.tasks.trace_forward_for`: a detector's raw tensors, without pre- and post-processing)."""
    tp = _tp()
    forward = trace_forward_for(model)  # a detector: its backbone, neck and heads on raw tensors
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad(), _quiet_tracing():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=forward)
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


# -- dependency groups of any model (traced spaces) -----------------------------------------------------------
@dataclass(frozen=True)
class ChannelGroup:
    """A set of channels that must be pruned together, found by Torch-Pruning's dependency graph.

    `root` is the module path of the layer whose output channels the group is rooted at (a traced
    space's gene name); `width` its channel count. `splits` is the number of equal channel groups the
    group's layers divide the channels into (grouped convolutions, GroupNorm): channels are removed
    evenly from each. `out_layers`/`in_layers` are (conv/linear path, number of that layer's output or
    input channels the group covers): how the group's width reaches each layer, for cost counting.
    """

    root: str
    width: int
    splits: int
    out_layers: tuple[tuple[str, int], ...]
    in_layers: tuple[tuple[str, int], ...]
    kinds: tuple[str, ...]  # the module types in the group (for the description)


_COUNTED = (nn.Conv2d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


# -- a bound on the work of grouping (traced spaces) ------------------------------------------------------------
class GroupTooLarge(Exception):
    """Torch-Pruning's walk of one dependency group passed `limit` entries: the layer at `root` reaches the
    same layers again and again with other channel indices (channel shuffles and splits make the walk grow
    without end, and each entry costs a scan of the ones before it)."""

    def __init__(self, root: str, limit: int) -> None:
        super().__init__(f"the dependency group of {root!r} grew past {limit} entries")
        self.root, self.limit = root, limit


@contextmanager
def _bounded_groups(limit: int | None, names: Mapping[Any, str]) -> Iterator[None]:
    """Within the block, a Torch-Pruning group that grows past `limit` entries raises GroupTooLarge (its
    grouping is pure Python: the check stops it where it stands). None: no bound."""
    if limit is None:
        yield
        return
    graph_module = _tp().dependency.graph
    unbounded = graph_module.Group
    bound: int = limit

    class Bounded(unbounded):  # type: ignore[misc, valid-type]
        def add_dep(self, dep: Any, idxs: Any) -> None:
            super().add_dep(dep, idxs)
            if len(self._group) > bound:
                root = self._group[0].dep.target.module
                raise GroupTooLarge(names.get(root, type(root).__name__), bound)

    graph_module.Group = Bounded
    try:
        yield
    finally:
        graph_module.Group = unbounded


def channel_groups(
    model: nn.Module, example: torch.Tensor, ignored: Sequence[str] = (), max_entries: int | None = None
) -> list[ChannelGroup]:
    """Every dependency group of `model` rooted at a Conv2d or Linear, except the groups whose channels
    reach a layer of `ignored` (module paths: the output layer, user-chosen layers) as its output.
    `max_entries`: a group whose walk grows past this many entries raises GroupTooLarge."""
    graph = dependency_graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    skip = [modules[n] for n in ignored]
    found = []
    with _quiet_tracing(), _bounded_groups(max_entries, names):
        groups = list(graph.get_all_groups(ignored_layers=skip, root_module_types=[nn.Conv2d, nn.Linear]))
    for group in groups:
        root = group[0].dep.target.module
        outs: dict[str, set[int]] = {}
        ins: dict[str, set[int]] = {}
        splits = 1
        kinds = []
        for item in group:
            target = item.dep.target.module
            if not isinstance(target, nn.Module) or target not in names:
                continue
            kinds.append(type(target).__name__)
            idxs = {int(i) for i in item.idxs}
            if isinstance(target, nn.Conv2d) and 1 < target.groups < target.in_channels:
                splits = math.lcm(splits, target.groups)
            if isinstance(target, nn.GroupNorm):
                splits = math.lcm(splits, target.num_groups)
            if isinstance(target, _COUNTED):
                table = outs if graph.is_out_channel_pruning_fn(item.dep.handler) else ins
                table.setdefault(names[target], set()).update(idxs)
                if isinstance(target, nn.Conv2d) and target.groups == target.in_channels == target.out_channels:
                    outs.setdefault(names[target], set()).update(idxs)  # depthwise: both dims follow
                    ins.setdefault(names[target], set()).update(idxs)
        if root not in names:
            continue
        found.append(
            ChannelGroup(
                root=names[root],
                width=len(group[0].idxs),
                splits=splits,
                out_layers=tuple((n, len(v)) for n, v in outs.items()),
                in_layers=tuple((n, len(v)) for n, v in ins.items()),
                kinds=tuple(dict.fromkeys(kinds)),
            )
        )
    return found


def prune_channels(model: nn.Module, example: torch.Tensor, drops: Mapping[str, Sequence[int]]) -> nn.Module:
    """Remove channels in place: for each root layer path, the given output-channel indices, with every
    coupled layer (BatchNorm, the next layers' inputs, residual partners) pruned alike by Torch-Pruning's
    dependency graph. Returns `model`."""
    todo = {root: sorted(int(i) for i in idxs) for root, idxs in drops.items() if len(idxs)}
    if not todo:
        return model
    graph = dependency_graph(model, example)
    modules = dict(model.named_modules())
    with torch.no_grad(), _quiet_tracing():
        for root, idxs in todo.items():
            layer = modules[root]
            pruner = graph.get_pruner_of_module(layer)
            graph.get_pruning_group(layer, pruner.prune_out_channels, idxs=idxs).prune()
    return model


def even_drops(width: int, keep: int, splits: int = 1) -> list[int]:
    """The channels to remove to keep `keep` of `width`: the last ones of each of `splits` equal parts."""
    size, per = width // splits, keep // splits
    return [g * size + j for g in range(splits) for j in range(per, size)]


# -- importance criteria ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupLayer:
    """A layer that a dependency group reaches: its `path` in the model, the `module`, whether the group sets
    its output channels (`out`; else its input channels), the layer's channel indices the group covers
    (`channels`) and the group positions they stand for (`positions`: the indices of the scores)."""

    path: str
    module: nn.Module
    out: bool
    channels: tuple[int, ...]
    positions: tuple[int, ...]


class DependencyGroup:
    """A Torch-Pruning dependency group (channels that are pruned together) as an importance criterion sees
    it, in plain torch: `module` is the layer the group is rooted at and `root` its path, `width` the number
    of positions to score (the root's output channels), `layers` every module the group reaches.
    `torch_pruning` is Torch-Pruning's own group, what `TorchPruningImportance` scores."""

    def __init__(self, group: Any, graph: Any, names: Mapping[nn.Module, str]) -> None:
        self.torch_pruning = group
        self._graph, self._names = graph, names
        self.module: nn.Module = group[0].dep.target.module
        self.root: str = names.get(self.module, "")
        self.width = len(group[0].idxs)

    @cached_property
    def layers(self) -> tuple[GroupLayer, ...]:
        found = []
        for item in self.torch_pruning:
            module = item.dep.target.module
            if not isinstance(module, nn.Module) or module not in self._names:
                continue  # a functional op (add, cat, ...) or an unwrapped parameter
            channels = tuple(int(i) for i in item.idxs)
            positions = tuple(int(i) for i in item.root_idxs) if item.root_idxs is not None else channels
            out = bool(self._graph.is_out_channel_pruning_fn(item.dep.handler))
            found.append(GroupLayer(self._names[module], module, out, channels, positions))
        return tuple(found)

    def __repr__(self) -> str:
        return f"<DependencyGroup {self.root!r}: {self.width} channels>"


class Importance(ABC):
    """A channel importance criterion: one score per output channel of a dependency group (the higher, the
    more important). Subclass it and implement `scores` in plain torch, or wrap a Torch-Pruning criterion in
    `TorchPruningImportance`; a structured proposer holds one (`prunenas.proposers.structured`).
    `channel_scores` applies it to the group of every gene."""

    #: Its name in messages (and in IMPORTANCES, for a registered criterion).
    name: str = ""
    #: A gene none of whose groups gets scores keeps every channel (network slimming, which scores BatchNorm
    #: scales only, keeps a layer without BatchNorm whole) instead of being refused; see `unscored`.
    keeps_unscored: bool = False

    @abstractmethod
    def scores(self, group: DependencyGroup) -> torch.Tensor | None:
        """`group.width` scores, one per position of the group; None where the criterion has none for it."""

    def unscored(self, layer: nn.Module) -> torch.Tensor | None:
        """The scores of a gene whose layer (`layer`) got none from its groups (no group roots at it, e.g. a
        channel selection, or `scores` gave None): +inf for every channel when `keeps_unscored`, else None
        (`channel_scores` then refuses the gene)."""
        if not self.keeps_unscored:
            return None
        width = layer.out_channels if isinstance(layer, nn.Conv2d) else int(getattr(layer, "out_features", 0))
        return torch.full((width,), math.inf)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class TorchPruningImportance(Importance):
    """A Torch-Pruning importance criterion: `criterion` names a class of `torch_pruning.importance`, made with
    `options` on first use (the caller need not import Torch-Pruning), or is an instance of one:
    `TorchPruningImportance("MagnitudeImportance", p=1, name="l1")`. The one criterion object is used for
    every group it scores (Torch-Pruning's criteria that accumulate state over calls need a fresh wrapper)."""

    def __init__(self, criterion: Any, *, name: str = "", keeps_unscored: bool = False, **options: Any) -> None:
        if not isinstance(criterion, str) and options:
            raise TypeError("options configure a criterion named by its class; an instance comes configured")
        self.criterion = criterion
        self.options = dict(options)
        self.name = name or (criterion if isinstance(criterion, str) else type(criterion).__name__)
        self.keeps_unscored = keeps_unscored
        self._made: Any = None if isinstance(criterion, str) else criterion

    def made(self) -> Any:
        """The Torch-Pruning criterion object."""
        if self._made is None:
            cls = getattr(_tp().importance, self.criterion, None)
            if not isinstance(cls, type):
                raise ValueError(f"torch_pruning.importance has no criterion class {self.criterion!r}")
            self._made = cls(**self.options)
        return self._made

    def scores(self, group: DependencyGroup) -> torch.Tensor | None:
        score: torch.Tensor | None = self.made()(group.torch_pruning)
        return score


_IMPORTANCES: dict[str, Importance] = {}
#: The registered criteria by name (`channel_scores` and `get_importance` take a name too).
IMPORTANCES: Mapping[str, Importance] = MappingProxyType(_IMPORTANCES)


def register_importance(importance: Importance) -> Importance:
    """Register a criterion under its `name` (once: another criterion of a registered name is refused)."""
    name = importance.name
    if not name:
        raise ValueError(f"{importance!r} has no name to register it under")
    if _IMPORTANCES.setdefault(name, importance) is not importance:
        raise ValueError(f"an importance named {name!r} is already registered: {_IMPORTANCES[name]!r}")
    return importance


def get_importance(name: str) -> Importance:
    """A registered criterion by its name."""
    if name not in _IMPORTANCES:
        raise ValueError(f"unknown importance {name!r}; valid: {', '.join(_IMPORTANCES)}")
    return _IMPORTANCES[name]


for _builtin in (
    TorchPruningImportance("RandomImportance", name="random"),
    TorchPruningImportance("MagnitudeImportance", name="l1", p=1),
    TorchPruningImportance("MagnitudeImportance", name="l2", p=2),
    TorchPruningImportance("FPGMImportance", name="fpgm"),
    TorchPruningImportance("LAMPImportance", name="lamp"),
    TorchPruningImportance("TaylorImportance", name="taylor"),
    # Raw |gamma| (no normalizer), mean over the BNs of a coupled group: one global threshold (network slimming).
    TorchPruningImportance("BNScaleImportance", name="bn_scale", normalizer=None, keeps_unscored=True),
):
    register_importance(_builtin)


def _is_out_channel_dep(item: Any) -> bool:
    return getattr(item.dep.handler, "__name__", "") in ("prune_out_channels", "prune_depthwise_conv_out_channels")


def channel_scores(
    model: nn.Module,
    gene_modules: Mapping[str, str],
    importance: Importance | str,
    example: torch.Tensor,
    *,
    what: str = "space",
    ignored: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Importance per output channel of every gene (gene -> module path of the layer whose output
    channels it sets), from the gene's Torch-Pruning dependency group, by the criterion (or a registered
    criterion's name). `ignored`: module paths whose groups are skipped (default: every Linear, with Conv2d
    roots only)."""
    criterion = get_importance(importance) if isinstance(importance, str) else importance
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    by_module = {modules[path]: gene for gene, path in gene_modules.items()}
    if ignored is None:
        skip = [m for m in model.modules() if isinstance(m, nn.Linear)]
        roots: list[type[nn.Module]] = [nn.Conv2d]
    else:
        skip, roots = [modules[p] for p in ignored], [nn.Conv2d, nn.Linear]
    graph = dependency_graph(model, example)
    found: dict[str, torch.Tensor] = {}
    with _quiet_tracing():
        groups = list(graph.get_all_groups(ignored_layers=skip, root_module_types=roots))
    for group in groups:
        view: DependencyGroup | None = None
        for item in group:
            gene = by_module.get(item.dep.target.module)
            if gene is not None and _is_out_channel_dep(item) and gene not in found:
                view = view or DependencyGroup(group, graph, names)
                score = criterion.scores(view)
                if score is None:
                    continue
                if score.numel() != view.width:
                    raise PrunenasError(
                        f"importance {criterion.name!r} gave {score.numel()} scores for the {view.width} channels of "
                        f"the group of {view.root!r} in {what}; it must give one score per channel (group.width)"
                    )
                found[gene] = score.detach().float().cpu()
    for gene, path in gene_modules.items():
        if gene not in found:
            stand_in = criterion.unscored(modules[path])
            if stand_in is not None:
                found[gene] = stand_in
    missing = [g for g in gene_modules if g not in found]
    if missing:
        raise PrunenasError(
            f"importance {criterion.name!r} gives no score for the group(s) of {missing[:5]} in {what} (no "
            "Torch-Pruning group roots at them, e.g. channel selections); use a proposer that needs no group scores "
            "(uniform, random) or, for BatchNorm-scored genes, slimming"
        )
    return {g: found[g] for g in gene_modules}


# -- weight inheritance (channel spaces) -------------------------------------------------------------------------
#: The criteria `inherit_channels` keeps channels by.
INHERIT_CRITERIA = ("l1", "bn_scale")


def inherit_channels(
    space: Space, reference_model: nn.Module, genotype: Genotype, criterion: str = "l1"
) -> dict[str, torch.Tensor]:
    """The weights of `genotype` cut out of a trained reference model of `space` (a state_dict).

    For every gene that pruning narrows (`space.structured_genes()`), the channels kept are those with the
    largest L1 norm of the reference's filters (Li et al. 2017), summed over the convolutions whose
    outputs are coupled with it (a residual width is shared by every conv that writes into that stream);
    with `criterion` "bn_scale", those with the largest |gamma| summed over the group's BatchNorms instead
    (network slimming's rule: the channels above its threshold are each BN's largest);
    each conv, BatchNorm and linear layer of the dependency group (Torch-Pruning's, e.g. conv1 -> bn1 ->
    conv2's input channels) then keeps exactly those slices, in their original order. Genes that channel
    pruning does not change (the residual widths of shortcut-A ResNets) must keep the reference's value.
    Every gene's filters are scored on the reference's original weights (Li et al.'s independent
    strategy), before any gene is cut. `reference_model` is not modified.
    """
    if criterion not in INHERIT_CRITERIA:
        raise ValueError(f"unknown inheritance criterion {criterion!r}; valid: {', '.join(INHERIT_CRITERIA)}")
    genotype = space.validate(genotype)
    reference = space.reference()
    structured = space.structured_genes()
    if not structured:
        raise PrunenasError(f"space {space.name!r} has no channel genes to inherit weights through")
    changed = [g.name for g in space.genes if genotype.genes[g.name] != reference.genes[g.name]]
    fixed = [g for g in changed if g not in structured]
    if fixed:
        raise PrunenasError(
            f"genotype {genotype.key} changes gene(s) {fixed[:5]} that channel pruning keeps in {space.name!r} "
            "(e.g. the residual widths of shortcut-A ResNets), so no reference weights can be inherited for them; "
            "use a genotype that only narrows the prunable genes (`prunenas spaces show` lists them)"
        )
    wider = [g for g in changed if int(genotype.genes[g]) > int(reference.genes[g])]
    if wider:
        raise PrunenasError(
            f"genotype {genotype.key} is wider than the reference at {wider[:5]}: a pruned model keeps a subset of "
            "the reference's channels"
        )
    model = copy.deepcopy(reference_model).to("cpu").eval()
    example = torch.zeros(1, *space.input_shape)
    num_classes = output_classes(model, example)
    if changed:
        graph = dependency_graph(model, example)
        modules = dict(model.named_modules())
        drops: dict[str, list[int]] = {}
        for gene in changed:
            root = modules[structured[gene]]
            if not isinstance(root, _COUNTED):
                raise RuntimeError(f"gene {gene} of {space.name} maps to {type(root).__name__}, not a Conv2d/Linear")
            pruner = graph.get_pruner_of_module(root)
            width = int(pruner.get_out_channels(root))
            with _quiet_tracing():
                group = graph.get_pruning_group(root, pruner.prune_out_channels, idxs=list(range(width)))
            score = torch.zeros(width, dtype=torch.float64)
            kinds = _BATCHNORMS if criterion == "bn_scale" else _COUNTED
            for item in group:
                target = item.dep.target.module
                if graph.is_out_channel_pruning_fn(item.dep.handler) and isinstance(target, kinds):
                    weight = target.weight.detach().abs()
                    norms = weight.reshape(weight.shape[0], -1).sum(1).double()
                    score += norms[torch.as_tensor([int(i) for i in item.idxs], dtype=torch.long)]
            splits = space.gene_splits(gene)
            per_split = score.view(splits, -1).mean(0)  # grouped layers lose the same positions in every split
            keep = int(genotype.genes[gene]) // splits
            order = torch.argsort(per_split, descending=True, stable=True)
            size = width // splits
            drops[gene] = sorted(g * size + int(j) for g in range(splits) for j in order[keep:].tolist())
        prune_channels(model, example, {structured[g]: d for g, d in drops.items()})
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return fitting(space, genotype, num_classes, state)


def fitting(
    space: Space, genotype: Genotype, num_classes: int, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`state` once checked to load into a fresh model of `genotype` (inherited shapes must be exactly the
    genotype's; a mismatch is a bug, raised as RuntimeError)."""
    try:
        space.build(genotype, num_classes=num_classes).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise RuntimeError(f"inherited weights do not fit genotype {genotype.key} of {space.name}: {first}") from None
    return state
