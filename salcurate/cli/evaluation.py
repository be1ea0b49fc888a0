"""CLI commands of the evaluation stage: evaluate, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from salcurate.cli.core import RichEvents, app, config_command, out
from salcurate.errors import InputError
from salcurate.evaluation.evaluate import EvaluateConfig
from salcurate.evaluation.predict import PredictConfig


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"  # NaN: class in neither gt nor prediction


@config_command(app, "evaluate", EvaluateConfig, config_file=True,
                flags={"multiscale": "--multi-scale/--no-multi-scale"})
def evaluate(
    config: EvaluateConfig,
    json_path: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--json", help="Write the results (and the resolved config) as JSON.")] = None,
    markdown: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--markdown", help="Write a Markdown table like the paper's Table II.")] = None,
) -> None:
    """mIoU and per-class IoU of a SAL-Net model against the ground truth (single-scale, multi-scale, +CRF)."""
    from salcurate.evaluation.evaluate import run, write_outputs

    if config.model is None:
        raise InputError("no model given; pass the SAL-Net model file with --model PATH "
                         "(written by `salcurate retrain`)")
    with RichEvents("evaluating") as events:
        res = run(config, events=events)
    t = Table(title=f"{escape(Path(config.model).name)} on {escape(config.split)} ({res.num_images} images, "
                    f"{res.device}): IoU (%)")
    t.add_column("class")
    for s in res.settings:
        t.add_column(escape(s.name), justify="right")
    for row, label in enumerate(res.labels):
        t.add_row(escape(label), *(_pct(s.iou[row]) for s in res.settings))
    t.add_section()
    t.add_row("mIoU", *(_pct(s.miou) for s in res.settings))
    t.add_row("pixel accuracy", *(_pct(s.pixel_accuracy) for s in res.settings))
    t.add_row("s / image", *(f"{s.seconds_per_image:.3f}" for s in res.settings))
    out.print(t)
    for path in write_outputs(res, json_path=json_path, markdown_path=markdown):
        out.print(f"written: {escape(str(path))}")
    if res.masks_dir:
        out.print(f"masks of {escape(res.settings[-1].name)}: {escape(res.masks_dir)}")


@config_command(app, "predict", PredictConfig, config_file=True, flags={"multiscale": "--multi-scale/--single-scale"})
def predict(config: PredictConfig) -> None:
    """Segment images with a SAL-Net model; writes one VOC palette PNG per image."""
    from salcurate.evaluation.predict import run

    with RichEvents("predicting") as events:
        res = run(config, events=events)
    out.print(f"wrote {res.written} label maps to {escape(res.output)} ({escape(res.setting)}, {res.device}, "
              f"{res.seconds:.1f} s)")
