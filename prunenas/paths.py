"""Every output path prunenas writes goes through here: folders are created, files written atomically,
and an operating-system refusal (read-only folder, a file where a folder should be, a name too long
for the file system, a full disk) becomes one line naming the flag that chose the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from prunenas.errors import PrunenasError

T = TypeVar("T")

_WHY = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "a file of that name is in the way",
}


class OutputError(PrunenasError):
    """An output path cannot be written."""


def why(exc: OSError) -> str:
    return _WHY.get(exc.errno or 0, exc.strerror or type(exc).__name__)


def output_error(path: str | Path, exc: OSError, flag: str, what: str = "write") -> OutputError:
    return OutputError(f"cannot {what} {str(path)!r}: {why(exc)}; pass another {flag}")


def ensure_dir(path: str | Path, flag: str) -> Path:
    """`path` as an existing, writable folder (created with its parents)."""
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise OutputError(f"{str(p)!r} is a file, not a folder; pass another {flag}")
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(p, exc, flag, "create the folder") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {str(p)!r}: permission denied; pass another {flag}")
    return p


def ensure_parent(path: str | Path, flag: str) -> Path:
    """`path` as a file that can be written: its folder exists, and it is not itself a folder."""
    p = Path(path)
    try:
        is_dir = p.is_dir()
    except OSError as exc:
        raise output_error(p, exc, flag) from None
    if is_dir:
        raise OutputError(f"{str(p)!r} is a folder; {flag} takes a file path")
    ensure_dir(p.parent if str(p.parent) else Path("."), flag)
    return p


def write_text(path: str | Path, text: str, flag: str) -> Path:
    """Write `text` atomically (a temporary file beside it, then a rename)."""
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), flag)


def write_with(path: str | Path, writer: Callable[[Path], object], flag: str) -> Path:
    """Call `writer(tmp)` to write a temporary file beside `path`, then rename it into place."""
    p = ensure_parent(path, flag)
    tmp = p.with_name(p.name + ".tmp")
    try:
        writer(tmp)
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise output_error(p, exc, flag) from None
    return p


def guarded(fn: Callable[[], T], path: str | Path, flag: str, what: str = "write") -> T:
    """Run `fn` (which writes `path`), turning an OSError into one line naming `flag`."""
    try:
        return fn()
    except OSError as exc:
        raise output_error(path, exc, flag, what) from None


_SAFE = re.compile(r"[A-Za-z0-9_.+=-]+")


def safe_name(name: str, flag: str, limit: int = 120) -> str:
    """A name usable as one folder: letters, digits and _.+=- only, not "." or "..", at most `limit`."""
    if not name or len(name) > limit or not _SAFE.fullmatch(name) or name in (".", ".."):
        raise PrunenasError(
            f"{flag} {name!r}: use 1-{limit} letters, digits and the characters _.+=- (it names a folder)"
        )
    return name


def cost_cache_dir() -> Path | None:
    """Where counted costs are kept: $PRUNENAS_COST_CACHE, else ~/.cache/prunenas/costs; None when
    PRUNENAS_COST_CACHE is "off"."""
    env = os.environ.get("PRUNENAS_COST_CACHE")
    if env == "off":
        return None
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunenas" / "costs"


#: Where `prunenas fidelity` keeps its studies by default (runs/fidelity/SPACE-DATASET-HASH).
FIDELITY_ROOT = Path("runs") / "fidelity"


def fidelity_results(space: str, slug: str, dataset: str, root: Path = FIDELITY_ROOT) -> list[Path]:
    """The fidelity.json of every `prunenas fidelity` study of `space` (its name, and its `slug` as folder
    names show it) on `dataset` under `root`, newest first (a search's summary points to them)."""
    found = []
    for path in root.glob(f"{slug}-{dataset}-*/fidelity.json"):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("space") == space and (record.get("dataset") or {}).get("name") == dataset:
                found.append(path)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder across processes (released by the OS if the holder dies): two workers
    never train or judge the same run folder at once; the second waits, then reads what the first wrote."""
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
