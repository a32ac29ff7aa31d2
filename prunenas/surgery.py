"""Weight surgery: the one module that calls Torch-Pruning, and the mask transplants.

Everything that cuts, scores or carries weights between architectures lives here:

  channel_scores     importance per output channel of every structured gene, from the gene's
                     Torch-Pruning dependency group (nothing is pruned in place)
  IMPORTANCES        the Torch-Pruning importance criteria the structured proposers use, by name
  inherit_channels   a pruned genotype's weights cut out of a trained reference (Li et al.'s rule)
  magnitude_masks, masked_state, shuffle_masks, apply_masks_to_model, fold_masks
                     masks of density spaces: chosen from weights, applied, shuffled, folded

Torch-Pruning traces the model through autograd: models are traced with `requires_grad` on and in
eval mode, on a plain tensor input. It silently corrupts models with parameter-free channel ops
(the option-A zero-padding shortcut), so the structured genes of such spaces exclude the tied widths
(`Space.structured_genes`) and a genotype is always rebuilt from scratch, never pruned in place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunenas.errors import PrunenasError
from prunenas.spaces.density import MASK, mask_count, masked_layers, prunable_layers, set_mask, weight_of

if TYPE_CHECKING:
    from prunenas.genotype import Genotype
    from prunenas.spaces.base import Space


def _tp() -> Any:
    import torch_pruning as tp

    return tp


# -- importances -----------------------------------------------------------------------------------------------
def _importance_table() -> dict[str, Callable[[], Any]]:
    tp = _tp()
    imp = tp.importance
    return {
        "random": imp.RandomImportance,
        "l1": lambda: imp.MagnitudeImportance(p=1),
        "l2": lambda: imp.MagnitudeImportance(p=2),
        "fpgm": imp.FPGMImportance,
        "lamp": imp.LAMPImportance,
        "taylor": imp.TaylorImportance,
        # Raw |gamma| (no normalizer), mean over the BNs of a coupled group: one global threshold.
        "bn_scale": lambda: imp.BNScaleImportance(normalizer=None),
    }


#: Names of the importance criteria `channel_scores` accepts.
IMPORTANCES = ("random", "l1", "l2", "fpgm", "lamp", "taylor", "bn_scale")


def make_importance(name: str) -> Any:
    """A Torch-Pruning importance criterion by its name in IMPORTANCES."""
    table = _importance_table()
    if name not in table:
        raise ValueError(f"unknown importance {name!r}; valid: {', '.join(IMPORTANCES)}")
    return table[name]()


def _is_out_channel_dep(item: Any) -> bool:
    return getattr(item.dep.handler, "__name__", "") == "prune_out_channels"


def channel_scores(
    model: nn.Module, gene_modules: Mapping[str, str], importance: str, example: torch.Tensor, *, what: str = "space"
) -> dict[str, torch.Tensor]:
    """Importance per output channel of every gene (gene -> module path of the conv whose output
    channels it sets), from the gene's Torch-Pruning dependency group, by the named criterion."""
    tp = _tp()
    criterion = make_importance(importance)
    modules = dict(model.named_modules())
    by_module = {modules[path]: gene for gene, path in gene_modules.items()}
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)]
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    found: dict[str, torch.Tensor] = {}
    for group in graph.get_all_groups(ignored_layers=classifier, root_module_types=[nn.Conv2d]):
        for item in group:
            gene = by_module.get(item.dep.target.module)
            if gene is not None and _is_out_channel_dep(item) and gene not in found:
                score = criterion(group)
                if score is not None:
                    found[gene] = score.detach().float().cpu()
    missing = [g for g in gene_modules if g not in found]
    if missing:
        raise RuntimeError(f"no dependency group found for genes {missing} of {what}")
    return {g: found[g] for g in gene_modules}


# -- weight inheritance (channel spaces) -------------------------------------------------------------------------
def inherit_channels(space: Space, reference_model: nn.Module, genotype: Genotype) -> dict[str, torch.Tensor]:
    """The weights of `genotype` cut out of a trained reference model of `space` (a state_dict).

    For every gene that pruning narrows (`space.structured_genes()`), the channels kept are those with the
    largest L1 norm of the reference's filters (Li et al. 2017), summed over the convolutions whose
    outputs are coupled with it (a residual width is shared by every conv that writes into that stream);
    each conv, BatchNorm and linear layer of the dependency group (Torch-Pruning's, e.g. conv1 -> bn1 ->
    conv2's input channels) then keeps exactly those slices, in their original order. Genes that channel
    pruning does not change (the residual widths of shortcut-A ResNets) must keep the reference's value.
    `reference_model` is not modified.
    """
    tp = _tp()
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
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    num_classes = linears[-1].out_features if linears else space.num_classes
    if changed:
        for p in model.parameters():
            p.requires_grad_(True)  # Torch-Pruning traces the graph through autograd
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *space.input_shape))
        modules = dict(model.named_modules())
        for gene in changed:
            root = modules[structured[gene]]
            if not isinstance(root, nn.Conv2d):
                raise RuntimeError(f"gene {gene} of {space.name} maps to {type(root).__name__}, not a Conv2d")
            width = root.out_channels
            group = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(width)))
            score = torch.zeros(width, dtype=torch.float64)
            for item in group:
                target = item.dep.target.module
                if _is_out_channel_dep(item) and isinstance(target, nn.Conv2d):
                    norms = target.weight.detach().abs().flatten(1).sum(1).double()
                    score += norms[torch.as_tensor(list(item.idxs), dtype=torch.long)]
            order = torch.argsort(score, descending=True, stable=True)
            drop = sorted(order[int(genotype.genes[gene]) :].tolist())
            graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=drop).prune()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        space.build(genotype, num_classes=num_classes).load_state_dict(state, strict=True)
    except RuntimeError as exc:  # the pruned shapes must be exactly the genotype's
        first = str(exc).strip().splitlines()[0]
        raise RuntimeError(f"inherited weights do not fit genotype {genotype.key} of {space.name}: {first}") from None
    return state


# -- masks (density spaces) ------------------------------------------------------------------------------------
def magnitude_masks(
    space: Space, state: Mapping[str, torch.Tensor], genotype: Genotype, num_classes: int
) -> dict[str, torch.Tensor]:
    """Per layer, the genotype's number of weights with the largest |w| in `state` (layer-wise magnitude
    pruning to the genotype's densities; ties broken by position)."""
    genotype = space.validate(genotype)
    model = space.build(space.reference(), num_classes=num_classes)
    model.load_state_dict(state, strict=True)
    masks = {}
    for name, module in prunable_layers(model):
        w = weight_of(module).detach().abs().reshape(-1)
        keep = mask_count(float(genotype.genes[name]), w.numel())
        mask = torch.zeros(w.numel())
        mask[torch.sort(w, descending=True, stable=True).indices[:keep]] = 1.0
        masks[name] = mask.view(weight_of(module).shape)
    return masks


def apply_masks_to_model(model: nn.Module, masks: Mapping[str, torch.Tensor], rescale: bool = True) -> nn.Module:
    """Attach `masks` (layer path -> 0/1 tensor) to `model` with `set_mask` and return it.

    Apply to a freshly built model to train a proposer's own mask from scratch ("reinitialize");
    `rescale` multiplies kept weights by 1/sqrt(density) (He init with the fan scaled by the density).
    """
    layers = dict(prunable_layers(model))
    unknown = sorted(set(masks) - set(layers))
    if unknown:
        raise PrunenasError(f"masks for unknown layer(s) {unknown[:5]}; valid layers: {list(layers)[:5]}...")
    for name, mask in masks.items():
        try:
            set_mask(layers[name], mask, rescale=rescale)
        except ValueError as exc:
            raise PrunenasError(f"mask of layer {name!r}: {exc}") from None
    return model


def shuffle_masks(masks: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The layer-wise shuffle ablation: each mask's entries permuted at random (same count per layer)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        flat = mask.reshape(-1)
        perm = torch.randperm(flat.numel(), generator=generator).to(flat.device)
        out[name] = flat[perm].view(mask.shape).clone()
    return out


def masked_state(
    space: Space,
    masks: Mapping[str, torch.Tensor],
    num_classes: int,
    *,
    init_seed: int | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A state_dict of the density space's model with `masks` applied (as `weight_mask` buffers and zeros):
    to `weights` (trained weights, kept as they are), or to a fresh init built with `init_seed` exactly as
    `make_context` builds the model a proposer scores (kept weights rescaled by 1/sqrt(density))."""
    if (init_seed is None) == (weights is None):
        raise ValueError("give exactly one of init_seed and weights")
    if init_seed is not None:
        torch.manual_seed(init_seed)
    model = space.build(space.reference(), num_classes=num_classes)
    if weights is not None:
        model.load_state_dict(weights, strict=True)
    apply_masks_to_model(model, {k: v.cpu() for k, v in masks.items()}, rescale=weights is None)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fold_masks(model: nn.Module) -> nn.Module:
    """A copy of `model` whose weights are weight * mask and that has no weight_mask buffers.

    The zeros then live in the weights themselves, and the exported graph carries no mask tensors.
    """
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for _, module, mask in list(masked_layers(folded)):
            weight_of(module).mul_(mask)
            del module._buffers[MASK]
    return folded
