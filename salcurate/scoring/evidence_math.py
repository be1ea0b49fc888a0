"""The formulas of ``score-evidence`` (``salcurate.scoring.evidence``), as pure functions.

For an image with foreground classes 1..C, tags T (the classes it shows), a proxy label map L
(0 background, 1..C classes, 255 ignore) and the tag classifier's normalized CAMs A_c (each
tagged class divided by its maximum, IRN style: ``salcurate.nn.cam.normalize_cams``), with
R_c = {p : L(p) = c} and V = {p : L(p) != 255} (ignore pixels are neither inside nor outside)::

    inside_c = sum_{R_c} A_c / sum_V A_c                    the share of c's localization inside c's region
    purity_c = sum_{R_c} A_c / sum_{R_c} sum_{k in T} A_k   the share of the region's evidence that is c's
    ce       = mean_{c in T} sqrt(inside_c * purity_c)      class evidence of the proxy
    ce_in    = mean_{c in T} inside_c,   ce_pure = mean_{c in T} purity_c

A share whose denominator is 0 is 0: an empty R_c (a tagged class the proxy missed) gives
inside_c = purity_c = 0, and so does a class without any CAM mass.

Why the geometric mean: inside_c acts as the recall of c's evidence and purity_c as the
precision of c's region, and sqrt(precision x recall) is the Fowlkes-Mallows index (Fowlkes &
Mallows, "A Method for Comparing Two Hierarchical Clusterings", JASA 1983).  Either failure alone
ruins a region: a region that holds all of c's evidence but as much of a co-occurring look-alike's
(the wrong one of two tagged classes, the dominant fault of CAM proxies) has purity 1/2; a pure
region that holds a tenth of c's evidence missed most of the object.  The product punishes both
and is 0 when either is (a missed class), where an arithmetic mean would still give 1/2.  The
image's score averages its tagged classes with equal weight, as the per-image mIoU does.

Tag confidence, from the classifier's image-level probabilities p_c = sigmoid(S_c)::

    tagp = min_{c in T} p_c      a tagged class the classifier doubts has a poor CAM
    tagx = max_{c not in T} p_c  a confident untagged class: look-alike confusion is likely (0 when all are tagged)

Reference reliability, from the saliency map s alone: Otsu's separability measure (Otsu, "A
Threshold Selection Method from Gray-Level Histograms", IEEE SMC 1979, Eq. 12 and 18)::

    eta = max_k sigma_B^2(k) / sigma_T^2,   sigma_B^2(k) = (mu_T omega(k) - mu(k))^2 / (omega(k) (1 - omega(k)))

over the map's grey levels (omega, mu: the zeroth and first cumulative moments up to level k,
mu_T the mean, sigma_T^2 the variance).  eta is 1 for a two-level map (a clean figure-ground
split) and falls as the map turns into a smear; a constant map, which separates nothing, gives 0.

Reference reliability from the classifier (issue 12): the agreement of the reference H (the
saliency map binarized as ``score-coarse`` makes it, Otsu) with the classifier's own foreground
F = {p : max_{c in T} A_c(p) >= t}, t the background threshold the proxies were made with (a
pixel is background where no normalized CAM reaches it: IRN's CAM evaluation, as
``salcurate.nn.cam.cam_scores``)::

    hr = |F & H| / |F | H|        (Jaccard; 1 when both are empty, NaN without tags)

IoU rather than the F-measure: neither map is the truth, and IoU is symmetric and the stricter of
the two when used as a weight; F1 = 2 IoU / (1 + IoU) is a monotone function of it, so either
ranks the images the same.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from salcurate.errors import InputError

__all__ = ["IGNORE", "class_evidence", "evidence_score", "otsu_separability", "reference_agreement",
           "tag_confidence"]

#: The label of pixels that belong to no region (the store's ignore label).
IGNORE = 255


def _describe(x: object) -> str:
    if isinstance(x, (Tensor, np.ndarray)):
        return f"{x.dtype} array of shape {tuple(x.shape)}"
    return type(x).__name__


def _tag_vector(tags: object, num_classes: int) -> np.ndarray | None:
    a = np.asarray(tags.cpu() if isinstance(tags, Tensor) else tags)
    if a.shape != (num_classes,) or not (a.dtype == bool or (a.dtype.kind in "iuf" and np.isin(a, (0, 1)).all())):
        return None
    return a.astype(bool)


def _evidence(cams: Tensor, labels: Tensor, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """inside and purity of the classes ``classes`` (0-based) whose CAMs ``cams`` (K, H, W) holds, in that order."""
    a = cams.double().clamp_min(0)
    lab = labels.to(a.device).long()
    regions = lab[None] == torch.as_tensor(classes + 1, device=a.device, dtype=torch.long)[:, None, None]
    own = (a * regions).sum(dim=(1, 2))
    total = (a * (lab != IGNORE)).sum(dim=(1, 2))
    region_all = (a.sum(dim=0)[None] * regions).sum(dim=(1, 2))
    inside = torch.where(total > 0, own / total.clamp_min(1e-300), torch.zeros_like(own))
    purity = torch.where(region_all > 0, own / region_all.clamp_min(1e-300), torch.zeros_like(own))
    return inside.cpu().numpy(), purity.cpu().numpy()


def class_evidence(cams: Tensor | np.ndarray, labels: Tensor | np.ndarray,
                   tags: object) -> tuple[np.ndarray, np.ndarray]:
    """inside_c and purity_c of every tagged class (module docstring).

    cams: ``(C, H, W)`` float, >= 0 (normalized CAMs; untagged channels are not read); labels:
    ``(H, W)`` integer, 0 background, 1..C classes, 255 ignore; tags: ``(C,)`` bool over the
    foreground classes -> ``(inside (C,), purity (C,))`` float64 in [0, 1], NaN for untagged classes.
    Tensors stay on their device for the sums.
    """
    c = torch.as_tensor(cams) if isinstance(cams, np.ndarray) else cams
    lab = torch.as_tensor(labels) if isinstance(labels, np.ndarray) else labels
    keep = _tag_vector(tags, c.shape[0]) if isinstance(c, Tensor) and c.dim() == 3 else None
    if not (keep is not None and c.is_floating_point() and isinstance(lab, Tensor) and lab.dim() == 2
            and not lab.is_floating_point() and tuple(lab.shape) == tuple(c.shape[1:])):
        raise InputError(f"class_evidence expects (C, H, W) float CAMs, (H, W) integer labels of the same size and "
                         f"(C,) bool tags, got {_describe(cams)}, {_describe(labels)} and {_describe(tags)}; pass "
                         "normalize_cams's output resized to the proxy, the proxy and the store's tags",
                         param=("cams", "labels", "tags"))
    inside = np.full(c.shape[0], np.nan)
    purity = np.full(c.shape[0], np.nan)
    classes = np.flatnonzero(keep)
    if len(classes):
        inside[classes], purity[classes] = _evidence(c[torch.as_tensor(classes, device=c.device)], lab, classes)
    return inside, purity


def evidence_score(inside: np.ndarray, purity: np.ndarray) -> tuple[float, float, float]:
    """``(ce, ce_in, ce_pure)`` of one image from its classes' shares (module docstring).

    inside, purity: ``(C,)`` float in [0, 1], NaN for untagged classes (as :func:`class_evidence`
    gives them) -> three floats, NaN when no class is tagged.
    """
    i = np.asarray(inside, dtype=np.float64)
    p = np.asarray(purity, dtype=np.float64)
    if not (i.ndim == 1 and i.shape == p.shape and np.array_equal(np.isnan(i), np.isnan(p))
            and bool(((i[~np.isnan(i)] >= 0) & (i[~np.isnan(i)] <= 1)).all())
            and bool(((p[~np.isnan(p)] >= 0) & (p[~np.isnan(p)] <= 1)).all())):
        raise InputError(f"evidence_score expects inside and purity as (C,) shares in [0, 1], NaN for the same "
                         f"untagged classes, got {_describe(inside)} and {_describe(purity)}; pass class_evidence's "
                         "output", param=("inside", "purity"))
    tagged = ~np.isnan(i)
    if not tagged.any():
        return math.nan, math.nan, math.nan
    i, p = i[tagged], p[tagged]
    return float(np.mean(np.sqrt(i * p))), float(np.mean(i)), float(np.mean(p))


def tag_confidence(probs: np.ndarray, tags: object) -> tuple[float, float]:
    """``(tagp, tagx)``: the lowest probability of a tagged class and the highest of an untagged one.

    probs: ``(C,)`` float in [0, 1] (the classifier's sigmoid outputs); tags: ``(C,)`` bool ->
    two floats: tagp NaN without tags, tagx 0 when every class is tagged.
    """
    p = np.asarray(probs, dtype=np.float64)
    keep = _tag_vector(tags, p.shape[0]) if p.ndim == 1 else None
    if keep is None or not bool(((p >= 0) & (p <= 1)).all()):
        raise InputError(f"tag_confidence expects (C,) probabilities in [0, 1] and (C,) bool tags, got "
                         f"{_describe(probs)} and {_describe(tags)}; pass the classifier's sigmoid outputs and the "
                         "store's tags", param=("probs", "tags"))
    tagp = float(p[keep].min()) if keep.any() else math.nan
    tagx = float(p[~keep].max()) if (~keep).any() else 0.0
    return tagp, tagx


def otsu_separability(saliency: np.ndarray) -> float:
    """Otsu's separability eta of a saliency map (module docstring): ``(H, W)`` -> float in [0, 1].

    saliency: uint8 (256 grey levels) or float (every distinct value a level), finite.  1 for a
    two-level map, 0 for a constant one.
    """
    s = np.asarray(saliency) if isinstance(saliency, np.ndarray) else None
    if s is None or s.ndim != 2 or s.size == 0 or s.dtype.kind not in "uif" or not np.isfinite(s).all():
        raise InputError(f"otsu_separability expects an (H, W) saliency map of finite numbers, got "
                         f"{_describe(saliency)}; pass the store's saliency map", param="saliency")
    if s.dtype == np.uint8:
        counts = np.bincount(s.reshape(-1), minlength=256).astype(np.float64)
        levels = np.arange(256, dtype=np.float64)
        levels, counts = levels[counts > 0], counts[counts > 0]
    else:
        levels, n = np.unique(s.astype(np.float64), return_counts=True)
        counts = n.astype(np.float64)
    if len(levels) < 2:
        return 0.0
    p = counts / counts.sum()
    mu_t = float((p * levels).sum())
    var_t = float((p * (levels - mu_t) ** 2).sum())
    if var_t <= 0:
        return 0.0
    omega = np.cumsum(p)[:-1]  # background = levels 0..k, k up to the second-largest level
    mu = np.cumsum(p * levels)[:-1]
    between = (mu_t * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-300)
    return float(min(1.0, between.max() / var_t))


def reference_agreement(cams: Tensor | np.ndarray, tags: object, reference: np.ndarray, *, threshold: float) -> float:
    """``hr``: IoU of the classifier's foreground with the reference mask H (module docstring).

    cams: ``(C, H, W)`` float normalized CAMs (untagged channels are not read); tags: ``(C,)``
    bool; reference: ``(H, W)`` bool (H); threshold: in (0, 1], the background threshold ->
    float in [0, 1]: 1 when neither map has foreground, NaN when no class is tagged.
    """
    c = torch.as_tensor(cams) if isinstance(cams, np.ndarray) else cams
    keep = _tag_vector(tags, c.shape[0]) if isinstance(c, Tensor) and c.dim() == 3 else None
    ref = np.asarray(reference) if isinstance(reference, np.ndarray) else None
    if not (keep is not None and c.is_floating_point() and ref is not None and ref.dtype == bool
            and ref.shape == tuple(c.shape[1:]) and isinstance(threshold, (int, float))
            and 0 < threshold <= 1):
        raise InputError(f"reference_agreement expects (C, H, W) float CAMs, (C,) bool tags, an (H, W) bool "
                         f"reference of the same size and a threshold in (0, 1], got {_describe(cams)}, "
                         f"{_describe(tags)}, {_describe(reference)} and {threshold!r}; pass normalize_cams's output, "
                         "the store's tags, the binarized saliency map and the proxies' background threshold",
                         param=("cams", "tags", "reference", "threshold"))
    if not keep.any():
        return math.nan
    fg = (c[torch.as_tensor(np.flatnonzero(keep), device=c.device)].amax(dim=0) >= threshold).cpu().numpy()
    union = int((fg | ref).sum())
    return int((fg & ref).sum()) / union if union else 1.0
