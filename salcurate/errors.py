"""Errors that salcurate reports to users.

Every error raised for bad input is a :class:`SalcurateError` whose message is one line:
what was expected, what came, and what to do.  The CLI prints it without a traceback and
exits non-zero; library users catch it like any other exception.
"""

from __future__ import annotations


class SalcurateError(Exception):
    """Bad input or a state the user can fix; the message is one line meant for people."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)


class InputError(SalcurateError):
    """A file, folder, option or value given by the user is not usable."""


class StoreError(SalcurateError):
    """The mask store is missing, not a salcurate store, or in a state the command cannot use."""
