"""Export curated proxy masks (VOC palette PNG) and scores for other training code."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from salcurate.data.store import LABEL_KINDS, MaskStore, utc_now
from salcurate.errors import InputError
from salcurate.imageio import encode_label_png

log = logging.getLogger(__name__)

_IMAGE_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Resolved settings of one export; saved as ``export.json`` in the output folder."""

    store: str
    out: str
    selection: str | None = None
    split: str | None = None
    kind: str = "proxy"
    images: bool = False
    scores_csv: str | None = None
    overwrite: bool = False
    workers: int = 0

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    out: Path
    exported: int
    without_mask: int
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


def export_store(config: ExportConfig, *, progress: Callable[[int], None] | None = None) -> ExportSummary:
    """Write ``OUT/masks/<id>.png`` (VOC palette), ``OUT/ids.txt`` and ``OUT/export.json``.

    With ``images``: also ``OUT/images/<id>.<ext>`` (the original bytes) and a DeepLab-style
    ``OUT/list.txt`` of ``images/<id>.jpg masks/<id>.png`` pairs.  With ``scores_csv``: one row
    per exported sample with its id, split and every score column.  ``overwrite`` writes into a
    non-empty folder; a previous export's files there are replaced, other files are left alone.
    """
    if config.kind not in LABEL_KINDS:
        raise InputError(f"unknown mask kind {config.kind!r}; expected one of {', '.join(LABEL_KINDS)}")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise InputError(f"{out}: folder is not empty; pass --overwrite to write into it or choose another folder")
    if config.scores_csv and not Path(config.scores_csv).resolve().parent.is_dir():
        raise InputError(f"{config.scores_csv}: the folder for the scores CSV does not exist; create it first")
    with MaskStore(config.store) as store:
        indices = chosen_indices(store, selection=config.selection, split=config.split)
        mask_dir = out / "masks"
        image_dir = out / "images"
        if (out / "export.json").is_file():  # replacing a previous export: drop its files first
            for d in (mask_dir, image_dir):
                if d.is_dir():
                    shutil.rmtree(d)
            for name in ("ids.txt", "list.txt", "export.json"):
                (out / name).unlink(missing_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        if config.images:
            image_dir.mkdir(exist_ok=True)
        has = store.has_map(config.kind)
        exported: list[int] = []
        workers = config.workers if config.workers > 0 else (os.cpu_count() or 1)

        def write_one(i: int, labels: np.ndarray) -> None:
            _safe_child(mask_dir, f"{store.ids[i]}.png").write_bytes(encode_label_png(labels))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = []
            for i, labels in store.iter_maps(config.kind, indices[has[indices]]):
                pending.append(pool.submit(write_one, i, labels))
                if config.images:
                    suffix = _IMAGE_SUFFIX.get(store.image_formats[i], ".img")
                    _safe_child(image_dir, f"{store.ids[i]}{suffix}").write_bytes(store.image_bytes(i))
                exported.append(i)
                if len(pending) >= 64:
                    for fut in pending:
                        fut.result()
                    if progress:
                        progress(len(pending))
                    pending = []
            for fut in pending:
                fut.result()
            if progress and pending:
                progress(len(pending))

        ids = [store.ids[i] for i in exported]
        (out / "ids.txt").write_text("".join(f"{s}\n" for s in ids), encoding="utf-8")
        if config.images:
            lines = [f"images/{store.ids[i]}{_IMAGE_SUFFIX.get(store.image_formats[i], '.img')} masks/{store.ids[i]}.png\n"
                     for i in exported]
            (out / "list.txt").write_text("".join(lines), encoding="utf-8")
        scores_path = None
        if config.scores_csv:
            scores_path = Path(config.scores_csv)
            names = store.score_names()
            columns = [store.score(n) for n in names]
            with scores_path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["id", "split", *names])
                for i in exported:
                    w.writerow([store.ids[i], store.splits[i], *(("" if np.isnan(c[i]) else f"{c[i]:.6g}") for c in columns)])
        meta = {"config": config.to_dict(), "exported": len(exported), "created": utc_now(),
                "selection_rule": store.selection_meta(config.selection).get("rule") if config.selection else None}
        (out / "export.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    log.info("exported %d masks to %s", len(exported), out)
    return ExportSummary(out=out, exported=len(exported), without_mask=int(len(indices) - len(exported)),
                         scores_csv=scores_path)
