"""What a traced space measures on its model (`prunenas.spaces.traced`), as functions of the model alone: the
layers a forward calls and whether that path depends on the input values, which channel groups survive
pruning to their lowest width (and the bound on Torch-Pruning's walk of one group), and the family's init
rule by which a pruned model's reshaped layers are re-initialised.

The init rule is read off the reference model per layer type: the fan (fan_in, fan_out or their mean, as
torch's init functions compute it) for which std * sqrt(fan) is most nearly constant over the layers of
that type, or a constant std when that fits best (e.g. ConvNeXt's truncated normal).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunenas.errors import PrunenasError, first_line
from prunenas.surgery import even_drops, prune_channels


# -- the layers a forward calls ------------------------------------------------------------------------------
def call_path(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The module paths of the layers (leaf modules, and every Conv2d/Linear) in the order the forward
    of `x` calls them."""
    path: list[str] = []
    hooks = [
        m.register_forward_hook(lambda *_, n=n: path.append(n))
        for n, m in model.named_modules()
        if n and (isinstance(m, nn.Conv2d | nn.Linear) or next(m.children(), None) is None)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return path


def path_dependence(model: nn.Module, path: list[str], input_shape: tuple[int, ...]) -> str:
    """Why the forward of `model` calls other layers for other input values than zeros (whose `path` is
    given), in words; "" when it calls the same layers for every input tried."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, *input_shape, generator=gen)
    probes = {
        "a random input": x, "its negation": -x, "a uniform [0, 1) input": torch.rand(x.shape, generator=gen),
        "a 10x larger random input": 10 * x,
    }  # fmt: skip
    for what, probe in probes.items():
        try:
            other = call_path(model, probe)
        except Exception as exc:
            return f"it fails on {what} ({type(exc).__name__}: {first_line(exc, limit=100)}) but runs on zeros"
        if other != path:
            same = (i for i, (a, b) in enumerate(zip(path, other, strict=False)) if a != b)
            i = next(same, min(len(path), len(other)))
            a, b = (path[i] if i < len(path) else "the end"), (other[i] if i < len(other) else "the end")
            return f"on {what} it calls {b!r} where zeros call {a!r} (layer call {i + 1})"
    return ""


# -- which groups prune ---------------------------------------------------------------------------------------
#: The bound on deriving a space: how many entries Torch-Pruning's walk of one dependency group may reach
#: before the model is refused. A well-behaved model stays far below it (torchvision's ResNets, DenseNets and
#: ConvNeXts under 200; timm's mobilevitv2_200, the largest seen, 26.6k); channel shuffles and splits (a
#: CIFAR ShuffleNetV2) make it grow without end, and each entry costs a scan of those before it.
MAX_GROUP_ENTRIES_ENV = "PRUNENAS_MAX_GROUP_ENTRIES"
DEFAULT_MAX_GROUP_ENTRIES = 40_000


def max_group_entries() -> int:
    """The bound on one dependency group's entries: $PRUNENAS_MAX_GROUP_ENTRIES, else the default; a value
    that is not a whole number >= 1 is refused in one line naming the variable."""
    given = os.environ.get(MAX_GROUP_ENTRIES_ENV, "")
    text = given.strip()
    if not text:
        return DEFAULT_MAX_GROUP_ENTRIES
    if not text.isdigit() or int(text) < 1:
        raise PrunenasError(
            f"{MAX_GROUP_ENTRIES_ENV}={given!r} is not a number of entries; use a whole number >= 1 (default "
            f"{DEFAULT_MAX_GROUP_ENTRIES}: how far Torch-Pruning may follow one dependency group before a traced "
            "space is refused), or unset it"
        )
    return int(text)


def failing_groups(
    model: nn.Module,
    example: torch.Tensor,
    plan: Mapping[str, tuple[int, int, int]],
    check: Callable[[Any], str | None],
) -> dict[str, str]:
    """Groups whose pruning to their lowest width fails or changes the output (group -> reason); `plan`: group
    root -> (width, lowest width, splits); `check(out)`: what is wrong with an output (None: nothing; the task's
    check). All groups are tried together; on a failure the set is halved until each culprit is found."""

    def attempt(roots: list[str]) -> str | None:
        trial = copy.deepcopy(model)
        try:
            prune_channels(trial, example, {r: even_drops(plan[r][0], plan[r][1], plan[r][2]) for r in roots})
            with torch.no_grad():
                out = trial.eval()(example)
        except Exception as exc:
            first = first_line(exc)
            return f"pruning fails ({type(exc).__name__}: {first[:120]})"
        wrong = check(out)
        return None if wrong is None else f"pruning changes the output: it {wrong}"

    bad: dict[str, str] = {}

    def search(roots: list[str]) -> None:
        if not roots:
            return
        why = attempt(roots)
        if why is None:
            return
        if len(roots) == 1:
            bad[roots[0]] = why
            return
        half = len(roots) // 2
        search(roots[:half])
        search(roots[half:])

    search(list(plan))
    return bad


# -- the family's init rule ---------------------------------------------------------------------------------
def _std(t: torch.Tensor) -> float:
    return float(t.detach().double().std()) if t.numel() > 1 else 0.0


def fans_of(weight: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return int(weight.shape[1]) * receptive, int(weight.shape[0]) * receptive


FAN_MODES = ("fan_in", "fan_out", "fan_avg")


def _fan(mode: str, fans: tuple[int, int]) -> float:
    return {"fan_in": fans[0], "fan_out": fans[1], "fan_avg": (fans[0] + fans[1]) / 2}[mode]


def detect_init_modes(model: nn.Module) -> dict[str, str]:
    """Per layer kind ("Conv2d", "Conv2d/depthwise", "Linear"): the fan the family's init scales by
    ("fan_in", "fan_out", "fan_avg"), "constant" when its std does not depend on the fan, or "unknown"
    (then pruned layers keep their initial values unscaled)."""
    buckets: dict[str, list[tuple[float, tuple[int, int]]]] = {}
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.numel() >= 16:
            kind = type(m).__name__
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
                kind += "/depthwise"
            buckets.setdefault(kind, []).append((_std(m.weight), fans_of(m.weight)))
    modes: dict[str, str] = {}
    for kind, rows in buckets.items():
        stds = torch.tensor([s for s, _ in rows], dtype=torch.float64)
        if len(rows) < 2 or float(stds.mean()) == 0.0:
            modes[kind] = "unknown"
            continue

        def spread(values: torch.Tensor) -> float:
            return float(values.std() / values.mean()) if float(values.mean()) else math.inf

        scores = {"constant": spread(stds)}
        for mode in FAN_MODES:
            scores[mode] = spread(stds * torch.tensor([math.sqrt(_fan(mode, f)) for _, f in rows], dtype=torch.float64))
        best = min(scores, key=lambda k: (round(scores[k], 3), k != "constant"))
        modes[kind] = best if scores[best] < 0.15 else "unknown"
    return modes


def layer_kind(m: nn.Module, ref_groups: int, ref_in: int) -> str:
    kind = type(m).__name__
    if isinstance(m, nn.Conv2d) and ref_groups > 1 and ref_groups == ref_in:
        kind += "/depthwise"
    return kind


@dataclass(frozen=True)
class LayerFacts:
    """A conv or linear layer of the reference model: its widths, groups, MACs, fans and kind (`layer_kind`)."""

    out: int
    inp: int
    groups: int
    macs: int
    fans: tuple[int, int]
    kind: str

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.inp == self.out


@torch.no_grad()
def rescale_to_init(model: nn.Module, layers: Mapping[str, LayerFacts], init_modes: Mapping[str, str]) -> None:
    """Rescale every conv/linear layer whose fans differ from the reference's (`layers`) to the family's init
    (`init_modes`, from `detect_init_modes`) at its new fan; layers of an "unknown" rule keep their values."""
    for name, m in model.named_modules():
        ref = layers.get(name)
        if ref is None or not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        fans = fans_of(m.weight)
        if fans == ref.fans:
            continue
        mode = init_modes.get(ref.kind, "unknown")
        if mode in FAN_MODES:
            m.weight.mul_(math.sqrt(_fan(mode, ref.fans) / _fan(mode, fans)))
