"""Model factories: how a traced space gets a fresh model.

A factory spec is one of

    torchvision:NAME           any torchvision classification model (`torchvision.models.list_models()`)
    timm:NAME                  a timm model (`pip install "prunenas[timm]"`)
    package.module:callable    the user's own function or class, importable from the working directory
    path/to/file.py:callable   the same, from a Python file

The callable is called with `num_classes=N` when it accepts it (and with the space's `kwargs`). It
must return an `nn.Module` whose output for a batch of images is a (batch, num_classes) tensor.
Every failure is a SpaceError naming the spec, what is wrong and what is valid.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

from prunenas.errors import SpaceError, first_line

# torchvision models whose constructors need settings to build without pretrained weights.
_TORCHVISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


@cache
def torchvision_models() -> tuple[str, ...]:
    """The names of torchvision's classification models."""
    try:
        import torchvision
        from torchvision import models
    except ImportError as exc:  # a required dependency: only a broken install gets here
        raise SpaceError(f"torchvision cannot be imported ({exc}); reinstall prunenas with a matching torch") from None
    del torchvision
    return tuple(models.list_models(module=models))


def _close(name: str, valid: list[str] | tuple[str, ...]) -> str:
    near = difflib.get_close_matches(name, valid, n=4, cutoff=0.5)
    return f"did you mean {', '.join(near)}? " if near else ""


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise SpaceError(
            'timm is not installed, so timm:NAME spaces are unavailable; install it with pip install "prunenas[timm]"'
        ) from None
    return timm


def _load_user_callable(spec: str) -> Callable[..., Any]:
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise SpaceError(
            f"model factory {spec!r} is not of the form package.module:callable or path/to/file.py:callable"
        )
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise SpaceError(f"model factory {spec!r}: file {where!r} does not exist")
            mod_name = f"prunenas_user_factory_{abs(hash(str(path.resolve())))}"
            module = sys.modules.get(mod_name)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(mod_name, path)
                if loader_spec is None or loader_spec.loader is None:
                    raise SpaceError(f"model factory {spec!r}: {where!r} cannot be imported as Python")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[mod_name] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(mod_name, None)
                    raise
        else:
            if str(Path.cwd()) not in sys.path and "" not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(where)
    except SpaceError:
        raise
    except ModuleNotFoundError as exc:
        raise SpaceError(
            f"model factory {spec!r}: module {exc.name!r} not found; use an importable package.module:callable "
            "(run from the folder that holds it) or path/to/file.py:callable"
        ) from None
    except Exception as exc:
        raise SpaceError(f"model factory {spec!r}: importing {where!r} raised {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(module) if not n.startswith("_")]
            raise SpaceError(f"model factory {spec!r}: {where!r} has no {attr!r}; {_close(part, public)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpaceError(f"model factory {spec!r}: {attr!r} is a {type(obj).__name__}, not a function or class")
    return obj


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_spec(spec: str) -> None:
    """Fail early (one line) when a factory spec names nothing that exists."""
    source, _, name = spec.partition(":")
    if source == "torchvision":
        valid = torchvision_models()
        if name not in valid:
            raise SpaceError(
                f"unknown torchvision model {name!r}; {_close(name, valid)}"
                f"valid: any of the {len(valid)} classification models of torchvision.models.list_models()"
            )
    elif source == "timm":
        timm = _timm()
        if not timm.list_models(name):
            raise SpaceError(f"unknown timm model {name!r}; {_close(name, timm.list_models())}see timm.list_models()")
    else:
        _load_user_callable(spec)


def make_model(spec: str, num_classes: int, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model from the factory `spec` (torch's global RNG decides its weights)."""
    source, _, name = spec.partition(":")
    kw = dict(kwargs or {})
    check_spec(spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if source == "torchvision":
                from torchvision import models

                model = models.get_model(
                    name, weights=None, num_classes=num_classes, **_TORCHVISION_DEFAULTS.get(name, {}), **kw
                )
            elif source == "timm":
                model = _timm().create_model(name, pretrained=False, num_classes=num_classes, **kw)
            else:
                fn = _load_user_callable(spec)
                if _accepts(fn, "num_classes"):
                    kw.setdefault("num_classes", num_classes)
                model = fn(**kw)
    except SpaceError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise SpaceError(
            f"model factory {spec!r} raised {type(exc).__name__}: {first} (check its kwargs: {sorted(kw)})"
        ) from None
    if not isinstance(model, nn.Module):
        raise SpaceError(
            f"model factory {spec!r} returned a {type(model).__name__}, not a torch.nn.Module; return the model itself"
        )
    return model
