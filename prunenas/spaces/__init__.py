"""Search spaces: a model family plus its genes. See `registry` for how they are found.

Names load on first use (`prunenas.space_files` finds the TOML files without importing torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunenas._lazy import lazy_exports

if TYPE_CHECKING:
    from prunenas.space_files import shipped_genotypes
    from prunenas.spaces.base import Gene, Space
    from prunenas.spaces.registry import all_spaces, get_space, space_names

_EXPORTS = {
    "Gene": "prunenas.spaces.base",
    "Space": "prunenas.spaces.base",
    "all_spaces": "prunenas.spaces.registry",
    "get_space": "prunenas.spaces.registry",
    "space_names": "prunenas.spaces.registry",
    "shipped_genotypes": "prunenas.space_files",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Gene", "Space", "all_spaces", "get_space", "shipped_genotypes", "space_names"]
