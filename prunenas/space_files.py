"""Where named spaces and shipped genotypes are found on disk (no torch import: the command line lists
spaces from a cache keyed by these files), and where the spaces loaded in this process came from.

It sits below both `prunenas.genotype` (which resolves shipped genotype names and records a space's origin
in the files it writes) and `prunenas.spaces` (which finds and loads the spaces), so neither imports the
other's layer upward.

A space defined by the user's own files (a TOML file outside the shipped folders, a model factory's
Python file) is recorded in every genotype written of it, under `space_origin` (see
`prunenas.spaces.registry.space_for_genotype`, which reads it back from any folder)::

    "space_origin": {"toml": {"path": "/abs/my_space.toml", "sha256": "...",
                              "settings": {"family": "cifar_resnet", "model": {...}}},
                     "factory": {"spec": "models.py:net", "path": "/abs/models.py", "sha256": "...",
                                 "root": "/abs"}}

`toml` when the space is a TOML file (its resolved family and [model] settings, `extends` applied),
`factory` when it builds a user's factory (`root`: the import folder of a `package.module:callable`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from prunenas.errors import SpaceError

_PACKAGE_DIR = Path(__file__).resolve().parent

#: The provenance key of a genotype file that records where its space's files are.
ORIGIN_KEY = "space_origin"


def shipped_space_dirs() -> list[Path]:
    """The folders of the spaces prunenas ships (a source checkout's and the installed package's)."""
    return [_PACKAGE_DIR.parent / "search_spaces", _PACKAGE_DIR / "search_spaces"]


def space_dirs() -> list[Path]:
    """Folders searched for <name>.toml, first match wins."""
    dirs = [Path(p) for p in os.environ.get("PRUNENAS_SPACES_PATH", "").split(os.pathsep) if p]
    dirs += shipped_space_dirs()
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


def genotype_path(arg: str) -> Path:
    """A genotype argument as a path: an existing file, or the name of a shipped genotype."""
    p = Path(arg)
    if p.exists() or arg.endswith(".json") or os.sep in arg:
        return p
    shipped = shipped_genotypes()
    if arg in shipped:
        return shipped[arg]
    raise SpaceError(
        f"genotype {arg!r} is neither a file nor a shipped genotype; shipped: {', '.join(shipped)} "
        "(or pass the path of a genotype JSON file)"
    )


def is_shipped(path: Path) -> bool:
    """Whether `path` is one of the space files prunenas ships (found by name on every machine)."""
    try:
        folder = path.resolve().parent
        return any(folder == d.resolve() for d in shipped_space_dirs())
    except OSError:
        return False


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file's bytes (None: it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


# -- where the spaces of this process came from ------------------------------------------------------
# Space name -> its `space_origin` (None: a space found by its name on every machine). Written by the
# registry when it loads a space; read by Genotype.to_dict, so every genotype file records it.
_LOADED: dict[str, dict[str, Any] | None] = {}
# `path/to/file.py` of a factory spec -> the file it stands for, where a genotype written in another
# folder recorded it (the spec itself is relative to the folder that genotype was made in).
_FACTORY_FILES: dict[str, Path] = {}


def record_origin(name: str, origin: dict[str, Any] | None) -> None:
    _LOADED[name] = origin


def loaded_origin(name: str) -> tuple[bool, dict[str, Any] | None]:
    """(whether a space of this name was loaded in this process, its origin)."""
    return name in _LOADED, _LOADED.get(name)


def factory_file(where: str) -> Path:
    """The file of a factory spec's `path/to/file.py` part: where a genotype made in another folder
    recorded it, else relative to the working folder."""
    return _FACTORY_FILES.get(where, Path(where))


def map_factory_file(where: str, path: Path) -> None:
    _FACTORY_FILES[where] = path


def forget_origins() -> None:
    _LOADED.clear()
    _FACTORY_FILES.clear()
