"""Importing datasets into a mask store: PASCAL VOC layout and a plain folder layout.

Planning (which ids, which files, tags, class names) checks everything that can be checked
without decoding; loading decodes each sample (in a thread pool: PIL and zlib release the
GIL) and checks sizes and label values; the store writer appends in batches.  Any bad input
stops the import with a one-line :class:`~salcurate.errors.InputError` naming the file, and the
destination store is left as it was (the new file is only renamed into place when complete).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from salcurate.data import store as store_mod
from salcurate.data.store import SampleRecord
from salcurate.errors import InputError
from salcurate.imageio import IGNORE_LABEL, VOC_CLASS_NAMES, grey_png_bytes, probe_image, read_grey_png, read_label_png

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
ProgressFn = Callable[[int], None]


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Resolved settings of one import; saved in the store's run log.

    ``layout`` is ``"voc"`` (``JPEGImages/``, ``ImageSets/Segmentation/<split>.txt``,
    ``SegmentationClass[Aug]/``) or ``"folder"`` (``images/``, ``masks/``, ``gt/``,
    ``saliency/``, ``splits/<split>.txt``, ``tags.csv``, ``classes.txt``).
    """

    layout: str
    root: str
    output: str
    splits: tuple[str, ...] = ()
    pseudo_dir: str | None = None
    gt_dir: str | None = None
    saliency_dir: str | None = None
    tags_file: str | None = None
    tags_dir: str | None = None
    tags_from_gt: bool = False
    class_names_file: str | None = None
    strong_file: str | None = None
    append: bool = False
    overwrite: bool = False
    workers: int = 0  # 0 = all cores

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


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


@dataclasses.dataclass(frozen=True)
class ImportSummary:
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
        raise InputError(f"{path}: expected a UTF-8 {what}, but byte {exc.start} is not UTF-8; save the file as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc}); check the file") from None


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{path}: {what} not found; check the path")
    return path


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
                    raise InputError(f"{folder}: two images share the id {stem!r} ({found[stem].name}, {entry.name}); keep one")
                found[stem] = Path(entry.path)
    return found


def plan_import(config: ImportConfig) -> ImportPlan:
    """Resolve which samples to import and where each file is; checks all but pixel content."""
    root = Path(config.root)
    _require_dir(root, "dataset root folder")
    if config.layout == "voc":
        image_dir, split_dir = root / "JPEGImages", root / "ImageSets" / "Segmentation"
        default_gt = next((root / d for d in ("SegmentationClassAug", "SegmentationClass") if (root / d).is_dir()), None)
        proxy_dir = Path(config.pseudo_dir) if config.pseudo_dir else None
        class_file = Path(config.class_names_file) if config.class_names_file else None
    elif config.layout == "folder":
        image_dir, split_dir = root / "images", root / "splits"
        default_gt = root / "gt" if (root / "gt").is_dir() else None
        proxy_dir = Path(config.pseudo_dir) if config.pseudo_dir else (root / "masks" if (root / "masks").is_dir() else None)
        class_file = Path(config.class_names_file) if config.class_names_file else (
            root / "classes.txt" if (root / "classes.txt").is_file() else None)
    else:
        raise InputError(f"unknown layout {config.layout!r}; expected voc or folder")
    _require_dir(image_dir, "image folder")
    gt_dir = Path(config.gt_dir) if config.gt_dir else default_gt
    saliency_dir = Path(config.saliency_dir) if config.saliency_dir else (
        root / "saliency" if config.layout == "folder" and (root / "saliency").is_dir() else None)
    for d, what in ((proxy_dir, "proxy annotation folder (--pseudo)"), (gt_dir, "ground-truth folder (--gt)"),
                    (saliency_dir, "saliency folder (--saliency)")):
        if d is not None:
            _require_dir(d, what)
    class_names = read_class_names(class_file) if class_file else VOC_CLASS_NAMES

    images = _index_images(image_dir)
    skipped = 0
    ids_with_split: list[tuple[str, str]] = []
    if config.splits:
        seen: dict[str, str] = {}
        for split in config.splits:
            list_file = split_dir / f"{split}.txt"
            ids = read_id_list(list_file)
            if not ids:
                raise InputError(f"{list_file}: split {split!r} is empty; list at least one id")
            for sample_id in ids:
                if sample_id in seen:
                    raise InputError(
                        f"{list_file}: duplicate id {sample_id!r} (already in split {seen[sample_id]!r}); "
                        "each image may be imported once"
                    )
                if sample_id not in images:
                    raise InputError(f"{list_file}: id {sample_id!r} has no image in {image_dir}; fix the list or add the image")
                seen[sample_id] = split
                ids_with_split.append((sample_id, split))
    else:
        for sample_id in sorted(images):
            check_sample_id(sample_id, str(images[sample_id]))
            if proxy_dir is not None and not (proxy_dir / f"{sample_id}.png").is_file():
                skipped += 1
                continue
            ids_with_split.append((sample_id, "all"))
        if not ids_with_split:
            where = f"{image_dir} with a proxy in {proxy_dir}" if proxy_dir else str(image_dir)
            raise InputError(f"{where}: no images found; check the folders")

    ids = [i for i, _ in ids_with_split]
    sources = [s for s in (config.tags_file, config.tags_dir, config.tags_from_gt or None) if s]
    if len(sources) > 1:
        raise InputError("give one tag source: --tags FILE, --tags-dir DIR or --tags-from-gt")
    tags: dict[str, tuple[int, ...]] | None = None
    if config.tags_file:
        tags = read_tags_csv(Path(config.tags_file), class_names)
    elif config.tags_dir:
        tags = read_tags_dir(Path(config.tags_dir), ids, class_names)
    elif config.layout == "folder" and not config.tags_from_gt and (root / "tags.csv").is_file():
        tags = read_tags_csv(root / "tags.csv", class_names)
    if config.tags_from_gt and gt_dir is None:
        raise InputError("--tags-from-gt needs ground truth; give --gt DIR")

    strong: set[str] = set()
    if config.strong_file:
        strong = set(read_id_list(Path(config.strong_file)))
        unknown = sorted(strong - set(ids))
        if unknown:
            raise InputError(f"{config.strong_file}: id {unknown[0]!r} is not among the imported samples; fix the list")
        if gt_dir is None:
            raise InputError(f"{config.strong_file}: strong samples need ground truth; give --gt DIR")

    samples = []
    for sample_id, split in ids_with_split:
        proxy = None
        if proxy_dir is not None:
            proxy = proxy_dir / f"{sample_id}.png"
            if not proxy.is_file():
                raise InputError(f"{proxy}: proxy annotation for {sample_id!r} not found; add it or remove the id from the split")
        gt = gt_dir / f"{sample_id}.png" if gt_dir is not None and (gt_dir / f"{sample_id}.png").is_file() else None
        if sample_id in strong and gt is None:
            raise InputError(f"{gt_dir}/{sample_id}.png: strong sample {sample_id!r} has no ground truth; add it or drop it from --strong")
        if config.tags_from_gt and gt is None:
            raise InputError(f"{gt_dir}/{sample_id}.png: --tags-from-gt needs ground truth for {sample_id!r}; add it or give tags another way")
        sal = saliency_dir / f"{sample_id}.png" if saliency_dir is not None and (saliency_dir / f"{sample_id}.png").is_file() else None
        sample_tags = None if tags is None else tags.get(sample_id)
        samples.append(PlannedSample(sample_id, split, images[sample_id], proxy, gt, sal, sample_tags, sample_id in strong))
    tags_source = ("gt" if config.tags_from_gt else config.tags_file or config.tags_dir
                   or (str(root / "tags.csv") if tags is not None else None))
    resolved = {"images": str(image_dir), "proxy": _s(proxy_dir), "gt": _s(gt_dir), "saliency": _s(saliency_dir),
                "tags": tags_source, "class_names": list(class_names)}
    return ImportPlan(tuple(samples), tuple(class_names), config.tags_from_gt, skipped, resolved)


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)


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
            f"255 (ignore); fix the mask or give the right --class-names"
        )
    return labels


def load_sample(p: PlannedSample, class_names: Sequence[str], tags_from_gt: bool) -> SampleRecord:
    """Read, decode and check one planned sample."""
    C = len(class_names) - 1
    try:
        data = p.image.read_bytes()
    except OSError as exc:
        raise InputError(f"{p.image}: cannot read the image ({exc}); check the file") from None
    h, w, fmt = probe_image(data, str(p.image))
    proxy = gt = sal = None
    if p.proxy is not None:
        proxy = _check_labels(read_label_png(p.proxy), p.proxy, C, (h, w))
    if p.gt is not None:
        gt = _check_labels(read_label_png(p.gt), p.gt, C, (h, w))
    sal_png = None
    if p.saliency is not None:
        try:
            sal_bytes = p.saliency.read_bytes()
        except OSError as exc:
            raise InputError(f"{p.saliency}: cannot read the saliency map ({exc}); check the file") from None
        sal = read_grey_png(sal_bytes, name=str(p.saliency))
        if sal.shape != (h, w):
            raise InputError(f"{p.saliency}: saliency map is {sal.shape[1]}x{sal.shape[0]} but its image is {w}x{h}; resize it to its image")
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
            yield load_sample(p, plan.class_names, plan.tags_from_gt)
        return
    window = 4 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="salcurate-import") as pool:
        futures = []
        it = iter(samples)
        for p in it:
            futures.append(pool.submit(load_sample, p, plan.class_names, plan.tags_from_gt))
            if len(futures) >= window:
                break
        head = 0
        while head < len(futures):
            record = futures[head].result()
            futures[head] = None  # type: ignore[call-overload]
            head += 1
            nxt = next(it, None)
            if nxt is not None:
                futures.append(pool.submit(load_sample, nxt, plan.class_names, plan.tags_from_gt))
            yield record


# --------------------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------------------
def import_dataset(config: ImportConfig, *, progress: ProgressFn | None = None,
                   on_plan: Callable[[ImportPlan], None] | None = None, batch_size: int = 64) -> ImportSummary:
    """Import a dataset into a new store (or append a split with ``config.append``)."""
    started = time.time()
    output = Path(config.output)
    if output.is_dir():
        raise InputError(f"{output}: expected a store file path, got a folder; give a file name such as {output / 'masks.h5'}")
    if not config.append and output.exists() and not config.overwrite:
        raise InputError(f"{output}: exists already; pass --overwrite to replace it or --append to add samples")
    plan = plan_import(config)
    if on_plan is not None:
        on_plan(plan)
    workers = config.workers if config.workers > 0 else (os.cpu_count() or 1)
    command = f"import {config.layout}"
    cfg = {**config.to_dict(), "resolved": plan.resolved}
    counts = dict(proxy=0, gt=0, saliency=0, tags=0, strong=0)
    per_split: dict[str, int] = {}

    def write_all(writer: store_mod._Writable) -> None:
        batch: list[SampleRecord] = []
        for record in iter_loaded(plan, workers=workers):
            batch.append(record)
            per_split[record.split] = per_split.get(record.split, 0) + 1
            for k in ("proxy", "gt", "saliency"):
                counts[k] += record.map(k) is not None
            counts["tags"] += record.tags is not None
            counts["strong"] += record.strong
            if len(batch) >= batch_size:
                writer.append_samples(batch)
                if progress:
                    progress(len(batch))
                batch = []
        writer.append_samples(batch)
        if progress and batch:
            progress(len(batch))

    if config.append:
        with store_mod.MaskStore(output) as existing:
            if existing.class_names != plan.class_names:
                raise InputError(
                    f"{output}: the store's classes ({len(existing.class_names)}: {', '.join(existing.class_names[:4])}, ...) "
                    f"differ from this import's ({len(plan.class_names)}); give the same --class-names"
                )
            clash = set(existing.ids) & {p.id for p in plan.samples}
            if clash:
                raise InputError(f"{output}: id {sorted(clash)[0]!r} is already in the store; duplicate ids are not allowed")
        with store_mod.transaction(output, command=command, config=cfg, started=started) as tx:
            write_all(tx)
            total = tx.num_samples
    else:
        with store_mod.create_store(output, plan.class_names, command=command, config=cfg,
                                    overwrite=config.overwrite, started=started) as writer:
            write_all(writer)
            total = writer.num_samples
    n = len(plan.samples)
    log.info("imported %d samples into %s", n, output)
    return ImportSummary(output=output, num_imported=n, num_total=total, per_split=per_split,
                         with_proxy=counts["proxy"], with_gt=counts["gt"], with_saliency=counts["saliency"],
                         with_tags=counts["tags"], strong=counts["strong"], skipped=plan.skipped,
                         seconds=time.time() - started)
