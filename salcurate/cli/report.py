"""CLI command of the report stage: report."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from salcurate.cli.core import RichEvents, app, config_command, out
from salcurate.report.build import ReportConfig


@config_command(app, "report", ReportConfig)
def report(
    config: ReportConfig,
    open_: Annotated[bool, typer.Option("--open", help="Open the report in the default browser.")] = False,
) -> None:
    """A static HTML report: scores, the effect of tau, worst and best masks."""
    import webbrowser

    from salcurate.report.build import run

    with RichEvents("thumbnails") as events:
        res = run(config, events=events)
    out.print(f"report written: {escape(str(res.index))} ({res.thumbnails} thumbnails, "
              f"{res.size_bytes / 2**20:.1f} MiB, {res.seconds:.1f} s)")
    if open_ and not webbrowser.open(res.index.resolve().as_uri()):
        out.print("no browser found here; open the file above by hand")
