"""CLI commands of the data stage: import voc, import folder, info, export, check, migrate, compact, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from salcurate.cli.core import RichEvents, app, config_command, import_app, out
from salcurate.data.export import ExportConfig
from salcurate.data.importing import ImportConfig, ImportResult
from salcurate.data.info import InfoConfig, InfoResult
from salcurate.data.maintenance import CheckConfig, CheckResult, CompactConfig, MigrateConfig

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


# --------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------
def _import(config: ImportConfig) -> None:
    from salcurate.data.importing import run

    with RichEvents(f"importing {Path(config.root).name}") as events:
        res = run(config, events=events)
    _print_import(res)


def _print_import(res: ImportResult) -> None:
    table = Table(title=f"{escape(str(res.output))}: {res.num_imported} samples imported "
                        f"({res.num_total} in the store) in {res.seconds:.1f} s")
    for col in ("split", "samples"):
        table.add_column(col)
    for split, n in sorted(res.per_split.items()):
        table.add_row(escape(split), str(n))
    out.print(table)
    out.print(f"proxy masks {res.with_proxy}, ground truth {res.with_gt}, saliency {res.with_saliency}, "
              f"tags {res.with_tags}, strong {res.strong}"
              + (f"; {res.skipped} images without a proxy annotation left out" if res.skipped else ""))


@config_command(import_app, "voc", ImportConfig, fixed={"layout": "voc"},
                helps={"root": "VOC root (JPEGImages/, ImageSets/Segmentation/, SegmentationClass[Aug]/)."})
def import_voc(config: ImportConfig) -> None:
    """Import a PASCAL VOC style dataset with its proxy annotations."""
    _import(config)


@config_command(import_app, "folder", ImportConfig, fixed={"layout": "folder"}, flags={"pseudo_dir": "--masks"},
                helps={"root": "Folder with images/, masks/ and optional gt/, saliency/, splits/, tags.csv, "
                               "classes.txt.",
                       "pseudo_dir": "Proxy annotations (default ROOT/masks)."})
def import_folder(config: ImportConfig) -> None:
    """Import a plain folder layout (see docs/store-format.md)."""
    _import(config)


# --------------------------------------------------------------------------------------
# info / export
# --------------------------------------------------------------------------------------
@config_command(app, "info", InfoConfig)
def info(config: InfoConfig, as_json: JsonOpt = False) -> None:
    """Show what a store holds: splits, classes, scores, selections, log."""
    from salcurate.data.info import run

    res = run(config)
    if as_json:
        out.print_json(json.dumps(res.to_dict()))
        return
    _print_info(res)


def _print_info(res: InfoResult) -> None:
    out.print(f"[bold]{escape(res.path)}[/bold]: {res.num_samples} samples, {res.num_classes} classes, "
              f"schema v{res.schema_version} (salcurate {res.salcurate_version})")
    out.print("splits: " + ", ".join(f"{escape(k)} {v}" for k, v in res.splits.items())
              + " | maps: " + ", ".join(f"{k} {v}" for k, v in res.maps.items())
              + f" | tags {res.with_tags} | strong {res.strong}")
    t = Table(title="classes")
    for col in ("#", "name", "proxy images", "proxy pixels", "gt images", "tagged images"):
        t.add_column(col, justify="right" if col != "name" else "left")
    for row in res.classes:
        t.add_row(str(row["index"]), escape(row["name"]), str(row["proxy_images"]), f"{row['proxy_pixels']:,}",
                  str(row["gt_images"]), "" if row["tagged_images"] is None else str(row["tagged_images"]))
    out.print(t)
    if res.proxies:
        t = Table(title="proxy sets (--proxy NAME)")
        for col in ("name", "samples", "made by", "created"):
            t.add_column(col)
        for name, p in res.proxies.items():
            t.add_row(escape(name), str(p["samples"]), escape(str(p["command"])), escape(str(p["created"] or "")))
        out.print(t)
    if res.scores:
        t = Table(title="score columns")
        for col in ("name", "computed", "mean", "min", "max"):
            t.add_column(col)
        for name, s in res.scores.items():
            t.add_row(escape(name), str(s["computed"]),
                      *("-" if s[k] is None else f"{s[k]:.3f}" for k in ("mean", "min", "max")))
        out.print(t)
    if res.selections:
        t = Table(title="selections")
        for col in ("name", "kept", "rule"):
            t.add_column(col)
        for name, s in res.selections.items():
            t.add_row(escape(name), f"{s['kept']}/{s['total']}", escape(json.dumps(s["rule"], sort_keys=True)))
        out.print(t)
    t = Table(title="run log")
    for col in ("finished", "command", "seconds"):
        t.add_column(col)
    for e in res.log:
        t.add_row(e["finished"], e["command"], f"{e['duration_s']:.1f}")
    out.print(t)


@config_command(app, "export", ExportConfig)
def export(config: ExportConfig) -> None:
    """Export masks as VOC palette PNGs, a list file and scores."""
    from salcurate.data.export import run

    with RichEvents("exporting") as events:
        res = run(config, events=events)
    out.print(f"exported {res.exported} masks to {escape(str(res.out))}"
              + (f" ({res.without_mask} samples without a {config.kind} mask skipped)" if res.without_mask else "")
              + (f"; scores in {escape(str(res.scores_csv))}" if res.scores_csv else ""))


# --------------------------------------------------------------------------------------
# check / migrate / compact
# --------------------------------------------------------------------------------------
@config_command(app, "check", CheckConfig)
def check(config: CheckConfig, as_json: JsonOpt = False) -> None:
    """Verify a store: read every byte against its checksums and name the damaged samples."""
    from salcurate.data.maintenance import run_check

    with RichEvents("checking") as events:
        res = run_check(config, events=events)
    if as_json:
        out.print_json(json.dumps({**res.to_dict(), "ok": res.ok}))
    else:
        _print_check(res, config.limit)
    if not res.ok:
        raise typer.Exit(1)


def _print_check(res: CheckResult, limit: int) -> None:
    if res.ok:
        sums = "checksums verified" if res.checksums else "no checksums in a v1 store: run `salcurate migrate`"
        out.print(f"{escape(res.path)}: ok, {res.num_samples} samples in {len(res.files)} files ({sums})")
        return
    ids = res.damaged_ids
    out.print(f"[bold red]{escape(res.path)}: damaged[/bold red]: {len(ids)} samples, "
              f"{len(res.store_damage)} problems with the store itself")
    for what in res.store_damage:
        out.print(f"  store: {escape(what)}")
    for d in res.damaged_samples[:limit]:
        out.print(f"  sample {escape(str(d['id']))} (index {d['index']}): {escape(str(d['what']))}")
    if len(res.damaged_samples) > limit:
        out.print(f"  ... {len(res.damaged_samples) - limit} more (all with --json)")
    out.print("Restore the store from a copy, or re-import the damaged samples' dataset.")


@config_command(app, "migrate", MigrateConfig)
def migrate(config: MigrateConfig) -> None:
    """Rewrite a schema v1 store in the current layout (every write does this too)."""
    from salcurate.data.maintenance import run_migrate

    res = run_migrate(config)
    if res.migrated:
        out.print(f"{escape(res.path)}: migrated to schema v{res.schema_version}; the v1 file is kept as "
                  f"{escape(str(res.backup))} (delete it when you no longer need it)")
    else:
        out.print(f"{escape(res.path)}: schema v{res.schema_version} already, nothing to do")


@config_command(app, "compact", CompactConfig)
def compact(config: CompactConfig) -> None:
    """Gather score columns and selections into one part file and delete unused part files."""
    from salcurate.data.maintenance import run_compact

    res = run_compact(config)
    out.print(f"{escape(res.path)}: {res.bytes_before / 2**20:.1f} MiB -> {res.bytes_after / 2**20:.1f} MiB "
              f"in {res.files} files")


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------
