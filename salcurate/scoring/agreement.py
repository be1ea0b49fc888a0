"""Model agreement: how well a segmentation model that never saw a proxy mask agrees with it.

Pure functions over one image's arrays (no I/O); ``score-model`` (``salcurate.training.folds``)
trains the models (K folds) and calls these on each image's prediction.

* :func:`restrict` keeps a model's class probabilities of background and the image's tagged
  classes and renormalizes them over those (the model may not put mass on a class the image does
  not show).
* :func:`label_probabilities` gives, per valid proxy pixel, the probability the model assigns to
  the proxy's label there (0 for a label outside the kept classes).
* :func:`softmin_pool` pools per-pixel label qualities into one image score with the softmin of
  Lad & Mueller, "Estimating label quality and errors in semantic segmentation data via any
  model", 2023 (Section 3, "softmin" pooling; cleanlab's segmentation
  ``get_label_quality_scores(method="softmin")``, temperature 0.1): with per-pixel qualities
  p_i, ``score = sum_i p_i w_i`` with ``w = softmax(-p / T)``, a weighted mean that puts most
  weight on the worst pixels, so a wrongly labelled region pulls the score down although it is a
  small share of the image.  Written here from that formula.
* :func:`label_quality` chains the three: the ``agree`` score.
* :func:`mask_iou`: IoU of two binary masks (the ``rr`` score compares the model's foreground
  with the binarized saliency map).
"""

from __future__ import annotations

import numpy as np

from salcurate.errors import InputError

#: The softmin temperature of Lad & Mueller 2023 (cleanlab's default for "softmin").
SOFTMIN_TEMPERATURE = 0.1
IGNORE_LABEL = 255

__all__ = ["SOFTMIN_TEMPERATURE", "label_probabilities", "label_quality", "mask_iou", "restrict", "softmin_pool"]


def restrict(probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The probabilities of ``classes`` only, renormalized to sum to 1 at every pixel.

    probs: ``(K, H, W)`` float, a distribution over K classes per pixel (softmax output);
    classes: ``(A,)`` int, the kept class indices (background and the image's tags) →
    ``(A, H, W)`` float64.  A pixel where the kept classes have no mass at all gets the uniform
    distribution over them.
    """
    classes = np.asarray(classes)
    if (not isinstance(probs, np.ndarray) or probs.ndim != 3 or classes.ndim != 1 or len(classes) == 0
            or not np.issubdtype(classes.dtype, np.integer) or classes.min() < 0 or classes.max() >= probs.shape[0]):
        got = f"{probs.shape}" if isinstance(probs, np.ndarray) else type(probs).__name__
        raise InputError(f"restrict expects probabilities (K, H, W) and 1 to K class indices below K, got {got} "
                         f"and {classes.tolist()}")
    kept = probs[classes].astype(np.float64)
    total = kept.sum(axis=0, keepdims=True)
    return np.where(total > 0, kept / np.where(total > 0, total, 1.0), 1.0 / len(classes))


def label_probabilities(probs: np.ndarray, classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The model's probability of the proxy's label at each valid proxy pixel (the label quality
    of Lad & Mueller 2023, "self-confidence").

    probs: ``(A, H, W)`` float over the classes ``classes`` ``(A,)`` int (as :func:`restrict`
    gives); labels: ``(H, W)`` uint8 proxy, 255 = ignore → ``(n,)`` float64 over the n pixels
    that are not 255, in row-major order.  A label not among ``classes`` has probability 0.
    """
    classes = np.asarray(classes)
    if (not isinstance(probs, np.ndarray) or probs.ndim != 3 or classes.shape != (probs.shape[0],)
            or not isinstance(labels, np.ndarray) or labels.shape != probs.shape[1:]):
        raise InputError(f"label_probabilities expects probs (A, H, W), classes (A,) and labels (H, W), got "
                         f"{getattr(probs, 'shape', None)}, {classes.shape} and {getattr(labels, 'shape', None)}")
    lut = np.full(256, -1, np.int64)
    lut[classes.astype(np.int64)] = np.arange(len(classes))
    flat = labels.reshape(-1).astype(np.int64)
    valid = flat != IGNORE_LABEL
    row = lut[flat[valid]]
    pix = np.flatnonzero(valid)
    p = probs.reshape(len(classes), -1)[np.maximum(row, 0), pix].astype(np.float64)
    return np.where(row >= 0, p, 0.0)


def softmin_pool(values: np.ndarray, *, temperature: float = SOFTMIN_TEMPERATURE) -> float:
    """Softmin pooling (Lad & Mueller 2023): ``sum_i v_i softmax(-v / T)_i``.

    values: ``(n,)`` per-pixel qualities in [0, 1] → float in [min(v), mean(v)]; NaN for n = 0.
    As T → 0 it is the minimum, as T → ∞ the mean.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not (temperature > 0 and np.isfinite(temperature)) or not np.isfinite(v).all():
        raise InputError(f"softmin_pool expects finite values and a temperature > 0, got temperature {temperature}")
    if v.size == 0:
        return float("nan")
    z = -(v - v.min()) / temperature  # softmax(-v / T), shifted so the largest exponent is 0
    w = np.exp(z)
    return float((v * w).sum() / w.sum())


def label_quality(probs: np.ndarray, classes: np.ndarray, labels: np.ndarray, *,
                  temperature: float = SOFTMIN_TEMPERATURE) -> float:
    """One image's ``agree`` score: softmin-pooled probability of the proxy's labels.

    probs: ``(A, H, W)`` float over ``classes`` ``(A,)`` (see :func:`restrict`); labels:
    ``(H, W)`` uint8 proxy, 255 = ignore → float in [0, 1]; 0 when no pixel is labelled.
    """
    p = label_probabilities(probs, classes, labels)
    return 0.0 if p.size == 0 else softmin_pool(p, temperature=temperature)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two binary masks: ``(H, W)`` bool, ``(H, W)`` bool → float in [0, 1]; 1 when both are empty."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.shape != b.shape or a.ndim != 2:
        raise InputError(f"mask_iou expects two (H, W) masks of one shape, got {getattr(a, 'shape', None)} and "
                         f"{getattr(b, 'shape', None)}")
    a, b = a.astype(bool), b.astype(bool)
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum() / union)
