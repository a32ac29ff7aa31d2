"""[model] settings of the space families, checked where they enter (one rule for every family)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from prunenas.config import BOOL_WORDS, parse_bool
from prunenas.errors import SpaceError


def model_setting(
    space: str,
    config: Mapping[str, Any],
    key: str,
    default: Any,
    *,
    kind: type = int,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Sequence[str] | None = None,
    length: int | None = None,
    what: str = "",
    hint: str = "",
) -> Any:
    """The [model] setting `key` of a family (`default` when the TOML leaves it out), checked where it enters
    for every family alike: its type (`kind`: int, float, bool, str, or list: `length` integers), its range
    [`low`, `high`] (`*_open`: excluding the bound; for a list, of each item) or its `choices` (any case). An int is
    a number, a bool is not; an optional setting (`default` None) left out is None. A bad value raises one
    SpaceError naming the space, the key (with `what` it means), what is valid and what was given, then
    `hint`; nothing is clamped or rounded."""
    value = config.get(key, default)
    if value is None and default is None:
        return None  # an optional setting left out

    def number(v: Any, typ: type) -> Any:
        """`v` as a number of `typ` within the range, or None."""
        if typ is int and isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int if typ is int else int | float) or not math.isfinite(v):
            return None
        if low is not None and (v <= low if low_open else v < low):
            return None
        if high is not None and (v >= high if high_open else v > high):
            return None
        return typ(v)

    span = ""
    if low is not None and high is not None:
        span = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        span = f" {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        span = f" {'<' if high_open else '<='} {high:g}"
    checked: Any = None
    if kind is bool:  # the one boolean parser: true/false, yes/no, on/off or 1/0, as every flag takes them
        try:
            checked = parse_bool(value, key, error=SpaceError)
        except SpaceError:
            checked = None
        expected = f"true or false ({BOOL_WORDS})"
    elif kind in (int, float):
        checked = number(value, kind)
        expected = f"{'an integer' if kind is int else 'a number'}{span}"
    elif kind is list:
        items = [number(v, int) for v in value] if isinstance(value, list | tuple) else [None]
        fits = length is None or len(items) == length
        checked = items if fits and all(v is not None for v in items) else None
        expected = f"a list of {f'{length} ' if length is not None else ''}integers{span}"
    else:
        if isinstance(value, str):
            checked = next((c for c in choices if c.lower() == value.lower()), None) if choices else value
        expected = f"one of {', '.join(choices)}" if choices else "a string"
    if checked is None:
        meaning = f" ({what})" if what else ""
        raise SpaceError(
            f"space {space!r}: [model] {key}{meaning} must be {expected}, got {value!r}" + (f"; {hint}" if hint else "")
        )
    return checked


#: The [model] setting of the channel families that widens their search beyond the reference widths.
WIDTH_MULTIPLIER_HINT = "1 (the default) searches widths up to the reference's, 2 up to twice them"


def width_multiplier(space: str, config: Mapping[str, Any]) -> float:
    """`max_width_multiplier` of a channel family (a number >= 1; the highest value of a width gene is
    int(reference width x it)), checked the same way for every family."""
    value: float = model_setting(
        space, config, "max_width_multiplier", 1.0, kind=float, low=1.0,
        what="the widest a gene may be, as a multiple of its reference width", hint=WIDTH_MULTIPLIER_HINT,
    )  # fmt: skip
    return value
