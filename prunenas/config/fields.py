"""The declaration of a setting (`setting`): its metadata, its flag, its range text, and the flag prefix
under which a nested config is being built."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import field
from typing import TYPE_CHECKING, Any, Union

from prunenas.config.values import ConfigError

if TYPE_CHECKING:
    from prunenas.config.base import Config


_NO_DEFAULT = dataclasses.MISSING


def setting(
    default: Any = _NO_DEFAULT,
    help: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Sequence[Any] | None = None,
    identity: bool = True,
    cli: bool = True,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    metavar: str | None = None,
    default_factory: Any = _NO_DEFAULT,
    omit_default: bool = False,
    prefix: str | None = None,
    plugins: Callable[[], Mapping[str, type[Config]]] | None = None,
) -> Any:
    """A dataclass field with the metadata the config tree uses.

    `low`/`high` bound numbers (and the items of number tuples), inclusive unless `*_open`; `choices`
    lists valid values; `identity` says whether the value changes the result of a run (and so its
    identity and folder name); `cli=False` keeps it off the command line; `flag` renames its option.
    `omit_default` leaves the field out of `to_dict` (so out of run identities and folder names) while it
    has its default value: a setting added later then keeps the names of runs made before it existed.

    A field whose type is a Config nests that config: its flags join the command (under `prefix`, which is
    needed only where its names would clash with the others'), its JSON is a table, its identity part of
    this one's. `plugins` makes a field a table of plugin options: plugin name -> the options (a Config) of
    that plugin, from a function returning each plugin's options class; their flags are prefixed with the
    plugin's name (`--latency-batch`), since a third party's names could clash with anything.
    """
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": tuple(choices) if choices is not None else None,
        "identity": identity,
        "cli": cli,
        "flag": flag,
        "aliases": tuple(aliases),
        "metavar": metavar,
        "omit_default": omit_default,
        "prefix": prefix,
        "plugins": plugins,
    }
    if default_factory is not _NO_DEFAULT:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def dest_of(f: dataclasses.Field[Any]) -> str:
    """The argparse destination of a field's flag (--max-macs -> max_macs, --recipe -> recipe)."""
    return flag_of(f)[2:].replace("-", "_")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return annotation, False


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of a config class (memoised)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


#: The flag prefix of the config being built (its messages name its flags as the command line has them).
_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("prunenas_config_prefix", default="")


@contextlib.contextmanager
def _under(name: str) -> Iterator[None]:
    token = _PREFIX.set(_join(_PREFIX.get(), name))
    try:
        yield
    finally:
        _PREFIX.reset(token)


def prefixed(prefix: str, flag: str) -> str:
    """A flag under a prefix: ("latency", "--batch") -> "--latency-batch"; no prefix: the flag itself."""
    return f"--{prefix}-{flag[2:]}" if prefix else flag


def _join(prefix: str, name: str) -> str:
    return "-".join(p for p in (prefix, name.replace("_", "-")) if p)


def _bound(x: Any) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"  # an int bound exactly (a seed's 2**63 - 1)


def _range_text(meta: Mapping[str, Any]) -> str:
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if meta.get('low_open') else '>='} {_bound(low)}"
    if low is None:
        return f" {'<' if meta.get('high_open') else '<='} {_bound(high)}"
    left = "(" if meta.get("low_open") else "["
    right = ")" if meta.get("high_open") else "]"
    return f" in {left}{_bound(low)}, {_bound(high)}{right}"


def _check_range(meta: Mapping[str, Any], value: float, where: str) -> None:
    low, high = meta.get("low"), meta.get("high")
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    too_high = high is not None and (value >= high if meta.get("high_open") else value > high)
    if too_low or too_high:
        raise ConfigError(f"{where} must be{_range_text(meta)}, got {value!r}")


def _as_given(f: dataclasses.Field[Any], value: Any) -> str:
    """A setting as its flag would give it: `--latency-predictor`, `--no-seeding`, `--data-dir '/x'`."""
    flag = prefixed(_PREFIX.get(), flag_of(f))
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    if isinstance(value, tuple):
        return f"{flag} {','.join(str(v) for v in value)}"
    return f"{flag} {value!r}" if isinstance(value, str) else f"{flag} {value}"
