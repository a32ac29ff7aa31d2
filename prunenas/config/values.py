"""Strict parsing of setting values (command-line text, TOML, JSON, Python arguments) and the one error type
of the configuration tree."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
from typing import Any

from prunenas.errors import PrunenasError


class ConfigError(PrunenasError):
    """A setting has a wrong type or is out of range."""


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
#: What a boolean may be written as, everywhere (the README's list).
BOOL_WORDS = "true/false, yes/no, on/off or 1/0"


def parse_bool(value: object, where: str, *, error: type[PrunenasError] | None = None) -> bool:
    """The one boolean parser of prunenas: flag values, `--set` recipe settings, proposer `--option`s, TOML and
    JSON values, environment variables. A bool; true/false, yes/no, on/off or 1/0 as text in any case; or the
    integer 1 or 0 (TOML `nesterov = 1`, and `--set nesterov=0`, whose value reads as JSON). Anything else
    raises `error` (default ConfigError) naming `where`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise (error or ConfigError)(f"{where} must be true or false ({BOOL_WORDS}), got {value!r}")


def _shown(value: object) -> str:
    """A value as an error message shows it: its repr (shortened) and its type."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def check_arg(
    where: str,
    name: str,
    value: Any,
    valid: str,
    *types: type,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Any:
    """A Python API argument checked where it enters: `value` of parameter `name` of `where` (a function,
    `build()`) must be one of `types` (a bool is never a number unless `bool` is listed; numbers.Integral and
    numbers.Real take numpy's too and come back as int and float) within [`low`, `high`] (`*_open`: excluding
    the bound), or None when `optional`. Else a ConfigError naming the function, the parameter, what was given
    and `valid`."""
    if value is None and optional:
        return None
    ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
    if ok and isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = int(value) if isinstance(value, numbers.Integral) else float(value)
        ok = math.isfinite(value)
        ok = ok and (low is None or (value > low if low_open else value >= low))
        ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        also = " or None" if optional else ""
        raise ConfigError(f"{where}: {name} must be {valid}{also}, got {_shown(value)}")
    return value


def parse_value(text: str) -> Any:
    """A command-line VALUE: JSON when it parses (numbers, lists, true/false, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_int(value: object, where: str, expected: str = "an integer") -> int:
    """An integer from a number or its text (2.0 is 2; 2.5, "abc" and booleans are errors)."""
    if isinstance(value, str):
        value = parse_value(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be {expected}, got {value!r}")
    return value


def parse_float(value: object, where: str, expected: str = "a finite number") -> float:
    """A finite float from a number or its text (also "inf"/"nan", which are then refused as not finite)."""
    if isinstance(value, str):
        text = value
        value = parse_value(text)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(text)  # inf, nan and friends, which JSON does not have
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be {expected}, got {value!r}")
    return float(value)


def fingerprint(*parts: Any, length: int = 8) -> str:
    """A short stable hex hash of JSON-able parts (keys sorted): names run folders and caches."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
