"""A small synthetic segmentation data set in PASCAL VOC layout, made from a seed.

The demo data set stands in for PASCAL VOC in the tutorial and in tests.  Its scenes come from
:mod:`salcurate.data.scenes`: crops of real photos (scikit-image's bundled ones) as backgrounds,
one to four objects per image from C = 6 foreground classes in three look-alike pairs
(``disc_a``/``disc_b``, ``blob_a``/``blob_b``, ``star_a``/``star_b``), and saliency maps that fail
as real detectors do (missed objects, background clutter, blur, partial objects), independently
of anything else.  The tags are the classes of the ground truth, so the demo can make its proxy
masks from tags alone (``salcurate pseudo-label``).

Layout written under ``root``::

    JPEGImages/<id>.jpg               RGB, JPEG quality 90
    SegmentationClass/<id>.png        ground truth (VOC palette; 255 on a 1-2 px boundary band)
    Saliency/<id>.png                 8-bit grey saliency maps
    ImageSets/Segmentation/train.txt  ids of the training split
    ImageSets/Segmentation/val.txt    ids of the validation split
    tags.csv                          ``id,tags``: foreground classes present in the ground truth
    class_names.txt                   one name per line, background first
    saliency_quality.csv              ``id,fault,strength``: the saliency map's failure mode and
                                      1 - F1 of the map at 50 % against the ground-truth foreground
    DEMO_DATASET                      marker (JSON of the config)

and, only with ``proxies="faults"`` (unit tests and benchmarks of the scoring stages)::

    Proxy/<id>.png                    hand-made noisy proxies (values 0..C)
    quality.csv                       ``id,split,fault,strength``: what was done to each proxy

Proxy faults (``quality.csv``): ``none`` (only a CAM-like blobby, slightly rough version of the
ground truth), ``erode``, ``dilate`` (boundaries moved in or out by up to 0.5 / 1 object radius),
``swap`` (part or all of one object labelled as its look-alike class, usually not among the
image's tags), ``miss`` (part or all of one object left as background), ``spurious`` (an extra
blob of some class on the background, up to 2 times the foreground area).  About a quarter of
the proxies get no fault; the rest get one or two, with strength ``u * fault_strength`` clipped
to [0, 1] and ``u`` drawn per fault; two faults are joined by ``+`` and the larger strength is
recorded.

Saliency faults (``saliency_quality.csv``): :data:`SALIENCY_FAULTS`, the scene generator's
failure modes (its ``good`` is written ``none``).  ``fault_strength`` scales how often a map
fails: 0 gives clean maps only.

Each image is made from its own generators (``np.random.default_rng([seed, stream, index])``
here and in :func:`salcurate.data.scenes.make_scene`), so image ``i`` does not depend on the other
images, on ``num_images`` or on ``val_fraction``; ``fault_strength`` and ``proxies`` change only
the proxies and saliency maps.  The same config gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw

from salcurate.config import Choice, choice, setting, to_dict
from salcurate.data.scenes import SALIENCY_MODES, SceneConfig, class_names, make_scene
from salcurate.errors import InputError
from salcurate.events import NO_EVENTS, Events
from salcurate.imageio import write_grey_png, write_label_png

logger = logging.getLogger(__name__)

#: Foreground classes of the default demo data set (three look-alike pairs).
NUM_CLASSES = 6
#: Class names of the default demo data set, background first.
CLASS_NAMES: tuple[str, ...] = class_names(SceneConfig(num_classes=NUM_CLASSES))

#: Proxy fault names as written to ``quality.csv``.
PROXY_FAULTS: tuple[str, ...] = ("none", "erode", "dilate", "swap", "miss", "spurious")
#: Saliency fault names as written to ``saliency_quality.csv`` (the scene modes, ``good`` as ``none``).
SALIENCY_FAULTS: tuple[str, ...] = tuple("none" if m == "good" else m for m in SALIENCY_MODES)

MARKER_NAME = "DEMO_DATASET"
ID_PREFIX = "demo_"
_ID_PATTERN = re.compile(r"^demo_\d{6,}$")
_IMAGE_DIRS = {"JPEGImages": ".jpg", "SegmentationClass": ".png", "Proxy": ".png", "Saliency": ".png"}

# Stream of the per-image proxy-fault generators: default_rng([seed, stream, index]) (streams 0-2
# are the scene generator's), and of the split.
_STREAM_PROXY, _STREAM_SPLIT = 11, 13

# Weights of the saliency failure modes at fault_strength 1 (the scene generator's default mix).
_GOOD_WEIGHT, _FAULT_WEIGHT = 0.4, 0.15


class DemoProxies(Choice):
    """What proxy masks the demo data set ships: none (made with ``salcurate pseudo-label``) or hand-made faults."""

    NONE = "none"
    FAULTS = "faults"


def _id(index: int) -> str:
    return f"{ID_PREFIX}{index:06d}"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo data set; the same settings give byte-identical files."""

    num_images: int = setting(300, "Number of demo images.", flag="--images", min=8)
    size: int = setting(128, "Nominal side in pixels; images have about size ** 2 pixels, aspect 3:4 to 4:3.",
                        cli=False)
    seed: int = setting(0, "Random seed of the demo data.")
    val_fraction: float = setting(0.25, "Fraction of the images in val.txt (at least one image in each split).",
                                  cli=False)
    num_classes: int = setting(NUM_CLASSES, "Foreground classes (look-alike pairs, the last group of three "
                               "when odd).", cli=False)
    proxies: DemoProxies = setting(DemoProxies.NONE, "Proxy masks to write: none (the demo makes them from the "
                                   "tags with pseudo-label) or faults (hand-made faults, for unit tests).", cli=False)
    fault_strength: float = setting(
        1.0, "0 gives proxies equal to the ground truth (and clean saliency), 1 the default spread.", cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.proxies, str):
            object.__setattr__(self, "proxies", choice(DemoProxies, self.proxies, "proxies"))
        _validate(self)

    @property
    def size_range(self) -> tuple[int, int]:
        """Smallest and largest image side (inclusive)."""
        return math.floor(self.size * math.sqrt(3 / 4)), math.ceil(self.size * math.sqrt(4 / 3))

    @property
    def scene_config(self) -> SceneConfig:
        """The scene generator's settings for these demo settings."""
        strength = float(self.fault_strength)
        mix = tuple((m, _GOOD_WEIGHT if m == "good" else _FAULT_WEIGHT * strength) for m in SALIENCY_MODES)
        return SceneConfig(num_classes=self.num_classes, size=self.size, seed=self.seed, saliency_mix=mix)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Background first, then the ``num_classes`` foreground classes."""
        return class_names(SceneConfig(num_classes=self.num_classes))


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`make_demo_dataset` wrote."""

    root: Path
    num_images: int
    splits: dict[str, int]
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DemoSample:
    """One demo image with its annotations, as arrays (what is written for it)."""

    id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB, before JPEG compression
    ground_truth: np.ndarray  # (H, W) uint8, 0..C and 255
    proxy: np.ndarray | None  # (H, W) uint8, 0..C; None unless proxies == "faults"
    saliency: np.ndarray  # (H, W) uint8
    tags: tuple[int, ...]
    proxy_fault: str  # "" without proxies
    proxy_strength: float
    saliency_fault: str
    saliency_strength: float  # 1 - F1 of the map at 50 % against the ground-truth foreground
    instances: np.ndarray = field(repr=False)  # (H, W) uint8, 0 background, k object k (1-based)


def _bad(name: str, expected: str, got: object, todo: str) -> InputError:
    return InputError(f"{name}: expected {expected}, got {got!r}; {todo}", param=name)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _validate(config: DemoConfig) -> None:
    if not _is_int(config.num_images) or config.num_images < 8:
        raise _bad("num_images", "an integer >= 8", config.num_images, "ask for at least 8 images")
    if not _is_int(config.size) or not 32 <= config.size <= 2048:
        raise _bad("size", "an integer side between 32 and 2048 pixels", config.size, "pick a side such as 128")
    if not _is_int(config.seed) or config.seed < 0:
        raise _bad("seed", "a non-negative integer", config.seed, "pass 0 or another non-negative integer")
    if not _is_real(config.val_fraction) or not 0.0 < float(config.val_fraction) < 1.0:
        raise _bad("val_fraction", "a number strictly between 0 and 1", config.val_fraction, "pass e.g. 0.25")
    if not _is_int(config.num_classes) or not 2 <= config.num_classes <= 48:
        raise _bad("num_classes", "an integer from 2 to 48", config.num_classes, "pass e.g. 6")
    if not _is_real(config.fault_strength) or not 0.0 <= float(config.fault_strength) < float("inf"):
        raise _bad("fault_strength", "a finite number >= 0", config.fault_strength,
                   "pass 0 for perfect proxies or 1 for the default spread")


def similar_classes(num_classes: int) -> dict[int, int]:
    """The look-alike class a ``swap`` fault uses for each foreground class (1..C): the next member
    of its group (``disc_a`` -> ``disc_b`` -> ``disc_a``)."""
    names = class_names(SceneConfig(num_classes=num_classes))[1:]
    groups: dict[str, list[int]] = {}
    for c, name in enumerate(names, start=1):
        groups.setdefault(name.rsplit("_", 1)[0], []).append(c)
    return {c: members[(i + 1) % len(members)] for members in groups.values() for i, c in enumerate(members)}


# ----------------------------------------------------------------------------------------------
# Hand-made proxy faults (proxies == "faults")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field in about [0, 1]: a coarse random grid upsampled bicubically."""
    h, w = shape
    gh = max(2, round(cells * h / max(h, w))) + 1
    gw = max(2, round(cells * w / max(h, w))) + 1
    coarse = rng.random((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


def _cut(rng: np.random.Generator, region: np.ndarray, fraction: float) -> np.ndarray:
    """The part of ``region`` (about ``fraction`` of it) on one side of a random straight line."""
    if fraction >= 1.0:
        return region.copy()
    rows, cols = np.nonzero(region)
    out = np.zeros_like(region)
    if rows.size == 0 or fraction <= 0.0:
        return out
    angle = rng.uniform(0, 2 * np.pi)
    proj = np.cos(angle) * cols + np.sin(angle) * rows
    keep = proj <= np.quantile(proj, fraction)
    out[rows[keep], cols[keep]] = True
    return out


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Positive inside ``mask`` (distance to the outside), negative outside."""
    if not mask.any():
        return np.full(mask.shape, -1e6, dtype=np.float32)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return (inside - outside).astype(np.float32)


def _choose_faults(rng: np.random.Generator, fault_strength: float) -> list[tuple[str, float]]:
    """~25 % none, else one (60 %) or two (40 %) distinct faults with their strengths."""
    faults: list[tuple[str, float]] = []
    if rng.random() < 0.25:
        return faults
    count = 1 if rng.random() < 0.6 else 2
    pool = ["erode", "dilate", "swap", "miss", "spurious"]
    chosen: list[str] = []
    while len(chosen) < count:
        name = pool[int(rng.integers(len(pool)))]
        if name in chosen or {name, *chosen} >= {"erode", "dilate"}:
            continue
        chosen.append(name)
    low = {"erode": 0.1, "dilate": 0.1, "swap": 0.4, "miss": 0.4, "spurious": 0.1}
    for name in chosen:
        strength = float(np.clip(rng.uniform(low[name], 1.0) * fault_strength, 0.0, 1.0))
        if strength > 0.0:
            faults.append((name, strength))
    return faults


def _make_proxy(rng: np.random.Generator, labels: np.ndarray, instances: np.ndarray, object_classes: tuple[int, ...],
                config: DemoConfig) -> tuple[np.ndarray, str, float]:
    h, w = labels.shape
    amount = min(float(config.fault_strength), 1.0)  # how CAM-like (blobby, rough) the boundaries are
    sigma = rng.uniform(1.0, 2.5) * amount
    roughness = (_smooth_noise(rng, (h, w), int(rng.integers(6, 12))) - 0.5) * (2 * rng.uniform(0.5, 1.5) * amount)
    faults = _choose_faults(rng, config.fault_strength)
    fault = dict(faults)

    offset_scale = 0.0
    if "erode" in fault:
        offset_scale = -0.5 * fault["erode"]
    elif "dilate" in fault:
        offset_scale = 1.0 * fault["dilate"]
    similar = similar_classes(config.num_classes)
    target = int(rng.integers(len(object_classes)))  # the object a swap or miss hits

    proxy = np.zeros((h, w), dtype=np.uint8)
    for k, cls in enumerate(object_classes):
        mask = instances == k + 1
        radius = math.sqrt(max(int(mask.sum()), 1) / math.pi)
        if amount == 0.0 and offset_scale == 0.0:
            region = mask
        else:
            scale = min(1.0, radius / 10.0)  # small objects get proportionally small blur and roughness
            sdf = _signed_distance(mask)
            if sigma > 0:
                sdf = ndimage.gaussian_filter(sdf, sigma * scale)
            region = sdf + roughness * scale + offset_scale * radius > 0
        if k == target and "miss" in fault:
            region = region & ~_cut(rng, region, fault["miss"])
        proxy[region] = cls
        if k == target and "swap" in fault:
            proxy[_cut(rng, region, fault["swap"])] = similar[cls]

    if "spurious" in fault:
        foreground = int((labels > 0).sum())
        area = fault["spurious"] * 2.0 * max(foreground, 0.04 * h * w)
        radius = min(np.sqrt(area / np.pi), 0.45 * min(h, w))
        away = ndimage.distance_transform_edt(labels == 0)
        candidates = np.flatnonzero(away > min(radius * 0.5, float(away.max()) * 0.8))
        if candidates.size:
            centre = int(candidates[int(rng.integers(candidates.size))])
            cy, cx = divmod(centre, w)
            ratio = rng.uniform(1.0, 1.8)
            blob = np.zeros((h, w), dtype=bool)
            rr, cc = draw.ellipse(cy, cx, radius / np.sqrt(ratio), radius * np.sqrt(ratio), shape=(h, w),
                                  rotation=rng.uniform(-np.pi, np.pi))
            blob[rr, cc] = True
            sdf = ndimage.gaussian_filter(_signed_distance(blob), max(sigma, 1.0))
            blob = (sdf + 3 * roughness > 0) & (proxy == 0)
            proxy[blob] = int(rng.integers(1, config.num_classes + 1))

    if not faults:
        return proxy, "none", 0.0
    return proxy, "+".join(name for name, _ in faults), max(s for _, s in faults)


def _saliency_error(saliency: np.ndarray, labels: np.ndarray) -> float:
    """1 - F1 of the saliency map at 50 % against the ground-truth foreground."""
    fg, salient = labels > 0, saliency >= 128
    total = int(fg.sum() + salient.sum())
    return 1.0 - (2 * int((fg & salient).sum()) / total if total else 1.0)


def make_demo_sample(index: int, config: DemoConfig = DemoConfig()) -> DemoSample:
    """Make demo image ``index`` in memory (exactly what :func:`make_demo_dataset` writes for it)."""
    if not _is_int(index) or index < 0:
        raise InputError(f"demo image index: expected a non-negative integer, got {index!r}; pass 0, 1, 2, ...",
                         param="index")
    scene = make_scene(int(index), config.scene_config)
    proxy, proxy_fault, proxy_strength = None, "", 0.0
    if config.proxies == DemoProxies.FAULTS:
        proxy, proxy_fault, proxy_strength = _make_proxy(
            np.random.default_rng([config.seed, _STREAM_PROXY, index]), scene.labels, scene.instances,
            scene.object_classes, config)
    return DemoSample(
        id=_id(index), image=scene.image, ground_truth=scene.ground_truth, proxy=proxy, saliency=scene.saliency,
        tags=scene.tags, proxy_fault=proxy_fault, proxy_strength=proxy_strength,
        saliency_fault="none" if scene.saliency_mode == "good" else scene.saliency_mode,
        saliency_strength=_saliency_error(scene.saliency, scene.labels), instances=scene.instances,
    )


# ----------------------------------------------------------------------------------------------
# The data set on disk


def _check_root(root: Path) -> bool:
    """Whether ``root`` holds a previous demo data set; raises if it must not be written to."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: expected a folder (new or empty) for the demo data set, got a file; "
                         "pass another path")
    if not root.exists():
        return False
    if (root / MARKER_NAME).is_file():
        return True
    if any(root.iterdir()):
        raise InputError(
            f"{root}: expected a new or empty folder (or a previous demo data set with a {MARKER_NAME} file), "
            "got a non-empty folder; pass an empty or new folder"
        )
    return False


def _remove_stale(root: Path, keep: int, proxies: bool) -> None:
    """Delete demo image files of a previous, larger run (ids >= ``keep``), and its proxies when
    this run writes none."""
    for folder, suffix in _IMAGE_DIRS.items():
        directory = root / folder
        if not directory.is_dir():
            continue
        drop_all = folder == "Proxy" and not proxies
        for path in directory.iterdir():
            if path.suffix == suffix and _ID_PATTERN.match(path.stem) and (
                    drop_all or int(path.stem[len(ID_PREFIX):]) >= keep):
                path.unlink()
        if drop_all and not any(directory.iterdir()):
            directory.rmdir()
    if not proxies:
        (root / "quality.csv").unlink(missing_ok=True)


def _write_text(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")


def make_demo_dataset(root: Path, config: DemoConfig = DemoConfig(), *, events: Events | None = None) -> DemoSummary:
    """Write the demo data set described by ``config`` under ``root`` (see the module docstring).

    ``root`` must be new, empty, or a previous demo data set (it is then overwritten in place).
    ``events`` hears of each image as it is finished.
    """
    events = events or NO_EVENTS
    _validate(config)
    root = Path(root)
    previous = _check_root(root)
    faults = config.proxies == DemoProxies.FAULTS
    folders = [d for d in _IMAGE_DIRS if faults or d != "Proxy"]
    for folder in (*folders, "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    marker = {"format": "salcurate-demo", "version": 2, "config": to_dict(config)}
    if previous:
        _remove_stale(root, config.num_images, faults)
    else:  # mark the folder at once, so that an interrupted run can be re-run into it
        (root / MARKER_NAME).write_text(json.dumps({**marker, "complete": False}, sort_keys=True) + "\n",
                                        encoding="utf-8")

    n = config.num_images
    n_val = min(max(round(n * float(config.val_fraction)), 1), n - 1)
    order = np.random.default_rng([config.seed, _STREAM_SPLIT, 0]).permutation(n)
    is_val = np.zeros(n, dtype=bool)
    is_val[order[:n_val]] = True

    logger.debug("writing %d demo images to %s", n, root)
    events.start(n)
    tags_lines, quality_lines, saliency_lines = ["id,tags"], ["id,split,fault,strength"], ["id,fault,strength"]
    for index in range(n):
        sample = make_demo_sample(index, config)
        Image.fromarray(sample.image).save(root / "JPEGImages" / f"{sample.id}.jpg", format="JPEG", quality=90)
        write_label_png(root / "SegmentationClass" / f"{sample.id}.png", sample.ground_truth)
        write_grey_png(root / "Saliency" / f"{sample.id}.png", sample.saliency)
        split = "val" if is_val[index] else "train"
        tags_lines.append(f"{sample.id},{' '.join(str(t) for t in sample.tags)}")
        saliency_lines.append(f"{sample.id},{sample.saliency_fault},{sample.saliency_strength:.3f}")
        if sample.proxy is not None:
            write_label_png(root / "Proxy" / f"{sample.id}.png", sample.proxy)
            quality_lines.append(f"{sample.id},{split},{sample.proxy_fault},{sample.proxy_strength:.3f}")
        events.advance(1)

    ids = [_id(i) for i in range(n)]
    _write_text(root / "ImageSets" / "Segmentation" / "train.txt", [i for i, v in zip(ids, is_val) if not v])
    _write_text(root / "ImageSets" / "Segmentation" / "val.txt", [i for i, v in zip(ids, is_val) if v])
    _write_text(root / "tags.csv", tags_lines)
    _write_text(root / "class_names.txt", list(config.class_names))
    if faults:
        _write_text(root / "quality.csv", quality_lines)
    _write_text(root / "saliency_quality.csv", saliency_lines)
    (root / MARKER_NAME).write_text(json.dumps({**marker, "complete": True}, sort_keys=True) + "\n", encoding="utf-8")
    logger.debug("demo data set complete: %d train, %d val", n - n_val, n_val)
    return DemoSummary(root=root, num_images=n, splits={"train": n - n_val, "val": n_val},
                       class_names=config.class_names)
