"""Export curated proxy masks (VOC palette PNG) and scores for other training code.

:func:`run` is the ``export`` command: ``OUT/masks/<id>.png``, ``OUT/ids.txt``, ``OUT/export.json``
and, on request, the images, a DeepLab list file and a CSV of scores.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from salcurate.config import setting, store_setting, to_dict
from salcurate.data.store import LABEL_KINDS, MaskStore, utc_now
from salcurate.errors import InputError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.imageio import encode_label_png

log = logging.getLogger(__name__)

_IMAGE_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Settings of one export; saved as ``export.json`` in the output folder.

    ``kind`` is one of the store's label kinds (``proxy`` or ``gt``); with ``proxy``, ``proxy``
    says which proxy set.
    """

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    out: str = setting(help="The output folder.", argument=True, metavar="OUT")
    selection: str | None = setting(None, "Export only the samples this selection keeps.")
    split: str | None = setting(None, "Export only this split.")
    kind: str = setting("proxy", "Which masks: proxy or gt.")
    images: bool = setting(False, "Also copy the original images and write a DeepLab list.txt.")
    scores_csv: str | None = setting(None, "Write id, split and every score column to this CSV.", flag="--scores",
                                     metavar="PATH")
    overwrite: bool = setting(False, "Replace an existing output.")
    workers: int = setting(0, "PNG encoding threads (0 = all cores).", min=0, cli=False)


@dataclasses.dataclass(frozen=True)
class ExportResult(Result):
    """What an export wrote."""

    out: Path
    exported: int
    without_mask: int  # chosen samples without a mask of the kind, left out
    scores_csv: Path | None


def _safe_child(folder: Path, name: str) -> Path:
    """``folder / name``, refusing any name that would land outside ``folder``."""
    path = folder / name
    if path.resolve().parent != folder.resolve() or os.sep in name or (os.altsep and os.altsep in name):
        raise InputError(f"sample id {name!r} would write outside {folder}; re-import with valid ids")
    return path


def chosen_indices(store: MaskStore, *, selection: str | None, split: str | None) -> np.ndarray:
    """Sample indices kept by a selection (weight > 0) and split: ``(K,)`` int64, sorted."""
    keep = np.ones(len(store), dtype=bool)
    if selection is not None:
        keep &= store.selection(selection) > 0
    if split is not None:
        if split not in store.split_names():
            raise InputError(f"{store.path}: no split {split!r}; the store has {', '.join(store.split_names())}")
        keep &= store.splits == split
    return np.flatnonzero(keep)


def _check_target(config: ExportConfig) -> Path:
    if config.kind not in LABEL_KINDS:
        raise InputError(f"unknown mask kind {config.kind!r}; expected one of {', '.join(LABEL_KINDS)}")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise InputError(f"{out}: folder is not empty; pass overwrite to write into it or choose another folder",
                         param="overwrite")
    if config.scores_csv and not Path(config.scores_csv).resolve().parent.is_dir():
        raise InputError(f"{config.scores_csv}: the folder for the scores CSV does not exist; create it first")
    return out


def _clear_previous(out: Path) -> None:
    """Drop a previous export's files from ``out`` (other files stay)."""
    if (out / "export.json").is_file():
        for d in (out / "masks", out / "images"):
            if d.is_dir():
                shutil.rmtree(d)
        for name in ("ids.txt", "list.txt", "export.json"):
            (out / name).unlink(missing_ok=True)


def _image_name(store: MaskStore, i: int) -> str:
    return f"{store.ids[i]}{_IMAGE_SUFFIX.get(store.image_formats[i], '.img')}"


def _write_masks(store: MaskStore, config: ExportConfig, out: Path, indices: np.ndarray, events: Events,
                 kind: str) -> list[int]:
    """Masks (and images) of ``indices`` as files, PNG encoding in a thread pool; the indices written."""
    mask_dir, image_dir = out / "masks", out / "images"
    mask_dir.mkdir(parents=True, exist_ok=True)
    if config.images:
        image_dir.mkdir(exist_ok=True)
    exported: list[int] = []
    workers = config.workers if config.workers > 0 else (os.cpu_count() or 1)

    def write_one(i: int, labels: np.ndarray) -> None:
        _safe_child(mask_dir, f"{store.ids[i]}.png").write_bytes(encode_label_png(labels))

    def finish(pending: list) -> None:
        for fut in pending:
            fut.result()
        if pending:
            events.advance(len(pending))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        for i, labels in store.iter_maps(kind, indices):
            pending.append(pool.submit(write_one, i, labels))
            if config.images:
                _safe_child(image_dir, _image_name(store, i)).write_bytes(store.image_bytes(i))
            exported.append(i)
            if len(pending) >= 64:
                finish(pending)
                pending = []
        finish(pending)
    return exported


def _write_scores(store: MaskStore, path: Path, exported: list[int]) -> None:
    """One row per exported sample: id, split and every score column (empty: not computed)."""
    names = store.score_names()
    columns = [store.score(n) for n in names]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "split", *names])
        for i in exported:
            w.writerow([store.ids[i], store.splits[i], *(("" if np.isnan(c[i]) else f"{c[i]:.6g}") for c in columns)])


def run(config: ExportConfig, *, events: Events | None = None) -> ExportResult:
    """Write ``OUT/masks/<id>.png`` (VOC palette), ``OUT/ids.txt`` and ``OUT/export.json``.

    With ``images``: also ``OUT/images/<id>.<ext>`` (the original bytes) and a DeepLab-style
    ``OUT/list.txt`` of ``images/<id>.jpg masks/<id>.png`` pairs.  With ``scores_csv``: one row
    per exported sample with its id, split and every score column.  ``overwrite`` writes into a
    non-empty folder; a previous export's files there are replaced, other files are left alone.
    """
    events = events or NO_EVENTS
    out = _check_target(config)
    with MaskStore(config.store) as store:
        if config.kind == "proxy" or config.proxy is not None:
            config = dataclasses.replace(config, proxy=store.resolve_proxy(config.proxy))
        kind = config.proxy if config.kind == "proxy" else config.kind  # the map kind of the proxy set
        chosen = chosen_indices(store, selection=config.selection, split=config.split)
        with_mask = chosen[store.has_map(kind)[chosen]]
        _clear_previous(out)
        events.start(len(with_mask))
        exported = _write_masks(store, config, out, with_mask, events, kind)
        (out / "ids.txt").write_text("".join(f"{store.ids[i]}\n" for i in exported), encoding="utf-8")
        if config.images:
            lines = [f"images/{_image_name(store, i)} masks/{store.ids[i]}.png\n" for i in exported]
            (out / "list.txt").write_text("".join(lines), encoding="utf-8")
        scores_path = Path(config.scores_csv) if config.scores_csv else None
        if scores_path is not None:
            _write_scores(store, scores_path, exported)
        meta = {"config": to_dict(config), "exported": len(exported), "created": utc_now(),
                "selection_rule": store.selection_meta(config.selection).get("rule") if config.selection else None}
        (out / "export.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    log.info("exported %d masks to %s", len(exported), out)
    return ExportResult(out=out, exported=len(exported), without_mask=int(len(chosen) - len(exported)),
                        scores_csv=scores_path)
