"""Finding spaces: families from entry points, named spaces from TOML files.

A named space is a TOML file::

    family = "cifar_resnet"            # an entry point of the prunenas.spaces group
    description = "CIFAR ResNet-56 ..."
    extends = "resnet56_channels"      # optional: start from another space's settings
    [model]                            # settings of the family (depth, shortcut, ...)
    depth = 56
    [recipe]                           # training defaults for this space (used by the trainer)
    epochs = 160

Spaces are looked up by name in, in order: the folders of $PRUNENAS_SPACES_PATH, the repository's
top-level `search_spaces/` (source checkouts and editable installs) and the copy shipped inside the
package (`prunenas/search_spaces/`, non-editable installs). A path to a .toml file works everywhere.
Families whose class sets `default_config` are spaces of their own under their entry-point name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from prunenas.errors import SpaceError
from prunenas.plugins import SPACES, load_group
from prunenas.spaces.base import Space
from prunenas.spaces.files import _toml_index, shipped_genotypes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GROUP = SPACES


@cache
def families() -> dict[str, type[Space]]:
    """Entry-point name -> Space subclass, built-ins included."""
    found: dict[str, type[Space]] = {}
    for name, cls in load_group(GROUP, "space"):
        if isinstance(cls, type) and issubclass(cls, Space):
            found[name] = cls
        else:
            print(f"prunenas: warning: space plugin {name!r} is not a Space subclass; ignored", file=sys.stderr)
    return found


def space_names() -> list[str]:
    """Every named space: TOML files, then standalone plugin spaces."""
    names = list(_toml_index())
    names += [n for n, cls in families().items() if cls.default_config is not None and n not in names]
    return names


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SpaceError(
            f"space file {str(path)!r} does not exist; "
            "pass a space name (see `prunenas spaces`) or an existing .toml path"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"space file {str(path)!r} is not valid TOML ({exc}); fix the file") from None
    except UnicodeDecodeError:
        raise SpaceError(f"space file {str(path)!r} is not UTF-8 text; save it as UTF-8 TOML") from None
    except OSError as exc:
        raise SpaceError(f"cannot read space file {str(path)!r}: {exc}") from None


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


TOML_KEYS = frozenset({"family", "description", "extends", "name", "model", "recipe"})


def _resolve_toml(path: Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    data = _read_toml(path)
    unknown = sorted(set(data) - TOML_KEYS)
    if unknown:
        raise SpaceError(
            f"space file {str(path)!r}: unknown key(s) {unknown}; valid: {', '.join(sorted(TOML_KEYS))} "
            "(model settings go under [model], training settings under [recipe])"
        )
    parent = data.get("extends")
    if parent:
        if parent in seen:
            raise SpaceError(f"space file {str(path)!r}: `extends` loops through {parent!r}")
        parent_path = _find_toml(str(parent), relative_to=path.parent)
        merged = _merge(
            _resolve_toml(parent_path, (*seen, str(parent))),
            {k: v for k, v in data.items() if k != "extends"},
        )
        merged.pop("name", None)  # a child never inherits its parent's name
        if "name" in data:
            merged["name"] = data["name"]
        return merged
    return data


def shipped_model(space: Space) -> dict[str, Any] | None:
    """The [model] table of the shipped file `space` was built from (None: not a shipped space, e.g. the
    user's own file or a model factory), so callers can tell the shipped settings from the user's."""
    path = _toml_index().get(space.name)
    if path is None or not space.source:
        return None
    try:
        if Path(space.source).resolve() != path.resolve():
            return None
    except OSError:
        return None
    return dict(_resolve_toml(path).get("model", {}))


def _find_toml(name: str, relative_to: Path | None = None) -> Path:
    if name.endswith(".toml"):
        p = Path(name)
        if not p.is_absolute() and relative_to is not None and (relative_to / p).exists():
            p = relative_to / p
        return p
    index = _toml_index()
    if name in index:
        return index[name]
    raise SpaceError(
        f"unknown space {name!r}; valid spaces: {', '.join(space_names())}, a model (torchvision:NAME, timm:NAME, "
        "package.module:callable) or a path to a .toml file"
    )


def _space_from_data(name: str, data: Mapping[str, Any], source: str, overrides: Mapping[str, Any] | None) -> Space:
    family = data.get("family")
    fams = families()
    if not isinstance(family, str) or family not in fams:
        raise SpaceError(
            f"space {name!r} ({source}): family {family!r} is unknown; valid families: {', '.join(sorted(fams))}"
        )
    model = data.get("model", {})
    recipe = data.get("recipe", {})
    if not isinstance(model, Mapping) or not isinstance(recipe, Mapping):
        raise SpaceError(f"space {name!r} ({source}): [model] and [recipe] must be TOML tables")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise SpaceError(f"space {name!r} ({source}): overrides must be a table of [model] settings, got {overrides!r}")
    config = _merge(model, overrides or {})
    try:
        return fams[family](name, config, description=str(data.get("description", "")), recipe=recipe, source=source)
    except SpaceError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise SpaceError(f"space {name!r} ({source}): invalid [model] settings: {exc}") from None


def _freeze(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in obj.items()))
    if isinstance(obj, list | tuple):
        return tuple(_freeze(v) for v in obj)
    return obj


_CACHE: dict[tuple[str, Any], Space] = {}


def get_space(name: str, overrides: Mapping[str, Any] | None = None) -> Space:
    """A space by name (see `space_names()`) or by a path to a TOML file; `overrides` change [model]."""
    cache_key = (name, _freeze(overrides or {}))
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    from prunenas.spaces.traced import is_factory_name, space_from_name

    if is_factory_name(name) and name not in _toml_index():
        if overrides:
            raise SpaceError(f"space {name!r}: a model factory name takes no overrides; write a TOML file instead")
        space = space_from_name(name)
        _CACHE[cache_key] = space
        return space
    if name.endswith(".toml") or os.sep in name:
        path = Path(name)
        data = _resolve_toml(path)
        own = str(data.get("name", path.stem))
        shipped = _toml_index().get(own)
        if "name" in data and shipped is not None and shipped.resolve() != path.resolve():
            raise SpaceError(
                f"space file {str(path)!r} names itself {own!r}, a space prunenas already has ({shipped}); "
                "give it another `name` (runs and genotypes refer to spaces by name)"
            )
        space = _space_from_data(own, data, str(path), overrides)
    elif name in _toml_index():
        path = _toml_index()[name]
        space = _space_from_data(name, _resolve_toml(path), str(path), overrides)
    else:
        cls = families().get(name)
        if cls is None or cls.default_config is None:
            raise SpaceError(
                f"unknown space {name!r}; valid spaces: {', '.join(space_names())}, a model (torchvision:NAME, "
                "timm:NAME, package.module:callable) or a path to a .toml file"
            )
        space = cls(
            name,
            _merge(cls.default_config, overrides or {}),
            description=(cls.__doc__ or "").strip().split("\n")[0],
            source=f"entry point {name}",
        )
    _CACHE[cache_key] = space
    if not overrides and space.name != name and space.name not in _toml_index():
        # A space loaded from a path is also found by its name for the rest of the process (runs
        # and genotypes refer to spaces by name), unless that name is a shipped space.
        _CACHE.setdefault((space.name, ()), space)
    return space


def all_spaces() -> list[Space]:
    return [get_space(n) for n in space_names()]


def clear_cache() -> None:
    """Forget loaded spaces and families (tests that add plugins or TOML folders call this)."""
    _CACHE.clear()
    families.cache_clear()


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
