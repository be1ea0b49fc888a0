"""Errors that salcurate reports to users.

Every error raised for bad input is a :class:`SalcurateError` whose message is one line:
what was expected, what came, and what to do.  Library messages name settings by their
parameter name (``batch_size``), never by a command-line flag; the CLI, which knows the flags,
rewrites the names listed in :attr:`SalcurateError.params` into flags (``--batch-size``) and
prints the line without a traceback, exiting non-zero.

:class:`InputError` is also a :class:`ValueError`, so Python users catch bad input as they would
from numpy or torch.
"""

from __future__ import annotations

from collections.abc import Iterable


class SalcurateError(Exception):
    """Bad input or a state the user can fix; the message is one line meant for people.

    ``param``: the setting(s) the message names, by parameter name; the CLI shows them as flags.
    """

    exit_code: int = 2

    def __init__(self, message: str, *, param: str | Iterable[str] | None = None) -> None:
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
        self.params: tuple[str, ...] = (() if param is None else (param,) if isinstance(param, str)
                                        else tuple(param))


class InputError(SalcurateError, ValueError):
    """A file, folder, setting or value given by the user is not usable."""


class StoreError(SalcurateError):
    """The mask store is missing, not a salcurate store, or in a state the command cannot use."""
