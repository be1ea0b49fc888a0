"""CLI commands of the scoring and selection stages: score-coarse, score-fine, select, evaluate-scores."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from salcurate.cli.core import (  # noqa: F401
    LazyBar,
    _RateColumn,
    app,
    command,
    config_command,
    err,
    import_app,
    out,
    progress_bar,
)
from salcurate.selection.select import SelectConfig

DEFAULT_STORE = Path("masks.h5")
StoreArg = Annotated[Path, typer.Argument(help="The mask store (default: masks.h5 in the current folder).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Decoding threads (0 = all cores).", min=0)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)


# --------------------------------------------------------------------------------------
# scoring and selection
# --------------------------------------------------------------------------------------
@app.command("score-coarse")
@command
def score_coarse(
    store: StoreArg = DEFAULT_STORE,
    workers: WorkersOpt = 0,
    crf: Annotated[bool, typer.Option("--crf/--no-crf", help="Refine reference masks with a dense CRF (needs the crf extra).")] = False,
    b: Annotated[float, typer.Option("--b", help="Objectness weight b in AC = F1 x F^b (Eq. 3); 0 switches it off.")] = 0.1,
    ac_formula: Annotated[str, typer.Option("--ac-formula", help="standard (P = |H∩B|/|B|, R = |H∩B|/|H|) or paper (Eq. 3 as printed).")] = "standard",
    saliency: Annotated[str, typer.Option("--saliency", help="Reference masks from: store (imported maps), builtin, or auto.")] = "auto",
    threshold: Annotated[str, typer.Option("--threshold", help="Saliency binarization: otsu or adaptive (2 x mean).")] = "otsu",
    max_objects: Annotated[int, typer.Option("--max-objects", help="Built-in saliency: objects found by iterative erasing.", min=1)] = 3,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing coarse scores made with another config.")] = False,
) -> None:
    """Coarse scores: reference masks H, AC, F, CD and SC (Eq. 3-5)."""
    from salcurate.scoring.coarse import CoarseConfig
    from salcurate.scoring.coarse import score_coarse as run

    config = CoarseConfig(saliency=saliency, crf=crf, b=b, ac_formula=ac_formula, threshold=threshold,
                          max_objects=max_objects, workers=workers, overwrite=overwrite)
    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, "scoring")
        summary = run(store, config, on_start=bar.start, progress=bar.advance)
    cols = ", ".join(summary.columns.values())
    if summary.nothing_to_do:
        out.print(f"coarse scores with this config are already complete ({cols}); nothing to do")
        return
    out.print(f"scored {summary.computed} masks in {summary.seconds:.1f} s"
              + (f" (resumed: {summary.resumed} were done before)" if summary.resumed else "")
              + f"; columns {cols}, reference masks {summary.reference!r}"
              + ("" if summary.mean_sc is None else f"; mean {summary.columns['sc']} {summary.mean_sc:.3f}"))


@config_command(app, "select", SelectConfig)
def select(config: SelectConfig) -> None:
    """Select masks by score (w = 1 if score >= tau) as a named selection."""
    from salcurate.selection.select import run

    res = run(config)
    if res.sweep is not None:
        t = Table(title=f"masks kept by {escape(config.by)} >= tau (NoS, the paper's Table IV row)")
        t.add_column("tau", justify="right")
        t.add_column("NoS", justify="right")
        for c in res.class_names[1:]:
            t.add_column(escape(c), justify="right")
        for row in res.sweep:
            t.add_row(f"{row['tau']:g}", str(row["kept"]), *map(str, row["per_class"]))
        out.print(t)
    if config.tau is None and config.top_k is None:
        return
    t = Table(title="images per class (by tags)")
    for col in ("class", "scored", "kept"):
        t.add_column(col, justify="right" if col != "class" else "left")
    for c, nb, na in zip(res.class_names[1:], res.per_class_before, res.per_class_after):
        t.add_row(escape(c), str(nb), str(na))
    out.print(t)
    verb = "selection " + repr(res.name) + (" written" if res.written else " not written (--dry-run)")
    out.print(f"kept {res.kept} of {res.scored} scored masks (NoS); {escape(verb)}")


@app.command("evaluate-scores")
@command
def evaluate_scores(
    store: StoreArg = DEFAULT_STORE,
    score: Annotated[str, typer.Option("--score", help="Score column to judge, e.g. sc or sf.")] = "sc",
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a scatter plot PNG of score against true quality.")] = None,
    bad_below: Annotated[float, typer.Option("--bad-below", help="A mask is bad when its true quality is below this.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """How well a score predicts true mask quality (needs ground truth)."""
    from salcurate.selection.validation import EvaluateScoresConfig
    from salcurate.selection.validation import evaluate_scores as run

    config = EvaluateScoresConfig(score=score, plot=_s(plot), bad_below=bad_below)
    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, "true quality")
        res = run(store, config, on_start=bar.start, progress=bar.advance)
    if as_json:
        out.print_json(json.dumps(res))
        return
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    out.print(f"{escape(score)} against true quality (AGT) on {res['samples']} masks with ground truth: "
              f"Pearson {f(res['pearson'])}, Spearman {f(res['spearman'])}; "
              f"AUROC for finding masks with AGT < {res['bad_below']:g}: {f(res['auroc_bad'])} ({res['bad']} such masks)")
    out.print(f"against the proxy's mIoU: Pearson {f(res['pearson_miou'])}, Spearman {f(res['spearman_miou'])}")
    t = Table(title=f"masks kept by {escape(score)} >= tau and their mean true quality (all: {res['mean_quality_all']:.3f})")
    for col in ("tau", "kept", "mean AGT"):
        t.add_column(col, justify="right")
    for row in res["taus"]:
        t.add_row(f"{row['tau']:g}", str(row["kept"]), "-" if row["mean_quality"] is None else f"{row['mean_quality']:.3f}")
    out.print(t)
    if res["plot"]:
        out.print(f"scatter plot: {escape(res['plot'])}")


@app.command("score-fine")
@command
def score_fine(
    store: StoreArg = DEFAULT_STORE,
    scorer: Annotated[Optional[Path], typer.Option("--scorer", help="Scorer checkpoint (default models/scorer.pt).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 32,
    device: DeviceOpt = "auto",
    workers: Annotated[int, typer.Option("--workers", help="Data-loader processes.", min=0)] = 2,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing fine scores made with another scorer.")] = False,
) -> None:
    """Fine scores: P from the scorer network and SF = P x CD (Eq. 7)."""
    from salcurate.scoring.fine import ScoreFineConfig
    from salcurate.scoring.fine import score_fine as run

    config = ScoreFineConfig(scorer=_s(scorer), batch_size=batch_size, device=device, workers=workers, overwrite=overwrite)
    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, "scoring")
        res = run(store, config, on_start=bar.start, progress=bar.advance)
    cols = ", ".join(res.columns.values())
    if res.nothing_to_do:
        out.print(f"fine scores with this scorer are already complete ({cols}); nothing to do")
        return
    out.print(f"scored {res.computed} masks on {res.device} in {res.seconds:.1f} s"
              + (f" (resumed: {res.resumed} were done before)" if res.resumed else "")
              + f"; columns {cols}" + ("" if res.mean_sf is None else f"; mean {res.columns['sf']} {res.mean_sf:.3f}"))


