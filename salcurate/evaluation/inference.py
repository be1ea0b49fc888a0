"""SAL-Net inference: class probabilities at one or several scales, optional flip, dense CRF.

NOTES.md "SAL-Net", Inference: the probabilities Ẑ = softmax(attended logits) are upsampled
bilinearly to the image size; multi-scale inference runs the image at scales 0.5, 0.75 and 1.0
and fuses the probabilities by their elementwise maximum (DeepLab-v2's max fusion), optionally
with each scale's horizontally flipped image too; a fully connected CRF (Krähenbühl & Koltun,
NIPS 2011) with DeepLab-v2's settings may refine the result.

The model is any ``nn.Module`` returning an object with an ``attended`` field (``(B, C+1, h,
w)`` logits at about stride 8; :class:`salcurate.nn.salnet.SALNetOutput`).  Functions are pure:
arrays in, arrays out; pydensecrf is imported only when a CRF runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from salcurate.crf import CRF_INSTALL, crf_available, dense_crf  # noqa: F401 (crf_available re-exported)
from salcurate.errors import InputError
from salcurate.imageio import check_image

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

DEFAULT_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0)

CRF_MISSING = f"the dense CRF needs pydensecrf, but it is not installed; {CRF_INSTALL}, or leave out --crf"


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How predictions are made (NOTES.md "SAL-Net", Inference; DeepLab-v2's CRF settings).

    ``scales``: the image scales of multi-scale inference, fused by elementwise max;
    ``flip``: also run each scale's mirrored image; ``crf_*``: the dense CRF's Gaussian kernel
    (sxy 3, compat 3), bilateral kernel (sxy 80, srgb 13, compat 10) and mean-field iterations
    (10).
    """

    scales: tuple[float, ...] = DEFAULT_SCALES
    flip: bool = False
    crf_iterations: int = 10
    crf_gaussian_sxy: float = 3
    crf_gaussian_compat: float = 3
    crf_bilateral_sxy: float = 80
    crf_bilateral_srgb: float = 13
    crf_bilateral_compat: float = 10

    def __post_init__(self) -> None:
        scales = tuple(self.scales)
        if not scales or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 8 for s in scales):
            raise InputError(f"scales must be numbers in (0, 8], e.g. 0.5,0.75,1.0, got {self.scales!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))
        if isinstance(self.crf_iterations, bool) or not isinstance(self.crf_iterations, int) or self.crf_iterations < 1:
            raise InputError(f"crf_iterations must be a whole number >= 1, got {self.crf_iterations!r}")

    def crf_params(self) -> dict[str, float]:
        """The keyword arguments of :func:`crf_segmentation`."""
        return {"iterations": self.crf_iterations, "gaussian_sxy": self.crf_gaussian_sxy,
                "gaussian_compat": self.crf_gaussian_compat, "bilateral_sxy": self.crf_bilateral_sxy,
                "bilateral_srgb": self.crf_bilateral_srgb, "bilateral_compat": self.crf_bilateral_compat}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        return d


def _check_predict(image: object, scales: object) -> tuple[float, ...]:
    check_image(image)
    try:
        values = tuple(float(s) for s in scales)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if not values or not all(0 < s <= 8 for s in values):
        raise InputError(f"scales must be a non-empty list of numbers in (0, 8], e.g. (0.5, 0.75, 1.0), got {scales!r}")
    return values


def _default_preprocess() -> Callable[[np.ndarray], Any]:
    from salcurate.nn.salnet import preprocess

    return preprocess


def _scale_probabilities(model: Any, x: torch.Tensor, scale: float, *, flip: bool = False) -> torch.Tensor:
    """Class probabilities of one scale, at the input size (the building block of the functions here
    and of :mod:`salcurate.evaluation.evaluate`; no input checks).

    x: ``(3, H, W)`` normalised float tensor on the model's device → ``(N, C+1, H, W)`` float32
    tensor, N = 2 with ``flip`` (the mirrored image's prediction mirrored back) else 1.  Call it
    under ``torch.inference_mode()``.
    """
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    batch = x[None]
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
    if flip:
        batch = torch.cat([batch, batch.flip(-1)])
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch.device.type == "cuda"):
        out = model(batch)
    logits = getattr(out, "attended", None)
    if logits is None:
        logits = out.segmentation
    prob = torch.softmax(logits.float(), dim=1)
    prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
    if flip:
        prob = torch.stack([prob[0], prob[1].flip(-1)])
    return prob


def predict_probabilities(model: Any, image: np.ndarray, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                          device: str | torch.device = "cpu",
                          preprocess: Callable[[np.ndarray], Any] | None = None) -> np.ndarray:
    """Class probabilities Ẑ of an image, fused over scales (and flips) by elementwise max.

    image: ``(H, W, 3)`` uint8 RGB → ``(C+1, H, W)`` float32.  For each scale s the
    normalised image is resized bilinearly to ``round(s·H) × round(s·W)``, run through
    ``model`` (in eval mode, on ``device``), and ``softmax(out.attended)`` is upsampled
    bilinearly (align_corners=False) to H × W; with ``flip`` the mirrored image is run too and
    its prediction mirrored back.  The predictions are fused by their elementwise maximum and,
    when there is more than one, renormalised to sum to 1 over the classes (which does not
    change the argmax).  ``scales=(1.0,)`` is single-scale inference.  ``preprocess`` turns the
    image into a ``(3, H, W)`` tensor (default :func:`salcurate.nn.salnet.preprocess`,
    ImageNet mean/std).  Runs without gradients, with bf16 autocast on CUDA.
    """
    import torch

    values = _check_predict(image, scales)
    prep = preprocess or _default_preprocess()
    device = torch.device(device)
    with torch.inference_mode():
        x = prep(image).to(device)
        fused: torch.Tensor | None = None
        for s in values:
            prob = _scale_probabilities(model, x, s, flip=flip).amax(dim=0)
            fused = prob if fused is None else torch.maximum(fused, prob)
        assert fused is not None
        if len(values) > 1 or flip:
            fused = fused / fused.sum(dim=0, keepdim=True)
        return fused.cpu().numpy().astype(np.float32, copy=False)


def _check_crf(image: object, probabilities: object, iterations: object) -> None:
    check_image(image)
    assert isinstance(image, np.ndarray)
    if not isinstance(probabilities, np.ndarray) or probabilities.ndim != 3 or \
            probabilities.shape[1:] != image.shape[:2] or not 2 <= probabilities.shape[0] <= 255:
        got = getattr(probabilities, "shape", type(probabilities).__name__)
        raise InputError(f"expected probabilities (K, H, W) with 2 <= K <= 255 and H, W = {image.shape[:2]} (the "
                         f"image's), got {got}; upsample them to the image first")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise InputError(f"CRF iterations must be a whole number >= 1, got {iterations!r}")


def crf_segmentation(image: np.ndarray, probabilities: np.ndarray, *, iterations: int = 10,
                     gaussian_sxy: float = 3, gaussian_compat: float = 3, bilateral_sxy: float = 80,
                     bilateral_srgb: float = 13, bilateral_compat: float = 10) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF; returns the labels.

    image: ``(H, W, 3)`` uint8 RGB; probabilities: ``(K, H, W)`` float, K = C + 1 →
    ``(H, W)`` uint8 labels.

    Krähenbühl & Koltun's multi-label dense CRF (pydensecrf) with DeepLab-v2's settings: unary
    -log(clip(p, 1e-5, 1)); Potts pairwise terms with a Gaussian kernel (sxy 3, compat 3) and a
    bilateral kernel (sxy 80, srgb 13, compat 10); ``iterations`` mean-field steps; labels =
    argmax of the result.  Raises InputError if pydensecrf is not installed.
    """
    _check_crf(image, probabilities, iterations)
    q = dense_crf(image, probabilities, iterations=int(iterations), gaussian_sxy=gaussian_sxy,
                  gaussian_compat=gaussian_compat, bilateral_sxy=bilateral_sxy, bilateral_srgb=bilateral_srgb,
                  bilateral_compat=bilateral_compat, missing=CRF_MISSING)
    return q.argmax(axis=0).astype(np.uint8)
