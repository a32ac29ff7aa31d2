"""prunenas: network pruning as neural architecture search.

The Python API (see `prunenas.api` and the README)::

    import prunenas as pn
    genotype = pn.load_genotype("li2017_resnet56_b")
    model = pn.build(genotype)
    pn.count_cost(genotype).macs
    pn.train_model(genotype, data="digits", recipe="proxy", epochs=1)
    pn.propose("resnet20_channels", "l1", macs_ratio=0.5)
    pn.get_proposer("l1", "channels")          # a pn.Proposer; third-party proposers subclass it
    pn.Target("macs_ratio", 0.5)
    pn.search_architectures("resnet20_channels", data="digits", budget="smoke")
    pn.export_onnx(run_dir)

Names are imported on first use, so `import prunenas` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from prunenas.genotype import Genotype

__version__ = "0.1.0"

_LAZY = {
    "get_space": "prunenas.api",
    "space_names": "prunenas.spaces",
    "Space": "prunenas.spaces",
    "load_genotype": "prunenas.api",
    "build": "prunenas.api",
    "count_cost": "prunenas.api",
    "load_data": "prunenas.api",
    "train_model": "prunenas.api",
    "TrainedModel": "prunenas.api",
    "propose": "prunenas.api",
    "search_architectures": "prunenas.api",
    "export_onnx": "prunenas.api",
    "DataConfig": "prunenas.config",
    "RunSettings": "prunenas.config",
    "Recipe": "prunenas.recipes",
    "make_recipe": "prunenas.recipes",
    "PartialRecipe": "prunenas.recipes",
    "SearchSettings": "prunenas.search",
    "SearchConfig": "prunenas.search",
    "LatencyOptions": "prunenas.metrics",
    "Proposer": "prunenas.proposers.base",
    "Proposal": "prunenas.proposers.base",
    "ProposalContext": "prunenas.proposers.base",
    "Target": "prunenas.proposers.base",
    "get_proposer": "prunenas.proposers.base",
    "Metric": "prunenas.metrics",
    "get_metric": "prunenas.metrics",
    "PrunenasError": "prunenas.errors",
}

__all__ = ["Genotype", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prunenas' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
