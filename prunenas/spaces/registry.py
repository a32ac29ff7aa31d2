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

A space defined by the user's own files (a TOML file outside the shipped folders, a model factory's
Python file) is recorded in the genotypes written of it (`space_origin`, see `prunenas.space_files`):
`space_for_genotype` finds it again from any folder, and says so when the file changed or is gone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from prunenas.errors import SpaceError
from prunenas.genotype import Genotype
from prunenas.plugins import SPACES, load_group
from prunenas.space_files import (
    ORIGIN_KEY,
    _toml_index,
    file_sha256,
    forget_origins,
    record_origin,
)
from prunenas.spaces.base import Space
from prunenas.spaces.factories import factory_task, torchvision_figures
from prunenas.spaces.origins import check_factory, differences, origin_of, recorded_origin, settings_of, short_sha
from prunenas.spaces.traced import DEFAULT_INPUT_SIZE, FactoryName, TracedSpace, is_factory_name
from prunenas.tasks import get_task

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

    if is_factory_name(name) and name not in _toml_index():
        if overrides:
            raise SpaceError(f"space {name!r}: a model factory name takes no overrides; write a TOML file instead")
        space = space_from_name(name)
        _CACHE[cache_key] = space
        record_origin(space.name, origin_of(space))
        return space
    toml_path: Path | None = None
    data: Mapping[str, Any] | None = None
    if name.endswith(".toml") or os.sep in name:
        path = toml_path = Path(name)
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
        path = toml_path = _toml_index()[name]
        data = _resolve_toml(path)
        space = _space_from_data(name, data, str(path), overrides)
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
    record_origin(space.name, origin_of(space, toml_path, data))
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
    forget_origins()


# -- finding a space again from a genotype (what its origin recorded: `prunenas.spaces.origins`) ----------
def _check_toml(name: str, path: Path, rec: Mapping[str, Any], flag: str) -> None:
    """Refuse a TOML file whose family or [model] settings are not those the genotype was made with; a
    change that leaves them alone (comments, description, recipe) is a warning."""
    recorded = Path(str(rec["path"]))
    sha_now = file_sha256(path)
    if sha_now == rec["sha256"]:
        return
    settings = settings_of(_resolve_toml(path))
    same_file = path.resolve() == recorded
    hashes = f"sha256 {short_sha(str(rec['sha256']))} recorded, {short_sha(sha_now)} now"
    if settings == dict(rec["settings"]):
        if same_file:
            what = f"space file {str(path)!r} changed since the genotype was written"
        else:
            what = f"space {name!r} is found at {str(path)!r}, not at {str(recorded)!r} where the genotype was made"
        note = "its family and [model] settings are the same, so it is used"
        print(f"prunenas: warning: {what} ({hashes}); {note}", file=sys.stderr)
        return
    diff = differences(rec["settings"], settings)
    if same_file:
        raise SpaceError(
            f"space file {str(path)!r} changed since the genotype of space {name!r} was written ({diff}; {hashes}): "
            f"restore it, or pass {flag} {path} to use it as it is now"
        )
    other = f"{flag} {recorded} (the genotype's own) or " if recorded.is_file() else ""
    raise SpaceError(
        f"space {name!r} is now {str(path)!r}, which differs from the file the genotype was made with "
        f"({str(recorded)!r}: {diff}; {hashes}); pass {other}{flag} {path} to choose"
    )


def space_for_genotype(genotype: Genotype, *, flag: str = "--space") -> Space:
    """The space a genotype was made in, from any folder: the one loaded under its name in this process,
    else by its name (shipped spaces, $PRUNENAS_SPACES_PATH, library models), else from the files its
    `space_origin` recorded. A recorded file whose settings changed, or that is gone, is refused in one
    line naming `flag` (the way to choose the space explicitly)."""
    name = genotype.space
    if (name, ()) in _CACHE:
        return _CACHE[(name, ())]
    raw = genotype.provenance.get(ORIGIN_KEY)
    if raw is None:
        return _space_by_name(name, flag)  # a genotype written before spaces recorded their files
    origin = recorded_origin(raw, name, flag)
    if "factory" in origin:
        check_factory(name, origin["factory"], flag)
    rec = origin.get("toml")
    if rec is None:
        return get_space(name)  # a factory name: its file is now found where the genotype recorded it
    index = _toml_index()
    if name in index:
        path = index[name]
    else:
        path = Path(str(rec["path"]))
        if not path.is_file():
            raise SpaceError(
                f"space file {str(path)!r} of the genotype's space {name!r} no longer exists (the genotype recorded "
                f"it there): pass {flag} path/to/{path.name} naming the file where it is now"
            )
    _check_toml(name, path, rec, flag)
    space = get_space(name if name in index else str(path))
    if space.name != name:
        raise SpaceError(
            f"space file {str(path)!r} now names its space {space.name!r}, not {name!r} as the genotype says: "
            f"restore its name, or pass {flag} {path} to use it as it is now"
        )
    return space


def _space_by_name(name: str, flag: str) -> Space:
    """A genotype's space by its name alone (a genotype written before spaces recorded their files)."""

    try:
        return get_space(name)
    except SpaceError as exc:
        if is_factory_name(name):
            text = str(exc).removeprefix(f"--space {name}: ")
            raise SpaceError(
                f"the genotype's space {name!r} does not load here ({text}); the genotype does not record where its "
                f"factory was: pass {flag} path/to/file.py:callable (or run from the folder it was made in)"
            ) from None
        if name in _toml_index() or name in families():
            raise
        raise SpaceError(
            f"the genotype's space {name!r} is not a known space here, and the genotype does not record where it "
            f"was defined: pass {flag} path/to/{name}.toml (its file), or put that file in a folder of "
            "$PRUNENAS_SPACES_PATH"
        ) from None


def space_for_image_size(space: Space, size: int) -> Space:
    """`space` at `size`-pixel inputs when it is a traced space named by its factory (the data decides
    the input size), else `space` itself."""

    target = space.base_space()
    if not isinstance(target, TracedSpace) or target.input_shape[1:] == (size, size):
        return space
    if not is_factory_name(space.name):
        return space  # a TOML space states its own input size; the trainer checks it against the data
    return get_space(FactoryName.parse(space.name).at_size(size))


def space_from_name(name: str) -> Space:
    """The space a model factory name stands for (see `FactoryName`); errors name the --space flag."""
    try:
        return _space_from_name(name)
    except SpaceError as exc:
        text = str(exc).removeprefix(f"space {name!r}: ")
        raise SpaceError(f"--space {name}: {text}") from None


def _space_from_name(name: str) -> Space:
    parsed = FactoryName.parse(name)
    size = parsed.size or DEFAULT_INPUT_SIZE
    if parsed.density:  # the density family (found by name, as a TOML file finds it) around the traced space
        base = f"{parsed.factory}@{size}"
        return families()["density"](
            name, {"base": base}, description=f"{base} with one density per conv/linear layer", source="model factory"
        )
    source = parsed.factory.partition(":")[0]
    task = factory_task(parsed.factory)
    published = torchvision_figures(parsed.factory) if task not in (None, "classification") else None
    config: dict[str, Any] = {
        "factory": parsed.factory,
        # a segmentation or detection model: the class count of torchvision's weights (21 VOC, 91 COCO)
        "num_classes": published["classes"] if published else 1000 if source in ("torchvision", "timm") else 10,
    }
    if parsed.size or task != "detection":  # a detector without @SIZE keeps its transform's own size
        config["input_size"] = parsed.size or (
            get_task("segmentation").default_input_size if task == "segmentation" else size
        )
    built = families()["traced"](name, config, description="", source="model factory")
    side = built.input_shape[1]
    built.description = f"{parsed.factory} at {side}x{side}"
    return built
