"""Protocol presets: the settings with which a paper's code ran its experiments, as plain data.

`prunenas rethink --protocol rethinking|frankle` sets them all at once; a flag given explicitly wins over
the preset. Every run of such a study records the protocol and the settings it resolved to (metrics.json,
key "protocol"), and `--dry-run` prints them.

  prunenas    prunenas's defaults: a held-out validation split (a tenth of the training images), the final
              model's test accuracy, bf16 autocast on CUDA, normalisation by the training split's own
              statistics, the space's own initialisation.
  rethinking  Liu et al. (ICLR 2019), Eric-mingjie/rethinking-network-pruning: every training image
              trains (no validation split), the best epoch's test accuracy is reported (selected on the
              test set, so labelled test-selected, beside the final epoch's), fp32, the fixed CIFAR
              constants, the repository's initialisation, its option-A shortcut (average pooling, no
              gradient).
  frankle     Frankle et al. (ICLR 2021), open_lth: every training image trains, the final model's test
              accuracy, fp32, the ImageNet constants open_lth uses for CIFAR-10, open_lth's
              initialisation, masks applied to a fresh init without rescaling.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from prunenas.config import DataConfig, RunSettings
from prunenas.errors import PrunenasError
from prunenas.spaces.base import Space


@dataclass(frozen=True)
class Protocol:
    """One preset. None leaves a setting as prunenas has it (or as the user gave it)."""

    name: str
    summary: str
    val_size: int | None = None  # 0: no validation split
    normalize: str | None = None  # "cifar" / "imagenet" constants
    amp: bool | None = None  # False: fp32 everywhere
    test_every_epoch: bool = False  # report the best epoch's test accuracy too (test-selected)
    init: str | None = None  # the space's [model] init
    rescale: bool | None = None  # density spaces: kept weights of a fresh init x 1/sqrt(density)
    shortcut_a: str | None = None  # the option-A shortcut variant of CIFAR ResNets ("A-pool")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    "prunenas": Protocol("prunenas", "prunenas's defaults (validation split, final-epoch test accuracy)"),
    "rethinking": Protocol(
        "rethinking",
        "Liu et al. 2019 (Rethinking the value of network pruning), as its repository runs CIFAR",
        val_size=0,
        normalize="cifar",
        amp=False,
        test_every_epoch=True,
        init="rethinking",
        shortcut_a="A-pool",
    ),
    "frankle": Protocol(
        "frankle",
        "Frankle et al. 2021 (Pruning neural networks at initialization: why are we missing the mark?), open_lth",
        val_size=0,
        normalize="imagenet",
        amp=False,
        init="open_lth",
        rescale=False,
    ),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise PrunenasError(f"unknown --protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def space_overrides(space: Space, protocol: Protocol) -> dict[str, Any]:
    """The [model] settings the protocol changes in `space` (only those its family has)."""
    keys = space.config_keys or frozenset()
    out: dict[str, Any] = {}
    if protocol.init is not None and "init" in keys:
        out["init"] = protocol.init
    if protocol.rescale is not None and "rescale" in keys:
        out["rescale"] = protocol.rescale
    if protocol.shortcut_a is not None and "shortcut" in keys and str(space.config.get("shortcut", "A")) == "A":
        out["shortcut"] = protocol.shortcut_a
    return {k: v for k, v in out.items() if space.config.get(k) != v}


def apply_protocol(
    protocol: Protocol, space: Space, data: DataConfig, settings: RunSettings, *, given: frozenset[str] = frozenset()
) -> tuple[Space, DataConfig, RunSettings]:
    """The space, data and run settings with the preset applied; settings named in `given` (flags the user
    gave explicitly: "val_size", "normalize", "amp", "test_every_epoch") keep the user's value."""
    from prunenas.spaces.registry import get_space

    overrides = space_overrides(space, protocol)
    if overrides:
        space = get_space(space.source or space.name, overrides={**space.config, **overrides})
    data_changes: dict[str, Any] = {}
    if protocol.val_size is not None and "val_size" not in given:
        data_changes["val_size"] = protocol.val_size
    if protocol.normalize is not None and "normalize" not in given:
        data_changes["normalize"] = protocol.normalize
    run_changes: dict[str, Any] = {}
    if protocol.amp is not None and "amp" not in given:
        run_changes["amp"] = protocol.amp
    if protocol.test_every_epoch and "test_every_epoch" not in given:
        run_changes["test_every_epoch"] = True
    return space, dataclasses.replace(data, **data_changes), dataclasses.replace(settings, **run_changes)


def resolved_settings(space: Space, data: DataConfig, settings: RunSettings) -> dict[str, Any]:
    """The protocol-relevant settings a run actually uses (recorded in metrics.json, shown by --dry-run)."""
    density = bool(space.masked)
    base = getattr(space, "base", space) if density else space
    shortcut = base.config.get("shortcut") if "shortcut" in (base.config_keys or ()) else None
    return {
        "validation split": "none (every training image trains)" if data.val_size == 0 else (
            f"{data.val_size} images" if data.val_size is not None else "a tenth of the training images"
        ),
        "reported test accuracy": "final epoch + best epoch by test (test-selected)" if settings.test_every_epoch
        else "final epoch",
        "precision": "fp32" if settings.amp is False else "bf16 autocast on CUDA, fp32 on CPU",
        "normalisation": "training split's statistics" if data.normalize == "train"
        else f"fixed {data.normalize} constants",
        "init": str(base.config.get("init", "prunenas")),
        "kept-weight rescale (density)": None if not density else bool(getattr(space, "rescale", True)),
        "shortcut (CIFAR ResNet)": None if shortcut is None else str(shortcut),
    }  # fmt: skip
