"""The derived-space cache: what deriving a traced space found (its genes, dependency groups, per-layer
costs and init rule), kept on disk so that later commands and search workers read it instead of tracing
the model again (minutes for a large model).

Entries live in the cost cache's folder (`$PRUNENAS_COST_CACHE`, default ~/.cache/prunenas/costs; "off"
turns every cache off) under `traced/`, one JSON file per derived space, named by a hash of all that the
derivation depends on (`derived_key`): the space's settings, its factory's source (the content of the
user's files, or the library's version), the input size, the versions of torch, torchvision, timm,
torch-pruning, fvcore and prunenas, and the content of the prunenas modules that derive it. So an edit of
any of them derives the space again, never reads a stale entry. An entry that cannot be read or does not
parse is ignored and written again; entries are written atomically (a temporary file, then a rename), so a
parallel worker never reads half of one. A folder that cannot be written costs only the derivation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prunenas.config import fingerprint
from prunenas.paths import cost_cache_dir
from prunenas.plugins import dist_versions

#: The format of an entry; a change to it (or to what is stored) is a new format number.
FORMAT = 1
#: The distributions whose versions decide what a derivation finds.
LIBRARIES = ("torch", "torchvision", "timm", "torch-pruning", "fvcore", "prunenas")
_PACKAGE = Path(__file__).resolve().parent.parent
#: The prunenas modules whose code decides a traced space's genes and costs.
_CODE = (
    "spaces/traced.py", "spaces/traced_model.py", "spaces/factories.py", "spaces/base.py", "spaces/settings.py",
    "spaces/cache.py", "surgery.py", "cost.py",
)  # fmt: skip


def _code_digest() -> str:
    digest = hashlib.sha256()
    for rel in _CODE:
        with contextlib.suppress(OSError):
            digest.update((_PACKAGE / rel).read_bytes())
    return digest.hexdigest()


def derived_key(settings: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    """The hash that names a derived space's entry: its `settings` (JSON values), its factory's `source`
    (`prunenas.spaces.factories.factory_source`), the libraries' versions and prunenas's deriving code."""
    return fingerprint(FORMAT, dict(settings), dict(source), dist_versions(*LIBRARIES), _code_digest(), length=24)


def entry_path(slug: str, key: str) -> Path | None:
    """Where the entry of a derived space is kept (None: caching is off)."""
    folder = cost_cache_dir()
    return folder / "traced" / f"{slug[:80]}-{key}.json" if folder is not None else None


def load(path: Path | None) -> dict[str, Any] | None:
    """The entry's data, or None when there is none or it cannot be read or parsed (then it is derived
    again and rewritten)."""
    if path is None:
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or not isinstance(entry.get("data"), dict):
        return None
    data: dict[str, Any] = entry["data"]
    return data


def store(path: Path | None, space: str, data: Mapping[str, Any]) -> None:
    """Write an entry atomically (a temporary file of this process, then a rename); a folder that cannot be
    written is no error (the next command derives the space again)."""
    if path is None:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"format": FORMAT, "space": space, "data": data}), encoding="utf-8")
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        with contextlib.suppress(OSError):
            tmp.unlink()
