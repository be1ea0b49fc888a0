"""CLI commands of the data stage: import, info, export, demo."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
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
    from salcurate.data.export import ExportConfig, export_store
    from salcurate.errors import InputError

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
    from salcurate.data.demo_data import DemoConfig, make_demo_dataset
    from salcurate.demo import demo_commands
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
