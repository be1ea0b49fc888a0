"""The ``salcurate`` command line: one thin wrapper per command.

Each command turns its options into a config, calls a library function and renders the
result.  Only this module prints, exits and owns progress bars.  Bad input raises
:class:`~salcurate.errors.SalcurateError`, shown as one ``error:`` line with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn,
                           TimeRemainingColumn)
from rich.text import Text
from rich.table import Table

from salcurate._version import __version__
from salcurate.errors import SalcurateError

app = typer.Typer(
    name="salcurate",
    help="Score, select and curate noisy proxy annotations (pseudo-label masks) for semantic segmentation (SAL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
import_app = typer.Typer(help="Import a dataset (VOC or plain folder) into a mask store.", no_args_is_help=True)
app.add_typer(import_app, name="import")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger("salcurate")

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_STORE = Path("masks.h5")
StoreArg = Annotated[Path, typer.Argument(help="The mask store (default: masks.h5 in the current folder).")]


def command(fn: F) -> F:
    """Turn library errors into one ``error:`` line and a non-zero exit, without traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SalcurateError as exc:
            sys.stderr.write(f"error: {exc}\n")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class _RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:,.0f}/s")


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields ``advance(n)``.  Hidden when stderr is not a terminal."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               _RateColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


class LazyBar:
    """A progress bar that appears once the library says how much work there is."""

    def __init__(self, stack: contextlib.ExitStack, description: str) -> None:
        self._stack, self._description = stack, description
        self._advance: Callable[[int], None] | None = None

    def start(self, total: int, done: int = 0) -> None:
        if total:
            self._advance = self._stack.enter_context(progress_bar(self._description, total))
            self._advance(done)

    def advance(self, n: int) -> None:
        if self._advance is not None:
            self._advance(n)


def _version(value: bool) -> None:
    if value:
        out.print(f"salcurate {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the library does.")] = False,
) -> None:
    """Score, select and curate noisy proxy annotations for semantic segmentation (SAL)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------
def _import(layout: str, root: Path, output: Path, **options: Any) -> None:
    from salcurate.data.importing import ImportConfig, import_dataset

    config = ImportConfig(layout=layout, root=str(root), output=str(output), **options)
    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, f"importing {root.name}")
        summary = import_dataset(config, on_plan=lambda plan: bar.start(len(plan.samples)), progress=bar.advance)
    table = Table(title=f"{escape(str(summary.output))}: {summary.num_imported} samples imported "
                        f"({summary.num_total} in the store) in {summary.seconds:.1f} s")
    for col in ("split", "samples"):
        table.add_column(col)
    for split, n in sorted(summary.per_split.items()):
        table.add_row(escape(split), str(n))
    out.print(table)
    out.print(f"proxy masks {summary.with_proxy}, ground truth {summary.with_gt}, saliency {summary.with_saliency}, "
              f"tags {summary.with_tags}, strong {summary.strong}"
              + (f"; {summary.skipped} images without a proxy annotation left out" if summary.skipped else ""))


SplitOpt = Annotated[Optional[list[str]], typer.Option("--split", help="Split list(s) to import (repeatable); default all images.")]
GtOpt = Annotated[Optional[Path], typer.Option("--gt", help="Ground-truth label maps (PNG).")]
SalOpt = Annotated[Optional[Path], typer.Option("--saliency", help="8-bit PNG saliency maps.")]
TagsOpt = Annotated[Optional[Path], typer.Option("--tags", help="CSV `id,tags`, tags as space-separated class indices or names.")]
TagsDirOpt = Annotated[Optional[Path], typer.Option("--tags-dir", help="One <id>.txt per image, one class index per line.")]
TagsGtOpt = Annotated[bool, typer.Option("--tags-from-gt", help="Take the image tags from the ground truth.")]
ClassOpt = Annotated[Optional[Path], typer.Option("--class-names", help="Class names, one per line, background first (default: the 21 VOC names).")]
StrongOpt = Annotated[Optional[Path], typer.Option("--strong", help="File of ids whose ground truth is trusted (semi-supervised).")]
AppendOpt = Annotated[bool, typer.Option("--append", help="Add these samples to an existing store.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Decoding threads (0 = all cores).", min=0)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="The store to write.")]


@import_app.command("voc")
@command
def import_voc(
    root: Annotated[Path, typer.Argument(help="VOC root (JPEGImages/, ImageSets/Segmentation/, SegmentationClass[Aug]/).")],
    output: OutputOpt = DEFAULT_STORE,
    split: SplitOpt = None,
    pseudo: Annotated[Optional[Path], typer.Option("--pseudo", help="Proxy annotations: PNG label maps, palette or grey.")] = None,
    gt: GtOpt = None, saliency: SalOpt = None, tags: TagsOpt = None, tags_dir: TagsDirOpt = None,
    tags_from_gt: TagsGtOpt = False, class_names: ClassOpt = None, strong: StrongOpt = None,
    append: AppendOpt = False, overwrite: OverwriteOpt = False, workers: WorkersOpt = 0,
) -> None:
    """Import a PASCAL VOC style dataset with its proxy annotations."""
    _import("voc", root, output, splits=tuple(split or ()), pseudo_dir=_s(pseudo), gt_dir=_s(gt),
            saliency_dir=_s(saliency), tags_file=_s(tags), tags_dir=_s(tags_dir), tags_from_gt=tags_from_gt,
            class_names_file=_s(class_names), strong_file=_s(strong), append=append, overwrite=overwrite,
            workers=workers)


@import_app.command("folder")
@command
def import_folder(
    root: Annotated[Path, typer.Argument(help="Folder with images/, masks/ and optional gt/, saliency/, splits/, tags.csv, classes.txt.")],
    output: OutputOpt = DEFAULT_STORE,
    split: SplitOpt = None,
    masks: Annotated[Optional[Path], typer.Option("--masks", help="Proxy annotations (default ROOT/masks).")] = None,
    gt: GtOpt = None, saliency: SalOpt = None, tags: TagsOpt = None, tags_dir: TagsDirOpt = None,
    tags_from_gt: TagsGtOpt = False, class_names: ClassOpt = None, strong: StrongOpt = None,
    append: AppendOpt = False, overwrite: OverwriteOpt = False, workers: WorkersOpt = 0,
) -> None:
    """Import a plain folder layout (see docs/store-format.md)."""
    _import("folder", root, output, splits=tuple(split or ()), pseudo_dir=_s(masks), gt_dir=_s(gt),
            saliency_dir=_s(saliency), tags_file=_s(tags), tags_dir=_s(tags_dir), tags_from_gt=tags_from_gt,
            class_names_file=_s(class_names), strong_file=_s(strong), append=append, overwrite=overwrite,
            workers=workers)


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)


# --------------------------------------------------------------------------------------
# info / export
# --------------------------------------------------------------------------------------
@app.command("info")
@command
def info(
    store: StoreArg = DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show what a store holds: splits, classes, scores, selections, log."""
    from salcurate.data.info import store_summary
    from salcurate.data.store import MaskStore

    with MaskStore(store) as st:
        summary = store_summary(st)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(f"[bold]{escape(summary['path'])}[/bold]: {summary['num_samples']} samples, {summary['num_classes']} classes, "
              f"schema v{summary['schema_version']} (salcurate {summary['salcurate_version']})")
    out.print("splits: " + ", ".join(f"{escape(k)} {v}" for k, v in summary["splits"].items())
              + " | maps: " + ", ".join(f"{k} {v}" for k, v in summary["maps"].items())
              + f" | tags {summary['with_tags']} | strong {summary['strong']}")
    t = Table(title="classes")
    for col in ("#", "name", "proxy images", "proxy pixels", "gt images", "tagged images"):
        t.add_column(col, justify="right" if col != "name" else "left")
    for row in summary["classes"]:
        t.add_row(str(row["index"]), escape(row["name"]), str(row["proxy_images"]), f"{row['proxy_pixels']:,}",
                  str(row["gt_images"]), "" if row["tagged_images"] is None else str(row["tagged_images"]))
    out.print(t)
    if summary["scores"]:
        t = Table(title="score columns")
        for col in ("name", "computed", "mean", "min", "max"):
            t.add_column(col)
        for name, s in summary["scores"].items():
            t.add_row(escape(name), str(s["computed"]), *("-" if s[k] is None else f"{s[k]:.3f}" for k in ("mean", "min", "max")))
        out.print(t)
    if summary["selections"]:
        t = Table(title="selections")
        for col in ("name", "kept", "rule"):
            t.add_column(col)
        for name, s in summary["selections"].items():
            t.add_row(escape(name), f"{s['kept']}/{s['total']}", escape(json.dumps(s["rule"], sort_keys=True)))
        out.print(t)
    t = Table(title="run log")
    for col in ("finished", "command", "seconds"):
        t.add_column(col)
    for e in summary["log"]:
        t.add_row(e["finished"], e["command"], f"{e['duration_s']:.1f}")
    out.print(t)


@app.command("export")
@command
def export(
    paths: Annotated[list[Path], typer.Argument(metavar="[STORE] OUT", help="Store (default masks.h5) and output folder.")],
    selection: Annotated[Optional[str], typer.Option("--selection", help="Export only the samples this selection keeps.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Export only this split.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="Which masks: proxy or gt.")] = "proxy",
    images: Annotated[bool, typer.Option("--images", help="Also copy the original images and write a DeepLab list.txt.")] = False,
    scores: Annotated[Optional[Path], typer.Option("--scores", help="Write id, split and every score column to this CSV.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export masks as VOC palette PNGs, a list file and scores."""
    from salcurate.errors import InputError
    from salcurate.data.export import ExportConfig, export_store

    if len(paths) > 2:
        raise InputError(f"expected [STORE] OUT, got {len(paths)} paths; give the store and one output folder")
    store, target = (DEFAULT_STORE, paths[0]) if len(paths) == 1 else (paths[0], paths[1])
    config = ExportConfig(store=str(store), out=str(target), selection=selection, split=split, kind=kind,
                          images=images, scores_csv=_s(scores), overwrite=overwrite)
    with progress_bar("exporting", None) as advance:
        summary = export_store(config, progress=advance)
    out.print(f"exported {summary.exported} masks to {escape(str(summary.out))}"
              + (f" ({summary.without_mask} samples without a {kind} mask skipped)" if summary.without_mask else "")
              + (f"; scores in {escape(str(summary.scores_csv))}" if summary.scores_csv else ""))


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


@app.command("select")
@command
def select(
    store: StoreArg = DEFAULT_STORE,
    tau: Annotated[Optional[float], typer.Option("--tau", help="Keep masks whose score >= tau (Eq. 9).")] = None,
    by: Annotated[str, typer.Option("--by", help="Score column: sf (fine), sc (coarse) or any other.")] = "sf",
    name: Annotated[Optional[str], typer.Option("--name", help="Selection name (default from score and tau).")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Keep at most the K best masks.")] = None,
    min_per_class: Annotated[int, typer.Option("--min-per-class", help="Keep at least K images per class (by tags).")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be kept; write nothing.")] = False,
    do_sweep: Annotated[bool, typer.Option("--sweep", help="Show NoS for the paper's taus (Table IV).")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Select masks by score (w = 1 if score >= tau) as a named selection."""
    from salcurate.selection.select import SelectConfig
    from salcurate.selection.select import select as run

    res = run(store, SelectConfig(by=by, tau=tau, top_k=top_k, min_per_class=min_per_class, name=name,
                                  dry_run=dry_run, overwrite=overwrite, sweep=do_sweep))
    if res.sweep is not None:
        t = Table(title=f"masks kept by {escape(by)} >= tau (NoS, the paper's Table IV row)")
        t.add_column("tau", justify="right")
        t.add_column("NoS", justify="right")
        for c in res.class_names[1:]:
            t.add_column(escape(c), justify="right")
        for row in res.sweep:
            t.add_row(f"{row['tau']:g}", str(row["kept"]), *map(str, row["per_class"]))
        out.print(t)
    if tau is None and top_k is None:
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


# --------------------------------------------------------------------------------------
# fine scoring
# --------------------------------------------------------------------------------------
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]


@app.command("train-scorer")
@command
def train_scorer(
    store: StoreArg = DEFAULT_STORE,
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (a JSONL log goes beside it).")] = Path("models/scorer.pt"),
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs (paper: 50).")] = 50,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size (paper: 8).")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (paper: 1e-5).")] = 1e-5,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam or sgd.")] = "adam",
    input_size: Annotated[int, typer.Option("--input-size", help="Network input side in pixels (paper: 256).")] = 256,
    width: Annotated[int, typer.Option("--width", help="Channels of the first conv (Table I: 128).")] = 128,
    channels: Annotated[int, typer.Option("--channels", help="Channels of the later layers (Table I: 192).")] = 192,
    hidden: Annotated[int, typer.Option("--hidden", help="Units of the first fc layer (Table I: 128).")] = 128,
    scale: Annotated[float, typer.Option("--scale", help="Training-set size relative to the paper's 10k per 10,582 images.")] = 1.0,
    proportions: Annotated[str, typer.Option("--proportions", help="Items per 10,582 images: positive,negative,degraded,composite.")] = "4000,1000,3000,2000",
    positive_min: Annotated[float, typer.Option("--positive-min", help="Positives: AC >= this.")] = 0.8,
    negative_max: Annotated[float, typer.Option("--negative-max", help="Negatives: AC <= this.")] = 0.3,
    composite_source_min: Annotated[float, typer.Option("--composite-source-min", help="Pasted objects come from AC >= this.")] = 0.9,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Images held out for validation.")] = 0.1,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Makes CPU runs repeatable.")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Data-loader processes.", min=0)] = 2,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint at --output.")] = False,
) -> None:
    """Train the fine scorer (Table I) on synthesized samples (L2, Eq. 6)."""
    from salcurate.errors import InputError
    from salcurate.scoring.fine import TrainScorerConfig
    from salcurate.scoring.fine import train_scorer as run
    from salcurate.scoring.synthesis import SynthesisConfig

    try:
        mix = tuple(int(v) for v in proportions.split(","))
    except ValueError:
        raise InputError(f"--proportions expects 4 whole numbers like 4000,1000,3000,2000, got {proportions!r}") from None

    config = TrainScorerConfig(
        output=str(output), epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, input_size=input_size,
        width=width, channels=channels, hidden=hidden, device=device, seed=seed, workers=workers, resume=resume,
        synthesis=SynthesisConfig(positive_min=positive_min, negative_max=negative_max,
                                  composite_source_min=composite_source_min, scale=scale, val_fraction=val_fraction, seed=seed,
                                  proportions=mix))  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, "training")

        def on_start(total_epochs: int, start: int, batches: int) -> None:
            bar.start((total_epochs - start) * batches)
            if start:
                out.print(f"resuming after epoch {start}")

        def on_epoch(m: Any) -> None:
            rho = "-" if m.val_spearman is None else f"{m.val_spearman:.3f}"
            out.print(f"epoch {m.epoch}: train L2 {m.train_l2:.4f}, val L2 {m.val_l2:.4f}, val Spearman {rho} ({m.seconds:.1f} s)")

        res = run(store, config, on_start=on_start, on_epoch=on_epoch, progress=bar.advance)
    out.print(f"scorer saved to {escape(res['output'])} ({res['items']['train']} training / {res['items']['val']} "
              f"validation items); log {escape(res['log'])}")


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


# --------------------------------------------------------------------------------------
# retrain
# --------------------------------------------------------------------------------------
@app.command("retrain")
@command
def retrain(
    store: StoreArg = DEFAULT_STORE,
    selection: Annotated[Optional[str], typer.Option("--selection", help="Selection to train on (from `salcurate select`); none = every proxy (P2).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder (default runs/SELECTION).")] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="vgg16, resnet101, resnet50 or resnet18.")] = "vgg16",
    backbone_weights: Annotated[str, typer.Option("--backbone-weights", help="imagenet (from the local torch cache), a .pth file, or none (random).")] = "imagenet",
    sample: Annotated[str, typer.Option("--sample", help="selected: draw only kept images (paper); all: every image, L_sel weighted by w.")] = "selected",
    split: Annotated[str, typer.Option("--split", help="Split to train on.")] = "train",
    val_split: Annotated[str, typer.Option("--val-split", help="Split with ground truth for validation mIoU.")] = "val",
    strong: Annotated[bool, typer.Option("--strong/--no-strong", help="Strong samples train on their ground truth with w = 1.")] = True,
    attention: Annotated[str, typer.Option("--attention", help="multiply (Eq. 11, paper), multitask (released code) or off (no classification branch).")] = "multiply",
    attention_loss: Annotated[str, typer.Option("--attention-loss", help="bce (positive and negative terms) or positive (Eq. 12 as printed).")] = "bce",
    lam: Annotated[float, typer.Option("--lambda", help="Weight of the attention loss (Eq. 14; paper 2).")] = 2.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per iteration and process (paper 7).")] = 7,
    crop: Annotated[int, typer.Option("--crop", help="Random crop side (paper 321); smaller images are padded.")] = 321,
    scale_min: Annotated[float, typer.Option("--scale-min", help="Smallest random scale.")] = 0.5,
    scale_max: Annotated[float, typer.Option("--scale-max", help="Largest random scale.")] = 1.5,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips.")] = True,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base learning rate (default: 1e-3 vgg16, 1e-4 resnets).")] = None,
    max_iter: Annotated[Optional[int], typer.Option("--max-iter", help="Iterations (default: 27000 vgg16, 15000 resnets).")] = None,
    momentum: Annotated[float, typer.Option("--momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 5e-4,
    power: Annotated[float, typer.Option("--power", help="Poly schedule power.")] = 0.9,
    head_lr_mult: Annotated[float, typer.Option("--head-lr-mult", help="Heads learn this many times faster than the backbone.")] = 10.0,
    freeze_bn: Annotated[Optional[bool], typer.Option("--freeze-bn/--train-bn", help="Batch-norm fixed (default: when ImageNet weights are loaded).")] = None,
    device: DeviceOpt = "auto",
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bf16 autocast (default: on CUDA).")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format (default: on CUDA).")] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Data-loader processes per rank.", min=0)] = 2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Iterations between checkpoints (a killed run loses at most this many).")] = 1000,
    val_every: Annotated[int, typer.Option("--val-every", help="Iterations between validations (0: at the end only).")] = 0,
    val_limit: Annotated[Optional[int], typer.Option("--val-limit", help="Validate on at most this many images.")] = None,
    log_every: Annotated[int, typer.Option("--log-every", help="Iterations per line of log.jsonl.")] = 20,
    tensorboard: Annotated[bool, typer.Option("--tensorboard/--no-tensorboard", help="Also write TensorBoard events when installed.")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the output folder.")] = False,
) -> None:
    """Retrain SAL-Net on selected proxies with the selection and attention losses (Eq. 13-14)."""
    from salcurate.errors import InputError
    from salcurate.data.store import MaskStore
    from salcurate.training.distributed import env_info
    from salcurate.training.retrain import RetrainConfig
    from salcurate.training.retrain import retrain as run

    if selection is None:
        with MaskStore(store) as st:
            have = ", ".join(st.selection_names()) or "none yet"
        raise InputError(f"pass --selection NAME (the store has: {have}; make one with `salcurate select`) "
                         "or --selection none to train on every proxy")
    sel = None if selection.lower() == "none" else selection
    config = RetrainConfig(
        store=str(store), output=str(output or Path("runs") / (sel or "all")), backbone=backbone,
        backbone_weights=backbone_weights, selection=sel, sample=sample, split=split, val_split=val_split,
        use_strong=strong, attention=attention, attention_loss=attention_loss, lam=lam, batch_size=batch_size, crop=crop,
        scale_min=scale_min, scale_max=scale_max, flip=flip, lr=lr, max_iter=max_iter, momentum=momentum,
        weight_decay=weight_decay, power=power, head_lr_mult=head_lr_mult, freeze_bn=freeze_bn, device=device, amp=amp,
        channels_last=channels_last, compile=compile_, workers=workers, seed=seed, checkpoint_every=checkpoint_every,
        val_every=val_every, val_limit=val_limit, log_every=log_every, tensorboard=tensorboard, resume=resume)
    main_rank = env_info().main
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=err, disable=not (err.is_terminal and main_rank)) as bar:
        task = None

        def on_start(s: dict[str, Any]) -> None:
            nonlocal task
            c = s["counts"]
            out.print(f"training on {c['drawable']} images of {c['split']} in split {split!r} ({c['kept']} kept, "
                      f"{c['strong']} strong), validating on {s['validation_images']}; {s['device']}, "
                      f"{s['world_size']} process(es)" + (f"; resuming at iteration {s['start']}" if s["start"] else ""))
            task = bar.add_task("retraining", total=s["max_iter"], completed=s["start"], info="")

        def on_progress(p: Any) -> None:
            m = p.logged
            info = (f"loss {m['loss']:.3f} (sel {m['loss_sel']:.3f}, atten {m['loss_atten']:.3f}) lr {p.lr:.2e}"
                    if m.get("loss") is not None else f"lr {p.lr:.2e}")
            if task is not None:
                bar.update(task, completed=p.iteration, info=info)

        def on_validation(it: int, m: dict[str, Any]) -> None:
            out.print(f"iteration {it}: validation mIoU {100 * m['val_miou']:.1f}, pixel accuracy "
                      f"{100 * m['val_pixel_accuracy']:.1f}")

        res = run(config, on_start=on_start, progress=on_progress, on_validation=on_validation)
    if main_rank:
        out.print(f"model saved to {escape(res.model)} after {res.iterations} iterations ({res.seconds:.0f} s); "
                  f"checkpoint {escape(res.checkpoint)}, log {escape(res.log)}")


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


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------
@app.command("demo")
@command
def demo(
    folder: Annotated[Path, typer.Argument(help="Where the demo dataset and its store go.")] = Path("salcurate-demo"),
    images: Annotated[int, typer.Option("--images", help="Number of demo images.", min=8)] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the demo data.")] = 0,
) -> None:
    """Make the demo dataset and run the whole pipeline on it."""
    from salcurate.demo import demo_commands
    from salcurate.data.demo_data import DemoConfig, make_demo_dataset
    from salcurate.scoring.fine import default_scorer_path

    config = DemoConfig(num_images=images, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    out.print(f"[bold]# making the demo dataset in {escape(str(folder / 'voc'))} ({images} images, seed {seed})[/bold]")
    with progress_bar("generating", images) as advance:
        make_demo_dataset(folder / "voc", config, progress=advance)
    shutil.rmtree(folder / "runs", ignore_errors=True)  # the demo's own earlier retraining runs
    for argv in demo_commands(folder, config, shipped_scorer=default_scorer_path()):
        out.print(f"\n[bold]$ salcurate {escape(shlex.join(argv))}[/bold]")
        code = app(argv, prog_name="salcurate", standalone_mode=False)
        if code:  # the step printed its own error line
            raise typer.Exit(code)
    out.print(f"\ndemo finished: the store is {escape(str(folder / 'masks.h5'))}, "
              f"the report {escape(str(folder / 'report' / 'index.html'))}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="salcurate")


if __name__ == "__main__":  # pragma: no cover
    main()
