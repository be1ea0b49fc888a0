"""Model agreement math (``salcurate.scoring.agreement``): softmin pooling, restriction, IoU, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from salcurate.errors import InputError
from salcurate.scoring.agreement import label_probabilities, label_quality, mask_iou, restrict, softmin_pool


# -- softmin pooling (Lad & Mueller 2023) ----------------------------------------------------
def test_softmin_pool_by_hand() -> None:
    # v = (0.2, 0.9), T = 0.1: weights softmax(-v / T) = (e^-2, e^-9) / (e^-2 + e^-9)
    e2, e9 = math.exp(-2.0), math.exp(-9.0)
    expected = (0.2 * e2 + 0.9 * e9) / (e2 + e9)
    assert softmin_pool(np.array([0.2, 0.9]), temperature=0.1) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.2006378, abs=1e-7)  # the worst pixel dominates


def test_softmin_pool_limits_and_constants() -> None:
    v = np.array([0.1, 0.5, 0.7, 1.0])
    assert softmin_pool(v, temperature=1e-4) == pytest.approx(v.min(), abs=1e-9)  # T -> 0: the minimum
    assert softmin_pool(v, temperature=1e6) == pytest.approx(v.mean(), abs=1e-6)  # T -> inf: the mean
    assert v.min() <= softmin_pool(v) <= v.mean()
    assert softmin_pool(np.full(7, 0.3)) == pytest.approx(0.3)
    assert math.isnan(softmin_pool(np.empty(0)))


def test_softmin_pool_is_stable_for_many_pixels() -> None:
    v = np.r_[np.zeros(3), np.ones(10**5)]  # exp(-1 / 0.1 * ...) must not under- or overflow
    assert softmin_pool(v) == pytest.approx(10**5 * math.exp(-10) / (3 + 10**5 * math.exp(-10)), rel=1e-9)


@pytest.mark.parametrize("kw", [{"temperature": 0.0}, {"temperature": -1.0}, {"temperature": float("nan")}])
def test_softmin_pool_refuses_a_bad_temperature(kw: dict) -> None:
    with pytest.raises(InputError, match="temperature > 0"):
        softmin_pool(np.array([0.5]), **kw)


def test_softmin_pool_refuses_nan_values() -> None:
    with pytest.raises(InputError, match="finite values"):
        softmin_pool(np.array([0.5, np.nan]))


# -- restriction to background + tags --------------------------------------------------------
def test_restrict_renormalizes_over_the_kept_classes() -> None:
    probs = np.zeros((4, 1, 2))
    probs[:, 0, 0] = [0.2, 0.3, 0.1, 0.4]  # keep 0 and 2: (0.2, 0.1) / 0.3
    probs[:, 0, 1] = [0.0, 0.5, 0.0, 0.5]  # no mass on the kept classes: uniform
    out = restrict(probs, np.array([0, 2]))
    assert out.shape == (2, 1, 2)
    np.testing.assert_allclose(out[:, 0, 0], [2 / 3, 1 / 3])
    np.testing.assert_allclose(out[:, 0, 1], [0.5, 0.5])


@pytest.mark.parametrize("classes", [np.array([0, 4]), np.array([], np.int64), np.array([0.0, 1.0])])
def test_restrict_refuses_bad_classes(classes: np.ndarray) -> None:
    with pytest.raises(InputError, match="restrict expects"):
        restrict(np.full((4, 2, 2), 0.25), classes)


# -- label probabilities and the agree score ---------------------------------------------------
def test_label_probabilities_skip_ignore_and_zero_unkept_labels() -> None:
    classes = np.array([0, 3])
    probs = np.array([[[0.9, 0.4], [0.2, 0.5]],   # class 0
                      [[0.1, 0.6], [0.8, 0.5]]])  # class 3
    labels = np.array([[0, 3], [255, 2]], np.uint8)  # 255 ignored; 2 is not kept
    np.testing.assert_allclose(label_probabilities(probs, classes, labels), [0.9, 0.6, 0.0])


def test_label_quality_by_hand() -> None:
    classes = np.array([0, 1])
    probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]])  # (2, 1, 2)
    labels = np.array([[0, 1]], np.uint8)  # per-pixel quality (0.9, 0.7)
    e9, e7 = math.exp(-9.0), math.exp(-7.0)
    expected = (0.9 * e9 + 0.7 * e7) / (e9 + e7)
    assert label_quality(probs, classes, labels) == pytest.approx(expected, rel=1e-12)
    assert label_quality(probs, classes, np.full((1, 2), 255, np.uint8)) == 0.0  # nothing labelled


def test_label_probabilities_refuses_mismatched_shapes() -> None:
    with pytest.raises(InputError, match=r"probs \(A, H, W\), classes \(A,\) and labels \(H, W\)"):
        label_probabilities(np.zeros((2, 3, 3)), np.array([0, 1]), np.zeros((3, 4), np.uint8))


# -- IoU ----------------------------------------------------------------------------------------
def test_mask_iou_by_hand() -> None:
    a = np.array([[1, 1, 0], [0, 0, 0]], bool)
    b = np.array([[0, 1, 1], [0, 0, 0]], bool)
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((2, 3), bool), np.zeros((2, 3), bool)) == 1.0
    assert mask_iou(a, ~a) == 0.0


def test_mask_iou_refuses_other_shapes() -> None:
    with pytest.raises(InputError, match="two \\(H, W\\) masks of one shape"):
        mask_iou(np.zeros((2, 3), bool), np.zeros((3, 2), bool))
