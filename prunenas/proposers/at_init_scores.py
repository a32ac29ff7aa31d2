"""Per-weight scores of pruning at initialization (and magnitude), which the unstructured proposers
(`prunenas.proposers.unstructured`) rank globally to allocate the kept weights.

Scores (w: a layer's weights; L: cross-entropy on a class-balanced batch, no augmentation):
  magnitude  |w| of trained weights
  snip       |w * dL/dw|                                    (Lee et al. 2019)
  grasp      -w * (H g), g = dL/dw, logits divided by T = 200 (Wang et al. 2020)
  synflow    |w * dR/dw|, R = sum(f(1)) on a float64 eval-mode copy whose parameters and buffers are
             all made absolute; data-free; K = 100 iterations, step k pruning to density d^(k/K)
             (Tanaka et al. 2020)
Each score function returns layer path -> a tensor shaped like the layer's weight, on the CPU. Also
here: the ERK allocation weights (`erk_weights`) and the class-balanced scoring batch
(`class_balanced_batch`).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prunenas.data import DatasetSplits
from prunenas.errors import PrunenasError
from prunenas.masks import prunable_layers, weight_of

__all__ = [
    "Scores",
    "SynflowRun",
    "class_balanced_batch",
    "erk_weights",
    "grasp_scores",
    "magnitude_scores",
    "snip_scores",
    "synflow_iterative",
    "synflow_scores",
]

Scores = dict[str, torch.Tensor]
_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------- scores


def _named_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, weight_of(module)) for name, module in prunable_layers(model)]


@contextmanager
def _tracking(weights: Sequence[torch.Tensor]) -> Iterator[None]:
    """Grad mode on and every weight requiring grad for the duration; the flags are restored after."""
    flags = [w.requires_grad for w in weights]
    with torch.enable_grad():
        for w in weights:
            w.requires_grad_(True)
        try:
            yield
        finally:
            for w, flag in zip(weights, flags, strict=True):
                w.requires_grad_(flag)


def _grads(output: torch.Tensor, weights: Sequence[torch.Tensor], *, create_graph: bool = False) -> list[torch.Tensor]:
    """d output / d weight for each weight (zeros for a weight the output does not depend on)."""
    if not output.requires_grad:
        return [torch.zeros_like(w) for w in weights]
    grads = torch.autograd.grad(output, list(weights), create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(grads, weights, strict=True)]


def magnitude_scores(model: nn.Module) -> Scores:
    """|w| of every prunable layer (on the CPU)."""
    return {name: w.detach().abs().cpu() for name, w in _named_weights(model)}


def snip_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Scores:
    """SNIP: |w * dL/dw| with L the mean cross-entropy of `model(x)` against `y`.

    Runs `model` as it is (a train-mode model updates its BatchNorm running statistics: pass a copy);
    the weights themselves are not changed and no `.grad` is accumulated.
    """
    named = _named_weights(model)
    weights = [w for _, w in named]
    with _tracking(weights):
        loss = F.cross_entropy(model(x), y)
        grads = _grads(loss, weights)
    return {name: (w.detach() * g).abs().cpu() for (name, w), g in zip(named, grads, strict=True)}


def grasp_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, temperature: float = 200.0) -> Scores:
    """GraSP: -w * (H g), g = dL/dw and L the cross-entropy of `model(x) / temperature`.

    H g is computed by double backward as d/dw (g . stopgrad(g)). Same caveats as `snip_scores`.
    """
    named = _named_weights(model)
    weights = [w for _, w in named]
    with _tracking(weights):
        loss = F.cross_entropy(model(x) / temperature, y)
        grads = _grads(loss, weights, create_graph=True)
        z = sum(((g * g.detach()).sum() for g in grads), torch.zeros((), device=loss.device, dtype=loss.dtype))
        hg = _grads(z, weights)
    return {name: (-w.detach() * h).cpu() for (name, w), h in zip(named, hg, strict=True)}


def _synflow_net(model: nn.Module) -> nn.Module:
    """A float64, eval-mode copy of `model` with every floating parameter and buffer made absolute
    (as Tanaka et al.'s code does with the whole state_dict); no parameter requires grad."""
    net = copy.deepcopy(model).to(torch.float64).eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _synflow_objective(net: nn.Module, input_shape: Sequence[int], device: torch.device) -> torch.Tensor:
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    r = net(ones).sum()
    if not bool(torch.isfinite(r.detach())):
        raise PrunenasError(
            "SynFlow's R = sum(f(1)) overflows float64 for this model; it cannot be scored with synflow "
            "(pick another proposer)"
        )
    return r


def synflow_scores(
    model: nn.Module, input_shape: Sequence[int], masks: Mapping[str, torch.Tensor] | None = None
) -> Scores:
    """One SynFlow iteration: |w * dR/dw| in float64, R = sum(f(1)) on the absolute-valued eval copy of
    `model` (after multiplying each layer named in `masks` by its mask). `model` is not changed."""
    net = _synflow_net(model)
    named = _named_weights(net)
    with torch.no_grad():
        for name, w in named:
            if masks is not None and name in masks:
                w.mul_(masks[name].to(device=w.device, dtype=w.dtype))
    weights = [w for _, w in named]
    with _tracking(weights):
        grads = _grads(_synflow_objective(net, input_shape, weights[0].device), weights)
    return {name: (w.detach() * g).abs().cpu() for (name, w), g in zip(named, grads, strict=True)}


@dataclass(frozen=True)
class SynflowRun:
    """Result of iterative SynFlow.

    `scores`: |w * dR/dw| of the last iteration (float64; 0 for weights pruned earlier).
    `survived`: per weight, the number of iterations it was alive in: `iterations` for the weights
    alive in the last one, else the step that pruned it (so a later-pruned weight ranks higher).
    `guarded_steps`: intermediate steps where the collapse guard changed the mask; `clamped`: the
    layers it raised there (layer -> the lowest count it would have had).
    """

    scores: Scores
    survived: dict[str, torch.Tensor]
    iterations: int
    guarded_steps: int
    clamped: dict[str, int]


def _top_m(key: torch.Tensor, m: int) -> torch.Tensor:
    """Boolean mask of the `m` largest entries of 1-D `key`, ties broken by position (as a stable sort)."""
    n = key.numel()
    if m >= n:
        return torch.ones(n, dtype=torch.bool, device=key.device)
    if m <= 0:
        return torch.zeros(n, dtype=torch.bool, device=key.device)
    threshold = torch.kthvalue(key, n - m + 1).values  # the m-th largest value, O(n)
    keep = key >= threshold
    extra = int(keep.sum()) - m
    if extra > 0:  # ties at the threshold: a stable sort keeps the first ones
        ties = torch.nonzero(key == threshold).flatten()
        keep[ties[ties.numel() - extra :]] = False
    return keep


def _guarded_top_m(
    key: torch.Tensor, m: int, sizes: Sequence[int], floors: Sequence[int]
) -> tuple[torch.Tensor, dict[int, int]]:
    """`_top_m` over consecutive layers of `sizes` with a floor per layer: a layer below its floor keeps
    its own best `floor` entries and the rest are the top of the other layers (same rule as
    `unstructured._GlobalRanking.allocate`). Returns the mask and {layer index: count before the guard}."""
    keep = _top_m(key, m)
    counts = [int(part.sum()) for part in keep.split(list(sizes))]
    unguarded = list(counts)
    clamped: set[int] = set()
    while True:
        low = [i for i, (c, f) in enumerate(zip(counts, floors, strict=True)) if i not in clamped and c < f]
        if not low:
            return keep, {i: unguarded[i] for i in sorted(clamped)}
        clamped.update(low)
        work = key.clone()
        parts = work.split(list(sizes))
        for i in clamped:
            parts[i].fill_(_NEG_INF)
        keep = _top_m(work, m - sum(floors[i] for i in clamped))
        kept_parts = keep.split(list(sizes))
        for i, part in enumerate(key.split(list(sizes))):
            if i in clamped:
                kept_parts[i].copy_(_top_m(part, floors[i]))
        counts = [int(part.sum()) for part in kept_parts]


def synflow_iterative(
    model: nn.Module,
    input_shape: Sequence[int],
    density: float,
    *,
    iterations: int = 100,
    invert: bool = False,
    min_counts: Sequence[int] | None = None,
) -> SynflowRun:
    """Iterative SynFlow: at step k = 1..K-1 score the current masked float64 copy and keep the top
    round(N * density**(k/K)) weights globally (the lowest with `invert`); returns the scores of
    iteration K, which the caller ranks to prune to `density` (the K-th step).

    Speed: one float64 copy whose prunable weights are views of one flat buffer, so a step is one
    forward/backward plus a few vector ops: the scores of the live weights are gathered, the global
    threshold is a kthvalue over them (O(live), no sort), and only the newly pruned weights are
    zeroed; no model copies and no Python per-weight work in the loop. `min_counts` (the collapse
    guard, per layer in network order) is enforced at every step.
    """
    if iterations < 1:
        raise PrunenasError(f"synflow iterations must be >= 1, got {iterations}")
    net = _synflow_net(model)
    layers = list(prunable_layers(net))
    shapes = [weight_of(m).shape for _, m in layers]
    numels = [math.prod(s) for s in shapes]
    total = sum(numels)
    device = weight_of(layers[0][1]).device
    flat = torch.empty(total, dtype=torch.float64, device=device)
    params: list[nn.Parameter] = []
    offset = 0
    with torch.no_grad():
        for (_, module), n in zip(layers, numels, strict=True):
            w = weight_of(module)
            view = flat[offset : offset + n]
            view.copy_(w.detach().reshape(-1))
            param = nn.Parameter(view.view(w.shape))  # shares storage with `flat`
            module.weight = param
            params.append(param)
            offset += n
    grad = torch.empty_like(flat)
    score = torch.empty_like(flat)
    live = torch.arange(total, device=device)  # indices of the live weights, ascending
    edges = torch.tensor([0, *itertools.accumulate(numels)], device=device)
    survived = torch.full((total,), iterations, dtype=torch.int64, device=device)
    guarded = 0
    clamped: dict[str, int] = {}
    names = [name for name, _ in layers]
    floors = list(min_counts) if min_counts is not None else [0] * len(layers)
    for step in range(1, iterations + 1):
        with torch.enable_grad():
            r = _synflow_objective(net, input_shape, device)
            grads = _grads(r, params)
        with torch.no_grad():
            torch.cat([g.reshape(-1) for g in grads], out=grad)
            torch.mul(flat, grad, out=score).abs_()
            kept = round(total * density ** (step / iterations))
            if step == iterations or kept >= live.numel():
                continue
            # Rank the live weights only: the threshold and the bookkeeping cost O(live), and
            # only the newly pruned weights are written.
            key = score.index_select(0, live)
            if invert:
                key.neg_()
            keep = _top_m(key, kept)
            survivors = live[keep]
            positions = torch.searchsorted(survivors, edges)
            counts = (positions[1:] - positions[:-1]).tolist()
            if any(c < f for c, f in zip(counts, floors, strict=True)):
                full = torch.full_like(flat, _NEG_INF).index_copy_(0, live, key)
                guarded_keep, low = _guarded_top_m(full, kept, numels, floors)
                guarded += 1
                for i, count in low.items():
                    clamped[names[i]] = min(count, clamped.get(names[i], count))
                keep = guarded_keep.index_select(0, live)
                survivors = live[keep]
            pruned = live[~keep]
            flat.index_fill_(0, pruned, 0.0)
            survived.index_fill_(0, pruned, step)
            live = survivors
    return SynflowRun(
        scores={name: s.view(shape).cpu() for name, s, shape in zip(names, score.split(numels), shapes, strict=True)},
        survived={
            name: s.view(shape).cpu() for name, s, shape in zip(names, survived.split(numels), shapes, strict=True)
        },
        iterations=iterations,
        guarded_steps=guarded,
        clamped=clamped,
    )


def erk_weights(shapes: Sequence[Sequence[int]]) -> list[float]:
    """Erdős–Rényi-Kernel: the kept count of each layer is proportional to these values.

    ERK's density is proportional to sum(shape) / prod(shape), so the kept count (density * numel)
    is proportional to sum(shape) (out + in + kh + kw for a conv, out + in for a linear layer).
    """
    return [float(sum(shape)) for shape in shapes]


# --------------------------------------------------------------------------------------------- data


def class_balanced_batch(
    data: DatasetSplits, samples_per_class: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples_per_class` seeded training images of every class (all of a class that has fewer),
    normalized with the training mean/std, without augmentation: (float32 images, int64 labels)."""
    generator = torch.Generator().manual_seed(seed)
    labels = data.train.labels
    picks = []
    for c in range(data.num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel():
            picks.append(idx[torch.randperm(idx.numel(), generator=generator)[:samples_per_class]])
    if not picks:
        raise PrunenasError(f"dataset {data.name!r} has no training images to score with; pass another --dataset")
    index = torch.cat(picks)
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, 3, 1, 1)
    x = (data.train.images(index).to(torch.float32) / 255.0 - mean) / std
    return x.to(device), labels.index_select(0, index).to(device)
