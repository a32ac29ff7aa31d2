"""The base class of the configuration tree: validation, nesting, JSON, identity and flags from the fields."""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prunenas.config.fields import (
    _NO_DEFAULT,
    _PREFIX,
    _as_given,
    _base_type,
    _check_range,
    _hints,
    _join,
    _range_text,
    _under,
    dest_of,
    flag_of,
    prefixed,
)
from prunenas.config.values import ConfigError, _shown, parse_bool, parse_float, parse_int, parse_value


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


def _plain(value: Any) -> Any:
    """A setting's value as JSON holds it: tuples as lists, configs and tables of configs as tables."""
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
