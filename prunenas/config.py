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
import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
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
) -> Any:
    """A dataclass field with the metadata the config tree uses.

    `low`/`high` bound numbers (and the items of number tuples), inclusive unless `*_open`; `choices`
    lists valid values; `identity` says whether the value changes the result of a run (and so its
    identity and folder name); `cli=False` keeps it off the command line; `flag` renames its option.
    `omit_default` leaves the field out of `to_dict` (so out of run identities and folder names) while it
    has its default value: a setting added later then keeps the names of runs made before it existed.
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


def parse_bool(text: object, where: str) -> bool:
    """true/false (also yes/no, on/off, 1/0), any case; anything else is an error."""
    if isinstance(text, bool):
        return text
    if isinstance(text, str):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise ConfigError(f"{where} must be true or false, got {text!r}")


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
    where = where or flag_of(f)
    typ, optional = _base_type(_hints(cls)[f.name])
    meta = f.metadata
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} needs a value")
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


def _range_text(meta: Mapping[str, Any]) -> str:
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if meta.get('low_open') else '>='} {low:g}"
    if low is None:
        return f" {'<' if meta.get('high_open') else '<='} {high:g}"
    left = "(" if meta.get("low_open") else "["
    right = ")" if meta.get("high_open") else "]"
    return f" in {left}{low:g}, {high:g}{right}"


def _check_range(meta: Mapping[str, Any], value: float, where: str) -> None:
    low, high = meta.get("low"), meta.get("high")
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    too_high = high is not None and (value >= high if meta.get("high_open") else value > high)
    if too_low or too_high:
        raise ConfigError(f"{where} must be{_range_text(meta)}, got {value!r}")


# -- the base class ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """Base of the config dataclasses: validation, JSON, identity and CLI generation from the fields."""

    #: Title of the argparse group of this config's flags.
    cli_group: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, coerce(type(self), f, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Checks across fields (subclasses); raise ConfigError naming the flags."""

    # -- data ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.metadata.get("omit_default") and v == f.default:
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "") -> Any:
        """Build from a mapping (JSON, TOML); unknown keys are an error that lists the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown setting(s) {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` (None values ignored) applied and validated."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def identity(self) -> dict[str, Any]:
        """The fields that change the result of a run (the others say how or where it runs)."""
        d = self.to_dict()
        return {f.name: d[f.name] for f in dataclasses.fields(self) if f.metadata.get("identity", True) and f.name in d}

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
    ) -> argparse._ArgumentGroup:
        """Add one flag per CLI field to a group of `parser`. Every flag defaults to None ("not given"),
        so a config built with `from_args` takes its defaults from the dataclass (or from another source,
        such as a space's recipe, that the caller lays the given values over); the help text states the
        effective default from `defaults` or the field. Lists take commas and repeated flags."""
        group = parser.add_argument_group(title or cls.cli_group)
        hints = _hints(cls)
        defaults = defaults or {}
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True) or f.name in skip or (only is not None and f.name not in only):
                continue
            typ, _ = _base_type(hints[f.name])
            default = defaults.get(f.name, f.default if f.default is not _NO_DEFAULT else None)
            help_text = f.metadata.get("help", "")
            if isinstance(default, tuple):
                default = ",".join(str(v) for v in default) or None
            if isinstance(default, bool):
                default = "on" if default else "off"
            if default is not None:
                help_text = f"{help_text} (default {default})"
            names = [flag_of(f), *f.metadata.get("aliases", ())]
            kwargs: dict[str, Any] = {"dest": dest_of(f), "default": None, "help": help_text.replace("%", "%%")}
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
    def values_from_args(cls, args: argparse.Namespace, *, skip: Sequence[str] = ()) -> dict[str, Any]:
        """The values of this config's flags that were given (not None) in `args`, by field name."""
        out = {}
        for f in dataclasses.fields(cls):
            if f.name in skip or not f.metadata.get("cli", True):
                continue
            value = getattr(args, dest_of(f), None)
            if value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace, **changes: Any) -> Any:
        """The config from the flags given in `args` (the rest at their defaults), with `changes` on top."""
        return cls(**{**cls.values_from_args(args), **{k: v for k, v in changes.items() if v is not None}})


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
