"""The ``salcurate`` command line: one thin wrapper per command, one module per pipeline stage.

``core`` holds the app, the error line, the progress display and the options derived from
config dataclasses; ``data``, ``scoring`` (with selection), ``training``, ``evaluation``, ``report`` register the commands of
their stages.  Only this package prints, exits and owns progress bars.
"""

from __future__ import annotations

from salcurate.cli import data, evaluation, report, scoring, training  # noqa: F401  (registers the commands)
from salcurate.cli.core import app


def main() -> None:
    """Console-script entry point."""
    app(prog_name="salcurate")


__all__ = ["app", "main"]
