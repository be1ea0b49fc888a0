"""The mask scores of SAL (Zhou et al., IEEE TMM, Section III-B): the coarse score SC (Eq. 3-5),
the fine score SF (Eq. 7), and the true quality measures used to validate scores, as pure
functions over arrays.

Notation (docs/method.md): G is a proxy label map, B its binary foreground (label not 0 and not
255), H a binary reference mask, Y the image tags.  Pixels labelled 255 in G are left out of
every count ("valid" masks below): they count neither in B nor against it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from salcurate.config import Choice
from salcurate.errors import InputError

IGNORE_LABEL = 255


class AcFormula(Choice):
    """How the F1 of Eq. 3 is computed (see :func:`f_measure`)."""

    standard = "standard"
    paper = "paper"


AC_FORMULAS = AcFormula.values()


def _check_same_shape(*arrays: np.ndarray, names: tuple[str, ...]) -> None:
    shapes = [a.shape for a in arrays]
    if any(s != shapes[0] or len(s) != 2 for s in shapes):
        joined = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
        raise InputError(f"expected 2-D arrays of one shape, got {joined}; resize the maps to their image")


def foreground(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B and the valid pixels of a label map.

    labels: ``(H, W)`` uint8 → ``(B, valid)``, both ``(H, W)`` bool; B = label not in {0, 255},
    valid = label != 255.
    """
    if labels.ndim != 2:
        raise InputError(f"expected an (H, W) label map, got shape {labels.shape}")
    valid = labels != IGNORE_LABEL
    return (labels != 0) & valid, valid


def f_measure(reference: np.ndarray, mask: np.ndarray, *, valid: np.ndarray | None = None,
              formula: str = "standard") -> float:
    """F1 of a mask B against a reference H (the first factor of Eq. 3).

    reference H, mask B, valid: ``(H, W)`` bool → float in [0, 1].

    ``"standard"``: precision = |H∩B| / |B|, recall = |H∩B| / |H|, F1 = 2PR / (P + R).
    ``"paper"``: Eq. 3 as printed, precision = |H∩B| / |H|, recall = |H∩B| / |H∪B|.
    Only ``valid`` pixels count.  |B| = 0 or |H| = 0 gives 0 (no agreement can be shown).
    """
    if formula not in AC_FORMULAS:
        raise InputError(f"unknown AC formula {formula!r}; expected one of {', '.join(AC_FORMULAS)}", param="formula")
    _check_same_shape(reference, mask, names=("reference", "mask"))
    if valid is not None:
        reference = reference & valid
        mask = mask & valid
    n_h = int(np.count_nonzero(reference))
    n_b = int(np.count_nonzero(mask))
    if n_h == 0 or n_b == 0:
        return 0.0
    inter = int(np.count_nonzero(reference & mask))
    if inter == 0:
        return 0.0
    if formula == "standard":
        precision, recall = inter / n_b, inter / n_h
    else:
        precision, recall = inter / n_h, inter / (n_h + n_b - inter)
    return 2.0 * precision * recall / (precision + recall)


def edge_map(image: np.ndarray, *, floor: float = 8.0) -> np.ndarray:
    """Normalized strength of the strongest image edge near each pixel, for objectness.

    image: ``(H, W, 3)`` or ``(H, W)`` uint8 → ``(H, W)`` float32 in [0, 1].
    The image is turned grey (ITU-R 601 luma) and averaged over 2x2 blocks, then
    :func:`edge_strength` does the rest.
    """
    from salcurate.imageio import half_resolution

    if image.ndim == 3:
        grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif image.ndim == 2:
        grey = image.astype(np.float32)
    else:
        raise InputError(f"expected an (H, W, 3) or (H, W) image, got shape {image.shape}")
    h, w = grey.shape
    half = half_resolution(grey) if h >= 8 and w >= 8 else grey
    return edge_strength(half, (h, w), floor=floor)


def edge_strength(half: np.ndarray, shape: tuple[int, int], *, floor: float = 8.0) -> np.ndarray:
    """Edge strength at full resolution from a half-resolution grey image.

    half: ``(H // 2, W // 2)`` float grey (or ``(H, W)`` for images under 8 pixels a side)
    → ``(H, W)`` float32 in [0, 1].

    With |∇I| the Sobel gradient magnitude of the half-resolution grey image I (averaging
    over 2x2 blocks also smooths it) and s = max(90th percentile of |∇I|, ``floor``):
    e = min(1, max over the 3x3 half-resolution neighbourhood of |∇I| / s), shown at full
    resolution.  So e is 1 on the image's strong edges and within about 2 pixels of one, and
    near 0 in flat regions; the floor keeps noise in a flat image from counting as edges.
    """
    h, w = shape
    half = np.asarray(half, dtype=np.float32)
    mag = np.hypot(ndimage.sobel(half, axis=1), ndimage.sobel(half, axis=0)) / 8.0  # a 1-level step gives 1
    scale = max(float(np.percentile(mag[::2, ::2], 90)), floor)
    mag = _max3x3(mag)
    np.multiply(mag, 1.0 / scale, out=mag)
    np.minimum(mag, 1.0, out=mag)
    if mag.shape == (h, w):
        return mag
    full = np.repeat(np.repeat(mag, 2, axis=0), 2, axis=1)
    out = np.empty((h, w), np.float32)
    fh, fw = min(full.shape[0], h), min(full.shape[1], w)
    out[:fh, :fw] = full[:fh, :fw]
    out[fh:, :fw] = out[fh - 1 : fh, :fw]  # odd sizes: repeat the last row / column
    out[:, fw:] = out[:, fw - 1 : fw]
    return out


def _max3x3(a: np.ndarray) -> np.ndarray:
    """3x3 maximum filter (edges replicated), as two separable passes of shifted maxima."""
    rows = a.copy()
    np.maximum(rows[1:], a[:-1], out=rows[1:])
    np.maximum(rows[:-1], a[1:], out=rows[:-1])
    out = rows.copy()
    np.maximum(out[:, 1:], rows[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], rows[:, 1:], out=out[:, :-1])
    return out


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """The inner boundary of a mask, without the image border.

    mask: ``(H, W)`` bool → ``(H, W)`` bool: pixels of the mask with a 4-neighbour outside it.
    The image border is no object boundary, so a mask's pixels on it are not counted.
    """
    out = np.zeros_like(mask, dtype=bool)
    c = mask[1:-1, 1:-1]
    inner = mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    out[1:-1, 1:-1] = c & ~inner
    return out


def objectness(edges: np.ndarray, mask: np.ndarray) -> float:
    """F(B): how well the boundary of B follows strong image edges (the objectness of Eq. 3).

    edges: ``(H, W)`` float in [0, 1] from :func:`edge_map`; mask B: ``(H, W)`` bool → [0, 1].

    F(B) = mean of ``edges`` over the boundary of B (:func:`mask_boundary`).  The paper uses
    BING (Cheng et al., CVPR 2014), which scores boxes and needs trained model files; this
    mask-level stand-in follows the same idea (objects are enclosed by strong edges) and needs
    only the image.  A mask with no boundary (empty, or the whole image) gives 0.
    """
    _check_same_shape(edges, mask, names=("edges", "mask"))
    boundary = mask_boundary(mask)
    n = int(np.count_nonzero(boundary))
    if n == 0:
        return 0.0
    return float(edges[boundary].sum(dtype=np.float64) / n)


def boundary_accuracy(f1: np.ndarray | float, objectness_score: np.ndarray | float, *,
                      b: float = 0.1) -> np.ndarray | float:
    """AC = F1(H, B) x F(B)^b (Eq. 3); b = 0 switches objectness off (F^0 = 1).

    f1, objectness_score: floats, or ``(N,)`` arrays (NaN stays NaN) → the same kind.
    """
    if b < 0:
        raise InputError(f"expected b >= 0 (the objectness weight), got {b}", param="b")
    if isinstance(f1, np.ndarray):
        return f1 if b == 0 else f1 * np.power(objectness_score, b)
    return float(f1) * (1.0 if b == 0 else float(objectness_score) ** b)


def class_distribution(histogram: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """CD (Eq. 4): the fraction of foreground pixels whose label is among the image's tags.

    histogram: ``(N, C + 2)`` or ``(C + 2,)`` pixel counts per class 0..C plus ignore (the
    store's class histogram); tags: ``(N, C)`` or ``(C,)`` bool → ``(N,)`` or scalar float.
    |B| = 0 gives CD = 0.
    """
    histogram = np.asarray(histogram)
    tags = np.asarray(tags, dtype=bool)
    single = histogram.ndim == 1
    h2, t2 = np.atleast_2d(histogram), np.atleast_2d(tags)
    if h2.shape[0] != t2.shape[0] or h2.shape[1] != t2.shape[1] + 2:
        raise InputError(f"expected histogram (N, C+2) and tags (N, C), got {histogram.shape} and {tags.shape}")
    fg = h2[:, 1:-1].astype(np.float64)
    total = fg.sum(axis=1)
    tagged = (fg * t2).sum(axis=1)
    cd = np.divide(tagged, total, out=np.zeros_like(total), where=total > 0)
    return float(cd[0]) if single else cd


def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class 0..C plus ignore: ``(H, W)`` uint8 → ``(C + 2,)`` int64."""
    counts = np.bincount(labels.ravel(), minlength=256)
    return np.concatenate([counts[: num_classes + 1], counts[IGNORE_LABEL : IGNORE_LABEL + 1]])


def coarse_score(ac: np.ndarray | float, cd: np.ndarray | float) -> np.ndarray | float:
    """SC = AC x CD (Eq. 5).

    ac, cd: floats, or ``(N,)`` arrays (NaN stays NaN) → the same kind.
    """
    return np.asarray(ac) * np.asarray(cd) if isinstance(ac, np.ndarray) else float(ac) * float(cd)


def fine_score(p: np.ndarray | float, cd: np.ndarray | float) -> np.ndarray | float:
    """SF = P x CD (Eq. 7, SAL Section III-B2).

    P is the scorer network's prediction of the mask's boundary accuracy AC (Eq. 6 trains it
    towards AC), CD the class distribution of Eq. 4; SF replaces SC's reference-based AC with
    the network's P.  p, cd: floats, or ``(N,)`` arrays (NaN stays NaN) → the same kind.
    """
    return np.asarray(p) * np.asarray(cd) if isinstance(p, np.ndarray) else float(p) * float(cd)


# ----------------------------------------------------------------------------------------
# True quality (needs ground truth): what a score should predict
# ----------------------------------------------------------------------------------------
def true_quality(proxy: np.ndarray, gt: np.ndarray, *, formula: str = "standard") -> float:
    """AGT: F1 of the proxy foreground against the ground-truth foreground (Fig. 6 and 9).

    proxy, gt: ``(H, W)`` uint8 label maps → float in [0, 1].  Pixels labelled 255 in either
    map are left out.  This is Eq. 3 with H = ground truth and b = 0.
    """
    _check_same_shape(proxy, gt, names=("proxy", "gt"))
    b, valid_p = foreground(proxy)
    h, valid_g = foreground(gt)
    return f_measure(h, b, valid=valid_p & valid_g, formula=formula)


def proxy_miou(proxy: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """The proxy's mIoU against ground truth over the classes present in either map.

    proxy, gt: ``(H, W)`` uint8 → float in [0, 1]; pixels labelled 255 in either are left out.
    """
    _check_same_shape(proxy, gt, names=("proxy", "gt"))
    valid = (proxy != IGNORE_LABEL) & (gt != IGNORE_LABEL)
    k = num_classes + 1
    p, g = proxy[valid].astype(np.int64), gt[valid].astype(np.int64)
    if p.size == 0:
        return 0.0
    if p.max(initial=0) >= k or g.max(initial=0) >= k:
        raise InputError(f"label values must be below {k} or 255; got {max(p.max(), g.max())}")
    conf = np.bincount(g * k + p, minlength=k * k).reshape(k, k)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())
