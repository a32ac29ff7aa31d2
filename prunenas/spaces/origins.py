"""Where a space came from: what a genotype records of the user's files its space was built from
(`space_origin`, see `prunenas.space_files`), and the checks that find those files again from any folder
(`prunenas.spaces.registry.space_for_genotype` uses them)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunenas.errors import GenotypeError, SpaceError
from prunenas.space_files import ORIGIN_KEY, factory_file, file_sha256, is_shipped, map_factory_file

if TYPE_CHECKING:
    from prunenas.spaces.base import Space

_LIBRARY_FACTORIES = ("torchvision:", "timm:")


def settings_of(data: Mapping[str, Any]) -> dict[str, Any]:
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


def origin_of(
    space: Space, toml_path: Path | None = None, data: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """What a genotype of `space` records to find it again from another folder (None: its name does)."""
    origin: dict[str, Any] = {}
    if toml_path is not None and data is not None and not is_shipped(toml_path):
        sha = file_sha256(toml_path)
        if sha is not None:
            origin["toml"] = {"path": str(toml_path.resolve()), "sha256": sha, "settings": settings_of(data)}
    spec = _user_factory(space)
    source = _factory_source(spec) if spec is not None else None
    sha = file_sha256(source) if source is not None else None
    if spec is not None and source is not None and sha is not None:
        origin["factory"] = {"spec": spec, "path": str(source), "sha256": sha}
    return origin or None


def recorded_origin(raw: object, name: str, flag: str) -> dict[str, Mapping[str, Any]]:
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


def short_sha(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _flat(settings: Mapping[str, Any]) -> dict[str, Any]:
    model = settings.get("model")
    if not isinstance(model, Mapping):
        return {"family": settings.get("family"), "[model]": model}
    return {"family": settings.get("family"), **{f"[model] {k}": v for k, v in model.items()}}


def differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """The settings that differ, in words (at most three)."""
    old, new = _flat(before), _flat(now)
    changed = [
        f"{k} {old[k]!r} -> {new[k]!r}" if k in old and k in new else f"{k} {'removed' if k in old else 'added'}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) or (k in old) != (k in new)
    ]
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return ", ".join(changed[:3]) + more


def check_factory(name: str, rec: Mapping[str, Any], flag: str) -> None:
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
                f"(sha256 {short_sha(sha)} recorded, {short_sha(sha_recorded)} now): restore it, or pass {flag} "
                f"{as_now} to use it as it is now"
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
