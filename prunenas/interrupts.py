"""One orderly shutdown on Ctrl-C (SIGINT) or SIGTERM, however many signals arrive.

The first signal raises KeyboardInterrupt in the main thread, as Ctrl-C always did: the code that keeps
finished work (an epoch's checkpoint, a trial failed and queued again, the worker processes told to stop)
runs in its `except` and `finally` clauses. Every later signal is ignored, so a second Ctrl-C (or a
terminal's Ctrl-C on top of a parent's forwarded SIGINT, or a SIGTERM from a process manager) can no longer
cut that clean-up short with a traceback: not in a lazy import in an `except` clause, not in torch's atexit
hooks (the program ignores both signals once its command has returned). It prints one line and exits 130.

A process started with SIGINT ignored (`nohup`, `cmd &` in a script) keeps ignoring it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE = 130

_received: list[int] = []  # the first signal of the current shutdown (empty: none)
_state = {"over": False}  # the command has returned: a signal now changes nothing


def received() -> int | None:
    """The signal that started the shutdown under way, or None."""
    return _received[0] if _received else None


def describe() -> str:
    """`interrupted` (Ctrl-C) or `interrupted (SIGTERM)`, for the one line the program prints."""
    sig = received()
    return "interrupted" if sig in (None, signal.SIGINT) else f"interrupted ({signal.Signals(sig).name})"


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Later signals (and any once the command has returned) return here and change nothing. Not SIG_IGN: a
    # signal caught by the operating system but not yet handled by Python would then be reported as "ignored
    # due to race condition", with a traceback.
    if _received or _state["over"]:
        return
    _received.append(signum)
    raise KeyboardInterrupt


def absorb() -> None:
    """Another handler turned a signal into an exception (torchrun's launcher does): from now on SIGINT and
    SIGTERM change nothing, as after the first signal of an `orderly_shutdown`."""
    if not _received:
        _received.append(signal.SIGINT)
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, _on_signal)


def _flush() -> None:
    """A Python call: signals caught but not yet handled run their (no-op) handler here."""


def _ignore_from_now_on() -> None:
    """SIG_IGN for the rest of the process, once the signals already caught are handled. (A Python handler
    would not do: Python puts back the default disposition early in its shutdown, which a signal then kills.)"""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        _flush()
        for sig in SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, signal.SIG_IGN)
    finally:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


@contextlib.contextmanager
def orderly_shutdown(process_ends: bool = False) -> Iterator[None]:
    """Within: the first SIGINT or SIGTERM raises KeyboardInterrupt, later ones are ignored.

    `process_ends`: the caller is the program itself and exits right after (`prunenas`, a search worker);
    then signals stay ignored on the way out (torch's atexit hooks run after the command's work is done and
    its exit code decided). Otherwise (a call of `prunenas.cli.main` from Python) the handlers that were in
    place are restored. Outside the main thread nothing changes: signals are delivered to the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if handler is signal.SIG_IGN:
            continue
        previous[sig] = handler
        signal.signal(sig, _on_signal)
    _received.clear()
    _state["over"] = False
    try:
        yield
    finally:
        _state["over"] = True
        if process_ends:
            _ignore_from_now_on()
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _state["over"] = False
