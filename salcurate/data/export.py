"""Export curated proxy masks (VOC palette PNG) and scores for other training code.

:func:`run` is the ``export`` command: ``OUT/masks/<id>.png``, ``OUT/ids.txt``, ``OUT/export.json``
and, on request, the images, a DeepLab list file and a CSV of scores.

Export never writes or removes through a symbolic link inside OUT: every path it will write or
remove there is checked (without following links) before anything is touched, and files are
opened with ``O_NOFOLLOW``.  OUT itself may be a link to a folder: naming it is the user's choice.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import numpy as np

from salcurate.config import setting, store_setting, to_dict
from salcurate.data.store import LABEL_KINDS, MaskStore, utc_now
from salcurate.errors import InputError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.imageio import encode_label_png

log = logging.getLogger(__name__)

_IMAGE_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_USE_DIR_FD = os.open in os.supports_dir_fd and bool(_NOFOLLOW and _DIRECTORY)
#: What export writes in OUT (folders, files) and, with ``overwrite``, removes of a previous export.
_OUT_FOLDERS = ("masks", "images")
_OUT_FILES = ("ids.txt", "list.txt", "export.json")


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


def _file_name(folder: Path, sample_id: str, suffix: str) -> str:
    """``<id><suffix>`` as a file name in ``folder``, refusing an id that would land elsewhere (by
    its text alone: links are refused by :func:`_check_links`)."""
    name = f"{sample_id}{suffix}"
    if (not sample_id or sample_id in (".", "..") or os.sep in name or (os.altsep and os.altsep in name)
            or "\0" in name):
        raise InputError(f"sample id {sample_id!r} would write outside {folder}; re-import with valid ids")
    return name


def _lstat(path: Path) -> os.stat_result | None:
    """``path``'s own status (a link is not followed), None when nothing is there."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _refuse_link(path: Path) -> NoReturn:
    raise InputError(f"{path} is a symbolic link; export never writes or removes through links inside its output "
                     "folder: remove the link or choose another output folder")


def _check_entry(path: Path, *, folder: bool) -> None:
    """Nothing at ``path``, or a real folder (``folder``) or real file there; never a link."""
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        _refuse_link(path)
    if folder and not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: exists and is not a folder; remove it or choose another output folder")
    if not folder and stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a folder where export writes a file; remove it or choose another output folder")


def _is_previous_export(out: Path) -> bool:
    """``out`` holds a previous export (a real ``export.json``), whose files ``overwrite`` replaces."""
    st = _lstat(out / "export.json")
    return st is not None and stat.S_ISREG(st.st_mode)


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
    if os.path.islink(out) and not out.exists():
        raise InputError(f"{out} is a symbolic link to a missing folder; create its target or choose another output "
                         "folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise InputError(f"{out}: folder is not empty; pass overwrite to write into it or choose another folder",
                         param="overwrite")
    if config.scores_csv:
        scores = Path(config.scores_csv)
        if not scores.resolve().parent.is_dir():
            raise InputError(f"{config.scores_csv}: the folder for the scores CSV does not exist; create it first")
        if scores.is_dir():
            raise InputError(f"{config.scores_csv}: is a folder; give a file name for the scores CSV")
    return out


def _scores_inside(out: Path, scores: Path) -> bool:
    """The scores CSV lands inside the output folder (its own links are then refused as well)."""
    return scores.parent.resolve().is_relative_to(out.resolve())


def _check_links(out: Path, config: ExportConfig, names: list[str], image_names: list[str]) -> bool:
    """Refuse any link (and any folder where a file goes, or the reverse) at a path the export
    will write or remove inside ``out``, before anything is touched; whether a previous export
    is cleared first.  ``names``: the mask file names, ``image_names``: the image file names."""
    if not out.is_dir():
        return False
    clearing = _is_previous_export(out)
    folders = [d for d in _OUT_FOLDERS if d == "masks" or config.images or clearing]
    files = [f for f in _OUT_FILES if f != "list.txt" or config.images or clearing]
    for d in folders:
        _check_entry(out / d, folder=True)
    for f in files:
        _check_entry(out / f, folder=False)
    if config.scores_csv and _scores_inside(out, Path(config.scores_csv)):
        _check_entry(Path(config.scores_csv), folder=False)
    if not clearing:  # a previous export's folders are removed (links in them as links), the rest is written into
        for d, targets in (("masks", names), ("images", image_names)):
            if (out / d).is_dir():
                present = set(os.listdir(out / d))
                for name in targets:
                    if name in present:
                        _check_entry(out / d / name, folder=False)
    return clearing


def _clear_previous(out: Path) -> None:
    """Drop a previous export's files from ``out`` (other files stay); links are never followed
    (:func:`_check_links` has refused them already)."""
    for d in _OUT_FOLDERS:
        st = _lstat(out / d)
        if st is not None and stat.S_ISDIR(st.st_mode):
            shutil.rmtree(out / d)
    for name in _OUT_FILES:
        (out / name).unlink(missing_ok=True)


def _write_file(path: Path, data: bytes, *, dir_fd: int | None = None, follow: bool = False) -> None:
    """Write ``data`` to ``path`` (relative to ``dir_fd`` when given); a link there is refused, not followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if follow else _NOFOLLOW)
    try:
        fd = os.open(path.name if dir_fd is not None else path, flags, 0o666, dir_fd=dir_fd)
    except OSError as exc:
        if not follow and os.path.islink(path):
            _refuse_link(path)
        raise InputError(f"{path}: cannot write ({exc.strerror}); check the output folder") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _open_folder(path: Path) -> int:
    """A file descriptor of the real folder ``path`` (made when missing; a link is refused)."""
    try:
        path.mkdir(exist_ok=True)
        return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        if os.path.islink(path):
            _refuse_link(path)
        raise InputError(f"{path}: cannot write ({exc.strerror}); check the output folder") from None


def _image_name(store: MaskStore, i: int) -> str:
    return _file_name(Path("images"), store.ids[i], _IMAGE_SUFFIX.get(store.image_formats[i], ".img"))


def _mask_name(store: MaskStore, i: int) -> str:
    return _file_name(Path("masks"), store.ids[i], ".png")


def _write_masks(store: MaskStore, config: ExportConfig, out: Path, indices: np.ndarray, events: Events,
                 kind: str) -> list[int]:
    """Masks (and images) of ``indices`` as files, PNG encoding in a thread pool; the indices written.

    Files are opened relative to a descriptor of their (real) folder, so a link planted while the
    export runs is refused rather than followed.
    """
    mask_dir, image_dir = out / "masks", out / "images"
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        dir_fds: dict[Path, int | None] = {}
        for d in (mask_dir, image_dir) if config.images else (mask_dir,):
            if _USE_DIR_FD:
                fd = _open_folder(d)
                stack.callback(os.close, fd)
                dir_fds[d] = fd
            else:
                d.mkdir(exist_ok=True)
                dir_fds[d] = None
        return _write_files(store, config, mask_dir, image_dir, dir_fds, indices, events, kind)


def _write_files(store: MaskStore, config: ExportConfig, mask_dir: Path, image_dir: Path,
                 dir_fds: dict[Path, int | None], indices: np.ndarray, events: Events, kind: str) -> list[int]:
    exported: list[int] = []
    workers = config.workers if config.workers > 0 else (os.cpu_count() or 1)

    def write_one(i: int, labels: np.ndarray) -> None:
        _write_file(mask_dir / _mask_name(store, i), encode_label_png(labels), dir_fd=dir_fds[mask_dir])

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
                _write_file(image_dir / _image_name(store, i), store.image_bytes(i), dir_fd=dir_fds[image_dir])
            exported.append(i)
            if len(pending) >= 64:
                finish(pending)
                pending = []
        finish(pending)
    return exported


def _write_scores(store: MaskStore, path: Path, exported: list[int], *, follow: bool) -> None:
    """One row per exported sample: id, split and every score column (empty: not computed)."""
    names = store.score_names()
    columns = [store.score(n) for n in names]
    fh = io.StringIO(newline="")
    w = csv.writer(fh)
    w.writerow(["id", "split", *names])
    for i in exported:
        w.writerow([store.ids[i], store.splits[i], *(("" if np.isnan(c[i]) else f"{c[i]:.6g}") for c in columns)])
    _write_file(path, fh.getvalue().encode("utf-8"), follow=follow)


def run(config: ExportConfig, *, events: Events | None = None) -> ExportResult:
    """Write ``OUT/masks/<id>.png`` (VOC palette), ``OUT/ids.txt`` and ``OUT/export.json``.

    With ``images``: also ``OUT/images/<id>.<ext>`` (the original bytes) and a DeepLab-style
    ``OUT/list.txt`` of ``images/<id>.jpg masks/<id>.png`` pairs.  With ``scores_csv``: one row
    per exported sample with its id, split and every score column.  ``overwrite`` writes into a
    non-empty folder; a previous export's files there are replaced, other files are left alone.

    OUT may itself be a symbolic link to a folder (the user named it), but nothing inside OUT
    that export writes or removes may be a link: such a link is refused before anything changes.
    """
    events = events or NO_EVENTS
    out = _check_target(config)
    with MaskStore(config.store) as store:
        if config.kind == "proxy" or config.proxy is not None:
            config = dataclasses.replace(config, proxy=store.resolve_proxy(config.proxy))
        kind = config.proxy if config.kind == "proxy" else config.kind  # the map kind of the proxy set
        chosen = chosen_indices(store, selection=config.selection, split=config.split)
        with_mask = chosen[store.has_map(kind)[chosen]]
        mask_names = [_mask_name(store, i) for i in with_mask]
        image_names = [_image_name(store, i) for i in with_mask] if config.images else []
        if _check_links(out, config, mask_names, image_names):
            _clear_previous(out)
        events.start(len(with_mask))
        exported = _write_masks(store, config, out, with_mask, events, kind)
        _write_file(out / "ids.txt", "".join(f"{store.ids[i]}\n" for i in exported).encode("utf-8"))
        if config.images:
            lines = [f"images/{_image_name(store, i)} masks/{_mask_name(store, i)}\n" for i in exported]
            _write_file(out / "list.txt", "".join(lines).encode("utf-8"))
        scores_path = Path(config.scores_csv) if config.scores_csv else None
        if scores_path is not None:
            _write_scores(store, scores_path, exported, follow=not _scores_inside(out, scores_path))
        meta = {"config": to_dict(config), "exported": len(exported), "created": utc_now(),
                "selection_rule": store.selection_meta(config.selection).get("rule") if config.selection else None}
        _write_file(out / "export.json", json.dumps(meta, indent=2, sort_keys=True).encode("utf-8"))
    log.info("exported %d masks to %s", len(exported), out)
    return ExportResult(out=out, exported=len(exported), without_mask=int(len(chosen) - len(exported)),
                        scores_csv=scores_path)
