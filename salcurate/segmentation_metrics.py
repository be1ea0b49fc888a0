"""Segmentation metrics from a confusion matrix (SAL's evaluation, NOTES.md "SAL-Net", Metric).

The paper reports mIoU over C + 1 classes (background included) on PASCAL VOC 2012 val, with
ignore pixels (255) left out, and a per-class IoU table (Table II).  Everything here works on
one ``(K, K)`` confusion matrix, K = C + 1, rows = ground truth, columns = prediction, summed
over a whole split (not a mean of per-image scores):

    IoU_k = cm[k, k] / (row_k + col_k - cm[k, k]),     mIoU = mean of IoU_k over the classes
    present in the ground truth or the prediction (NaN, and left out, for the others).

All functions are pure; arrays may be numpy arrays or torch tensors (moved to numpy).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from salcurate.errors import InputError

log = logging.getLogger(__name__)

IGNORE_INDEX = 255

#: The paper's Table II column labels for the PASCAL VOC class names (Table II's order is the
#: VOC class-index order: bk, aero, bike, ..., train, tv).
VOC_SHORT_LABELS: dict[str, str] = {
    "background": "bk", "aeroplane": "aero", "bicycle": "bike", "bird": "bird", "boat": "boat",
    "bottle": "bottle", "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "diningtable": "table", "dog": "dog", "horse": "horse", "motorbike": "mbike", "person": "person",
    "pottedplant": "plant", "sheep": "sheep", "sofa": "sofa", "train": "train", "tvmonitor": "tv",
}
_VOC_POSITION = {name: i for i, name in enumerate(VOC_SHORT_LABELS)}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor; torch is not imported here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _check_pair(pred: np.ndarray, target: np.ndarray, num_classes: object, ignore_index: object) -> None:
    param: str | None = None
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        problem, param = f"num_classes must be a whole number >= 1 (K = C + 1), got {num_classes!r}", "num_classes"
    elif ignore_index is not None and (isinstance(ignore_index, bool)
                                       or not isinstance(ignore_index, (int, np.integer))):
        problem, param = f"ignore_index must be a whole number or None, got {ignore_index!r}", "ignore_index"
    elif ignore_index is not None and 0 <= ignore_index < num_classes:
        problem, param = (f"ignore_index {ignore_index} is one of the {num_classes} class indices; "
                          f"pick a value outside 0..{num_classes - 1}"), "ignore_index"
    elif pred.shape != target.shape:
        problem = (f"expected prediction and ground truth of one shape, got {pred.shape} and {target.shape}; "
                   "resize the prediction to the label map")
    elif not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(target.dtype, np.integer)):
        problem = (f"expected integer label maps, got {pred.dtype} and {target.dtype}; "
                   "take argmax over the class axis first")
    elif pred.size and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        problem, param = (f"predicted labels must lie in 0..{num_classes - 1}, got values "
                          f"{int(pred.min())}..{int(pred.max())}; check num_classes against the model's output "
                          "channels"), "num_classes"
    else:
        bad = (target < 0) | (target >= num_classes)
        if ignore_index is not None:
            bad &= target != ignore_index
        if not bad.any():
            return
        problem, param = (f"ground-truth labels must lie in 0..{num_classes - 1} or be {ignore_index} (ignore), got "
                          f"{int(target[bad][0])}; check num_classes against the class list"), "num_classes"
    raise InputError(problem, param=param)


def confusion_matrix(pred: Any, target: Any, *, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Pixel counts by (ground truth, prediction).

    pred, target: integer label maps of one shape, ``(H, W)`` or a batch ``(B, H, W)`` (any
    shape works) → ``(K, K)`` int64, K = ``num_classes`` (C + 1, background included);
    ``cm[i, j]`` = pixels of ground-truth class i predicted as j.  Pixels whose target is
    ``ignore_index`` (255) are left out.  Raises InputError for predictions outside 0..K-1 and
    targets outside 0..K-1 that are not ``ignore_index``.
    """
    pred, target = _to_numpy(pred), _to_numpy(target)
    _check_pair(pred, target, num_classes, ignore_index)
    k = int(num_classes)
    if ignore_index is None:
        t, p = target.ravel(), pred.ravel()
    else:
        valid = target != ignore_index
        t, p = target[valid], pred[valid]
    flat = t.astype(np.int64) * k + p.astype(np.int64)
    return np.bincount(flat, minlength=k * k).reshape(k, k).astype(np.int64, copy=False)


def accumulate_confusion(cm: np.ndarray, pred: Any, target: Any, *,
                         ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """``cm + confusion_matrix(pred, target)``: ``(K, K)`` int64, K taken from ``cm`` (a new array;
    ``cm`` is left as it was).  Sum a split image by image with it."""
    cm = _check_cm(cm)
    return cm + confusion_matrix(pred, target, num_classes=cm.shape[0], ignore_index=ignore_index)


def _check_cm(cm: Any) -> np.ndarray:
    cm = _to_numpy(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1 or not np.issubdtype(cm.dtype, np.integer) or (
            cm.size and cm.min() < 0):
        raise InputError(f"expected a (K, K) confusion matrix of non-negative pixel counts, got {cm.dtype} "
                         f"{cm.shape}; make one with confusion_matrix()", param="cm")
    return cm.astype(np.int64, copy=False)


def iou_from_confusion(cm: Any) -> np.ndarray:
    """Per-class intersection over union: ``(K, K)`` counts → ``(K,)`` float64.

    IoU_k = TP / (TP + FP + FN); NaN for a class absent from both ground truth and prediction.
    """
    cm = _check_cm(cm)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(cm: Any) -> float:
    """mIoU: ``(K, K)`` counts → the mean of the per-class IoU over the classes present in ground
    truth or prediction (NaN when there are none)."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm: Any) -> float:
    """Overall pixel accuracy: ``(K, K)`` counts → correct / all counted pixels (NaN when empty)."""
    cm = _check_cm(cm)
    total = int(cm.sum())
    return float(np.trace(cm) / total) if total else float("nan")


def mean_accuracy(cm: Any) -> float:
    """Mean class accuracy (recall): ``(K, K)`` counts → the mean of TP / ground-truth pixels
    over the classes present in the ground truth (NaN when there are none)."""
    cm = _check_cm(cm)
    support = cm.sum(1)
    if not support.any():
        return float("nan")
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def _check_names(class_names: object) -> list[str]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence) or not class_names or not all(
            isinstance(n, str) for n in class_names):
        raise InputError(f"expected a list of class names (background first), got {class_names!r}; "
                         "take them from the store (MaskStore.class_names)", param="class_names")
    return list(class_names)


def paper_order(class_names: Sequence[str]) -> list[int]:
    """The column order of the paper's Table II: ``(K,)`` names → class indices in that order.

    When every name is a PASCAL VOC class name, the VOC order (bk, aero, bike, bird, boat,
    bottle, bus, car, cat, chair, cow, table, dog, horse, mbike, person, plant, sheep, sofa,
    train, tv), whatever order the store keeps them in; for any other class list, the store's
    order.
    """
    names = _check_names(class_names)
    if all(n in _VOC_POSITION for n in names):
        return sorted(range(len(names)), key=lambda i: _VOC_POSITION[names[i]])
    return list(range(len(names)))


def paper_labels(class_names: Sequence[str]) -> list[str]:
    """Column labels in :func:`paper_order`: ``(K,)`` names → the paper's short labels for VOC
    names (``diningtable`` → ``table``), other names unchanged."""
    names = _check_names(class_names)
    return [VOC_SHORT_LABELS.get(names[i], names[i]) for i in paper_order(names)]
