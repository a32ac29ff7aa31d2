"""Protocol presets: the settings with which a paper's code ran its experiments, as plain data.

`prunenas rethink --protocol rethinking|frankle` sets them all at once; a flag given explicitly wins over
the preset. Every run of such a study records the protocol and the settings it resolved to (metrics.json,
key "protocol"), and `--dry-run` prints them.

  prunenas    prunenas's defaults: a held-out validation split (a tenth of the training images), the final
              model's test accuracy, bf16 autocast on CUDA and on CPUs with AMX-BF16, normalisation by the
              training split's own statistics, the space's own initialisation.
  rethinking  Liu et al. (ICLR 2019), Eric-mingjie/rethinking-network-pruning: every training image
              trains (no validation split), the last partial batch of an epoch too, the best epoch's test
              accuracy is reported (selected on the test set, so labelled test-selected, beside the final
              epoch's), fp32, the fixed CIFAR constants, the repository's initialisation, its option-A
              shortcut (average pooling, no gradient), the models its weight-level code builds
              (`models`), Scratch-B without a cap (its CIFAR code has none) and weight-level magnitude
              pruning of conv layers only, which may empty a layer (`proposer_options`).
  frankle     Frankle et al. (ICLR 2021), open_lth: every training image trains, the last partial batch
              too, the final model's test accuracy, fp32, the ImageNet constants open_lth uses for
              CIFAR-10, open_lth's initialisation, masks applied to a fresh init without rescaling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prunenas.config import DataConfig, RunSettings
from prunenas.errors import PrunenasError
from prunenas.spaces.base import Space
from prunenas.spaces.registry import get_space, shipped_model


@dataclass(frozen=True)
class CodeModel:
    """The model a paper's code builds where a shipped space defaults to another: its [model] settings and why."""

    settings: Mapping[str, Any]
    why: str


# The Rethinking weight-level CIFAR code (cifar/weight-level) builds `preresnet --depth 110` with bottleneck
# blocks and `densenet --depth 100 --compressionRate 2` with basic layers and BatchNorm weights 1; the shipped
# spaces default to the basic-block PreResNet-110 and DenseNet-BC-100.
_PRERESNET110 = CodeModel(
    {"block": "bottleneck"},
    "the Rethinking weight-level code builds `preresnet --depth 110` with bottleneck blocks (1.15M parameters)",
)
_DENSENET100 = CodeModel(
    {"bottleneck": False, "selection": True, "compression": 0.5, "bn_weight": 1.0},
    "the Rethinking weight-level code builds `densenet --depth 100 --compressionRate 2`: basic layers, BatchNorm "
    "weights 1 (4.07M parameters)",
)
_RETHINKING_MODELS: dict[str, CodeModel] = {
    "preresnet110_channels": _PRERESNET110,
    "preresnet110_density": CodeModel({"base_overrides": _PRERESNET110.settings}, _PRERESNET110.why),
    "densenet_bc100_channels": _DENSENET100,
    "densenet_bc100_density": CodeModel({"base_overrides": _DENSENET100.settings}, _DENSENET100.why),
}


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
    keep_last_batch: bool | None = None  # True: an epoch ends with its last, partial batch (DataLoader's default)
    uncapped_scratch_b: bool = False  # True: Scratch-B is never capped, density spaces included
    #: shipped space name -> the model the paper's code builds for it (its [model] settings and why)
    models: Mapping[str, CodeModel] = field(default_factory=dict)
    #: proposer name -> the option defaults the paper's code runs it with (options the user gave win)
    proposer_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

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
        keep_last_batch=True,
        uncapped_scratch_b=True,
        models=_RETHINKING_MODELS,
        # cifar/weight-level/cifar_prune.py: one threshold over the |w| of every nn.Conv2d (no Linear), and a
        # layer whose weights all fall below it is zeroed whole
        proposer_options={"magnitude": {"layers": "conv", "min_weights": 0}},
    ),
    "frankle": Protocol(
        "frankle",
        "Frankle et al. 2021 (Pruning neural networks at initialization: why are we missing the mark?), open_lth",
        val_size=0,
        normalize="imagenet",
        amp=False,
        init="open_lth",
        rescale=False,
        keep_last_batch=True,
    ),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise PrunenasError(f"unknown --protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def _user_set(mine: Mapping[str, Any], shipped: Mapping[str, Any] | None) -> frozenset[str]:
    """The keys of `mine` the user set: all of them in a space file of their own (`shipped` None), else those
    whose value differs from the shipped file's (an override of a shipped space)."""
    if shipped is None:
        return frozenset(mine)
    return frozenset(k for k, v in mine.items() if shipped.get(k) != v)


def space_overrides(space: Space, protocol: Protocol) -> dict[str, Any]:
    """The [model] settings the protocol changes in `space` (only those its family has). A setting the user
    set (in their own space file, or as an override of a shipped space) keeps the user's value; a shipped
    space's own settings are the preset's to change."""

    keys = space.config_keys or frozenset()
    shipped = shipped_model(space)
    given = _user_set(space.config, shipped)
    out: dict[str, Any] = {}
    code = protocol.models.get(space.name) if shipped is not None else None
    for key, value in (code.settings if code is not None else {}).items():
        if key == "base_overrides":  # a density space: the code's base model under the user's own base settings
            mine = dict(space.config.get("base_overrides") or {})
            kept = _user_set(mine, dict(shipped.get("base_overrides") or {}) if shipped is not None else None)
            out[key] = {**value, **{k: v for k, v in mine.items() if k in kept}}
        elif key not in given:
            out[key] = value
    if protocol.init is not None and "init" in keys and "init" not in given:
        out["init"] = protocol.init
    if protocol.rescale is not None and "rescale" in keys and "rescale" not in given:
        out["rescale"] = protocol.rescale
    if protocol.shortcut_a is not None and "shortcut" in keys and str(space.config.get("shortcut", "A")) == "A":
        out["shortcut"] = protocol.shortcut_a
    return {k: v for k, v in out.items() if space.config.get(k) != v}


def code_model(space: Space, protocol: Protocol) -> CodeModel | None:
    """The model the protocol's code builds for a shipped space where the space defaults to another."""

    code = protocol.models.get(space.name)
    return code if code is not None and shipped_model(space) is not None else None


def apply_protocol(
    protocol: Protocol, space: Space, data: DataConfig, settings: RunSettings, *, given: frozenset[str] = frozenset()
) -> tuple[Space, DataConfig, RunSettings]:
    """The space, data and run settings with the preset applied; settings named in `given` (flags the user
    gave explicitly: "val_size", "normalize", "amp", "test_every_epoch", "keep_last_batch") keep the user's
    value; so do [model] settings the user set (see `space_overrides`)."""

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
    if protocol.keep_last_batch is not None and "keep_last_batch" not in given:
        run_changes["keep_last_batch"] = protocol.keep_last_batch
    return space, dataclasses.replace(data, **data_changes), dataclasses.replace(settings, **run_changes)


def resolved_settings(space: Space, data: DataConfig, settings: RunSettings) -> dict[str, Any]:
    """The protocol-relevant settings a run actually uses (recorded in metrics.json, shown by --dry-run)."""
    base = space.base_space()
    shortcut = base.config.get("shortcut") if "shortcut" in (base.config_keys or ()) else None
    return {
        "validation split": "none (every training image trains)" if data.val_size == 0 else (
            f"{data.val_size} images" if data.val_size is not None else "a tenth of the training images"
        ),
        "reported test accuracy": "final epoch + best epoch by test (test-selected)" if settings.test_every_epoch
        else "final epoch",
        "precision": "fp32" if settings.amp is False else (
            "bf16 autocast" if settings.amp else "bf16 autocast on CUDA and on CPUs with AMX-BF16, else fp32"
        ),
        "normalisation": "training split's statistics" if data.normalize == "train"
        else f"fixed {data.normalize} constants",
        "last partial batch": "trained (every image, every epoch)" if settings.keep_last_batch
        else "dropped (equal batches)",
        "init": str(base.config.get("init", "prunenas")),
        "kept-weight rescale (density)": space.kept_weight_rescale(),
        "shortcut (CIFAR ResNet)": None if shortcut is None else str(shortcut),
    }  # fmt: skip
