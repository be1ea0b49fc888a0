"""Importing datasets into a mask store: PASCAL VOC layout and a plain folder layout.

Planning (which ids, which files, tags, class names) checks everything that can be checked
without decoding; loading decodes each sample (in a thread pool: PIL and zlib release the
GIL) and checks sizes and label values; the store writer appends in batches.  Any bad input
stops the import with a one-line :class:`~salcurate.errors.InputError` naming the file, and the
destination store is left as it was (the new file is only renamed into place when complete).
:func:`run` is the ``import voc`` / ``import folder`` command.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from salcurate.config import DEFAULT_STORE, Choice, setting, to_dict
from salcurate.data import store as store_mod
from salcurate.data.store import SampleRecord
from salcurate.errors import InputError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.imageio import (
    DEFAULT_MAX_PIXELS,
    IGNORE_LABEL,
    VOC_CLASS_NAMES,
    grey_png_bytes,
    probe_image,
    read_grey_png,
    read_label_png,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: Samples handed to the store writer at a time.
WRITE_BATCH = 64


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------
class ImportLayout(Choice):
    """``voc``: ``JPEGImages/``, ``ImageSets/Segmentation/<split>.txt``, ``SegmentationClass[Aug]/``;
    ``folder``: ``images/``, ``masks/``, ``gt/``, ``saliency/``, ``splits/<split>.txt``, ``tags.csv``,
    ``classes.txt``."""

    voc = "voc"
    folder = "folder"


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Settings of one import (``salcurate import voc|folder``); saved in the store's run log."""

    layout: ImportLayout = setting(help="Dataset layout: voc or folder.")
    root: str = setting(help="The dataset's root folder.", argument=True, metavar="ROOT")
    output: str = setting(DEFAULT_STORE, "The store to write.", short="-o", metavar="PATH")
    splits: tuple[str, ...] = setting((), "Split list(s) to import (repeatable); default all images.", flag="--split",
                                      multiple=True)
    pseudo_dir: str | None = setting(None, "Proxy annotations: PNG label maps, palette or grey.", flag="--pseudo",
                                     metavar="PATH")
    gt_dir: str | None = setting(None, "Ground-truth label maps (PNG).", flag="--gt", metavar="PATH")
    saliency_dir: str | None = setting(None, "8-bit PNG saliency maps.", flag="--saliency", metavar="PATH")
    tags_file: str | None = setting(None, "CSV `id,tags`, tags as space-separated class indices or names.",
                                    flag="--tags", metavar="PATH")
    tags_dir: str | None = setting(None, "One <id>.txt per image, one class index per line.", metavar="PATH")
    tags_from_gt: bool = setting(False, "Take the image tags from the ground truth.")
    class_names_file: str | None = setting(
        None, "Class names, one per line, background first (default: the 21 VOC names).", flag="--class-names",
        metavar="PATH")
    strong_file: str | None = setting(None, "File of ids whose ground truth is trusted (semi-supervised).",
                                      flag="--strong", metavar="PATH")
    append: bool = setting(False, "Add these samples to an existing store.")
    overwrite: bool = setting(False, "Replace an existing output.")
    workers: int = setting(0, "Decoding threads (0 = all cores).", min=0)
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "Refuse images and maps larger than this many pixels (width x "
                              "height, read from the file's header before decoding; 0 = no limit).", min=0)


@dataclasses.dataclass(frozen=True)
class PlannedSample:
    id: str
    split: str
    image: Path
    proxy: Path | None
    gt: Path | None
    saliency: Path | None
    tags: tuple[int, ...] | None  # foreground class indices 1..C, None = from GT or unknown
    strong: bool


@dataclasses.dataclass(frozen=True)
class ImportPlan:
    samples: tuple[PlannedSample, ...]
    class_names: tuple[str, ...]
    tags_from_gt: bool
    skipped: int  # images found but left out (no proxy annotation), default-split mode only
    resolved: dict[str, object]  # where each kind of file was found, for the run log
    max_pixels: int = DEFAULT_MAX_PIXELS  # the largest image or map loaded (0: no limit)


@dataclasses.dataclass(frozen=True)
class ImportResult(Result):
    """What an import wrote: counts per split and per kind of input."""

    output: Path
    num_imported: int
    num_total: int
    per_split: dict[str, int]
    with_proxy: int
    with_gt: int
    with_saliency: int
    with_tags: int
    strong: int
    skipped: int
    seconds: float


# --------------------------------------------------------------------------------------
# Small parsers (pure)
# --------------------------------------------------------------------------------------
def check_sample_id(sample_id: str, where: str) -> str:
    """Ids become file names on export: no separators, no '..', no control characters."""
    if (not sample_id or "/" in sample_id or "\\" in sample_id or sample_id == "."
            or ".." in sample_id or not sample_id.isprintable() or sample_id != sample_id.strip()):
        raise InputError(
            f"{where}: invalid sample id {sample_id!r}; ids become file names, so they must not be "
            "empty or contain '/', '\\', '..', spaces at the ends or control characters"
        )
    return sample_id


def read_id_list(path: Path) -> list[str]:
    """One id per line (VOC split files; blank lines skipped, first column only)."""
    if not path.is_file():
        raise InputError(f"{path}: list file not found; check the split name or the folder")
    ids = []
    for lineno, line in enumerate(_read_text(path, "list file").splitlines(), 1):
        line = line.strip()
        if line:
            ids.append(check_sample_id(line.split()[0], f"{path}:{lineno}"))
    return ids


def read_class_names(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise InputError(f"{path}: class names file not found; give one name per line, background first")
    names = tuple(n.strip() for n in _read_text(path, "class names file").splitlines() if n.strip())
    if len(names) < 2:
        raise InputError(f"{path}: expected background plus at least one class name, got {len(names)} names")
    if len(set(names)) != len(names):
        raise InputError(f"{path}: class names must be unique; remove the duplicates")
    if len(names) > 255:
        raise InputError(f"{path}: at most 255 classes fit 8-bit label maps (255 = ignore), got {len(names)}")
    return names


def parse_tag_tokens(tokens: Sequence[str], class_names: Sequence[str], where: str) -> tuple[int, ...]:
    """Tag tokens (foreground class indices 1..C or class names) to sorted class indices."""
    C = len(class_names) - 1
    by_name = {n: i for i, n in enumerate(class_names)}
    out = set()
    for tok in tokens:
        if tok.lstrip("-").isdigit():
            k = int(tok)
            if not 1 <= k <= C:
                raise InputError(f"{where}: tag index {k} is out of range; foreground classes are 1..{C}")
        elif tok in by_name and by_name[tok] != 0:
            k = by_name[tok]
        else:
            raise InputError(
                f"{where}: unknown class name {tok!r} in tags; use a foreground class index 1..{C} "
                f"or one of the class names ({', '.join(class_names[1:6])}, ...)"
            )
        out.add(k)
    return tuple(sorted(out))


def read_tags_csv(path: Path, class_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """CSV ``id,tags``: tags space-separated class indices or names; a header line is optional."""
    if not path.is_file():
        raise InputError(f"{path}: tags file not found; give a CSV with lines `id,tags`")
    tags: dict[str, tuple[int, ...]] = {}
    text = _read_text(path, "tags file")
    for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
        if not row or not "".join(row).strip():
            continue
        if lineno == 1 and row[0].strip().lower() == "id":
            continue
        where = f"{path}:{lineno}"
        if len(row) < 2:
            raise InputError(f"{where}: expected `id,tags`, got {','.join(row)!r}")
        sample_id = check_sample_id(row[0].strip(), where)
        if sample_id in tags:
            raise InputError(f"{where}: duplicate id {sample_id!r} in the tags file; keep one line per image")
        tags[sample_id] = parse_tag_tokens(row[1].split(), class_names, where)
    return tags


def read_tags_dir(folder: Path, ids: Sequence[str], class_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """One ``<id>.txt`` per image with one class index per line."""
    _require_dir(folder, "tags folder")
    out = {}
    for sample_id in ids:
        path = folder / f"{sample_id}.txt"
        if not path.is_file():
            raise InputError(f"{path}: tags file for {sample_id!r} not found; write one class index per line")
        out[sample_id] = parse_tag_tokens(_read_text(path, "tags file").split(), class_names, str(path))
    return out


def tags_from_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Image tags from a label map: ``(H, W)`` uint8 → ``(C,)`` bool, class k at position k-1."""
    counts = np.bincount(labels.ravel(), minlength=256)
    return counts[1 : num_classes + 1] > 0


def _read_text(path: Path, what: str) -> str:
    """A text file as UTF-8 (a leading byte-order mark, as Excel writes, is dropped)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: expected a UTF-8 {what}, but byte {exc.start} is not UTF-8; "
                         "save the file as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc}); check the file") from None


def _require_dir(path: Path, what: str, param: str | None = None) -> Path:
    if not path.is_dir():
        raise InputError(f"{path}: {what} not found; check the path", param=param)
    return path


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------
def _index_images(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    with os.scandir(folder) as it:
        for entry in it:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                if stem in found:
                    raise InputError(f"{folder}: two images share the id {stem!r} ({found[stem].name}, {entry.name}); "
                                     "keep one")
                found[stem] = Path(entry.path)
    return found


@dataclasses.dataclass(frozen=True)
class _Folders:
    """Where an import finds each kind of file (None: not given and not found by default)."""

    root: Path
    images: Path
    splits: Path
    proxy: Path | None
    gt: Path | None
    saliency: Path | None
    class_names: Path | None


def _layout(config: ImportConfig) -> ImportLayout:
    try:
        return ImportLayout(config.layout)
    except ValueError:
        raise InputError(f"unknown layout {config.layout!r}; expected voc or folder", param="layout") from None


def _given(path: str | None) -> Path | None:
    return Path(path) if path else None


def _default(path: Path, *, file: bool = False) -> Path | None:
    return path if (path.is_file() if file else path.is_dir()) else None


def _resolve_folders(config: ImportConfig) -> _Folders:
    """The folders of the layout, the given ones first; checks that each one exists."""
    root = _require_dir(Path(config.root), "dataset root folder")
    if _layout(config) == ImportLayout.voc:
        images, splits = root / "JPEGImages", root / "ImageSets" / "Segmentation"
        default_gt = _default(root / "SegmentationClassAug") or _default(root / "SegmentationClass")
        proxy, class_names, saliency = _given(config.pseudo_dir), _given(config.class_names_file), None
    else:
        images, splits = root / "images", root / "splits"
        default_gt = _default(root / "gt")
        proxy = _given(config.pseudo_dir) or _default(root / "masks")
        class_names = _given(config.class_names_file) or _default(root / "classes.txt", file=True)
        saliency = _default(root / "saliency")
    _require_dir(images, "image folder")
    folders = _Folders(root, images, splits, proxy, _given(config.gt_dir) or default_gt,
                       _given(config.saliency_dir) or saliency, class_names)
    for d, what, param in ((folders.proxy, "proxy annotation folder", "pseudo_dir"),
                           (folders.gt, "ground-truth folder", "gt_dir"),
                           (folders.saliency, "saliency folder", "saliency_dir")):
        if d is not None:
            _require_dir(d, f"{what} ({param})", param)
    return folders


def _ids_from_splits(splits: Sequence[str], folders: _Folders, images: dict[str, Path]) -> list[tuple[str, str]]:
    """``(id, split)`` of the split lists, in list order; every id once and with an image."""
    seen: dict[str, str] = {}
    out = []
    for split in splits:
        list_file = folders.splits / f"{split}.txt"
        ids = read_id_list(list_file)
        if not ids:
            raise InputError(f"{list_file}: split {split!r} is empty; list at least one id")
        for sample_id in ids:
            if sample_id in seen:
                raise InputError(f"{list_file}: duplicate id {sample_id!r} (already in split {seen[sample_id]!r}); "
                                 "each image may be imported once")
            if sample_id not in images:
                raise InputError(f"{list_file}: id {sample_id!r} has no image in {folders.images}; "
                                 "fix the list or add the image")
            seen[sample_id] = split
            out.append((sample_id, split))
    return out


def _ids_from_images(folders: _Folders, images: dict[str, Path]) -> tuple[list[tuple[str, str]], int]:
    """Every image with a proxy annotation, in split ``all``, and the number left out."""
    out, skipped = [], 0
    for sample_id in sorted(images):
        check_sample_id(sample_id, str(images[sample_id]))
        if folders.proxy is not None and not (folders.proxy / f"{sample_id}.png").is_file():
            skipped += 1
            continue
        out.append((sample_id, "all"))
    if not out:
        where = f"{folders.images} with a proxy in {folders.proxy}" if folders.proxy else str(folders.images)
        raise InputError(f"{where}: no images found; check the folders")
    return out, skipped


def _read_tags(config: ImportConfig, folders: _Folders, ids: Sequence[str],
               class_names: Sequence[str]) -> tuple[dict[str, tuple[int, ...]] | None, str | None]:
    """The image tags of one tag source (or none) and where they came from."""
    sources = [s for s in (config.tags_file, config.tags_dir, config.tags_from_gt or None) if s]
    if len(sources) > 1:
        raise InputError("give one tag source: tags_file, tags_dir or tags_from_gt",
                         param=("tags_file", "tags_dir", "tags_from_gt"))
    if config.tags_from_gt and folders.gt is None:
        raise InputError("tags_from_gt needs ground truth; give gt_dir", param=("tags_from_gt", "gt_dir"))
    if config.tags_from_gt:
        return None, "gt"
    if config.tags_dir:
        tags = read_tags_dir(Path(config.tags_dir), ids, class_names)
        _warn_if_no_tags(tags, ids, config.tags_dir, len(class_names) - 1, folder=True)
        return tags, config.tags_dir
    default = folders.root / "tags.csv"
    path = config.tags_file or (str(default) if _layout(config) == ImportLayout.folder and default.is_file() else None)
    if path is None:
        return None, None
    tags = read_tags_csv(Path(path), class_names)
    _warn_if_no_tags(tags, ids, path, len(class_names) - 1, folder=False)
    return tags, path


def _warn_if_no_tags(tags: dict[str, tuple[int, ...]], ids: Sequence[str], source: str, num_classes: int, *,
                     folder: bool) -> None:
    """Log a warning when a tag source gives no tag to any imported sample (an empty file, other ids)."""
    if any(tags.get(sample_id) for sample_id in ids):
        return
    if folder:
        log.warning("%s: no imported sample got tags (every <id>.txt is empty); expected one foreground class "
                    "index 1..%d per line", source, num_classes)
        return
    matched = sum(sample_id in tags for sample_id in ids)
    log.warning("%s: no imported sample got tags (%d rows, %d for imported ids, none with a tag); expected lines "
                "`id,tags` with the tags as space-separated class indices 1..%d or class names", source, len(tags),
                matched, num_classes)


def _read_strong(config: ImportConfig, folders: _Folders, ids: Sequence[str]) -> set[str]:
    """Ids whose ground truth is trusted; each must be imported and have a ground-truth folder."""
    if not config.strong_file:
        return set()
    strong = set(read_id_list(Path(config.strong_file)))
    unknown = sorted(strong - set(ids))
    if unknown:
        raise InputError(f"{config.strong_file}: id {unknown[0]!r} is not among the imported samples; fix the list")
    if folders.gt is None:
        raise InputError(f"{config.strong_file}: strong samples need ground truth; give gt_dir", param="gt_dir")
    return strong


def _plan_sample(sample_id: str, split: str, image: Path, folders: _Folders, *, tags: tuple[int, ...] | None,
                 strong: bool, tags_from_gt: bool) -> PlannedSample:
    """One sample's files; a proxy named by the split lists must exist, and so must the ground
    truth of a strong sample or one whose tags come from it."""
    proxy = None
    if folders.proxy is not None:
        proxy = folders.proxy / f"{sample_id}.png"
        if not proxy.is_file():
            raise InputError(f"{proxy}: proxy annotation for {sample_id!r} not found; add it or remove the id from "
                             "the split")
    gt = _default(folders.gt / f"{sample_id}.png", file=True) if folders.gt is not None else None
    if strong and gt is None:
        raise InputError(f"{folders.gt}/{sample_id}.png: strong sample {sample_id!r} has no ground truth; add it or "
                         "drop it from strong_file", param="strong_file")
    if tags_from_gt and gt is None:
        raise InputError(f"{folders.gt}/{sample_id}.png: tags_from_gt needs ground truth for {sample_id!r}; add it "
                         "or give tags another way", param="tags_from_gt")
    sal = _default(folders.saliency / f"{sample_id}.png", file=True) if folders.saliency is not None else None
    return PlannedSample(sample_id, split, image, proxy, gt, sal, tags, strong)


def plan_import(config: ImportConfig) -> ImportPlan:
    """Resolve which samples to import and where each file is; checks all but pixel content."""
    folders = _resolve_folders(config)
    class_names = read_class_names(folders.class_names) if folders.class_names else VOC_CLASS_NAMES
    images = _index_images(folders.images)
    if config.splits:
        ids_with_split, skipped = _ids_from_splits(config.splits, folders, images), 0
    else:
        ids_with_split, skipped = _ids_from_images(folders, images)
    ids = [i for i, _ in ids_with_split]
    tags, tags_source = _read_tags(config, folders, ids, class_names)
    strong = _read_strong(config, folders, ids)
    samples = tuple(_plan_sample(sample_id, split, images[sample_id], folders, strong=sample_id in strong,
                                 tags=None if tags is None else tags.get(sample_id), tags_from_gt=config.tags_from_gt)
                    for sample_id, split in ids_with_split)
    resolved = {"images": str(folders.images), "proxy": _s(folders.proxy), "gt": _s(folders.gt),
                "saliency": _s(folders.saliency), "tags": tags_source, "class_names": list(class_names)}
    return ImportPlan(samples, tuple(class_names), config.tags_from_gt, skipped, resolved,
                      max_pixels=config.max_pixels)


# --------------------------------------------------------------------------------------
# Loading one sample (runs in worker threads)
# --------------------------------------------------------------------------------------
def _check_labels(labels: np.ndarray, path: Path, num_classes: int, hw: tuple[int, int]) -> np.ndarray:
    if labels.shape != hw:
        raise InputError(
            f"{path}: mask is {labels.shape[1]}x{labels.shape[0]} but its image is {hw[1]}x{hw[0]} (WxH); "
            "resize the mask to its image"
        )
    counts = np.bincount(labels.ravel(), minlength=256)
    bad = np.flatnonzero(counts[num_classes + 1 : IGNORE_LABEL])
    if bad.size:
        raise InputError(
            f"{path}: label value {int(bad[0]) + num_classes + 1} is above the {num_classes} classes and not "
            "255 (ignore); fix the mask or give the right class_names_file", param="class_names_file"
        )
    return labels


def load_sample(p: PlannedSample, class_names: Sequence[str], tags_from_gt: bool, *,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> SampleRecord:
    """Read, decode and check one planned sample; files above ``max_pixels`` (0: no limit) are
    refused from their header, before decoding."""
    C = len(class_names) - 1
    try:
        data = p.image.read_bytes()
    except OSError as exc:
        raise InputError(f"{p.image}: cannot read the image ({exc}); check the file") from None
    h, w, fmt = probe_image(data, str(p.image), max_pixels=max_pixels)
    proxy = gt = sal = None
    if p.proxy is not None:
        proxy = _check_labels(read_label_png(p.proxy, max_pixels=max_pixels), p.proxy, C, (h, w))
    if p.gt is not None:
        gt = _check_labels(read_label_png(p.gt, max_pixels=max_pixels), p.gt, C, (h, w))
    sal_png = None
    if p.saliency is not None:
        try:
            sal_bytes = p.saliency.read_bytes()
        except OSError as exc:
            raise InputError(f"{p.saliency}: cannot read the saliency map ({exc}); check the file") from None
        sal = read_grey_png(sal_bytes, name=str(p.saliency), max_pixels=max_pixels)
        if sal.shape != (h, w):
            raise InputError(f"{p.saliency}: saliency map is {sal.shape[1]}x{sal.shape[0]} but its image is {w}x{h}; "
                             "resize it to its image")
        sal_png = grey_png_bytes(sal_bytes, sal)
    tags = None
    if tags_from_gt and gt is not None:
        tags = tags_from_labels(gt, C)
    elif p.tags is not None:
        tags = np.zeros(C, dtype=bool)
        tags[np.asarray(p.tags, dtype=np.int64) - 1] = True
    return SampleRecord(id=p.id, split=p.split, image_bytes=data, image_format=fmt, height=h, width=w,
                        proxy=proxy, gt=gt, saliency=sal, tags=tags, strong=p.strong, saliency_png=sal_png)


def iter_loaded(plan: ImportPlan, *, workers: int) -> Iterator[SampleRecord]:
    """Load samples in order with a bounded look-ahead over a thread pool."""
    samples = plan.samples
    if workers <= 1:
        for p in samples:
            yield load_sample(p, plan.class_names, plan.tags_from_gt, max_pixels=plan.max_pixels)
        return
    window = 4 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="salcurate-import") as pool:
        futures = []
        it = iter(samples)
        for p in it:
            futures.append(pool.submit(load_sample, p, plan.class_names, plan.tags_from_gt, max_pixels=plan.max_pixels))
            if len(futures) >= window:
                break
        head = 0
        while head < len(futures):
            record = futures[head].result()
            futures[head] = None  # type: ignore[call-overload]
            head += 1
            nxt = next(it, None)
            if nxt is not None:
                futures.append(pool.submit(load_sample, nxt, plan.class_names, plan.tags_from_gt,
                                           max_pixels=plan.max_pixels))
            yield record


# --------------------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------------------
def _check_output(config: ImportConfig) -> Path:
    output = Path(config.output)
    if output.is_dir():
        raise InputError(f"{output}: expected a store file path, got a folder; give a file name such as "
                         f"{output / 'masks.h5'}")
    if not config.append and output.exists() and not config.overwrite:
        raise InputError(f"{output}: exists already; pass overwrite to replace it or append to add samples",
                         param=("overwrite", "append"))
    return output


def _check_append(output: Path, plan: ImportPlan) -> None:
    """The store to append to has this import's classes and none of its ids."""
    with store_mod.MaskStore(output) as existing:
        if existing.class_names != plan.class_names:
            raise InputError(
                f"{output}: the store's classes ({len(existing.class_names)}: {', '.join(existing.class_names[:4])}, "
                f"...) differ from this import's ({len(plan.class_names)}); give the same class_names_file",
                param="class_names_file")
        clash = set(existing.ids) & {p.id for p in plan.samples}
        if clash:
            raise InputError(f"{output}: id {sorted(clash)[0]!r} is already in the store; "
                             "duplicate ids are not allowed")


class _Counter:
    """Counts what an import writes, per split and per kind of input."""

    def __init__(self) -> None:
        self.per_split: dict[str, int] = {}
        self.kinds = dict(proxy=0, gt=0, saliency=0, tags=0, strong=0)

    def add(self, record: SampleRecord) -> None:
        self.per_split[record.split] = self.per_split.get(record.split, 0) + 1
        for k in ("proxy", "gt", "saliency"):
            self.kinds[k] += record.map(k) is not None
        self.kinds["tags"] += record.tags is not None
        self.kinds["strong"] += record.strong


def _write_all(writer: store_mod._Writable, plan: ImportPlan, workers: int, counter: _Counter,
               events: Events) -> None:
    batch: list[SampleRecord] = []
    for record in iter_loaded(plan, workers=workers):
        batch.append(record)
        counter.add(record)
        if len(batch) >= WRITE_BATCH:
            writer.append_samples(batch)
            events.advance(len(batch))
            batch = []
    writer.append_samples(batch)
    if batch:
        events.advance(len(batch))


def run(config: ImportConfig, *, events: Events | None = None) -> ImportResult:
    """Import a dataset into a new store (or add samples to one with ``config.append``)."""
    events = events or NO_EVENTS
    started = time.time()
    output = _check_output(config)
    plan = plan_import(config)
    events.start(len(plan.samples))
    workers = config.workers if config.workers > 0 else (os.cpu_count() or 1)
    command = f"import {_layout(config)}"
    saved = {**to_dict(config), "resolved": plan.resolved}
    counter = _Counter()
    if config.append:
        _check_append(output, plan)
        with store_mod.transaction(output, command=command, config=saved, started=started) as tx:
            _write_all(tx, plan, workers, counter, events)
            total = tx.num_samples
    else:
        with store_mod.create_store(output, plan.class_names, command=command, config=saved,
                                    overwrite=config.overwrite, started=started) as writer:
            _write_all(writer, plan, workers, counter, events)
            total = writer.num_samples
    n = len(plan.samples)
    log.info("imported %d samples into %s", n, output)
    k = counter.kinds
    return ImportResult(output=output, num_imported=n, num_total=total, per_split=counter.per_split,
                        with_proxy=k["proxy"], with_gt=k["gt"], with_saliency=k["saliency"], with_tags=k["tags"],
                        strong=k["strong"], skipped=plan.skipped, seconds=time.time() - started)
