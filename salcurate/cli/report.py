"""CLI command of the report stage: report."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from salcurate.cli.core import LazyBar, _RateColumn, app, command, err, import_app, out, progress_bar  # noqa: F401

DEFAULT_STORE = Path("masks.h5")
StoreArg = Annotated[Path, typer.Argument(help="The mask store (default: masks.h5 in the current folder).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Decoding threads (0 = all cores).", min=0)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------
@app.command("report")
@command
def report(
    store: StoreArg = DEFAULT_STORE,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder (index.html and img/).")] = Path("report"),
    by: Annotated[Optional[str], typer.Option("--by", help="Score for the galleries: sf or sc (default: sf when present).")] = None,
    k: Annotated[int, typer.Option("--k", help="Worst and best masks shown per gallery.")] = 12,
    overwrite: OverwriteOpt = False,
    open_: Annotated[bool, typer.Option("--open", help="Open the report in the default browser.")] = False,
) -> None:
    """A static HTML report: scores, the effect of tau, worst and best masks."""
    import webbrowser

    from salcurate.report.build import ReportConfig, write_report

    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, "thumbnails")
        res = write_report(ReportConfig(store=str(store), out=str(output), by=by, k=k, overwrite=overwrite),
                           on_start=bar.start, progress=bar.advance)
    out.print(f"report written: {escape(str(res.index))} ({res.thumbnails} thumbnails, "
              f"{res.size_bytes / 2**20:.1f} MiB, {res.seconds:.1f} s)")
    if open_ and not webbrowser.open(res.index.resolve().as_uri()):
        out.print("no browser found here; open the file above by hand")


