"""The Proposer protocol: a pruning method as an architecture proposer.

A proposer scores a model of a space (random init, or the space's reference trained on data) and
returns a genotype for a target: channels per gene for structured methods, density per layer for
unstructured ones. What it decides is all that is kept: the genotype is trained from scratch later.

Targets:
  ratio       fraction of prunable channels (structured) or weights (unstructured) removed
  macs_ratio  MACs of the genotype / MACs of the space's reference (met within 2%)
  density     fraction of prunable weights kept (unstructured; met within 0.5%)

Third-party proposers: subclass `Proposer`, set the class attributes, implement `propose`, and add
one line under `[project.entry-points."prunenas.proposers"]`.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from prunenas.config import RunSettings, parse_bool, parse_float, parse_int
from prunenas.data import DatasetSplits
from prunenas.errors import PrunenasError
from prunenas.genotype import Genotype
from prunenas.plugins import PROPOSERS, load_group
from prunenas.spaces.base import Space

TargetKind = Literal["ratio", "macs_ratio", "density", "latency_ratio"]
TARGET_KINDS: tuple[TargetKind, ...] = ("ratio", "macs_ratio", "density", "latency_ratio")
GROUP = PROPOSERS


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    value: float

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise PrunenasError(
                f"unknown target {self.kind!r}; valid: --ratio, --macs-ratio, --density, --latency-ratio"
            )
        v = float(self.value)
        ok = 0.0 <= v < 1.0 if self.kind == "ratio" else 0.0 < v <= 1.0
        if not ok:
            valid = "[0, 1)" if self.kind == "ratio" else "(0, 1]"
            flag = "--" + self.kind.replace("_", "-")
            raise PrunenasError(f"{flag} {self.value} is out of range; it must be in {valid}")
        object.__setattr__(self, "value", v)

    def describe(self) -> str:
        return f"{self.kind}={self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class ProposalContext:
    """What a proposer may look at.

    `model` is the space's reference genotype built (weights from `--reference` when `trained`,
    else a seeded random init), on `device`. Proposers must not modify it: copy it first.
    """

    space: Space
    model: nn.Module
    trained: bool
    device: torch.device
    seed: int = 0
    data: DatasetSplits | None = None
    #: How a training the proposer runs itself executes (precision, last partial batch: a protocol's
    #: settings); None: prunenas's defaults.
    run: RunSettings | None = None


@dataclass(frozen=True)
class Proposal:
    """A proposer's decision: the genotype, for unstructured methods the mask it chose, and `source`: the
    weights of the reference genotype it trained itself and decided on (network slimming's sparsity-trained
    model; None when it scored the context's model), which prune-then-fine-tune cuts the genotype from."""

    genotype: Genotype
    masks: Mapping[str, torch.Tensor] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, torch.Tensor] | None = None


class Proposer(ABC):
    """Base class of every proposer. Options are keyword arguments checked against `options`."""

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["channels", "density"]] = "channels"
    needs_trained: ClassVar[bool] = False
    needs_data: ClassVar[bool] = False
    targets: ClassVar[tuple[TargetKind, ...]] = ("ratio", "macs_ratio")
    summary: ClassVar[str] = ""
    #: Seeds a search by default (False for fixed paper rules that only fit a few spaces).
    seeds_search: ClassVar[bool] = True
    #: Among the few a smoke-budget search seeds with (data-free or fast on a CPU).
    quick: ClassVar[bool] = False
    #: Skipped when seeding a search on a machine without a GPU (too slow there; run it by hand).
    gpu_only_seeding: ClassVar[bool] = False
    #: option name -> default value (documented in `prunenas proposers`)
    options: ClassVar[Mapping[str, Any]] = {}
    #: The importance by which prune-then-fine-tune keeps channels of the weights the decision came from
    #: (`Space.initial_state`'s `criterion`); None: the space's own rule.
    inherits_by: ClassVar[str | None] = None

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise PrunenasError(f"proposer {self.name!r}: unknown option(s) {unknown}; valid options: {valid}")
        self.settings: dict[str, Any] = {
            **self.options,
            **{k: self._typed(k, v) for k, v in options.items()},
        }

    def _typed(self, key: str, value: Any) -> Any:
        """An option value checked against the type of its default (booleans parse strictly)."""
        default = self.options[key]
        where = f"proposer {self.name!r}: option {key}"
        if isinstance(default, bool):
            return parse_bool(value, where)
        if isinstance(default, int):
            return parse_int(value, where, f"an integer like {default}")
        if isinstance(default, float):
            return parse_float(value, where, f"a finite number like {default}")
        if isinstance(default, str) and not isinstance(value, str):
            raise PrunenasError(f"{where} must be a name like {default!r}, got {value!r}")
        return value

    def check(self, space: Space, target: Target, trained: bool) -> None:
        """Raise PrunenasError if this proposer cannot serve `space`/`target`."""
        if space.proposer_kind is None:
            raise PrunenasError(f"no pruning method proposes genotypes of space {space.name!r} ({space.value_label})")
        if not space.serves(self.kind):
            raise PrunenasError(
                f"proposer {self.name!r} proposes {self.kind} genotypes but space {space.name!r} is a "
                f"{space.proposer_kind} space; pick a {space.proposer_kind} proposer (see `prunenas proposers`)"
            )
        if target.kind not in self.targets:
            flags = ", ".join("--" + t.replace("_", "-") for t in self.targets)
            raise PrunenasError(f"proposer {self.name!r} takes {flags}, not --{target.kind.replace('_', '-')}")
        if self.needs_trained and not trained:
            raise PrunenasError(
                f"proposer {self.name!r} scores trained weights; pass --reference CKPT "
                "(from `prunenas pretrain`) or --pretrain-epochs N to train a quick reference"
            )

    @abstractmethod
    def propose(self, ctx: ProposalContext, target: Target) -> Proposal:
        """Score `ctx.model` and return a genotype of `ctx.space` that meets `target`."""

    def trains_source(self) -> bool:
        """Whether the proposer trains the weights it decides on itself (its `Proposal.source`), so that
        prune-then-fine-tune starts from them instead of from a reference trained without it."""
        return False

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "needs_trained": self.needs_trained,
            "needs_data": self.needs_data,
            "targets": list(self.targets),
            "options": dict(self.options),
            "summary": self.summary,
            "seeds_search": self.seeds_search,
            "quick": self.quick,
        }


def _add(found: dict[tuple[str, str], type[Proposer]], label: str, cls: object) -> None:
    if isinstance(cls, type) and issubclass(cls, Proposer) and cls.name:
        found[(cls.name, cls.kind)] = cls
    else:
        print(f"prunenas: warning: proposer plugin {label!r} is not a named Proposer; ignored", file=sys.stderr)


@cache
def _registry() -> dict[tuple[str, str], type[Proposer]]:
    found: dict[tuple[str, str], type[Proposer]] = {}
    for label, cls in load_group(GROUP, "proposer"):
        _add(found, label, cls)
    return found


def proposers(kind: str | None = None) -> list[type[Proposer]]:
    """Registered proposers (entry points of the prunenas.proposers group), optionally of one kind."""
    return [cls for (_, k), cls in sorted(_registry().items()) if kind is None or k == kind]


def get_proposer(name: str, kind: str | None = None, **options: Any) -> Proposer:
    """The proposer called `name`; `kind` ("channels"/"density", the space's kind) picks between
    a structured and an unstructured method of the same name."""
    matches = [cls for (n, k), cls in _registry().items() if n == name and (kind is None or k == kind)]
    if not matches:
        valid = sorted({cls.name for cls in proposers(kind)})
        what = f"{kind} proposers" if kind else "proposers"
        others = [cls for (n, _), cls in _registry().items() if n == name]
        if others:
            raise PrunenasError(
                f"proposer {name!r} proposes {others[0].kind} genotypes, not {kind}; valid {what}: {', '.join(valid)}"
            )
        raise PrunenasError(f"unknown proposer {name!r}; valid {what}: {', '.join(valid)}")
    if len(matches) > 1:
        raise PrunenasError(f"proposer {name!r} exists for several kinds; name the space (--space) to pick one")
    return matches[0](**options)


def clear_cache() -> None:
    _registry.cache_clear()
