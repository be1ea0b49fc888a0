"""The ``salcurate`` command line: one thin wrapper per command, one module per pipeline stage.

``core`` holds the app, the error line, the progress display and the options derived from
config dataclasses; ``data``, ``demo``, ``scoring``, ``selection``, ``training``, ``evaluation``
and ``report`` register the commands of their stages.  Only this package prints, exits and owns
progress bars.

A command's module (and the library it needs, torch included) is imported only when that command
runs: ``salcurate info`` does not pay for torch.  ``--help`` and ``salcurate.cli.app`` load them all.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

#: Which module registers each top-level command.
COMMAND_MODULES: dict[str, str] = {
    "import": "data", "info": "data", "export": "data", "check": "data", "migrate": "data", "compact": "data",
    "demo": "demo",
    "score-coarse": "scoring", "score-fine": "scoring", "select": "selection", "evaluate-scores": "selection",
    "score-combined": "scoring", "score-evidence": "scoring",
    "train-scorer": "training", "retrain": "training", "pseudo-label": "training", "score-model": "training",
    "evaluate": "evaluation", "predict": "evaluation",
    "report": "report",
}


def load_commands(names: list[str] | None = None) -> Any:
    """Register the commands ``names`` (all when None) and return the Typer app."""
    from salcurate.cli.core import app

    modules = sorted(set(COMMAND_MODULES.values())) if names is None else \
        sorted({COMMAND_MODULES[n] for n in names if n in COMMAND_MODULES})
    for module in modules:
        importlib.import_module(f"salcurate.cli.{module}")
    return app


def _command_name(argv: list[str]) -> str | None:
    """The command an argument list asks for (the first word that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: loads only the module of the command asked for."""
    args = sys.argv[1:] if argv is None else argv
    name = _command_name(args)
    app = load_commands([name] if name in COMMAND_MODULES else None)
    app(args=args, prog_name="salcurate")


def __getattr__(name: str) -> Any:
    if name == "app":  # ``from salcurate.cli import app``: the whole CLI
        return load_commands()
    raise AttributeError(name)


__all__ = ["COMMAND_MODULES", "app", "load_commands", "main"]
