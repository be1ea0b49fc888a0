"""A small synthetic segmentation data set in PASCAL VOC layout, made from a seed.

The demo data set stands in for PASCAL VOC in the tutorial and in tests.  Every image holds one
to three flat objects of C = 6 foreground classes on a textured background.  The classes come in
two pairs that look alike (``disc``/``ellipse`` and ``square``/``diamond``) plus two loners
(``triangle``, ``ring``), so "a similar class was labelled" is a realistic proxy fault.

Layout written under ``root``::

    JPEGImages/<id>.jpg               RGB, JPEG quality 90
    SegmentationClass/<id>.png        ground truth (VOC palette; 255 on a 1-2 px boundary band)
    Proxy/<id>.png                    proxy annotations (noisy pseudo-labels, values 0..C)
    Saliency/<id>.png                 8-bit grey saliency maps with controlled faults
    ImageSets/Segmentation/train.txt  ids of the training split
    ImageSets/Segmentation/val.txt    ids of the validation split
    tags.csv                          ``id,tags``: foreground classes present in the ground truth
    class_names.txt                   one name per line, background first
    quality.csv                       ``id,split,fault,strength``: what was done to each proxy
    saliency_quality.csv              ``id,fault,strength``: what was done to each saliency map
    DEMO_DATASET                      marker (JSON of the config)

Proxy faults (``quality.csv``): ``none`` (only a CAM-like blobby, slightly rough version of the
ground truth), ``erode``, ``dilate`` (boundaries moved in or out by up to 0.75 / 1.2 object
radii), ``swap`` (part or all of one object labelled as its similar class), ``miss`` (part or
all of one object left as background), ``spurious`` (an extra blob of some class on the
background, up to 2.5 times the foreground area).  About a quarter of the proxies get no fault;
the rest get one or two, with strength ``u * fault_strength`` clipped to [0, 1] and ``u`` drawn
per fault; two faults are joined by ``+`` and the larger strength is recorded.

Saliency faults (``saliency_quality.csv``): ``none``, ``miss`` (one object of several fades out),
``clutter`` (a salient blob on the background) and ``lowcontrast``, scaled the same way.

Each image is made from its own generators, ``np.random.default_rng([seed, stream, index])``,
so image ``i`` does not depend on the other images, on ``num_images`` or on ``val_fraction``;
``fault_strength`` changes only the proxies and saliency maps.  The same config gives
byte-identical files.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw
from skimage.segmentation import find_boundaries

from salcurate.config import setting, to_dict
from salcurate.errors import InputError
from salcurate.events import NO_EVENTS, Events
from salcurate.imageio import IGNORE_LABEL, write_grey_png, write_label_png

logger = logging.getLogger(__name__)

#: Class names of the demo data set, background first.
CLASS_NAMES: tuple[str, ...] = ("background", "disc", "ellipse", "square", "diamond", "triangle", "ring")
NUM_CLASSES = len(CLASS_NAMES) - 1

#: The class a proxy wrongly uses for each foreground class in a ``swap`` fault.
SIMILAR_CLASS: dict[int, int] = {1: 2, 2: 1, 3: 4, 4: 3, 5: 4, 6: 1}

#: Proxy fault names as written to ``quality.csv``.
PROXY_FAULTS: tuple[str, ...] = ("none", "erode", "dilate", "swap", "miss", "spurious")
#: Saliency fault names as written to ``saliency_quality.csv``.
SALIENCY_FAULTS: tuple[str, ...] = ("none", "miss", "clutter", "lowcontrast")

MARKER_NAME = "DEMO_DATASET"
ID_PREFIX = "demo_"
_ID_PATTERN = re.compile(r"^demo_\d{6,}$")
_IMAGE_DIRS = {"JPEGImages": ".jpg", "SegmentationClass": ".png", "Proxy": ".png", "Saliency": ".png"}

# Streams of the per-image generators: default_rng([seed, stream, index]).
_STREAM_IMAGE, _STREAM_PROXY, _STREAM_SALIENCY, _STREAM_SPLIT = 0, 1, 2, 3

# Base colours (RGB in [0, 1]) per class; similar classes have similar colours.
_CLASS_COLOURS = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.86, 0.24, 0.18],  # disc: red
        [0.90, 0.40, 0.16],  # ellipse: orange-red
        [0.20, 0.36, 0.86],  # square: blue
        [0.38, 0.30, 0.82],  # diamond: blue-violet
        [0.20, 0.74, 0.26],  # triangle: green
        [0.92, 0.84, 0.20],  # ring: yellow
    ],
    dtype=np.float32,
)


def _id(index: int) -> str:
    return f"{ID_PREFIX}{index:06d}"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo data set; the same settings give byte-identical files."""

    num_images: int = setting(300, "Number of demo images.", flag="--images", min=8)
    size: int = setting(128, "Nominal side in pixels; heights and widths vary independently in [13/16, 19/16] of it.",
                        cli=False)
    seed: int = setting(0, "Random seed of the demo data.")
    val_fraction: float = setting(0.25, "Fraction of the images in val.txt (at least one image in each split).",
                                  cli=False)
    fault_strength: float = setting(
        1.0, "0 gives proxies equal to the ground truth (and clean saliency), 1 the default spread.", cli=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def size_range(self) -> tuple[int, int]:
        """Smallest and largest image side (inclusive)."""
        return round(self.size * 13 / 16), round(self.size * 19 / 16)


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
    proxy: np.ndarray  # (H, W) uint8, 0..C
    saliency: np.ndarray  # (H, W) uint8
    tags: tuple[int, ...]
    proxy_fault: str
    proxy_strength: float
    saliency_fault: str
    saliency_strength: float
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
    if not _is_real(config.fault_strength) or not 0.0 <= float(config.fault_strength) < float("inf"):
        raise _bad("fault_strength", "a finite number >= 0", config.fault_strength,
                   "pass 0 for perfect proxies or 1 for the default spread")


# ----------------------------------------------------------------------------------------------
# Drawing helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, channels: int = 0) -> np.ndarray:
    """Smooth random field in about [0, 1]: a coarse random grid upsampled bicubically."""
    h, w = shape
    gh = max(2, round(cells * h / max(h, w))) + 1
    gw = max(2, round(cells * w / max(h, w))) + 1
    count = max(channels, 1)
    coarse = rng.random((count, gh, gw), dtype=np.float32)
    out = np.empty((count, h, w), dtype=np.float32)
    for c in range(count):
        out[c] = np.asarray(Image.fromarray(coarse[c]).resize((w, h), Image.BICUBIC))
    if channels == 0:
        return out[0]
    return np.moveaxis(out, 0, -1)


def _background(rng: np.random.Generator, h: int, w: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    base = rng.uniform(0.25, 0.65, size=3).astype(np.float32)
    tint = rng.uniform(-0.12, 0.12, size=3).astype(np.float32)
    cells = int(rng.integers(3, 8))
    shade = _smooth_noise(rng, (h, w), cells)[..., None] - 0.5  # mostly brightness variation
    colour = _smooth_noise(rng, (h, w), cells, channels=3) - 0.5  # some colour variation
    img = base + tint + shade * rng.uniform(0.15, 0.4) + colour * rng.uniform(0.04, 0.12)
    kind = int(rng.integers(3))
    angle = rng.uniform(0, np.pi)
    proj = (np.cos(angle) * xx + np.sin(angle) * yy).astype(np.float32)
    if kind == 0:  # linear gradient between two colours
        other = rng.uniform(0.2, 0.7, size=3).astype(np.float32)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        img = img * (1 - 0.5 * t[..., None]) + 0.5 * t[..., None] * other
    elif kind == 1:  # soft stripes
        period = rng.uniform(6.0, 20.0)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period)
        img = img + ((stripes[..., None] - 0.5) * rng.uniform(0.06, 0.18)
                     * rng.uniform(0.8, 1.0, size=3).astype(np.float32))
    # kind == 2: smooth noise only (with a second, finer layer)
    else:
        img = img + (_smooth_noise(rng, (h, w), int(rng.integers(10, 18)))[..., None] - 0.5) * 0.15
    return img


def _shape_mask(rng: np.random.Generator, cls: int, cy: float, cx: float, radius: float,
                shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    name = CLASS_NAMES[cls]
    if name == "disc":
        rr, cc = draw.disk((cy, cx), radius, shape=shape)
    elif name == "ellipse":
        ratio = rng.uniform(1.35, 1.8)
        rr, cc = draw.ellipse(cy, cx, radius * ratio ** -0.5, radius * ratio**0.5, shape=shape,
                              rotation=rng.uniform(-np.pi, np.pi))
    elif name in ("square", "diamond", "triangle"):
        if name == "square":
            angles = np.array([45.0, 135.0, 225.0, 315.0]) + rng.uniform(-15, 15)
            radii = np.full(4, radius * 1.05)
        elif name == "diamond":  # a rhombus standing on a tip, taller than wide
            angles = np.array([90.0, 180.0, 270.0, 360.0]) + rng.uniform(-12, 12)
            stretch = rng.uniform(1.2, 1.5)
            radii = radius * np.array([stretch, 1 / stretch, stretch, 1 / stretch]) * 1.1
        else:
            angles = np.array([-90.0, 30.0, 150.0]) + rng.uniform(-20, 20)
            radii = np.full(3, radius * 1.25)
        theta = np.deg2rad(angles)
        rr, cc = draw.polygon(cy + radii * np.sin(theta), cx + radii * np.cos(theta), shape=shape)
    elif name == "ring":
        rr, cc = draw.disk((cy, cx), radius, shape=shape)
        mask[rr, cc] = True
        rr, cc = draw.disk((cy, cx), radius * rng.uniform(0.45, 0.6), shape=shape)
        mask[rr, cc] = False
        return mask
    else:  # pragma: no cover - CLASS_NAMES and this function go together
        raise AssertionError(name)
    mask[rr, cc] = True
    return mask


def _texture(rng: np.random.Generator, cls: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float,
             radius: float) -> np.ndarray:
    """Colour field of an object of class ``cls`` (full image; only its mask is used)."""
    colour = np.clip(_CLASS_COLOURS[cls] + rng.uniform(-0.06, 0.06, size=3).astype(np.float32), 0, 1)
    name = CLASS_NAMES[cls]
    if name == "disc":  # radial shading, lit from the top left
        d = np.hypot(yy - cy + 0.3 * radius, xx - cx + 0.3 * radius) / (1.6 * radius)
        shade = 1.15 - 0.45 * np.clip(d, 0, 1)
    elif name == "ellipse":  # speckled
        shade = 0.9 + 0.25 * rng.random(yy.shape, dtype=np.float32)
    elif name == "square":  # horizontal stripes
        shade = 0.8 + 0.3 * (((yy - cy) // max(2.0, radius / 4)) % 2)
    elif name == "diamond":  # checker
        cell = max(2.0, radius / 4)
        shade = 0.8 + 0.3 * ((((yy - cy) // cell) + ((xx - cx) // cell)) % 2)
    elif name == "triangle":  # vertical gradient
        shade = 0.75 + 0.4 * np.clip((yy - cy + radius) / (2 * radius), 0, 1)
    else:  # ring: flat
        shade = np.full(yy.shape, 1.0, dtype=np.float32)
    return colour * shade.astype(np.float32)[..., None]


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


# ----------------------------------------------------------------------------------------------
# One sample


def _draw_scene(rng: np.random.Generator, config: DemoConfig):
    lo, hi = config.size_range
    h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = _background(rng, h, w, yy, xx)

    instances = np.zeros((h, w), dtype=np.uint8)
    objects: list[dict] = []  # cls, mask (full), radius, centre
    wanted = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    side = min(h, w)
    for _ in range(wanted):
        for _attempt in range(10):
            cls = int(rng.integers(1, NUM_CLASSES + 1))
            radius = side * rng.uniform(0.12, 0.24)
            cy = rng.uniform(radius * 0.6, h - radius * 0.6)
            cx = rng.uniform(radius * 0.6, w - radius * 0.6)
            mask = _shape_mask(rng, cls, cy, cx, radius, (h, w))
            area = int(mask.sum())
            if area < 60:
                continue
            # Every object drawn so far must keep at least 40 % of itself visible.
            ok = True
            for k, obj in enumerate(objects, start=1):
                visible = (instances == k) & ~mask
                if visible.sum() < max(60, 0.4 * obj["area"]):
                    ok = False
                    break
            if ok:
                break
        else:
            continue
        tex = _texture(rng, cls, yy, xx, cy, cx, radius)
        image[mask] = tex[mask]
        objects.append({"cls": cls, "mask": mask, "area": area, "radius": radius, "centre": (cy, cx)})
        instances[mask] = len(objects)
    if not objects:  # practically never: fall back to a centred disc
        cls, radius, cy, cx = 1, side * 0.2, h / 2, w / 2
        mask = _shape_mask(rng, cls, cy, cx, radius, (h, w))
        image[mask] = _texture(rng, cls, yy, xx, cy, cx, radius)[mask]
        objects.append({"cls": cls, "mask": mask, "area": int(mask.sum()), "radius": radius, "centre": (cy, cx)})
        instances[mask] = 1

    # Camera: a slight blur and sensor noise.
    image = ndimage.gaussian_filter(image, sigma=(rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.9), 0))
    image = image + rng.normal(0, 0.015, size=image.shape).astype(np.float32)
    image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    classes = np.zeros(len(objects) + 1, dtype=np.uint8)
    classes[1:] = [obj["cls"] for obj in objects]
    labels = classes[instances]
    band = find_boundaries(labels, mode="inner" if rng.random() < 0.5 else "thick")
    ground_truth = labels.copy()
    ground_truth[band] = IGNORE_LABEL
    return image, ground_truth, labels, instances, objects


def _make_proxy(rng: np.random.Generator, labels: np.ndarray, objects: list[dict],
                fault_strength: float) -> tuple[np.ndarray, str, float]:
    h, w = labels.shape
    amount = min(float(fault_strength), 1.0)  # how CAM-like (blobby, rough) the boundaries are
    sigma = rng.uniform(1.0, 2.5) * amount
    roughness = (_smooth_noise(rng, (h, w), int(rng.integers(6, 12))) - 0.5) * (2 * rng.uniform(0.5, 1.5) * amount)

    # Choose the faults: ~25 % none, else one (60 %) or two (40 %) distinct ones.
    faults: list[tuple[str, float]] = []
    if rng.random() >= 0.25:
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
            u = rng.uniform(low[name], 1.0)
            strength = float(np.clip(u * fault_strength, 0.0, 1.0))
            if strength > 0.0:
                faults.append((name, strength))
    fault = dict(faults)

    offset_scale = 0.0
    if "erode" in fault:
        offset_scale = -0.5 * fault["erode"]
    elif "dilate" in fault:
        offset_scale = 1.0 * fault["dilate"]
    target = int(rng.integers(len(objects)))  # the object a swap or miss hits
    if "swap" in fault:  # prefer an object whose class has a look-alike partner
        paired = [k for k, obj in enumerate(objects) if obj["cls"] <= 4]
        if paired:
            target = paired[int(rng.integers(len(paired)))]

    proxy = np.zeros((h, w), dtype=np.uint8)
    for k, obj in enumerate(objects):
        if amount == 0.0 and offset_scale == 0.0:
            region = obj["mask"]
        else:
            sdf = _signed_distance(obj["mask"])
            if sigma > 0:
                sdf = ndimage.gaussian_filter(sdf, sigma)
            region = sdf + roughness + offset_scale * obj["radius"] > 0
        if k == target and "miss" in fault:
            region = region & ~_cut(rng, region, fault["miss"])
        proxy[region] = obj["cls"]
        if k == target and "swap" in fault:
            proxy[_cut(rng, region, fault["swap"])] = SIMILAR_CLASS[obj["cls"]]

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
            proxy[blob] = int(rng.integers(1, NUM_CLASSES + 1))

    if not faults:
        return proxy, "none", 0.0
    return proxy, "+".join(name for name, _ in faults), max(s for _, s in faults)


def _make_saliency(rng: np.random.Generator, instances: np.ndarray, num_objects: int,
                   fault_strength: float) -> tuple[np.ndarray, str, float]:
    h, w = instances.shape
    r = rng.random()
    name = "none" if r < 0.5 else "miss" if r < 0.67 else "clutter" if r < 0.84 else "lowcontrast"
    if name == "miss" and num_objects < 2:
        name = "clutter" if rng.random() < 0.5 else "lowcontrast"
    strength = 0.0 if name == "none" else float(np.clip(rng.uniform(0.4, 1.0) * fault_strength, 0, 1))
    if strength == 0.0:
        name = "none"

    weight = np.ones(num_objects + 1, dtype=np.float32)
    weight[0] = 0.0
    if name == "miss":
        weight[int(rng.integers(1, num_objects + 1))] = 1.0 - strength
    soft = weight[instances]
    # Detectors are not uniform inside objects, and their edges are soft.
    soft = soft * (0.8 + 0.2 * _smooth_noise(rng, (h, w), 5))
    if name == "clutter":
        away = ndimage.distance_transform_edt(instances == 0)
        radius = min(h, w) * rng.uniform(0.08, 0.18) * (0.5 + strength)
        candidates = np.flatnonzero(away > min(radius * 0.5, float(away.max()) * 0.8))
        centre = int(candidates[int(rng.integers(candidates.size))]) if candidates.size else int(rng.integers(h * w))
        cy, cx = divmod(centre, w)
        rr, cc = draw.ellipse(cy, cx, radius, radius * rng.uniform(0.7, 1.4), shape=(h, w),
                              rotation=rng.uniform(-np.pi, np.pi))
        soft[rr, cc] = np.maximum(soft[rr, cc], 0.3 + 0.6 * strength)
    soft = ndimage.gaussian_filter(soft, rng.uniform(1.5, 3.5))
    low, high = rng.uniform(0.0, 0.06), rng.uniform(0.9, 1.0)
    if name == "lowcontrast":
        low, high = low + 0.25 * strength, high - 0.5 * strength
    soft = low + (high - low) * soft + rng.normal(0, 0.01, size=soft.shape).astype(np.float32)
    return (np.clip(soft, 0, 1) * 255 + 0.5).astype(np.uint8), name, strength


def make_demo_sample(index: int, config: DemoConfig = DemoConfig()) -> DemoSample:
    """Make demo image ``index`` in memory (exactly what :func:`make_demo_dataset` writes for it)."""
    if not _is_int(index) or index < 0:
        raise InputError(f"demo image index: expected a non-negative integer, got {index!r}; pass 0, 1, 2, ...")
    image, ground_truth, labels, instances, objects = _draw_scene(
        np.random.default_rng([config.seed, _STREAM_IMAGE, index]), config)
    proxy, proxy_fault, proxy_strength = _make_proxy(
        np.random.default_rng([config.seed, _STREAM_PROXY, index]), labels, objects, config.fault_strength
    )
    saliency, sal_fault, sal_strength = _make_saliency(
        np.random.default_rng([config.seed, _STREAM_SALIENCY, index]), instances, len(objects), config.fault_strength
    )
    present = np.unique(ground_truth)
    tags = tuple(int(c) for c in present if 0 < c < IGNORE_LABEL)
    return DemoSample(
        id=_id(index), image=image, ground_truth=ground_truth, proxy=proxy, saliency=saliency, tags=tags,
        proxy_fault=proxy_fault, proxy_strength=proxy_strength, saliency_fault=sal_fault,
        saliency_strength=sal_strength, instances=instances,
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


def _remove_stale(root: Path, keep: int) -> None:
    """Delete demo image files of a previous, larger run (ids >= ``keep``)."""
    for folder, suffix in _IMAGE_DIRS.items():
        directory = root / folder
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.suffix == suffix and _ID_PATTERN.match(path.stem) and int(path.stem[len(ID_PREFIX):]) >= keep:
                path.unlink()


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
    for folder in (*_IMAGE_DIRS, "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    marker = {"format": "salcurate-demo", "version": 1, "config": to_dict(config)}
    if previous:
        _remove_stale(root, config.num_images)
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
        write_label_png(root / "Proxy" / f"{sample.id}.png", sample.proxy)
        write_grey_png(root / "Saliency" / f"{sample.id}.png", sample.saliency)
        split = "val" if is_val[index] else "train"
        tags_lines.append(f"{sample.id},{' '.join(str(t) for t in sample.tags)}")
        quality_lines.append(f"{sample.id},{split},{sample.proxy_fault},{sample.proxy_strength:.3f}")
        saliency_lines.append(f"{sample.id},{sample.saliency_fault},{sample.saliency_strength:.3f}")
        events.advance(1)

    ids = [_id(i) for i in range(n)]
    _write_text(root / "ImageSets" / "Segmentation" / "train.txt", [i for i, v in zip(ids, is_val) if not v])
    _write_text(root / "ImageSets" / "Segmentation" / "val.txt", [i for i, v in zip(ids, is_val) if v])
    _write_text(root / "tags.csv", tags_lines)
    _write_text(root / "class_names.txt", list(CLASS_NAMES))
    _write_text(root / "quality.csv", quality_lines)
    _write_text(root / "saliency_quality.csv", saliency_lines)
    (root / MARKER_NAME).write_text(json.dumps({**marker, "complete": True}, sort_keys=True) + "\n", encoding="utf-8")
    logger.debug("demo data set complete: %d train, %d val", n - n_val, n_val)
    return DemoSummary(root=root, num_images=n, splits={"train": n - n_val, "val": n_val}, class_names=CLASS_NAMES)
