"""CLI command that runs the whole pipeline on the demo data: demo."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.markup import escape

from salcurate.cli.core import RichEvents, app, config_command, out
from salcurate.data.demo_data import DemoConfig
from salcurate.demo import DemoRunConfig


def steps_app_for(steps: tuple[tuple[str, ...], ...]) -> typer.Typer:
    """The CLI with the commands of ``steps`` registered (``salcurate demo`` loads only its own module)."""
    from salcurate.cli import load_commands

    return load_commands(sorted({argv[0] for argv in steps}))


@config_command(app, "demo", DemoRunConfig)
def demo(config: DemoRunConfig) -> None:
    """Make the demo dataset and run the whole pipeline on it."""
    from salcurate.demo import run

    data: DemoConfig = config.data
    voc = Path(config.folder) / "voc"
    what = "tags and saliency; the proxies come from the tags" if data.proxies == "none" else "hand-made proxies"
    out.print(f"[bold]# making the demo dataset in {escape(str(voc))} ({data.num_images} images, "
              f"seed {data.seed}; {what})[/bold]")
    with RichEvents("generating") as events:
        res = run(config, events=events)
    steps_app = steps_app_for(res.steps)
    for argv in res.steps:
        out.print(f"\n[bold]$ salcurate {escape(shlex.join(argv))}[/bold]")
        code = steps_app(list(argv), prog_name="salcurate", standalone_mode=False)
        if code:  # the step printed its own error line
            raise typer.Exit(code)
    out.print(f"\ndemo finished: the store is {escape(str(res.store))}, the report {escape(str(res.report))}")
