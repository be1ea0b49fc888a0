"""From a tag classifier's class activation maps (CAMs) to a proxy mask.

The usual CAM pipeline of weakly supervised segmentation (PSA: Ahn & Kwak, CVPR 2018; IRN:
Ahn, Cho & Kwak, CVPR 2019), in pure torch functions::

    multiscale_cams   ReLU'd CAMs at scales 1, 0.5, 1.5, 2 and their horizontal flips, each
                      resized to the image and summed                          -> (C, H, W)
    normalize_cams    each tagged class divided by its maximum; the others 0    -> (C, H, W)
    cam_scores        background score first, then the classes                 -> (1 + C, H, W)
    pamr              optional refinement (Araslanov & Roth, CVPR 2020), or salcurate.crf
    proxy_from_scores argmax over background + classes                         -> (H, W) uint8

Background (``cam_scores``): by default the constant ``bg_threshold`` (IRN's CAM evaluation:
a pixel is background where no normalized CAM reaches the threshold); with ``bg_power`` set,
PSA's ``(1 - max_c CAM_c) ** bg_power`` instead.  Untagged classes score 0, below the
(positive) background score, so they never win the argmax.

PAMR (Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020,
Sec. 3.3, Eq. 3-4; their released code fixes the details kept here): for pixel i and its
neighbours j over 3x3 neighbourhoods at several dilations (replicate padding at the border)::

    k(i, j)  = -|I_i - I_j| / (1e-8 + 0.1 * sigma_i)     per image channel, then averaged over channels
    sigma_i  = standard deviation (unbiased) of the image channel over the neighbourhoods of i
               (their 9 pixels per dilation, i included)
    a(i, j)  = exp k(i, j) / sum_l exp k(i, l)           softmax over all neighbours of all dilations
    p_i     <- sum_j a(i, j) p_j                         repeated ``iterations`` times

``a`` is computed once from the image; each step replaces a pixel's distribution with an
affinity-weighted average of its neighbours' (i excluded), so distributions stay distributions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salcurate.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "CAM_EPS",
    "MIN_SIDE",
    "background_logit",
    "cam_scores",
    "multiscale_cams",
    "normalize_cams",
    "pamr",
    "pamr_affinities",
    "proxy_from_scores",
    "resize_longer",
    "scaled_size",
    "score_probabilities",
]

#: Added to each class's maximum before dividing (IRN's 1e-5), so an all-zero CAM stays 0.
CAM_EPS = 1e-5
#: Scaled images are padded to at least this side (the backbones' output stride, 8).
MIN_SIDE = 8


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__


def _is_positive_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# ------------------------------------------------------------------------------------------
# CAMs
# ------------------------------------------------------------------------------------------
def _class_maps(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    return out.cams if hasattr(out, "cams") else out


def multiscale_cams(model: nn.Module, image: Tensor, *, scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
                    flip: bool = True) -> Tensor:
    """Multi-scale, flipped CAMs summed at the image's size (the PSA/IRN protocol).

    image: ``(3, H, W)`` float (normalized as the model was trained, e.g. ``salnet.preprocess``)
    -> ``(C, H, W)`` float32, >= 0.

    ``model`` maps ``(B, 3, h, w)`` to a :class:`~salcurate.nn.classifier.ClassifierOutput` (its
    ``cams``) or to CAMs ``(B, C, h', w')``; put it in eval mode and on the image's device.  For
    each scale s the image is resized (bilinear) to ``round(s H) x round(s W)``, padded at the
    bottom and right with zeros to at least ``MIN_SIDE`` pixels a side, run with its horizontal
    flip in one batch of two (``flip``), rectified (ReLU), the flipped map flipped back and
    added, resized (bilinear) to the image's size and summed over scales.  No gradients.
    """
    scales = tuple(scales) if isinstance(scales, (list, tuple)) else (scales,)
    if not (isinstance(image, Tensor) and image.dim() == 3 and image.shape[0] == 3 and image.is_floating_point()
            and min(image.shape[1:]) >= 1 and len(scales) >= 1 and all(_is_positive_number(s) for s in scales)):
        raise InputError(f"multiscale_cams expects a (3, H, W) float image tensor and positive scales, got "
                         f"{_describe(image)} and scales={scales!r}; preprocess the image with "
                         "salcurate.nn.salnet.preprocess and pass scales such as (1.0, 0.5, 1.5, 2.0)",
                         param=("image", "scales"))
    h, w = image.shape[1:]
    total: Tensor | None = None
    with torch.no_grad():
        for s in scales:
            hs, ws = max(1, round(h * s)), max(1, round(w * s))
            x = image[None]
            if (hs, ws) != (h, w):
                x = F.interpolate(x, size=(hs, ws), mode="bilinear", align_corners=False)
            hp, wp = max(hs, MIN_SIDE), max(ws, MIN_SIDE)
            if (hp, wp) != (hs, ws):
                x = F.pad(x, (0, wp - ws, 0, hp - hs))
            if flip:
                x = torch.cat([x, x.flip(-1)])
            cams = F.relu(_class_maps(model, x).float())
            if flip:
                # the flipped image's padding sits on its right: flip its map back over the padded width
                cams = cams[:1] + cams[1:].flip(-1)
            # resize so that the unpadded part of the map covers exactly (h, w), then crop the padding
            size = (h if hp == hs else math.ceil(hp * h / hs), w if wp == ws else math.ceil(wp * w / ws))
            cams = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)[0, :, :h, :w]
            total = cams if total is None else total + cams
    assert total is not None
    return total


def scaled_size(height: Any, width: Any, scale: float) -> np.ndarray:
    """Image sizes at ``scale``: ``(n,)`` heights and widths (or two numbers) -> ``(n, 2)`` (or ``(2,)``)
    int64, each side rounded and at least :data:`MIN_SIDE` pixels (the backbones' output stride)."""
    hw = np.stack([np.asarray(height), np.asarray(width)], axis=-1).astype(np.float64)
    return np.maximum(MIN_SIDE, np.round(hw * scale)).astype(np.int64)


def resize_longer(x: Tensor, side: int) -> Tensor:
    """``(K, H, W)`` float -> ``(K, h, w)``: resized (bilinear, antialiased when shrinking) so that the
    longer side is ``side`` (each side at least 1 pixel); returned as it is when it already has that size."""
    if not (isinstance(x, Tensor) and x.dim() == 3 and x.is_floating_point() and min(x.shape[1:]) >= 1
            and isinstance(side, int) and not isinstance(side, bool) and side >= 1):
        raise InputError(f"resize_longer expects a (K, H, W) float tensor and a side >= 1, got {_describe(x)} and "
                         f"side={side!r}; pass e.g. salcurate.nn.salnet.preprocess's output",
                         param=("x", "side"))
    h, w = x.shape[1:]
    f = side / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    if (nh, nw) == (h, w):
        return x
    return F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=f < 1)[0]


def _tag_mask(tags: Any, num_classes: int, where: str) -> Tensor:
    a = np.asarray(tags.cpu() if isinstance(tags, Tensor) else tags)
    usable = a.shape == (num_classes,) and (a.dtype == bool
                                            or (a.dtype.kind in "iuf" and bool(np.isin(a, (0, 1)).all())))
    if not usable:
        raise InputError(f"{where} expects tags as a ({num_classes},) bool vector over the foreground classes "
                         f"(as the store keeps them), got {_describe(tags)}; pass store tags or a 0/1 vector",
                         param="tags")
    return torch.from_numpy(a.astype(bool))


def normalize_cams(cams: Tensor, tags: Any, *, eps: float = CAM_EPS) -> Tensor:
    """Each tagged class's CAM divided by its maximum (+ ``eps``); untagged classes set to 0.

    cams: ``(C, H, W)`` float (>= 0, e.g. from :func:`multiscale_cams`); tags: ``(C,)`` bool over
    the foreground classes (the store's tags) -> ``(C, H, W)`` float in [0, 1).
    """
    if not (isinstance(cams, Tensor) and cams.dim() == 3 and cams.is_floating_point()):
        raise InputError(f"normalize_cams expects CAMs as a (C, H, W) float tensor, got {_describe(cams)}; "
                         "pass the output of multiscale_cams", param="cams")
    keep = _tag_mask(tags, cams.shape[0], "normalize_cams").to(cams.device)
    peak = cams.flatten(1).amax(dim=1).clamp_min(0) + eps  # IRN: cam / (max + 1e-5)
    return cams / peak[:, None, None] * keep[:, None, None].to(cams.dtype)


def cam_scores(cams_norm: Tensor, tags: Any, *, bg_threshold: float = 0.15, bg_power: float | None = None) -> Tensor:
    """Scores of background and classes: ``(C, H, W)`` normalized CAMs, ``(C,)`` bool tags -> ``(1 + C, H, W)``.

    Channel 0 is the background: the constant ``bg_threshold`` (IRN; default 0.15, IRN's CAM
    evaluation threshold for VOC) or, with ``bg_power`` set, ``(1 - max_c CAM_c) ** bg_power``
    over the tagged classes (PSA; ``bg_threshold`` is then unused).  Channels 1..C are the
    normalized CAMs of the tagged classes; untagged classes score 0 and never win an argmax
    against a positive background score.
    """
    if not (isinstance(cams_norm, Tensor) and cams_norm.dim() == 3 and cams_norm.is_floating_point()
            and _is_positive_number(bg_threshold) and bg_threshold < 1
            and (bg_power is None or _is_positive_number(bg_power))):
        raise InputError(f"cam_scores expects (C, H, W) float normalized CAMs, 0 < bg_threshold < 1 and "
                         f"bg_power None or > 0, got {_describe(cams_norm)}, bg_threshold={bg_threshold!r}, "
                         f"bg_power={bg_power!r}; pass normalize_cams's output and e.g. bg_threshold=0.15",
                         param=("cams_norm", "bg_threshold", "bg_power"))
    keep = _tag_mask(tags, cams_norm.shape[0], "cam_scores").to(cams_norm.device)
    fg = cams_norm.clamp(0, 1) * keep[:, None, None].to(cams_norm.dtype)
    if bg_power is None:
        bg = torch.full_like(fg[:1], float(bg_threshold))
    else:
        peak = fg.amax(dim=0, keepdim=True) if fg.shape[0] else torch.zeros_like(fg[:1])
        # (1 - max) ** p is 0 where a class reaches 1; the class wins there (argmax takes the first maximum)
        bg = (1 - peak).pow(float(bg_power))
    return torch.cat([bg, fg])


def score_probabilities(scores: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Scores divided by their sum over classes at each pixel: ``(K, H, W) -> (K, H, W)``, a distribution.

    The argmax is unchanged; untagged classes keep probability 0.  Use it before :func:`pamr` or
    ``salcurate.crf.dense_crf``.
    """
    if not (isinstance(scores, Tensor) and scores.dim() == 3 and scores.is_floating_point()):
        raise InputError(f"score_probabilities expects (K, H, W) float scores, got {_describe(scores)}; "
                         "pass cam_scores's output", param="scores")
    s = scores.clamp_min(0)
    return s / (s.sum(dim=0, keepdim=True) + eps)


# ------------------------------------------------------------------------------------------
# PAMR
# ------------------------------------------------------------------------------------------
def _offsets(dilations: Sequence[int], kernel: int) -> list[tuple[int, int]]:
    """(dy, dx) of every neighbour: the kernel x kernel window at each dilation, centre excluded."""
    r = kernel // 2
    out = []
    for d in dilations:
        for a in range(-r, r + 1):
            for b in range(-r, r + 1):
                if a or b:
                    out.append((a * d, b * d))
    return out


def _shifted(padded: Tensor, pad: int, dy: int, dx: int, h: int, w: int) -> Tensor:
    """The value at (y + dy, x + dx) for every (y, x), from a replicate-padded tensor (view)."""
    return padded[..., pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def _pamr_problem(image: object, probs: object, iterations: object, dilations: object, kernel: object) -> bool:
    """Whether PAMR's inputs are unusable (``probs`` None: only the image and the neighbourhoods)."""
    ok_image = isinstance(image, Tensor) and image.dim() == 3 and image.is_floating_point() and image.numel() > 0
    ok_probs = probs is None or (isinstance(probs, Tensor) and probs.dim() == 3 and probs.is_floating_point()
                                 and ok_image and probs.shape[1:] == image.shape[1:])
    ok_settings = (isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 0
                   and isinstance(dilations, (list, tuple)) and len(dilations) >= 1
                   and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dilations)
                   and isinstance(kernel, int) and not isinstance(kernel, bool) and kernel >= 3 and kernel % 2 == 1)
    return not (ok_image and ok_probs and ok_settings)


def _pamr_error(where: str, image: object, probs: object, iterations: object, dilations: object,
                kernel: object) -> InputError:
    got = f"{_describe(image)}" + ("" if probs is None else f", {_describe(probs)}")
    return InputError(f"{where} expects a (K', H, W) float image, (K, H, W) float probabilities of the same H, W, "
                      f"iterations >= 0, dilations >= 1 and an odd kernel >= 3, got {got}, "
                      f"iterations={iterations!r}, dilations={dilations!r}, kernel={kernel!r}; "
                      "resize the probabilities to the image first",
                      param=("image", "probs", "iterations", "dilations", "kernel"))


def pamr_affinities(image: Tensor, *, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24), kernel: int = 3) -> Tensor:
    """PAMR's affinities (Eq. 3-4): image ``(K', H, W)`` float -> ``(P, H, W)``, summing to 1 over P.

    P = (kernel² - 1) · len(dilations) neighbours, in the order of the dilations, then row-major
    offsets (centre excluded).
    """
    if _pamr_problem(image, None, 0, dilations, kernel):
        raise _pamr_error("pamr_affinities", image, None, 0, dilations, kernel)
    k, h, w = image.shape
    x = image if image.dtype == torch.float64 else image.float()
    pad = max(dilations) * (kernel // 2)
    padded = F.pad(x[None], (pad, pad, pad, pad), mode="replicate")[0]
    offsets = _offsets(dilations, kernel)
    # standard deviation over each dilation's full window (centre included, once per dilation)
    window = [(0, 0)] * len(dilations) + offsets
    n = len(window)
    mean = sum(_shifted(padded, pad, dy, dx, h, w) for dy, dx in window) / n
    var = sum((_shifted(padded, pad, dy, dx, h, w) - mean) ** 2 for dy, dx in window) / (n - 1)
    scale = 1e-8 + 0.1 * var.sqrt()  # (K', H, W)
    logits = torch.stack([(-(_shifted(padded, pad, dy, dx, h, w) - x).abs() / scale).mean(dim=0)
                          for dy, dx in offsets])
    return torch.softmax(logits, dim=0)


def pamr(image: Tensor, probs: Tensor, *, iterations: int = 10, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
         kernel: int = 3) -> Tensor:
    """Pixel-Adaptive Mask Refinement (Araslanov & Roth, CVPR 2020, Eq. 3-4; module docstring).

    image: ``(K', H, W)`` float (RGB (3, H, W), in any affine scale: the affinities divide by
    the local spread), probs: ``(K, H, W)`` float -> ``(K, H, W)`` float32 (float64 for float64
    probs).  Defaults are the paper's: 10 iterations, dilations 1, 2, 4, 8, 12, 24, 3x3
    neighbourhoods.  Differentiable in ``probs``.
    """
    if _pamr_problem(image, probs, iterations, dilations, kernel):
        raise _pamr_error("pamr", image, probs, iterations, dilations, kernel)
    h, w = image.shape[1:]
    dtype = probs.dtype if probs.dtype == torch.float64 else torch.float32
    aff = pamr_affinities(image.to(probs.device, dtype), dilations=dilations, kernel=kernel)
    offsets = _offsets(dilations, kernel)
    pad = max(dilations) * (kernel // 2)
    p = probs.to(dtype)
    for _ in range(iterations):
        padded = F.pad(p[None], (pad, pad, pad, pad), mode="replicate")[0]
        out = torch.zeros_like(p)
        for j, (dy, dx) in enumerate(offsets):
            out = out.addcmul(aff[j], _shifted(padded, pad, dy, dx, h, w))
        p = out
    return p


# ------------------------------------------------------------------------------------------
# Proxy
# ------------------------------------------------------------------------------------------
def proxy_from_scores(scores: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Label of the highest score: ``(1 + C, H, W)`` float -> ``(H, W)`` uint8 labels 0..C.

    Tensor in, tensor out (on its device); numpy (e.g. ``salcurate.crf.dense_crf``'s output) in,
    numpy out.  Ties go to the lower label (background first).
    """
    ok = isinstance(scores, (Tensor, np.ndarray)) and scores.ndim == 3 and 1 <= scores.shape[0] <= 256
    if not ok:
        raise InputError(f"proxy_from_scores expects (1 + C, H, W) scores with 1 + C <= 256, got "
                         f"{_describe(scores)}; pass cam_scores's (or the refinement's) output", param="scores")
    if isinstance(scores, np.ndarray):
        return np.argmax(scores, axis=0).astype(np.uint8)
    return torch.argmax(scores, dim=0).to(torch.uint8)


# ------------------------------------------------------------------------------------------
# A segmentation head that starts as the CAM segmenter
# ------------------------------------------------------------------------------------------
def background_logit(max_maps: np.ndarray, foreground_fraction: float) -> float:
    """The constant background logit b of a CAM segmenter (``salnet.init_aspp_from_cams``).

    ``max_maps``: ``(N,)`` float, the largest raw class map ``max_c M_c`` at N positions pooled
    over training images; ``foreground_fraction``: the share f of foreground pixels in their proxy
    masks, in (0, 1) -> b, the ``(1 - f)``-quantile of ``max_maps``: the argmax of ``(b, M_1..M_C)``
    then calls the same share of positions foreground as the proxies do.  The raw maps are not
    normalized per image (a segmentation head cannot divide by an image's maximum), so one b is
    fitted to the proxies' statistics instead of IRN's threshold on normalized maps.
    """
    values = np.asarray(max_maps, dtype=np.float64).ravel()
    ok_fraction = (isinstance(foreground_fraction, (int, float, np.floating)) and not isinstance(
        foreground_fraction, bool) and 0.0 < float(foreground_fraction) < 1.0)
    if values.size == 0 or not np.isfinite(values).all() or not ok_fraction:
        raise InputError(f"background_logit expects finite class-map maxima (N,) with N >= 1 and a foreground "
                         f"fraction in (0, 1), got {values.size} values (finite: {bool(np.isfinite(values).all())}) "
                         f"and {foreground_fraction!r}; pass the maps of training images whose proxies have both "
                         f"background and foreground", param=("max_maps", "foreground_fraction"))
    return float(np.quantile(values, 1.0 - float(foreground_fraction)))
