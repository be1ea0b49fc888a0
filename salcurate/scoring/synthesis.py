"""The fine scorer's training set, synthesized from a coarse-scored store (SAL Section III-B2).

The paper builds about 10k samples from 10,582 images: positives (AC >= 0.8, ~4k), negatives
(AC <= 0.3, ~1k), eroded or partly erased copies of good masks whose AC is recomputed against
the original reference (~3k, to fill 0.3-0.8), and cut-and-paste composites (~2k): the
foreground of an AC >= 0.9 sample pasted on the background of an AC >= 0.3 image, the new
mask and reference being the unions.  The counts scale with the store.

:func:`plan_training_set` decides deterministically (from a seed) what each item is, as a
small integer table; :class:`ScorerTrainingSet` builds each item on the fly from the store
when the data loader asks for it, so nothing is materialized in memory.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from salcurate.config import setting
from salcurate.data.store import StoreHandle
from salcurate.errors import InputError
from salcurate.scoring import metrics

POSITIVE, NEGATIVE, DEGRADED, COMPOSITE = 0, 1, 2, 3
#: The paper's counts for 10,582 images.
PAPER_COUNTS = {"positive": 4000, "negative": 1000, "degraded": 3000, "composite": 2000}
PAPER_IMAGES = 10582
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """What the scorer's training set holds; thresholds and proportions default to the paper's
    (Section III-B2).  Part of ``train-scorer``'s settings (its ``seed`` seeds the whole run)."""

    scale: float = setting(1.0, "Training-set size relative to the paper's 10k per 10,582 images.")
    proportions: tuple[int, int, int, int] = setting(
        tuple(PAPER_COUNTS.values()), "Items per 10,582 images: positive,negative,degraded,composite.")
    positive_min: float = setting(0.8, "Positives: AC >= this.")
    negative_max: float = setting(0.3, "Negatives: AC <= this.")
    composite_source_min: float = setting(0.9, "Pasted objects come from AC >= this.")
    composite_target_min: float = setting(0.3, "Pasted objects land on the background of images with AC >= this.")
    val_fraction: float = setting(0.1, "Images held out for validation.")
    seed: int = setting(0, "Seeds the training set, its split, the initial weights and the batch order "
                           "(makes CPU runs repeatable).")


def planned_counts(num_scored: int, config: SynthesisConfig) -> dict[str, int]:
    """``config.proportions`` (the paper's 4k/1k/3k/2k) scaled from 10,582 images to
    ``num_scored``, times ``scale``."""
    if len(config.proportions) != 4 or min(config.proportions) < 0 or sum(config.proportions) == 0:
        raise InputError(f"proportions must be 4 counts >= 0 (positive, negative, degraded, composite), "
                         f"got {config.proportions}", param="proportions")
    if not config.scale > 0:
        raise InputError(f"scale must be > 0, got {config.scale}", param="scale")
    factor = config.scale * num_scored / PAPER_IMAGES
    return {k: (max(1, int(round(v * factor))) if v else 0) for k, v in zip(PAPER_COUNTS, config.proportions)}


def plan_training_set(ac: np.ndarray, config: SynthesisConfig) -> np.ndarray:
    """The training items: ``(M, 4)`` int64 rows ``(kind, i, j, seed)``.

    ac: ``(N,)`` float coarse AC per sample (NaN = not scored).  ``i`` is the sample the item
    comes from, ``j`` the background image of a composite (else -1), ``seed`` the item's own
    random seed.  Positives and negatives are drawn without replacement up to the planned
    count; degraded items start from positives, composites from AC >= 0.9 sources on
    AC >= 0.3 targets.
    """
    ac = np.asarray(ac, dtype=np.float64)
    scored = ~np.isnan(ac)
    a = np.where(scored, ac, np.nan)
    pos = np.flatnonzero(scored & (a >= config.positive_min))
    neg = np.flatnonzero(scored & (a <= config.negative_max))
    src = np.flatnonzero(scored & (a >= config.composite_source_min))
    dst = np.flatnonzero(scored & (a >= config.composite_target_min))
    counts = planned_counts(int(scored.sum()), config)
    need = {"positive (AC >= %g)" % config.positive_min: (len(pos), 8, "positive_min",
                                                            counts["positive"] + counts["degraded"]),
            "negative (AC <= %g)" % config.negative_max: (len(neg), 2, "negative_max", counts["negative"]),
            "composite source (AC >= %g)" % config.composite_source_min: (len(src), 2, "composite_source_min",
                                                                           counts["composite"])}
    for what, (found, least, option, wanted) in need.items():
        if wanted and found < least:
            raise InputError(
                f"too few confident samples for the scorer's training set: {found} {what} of {int(scored.sum())} "
                f"scored, need at least {least}; relax {option} or score more masks", param=option
            )
    rng = np.random.default_rng([config.seed, 1])
    rows = []
    for kind, pool, n in ((POSITIVE, pos, counts["positive"]), (NEGATIVE, neg, counts["negative"])):
        chosen = rng.permutation(pool)[: min(n, len(pool))]
        rows += [(kind, int(i), -1) for i in np.sort(chosen)]
    rows += [(DEGRADED, int(i), -1) for i in (rng.choice(pos, counts["degraded"]) if counts["degraded"] else [])]
    if counts["composite"]:
        rows += [(COMPOSITE, int(i), int(j)) for i, j in zip(rng.choice(src, counts["composite"]),
                                                              rng.choice(dst, counts["composite"]))]
    table = np.array([(k, i, j, s) for s, (k, i, j) in enumerate(rows)], dtype=np.int64)
    table[:, 3] = rng.integers(0, 2**31 - 1, len(table))
    return table


def split_train_val(table: np.ndarray, num_samples: int, val_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out items by image (no image in both parts): ``(train rows, val rows)``.

    A composite whose two images fall on different sides is left out of both.
    """
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}", param="val_fraction")
    rng = np.random.default_rng([seed, 2])
    val_images = rng.random(num_samples) < val_fraction
    first = val_images[table[:, 1]]
    has_second = table[:, 2] >= 0
    second = np.where(has_second, val_images[np.maximum(table[:, 2], 0)], first)
    return table[~first & ~second], table[first & second]


# ------------------------------------------------------------------------------------------
# Building one item (pure, on arrays at the network's resolution)
# ------------------------------------------------------------------------------------------
def degrade(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An eroded or partly erased copy of a good mask: ``(S, S)`` bool → ``(S, S)`` bool."""
    from scipy import ndimage

    s = mask.shape[0]
    if rng.random() < 0.5:
        radius = int(rng.integers(1, max(2, s // 12)))
        return ndimage.binary_erosion(mask, iterations=radius)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return mask
    # erase the part of the mask on one side of a random line through it
    cy, cx = ys.mean(), xs.mean()
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(-0.3, 0.6) * np.sqrt(len(ys))
    yy, xx = np.mgrid[0:s, 0:s]
    side = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle) > offset
    return mask & ~side


def paste(src_image: np.ndarray, src_mask: np.ndarray, src_ref: np.ndarray, dst_image: np.ndarray,
          dst_mask: np.ndarray, dst_ref: np.ndarray, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the source's foreground and paste it on the background of the target image.

    All ``(S, S, 3)`` uint8 / ``(S, S)`` bool at one size → (image, mask, reference), where
    the mask and reference are the unions of the target's and the pasted object's.  The
    object is scaled by 0.5-1.0 and placed where it covers the least of the target's mask
    (best of 6 random places).
    """
    from scipy import ndimage

    s = dst_mask.shape[0]
    ys, xs = np.nonzero(src_mask)
    if len(ys) == 0:
        return dst_image, dst_mask, dst_ref
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    zoom = rng.uniform(0.5, 1.0)
    obj_m = ndimage.zoom(src_mask[y0:y1, x0:x1].astype(np.uint8), zoom, order=0).astype(bool)
    obj_r = ndimage.zoom((src_ref & src_mask)[y0:y1, x0:x1].astype(np.uint8), zoom, order=0).astype(bool)
    obj_i = ndimage.zoom(src_image[y0:y1, x0:x1], (zoom, zoom, 1), order=1)
    h, w = obj_m.shape
    if h == 0 or w == 0 or h > s or w > s:
        return dst_image, dst_mask, dst_ref
    best, best_overlap = (0, 0), None
    for _ in range(6):
        py, px = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
        overlap = int((dst_mask[py : py + h, px : px + w] & obj_m).sum())
        if best_overlap is None or overlap < best_overlap:
            best, best_overlap = (py, px), overlap
    py, px = best
    image, mask, ref = dst_image.copy(), dst_mask.copy(), dst_ref.copy()
    region = (slice(py, py + h), slice(px, px + w))
    image[region][obj_m] = obj_i[obj_m]
    mask[region] |= obj_m
    ref[region] &= ~obj_m  # what the pasted object covers is now the object
    ref[region] |= obj_r
    return image, mask, ref


def normalized_rgb(image: np.ndarray) -> np.ndarray:
    """``(S, S, 3)`` uint8 image → ``(3, S, S)`` float32, ImageNet-normalized (the scorer's RGB channels)."""
    return ((image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def network_input(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The scorer's input: ``(S, S, 3)`` uint8 image and ``(S, S)`` bool mask → ``(4, S, S)``
    float32 (ImageNet-normalized RGB, and the mask as -1/+1)."""
    return np.concatenate([normalized_rgb(image), (mask.astype(np.float32) * 2 - 1)[None]], axis=0)


def resize_pair(image: np.ndarray, masks: list[np.ndarray], size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize an image (bilinear) and masks (nearest) to ``(size, size)``."""
    from PIL import Image

    img = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    out = [np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 127
           for m in masks]
    return img, out


def recomputed_ac(image: np.ndarray, mask: np.ndarray, ref: np.ndarray, *, b: float, formula: str) -> float:
    """AC (Eq. 3) of a synthesized mask against its reference, at the network's resolution."""
    f1 = metrics.f_measure(ref, mask, formula=formula)
    f = metrics.objectness(metrics.edge_map(image), mask) if b else 1.0
    return metrics.boundary_accuracy(f1, f, b=b)


class ScorerTrainingSet(StoreHandle):
    """A torch-style dataset of synthesized items, built from the store on demand.

    Each item: ``(x (4, S, S) float32, target float32)``.  A worker process opens its own
    read-only handle on the store (on first use).
    """

    def __init__(self, store_path: str, table: np.ndarray, *, size: int, ac: np.ndarray,
                 reference: str, b: float, formula: str, proxy: str = "proxy") -> None:
        self.store_path = store_path
        self.proxy = proxy  # the proxy set whose masks B are scored
        self.table = table
        self.size = size
        self.ac = np.asarray(ac, dtype=np.float32)
        self.reference = reference
        self.b = b
        self.formula = formula

    def __len__(self) -> int:
        return len(self.table)


    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        st = self.store
        image = st.image(i)
        b, _ = metrics.foreground(st.map(self.proxy, i))
        ref = st.map(self.reference, i)
        img, (bm, rm) = resize_pair(image, [b, ref], self.size)
        return img, bm, rm

    def item(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Item k as arrays: ``(image (S, S, 3) uint8, mask (S, S) bool, target)``."""
        kind, i, j, seed = (int(v) for v in self.table[k])
        rng = np.random.default_rng(seed)
        img, mask, ref = self._load(i)
        if kind in (POSITIVE, NEGATIVE):
            return img, mask, float(self.ac[i])
        if kind == DEGRADED:
            degraded = degrade(mask, rng)
            return img, degraded, recomputed_ac(img, degraded, ref, b=self.b, formula=self.formula)
        dimg, dmask, dref = self._load(j)
        cimg, cmask, cref = paste(img, mask, ref, dimg, dmask, dref, rng)
        return cimg, cmask, recomputed_ac(cimg, cmask, cref, b=self.b, formula=self.formula)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.float32]:
        img, mask, target = self.item(k)
        return network_input(img, mask), np.float32(target)
