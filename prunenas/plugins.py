"""Plugins: spaces, proposers, metrics, evaluators and tasks, registered in one place.

The built-ins are `BUILTINS`, and only there (a source tree on PYTHONPATH, which has no package metadata,
finds them as an installed package does). A third-party plugin is one class and one entry-point line in its
own package's group:

    [project.entry-points."prunenas.spaces"]      a Space subclass (a family, or a space of its own)
    [project.entry-points."prunenas.proposers"]   a Proposer subclass
    [project.entry-points."prunenas.metrics"]     a Metric subclass
    [project.entry-points."prunenas.evaluators"]  an Evaluator subclass (prunenas.evaluators.base)
    [project.entry-points."prunenas.tasks"]       a Task subclass (prunenas.tasks.base)

An entry point of a built-in's name replaces the built-in. Entry points that prunenas's own distribution
lists (the metadata of an install made before the built-ins left pyproject.toml) are not read: `BUILTINS`
decides what is built in.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, TypeVar

SPACES = "prunenas.spaces"
PROPOSERS = "prunenas.proposers"
METRICS = "prunenas.metrics"
EVALUATORS = "prunenas.evaluators"
TASKS = "prunenas.tasks"
#: prunenas's own distribution name (its entry points, if any, are not plugins).
DISTRIBUTION = "prunenas"

#: The built-in plugins: group -> label -> "module:class" (a label is what an entry point of that name replaces;
#: spaces: the family name TOML files give).
BUILTINS: Mapping[str, Mapping[str, str]] = {
    SPACES: {
        "cifar_resnet": "prunenas.spaces.cifar_resnet:CifarResNetSpace",
        "cifar_resnet_stages": "prunenas.spaces.cifar_resnet:CifarResNetStagesSpace",
        "cifar_vgg": "prunenas.spaces.cifar_vgg:CifarVGGSpace",
        "cifar_preresnet": "prunenas.spaces.cifar_preresnet:CifarPreResNetSpace",
        "cifar_densenet": "prunenas.spaces.cifar_densenet:CifarDenseNetSpace",
        "density": "prunenas.spaces.density:DensitySpace",
        "traced": "prunenas.spaces.traced:TracedSpace",
    },
    # Labels are unique; the user-facing name is the class's `name`, which a structured
    # and an unstructured method may share (random, uniform): the space picks between them.
    PROPOSERS: {
        "uniform": "prunenas.proposers.structured:UniformProposer",
        "random": "prunenas.proposers.structured:RandomProposer",
        "l1": "prunenas.proposers.structured:L1Proposer",
        "l2": "prunenas.proposers.structured:L2Proposer",
        "taylor": "prunenas.proposers.structured:TaylorProposer",
        "fpgm": "prunenas.proposers.structured:FPGMProposer",
        "lamp": "prunenas.proposers.structured:LAMPProposer",
        "slimming": "prunenas.proposers.structured:SlimmingProposer",
        "l1-paper": "prunenas.proposers.structured:LiPaperProposer",
        "magnitude": "prunenas.proposers.unstructured:MagnitudeProposer",
        "magnitude-init": "prunenas.proposers.unstructured:MagnitudeInitProposer",
        "snip": "prunenas.proposers.unstructured:SnipProposer",
        "grasp": "prunenas.proposers.unstructured:GraspProposer",
        "graspabs": "prunenas.proposers.unstructured:GraspAbsProposer",
        "synflow": "prunenas.proposers.unstructured:SynflowProposer",
        "random-density": "prunenas.proposers.unstructured:RandomDensityProposer",
        "erk": "prunenas.proposers.unstructured:ERKProposer",
        "uniform-density": "prunenas.proposers.unstructured:UniformDensityProposer",
    },
    METRICS: {
        "val_acc": "prunenas.metrics:ValAccuracy",
        "val_miou": "prunenas.metrics:ValMeanIoU",
        "val_map": "prunenas.metrics:ValMAP",
        "macs": "prunenas.metrics:Macs",
        "params": "prunenas.metrics:Params",
        "latency": "prunenas.metrics:Latency",
    },
    EVALUATORS: {
        "scratch": "prunenas.evaluators.builtin:Scratch",
        "inherit-bn": "prunenas.evaluators.builtin:InheritBN",
        "callable": "prunenas.evaluators.builtin:CallableEvaluator",
        "supernet": "prunenas.evaluators.supernet:Supernet",
    },
    TASKS: {
        "classification": "prunenas.tasks.classification:Classification",
        "segmentation": "prunenas.tasks.segmentation:Segmentation",
        "detection": "prunenas.tasks.detection:Detection",
    },
}


def load_ref(ref: str) -> Any:
    """The object named by "package.module:attr.sub"."""
    module, _, attr = ref.partition(":")
    obj: Any = import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def load_group(group: str, what: str) -> list[tuple[str, Any]]:
    """(name, object) for the built-ins of `group`, then for every third-party entry point of it (entry
    points win a shared name). A plugin that fails to import is reported and skipped."""
    found = [(name, load_ref(ref)) for name, ref in BUILTINS[group].items()]
    for ep in entry_points(group=group):
        if ep.dist is not None and ep.dist.name == DISTRIBUTION:
            continue  # prunenas's own (stale) metadata: the built-ins are BUILTINS
        try:
            found.append((ep.name, ep.load()))
        except Exception as exc:  # a broken plugin must not take the tool down
            print(f"prunenas: warning: cannot load {what} plugin {ep.name!r} ({ep.value}): {exc}", file=sys.stderr)
    return found


T = TypeVar("T")


def named_classes(group: str, base: type[T], what: str) -> dict[str, type[T]]:
    """The plugins of `group` that are subclasses of `base` with a `name`, by that name (the last of a shared
    name wins: an entry point replaces a built-in); any other object is reported and skipped."""
    found: dict[str, type[T]] = {}
    for label, cls in load_group(group, what):
        if isinstance(cls, type) and issubclass(cls, base) and bool(getattr(cls, "name", None)):
            found[cls.name] = cls  # type: ignore[attr-defined]
        else:
            print(
                f"prunenas: warning: {what} plugin {label!r} is not a named {base.__name__}; ignored", file=sys.stderr
            )
    return found


def dist_versions(*names: str) -> dict[str, str | None]:
    """Installed versions of the named distributions (None when absent), from their metadata."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out
