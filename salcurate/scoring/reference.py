"""Reference masks H from saliency maps (SAL, Zhou et al., IEEE TMM, Section III-B1).

The paper makes H by running a salient-object detector (DSS) on each training image,
refining its map with a fully connected CRF and binarizing it; for images with several
objects it erases the salient region found and looks again, uniting the results
("a scheme with masks erasing similar to [11]").  The project's method notes (NOTES.md,
"Reference masks H") fix the open points:

* imported saliency maps (any detector, 8-bit) are used in one pass: :func:`reference_mask`;
* without imported maps, a published classical unsupervised method makes them:
  :func:`builtin_saliency`, Robust Background Detection (Zhu, Liang, Wei, Sun, CVPR 2014),
  the successor of geodesic saliency (Wei et al., ECCV 2012) by the same group.  It can be
  re-run with an erased region, so :func:`builtin_reference` finds several objects;
* binarization threshold: twice the mean saliency (Achanta et al., CVPR 2009), or Otsu;
* the CRF (Krähenbühl & Koltun, NIPS 2011) runs over {background, salient} with a unary made
  from the saliency map by :func:`calibrate`, so that without CRF the result is exactly
  ``saliency >= threshold``.

All functions are pure: arrays in, arrays out.  pydensecrf is imported only when a CRF runs.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from salcurate.config import Choice
from salcurate.crf import CRF_EPS, CRF_INSTALL, crf_available, dense_crf  # noqa: F401 (crf_available re-exported)
from salcurate.errors import InputError
from salcurate.imageio import check_image, describe_array

log = logging.getLogger(__name__)


class Threshold(Choice):
    """How a saliency map is binarized (see :func:`adaptive_threshold`)."""

    adaptive = "adaptive"
    otsu = "otsu"


THRESHOLD_METHODS = Threshold.values()

#: Thresholds are clipped to this range, so that :func:`calibrate` is always defined.
THRESHOLD_RANGE = (0.05, 0.95)
_CRF_MISSING = f"the CRF refinement needs pydensecrf, but pydensecrf is not installed; {CRF_INSTALL}, or pass crf=False"


@dataclasses.dataclass(frozen=True)
class CrfParams:
    """Settings of the dense CRF that refines saliency maps (see :func:`crf_refine`).

    The defaults are the ones the DSS saliency code (Hou et al., CVPR 2017) uses with
    pydensecrf for its own maps: Gaussian kernel sxy 3, compat 3; bilateral kernel sxy 60,
    srgb 5, compat 5; 5 mean-field iterations.  (SAL-Net's segmentation CRF uses other values,
    see NOTES.md; these are for saliency.)
    """

    iterations: int = 5
    gaussian_sxy: float = 3
    gaussian_compat: float = 3
    bilateral_sxy: float = 60
    bilateral_srgb: float = 5
    bilateral_compat: float = 5


# ---------------------------------------------------------------------------------------------
# input checks (one per public function)


def _check_unit_map(array: object, what: str) -> None:
    if not (isinstance(array, np.ndarray) and array.ndim == 2 and array.size > 0
            and np.issubdtype(array.dtype, np.floating)):
        raise InputError(
            f"expected {what} as a non-empty (H, W) float array in [0, 1], got "
            f"{describe_array(array)}; divide 8-bit maps by 255"
        )
    lo, hi = float(array.min()), float(array.max())
    if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
        raise InputError(
            f"expected {what} values in [0, 1], got values from {lo} to {hi}; "
            "normalize the map (e.g. divide by its maximum)"
        )


def _check_map_for_image(image: object, array: object, what: str) -> None:
    check_image(image, min_side=2)
    _check_unit_map(array, what)
    size, got = image.shape[:2], array.shape  # type: ignore[union-attr]
    if got != size:
        raise InputError(f"expected {what} of the image's size {size}, got {got}; "
                         "resize the map to its image")


# ---------------------------------------------------------------------------------------------
# built-in saliency: Robust Background Detection (Zhu et al., CVPR 2014)


def _resize_float(array: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size_hw
    return np.asarray(Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
                      .resize((w, h), Image.Resampling.BILINEAR))


def _gauss_weight(dist: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-d² / 2σ²), cut to 0 beyond 3σ (Dist2WeightMatrix of the RBD code)."""
    weight = np.exp(-np.square(dist) / (2.0 * sigma * sigma))
    weight[dist > 3.0 * sigma] = 0.0
    return weight


def _working_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """The image shrunk (bilinear) so that its longer side is at most ``max_side``; at least 2 x 2."""
    from PIL import Image

    big_h, big_w = image.shape[:2]
    scale = min(1.0, max_side / max(big_h, big_w))
    h, w = max(2, round(big_h * scale)), max(2, round(big_w * scale))
    return image if (h, w) == (big_h, big_w) else np.asarray(
        Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


@dataclasses.dataclass(frozen=True)
class _Superpixels:
    """SLIC superpixels of the working image and what RBD needs of them (``n`` superpixels)."""

    labels: np.ndarray  # (h, w) int, superpixel of each working pixel
    mean_lab: np.ndarray  # (n, 3) mean CIE Lab colour
    mean_pos: np.ndarray  # (n, 2) mean position in [0, 1]²
    adj: np.ndarray  # (n, n) bool, 4-connected neighbours
    boundary: np.ndarray  # (n,) bool, within the border band
    erased: np.ndarray  # (n,) bool, at least 30 % background seeds

    @property
    def n(self) -> int:
        return len(self.mean_lab)


def _superpixels(small: np.ndarray, seeds: np.ndarray | None) -> _Superpixels | None:
    """SLIC superpixels of the working image with mean colour and position, adjacency, boundary
    and erased ones (``seeds``: ``(H, W)`` bool at the original size, or None); None when there
    are fewer than two."""
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    h, w = small.shape[:2]
    # superpixels of about 8 x 8 working pixels (the paper: ~600 pixels at full VOC size)
    n_segments = int(np.clip(h * w / 64, 16, 400))
    labels = slic(small, n_segments=n_segments, compactness=10, max_num_iter=5, start_label=0)
    n = int(labels.max()) + 1
    if n < 2:
        return None
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    lab = rgb2lab(small).reshape(-1, 3)
    mean_lab = np.stack([np.bincount(flat, lab[:, c], n) for c in range(3)], 1) / count[:, None]
    yy, xx = np.divmod(np.arange(h * w), w)
    mean_pos = np.stack([np.bincount(flat, yy, n) / h,
                         np.bincount(flat, xx, n) / w], 1) / count[:, None]

    # superpixel adjacency (4-connectivity), boundary superpixels, erased superpixels
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    cut = a != b
    adj = np.zeros((n, n), bool)
    adj[a[cut], b[cut]] = True
    adj |= adj.T
    t = max(1, round(0.02 * max(h, w)))  # RBD's 8-pixel band at ~400-pixel image size
    boundary = np.zeros(n, bool)
    boundary[np.concatenate([labels[:t].ravel(), labels[-t:].ravel(),
                             labels[:, :t].ravel(), labels[:, -t:].ravel()])] = True
    erased = np.zeros(n, bool)
    if seeds is not None and seeds.any():
        seed_small = seeds if seeds.shape == (h, w) else _resize_float(seeds, (h, w))
        erased = np.bincount(flat, seed_small.ravel().astype(np.float64), n) / count >= 0.3
    return _Superpixels(labels, mean_lab, mean_pos, adj, boundary, erased)


def _dynamic_params(adj: np.ndarray, col_dist: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Two-ring adjacency, clip value and the geodesic and smoothness sigmas (EstimateDynamicParas
    of the RBD code): ``(adj2 (n, n) bool, clip, geo_sigma, nei_sigma)``."""
    from scipy.sparse import csr_matrix

    n = len(adj)
    adj_sparse = csr_matrix(adj, dtype=np.float32)  # sparse product: no BLAS threads
    adj2 = adj | ((adj_sparse @ adj_sparse).toarray() > 0)
    np.fill_diagonal(adj2, False)
    no_self = ~np.eye(n, dtype=bool)
    min1 = np.where(adj & no_self, col_dist, np.inf).min(1)
    min2 = np.where(adj2, col_dist, np.inf).min(1)
    mean_min1 = float(np.mean(min1[np.isfinite(min1)])) if np.isfinite(min1).any() else 0.0
    clip = float(np.mean(min2[np.isfinite(min2)])) if np.isfinite(min2).any() else 0.0
    edge_d = col_dist[np.triu(adj, 1)]
    top = np.sort(edge_d)[::-1][: max(1, round(0.01 * edge_d.size))] if edge_d.size else np.zeros(1)
    mean_top = float(top.mean())
    geo_sigma = max(min(10.0, 3.0 * mean_min1, mean_top / 10.0), 5.0)
    nei_sigma = max(min(3.0 * mean_min1, 0.2 * mean_top, 20.0), 1e-3)
    return adj2, clip, geo_sigma, nei_sigma


def _background_weights(sp: _Superpixels, background: np.ndarray, col_dist: np.ndarray, clip: float,
                        geo_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Boundary connectivity (Section 3 of Zhu et al.): ``(bg_prob, bg_weight)``, ``(n,)`` each.

    Geodesic distances on the superpixel graph, edge weight = Lab distance minus the clip value
    (Wei et al.'s weight clipping), background superpixels linked to each other.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    n = sp.n
    linked = sp.adj | np.outer(background, background)
    iu, ju = np.nonzero(np.triu(linked, 1))
    weight = np.maximum(col_dist[iu, ju] - clip, 0.0)
    graph = coo_matrix((weight, (iu, ju)), shape=(n, n)).tocsr()  # explicit zeros stay edges
    geo = dijkstra(graph, directed=False, limit=3.0 * geo_sigma)
    w_geo = _gauss_weight(geo, geo_sigma)
    bnd_con = w_geo[:, background].sum(1) / np.sqrt(w_geo.sum(1))
    bg_prob = 1.0 - np.exp(-np.square(bnd_con) / 2.0)  # sigma_bndCon = 1
    bg_weight = np.where(bnd_con > 3.0, 1000.0, bg_prob)
    bg_weight[sp.erased] = 1000.0
    bg_prob[sp.erased] = 0.0  # erased regions are gone: they give no contrast (Eq. 8)
    return bg_prob, bg_weight


def _foreground_weights(sp: _Superpixels, col_dist: np.ndarray, bg_prob: np.ndarray) -> np.ndarray | None:
    """Background-weighted contrast wCtr (Eq. 8), sigma_spa = 0.4 on [0, 1] positions, scaled to
    [0, 1] with values below its Otsu threshold set to 0: ``(n,)``, or None without contrast."""
    from scipy.spatial.distance import cdist
    from skimage.filters import threshold_otsu

    pos_dist = cdist(sp.mean_pos, sp.mean_pos)
    w_ctr = (col_dist * _gauss_weight(pos_dist, 0.4)) @ bg_prob
    w_ctr[sp.erased] = 0.0
    span = float(w_ctr.max() - w_ctr.min())
    if span <= 1e-9:
        return None
    fg_weight = (w_ctr - w_ctr.min()) / span
    fg_weight[fg_weight < threshold_otsu(fg_weight)] = 0.0  # "removeLowVals" of the RBD code
    return fg_weight


def _optimize(sp: _Superpixels, adj2: np.ndarray, col_dist: np.ndarray, nei_sigma: float, bg_weight: np.ndarray,
              fg_weight: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Saliency optimization (Eq. 9): min Σ bg s² + Σ fg (s-1)² + Σ w_ij (s_i - s_j)², clipped at 0."""
    from scipy import linalg

    smooth_links = adj2 | np.outer(sp.boundary, sp.boundary)
    w_smooth = np.where(smooth_links, _gauss_weight(col_dist, nei_sigma), 0.0) + 0.1 * sp.adj
    np.fill_diagonal(w_smooth, 0.0)
    system = np.diag(w_smooth.sum(1) + 5.0 * bg_weight + fg_weight) - w_smooth  # bgLambda = 5
    try:  # positive definite: the graph is connected and boundary superpixels have w_bg > 0
        sal = linalg.solve(system, fg_weight, assume_a="pos", check_finite=False)
    except linalg.LinAlgError:  # degenerate superpixel graph: fall back to least squares
        log.debug("RBD system not positive definite for a %dx%d image", *size)
        sal = linalg.lstsq(system, fg_weight, check_finite=False)[0]
    return np.clip(sal, 0.0, None)


def _rbd(image: np.ndarray, seeds: np.ndarray | None, max_side: int) -> tuple[np.ndarray, float]:
    """RBD saliency at reduced resolution; see :func:`builtin_saliency`."""
    from scipy.spatial.distance import cdist

    big_h, big_w = image.shape[:2]
    nothing = np.zeros((big_h, big_w), np.float32), 0.0
    small = _working_image(image, max_side)
    h, w = small.shape[:2]
    sp = _superpixels(small, seeds)
    if sp is None:
        return nothing
    background = sp.boundary | sp.erased
    if background.all():
        return nothing
    col_dist = cdist(sp.mean_lab, sp.mean_lab)
    adj2, clip, geo_sigma, nei_sigma = _dynamic_params(sp.adj, col_dist)
    bg_prob, bg_weight = _background_weights(sp, background, col_dist, clip, geo_sigma)
    fg_weight = _foreground_weights(sp, col_dist, bg_prob)
    if fg_weight is None:
        return nothing
    sal = _optimize(sp, adj2, col_dist, nei_sigma, bg_weight, fg_weight, (big_h, big_w))
    strength = float(sal.max())
    if strength <= 1e-9:
        return nothing
    sal_small = (sal / strength).astype(np.float32)[sp.labels]
    if (h, w) != (big_h, big_w):
        sal_small = np.clip(_resize_float(sal_small, (big_h, big_w)), 0.0, 1.0)
    return sal_small, strength


def builtin_saliency(image: np.ndarray, *, background_seeds: np.ndarray | None = None,
                     max_side: int = 160) -> tuple[np.ndarray, float]:
    """Unsupervised salient-object map of an image: Robust Background Detection (RBD).

    image: ``(H, W, 3)`` uint8; background_seeds: ``(H, W)`` bool or None →
    (saliency ``(H, W)`` float32 in [0, 1], strength float >= 0).

    Method: Zhu, Liang, Wei, Sun, "Saliency Optimization from Robust Background Detection",
    CVPR 2014 (RBD), following the authors' released MATLAB code for its settings.  It builds
    on geodesic saliency with the background prior (Wei, Wen, Zhu, Sun, ECCV 2012): both
    measure how a region connects to the image boundary along geodesic paths.  A plain
    pixel-level geodesic distance to the border was tried first; on real photos it lit up
    edges and object outlines and missed objects touching the border, so RBD replaced it.

    Steps, on the image shrunk so that its longer side is ``max_side`` (bilinear):

    1. SLIC superpixels of about 8 x 8 pixels; each gets its mean CIE Lab colour and mean
       position (in [0, 1]²).  Boundary superpixels: those within a band of 2 % of the longer
       side of the border.
    2. Geodesic distance d_geo between superpixels over the adjacency graph, edge weight
       max(0, d_app - c) with d_app the Lab distance and c the mean smallest Lab distance to a
       two-ring neighbour (Wei et al.'s weight clipping, which stops small appearance changes
       from adding up); boundary superpixels are linked to each other.
    3. Boundary connectivity BndCon(p) = Len_bnd(p) / sqrt(Area(p)) with
       Area(p) = Σ_i exp(-d_geo²(p, p_i) / 2σ²) and Len_bnd the same sum over boundary
       superpixels (Section 3 of the paper; σ adaptive in [5, 10] as in the code);
       w_bg = 1 - exp(-BndCon² / 2).
    4. Background-weighted contrast wCtr(p) = Σ_i d_app(p, p_i) w_spa(p, p_i) w_bg(p_i),
       w_spa = exp(-d_spa² / 2·0.4²) (Eq. 8), scaled to [0, 1], values below its Otsu
       threshold set to 0; this is the foreground weight w_fg.
    5. Saliency s minimizes Σ 5·w_bg,i s_i² + Σ w_fg,i (s_i - 1)² + Σ w_ij (s_i - s_j)²
       (Eq. 9), w_ij = exp(-d_app² / 2σ_n²) + 0.1 over neighbours and two-ring neighbours
       and between boundary superpixels; a superpixel with BndCon > 3 gets w_bg = 1000.
       The result is divided by its maximum and upsampled bilinearly to (H, W).

    ``background_seeds`` marks erased pixels (for :func:`builtin_reference`): a superpixel
    that is at least 30 % seeds counts as boundary in step 2-3, gives no contrast in step 4,
    gets w_fg = 0 and w_bg = 1000, so it ends at saliency 0.  (30 %, not a majority, so that
    the mixed superpixels along the edge of an erased object go too; otherwise they stand
    out as a salient ring around it.)

    ``strength`` is the peak of s before that division, in [0, 1]: the optimization pulls s
    towards 1 (foreground term) and 0 (background term), so its peak is an absolute measure of
    how salient the most salient remaining region is (near 1 for a compact region that stands
    out, near 0 when all that is left is connected to the boundary).  Maps are normalized per
    call, this number is not, so a caller can compare passes.  An image with no contrast at
    all gives zeros and 0.0.
    Cost: about 20-30 ms for a 500 x 375 image at ``max_side=160``.
    """
    check_image(image, min_side=2)
    if background_seeds is not None and not (
            isinstance(background_seeds, np.ndarray) and background_seeds.dtype == bool
            and background_seeds.shape == image.shape[:2]):
        raise InputError(
            f"expected background_seeds as an (H, W) bool array of the image's size "
            f"{image.shape[:2]}, got {describe_array(background_seeds)}; pass a boolean mask or None",
            param="background_seeds")
    if not (isinstance(max_side, (int, np.integer)) and not isinstance(max_side, bool)
            and max_side >= 16):
        raise InputError(f"expected max_side as an integer >= 16, got {max_side!r}; "
                         "use e.g. the default 160", param="max_side")
    return _rbd(image, background_seeds, int(max_side))


# ---------------------------------------------------------------------------------------------
# threshold and calibration


def _otsu(saliency: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold over a fixed histogram of [0, 1], as the cut for ``s >= t``.

    The split maximizing the between-class variance w0 w1 (mu0 - mu1)^2 puts bins 0..k in the
    background; t is bin k's upper edge, so every background pixel is below t.  A map whose
    values fall in one bin (constant, or spanning a tiny range) gives its mean.
    """
    counts, edges = np.histogram(saliency, bins=bins, range=(0.0, 1.0))
    if np.count_nonzero(counts) <= 1:
        return float(saliency.mean(dtype=np.float64))
    counts = counts.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1]
    w1 = counts.sum() - w0
    m0 = np.cumsum(counts * centers)[:-1]
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = ((counts * centers).sum() - m0) / np.maximum(w1, 1)
    between = np.where((w0 > 0) & (w1 > 0), w0 * w1 * (mu0 - mu1) ** 2, -1.0)
    return float(edges[int(np.argmax(between)) + 1])


def _threshold(saliency: np.ndarray, method: str) -> float:
    if method == "adaptive":
        value = 2.0 * float(saliency.mean(dtype=np.float64))
    else:
        value = _otsu(saliency)
    return float(np.clip(value, *THRESHOLD_RANGE))


def adaptive_threshold(saliency: np.ndarray, *, method: str = "adaptive") -> float:
    """The threshold that binarizes a saliency map.

    saliency: ``(H, W)`` float in [0, 1] → float in [0.05, 0.95].

    ``"adaptive"``: twice the mean saliency, t = 2 · mean(s) (Achanta, Hemami, Estrada,
    Süsstrunk, "Frequency-tuned salient region detection", CVPR 2009, Section 4.1).
    ``"otsu"``: Otsu's threshold (Otsu, IEEE SMC 1979) over a 256-bin histogram of [0, 1],
    the upper edge of the background's last bin; a map within one bin gives its mean.
    Either is clipped to [0.05, 0.95], so a near-black map does not make everything salient
    and a bright one does not make nothing salient, and :func:`calibrate` stays defined.
    """
    if method not in THRESHOLD_METHODS:
        raise InputError(f"unknown threshold method {method!r}; expected one of "
                         f"{', '.join(THRESHOLD_METHODS)}", param="method")
    _check_unit_map(saliency, "saliency")
    return _threshold(saliency, method)


def _calibrate(saliency: np.ndarray, threshold: float) -> np.ndarray:
    gamma = np.log(0.5) / np.log(threshold)
    s = saliency.astype(np.float32, copy=False)
    prob = np.power(s, np.float32(gamma), dtype=np.float32)
    # make "prob >= 0.5  <=>  saliency >= threshold" exact despite rounding near the threshold
    above = saliency >= threshold  # in the caller's dtype, as a caller would compare
    below_half = np.nextafter(np.float32(0.5), np.float32(0.0))
    np.maximum(prob, np.float32(0.5), out=prob, where=above)
    np.minimum(prob, below_half, out=prob, where=~above)
    return prob


def calibrate(saliency: np.ndarray, threshold: float) -> np.ndarray:
    """Turn a saliency map into the probability of "salient" used as the CRF's unary.

    saliency: ``(H, W)`` float in [0, 1]; threshold: float in (0, 1) →
    ``(H, W)`` float32 in [0, 1].

    p = s^γ with γ = log(0.5) / log(t), the monotone power map that sends the threshold t to
    0.5 and keeps 0 → 0, 1 → 1.  So ``p >= 0.5`` is exactly ``s >= t`` (ties near t are
    rounded to the right side), and the CRF starts from the thresholded map's decision:
    the unary is -log p for "salient" and -log(1 - p) for "background".  (salcurate's choice;
    the paper does not say how DSS maps become CRF unaries.)
    """
    _check_unit_map(saliency, "saliency")
    if not (isinstance(threshold, (float, int, np.floating, np.integer))
            and 0.0 < float(threshold) < 1.0):
        raise InputError(f"expected threshold as a number strictly between 0 and 1, got "
                         f"{threshold!r}; use adaptive_threshold() to choose it", param="threshold")
    return _calibrate(saliency, float(threshold))


# ---------------------------------------------------------------------------------------------
# dense CRF


def _crf(image: np.ndarray, prob: np.ndarray, params: CrfParams) -> np.ndarray:
    p = np.clip(prob, CRF_EPS, 1.0 - CRF_EPS).astype(np.float32, copy=False)
    q = dense_crf(image, np.stack([1.0 - p, p]), iterations=params.iterations, gaussian_sxy=params.gaussian_sxy,
                  gaussian_compat=params.gaussian_compat, bilateral_sxy=params.bilateral_sxy,
                  bilateral_srgb=params.bilateral_srgb, bilateral_compat=params.bilateral_compat, missing=_CRF_MISSING)
    return q[1]


def crf_refine(image: np.ndarray, prob: np.ndarray, *, iterations: int = 5,
               gaussian_sxy: float = 3, gaussian_compat: float = 3, bilateral_sxy: float = 60,
               bilateral_srgb: float = 5, bilateral_compat: float = 5) -> np.ndarray:
    """Refine a probability map of "salient" with a fully connected CRF.

    image: ``(H, W, 3)`` uint8; prob: ``(H, W)`` float in [0, 1] → ``(H, W)`` float32 Q(salient).

    Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
    Potentials", NIPS 2011, with their pydensecrf implementation: two labels {background,
    salient}, unary ψ_u = -log p (salient) and -log(1 - p) (background), p clipped to
    [1e-5, 1 - 1e-5]; Potts pairwise terms with a Gaussian kernel
    exp(-|p_i - p_j|² / 2·sxy²) and a bilateral kernel
    exp(-|p_i - p_j|² / 2·sxy² - |I_i - I_j|² / 2·srgb²), each times its compat; mean-field
    inference for ``iterations`` steps.  Defaults: :class:`CrfParams`.
    Raises InputError if pydensecrf is not installed.
    """
    _check_map_for_image(image, prob, "prob")
    params = CrfParams(iterations, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                       bilateral_compat)
    return _crf(image, prob, params)


# ---------------------------------------------------------------------------------------------
# reference masks


def _mask(image: np.ndarray, saliency: np.ndarray, crf: bool, method: str,
          params: CrfParams) -> np.ndarray:
    threshold = _threshold(saliency, method)
    if not crf:  # calibrate() keeps "p >= 0.5" equal to "s >= t": skip the power map
        return saliency >= threshold
    return _crf(image, _calibrate(saliency, threshold), params) >= 0.5


def _check_options(threshold: object, crf_params: object) -> CrfParams:
    if threshold not in THRESHOLD_METHODS:
        raise InputError(f"unknown threshold method {threshold!r}; expected one of "
                         f"{', '.join(THRESHOLD_METHODS)}", param="threshold")
    if crf_params is None:
        return CrfParams()
    if not isinstance(crf_params, CrfParams):
        raise InputError(f"expected crf_params as a CrfParams or None, got "
                         f"{type(crf_params).__name__}; build one with CrfParams(...)", param="crf_params")
    return crf_params


def threshold_mask(saliency: np.ndarray, *, threshold: str = "adaptive") -> np.ndarray:
    """Reference mask H without CRF: s >= t.

    saliency: ``(H, W)`` uint8 in 0..255 or float in [0, 1] → ``(H, W)`` bool.  The same as
    :func:`reference_mask` with ``crf=False``, without needing the image.
    """
    _check_options(threshold, None)
    if isinstance(saliency, np.ndarray) and saliency.dtype == np.uint8:
        saliency = saliency.astype(np.float32) / np.float32(255.0)
    _check_unit_map(saliency, "saliency")
    return saliency >= _threshold(saliency, threshold)


def reference_mask(image: np.ndarray, saliency: np.ndarray, *, crf: bool = True,
                   threshold: str = "adaptive", crf_params: CrfParams | None = None) -> np.ndarray:
    """Reference mask H of an image from a given (imported) saliency map, in one pass.

    image: ``(H, W, 3)`` uint8; saliency: ``(H, W)`` uint8 in 0..255 or float in [0, 1] →
    ``(H, W)`` bool.

    SAL Section III-B1 ("Generating Reference Masks H"): s = saliency scaled to [0, 1]
    (uint8 / 255), t = :func:`adaptive_threshold` (s, method=threshold),
    p = :func:`calibrate` (s, t), then H = :func:`crf_refine` (image, p) >= 0.5, or
    H = p >= 0.5 (that is, s >= t) with ``crf=False``.  Imported maps cannot be re-run on an
    erased image, so there is no multi-object erasing here (NOTES.md); see
    :func:`builtin_reference`.
    """
    params = _check_options(threshold, crf_params)
    if isinstance(saliency, np.ndarray) and saliency.dtype == np.uint8:
        saliency = saliency.astype(np.float32) / np.float32(255.0)
    _check_map_for_image(image, saliency, "saliency")
    return _mask(image, saliency, crf, threshold, params)


def builtin_reference(image: np.ndarray, *, crf: bool = True, threshold: str = "adaptive",
                      max_objects: int = 3, min_area: float = 0.01, stop_ratio: float = 0.5,
                      max_side: int = 160, crf_params: CrfParams | None = None) -> np.ndarray:
    """Reference mask H of an image from the built-in saliency, with iterative erasing.

    image: ``(H, W, 3)`` uint8 → ``(H, W)`` bool.

    SAL Section III-B1: "a scheme with masks erasing similar to [11] highlights multiple
    salient objects iteratively" ([11]: Wei et al., "Object Region Mining with Adversarial
    Erasing", CVPR 2017).  Pass 1 computes :func:`builtin_saliency` and its mask M_1 as in
    :func:`reference_mask` (threshold, calibration, optional CRF); M_1 is always kept.  Pass
    k = 2, 3, ... re-runs :func:`builtin_saliency` with the union U of the masks kept so far
    as background seeds (the erased region: it counts as image boundary, gives no contrast
    and is forced to saliency 0) and takes the new region R_k = M_k minus U.

    Stopping rule: R_k is kept, and the next pass runs, only if
    |R_k| >= ``min_area`` · H · W and strength_k >= ``stop_ratio`` · strength_1, where
    strength is the un-normalized peak of the optimized RBD saliency returned by
    :func:`builtin_saliency` (what remains must be at least half as salient as the first
    object was, by default).  Otherwise, or after ``max_objects`` passes, it stops.
    H = M_1 ∪ R_2 ∪ ... .  An empty M_1 gives an empty H.
    """
    params = _check_options(threshold, crf_params)
    check_image(image, min_side=2)
    integers, reals = (int, np.integer), (int, float, np.integer, np.floating)
    if not (isinstance(max_objects, integers) and max_objects >= 1
            and isinstance(min_area, reals) and 0.0 <= min_area <= 1.0
            and isinstance(stop_ratio, reals) and 0.0 <= stop_ratio
            and isinstance(max_side, integers) and max_side >= 16):
        raise InputError(
            f"expected max_objects >= 1, min_area in [0, 1], stop_ratio >= 0 and integer "
            f"max_side >= 16, got {max_objects!r}, {min_area!r}, {stop_ratio!r}, {max_side!r}; "
            "use the defaults 3, 0.01, 0.5, 160", param=("max_objects", "min_area", "stop_ratio", "max_side")
        )
    saliency, first = _rbd(image, None, int(max_side))
    found = _mask(image, saliency, crf, threshold, params)
    min_pixels = min_area * found.size
    for k in range(2, int(max_objects) + 1):
        if not found.any():
            break
        saliency, strength = _rbd(image, found, int(max_side))
        new = _mask(image, saliency, crf, threshold, params) & ~found
        area = int(np.count_nonzero(new))
        if area < min_pixels or strength < stop_ratio * first:
            log.debug("erasing pass %d stops: area %d (min %.0f), strength %.3g (first %.3g)",
                      k, area, min_pixels, strength, first)
            break
        found |= new
    return found
