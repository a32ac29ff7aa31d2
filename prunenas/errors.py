"""Errors that mean "the user gave bad input" (exit code 2) rather than "prunenas has a bug" (exit 1)."""

from __future__ import annotations


class PrunenasError(Exception):
    """Bad input: the message is one line saying what is wrong, what is valid and how to fix it.

    The CLI prints it without a traceback and exits with code 2. Anything else that escapes is a bug.
    """


class GenotypeError(PrunenasError):
    """A genotype is malformed or does not fit its space."""


class SpaceError(PrunenasError):
    """A space is unknown or its TOML is malformed."""


class DataError(PrunenasError):
    """A dataset is unknown, missing, corrupt or laid out in a way prunenas cannot read."""


def first_line(exc: BaseException, default: str = "", limit: int | None = None) -> str:
    """The first line of an exception's message (for one-line errors), or `default` when it has none."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else default
    return line[:limit] if limit is not None else line


def exception_line(exc: BaseException, limit: int = 240) -> str:
    """`Type: first line of the message` (the first `limit` characters of it), or the type alone: how an error
    from a library is quoted inside a one-line message."""
    line = first_line(exc, limit=limit).rstrip(" :")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
