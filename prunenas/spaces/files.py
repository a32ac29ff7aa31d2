"""Where named spaces and shipped genotypes are found on disk (no torch import: the command line lists
spaces from a cache keyed by these files)."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def space_dirs() -> list[Path]:
    """Folders searched for <name>.toml, first match wins."""
    dirs = [Path(p) for p in os.environ.get("PRUNENAS_SPACES_PATH", "").split(os.pathsep) if p]
    dirs += [_PACKAGE_DIR.parent / "search_spaces", _PACKAGE_DIR / "search_spaces"]
    return [d for d in dirs if d.is_dir()]


def genotype_dirs() -> list[Path]:
    """Folders holding shipped genotype files (search_spaces/genotypes/)."""
    return [d / "genotypes" for d in space_dirs() if (d / "genotypes").is_dir()]


def _toml_index() -> dict[str, Path]:
    index: dict[str, Path] = {}
    for d in space_dirs():
        for path in sorted(d.glob("*.toml")):
            index.setdefault(path.stem, path)
    return index


def shipped_genotypes() -> dict[str, Path]:
    """Name (file stem) -> path of every genotype file shipped in search_spaces/genotypes/."""
    found: dict[str, Path] = {}
    for d in genotype_dirs():
        for path in sorted(d.glob("*.json")):
            found.setdefault(path.stem, path)
    return found
