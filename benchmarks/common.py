"""What the benchmark scripts share: the machine description, the results file pair and the common flags.

The scripts run as `python benchmarks/NAME.py`, so this folder is first on sys.path and they import this
module as `common` (as they import each other's helpers, e.g. `from train_throughput import StepRunner`).

- Machine: `machine()` (a dict: the CPU as `prunenas.hardware.cpu_info()` detects it, model name, cores,
  torch's vector capability, AVX-512 BF16 and AMX; os.cpu_count(); the GPU's name when CUDA is present;
  torch, CUDA and Python versions; the platform; physical memory), `cpu_text()` ("MODEL xN", the form
  `prunenas.latency.machine()` records) and `device_name(device)` (the GPU's name on CUDA, else the CPU model).
- Results: `results_name(name)` is `<UTC date>-<machine kind>-<name>`, the naming of benchmarks/results/
  (machine kind "cpu"; the GPU suite's tag is `<UTC date>-<slug of the device name>`);
  `results_stem()` turns a script's --out (a path without suffix, or a folder) into the stem of the pair, and
  `write_results(stem, payload, markdown)` writes `<stem>.json` and `<stem>.md`. `command_line(__file__)` is
  the command as typed (`python benchmarks/NAME.py ARGS`), `stamp()` / `today()` the UTC time / date.
- Flags: `add_out`, `add_out_files`, `add_tiny`, `add_repeats`, `add_threads`, `add_device` and `add_data_dir`
  add the flags several scripts have, with one spelling, type and help text; each script passes its own
  default (and help where its meaning is narrower).

Nothing here imports torch at import time: `--help` and the start-up benchmark stay cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


# -- time and command ----------------------------------------------------------------------------------------
def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def stamp() -> str:
    """The UTC time to the second, ISO 8601 (2026-12-05T14:03:11+00:00)."""
    return utc_now().isoformat(timespec="seconds")


def today() -> str:
    """The UTC date, YYYY-MM-DD (the first part of a results file's name)."""
    return utc_now().strftime("%Y-%m-%d")


def script_path(script: str | Path) -> str:
    """A script's path as a command line names it: relative to the repository when inside it."""
    path = Path(script).resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else Path(script).as_posix()


def command_line(script: str | Path, argv: Sequence[str] | None = None) -> str:
    """`python benchmarks/NAME.py ARGS` (arguments shell-quoted); `argv`: the arguments when `main(argv)` was
    called with a list instead of the command line."""
    args = list(argv) if argv is not None else sys.argv[1:]
    return shlex.join(["python", script_path(script), *args])


# -- machine -------------------------------------------------------------------------------------------------
def cpu() -> dict[str, Any]:
    """The CPU as prunenas detects it: model, cores (this process may use), capability, avx512_bf16, amx, bf16."""
    from prunenas.hardware import cpu_info

    return cpu_info().to_dict()


def cpu_text() -> str:
    """'MODEL xN' (N = os.cpu_count()), the form `prunenas.latency.machine()` records."""
    from prunenas.latency import machine as latency_machine

    return latency_machine()


def gpu_name(device: Any = None) -> str | None:
    """The CUDA GPU's name (`device`, else the current one), or None where CUDA is absent or not used."""
    import torch

    if device is not None and torch.device(device).type != "cuda":
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(device)


def device_name(device: Any = None) -> str:
    """The GPU's name on a CUDA device, else the CPU's model name."""
    return gpu_name(device) or str(cpu()["model"])


def memory_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return None


def machine() -> dict[str, Any]:
    """Everything detected about this machine that a result depends on."""
    import torch

    return {
        "cpu": cpu(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": memory_gb(),
    }


def slug(text: str) -> str:
    """A device's name as the GPU suite's tag has it: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "device"


# -- results -------------------------------------------------------------------------------------------------
def results_name(name: str, *, kind: str = "cpu", date: str | None = None, tiny: bool = False) -> str:
    """<UTC date>-<machine kind>-<name>, with -tiny for a --tiny run (an empty name: <UTC date>-<machine kind>,
    the GPU suite's tag)."""
    return "-".join(p for p in (date or today(), kind, name) if p) + ("-tiny" if tiny else "")


def results_stem(
    out: str | Path | None,
    name: str,
    *,
    folder: bool = False,
    kind: str = "cpu",
    date: str | None = None,
    tiny: bool = False,
) -> Path:
    """The path of a results pair without suffix: `out` itself (a script whose --out is a path without
    suffix), `out` / results_name(name) (a script whose --out is a folder), or benchmarks/results/
    results_name(name) when `out` is None."""
    file_name = results_name(name, kind=kind, date=date, tiny=tiny)
    if out is None:
        return RESULTS / file_name
    return Path(out) / file_name if folder else Path(out)


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def to_json(payload: Any, indent: int = 2) -> str:
    return json.dumps(payload, indent=indent, default=str) + "\n"


def write_results(stem: str | Path, payload: Any, markdown: str, *, indent: int = 2) -> tuple[Path, Path]:
    """<stem>.json (the payload) and <stem>.md (the report), the folder created if needed. The suffixes are
    appended: a dot inside the stem's name stays."""
    stem = Path(stem)
    j = write_text(stem.with_name(stem.name + ".json"), to_json(payload, indent))
    m = write_text(stem.with_name(stem.name + ".md"), markdown if markdown.endswith("\n") else markdown + "\n")
    return j, m


# -- spaces --------------------------------------------------------------------------------------------------
def tiny_resnet8_toml(name: str) -> str:
    """A ResNet-8 channel space (one block per stage, shortcut B: every width prunable; widths 6/8/12) named
    `name`, as TOML: seconds per run on a CPU, for the benchmarks' quick testbeds and dry runs (the test suite's
    `tiny_resnet8` in tests/conftest.py is the same space)."""
    return (
        f'extends = "resnet20_channels"\nname = "{name}"\n[model]\ndepth = 8\nshortcut = "B"\nwidths = [6, 8, 12]\n'
        "[recipe]\nbatch_size = 32\n"
    )


# -- flags ---------------------------------------------------------------------------------------------------
def add_out(
    parser: argparse.ArgumentParser,
    *,
    folder: bool,
    default: str | Path | None = None,
    required: bool = False,
    help: str | None = None,
) -> None:
    """--out: where the results pair goes, a folder (`folder=True`: files named <date>-<kind>-<name>) or a path
    without suffix (.json and .md are written; default benchmarks/results/<date>-<kind>-<name>)."""
    if help is None:
        help = (
            "results folder (files <UTC date>-<machine kind>-<name>.json and .md)"
            if folder
            else "results path without suffix (.md and .json are written)"
        )
        if default is not None:
            help += f"; default {default}"
        elif not folder and not required:
            help += "; default benchmarks/results/<UTC date>-<machine kind>-<name>"
    value = Path(default) if default is not None else None
    parser.add_argument("--out", type=Path, default=value, required=required, help=help)


def add_out_files(parser: argparse.ArgumentParser, *, json_file: bool = True) -> None:
    """--out-md (and --out-json): explicit paths of the Markdown and JSON results (none: printed only)."""
    parser.add_argument("--out-md", default=None, help="write the Markdown results here")
    if json_file:
        parser.add_argument("--out-json", default=None, help="write the JSON results here")


def add_tiny(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--tiny", action="store_true", help=help)


def apply_tiny(args: argparse.Namespace, argv: Sequence[str] | None, sizes: Mapping[str, Any]) -> None:
    """With --tiny, `sizes` (by destination name) replace the defaults of the flags not given in `argv`."""
    if not args.tiny:
        return
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:]) if a.startswith("--")}
    for key, value in sizes.items():
        if key not in given:
            setattr(args, key, value)


def add_repeats(parser: argparse.ArgumentParser, default: int, help: str | None = None) -> None:
    parser.add_argument("--repeats", type=int, default=default, help=help or f"timed repetitions (default {default})")


def add_threads(parser: argparse.ArgumentParser, default: int | None = None, help: str | None = None) -> None:
    text = "torch CPU threads" + (" (default: torch's own)" if default is None else f" (default {default})")
    parser.add_argument("--threads", type=int, default=default, help=help or text)


def add_device(parser: argparse.ArgumentParser, default: str = "auto", help: str | None = None) -> None:
    text = f"auto (CUDA when present), cuda, cuda:N, cpu (default {default})"
    parser.add_argument("--device", default=default, help=help or text)


def add_data_dir(parser: argparse.ArgumentParser, default: str | None, help: str | None = None) -> None:
    text = "the dataset's file or folder (CIFAR-10: the JPEG copy's .tar.gz)"
    parser.add_argument("--data-dir", default=default, help=help or text + (f"; default {default}" if default else ""))
