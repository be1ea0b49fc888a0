"""Synthetic scenes for weakly supervised segmentation: objects of look-alike classes on photos.

A seeded generator of images that stand in for PASCAL VOC in CAM benchmarks and the demo.  Each
scene is a crop of one of scikit-image's bundled photos (astronaut, coffee, chelsea, rocket,
camera, motorcycle, coins) or textures (brick, grass, gravel, moon), flipped and colour-jittered,
with one to four objects pasted on it.  It gives

* ``image``: ``(H, W, 3)`` uint8 RGB (sides vary around ``size``, aspect 3:4 to 4:3);
* ``ground_truth``: ``(H, W)`` uint8, 0 background, 1..C the classes, 255 on a thin band along
  every boundary (as PASCAL VOC's annotations);
* ``tags``: the classes present in the ground truth;
* ``saliency``: ``(H, W)`` uint8, a salient-object map that fails as real detectors do and
  independently of anything a CAM proxy does (see below).

Classes come in look-alike groups of two (three for the last group when C is odd): the members
of a group share a shape family and a colour and differ subtly, in a shape parameter (aspect,
number of points or sides, hole size), a small hue shift and the photo texture their fill is
cut from.  Names are ``<family>_<member>``: ``disc_a``, ``disc_b``, ``star_a``, ...  Objects are
smooth random shapes of their family (superellipses, harmonic blobs, stars, star-convex
polygons, rings, crescents, crosses, drops), anti-aliased, with a texture crop tinted by the class
colour, a little lighting and an optional drop shadow; later objects may hide part of earlier
ones (each keeps at least 35 % of itself visible) and sizes range from small (radius 6 % of the
short side) to large (33 %).  About a third of the later objects repeat an earlier object's
group, so look-alike classes co-occur as they do in real photos.

Saliency failure modes (``SceneConfig.saliency_mix``, drawn per image with their weights):

* ``good``: the ground-truth foreground, each object at its own level, blurred, with noise;
* ``missed``: some objects (always at least one) faded to near zero;
* ``clutter``: salient blobs added on the background, shaded by the photo;
* ``blur``: strongly blurred and of low contrast;
* ``partial``: one object (or more) salient on one side of a random line only.

``make_scene(index, config)`` depends only on ``(config, index)``: image ``i`` comes from its own
generators ``np.random.default_rng([seed, stream, i])``, and the saliency mode is drawn from a
stream of its own (``saliency_mode``), so a test can count modes without drawing images.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.segmentation import find_boundaries

from salcurate.errors import InputError
from salcurate.imageio import IGNORE_LABEL

log = logging.getLogger(__name__)

__all__ = [
    "SALIENCY_MODES",
    "Scene",
    "SceneConfig",
    "class_names",
    "make_scene",
    "saliency_mode",
    "scene_summary",
]

#: Saliency failure modes, in the order of ``SceneConfig.saliency_mix``'s default.
SALIENCY_MODES: tuple[str, ...] = ("good", "missed", "clutter", "blur", "partial")

# Streams of the per-image generators: default_rng([seed, stream, index]).
_STREAM_IMAGE, _STREAM_SALIENCY, _STREAM_MODE = 0, 1, 2
_LETTERS = "abc"
_BANK_SIDE = 384  # photos are kept at this longer side; crops are resized from there


# ----------------------------------------------------------------------------------------------
# Config and results
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneConfig:
    """Settings of the scene generator; the same settings give byte-identical scenes.

    ``num_classes``: C, foreground classes (1..48).  ``size``: nominal side in pixels; each image
    has about ``size ** 2`` pixels with an aspect between 3:4 and 4:3.  ``min_objects`` /
    ``max_objects``: objects drawn per image (uniformly; a placement that would hide too much of
    an earlier object is retried, then dropped, so a rare image has fewer).  ``lookalike_rate``:
    chance that a later object repeats the group of an earlier one.  ``saliency_mix``: weights
    of the saliency failure modes, ``(("good", w), ...)`` over :data:`SALIENCY_MODES`.
    """

    num_classes: int = 10
    size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    seed: int = 0
    lookalike_rate: float = 0.35
    saliency_mix: tuple[tuple[str, float], ...] = (
        ("good", 0.4), ("missed", 0.15), ("clutter", 0.15), ("blur", 0.15), ("partial", 0.15))

    def __post_init__(self) -> None:
        mix = self.saliency_mix
        if isinstance(mix, dict):
            mix = tuple(mix.items())
        try:
            mix = tuple((str(k), float(v)) for k, v in mix)
        except (TypeError, ValueError):
            mix = ()
        object.__setattr__(self, "saliency_mix", mix)
        problem = _config_problem(self)
        if problem:
            name, expected, todo = problem
            raise InputError(f"SceneConfig.{name}: expected {expected}, got {getattr(self, name)!r}; {todo}",
                             param=name)

    @property
    def mode_weights(self) -> dict[str, float]:
        """Probability of each saliency mode (the mix, normalized; absent modes 0)."""
        total = sum(w for _, w in self.saliency_mix)
        out = dict.fromkeys(SALIENCY_MODES, 0.0)
        for k, v in self.saliency_mix:
            out[k] += v / total
        return out


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _config_problem(c: SceneConfig) -> tuple[str, str, str] | None:
    if not _is_int(c.num_classes) or not 1 <= c.num_classes <= 2 * len(_FAMILIES):
        return "num_classes", f"a whole number from 1 to {2 * len(_FAMILIES)}", "pass e.g. 10"
    if not _is_int(c.size) or not 32 <= c.size <= 2048:
        return "size", "a whole number of pixels from 32 to 2048", "pass e.g. 128"
    if not _is_int(c.min_objects) or not 1 <= c.min_objects <= 8:
        return "min_objects", "a whole number from 1 to 8", "pass e.g. 1"
    if not _is_int(c.max_objects) or not c.min_objects <= c.max_objects <= 8:
        return "max_objects", f"a whole number from min_objects ({c.min_objects}) to 8", "pass e.g. 4"
    if not _is_int(c.seed) or c.seed < 0:
        return "seed", "a non-negative whole number", "pass e.g. 0"
    if isinstance(c.lookalike_rate, bool) or not isinstance(c.lookalike_rate, (int, float)) \
            or not 0 <= c.lookalike_rate <= 1:
        return "lookalike_rate", "a number from 0 to 1", "pass e.g. 0.35"
    names = [k for k, _ in c.saliency_mix]
    if (not c.saliency_mix or any(k not in SALIENCY_MODES for k in names) or len(set(names)) != len(names)
            or any(not (math.isfinite(v) and v >= 0) for _, v in c.saliency_mix)
            or sum(v for _, v in c.saliency_mix) <= 0):
        return ("saliency_mix", f"(mode, weight) pairs over {', '.join(SALIENCY_MODES)} with weights >= 0 and a "
                "positive sum", "pass e.g. (('good', 0.5), ('missed', 0.5))")
    return None


@dataclass(frozen=True)
class Scene:
    """One synthetic scene (arrays are freshly made; the caller may keep or change them)."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    ground_truth: np.ndarray  # (H, W) uint8: 0 background, 1..C, 255 on the boundary band
    labels: np.ndarray  # (H, W) uint8: the ground truth without the band
    tags: tuple[int, ...]  # the classes (1..C) present in ``labels``, ascending
    tag_vector: np.ndarray  # (C,) bool over classes 1..C (the store's form of the tags)
    saliency: np.ndarray  # (H, W) uint8
    saliency_mode: str  # one of SALIENCY_MODES
    instances: np.ndarray = field(repr=False)  # (H, W) uint8: 0 background, k object k (1-based, paste order)
    object_classes: tuple[int, ...] = ()  # the class of object k at position k - 1


# ----------------------------------------------------------------------------------------------
# Classes: look-alike groups
# ----------------------------------------------------------------------------------------------
#: name, shape kind, hue, saturation, value, per-member (shape parameter, texture source).
#: Members differ subtly: one shape parameter, the texture, and a small hue shift.
_FAMILIES: tuple[tuple[str, str, float, float, float, tuple[tuple[float, str], ...]], ...] = (
    ("disc", "superellipse", 0.00, 0.70, 0.85, ((1.00, "gravel"), (1.30, "moon"), (1.15, "cell"))),
    ("blob", "blob", 0.33, 0.60, 0.70, ((0.18, "grass"), (0.26, "gravel"), (0.22, "brick"))),
    ("star", "star", 0.14, 0.75, 0.90, ((5.0, "moon"), (6.0, "gravel"), (7.0, "coins"))),
    ("box", "roundbox", 0.60, 0.60, 0.75, ((1.00, "brick"), (1.35, "grass"), (1.15, "moon"))),
    ("ring", "ring", 0.80, 0.55, 0.80, ((0.45, "gravel"), (0.60, "cell"), (0.52, "brick"))),
    ("shard", "polygon", 0.07, 0.65, 0.65, ((5.0, "brick"), (7.0, "moon"), (6.0, "gravel"))),
    ("leaf", "superellipse", 0.25, 0.70, 0.60, ((2.20, "grass"), (2.70, "cell"), (2.45, "gravel"))),
    ("drop", "drop", 0.52, 0.65, 0.80, ((0.40, "moon"), (0.55, "coins"), (0.48, "grass"))),
    ("cross", "cross", 0.95, 0.60, 0.75, ((0.32, "gravel"), (0.42, "brick"), (0.37, "moon"))),
    ("moon", "crescent", 0.10, 0.35, 0.90, ((0.55, "cell"), (0.70, "gravel"), (0.62, "brick"))),
    ("gem", "polygon", 0.45, 0.70, 0.85, ((6.0, "coins"), (8.0, "moon"), (7.0, "grass"))),
    ("slab", "roundbox", 0.02, 0.25, 0.55, ((2.00, "gravel"), (2.60, "brick"), (2.30, "cell"))),
    ("petal", "star", 0.88, 0.45, 0.90, ((4.0, "grass"), (3.0, "moon"), (5.0, "gravel"))),
    ("bean", "blob", 0.18, 0.55, 0.55, ((0.30, "moon"), (0.40, "brick"), (0.35, "cell"))),
    ("tile", "polygon", 0.68, 0.45, 0.60, ((4.0, "gravel"), (3.0, "grass"), (5.0, "brick"))),
    ("bead", "ring", 0.38, 0.50, 0.85, ((0.30, "moon"), (0.40, "coins"), (0.35, "gravel"))),
    ("rod", "superellipse", 0.72, 0.55, 0.70, ((3.20, "brick"), (4.00, "moon"), (3.60, "grass"))),
    ("blot", "blob", 0.03, 0.55, 0.45, ((0.22, "coins"), (0.30, "grass"), (0.26, "gravel"))),
    ("spark", "star", 0.58, 0.35, 0.95, ((8.0, "gravel"), (10.0, "cell"), (9.0, "moon"))),
    ("plate", "superellipse", 0.12, 0.45, 0.75, ((1.05, "coins"), (1.45, "brick"), (1.25, "moon"))),
    ("hook", "crescent", 0.30, 0.45, 0.50, ((0.50, "gravel"), (0.65, "moon"), (0.58, "grass"))),
    ("tag", "cross", 0.50, 0.40, 0.55, ((0.25, "brick"), (0.35, "cell"), (0.30, "gravel"))),
    ("nut", "polygon", 0.85, 0.35, 0.50, ((6.0, "gravel"), (5.0, "coins"), (7.0, "brick"))),
    ("pip", "drop", 0.20, 0.75, 0.85, ((0.35, "grass"), (0.50, "gravel"), (0.42, "moon"))),
)


@dataclass(frozen=True)
class _ClassStyle:
    name: str
    group: int
    kind: str
    param: float
    texture: str
    colour: tuple[float, float, float]


@functools.lru_cache(maxsize=64)
def _class_table(num_classes: int) -> tuple[_ClassStyle, ...]:
    """Styles of classes 1..C (index 0 is class 1): groups of two, the last of three when C is odd."""
    sizes = [2] * (num_classes // 2)
    if num_classes % 2:
        if sizes:
            sizes[-1] = 3
        else:
            sizes = [1]
    out = []
    for g, count in enumerate(sizes):
        name, kind, hue, sat, val, members = _FAMILIES[g]
        for m in range(count):
            param, texture = members[m]
            rgb = colorsys.hsv_to_rgb((hue + 0.035 * m) % 1.0, sat, val)
            out.append(_ClassStyle(f"{name}_{_LETTERS[m]}", g, kind, param, texture, tuple(float(c) for c in rgb)))
    return tuple(out)


def class_names(config: SceneConfig) -> tuple[str, ...]:
    """``("background", "disc_a", "disc_b", "blob_a", ...)``: C + 1 names, background first."""
    if not isinstance(config, SceneConfig):
        raise InputError(f"class_names expects a SceneConfig, got {type(config).__name__}; build one with "
                         "SceneConfig(num_classes=...)", param="config")
    return ("background", *(s.name for s in _class_table(config.num_classes)))


def _groups(num_classes: int) -> list[list[int]]:
    """Classes (1..C) of each look-alike group."""
    out: dict[int, list[int]] = {}
    for c, style in enumerate(_class_table(num_classes), start=1):
        out.setdefault(style.group, []).append(c)
    return list(out.values())


# ----------------------------------------------------------------------------------------------
# Photo bank (scikit-image's bundled data; never downloaded)
# ----------------------------------------------------------------------------------------------
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle", "coins")
_TEXTURES = ("brick", "grass", "gravel", "moon", "cell", "coins")
#: Tint ranges (RGB gains) for grey textures used as backgrounds.
_TEXTURE_BACKGROUNDS = ("brick", "grass", "gravel", "moon")


def _load_skimage(name: str) -> np.ndarray | None:
    from skimage import data

    try:
        if name == "motorcycle":
            from skimage import io

            return io.imread(f"{data.data_dir}/motorcycle_left.png")
        return getattr(data, name)()
    except Exception as exc:  # a distribution without the bundled file: fall back to a synthetic texture
        log.debug("skimage.data %s not available (%r); using a synthetic texture", name, exc)
        return None


def _fallback(name: str) -> np.ndarray:
    rng = np.random.default_rng(sum(map(ord, name)))
    grid = rng.random((9, 9), dtype=np.float32)
    smooth = np.asarray(Image.fromarray(grid).resize((_BANK_SIDE, _BANK_SIDE), Image.BICUBIC))
    fine = rng.random((_BANK_SIDE, _BANK_SIDE), dtype=np.float32)
    return (np.clip(0.7 * smooth + 0.3 * fine, 0, 1) * 255).astype(np.uint8)


def _shrink(a: np.ndarray) -> Image.Image:
    img = Image.fromarray(a[..., :3] if a.ndim == 3 else a)
    scale = _BANK_SIDE / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    return img


@functools.lru_cache(maxsize=1)
def _bank() -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
    """(RGB photos, grey textures) as PIL images of longer side <= 384, loaded once per process."""
    photos: dict[str, Image.Image] = {}
    for name in _PHOTOS:
        a = _load_skimage(name)
        if a is None:
            a = _fallback(name)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        photos[name] = _shrink(a.astype(np.uint8)).convert("RGB")
    textures: dict[str, Image.Image] = {}
    for name in _TEXTURES:
        a = _load_skimage(name)
        if a is None:
            a = _fallback(name)
        if a.ndim == 3:
            a = (a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
        textures[name] = _shrink(a.astype(np.uint8)).convert("L")
    return photos, textures


def _crop(rng: np.random.Generator, img: Image.Image, h: int, w: int, zoom: float) -> np.ndarray:
    """A random crop of ``img`` covering ``zoom`` x the output's pixel footprint, resized to (h, w), in [0, 1]."""
    iw, ih = img.size
    scale = min(zoom, iw / w, ih / h)  # source pixels per output pixel
    cw, ch = w * scale, h * scale
    x0, y0 = rng.uniform(0, max(0.0, iw - cw)), rng.uniform(0, max(0.0, ih - ch))
    out = img.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    return np.asarray(out, dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """A smooth random field in about [0, 1]: a coarse grid resized bicubically."""
    gh, gw = max(2, round(cells * h / max(h, w))) + 1, max(2, round(cells * w / max(h, w))) + 1
    coarse = rng.random((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    photos, textures = _bank()
    if rng.random() < 0.7:
        name = _PHOTOS[int(rng.integers(len(_PHOTOS)))]
        bg = _crop(rng, photos[name], h, w, rng.uniform(0.8, 1.9))
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
        if name in ("camera", "coins") and rng.random() < 0.7:  # sepia or cold tint for grey photos
            bg = bg * rng.uniform(0.75, 1.15, size=3).astype(np.float32)
    else:
        name = _TEXTURE_BACKGROUNDS[int(rng.integers(len(_TEXTURE_BACKGROUNDS)))]
        t = _crop(rng, textures[name], h, w, rng.uniform(0.6, 1.6))
        if rng.random() < 0.5:
            t = t[::-1]
        if rng.random() < 0.5:
            t = t[:, ::-1]
        tint = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.5), 1.0), np.float32)
        bg = t[..., None] * tint * rng.uniform(0.8, 1.2)
    # colour jitter: brightness, contrast, saturation, per-channel gain
    mean = bg.mean(axis=(0, 1), keepdims=True)
    bg = (bg - mean) * rng.uniform(0.7, 1.2) + mean * rng.uniform(0.75, 1.2)
    grey = bg.mean(axis=2, keepdims=True)
    bg = grey + (bg - grey) * rng.uniform(0.5, 1.3)
    bg = bg * rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    return np.ascontiguousarray(bg, dtype=np.float32)


def _shape_distance(kind: str, param: float, rng: np.random.Generator, u: np.ndarray, v: np.ndarray,
                    radius: float) -> np.ndarray:
    """Approximate signed distance in pixels (> 0 inside) of a shape of ``radius`` in local coordinates.

    ``u``, ``v``: rotated coordinates in units of ``radius``.
    """
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if kind in ("superellipse", "roundbox"):  # param: aspect (v axis shortened)
        n = 2.0 if kind == "superellipse" else 4.5
        a = param * rng.uniform(0.92, 1.08)
        su, sv = a**0.5, a**-0.5  # keep the area about constant
        g = (np.abs(u / su) ** n + np.abs(v / sv) ** n) ** (1.0 / n)
        return (1.0 - g) * radius * min(su, sv)
    if kind == "blob":  # param: amplitude of the harmonics
        r = np.ones_like(theta)
        for k in (2, 3, 4, 5):
            r += param * rng.uniform(0.2, 1.0) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        r = np.clip(r, 0.35, None)
        return (r - rho) * radius
    if kind == "star":  # param: number of points
        k = int(param)
        r = 0.78 + rng.uniform(0.2, 0.3) * np.cos(k * theta)
        return (r - rho) * radius
    if kind == "polygon":  # param: number of vertices (irregular, star-convex)
        k = int(param)
        angles = np.sort((np.arange(k) + rng.uniform(-0.3, 0.3, size=k)) * 2 * np.pi / k)
        radii = rng.uniform(0.8, 1.1, size=k)
        # straight edges between vertices: the distance to each edge's line (convex hull of the vertices)
        px, py = radii * np.cos(angles), radii * np.sin(angles)
        d = np.full(u.shape, np.inf, dtype=np.float32)
        for i in range(k):
            x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % k], py[(i + 1) % k]
            nx, ny = y2 - y1, -(x2 - x1)
            norm = math.hypot(nx, ny)
            nx, ny = nx / norm, ny / norm
            off = nx * x1 + ny * y1
            if off < 0:
                nx, ny, off = -nx, -ny, -off
            d = np.minimum(d, off - (nx * u + ny * v))
        return d * radius
    if kind == "ring":  # param: hole radius
        return np.minimum(1.0 - rho, rho - param * rng.uniform(0.9, 1.1)) * radius
    if kind == "crescent":  # param: offset of the cut disc
        cut = np.hypot(u - param, v) - rng.uniform(0.75, 0.9)
        return np.minimum(1.0 - rho, cut) * radius
    if kind == "cross":  # param: arm half-width
        t = param * rng.uniform(0.9, 1.1)
        arm1 = np.minimum(t - np.abs(v), 1.0 - np.abs(u))
        arm2 = np.minimum(t - np.abs(u), 0.85 - np.abs(v))
        return np.maximum(arm1, arm2) * radius
    if kind == "drop":  # param: how thin the tip is
        r = 0.62 + 0.38 * np.abs(np.sin(theta / 2)) ** (1.0 + 4 * param)
        r = np.where(np.cos(theta) < 0, r + 0.35 * (-np.cos(theta)) ** 8, r)
        return (r - rho) * radius
    raise AssertionError(kind)  # pragma: no cover - _FAMILIES and this function go together


def _render_object(rng: np.random.Generator, style: _ClassStyle, h: int, w: int, radius: float, cy: float,
                   cx: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """(bounding box, alpha (bh, bw) in [0, 1], fill (bh, bw, 3)) of one object, or None when off the image."""
    reach = radius * 1.45 + 2
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    if y1 - y0 < 3 or x1 - x0 < 3:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ca, sa = math.cos(angle), math.sin(angle)
    dy, dx = (yy - cy) / radius, (xx - cx) / radius
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    dist = _shape_distance(style.kind, style.param, rng, u, v, radius)
    alpha = np.clip(dist + 0.5, 0.0, 1.0).astype(np.float32)
    # fill: a texture crop tinted by the class colour, with a little lighting
    _, textures = _bank()
    bh, bw = y1 - y0, x1 - x0
    tex = _crop(rng, textures[style.texture], bh, bw, rng.uniform(0.5, 1.2))
    tex = (tex - tex.mean()) / (tex.std() + 1e-3)
    hue_shift = rng.uniform(-0.012, 0.012)
    hsv = colorsys.rgb_to_hsv(*style.colour)
    colour = np.array(colorsys.hsv_to_rgb((hsv[0] + hue_shift) % 1.0, hsv[1] * rng.uniform(0.9, 1.1),
                                          hsv[2] * rng.uniform(0.85, 1.1)), np.float32)
    light = 1.0 + 0.25 * (math.cos(angle) * u - math.sin(angle) * v).clip(-1.5, 1.5) * 0.5
    shade = (1.0 + 0.22 * tex) * light
    fill = colour * shade[..., None]
    return (slice(y0, y1), slice(x0, x1)), alpha, fill.astype(np.float32)


def _draw(rng: np.random.Generator, config: SceneConfig) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(image float (H, W, 3) in [0, 1], instances (H, W) uint8, class of each instance)."""
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    h, w = round(config.size / math.sqrt(aspect)), round(config.size * math.sqrt(aspect))
    image = _background(rng, h, w)
    styles = _class_table(config.num_classes)
    groups = _groups(config.num_classes)
    instances = np.zeros((h, w), dtype=np.uint8)
    areas: list[int] = []  # visible pixels of each object so far
    full: list[int] = []  # pixels of each object when pasted
    classes: list[int] = []
    wanted = int(rng.integers(config.min_objects, config.max_objects + 1))
    side = min(h, w)
    for _ in range(wanted):
        if classes and rng.random() < config.lookalike_rate:
            group = groups[styles[classes[int(rng.integers(len(classes)))] - 1].group]
            cls = int(group[int(rng.integers(len(group)))])
        else:
            cls = int(rng.integers(1, config.num_classes + 1))
        for _attempt in range(8):
            radius = side * math.exp(rng.uniform(math.log(0.06), math.log(0.33)))
            cy, cx = rng.uniform(0.08 * h, 0.92 * h), rng.uniform(0.08 * w, 0.92 * w)
            drawn = _render_object(rng, styles[cls - 1], h, w, radius, cy, cx)
            if drawn is None:
                continue
            box, alpha, fill = drawn
            solid = alpha >= 0.5
            if solid.sum() < 30:
                continue
            covered = instances[box][solid]
            if all(areas[k - 1] - np.count_nonzero(covered == k) >= max(20, 0.35 * full[k - 1])
                   for k in range(1, len(areas) + 1)):
                break
        else:
            continue
        if rng.random() < 0.5:  # a soft drop shadow on what lies below
            shadow = ndimage.gaussian_filter(alpha, max(1.0, radius * 0.12))
            shift = max(1, round(radius * 0.1))
            shadow = np.roll(shadow, (shift, shift), axis=(0, 1))
            image[box] *= (1.0 - 0.35 * shadow)[..., None]
        a = alpha[..., None]
        image[box] = image[box] * (1.0 - a) + fill * a
        for k in range(1, len(areas) + 1):  # what the new object hides
            areas[k - 1] -= int(np.count_nonzero(instances[box][solid] == k))
        instances[box][solid] = len(classes) + 1
        areas.append(int(solid.sum()))
        full.append(areas[-1])
        classes.append(cls)
    if not classes:  # practically never: one centred object of a random class
        cls = int(rng.integers(1, config.num_classes + 1))
        box, alpha, fill = _render_object(rng, styles[cls - 1], h, w, side * 0.25, h / 2, w / 2)  # type: ignore[misc]
        image[box] = image[box] * (1.0 - alpha[..., None]) + fill * alpha[..., None]
        instances[box][alpha >= 0.5] = 1
        classes.append(cls)
    # camera: a slight blur and sensor noise
    image = ndimage.gaussian_filter(image, sigma=(rng.uniform(0.3, 0.7),) * 2 + (0,))
    image += rng.normal(0, rng.uniform(0.005, 0.02), size=image.shape).astype(np.float32)
    return image, instances, classes


# ----------------------------------------------------------------------------------------------
# Saliency
# ----------------------------------------------------------------------------------------------
def saliency_mode(index: int, config: SceneConfig) -> str:
    """The saliency failure mode of scene ``index`` (drawn with ``config.saliency_mix``'s weights)."""
    rng = np.random.default_rng([config.seed, _STREAM_MODE, int(index)])
    names = [k for k, _ in config.saliency_mix]
    weights = np.array([v for _, v in config.saliency_mix], dtype=np.float64)
    cumulative = np.cumsum(weights / weights.sum())
    return names[min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(names) - 1)]


def _cut(rng: np.random.Generator, region: np.ndarray, keep: float) -> np.ndarray:
    """The part of ``region`` (about ``keep`` of it) on one side of a random straight line."""
    rows, cols = np.nonzero(region)
    out = np.zeros_like(region)
    if rows.size == 0:
        return out
    angle = rng.uniform(0, 2 * np.pi)
    proj = np.cos(angle) * cols + np.sin(angle) * rows
    chosen = proj <= np.quantile(proj, keep)
    out[rows[chosen], cols[chosen]] = True
    return out


def _saliency(rng: np.random.Generator, mode: str, image: np.ndarray, instances: np.ndarray, count: int,
              size: int) -> np.ndarray:
    h, w = instances.shape
    scale = size / 128.0
    levels = np.zeros(count + 1, dtype=np.float32)
    levels[1:] = rng.uniform(0.75, 1.0, size=count)
    if mode == "missed":
        dropped = rng.permutation(count)[: int(rng.integers(1, max(1, count - 1) + 1))] + 1
        levels[dropped] = rng.uniform(0.0, 0.15, size=dropped.size)
    sal = levels[instances]
    if mode == "partial":
        hits = rng.permutation(count)[: 1 + int(rng.random() < 0.3 and count > 1)] + 1
        for k in hits:
            region = instances == k
            keep = _cut(rng, region, rng.uniform(0.3, 0.65))
            sal[region & ~keep] = rng.uniform(0.0, 0.15)
    if mode == "clutter":
        grey = image.mean(axis=2)
        contrast = np.abs(grey - ndimage.uniform_filter(grey, max(3, round(9 * scale))))
        contrast = np.clip(contrast / (contrast.max() + 1e-6), 0, 1)
        background = instances == 0
        rows, cols = np.nonzero(background) if background.any() else np.nonzero(~background)
        yy, xx = np.ogrid[:h, :w]
        for _ in range(int(rng.integers(1, 4))):  # blobs centred on the background, shaded by its contrast
            r = min(h, w) * rng.uniform(0.12, 0.3)
            at = int(rng.integers(rows.size))
            blob = 1.0 - np.hypot(yy - rows[at], xx - cols[at]) / r + (_smooth_noise(rng, h, w, 6) - 0.5) * 0.8
            blob = (blob > 0).astype(np.float32) * (0.75 + 0.25 * contrast)
            sal = np.maximum(sal, blob * rng.uniform(0.65, 0.95))
    sigma = rng.uniform(0.8, 2.0) * scale
    if mode == "blur":
        sigma = rng.uniform(4.0, 7.0) * scale
    sal = ndimage.gaussian_filter(sal, sigma)
    sal = sal + (_smooth_noise(rng, h, w, 5) - 0.5) * rng.uniform(0.05, 0.15)
    if mode == "blur":
        sal = 0.2 + sal * rng.uniform(0.3, 0.45)
    sal = sal + rng.normal(0, 0.02, size=sal.shape).astype(np.float32)
    return (np.clip(sal, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# One scene
# ----------------------------------------------------------------------------------------------
def make_scene(index: int, config: SceneConfig | None = None) -> Scene:
    """Scene ``index`` of ``config`` (default ``SceneConfig()``); the same pair gives the same arrays.

    ``index`` -> ``Scene`` with image ``(H, W, 3)`` uint8, ground truth, labels, instances and
    saliency ``(H, W)`` uint8, tags (classes 1..C present) and the saliency mode.
    """
    config = SceneConfig() if config is None else config
    if not (_is_int(index) and index >= 0 and isinstance(config, SceneConfig)):
        raise InputError(f"make_scene expects a non-negative whole index and a SceneConfig, got "
                         f"{index!r} and {type(config).__name__}; pass e.g. make_scene(0, SceneConfig())",
                         param=("index", "config"))
    index = int(index)
    rng = np.random.default_rng([config.seed, _STREAM_IMAGE, index])
    image, instances, classes = _draw(rng, config)
    lut = np.zeros(len(classes) + 1, dtype=np.uint8)
    lut[1:] = classes
    labels = lut[instances]
    ground_truth = labels.copy()
    ground_truth[find_boundaries(labels, mode="inner" if rng.random() < 0.5 else "thick")] = IGNORE_LABEL
    present = np.unique(labels)
    tags = tuple(int(c) for c in present if c)
    for c in set(tags) - set(np.unique(ground_truth).tolist()):  # a sliver all band: keep it, unbanded
        ground_truth[labels == c] = c
    tag_vector = np.zeros(config.num_classes, dtype=bool)
    tag_vector[[t - 1 for t in tags]] = True
    mode = saliency_mode(index, config)
    srng = np.random.default_rng([config.seed, _STREAM_SALIENCY, index])
    saliency = _saliency(srng, mode, image, instances, len(classes), config.size)
    rgb = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Scene(index=index, image=rgb, ground_truth=ground_truth, labels=labels, tags=tags, tag_vector=tag_vector,
                 saliency=saliency, saliency_mode=mode, instances=instances, object_classes=tuple(classes))


def scene_summary(scene: Scene) -> dict[str, Any]:
    """Plain-type facts about a scene (for logs and benchmark tables)."""
    return {"index": scene.index, "height": int(scene.image.shape[0]), "width": int(scene.image.shape[1]),
            "tags": list(scene.tags), "objects": list(scene.object_classes), "saliency_mode": scene.saliency_mode}
