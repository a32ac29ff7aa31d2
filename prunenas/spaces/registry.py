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
Python file) is recorded in the genotypes written of it (`space_origin`, see `prunenas.spaces.files`):
`space_for_genotype` finds it again from any folder, and says so when the file changed or is gone.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from prunenas.errors import GenotypeError, SpaceError
from prunenas.genotype import Genotype
from prunenas.plugins import SPACES, load_group
from prunenas.spaces.base import Space
from prunenas.spaces.files import (
    ORIGIN_KEY,
    _toml_index,
    factory_file,
    file_sha256,
    forget_origins,
    is_shipped,
    map_factory_file,
    record_origin,
    shipped_genotypes,
)

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
        record_origin(space.name, _origin_of(space))
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
    record_origin(space.name, _origin_of(space, toml_path, data))
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


# -- where a space came from, and finding it again from a genotype -------------------------------------
_LIBRARY_FACTORIES = ("torchvision:", "timm:")


def _settings_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a TOML space's architecture depends on: its family and [model] settings (`extends` applied),
    as JSON values."""
    plain = {"family": data.get("family"), "model": data.get("model", {})}
    parsed: dict[str, Any] = json.loads(json.dumps(plain, default=str, sort_keys=True))
    return parsed


def _user_factory(space: Space) -> str | None:
    """The user's factory spec a space builds (itself, or as the base of a density space); None for a
    library model (torchvision:, timm:), found by its name anywhere."""
    for s in dict.fromkeys((space, space.base_space())):
        spec = getattr(s, "factory", None) or s.config.get("factory")
        if isinstance(spec, str) and ":" in spec:
            return None if spec.startswith(_LIBRARY_FACTORIES) else spec
    return None


def _import_root(path: Path, module: str) -> Path:
    """The folder on sys.path from which `module` (dotted) imports as the file `path`."""
    top = path.parent if path.name == "__init__.py" else path
    depth = len(module.split("."))
    return top.parents[depth - 1] if depth <= len(top.parents) else top.parent


def _find_module_file(module: str, folders: list[Path]) -> Path | None:
    """The source file of a dotted module in one of `folders` (first match), without importing anything."""
    rel = Path(*module.split("."))
    for folder in folders:
        for candidate in (folder / rel.with_suffix(".py"), folder / rel / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


def _factory_source(spec: str) -> Path | None:
    """The Python file a user's factory spec loads from the working folder (no user code runs)."""
    where = spec.rpartition(":")[0]
    if where.endswith(".py"):
        path = factory_file(where)
        return path.resolve() if path.is_file() else None
    module = sys.modules.get(where)
    file = getattr(module, "__file__", None)
    if isinstance(file, str) and Path(file).is_file():
        return Path(file).resolve()
    return _find_module_file(where, [Path.cwd(), *(Path(p) for p in sys.path if p)])


def _origin_of(
    space: Space, toml_path: Path | None = None, data: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """What a genotype of `space` records to find it again from another folder (None: its name does)."""
    origin: dict[str, Any] = {}
    if toml_path is not None and data is not None and not is_shipped(toml_path):
        sha = file_sha256(toml_path)
        if sha is not None:
            origin["toml"] = {"path": str(toml_path.resolve()), "sha256": sha, "settings": _settings_of(data)}
    spec = _user_factory(space)
    source = _factory_source(spec) if spec is not None else None
    sha = file_sha256(source) if source is not None else None
    if spec is not None and source is not None and sha is not None:
        origin["factory"] = {"spec": spec, "path": str(source), "sha256": sha}
    return origin or None


def _recorded(raw: object, name: str, flag: str) -> dict[str, Mapping[str, Any]]:
    """A genotype's `space_origin`, checked (prunenas writes it; a hand-edited one is refused in one line)."""
    fix = f"remove the key and pass {flag} with the space's file"
    if not isinstance(raw, Mapping) or not raw or set(raw) - {"toml", "factory"}:
        raise GenotypeError(
            f"the genotype's {ORIGIN_KEY!r} for space {name!r} is not what prunenas writes "
            f'(an object with "toml" and/or "factory"); {fix}'
        )
    out: dict[str, Mapping[str, Any]] = {}
    for part, needs in (("toml", ("path", "sha256")), ("factory", ("spec", "path", "sha256"))):
        if part not in raw:
            continue
        rec = raw[part]
        ok = isinstance(rec, Mapping) and all(isinstance(rec.get(k), str) and rec.get(k) for k in needs)
        if ok and part == "toml":
            ok = isinstance(rec.get("settings"), Mapping)
        if ok and part == "factory":
            ok = ":" in rec["spec"] and not rec["spec"].startswith(_LIBRARY_FACTORIES)
        if not ok:
            raise GenotypeError(
                f"the genotype's {ORIGIN_KEY}.{part} for space {name!r} is not what prunenas writes "
                f"(it needs {', '.join(needs)}{', settings' if part == 'toml' else ''}); {fix}"
            )
        out[part] = rec
    return out


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _flat(settings: Mapping[str, Any]) -> dict[str, Any]:
    model = settings.get("model")
    if not isinstance(model, Mapping):
        return {"family": settings.get("family"), "[model]": model}
    return {"family": settings.get("family"), **{f"[model] {k}": v for k, v in model.items()}}


def _differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """The settings that differ, in words (at most three)."""
    old, new = _flat(before), _flat(now)
    changed = [
        f"{k} {old[k]!r} -> {new[k]!r}" if k in old and k in new else f"{k} {'removed' if k in old else 'added'}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) or (k in old) != (k in new)
    ]
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return ", ".join(changed[:3]) + more


def _check_toml(name: str, path: Path, rec: Mapping[str, Any], flag: str) -> None:
    """Refuse a TOML file whose family or [model] settings are not those the genotype was made with; a
    change that leaves them alone (comments, description, recipe) is a warning."""
    recorded = Path(str(rec["path"]))
    sha_now = file_sha256(path)
    if sha_now == rec["sha256"]:
        return
    settings = _settings_of(_resolve_toml(path))
    same_file = path.resolve() == recorded
    hashes = f"sha256 {_short(str(rec['sha256']))} recorded, {_short(sha_now)} now"
    if settings == dict(rec["settings"]):
        if same_file:
            what = f"space file {str(path)!r} changed since the genotype was written"
        else:
            what = f"space {name!r} is found at {str(path)!r}, not at {str(recorded)!r} where the genotype was made"
        note = "its family and [model] settings are the same, so it is used"
        print(f"prunenas: warning: {what} ({hashes}); {note}", file=sys.stderr)
        return
    diff = _differences(rec["settings"], settings)
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


def _check_factory(name: str, rec: Mapping[str, Any], flag: str) -> None:
    """Find the factory's file where the genotype recorded it (or, with the same content, where the spec
    points from here); then the spec loads it from any folder. Refuse a changed or missing file."""
    spec, sha = str(rec["spec"]), str(rec["sha256"])
    where, _, attr = spec.rpartition(":")
    recorded = Path(str(rec["path"]))
    sha_recorded = file_sha256(recorded) if recorded.is_file() else None
    chosen: Path | None = recorded if sha_recorded == sha else None
    if chosen is None:
        here = _factory_source(spec)
        if here is not None and file_sha256(here) == sha:
            chosen = here
    if chosen is None:
        if spec in name:  # a factory name (maybe density: and @SIZE around it)
            prefix, _, suffix = name.partition(spec)
            moved = f"{prefix}path/to/{recorded.name}:{attr}{suffix}"
            as_now = (
                f"{prefix}{recorded}:{attr}{suffix}"
                if where.endswith(".py")
                else f"{name} from {_import_root(recorded, where)}"
            )
        else:  # a TOML space whose [model] factory is this file
            moved = as_now = f"the space's .toml file from the folder where {where} is the factory you mean"
        if sha_recorded is not None:
            raise SpaceError(
                f"the factory file {str(recorded)!r} of space {name!r} changed since the genotype was written "
                f"(sha256 {_short(sha)} recorded, {_short(sha_recorded)} now): restore it, or pass {flag} {as_now} "
                "to use it as it is now"
            )
        raise SpaceError(
            f"the factory file {str(recorded)!r} of space {name!r} no longer exists (the genotype recorded it there): "
            f"pass {flag} {moved} naming the file where it is now"
        )
    if where.endswith(".py"):
        map_factory_file(where, chosen)
    else:
        root = str(_import_root(chosen, where))
        if root not in sys.path:
            sys.path.insert(0, root)


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
    origin = _recorded(raw, name, flag)
    if "factory" in origin:
        _check_factory(name, origin["factory"], flag)
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
    from prunenas.spaces.traced import is_factory_name

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
