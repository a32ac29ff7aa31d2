"""Model factories: how a traced space gets a fresh model.

A factory spec is one of

    torchvision:NAME           any torchvision classification model (`torchvision.models.list_models()`)
    timm:NAME                  a timm model (`pip install "prunenas[timm]"`)
    package.module:callable    the user's own function or class, importable from the working directory
    path/to/file.py:callable   the same, from a Python file

The callable is called with `num_classes=N` when it accepts it (and with the space's `kwargs`). It
must return an `nn.Module` whose output for a batch of images is a (batch, num_classes) tensor.
Every failure is a SpaceError naming the spec, what is wrong and what is valid.

The user's code (importing the module, calling the factory, the traced space's forward passes) runs
behind one guard, `user_code`: `sys.argv` is a clean `[file or module]` while it runs (a module that
parses the command line at import sees none of prunenas's flags), `sys.exit()` and exceptions become
one SpaceError, and what it prints goes to stderr (stdout stays the command's own, e.g. its JSON).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import io
import site
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from prunenas.errors import SpaceError, first_line
from prunenas.plugins import dist_versions
from prunenas.space_files import factory_file

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


@cache
def torchvision_tasks() -> dict[str, str]:
    """torchvision's model names -> the task each solves (classification, segmentation, detection); video,
    optical-flow and quantized models are left out."""
    from torchvision import models

    found = dict.fromkeys(torchvision_models(), "classification")
    found.update(dict.fromkeys(models.list_models(module=models.segmentation), "segmentation"))
    found.update(dict.fromkeys(models.list_models(module=models.detection), "detection"))
    return found


def torchvision_figures(spec: str) -> dict[str, Any] | None:
    """torchvision's published cost of a factory's model: the first weights' meta `_ops` (GFLOPS, counted as
    multiply-adds) and `num_params`, with the weights' name and class count; None when there are none."""
    source, _, name = spec.partition(":")
    if source != "torchvision" or name not in torchvision_tasks():
        return None
    from torchvision import models

    try:
        weights = list(models.get_model_weights(name))
    except (ValueError, KeyError):
        return None
    meta = weights[0].meta if weights else {}
    if "_ops" not in meta:
        return None
    return {"weights": str(weights[0]), "gmacs": float(meta["_ops"]), "params": int(meta["num_params"]),
            "classes": len(meta.get("categories") or ())}  # fmt: skip


def factory_task(spec: str) -> str | None:
    """The task a factory's model solves when its name tells (torchvision's), else None (found from its output)."""
    source, _, name = spec.partition(":")
    return torchvision_tasks().get(name) if source == "torchvision" else None


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


@contextlib.contextmanager
def user_code(spec: str, what: str, *, errors: bool = True) -> Iterator[None]:
    """Run the user's code of factory `spec` (`what` it does, for the message: "importing 'net.py'").

    While it runs, `sys.argv` is `[file or module]` (restored after): code that parses the command line at
    import sees none of prunenas's flags. A `sys.exit()` in it becomes a SpaceError naming the spec and the
    last line it printed (argparse's usage error, say); with `errors`, so does any other exception (without
    it, the caller words them). What it prints is passed on to stderr when it returns, never to stdout.
    """
    saved = sys.argv
    sys.argv = [spec.rpartition(":")[0] or spec]
    printed = io.StringIO()
    keep = True  # pass on what it printed (not when the error message stands for it)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            yield
    except SystemExit as exc:
        keep = False
        lines = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
        said = f" after printing {lines[-1][:160]!r}" if lines else ""
        raise SpaceError(
            f"model factory {spec!r}: {what} called sys.exit({exc.code!r}){said}; a factory module must return a "
            'model, not exit or read prunenas\'s command line: keep script code under `if __name__ == "__main__":`'
        ) from None
    except SpaceError:
        keep = False
        raise
    except Exception as exc:
        keep = False
        if not errors:
            raise
        raise SpaceError(f"model factory {spec!r}: {what} raised {type(exc).__name__}: {first_line(exc)}") from None
    finally:
        sys.argv = saved
        if keep and printed.getvalue():
            sys.stderr.write(printed.getvalue())


#: Module name of a user's factory module -> the modules its import loaded (what its models may depend on).
_IMPORTED_WITH: dict[str, list[str]] = {}


def _import_user_module(spec: str, where: str) -> ModuleType:
    if where.endswith(".py"):
        path = factory_file(where)  # relative to here, or where a genotype made elsewhere recorded it
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
            before = set(sys.modules)
            try:
                with user_code(spec, f"importing {where!r}"):
                    loader_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
            _IMPORTED_WITH[mod_name] = sorted(set(sys.modules) - before)
        return module
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        before = set(sys.modules)
        with user_code(spec, f"importing {where!r}", errors=False):
            module = importlib.import_module(where)
        if where not in before:
            _IMPORTED_WITH[where] = sorted(set(sys.modules) - before)
        return module
    except ModuleNotFoundError as exc:
        parts = where.split(".")
        if exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:  # the spec's own module
            raise SpaceError(
                f"model factory {spec!r}: module {exc.name!r} not found; use an importable package.module:callable "
                "(run from the folder that holds it) or path/to/file.py:callable"
            ) from None
        raise SpaceError(
            f"model factory {spec!r}: importing {where!r} raised ModuleNotFoundError: {first_line(exc)} "
            "(install what it imports)"
        ) from None
    except Exception as exc:
        raise SpaceError(
            f"model factory {spec!r}: importing {where!r} raised {type(exc).__name__}: {first_line(exc)}"
        ) from None


def _load_user_callable(spec: str) -> Callable[..., Any]:
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise SpaceError(
            f"model factory {spec!r} is not of the form package.module:callable or path/to/file.py:callable"
        )
    module = _import_user_module(spec, where)
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
        valid = tuple(torchvision_tasks())
        if name not in valid:
            raise SpaceError(
                f"unknown torchvision model {name!r}; {_close(name, valid)}"
                f"valid: any of the {len(valid)} classification, segmentation and detection models of "
                "torchvision.models.list_models()"
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

                defaults = _TORCHVISION_DEFAULTS.get(name, {})
                if torchvision_tasks().get(name) != "classification":  # nothing pretrained: nothing downloads
                    defaults = {"weights_backbone": None}
                if name.startswith(("fcn_", "deeplabv3_")):  # the auxiliary head of torchvision's weights and recipe
                    defaults["aux_loss"] = True
                model = models.get_model(name, weights=None, num_classes=num_classes, **{**defaults, **kw})
            elif source == "timm":
                model = _timm().create_model(name, pretrained=False, num_classes=num_classes, **kw)
            else:
                fn = _load_user_callable(spec)
                if _accepts(fn, "num_classes"):
                    kw.setdefault("num_classes", num_classes)
                with user_code(spec, f"calling {spec.rpartition(':')[2]!r}", errors=False):
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


# -- what a factory's models depend on (the derived-space cache's key) -----------------------------------------
def _library_dirs() -> list[Path]:
    """Folders of installed packages and of the standard library (never the user's own code)."""
    paths = sysconfig.get_paths()
    found = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    found.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    found.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else None)
    return [Path(p).resolve() for p in found if p]


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _user_modules(module: ModuleType, root: Path, skip: list[Path]) -> set[Path]:
    """The files of `module` and of the modules it imports, directly or through them (the modules its import
    loaded, a module it names, or the module of a class or function it names), that lie in `root` and
    outside `skip`."""
    files: set[Path] = set()
    loaded = [sys.modules.get(n) for n in _IMPORTED_WITH.get(module.__name__, [])]
    todo = [module, *(m for m in loaded if isinstance(m, ModuleType))]
    seen = {id(m) for m in todo}
    while todo:
        mod = todo.pop()
        path = getattr(mod, "__file__", None)
        if not isinstance(path, str):
            continue
        resolved = Path(path).resolve()
        if not _within(resolved, root) or any(_within(resolved, d) for d in skip):
            continue
        files.add(resolved)
        for value in list(vars(mod).values()):
            owner = getattr(value, "__module__", None)
            found = value if isinstance(value, ModuleType) else sys.modules.get(owner if isinstance(owner, str) else "")
            if isinstance(found, ModuleType) and id(found) not in seen:
                seen.add(id(found))
                todo.append(found)
    return files


def factory_source(spec: str) -> dict[str, Any]:
    """What the models of factory `spec` are built from, to key caches of what is derived from them: the
    library's version for torchvision:/timm:, else the content hash of the user's module file and of the
    modules it imports from its folder (the file's folder, or its top package's), installed packages
    excepted. Imports the module (behind `user_code`)."""

    source = spec.partition(":")[0]
    if source in ("torchvision", "timm"):
        return {"library": source, "version": dist_versions(source)[source]}
    where = spec.rpartition(":")[0]
    module = _import_user_module(spec, where)
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return {"module": where, "files": {}}
    own = Path(file).resolve()
    top = sys.modules.get(where.split(".")[0]) if not where.endswith(".py") else None
    top_file = getattr(top, "__file__", None)
    if isinstance(top_file, str) and Path(top_file).name == "__init__.py":
        root = Path(top_file).resolve().parent
    else:
        root = own.parent
    skip = [d for d in _library_dirs() if d != root and _within(d, root)]  # a virtualenv inside the folder
    digests = {}
    for f in sorted(_user_modules(module, root, skip) | {own}):
        with contextlib.suppress(OSError):
            digests[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return {"module": str(own) if where.endswith(".py") else where, "root": str(root), "files": digests}
