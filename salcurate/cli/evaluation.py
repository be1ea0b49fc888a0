"""CLI commands of the evaluation stage: evaluate, predict."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from salcurate.cli.core import LazyBar, _RateColumn, app, command, err, import_app, out, progress_bar  # noqa: F401

DEFAULT_STORE = Path("masks.h5")
StoreArg = Annotated[Path, typer.Argument(help="The mask store (default: masks.h5 in the current folder).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Decoding threads (0 = all cores).", min=0)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)


# --------------------------------------------------------------------------------------
# SAL-Net evaluation and prediction
# --------------------------------------------------------------------------------------
ScalesOpt = Annotated[str, typer.Option("--scales", help="Scales of multi-scale inference, fused by max (paper: 0.5,0.75,1.0).")]
FlipOpt = Annotated[bool, typer.Option("--flip", help="Also predict on mirrored images (fused by max).")]
CrfOpt = Annotated[bool, typer.Option("--crf", help="Refine with a dense CRF (DeepLab's settings; needs the crf extra).")]


def _inference_config(scales: str, flip: bool) -> Any:
    from salcurate.errors import InputError
    from salcurate.evaluation.inference import InferenceConfig

    try:
        values = tuple(float(v) for v in scales.split(","))
    except ValueError:
        raise InputError(f"--scales expects numbers separated by commas like 0.5,0.75,1.0, got {scales!r}") from None
    return InferenceConfig(scales=values, flip=flip)


@app.command("evaluate")
@command
def evaluate(
    store: StoreArg = DEFAULT_STORE,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="SAL-Net model file or `salcurate retrain` run folder (its model.pt).")] = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate; its samples with ground truth are used.")] = "val",
    multiscale: Annotated[bool, typer.Option("--multi-scale/--no-multi-scale", help="Also report multi-scale inference.")] = True,
    scales: ScalesOpt = "0.5,0.75,1.0",
    flip: FlipOpt = False,
    crf: CrfOpt = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results (and the resolved config) as JSON.")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Write a Markdown table like the paper's Table II.")] = None,
    save_masks: Annotated[Optional[Path], typer.Option("--save-masks", help="Write the last setting's masks here (VOC palette PNGs).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate only the first N images.", min=1)] = None,
    device: DeviceOpt = "auto",
) -> None:
    """mIoU and per-class IoU of a SAL-Net model against the ground truth (single-scale, multi-scale, +CRF)."""
    from salcurate.errors import InputError
    from salcurate.evaluation.evaluate import EvaluateConfig, evaluate_store, write_outputs

    if model is None:
        raise InputError("no model given; pass the SAL-Net model file with --model PATH (written by `salcurate retrain`)")
    config = EvaluateConfig(store=str(store), model=str(model), split=split, multiscale=multiscale, crf=crf,
                            inference=_inference_config(scales, flip), device=device, save_masks=_s(save_masks),
                            limit=limit)
    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, "evaluating")
        res = evaluate_store(config, on_start=bar.start, progress=bar.advance)
    pct = lambda v: "-" if v != v else f"{100 * v:.1f}"  # noqa: E731  (NaN: class in neither gt nor prediction)
    t = Table(title=f"{escape(model.name)} on {escape(split)} ({res.num_images} images, {res.device}): IoU (%)")
    t.add_column("class")
    for s in res.settings:
        t.add_column(escape(s.name), justify="right")
    for row, label in enumerate(res.labels):
        t.add_row(escape(label), *(pct(s.iou[row]) for s in res.settings))
    t.add_section()
    t.add_row("mIoU", *(pct(s.miou) for s in res.settings))
    t.add_row("pixel accuracy", *(pct(s.pixel_accuracy) for s in res.settings))
    t.add_row("s / image", *(f"{s.seconds_per_image:.3f}" for s in res.settings))
    out.print(t)
    for path in write_outputs(res, json_path=json_path, markdown_path=markdown):
        out.print(f"written: {escape(str(path))}")
    if res.masks_dir:
        out.print(f"masks of {escape(res.settings[-1].name)}: {escape(res.masks_dir)}")


@app.command("predict")
@command
def predict(
    model: Annotated[Path, typer.Argument(help="SAL-Net model file or `salcurate retrain` run folder (its model.pt).")],
    images: Annotated[Optional[list[Path]], typer.Argument(help="Image files, or folders of images.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the label maps (<stem>.png, VOC palette).")] = Path("predictions"),
    multiscale: Annotated[bool, typer.Option("--multi-scale/--single-scale", help="Multi-scale inference (max fusion).")] = True,
    scales: ScalesOpt = "0.5,0.75,1.0",
    flip: FlipOpt = False,
    crf: CrfOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Segment images with a SAL-Net model; writes one VOC palette PNG per image."""
    from salcurate.evaluation.evaluate import PredictConfig, predict_images

    config = PredictConfig(model=str(model), out=str(output), multiscale=multiscale, crf=crf,
                           inference=_inference_config(scales, flip), device=device)
    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, "predicting")
        res = predict_images(config, images or [], on_start=bar.start, progress=bar.advance)
    out.print(f"wrote {res.written} label maps to {escape(str(res.out))} ({escape(res.setting)}, {res.device}, "
              f"{res.seconds:.1f} s)")


