"""Progress of training and of the search, fit for a terminal and for a log file.

On a terminal (stderr is a TTY) the progress is a tqdm bar, as it always was. Anywhere else (a log
file, a pipe, CI, `nohup`) a bar would be a wall of carriage returns, so the progress is plain lines
instead, one per finished epoch or trial, each flushed as it is written::

    resnet20_channels 264c8f7e proxy: epoch 3/10 loss 1.234 acc 0.567 val 0.601 812 img/s
    trial 5/8 done: #6 l1@0.5, val_acc 0.601, MACs 0.512x

`PRUNENAS_PROGRESS=bar` or `=lines` overrides the choice (`auto`, empty or unset: the choice above); any
other value is refused (`progress_style`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from prunenas.errors import PrunenasError

ENV = "PRUNENAS_PROGRESS"


@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """Only errors from these loggers ("" for the root logger) and no warnings, for the duration: libraries that
    report progress and advice at INFO or WARNING level (exporters, quantizers) would bury prunenas's own lines."""
    loggers = [logging.getLogger(n or None) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


_STYLES = ("bar", "lines")


def progress_style() -> str | None:
    """The style `PRUNENAS_PROGRESS` forces ("bar" or "lines"), None for the automatic choice (unset, empty or
    "auto"); any other value is bad input, refused in one line naming the variable."""
    given = os.environ.get(ENV, "")
    style = given.strip().lower()
    if style in ("", "auto"):
        return None
    if style not in _STYLES:
        raise PrunenasError(
            f"{ENV}={given!r} is not a progress style; valid: bar (a progress bar), lines (one line per epoch or "
            "trial, for logs) or auto (a bar on a terminal, lines elsewhere); fix or unset it"
        )
    return style


class Progress:
    """What train and the search call; the two kinds differ only in what they show."""

    def update(self, n: int = 1) -> None:
        """`n` more steps done (training steps: the bar moves; the lines wait for the epoch's end)."""

    def set_done(self, n: int) -> None:
        """The absolute count of units done (trials of a study that several workers share)."""

    def report(self, line: str, fields: Mapping[str, str] | None = None) -> None:
        """An epoch or a trial finished: `line` in a log, `fields` beside the bar."""

    def note(self, line: str) -> None:
        """Something a log reader should know (e.g. a resumed run); a bar shows it by its position."""

    def close(self) -> None:
        """Done (or interrupted)."""


class BarProgress(Progress):
    """A tqdm bar (tqdm.auto: a widget in a notebook)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, stream: TextIO | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=True, file=stream)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_done(self, n: int) -> None:
        if n != self.bar.n:
            self.bar.n = n
            self.bar.refresh()

    def report(self, line: str, fields: Mapping[str, str] | None = None) -> None:
        if fields:
            self.bar.set_postfix(dict(fields), refresh=True)

    def close(self) -> None:
        self.bar.close()


class LineProgress(Progress):
    """One flushed line per `report` or `note`; nothing between them, never a carriage return."""

    def __init__(self, total: int, initial: int, stream: TextIO | None) -> None:
        self.total = total
        self.done = initial
        self.stream = stream

    def _write(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(line.replace("\r", " ").rstrip("\n") + "\n")
        stream.flush()

    def update(self, n: int = 1) -> None:
        self.done += n

    def set_done(self, n: int) -> None:
        self.done = n

    def report(self, line: str, fields: Mapping[str, str] | None = None) -> None:
        self._write(line)

    def note(self, line: str) -> None:
        self._write(line)


def is_terminal(stream: Any) -> bool:
    """Whether `stream` shows a live bar: a TTY, or a Jupyter kernel's stream (tqdm.auto's widget)."""
    if type(stream).__module__.startswith("ipykernel"):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed stream
        return False


def make_progress(
    total: int,
    desc: str,
    *,
    unit: str = "step",
    initial: int = 0,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> Progress | None:
    """The progress of `total` units: None when `quiet`, a bar on a terminal, plain lines otherwise.

    `stream` defaults to sys.stderr (looked up at each write, so pytest's capture sees the lines)."""
    style = progress_style()  # checked even when quiet: a bad value is refused wherever it is set
    if quiet:
        return None
    if style is None:
        style = "bar" if is_terminal(stream if stream is not None else sys.stderr) else "lines"
    if style == "bar":
        return BarProgress(total, desc, unit, initial, stream)
    return LineProgress(total, initial, stream)


# -- the lines -------------------------------------------------------------------------------------------------
def epoch_line(desc: str, m: Any) -> str:
    """`desc: epoch 3/10 loss 1.234 acc 0.567 val 0.601 812 img/s` from an EpochMetrics."""
    parts = [f"epoch {m.epoch}/{m.epochs}", f"loss {m.train_loss:.3f}", f"acc {m.train_acc:.3f}"]
    if getattr(m, "val_acc", None) is not None:
        parts.append(f"val {m.val_acc:.3f}")
    parts.append(f"{m.images_per_s:.0f} img/s")
    return f"{desc}: {' '.join(parts)}"


def trial_origin(attrs: Mapping[str, Any]) -> str:
    """`l1@0.5` for a proposer-seeded trial, `sampled` otherwise."""
    if attrs.get("origin") == "proposer":
        target = attrs.get("target") or {}
        value = target.get("value") if isinstance(target, Mapping) else target
        return f"{attrs.get('proposer') or '?'}@{value:g}" if isinstance(value, int | float) else "proposer"
    return "sampled"


def trial_fields(trial: Any) -> dict[str, str]:
    """The last trial beside a bar: its validation accuracy (or state) and MACs ratio."""
    acc = trial.user_attrs.get("val_acc")
    last = f"{acc:.3f}" if isinstance(acc, float) else trial.state.name.lower()
    ratio = trial.user_attrs.get("macs_ratio")
    return {"last": last, "MACs": f"{ratio:.2f}" if isinstance(ratio, int | float) else "-"}


def trial_line(done: int, total: int, trial: Any) -> str:
    """`trial 5/8 done: #6 l1@0.5, val_acc 0.601, MACs 0.512x` from an Optuna FrozenTrial."""
    attrs: Mapping[str, Any] = trial.user_attrs
    state = trial.state.name
    parts = [f"#{trial.number} {trial_origin(attrs)}"]
    if attrs.get("infeasible"):
        parts.append("infeasible (not trained)")
    elif state == "PRUNED":
        parts.append(f"pruned after {attrs.get('epochs_run', '?')} epoch(s)")
    acc = attrs.get("val_acc")
    if isinstance(acc, int | float):
        parts.append(f"{attrs.get('score', 'val_acc')} {acc:.3f}")
    ratio = attrs.get("macs_ratio")
    if isinstance(ratio, int | float):
        parts.append(f"MACs {ratio:.3f}x")
    duplicate = attrs.get("duplicate_of")
    if isinstance(duplicate, int) and state in ("COMPLETE", "PRUNED"):
        # the genotype of an earlier trial again: its run was reused and the count of done ones did not move
        details = "".join(f", {p}" for p in parts[1:])
        return f"trial {parts[0]}: duplicate of trial #{duplicate}, reused{details} ({done}/{total} done)"
    if attrs.get("cached"):
        parts.append("cached")
    if state in ("COMPLETE", "PRUNED"):
        return f"trial {done}/{total} done: {', '.join(parts)}"
    return f"trial {', '.join(parts)} {state.lower()} ({done}/{total} done)"
