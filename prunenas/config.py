"""One configuration tree: frozen dataclasses that validate themselves and generate the CLI.

Every user-settable value of prunenas is a field of one of these dataclasses, declared once with
`setting(...)`: its default, help text, valid range or choices, and whether it changes a run's result
(`identity`). From that one declaration come

  - validation on construction (type, range, finiteness, choices; booleans parse strictly), with a
    one-line message that names the command-line flag,
  - the argparse flags (`add_arguments`): name, type, default and help text from the field,
  - JSON round trips (`to_dict` / `from_dict`: worker processes receive their configuration this way),
  - the run identity: `identity()` is the dict of result-changing fields; `fingerprint()` hashes dicts
    like it into the short hex names of run folders and caches.

The trees: `DataConfig` (which images), `prunenas.recipes.Recipe` (how to train), `RunSettings` (where
and how to run: device, seed, speed switches) and `prunenas.search.config.SearchSettings` (the search).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import hashlib
import json
import math
import numbers
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from prunenas.errors import PrunenasError


class ConfigError(PrunenasError):
    """A setting has a wrong type or is out of range."""


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


# -- strict parsing of values (CLI text, TOML, JSON) --------------------------------------------------------------
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


def coerce(cls: type, f: dataclasses.Field[Any], value: Any, where: str | None = None) -> Any:
    """`value` converted to field `f`'s type and checked against its range and choices."""
    where = where or prefixed(_PREFIX.get(), flag_of(f))
    typ, optional = _base_type(_hints(cls)[f.name])
    meta = f.metadata
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} needs a value")
    if meta.get("plugins") is not None:
        return _plugin_options(meta["plugins"](), value, where)
    if isinstance(typ, type) and issubclass(typ, Config):
        with _under(meta.get("prefix") or ""):
            return coerce_config(typ, value, where)
    origin = typing.get_origin(typ)
    if typ is bool:
        value = parse_bool(value, where)
    elif typ is int:
        value = parse_int(value, where, f"an integer{_range_text(meta)}")
    elif typ is float:
        value = parse_float(value, where, f"a finite number{_range_text(meta)}")
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
    elif origin is tuple:
        item_type = typing.get_args(typ)[0]
        if isinstance(value, str):
            value = [value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            # command-line text: repeated flags and comma-separated lists, each item parsed as a value
            pieces = [p.strip() for v in value for p in v.strip("[]").split(",") if p.strip()]
            if not pieces:  # `--objectives ""`: text that lists nothing is a slip, never "the default"
                metavar = meta.get("metavar") or f.name.upper()
                raise ConfigError(
                    f"{where} {','.join(value)!r} lists nothing; give {metavar}, or leave {where} out for its default"
                )
            value = pieces if item_type is str else [parse_value(p) for p in pieces]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        items = []
        for v in value:
            if item_type is float:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                    raise ConfigError(f"{where} must be a list of finite numbers, got {value!r}")
                v = float(v)
            elif item_type is str and not isinstance(v, str):
                raise ConfigError(f"{where} must be a list of names, got {value!r}")
            elif item_type is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise ConfigError(f"{where} must be a list of integers, got {value!r}")
            _check_range(meta, v, where)
            items.append(v)
        value = tuple(items)
    elif origin is dict or typ is dict or origin in (Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        value = dict(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_range(meta, value, where)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _plugin_options(classes: Mapping[str, type[Config]], value: Any, where: str) -> dict[str, Config]:
    """A table of plugin options (plugin name -> its options, a Config or a table of its settings), checked."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table of plugin name -> options, got {_shown(value)}")
    out: dict[str, Config] = {}
    for name, options in value.items():
        cls = classes.get(name)
        if cls is None:
            valid = ", ".join(sorted(classes)) or "none"
            raise ConfigError(f"{where}: {name!r} takes no options; plugins with options: {valid}")
        with _under(name):  # its flags are --NAME-OPTION: so are its messages
            out[name] = coerce_config(cls, options, f"{where} {name}")
    return out


#: The flag prefix of the config being built (its messages name its flags as the command line has them).
_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("prunenas_config_prefix", default="")


@contextlib.contextmanager
def _under(name: str) -> Iterator[None]:
    token = _PREFIX.set(_join(_PREFIX.get(), name))
    try:
        yield
    finally:
        _PREFIX.reset(token)


def coerce_config(cls: type[Config], value: Any, where: str) -> Config:
    """`value` as a `cls`: an instance, or a table of its settings (checked, naming `where`)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a {cls.__name__} or a table of its settings, got {_shown(value)}")
    return cls.from_dict(value, where=where)


def nested_type(cls: type, f: dataclasses.Field[Any]) -> type[Config] | None:
    """The Config class a field nests, or None for a plain value."""
    typ, _ = _base_type(_hints(cls)[f.name])
    return typ if isinstance(typ, type) and issubclass(typ, Config) else None


def prefixed(prefix: str, flag: str) -> str:
    """A flag under a prefix: ("latency", "--batch") -> "--latency-batch"; no prefix: the flag itself."""
    return f"--{prefix}-{flag[2:]}" if prefix else flag


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


# -- the base class ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """Base of the config dataclasses: validation, JSON, identity and CLI generation from the fields."""

    #: Title of the argparse group of this config's flags.
    cli_group: ClassVar[str] = "settings"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # A setting that does not exist is one line naming it and the valid ones, not the TypeError of the
        # generated __init__ (pn.DataConfig(datset=...), pn.search_architectures(..., trails=4)).
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        if len(args) > len(names):
            raise ConfigError(
                f"{cls.__name__}() got {len(args)} positional values for {len(names)} fields; pass settings by "
                f"name: {', '.join(cls.setting_names())}"
            )
        cls.check_names(kwargs, f"{cls.__name__}()", allowed=names)
        return super().__new__(cls)

    #: Settings that apply only under a condition on the others: field name -> a function of the config that
    #: returns None where the field applies, else why it does not ("to --dataset digits (...)"). A field set
    #: to anything but its default where it does not apply is refused (`check_applicable`), never dropped.
    conditions: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, coerce(type(self), f, getattr(self, f.name)))
        self.check()
        self.check_applicable()

    def check(self) -> None:
        """Checks across fields (subclasses); raise ConfigError naming the flags."""

    def inapplicable(self) -> dict[str, str]:
        """The settings given (not at their default) that do not apply with the others: name -> why not."""
        out = {}
        for f in dataclasses.fields(self):
            rule = self.conditions.get(f.name)
            if rule is not None and getattr(self, f.name) != f.default:
                why = rule(self)
                if why:
                    out[f.name] = why
        return out

    def check_applicable(self) -> None:
        """Refuse settings that cannot apply (`conditions`), all of them in one line naming their flags."""
        found = self.inapplicable()
        if not found:
            return
        fields = {f.name: f for f in dataclasses.fields(self)}
        by_reason: dict[str, list[str]] = {}
        for name, why in found.items():
            by_reason.setdefault(why, []).append(_as_given(fields[name], getattr(self, name)))
        raise ConfigError(
            "; ".join(
                f"{' and '.join(given)} {'does' if len(given) == 1 else 'do'} not apply {why}; "
                f"leave {'it' if len(given) == 1 else 'them'} out"
                for why, given in by_reason.items()
            )
        )

    # -- data ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able values; nested configs and plugin options as tables."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.metadata.get("omit_default") and v == f.default:
                continue
            out[f.name] = _plain(v)
        return out

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """The settings a user sets by name, sorted: the fields that have a flag. The one list every message
        about unknown settings offers (--set, a TOML table, keyword arguments, JSON), so that a key offered in
        one place is accepted in all of them."""
        return tuple(sorted(f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)))

    @classmethod
    def check_names(cls, values: Mapping[str, Any], where: str, *, allowed: Sequence[str] | None = None) -> None:
        """Refuse keys of `values` that are not settings (`allowed`, default `setting_names()`): one line that
        names `where` (the flag, TOML table or function) and lists the valid settings."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: settings must be a table of NAME = VALUE, got {values!r}")
        known = set(cls.setting_names() if allowed is None else allowed)
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            offered = ", ".join(n for n in cls.setting_names() if n in known)  # only names accepted here
            raise ConfigError(f"{where}: unknown setting(s) {unknown}; valid: {offered}")

    @classmethod
    def check_values(
        cls,
        values: Mapping[str, Any],
        where: str,
        *,
        sep: str = " ",
        allowed: Sequence[str] | None = None,
        with_flag: bool = False,
    ) -> dict[str, Any]:
        """A user's settings by name (`--set KEY=VALUE`, a TOML table, keyword arguments) checked where they
        enter: unknown keys refused (`check_names`), each value typed and range-checked with a message naming
        `where` and the key (`--set nesterov must be ...`; `sep=": "`: `train_model(): epochs must be ...`;
        `with_flag`: the key's own flag too, `--set kd_weight (--kd-weight) must be ...`). Returns the typed
        values."""
        cls.check_names(values, where, allowed=allowed)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out = {}
        for k, v in values.items():
            label = f"{where}{sep}{k}" + (f" ({flag_of(fields[k])})" if with_flag else "")
            out[k] = coerce(cls, fields[k], v, label)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "", user: bool = False) -> Any:
        """Build from a mapping: a user's (TOML, --set; `user`: only `setting_names()`) or a saved one (JSON
        round trips, which also carry the fields without a flag). Unknown keys are an error listing the valid
        settings."""
        allowed = None if user else [f.name for f in dataclasses.fields(cls)]
        cls.check_names(values, where or cls.__name__, allowed=allowed)
        return cls(**dict(values))

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` (None values ignored) applied and validated."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def setting_paths(cls, prefix: str = "") -> dict[str, tuple[str, ...]]:
        """Every setting of the tree by the name of its flag without dashes (`latency_batch`, `lr`): the path of
        field names that leads to it (("metrics", "latency", "batch"), ("recipe", "lr")); a nested config
        itself by its field name."""
        out: dict[str, tuple[str, ...]] = {}
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True):
                continue
            if f.metadata.get("plugins") is not None:
                for name, options in f.metadata["plugins"]().items():
                    for dest, path in options.setting_paths(_join(prefix, name)).items():
                        out[dest] = (f.name, name, *path)
                continue
            sub = nested_type(cls, f)
            if sub is not None:
                out[f.name] = (f.name,)
                for dest, path in sub.setting_paths(_join(prefix, f.metadata.get("prefix") or "")).items():
                    out.setdefault(dest, (f.name, *path))
                continue
            out[prefixed(prefix, "--" + dest_of(f))[2:].replace("-", "_")] = (f.name,)
        return out

    def with_settings(self, where: str = "", **values: Any) -> Any:
        """A copy with settings anywhere in the tree changed by their flag's name (`trials=4, lr=0.05,
        latency_batch=8`), as the command line sets them; unknown names are one ConfigError naming `where`."""
        paths = self.setting_paths()
        unknown = sorted(k for k in values if k not in paths)
        if unknown:
            raise ConfigError(
                f"{where or type(self).__name__}: unknown setting(s) {unknown}; valid: {', '.join(sorted(paths))}"
            )
        tree = self.to_dict()
        for name, value in values.items():
            node = tree
            *parents, leaf = paths[name]
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = _plain(value)
        return type(self).from_dict(tree, where=where or type(self).__name__)

    def identity(self) -> dict[str, Any]:
        """What changes the result (the other settings say how or where it runs): the identity fields, nested
        configs and plugin options by their own identity, then `resolve_identity`. The one identity of
        prunenas: it names run folders (`prunenas.train.run_identity`) and studies, and decides whether a
        study may resume (`prunenas.search.engine.check_resumable`)."""
        d = self.to_dict()
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.metadata.get("identity", True) or f.name not in d:
                continue
            v = getattr(self, f.name)
            if isinstance(v, Config):
                out[f.name] = v.identity()
            elif f.metadata.get("plugins") is not None:
                out[f.name] = {k: c.identity() for k, c in sorted(v.items())}
            else:
                out[f.name] = d[f.name]
        return self.resolve_identity(out)

    def resolve_identity(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The identity with values in their resolved form, where two settings can mean the same (a preset
        and its value); subclasses override it. Default: as it is."""
        return identity

    @classmethod
    def partial(cls) -> type[Config]:
        """This config with every flag optional: None means not given. Holds a user's changes to a config
        made elsewhere (a search's changes to each candidate's recipe); `to_dict` lists only what was given,
        and the flags are this config's, their help showing its defaults."""
        if cls not in _PARTIALS:
            hints = _hints(cls)
            specs = []
            for f in dataclasses.fields(cls):
                if not f.metadata.get("cli", True):
                    continue
                typ, _ = _base_type(hints[f.name])
                meta = {**f.metadata, "omit_default": True, "shown_default": f.default}
                specs.append((f.name, typing.Optional[typ], field(default=None, metadata=meta)))  # noqa: UP045
            name = f"Partial{cls.__name__}"
            namespace = {"cli_group": cls.cli_group, "__doc__": f"Changes to a {cls.__name__}: {cls.__doc__}"}
            part = dataclasses.make_dataclass(name, specs, bases=(Config,), frozen=True, namespace=namespace)
            part.__module__ = cls.__module__
            _PARTIALS[cls] = part
        return _PARTIALS[cls]

    # -- command line -------------------------------------------------------------------------------------------
    @classmethod
    def add_arguments(
        cls,
        parser: argparse.ArgumentParser,
        *,
        only: Sequence[str] | None = None,
        skip: Sequence[str] = (),
        defaults: Mapping[str, Any] | None = None,
        title: str | None = None,
        prefix: str = "",
    ) -> argparse._ArgumentGroup:
        """Add one flag per CLI field to a group of `parser`. Every flag defaults to None ("not given"),
        so a config built with `from_args` takes its defaults from the dataclass (or from another source,
        such as a space's recipe, that the caller lays the given values over); the help text states the
        effective default from `defaults` or the field. Lists take commas and repeated flags. Nested configs
        and plugin options add their own groups, recursively (`skip` takes "field.sub" for their fields);
        `prefix` puts every flag under it (`--PREFIX-NAME`)."""
        group = parser.add_argument_group(title or cls.cli_group)
        hints = _hints(cls)
        defaults = defaults or {}
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True) or f.name in skip or (only is not None and f.name not in only):
                continue
            inner = [s.partition(".")[2] for s in skip if s.startswith(f.name + ".")]
            if f.metadata.get("plugins") is not None:
                for name, options in sorted(f.metadata["plugins"]().items()):
                    options.add_arguments(parser, prefix=_join(prefix, name), title=f"{options.cli_group}")
                continue
            sub = nested_type(cls, f)
            if sub is not None:
                sub.add_arguments(parser, skip=inner, prefix=_join(prefix, f.metadata.get("prefix") or ""))
                continue
            typ, _ = _base_type(hints[f.name])
            shown = f.metadata.get("shown_default", f.default)
            default = defaults.get(f.name, shown if shown is not _NO_DEFAULT else None)
            help_text = f.metadata.get("help", "")
            if isinstance(default, tuple):
                default = ",".join(str(v) for v in default) or None
            if isinstance(default, bool):
                default = "on" if default else "off"
            if default is not None:
                help_text = f"{help_text} (default {default})"
            names = [prefixed(prefix, flag_of(f)), *(prefixed(prefix, a) for a in f.metadata.get("aliases", ()))]
            dest = prefixed(prefix, "--" + dest_of(f))[2:].replace("-", "_")
            kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text.replace("%", "%%")}
            if typ is bool:
                group.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
                continue
            if typing.get_origin(typ) is tuple:
                kwargs["action"] = "append"
            if f.metadata.get("choices") is not None:
                kwargs["choices"] = list(f.metadata["choices"])
            else:
                kwargs["metavar"] = f.metadata.get("metavar") or f.name.upper()
            group.add_argument(*names, **kwargs)
        return group

    @classmethod
    def values_from_args(
        cls, args: argparse.Namespace, *, skip: Sequence[str] = (), prefix: str = ""
    ) -> dict[str, Any]:
        """The values of this config's flags that were given (not None) in `args`, by field name; those of a
        nested config or of plugin options as a table (only when some were given)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in skip or not f.metadata.get("cli", True):
                continue
            if f.metadata.get("plugins") is not None:
                given = {
                    name: values
                    for name, options in f.metadata["plugins"]().items()
                    if (values := options.values_from_args(args, prefix=_join(prefix, name)))
                }
                if given:
                    out[f.name] = given
                continue
            sub = nested_type(cls, f)
            if sub is not None:
                values = sub.values_from_args(args, prefix=_join(prefix, f.metadata.get("prefix") or ""))
                if values:
                    out[f.name] = values
                continue
            value = getattr(args, prefixed(prefix, "--" + dest_of(f))[2:].replace("-", "_"), None)
            if value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace, **changes: Any) -> Any:
        """The config from the flags given in `args` (the rest at their defaults), with `changes` on top."""
        return cls(**{**cls.values_from_args(args), **{k: v for k, v in changes.items() if v is not None}})


_PARTIALS: dict[type, type[Config]] = {}


def _join(prefix: str, name: str) -> str:
    return "-".join(p for p in (prefix, name.replace("_", "-")) if p)


def _plain(value: Any) -> Any:
    """A setting's value as JSON holds it: tuples as lists, configs and tables of configs as tables."""
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def fingerprint(*parts: Any, length: int = 8) -> str:
    """A short stable hex hash of JSON-able parts (keys sorted): names run folders and caches."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# -- data and run settings --------------------------------------------------------------------------------------
DATASETS = ("cifar10", "cifar100", "digits", "imagefolder")
#: Input normalisation: "train" = the training split's own per-channel statistics; the fixed constants
#: of the Rethinking repository ("cifar") and of open_lth ("imagenet"); see `prunenas.data.NORMALIZATIONS`.
NORMALIZE = ("train", "cifar", "imagenet")
DATA_CACHES = ("auto", "memory", "disk")


#: Datasets shipped inside prunenas: no folder, download, disk cache or image files of their own.
EMBEDDED_DATASETS = ("digits",)
_EMBEDDED = (
    "to --dataset digits, whose images are embedded in prunenas (nothing is read from a folder, decoded from "
    "files or cached on disk)"
)


@dataclass(frozen=True)
class DataConfig(Config):
    """Which images a run trains and validates on."""

    cli_group: ClassVar[str] = "data"

    dataset: str = setting(
        "cifar10", "cifar10, cifar100, digits (embedded, no download) or imagefolder (your own)", choices=DATASETS
    )
    data_dir: str | None = setting(
        None,
        "dataset folder or .tar.gz (CIFAR python batches or an ImageFolder tree with train/ and test/); "
        "default: $PRUNENAS_DATA, else CIFAR is downloaded into the cache",
        identity=False,
        metavar="DIR",
    )
    train_subset: int | None = setting(None, "train on N images only (quick runs)", low=1, metavar="N")
    val_size: int | None = setting(
        None, "held-out validation images (default: a tenth, CIFAR 5000; 0 = train on every training image, no "
        "validation, as the papers' code did)", low=0, metavar="N",
    )  # fmt: skip
    normalize: str = setting(
        "train", "input normalisation: the training split's statistics, or the fixed constants of the Rethinking "
        "code (cifar) or open_lth (imagenet)", choices=NORMALIZE, omit_default=True,
    )  # fmt: skip
    image_size: int = setting(
        32, "pixels the model sees (ImageFolder data is resized; disk-cached images are cropped to it)", low=1,
        omit_default=True, metavar="PX",
    )  # fmt: skip
    stored_size: int | None = setting(
        None, "disk cache: pixels images are stored at (default --image-size x 8/7, room for crops)", low=1,
        omit_default=True, metavar="PX",
    )  # fmt: skip
    data_cache: str = setting(
        "auto", "where decoded images live: memory (whole on the device), disk (a memory-mapped cache, streamed) "
        "or auto (disk when they would take over a quarter of the free host memory)", choices=DATA_CACHES,
        identity=False,
    )  # fmt: skip
    bad_images: str = setting(
        "stop", "unreadable or truncated images: stop with their names, or skip them (counted and listed)",
        choices=("stop", "skip"), omit_default=True,
    )  # fmt: skip

    conditions: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {
        name: lambda cfg: _EMBEDDED if cfg.dataset in EMBEDDED_DATASETS else None
        for name in ("data_dir", "stored_size", "data_cache", "bad_images")
    }


DEVICES = "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class RunSettings(Config):
    """How and where a run executes (not what it learns): device, seed, speed switches, output.

    Only the seed changes the result (init, masks, split order, augmentation); precision switches
    are recorded with every run but are not part of its identity, so a run resumes on another device.
    """

    cli_group: ClassVar[str] = "run"

    device: str = setting("auto", f"where to train: {DEVICES}", identity=False)
    seed: int = setting(0, "seed of init, masks, split order and augmentation", low=0, high=2**63 - 1)
    channels_last: bool | None = setting(
        None, "channels_last memory format (default: on for CUDA and for bf16 on a CPU)", identity=False
    )
    amp: bool | None = setting(
        None, "bf16 autocast (default: on for CUDA, and on CPUs with AMX-BF16; refused on a CPU without bf16 "
        "instructions; --no-amp: exact fp32)", identity=False,
    )  # fmt: skip
    compile: bool = setting(False, "torch.compile the model (pays off only for long runs)", identity=False)
    eval_every: int | None = setting(
        None, "validate every K epochs and at the end (default: every epoch; a search's proxy runs validate only "
        "at the end, since they are ranked on the final model, unless --pruner needs per-epoch reports)",
        low=1, metavar="K", identity=False,
    )  # fmt: skip
    test_every_epoch: bool = setting(
        False, "also evaluate the test set after every epoch and report the best such epoch, labelled "
        "test-selected (the papers' code reported it; the final-epoch test accuracy stays the honest number)",
        identity=False,
    )  # fmt: skip
    keep_last_batch: bool = setting(
        False, "train on each epoch's last, partial batch too (the papers' code does; prunenas drops it so every "
        "step has the same batch size); set by --protocol rethinking|frankle", cli=False,
    )  # fmt: skip
    quiet: bool = setting(False, "no progress bar", identity=False, aliases=("-q",))
    resume: bool = setting(True, "resume from the run folder's checkpoint", identity=False, cli=False)
    checkpoint: bool = setting(True, "write a checkpoint every epoch", identity=False, cli=False)
    plot: bool = setting(True, "write curve.png", identity=False, cli=False)
    threads: int | None = setting(
        None, "CPU threads for training (default: the cores this process may use, shared among the training "
        "processes running on this machine)", low=1, identity=False, metavar="N",
    )  # fmt: skip

    def check(self) -> None:
        name = self.device
        if name == "auto" or name == "cpu":
            return
        base, _, index = name.partition(":")
        if base != "cuda" or (index and not index.isdigit()):
            raise ConfigError(f"--device {name!r} is not supported; use {DEVICES}")
