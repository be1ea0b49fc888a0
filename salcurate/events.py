"""The command contract: ``run(config, *, events=None) -> Result``.

Every command of salcurate is a library function of this shape in its stage's module.  The
config is a typed dataclass (``salcurate.config``) holding every setting, the store included;
the result is a frozen dataclass whose ``to_dict()`` is plain JSON-safe data.  While it works a
command tells its caller what happens through an :class:`Events` object; the default does
nothing, the CLI's shows a rich progress bar and prints notes.  Library code never prints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from salcurate.config import to_dict


class Events:
    """What a running command reports; subclass and override what you want to see.

    * :meth:`start` once the amount of work is known (``total`` units, ``done`` of them already
      done by an earlier, interrupted run);
    * :meth:`advance` after each unit (``info``: short figures for a status line, e.g. loss);
    * :meth:`note` one line of news for a person ("resuming at iteration 40");
    * :meth:`metrics` a record of figures (an epoch's losses, a validation's mIoU).
    """

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        """The work has ``total`` units, ``done`` of them already done."""

    def advance(self, n: int = 1, **info: Any) -> None:
        """``n`` more units are done."""

    def note(self, message: str) -> None:
        """One line of news for a person."""

    def metrics(self, record: dict[str, Any]) -> None:
        """A record of figures (JSON-safe)."""


#: The do-nothing events that commands use when the caller passes none.
NO_EVENTS = Events()


class Result:
    """Base of every command's result dataclass: ``to_dict()`` gives plain JSON-safe data."""

    def to_dict(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return to_dict(self)
