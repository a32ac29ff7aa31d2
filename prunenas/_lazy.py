"""Lazy re-exports for package namespaces: a name is imported from its module on first use, so importing a
package (e.g. to build the command-line parser from its settings) does not import torch or optuna."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for a package whose names `exports` maps to the modules defining them."""

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(import_module(package), name, value)  # later lookups skip this function
        return value

    def dir_() -> list[str]:
        return sorted(exports)

    return getattr_, dir_
