"""Segmentation metrics (confusion matrix, IoU, mIoU, accuracy, the paper's class order):
hand-computed values, batches, errors, and agreement with torchmetrics on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salcurate import segmentation_metrics as m
from salcurate.errors import InputError
from salcurate.imageio import VOC_CLASS_NAMES

# 3 classes; rows are ground truth, 255 = ignore.
GT = np.array([[0, 0, 1, 1],
               [0, 0, 1, 255],
               [2, 2, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 0, 2],
                 [2, 2, 1, 0]], dtype=np.uint8)
# counted pixels (gt, pred): (0,0) x3, (0,1) x1, (1,1) x2, (1,0) x1, (2,2) x2, (2,1) x1
CM = np.array([[3, 1, 0],
               [1, 2, 0],
               [0, 1, 2]])


# -- confusion_matrix --------------------------------------------------------------------------
def test_confusion_matrix_smoke_and_dtype() -> None:
    cm = m.confusion_matrix(PRED, GT, num_classes=3)
    assert cm.shape == (3, 3) and cm.dtype == np.int64


def test_confusion_matrix_by_hand_ignores_255() -> None:
    np.testing.assert_array_equal(m.confusion_matrix(PRED, GT, num_classes=3), CM)
    assert m.confusion_matrix(PRED, GT, num_classes=3).sum() == GT.size - 2  # two ignore pixels left out


def test_confusion_matrix_without_ignore_index_counts_every_pixel() -> None:
    gt = np.where(GT == 255, 0, GT)
    assert m.confusion_matrix(PRED, gt, num_classes=3, ignore_index=None).sum() == gt.size


def test_confusion_matrix_of_a_batch_is_the_sum_and_accumulates() -> None:
    batch_pred, batch_gt = np.stack([PRED, PRED[::-1]]), np.stack([GT, GT[::-1]])
    cm = m.confusion_matrix(batch_pred, batch_gt, num_classes=3)
    np.testing.assert_array_equal(cm, 2 * CM)  # flipping both rows keeps the same pairs
    acc = m.accumulate_confusion(np.zeros((3, 3), np.int64), PRED, GT)
    acc2 = m.accumulate_confusion(acc, PRED, GT)
    np.testing.assert_array_equal(acc, CM)  # the input is not changed in place
    np.testing.assert_array_equal(acc2, 2 * CM)


def test_confusion_matrix_takes_torch_tensors() -> None:
    cm = m.confusion_matrix(torch.from_numpy(PRED.astype(np.int64)), torch.from_numpy(GT.astype(np.int64)),
                            num_classes=3)
    np.testing.assert_array_equal(cm, CM)


@pytest.mark.parametrize(("pred", "gt", "kwargs", "message"), [
    (PRED + 1, GT, {"num_classes": 3}, r"predicted labels must lie in 0\.\.2, got values 1\.\.3; check num_classes"),
    (PRED, np.where(GT == 2, 7, GT).astype(np.uint8), {"num_classes": 3},
     r"ground-truth labels must lie in 0\.\.2 or be 255 \(ignore\), got 7"),
    (PRED[:, :3], GT, {"num_classes": 3},
     r"expected prediction and ground truth of one shape, got \(3, 3\) and \(3, 4\)"),
    (PRED.astype(np.float32), GT, {"num_classes": 3},
     r"expected integer label maps, got float32 and uint8; take argmax"),
    (PRED, GT, {"num_classes": 0}, r"num_classes must be a whole number >= 1 \(K = C \+ 1\), got 0"),
    (PRED, GT, {"num_classes": 3, "ignore_index": 1}, r"ignore_index 1 is one of the 3 class indices"),
])
def test_confusion_matrix_errors(pred: np.ndarray, gt: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        m.confusion_matrix(pred, gt, **kwargs)


# -- scores from the confusion matrix ------------------------------------------------------------
def test_iou_by_hand() -> None:
    # IoU_0 = 3 / (4 + 4 - 3) = 3/5, IoU_1 = 2 / (3 + 4 - 2) = 2/5, IoU_2 = 2 / (3 + 2 - 2) = 2/3
    np.testing.assert_allclose(m.iou_from_confusion(CM), [3 / 5, 2 / 5, 2 / 3])
    assert m.mean_iou(CM) == pytest.approx((3 / 5 + 2 / 5 + 2 / 3) / 3)
    assert m.pixel_accuracy(CM) == pytest.approx(7 / 10)
    assert m.mean_accuracy(CM) == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)


def test_absent_classes_are_nan_and_left_out_of_the_mean() -> None:
    cm = np.zeros((4, 4), np.int64)
    cm[:3, :3] = CM  # class 3 in neither ground truth nor prediction
    iou = m.iou_from_confusion(cm)
    assert iou.shape == (4,) and np.isnan(iou[3])
    assert m.mean_iou(cm) == pytest.approx(m.mean_iou(CM))
    # a class only predicted (false positives) counts, with IoU 0
    cm[0, 3] = 5
    assert m.iou_from_confusion(cm)[3] == 0.0 and m.mean_iou(cm) < m.mean_iou(CM)


def test_empty_confusion_matrix_gives_nan_without_warnings() -> None:
    empty = np.zeros((3, 3), np.int64)
    with np.testing.assert_no_warnings():
        assert np.isnan(m.iou_from_confusion(empty)).all()
        assert np.isnan(m.mean_iou(empty)) and np.isnan(m.pixel_accuracy(empty)) and np.isnan(m.mean_accuracy(empty))


@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.int64), np.zeros(3, np.int64), np.full((2, 2), 0.5),
                                 -np.eye(2, dtype=np.int64)])
def test_bad_confusion_matrix(bad: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"expected a \(K, K\) confusion matrix of non-negative pixel counts"):
        m.iou_from_confusion(bad)


# -- against torchmetrics ---------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "seed"), [(2, 0), (4, 1), (7, 2), (21, 3)])
def test_agrees_with_torchmetrics(k: int, seed: int) -> None:
    tm = pytest.importorskip("torchmetrics")
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

    rng = np.random.default_rng(seed)
    present = rng.choice(k, size=max(1, k - 2), replace=False) if k > 2 else np.arange(k)  # some classes absent
    gt = rng.choice(present, size=(3, 17, 23)).astype(np.int64)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = np.where(rng.random(gt.shape) < 0.6, np.where(gt == 255, 0, gt), rng.choice(present, size=gt.shape))
    ours = m.confusion_matrix(pred, gt, num_classes=k)
    p, t = torch.from_numpy(pred), torch.from_numpy(gt)

    theirs = MulticlassConfusionMatrix(num_classes=k, ignore_index=255)(p, t).numpy()
    np.testing.assert_array_equal(ours, theirs)
    per_class = MulticlassJaccardIndex(num_classes=k, average=None, ignore_index=255)(p, t).numpy()
    iou = m.iou_from_confusion(ours)
    valid = gt != 255
    absent = k - len(np.union1d(gt[valid], pred[valid]))
    assert np.isnan(iou).sum() == absent and (absent > 0 or k == 2)
    np.testing.assert_allclose(np.nan_to_num(iou, nan=0.0), per_class, rtol=1e-5)  # torchmetrics: 0 for absent
    macro = tm.JaccardIndex(task="multiclass", num_classes=k, average="macro", ignore_index=255)(p, t).item()
    assert m.mean_iou(ours) == pytest.approx(macro, rel=1e-5)


# -- the paper's class order ---------------------------------------------------------------------------
def test_paper_order_for_voc_names() -> None:
    assert m.paper_order(VOC_CLASS_NAMES) == list(range(21))
    assert m.paper_labels(VOC_CLASS_NAMES) == [
        "bk", "aero", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table", "dog",
        "horse", "mbike", "person", "plant", "sheep", "sofa", "train", "tv"]


def test_paper_order_for_voc_names_stored_in_another_order() -> None:
    names = ["background", "tvmonitor", "cat", "aeroplane"]
    assert m.paper_order(names) == [0, 3, 2, 1]
    assert m.paper_labels(names) == ["bk", "aero", "cat", "tv"]


def test_other_class_lists_keep_the_store_order() -> None:
    names = ("background", "widget", "cat", "gadget")
    assert m.paper_order(names) == [0, 1, 2, 3]
    assert m.paper_labels(names) == ["bk", "widget", "cat", "gadget"]


@pytest.mark.parametrize("bad", ["background", [], [1, 2], None])
def test_paper_order_errors(bad: object) -> None:
    with pytest.raises(InputError, match=r"expected a list of class names \(background first\)"):
        m.paper_order(bad)  # type: ignore[arg-type]
