"""The import layers (pyproject.toml [tool.importlinter], checked in CI by `lint-imports`) place every top-level
module of prunenas: a new module must be given its layer, or the contract would not cover it."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["importlinter"]["contracts"]


def test_every_top_level_module_has_a_layer():
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = [m.strip() for layer in layers for m in layer.replace(":", "|").split("|")]
    assert len(named) == len(set(named)), "a module is in two layers"
    package = ROOT / "prunenas"
    modules = {
        f"prunenas.{p.stem if p.is_file() else p.name}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert sorted(modules - set(named)) == [], "give these modules a layer in pyproject.toml"
    assert sorted(set(named) - modules) == [], "these layers name modules that do not exist"


def test_the_contracts_the_design_asks_for_are_declared():
    kinds = {c["type"]: c for c in _contracts()}
    assert kinds["acyclic_siblings"]["ancestors"] == ["prunenas"]
    protected = {
        tuple(c["protected_modules"]): c["allowed_importers"] for c in _contracts() if c["type"] == "protected"
    }
    assert protected[("optuna",)] == ["prunenas.search"]
    assert protected[("torch_pruning",)] == ["prunenas.surgery"]
