"""Loading plugins: built-in and third-party classes registered under an entry-point group."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any


def load_ref(ref: str) -> Any:
    """The object named by "package.module:attr.sub"."""
    module, _, attr = ref.partition(":")
    obj: Any = import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def load_group(group: str, builtins: Mapping[str, str], what: str) -> list[tuple[str, Any]]:
    """(name, object) for the built-ins, then for every entry point of `group` (entry points win a
    shared name). The built-ins are listed in the package's own entry points too; the mapping keeps a
    bare source tree on PYTHONPATH working. A plugin that fails to import is reported and skipped."""
    found = [(name, load_ref(ref)) for name, ref in builtins.items()]
    for ep in entry_points(group=group):
        try:
            found.append((ep.name, ep.load()))
        except Exception as exc:  # a broken plugin must not take the tool down
            print(f"prunenas: warning: cannot load {what} plugin {ep.name!r} ({ep.value}): {exc}", file=sys.stderr)
    return found
