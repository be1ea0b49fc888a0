"""The coarse-score formulas (SAL Eq. 3-5): hand-computed values and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from salcurate.errors import InputError
from salcurate.scoring import metrics as m

masks = arrays(np.bool_, st.tuples(st.integers(3, 12), st.integers(3, 12)))


def _mask(rows: list[str]) -> np.ndarray:
    return np.array([[c == "x" for c in r] for r in rows])


# -- F1 (first factor of Eq. 3) ---------------------------------------------------------------
H = _mask(["xxxx", "xxxx", "....", "...."])  # |H| = 8
B = _mask(["..xx", "..xx", "..xx", "...."])  # |B| = 6, |H∩B| = 4, |H∪B| = 10


def test_f_measure_standard_by_hand() -> None:
    # P = 4/6, R = 4/8 -> F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7
    assert m.f_measure(H, B) == pytest.approx(4 / 7)


def test_f_measure_paper_literal_by_hand() -> None:
    # P = |H∩B|/|H| = 4/8, R = |H∩B|/|H∪B| = 4/10 -> F1 = 2 * 0.2 / 0.9 = 4/9
    assert m.f_measure(H, B, formula="paper") == pytest.approx(4 / 9)


def test_f_measure_ignores_invalid_pixels() -> None:
    valid = np.ones_like(H)
    valid[2, 2:] = False  # two B pixels outside H become "ignore": |B| = 4, |H∩B| = 4
    # P = 1, R = 4/8 -> F1 = 2/3
    assert m.f_measure(H, B, valid=valid) == pytest.approx(2 / 3)


def test_f_measure_empty_masks_give_zero() -> None:
    empty = np.zeros_like(H)
    assert m.f_measure(H, empty) == 0.0 and m.f_measure(empty, B) == 0.0 and m.f_measure(empty, empty) == 0.0


def test_f_measure_errors_say_what_to_do() -> None:
    with pytest.raises(InputError, match="unknown AC formula 'x'; expected one of standard, paper"):
        m.f_measure(H, B, formula="x")
    with pytest.raises(InputError, match="expected 2-D arrays of one shape"):
        m.f_measure(H, B[:, :3])


@settings(max_examples=60, deadline=None)
@given(masks)
def test_mask_equal_to_reference_has_f1_one(mask: np.ndarray) -> None:
    expected = 1.0 if mask.any() else 0.0
    assert m.f_measure(mask, mask) == pytest.approx(expected)
    assert m.f_measure(mask, mask, formula="paper") == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(masks, st.sampled_from(["standard", "paper"]))
def test_eroding_a_perfect_mask_never_raises_ac(mask: np.ndarray, formula: str) -> None:
    ref = mask.copy()
    previous = m.f_measure(ref, mask, formula=formula)
    current = mask
    for _ in range(4):
        current = ndimage.binary_erosion(current)
        score = m.f_measure(ref, current, formula=formula)
        assert score <= previous + 1e-12
        previous = score


# -- objectness F(B) ----------------------------------------------------------------------------
def test_edge_map_range_and_flat_image() -> None:
    assert m.edge_map(np.full((20, 24, 3), 90, np.uint8)).max() == 0.0  # no edges at all
    img = np.zeros((40, 40), np.uint8)
    img[:, 20:] = 200
    e = m.edge_map(img)
    assert e.shape == (40, 40) and e.dtype == np.float32 and 0 <= e.min() and e.max() == 1.0
    assert e[:, 18:22].min() == 1.0 and e[:, :10].max() == 0.0  # strong near the step, zero far off


def test_mask_boundary_by_hand() -> None:
    mask = _mask(["......", ".xxxx.", ".xxxx.", ".xxxx.", "......"])
    boundary = m.mask_boundary(mask)
    assert boundary.sum() == 10 and not boundary[2, 2] and not boundary[2, 3]
    full = np.ones((5, 6), bool)  # touches only the image border: no object boundary
    assert not m.mask_boundary(full).any()


def test_objectness_follows_image_edges() -> None:
    img = np.zeros((60, 60), np.uint8)
    img[15:45, 15:45] = 220  # a bright square
    edges = m.edge_map(img)
    on_edges = np.zeros((60, 60), bool)
    on_edges[15:45, 15:45] = True
    off_edges = np.zeros((60, 60), bool)
    off_edges[25:35, 25:35] = True  # inside the flat square
    assert m.objectness(edges, on_edges) == pytest.approx(1.0)
    assert m.objectness(edges, off_edges) == 0.0
    assert m.objectness(edges, np.zeros((60, 60), bool)) == 0.0


def test_objectness_by_hand_on_given_edges() -> None:
    edges = np.zeros((5, 6), np.float32)
    edges[1, 1:5] = 1.0  # top row of the mask's boundary lies on edges of strength 1
    mask = _mask(["......", ".xxxx.", ".xxxx.", ".xxxx.", "......"])
    assert m.objectness(edges, mask) == pytest.approx(4 / 10)  # 4 of 10 boundary pixels


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(8, 20), st.integers(8, 20))), masks)
def test_objectness_in_unit_interval(image: np.ndarray, mask: np.ndarray) -> None:
    h, w = min(image.shape[0], mask.shape[0]), min(image.shape[1], mask.shape[1])
    value = m.objectness(m.edge_map(image[:h, :w]), mask[:h, :w])
    assert 0.0 <= value <= 1.0


# -- AC, CD, SC ---------------------------------------------------------------------------------
def test_boundary_accuracy_by_hand() -> None:
    assert m.boundary_accuracy(0.8, 0.5, b=0.1) == pytest.approx(0.8 * 0.5**0.1)
    assert m.boundary_accuracy(0.8, 0.0, b=0) == pytest.approx(0.8)  # F^0 = 1 switches F off
    with pytest.raises(InputError, match="expected b >= 0"):
        m.boundary_accuracy(0.8, 0.5, b=-1)
    f1, f = np.array([0.8, np.nan, 0.0]), np.array([0.5, 0.5, 0.9])  # columns, NaN = not scored
    np.testing.assert_allclose(m.boundary_accuracy(f1, f, b=0.1), [0.8 * 0.5**0.1, np.nan, 0.0])
    np.testing.assert_array_equal(m.boundary_accuracy(f1, f, b=0), f1)


def test_class_distribution_by_hand() -> None:
    labels = np.array([[0, 1, 1, 2], [2, 2, 3, 255]], np.uint8)  # fg: 1,1,2,2,2,3 (255 ignored)
    hist = m.class_histogram(labels, 3)
    assert hist.tolist() == [1, 2, 3, 1, 1]
    assert m.class_distribution(hist, np.array([True, True, False])) == pytest.approx(5 / 6)
    assert m.class_distribution(hist, np.array([False, False, False])) == 0.0
    empty = m.class_histogram(np.zeros((2, 2), np.uint8), 3)
    assert m.class_distribution(empty, np.array([True, True, True])) == 0.0  # |B| = 0
    batch = m.class_distribution(np.stack([hist, hist]), np.array([[1, 1, 0], [0, 0, 1]], bool))
    np.testing.assert_allclose(batch, [5 / 6, 1 / 6])
    with pytest.raises(InputError, match=r"expected histogram \(N, C\+2\) and tags \(N, C\)"):
        m.class_distribution(hist, np.array([True, False]))


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(2, 8), st.integers(2, 8)), elements=st.integers(0, 4)),
       arrays(np.bool_, (4,)), st.data())
def test_relabelling_a_pixel_to_an_untagged_class_never_raises_cd(labels: np.ndarray, tags: np.ndarray,
                                                                   data: st.DataObject) -> None:
    untagged = [c for c in range(1, 5) if not tags[c - 1]]
    if not untagged:
        return
    before = m.class_distribution(m.class_histogram(labels, 4), tags)
    y = data.draw(st.integers(0, labels.shape[0] - 1))
    x = data.draw(st.integers(0, labels.shape[1] - 1))
    changed = labels.copy()
    changed[y, x] = data.draw(st.sampled_from(untagged))
    assert m.class_distribution(m.class_histogram(changed, 4), tags) <= before + 1e-12


@settings(max_examples=40, deadline=None)
@given(masks, masks, st.floats(0, 1), st.floats(0, 1), st.floats(0, 3))
def test_every_score_in_unit_interval(h: np.ndarray, b: np.ndarray, f: float, cd: float, weight: float) -> None:
    hh, ww = min(h.shape[0], b.shape[0]), min(h.shape[1], b.shape[1])
    f1 = m.f_measure(h[:hh, :ww], b[:hh, :ww])
    ac = m.boundary_accuracy(f1, f, b=weight)
    sc = m.coarse_score(ac, cd)
    assert 0 <= f1 <= 1 and 0 <= ac <= 1 and 0 <= sc <= 1


def test_fine_score_by_hand() -> None:
    # SF = P x CD (Eq. 7): P = 0.8 from the scorer, CD = 3 of 4 foreground pixels tagged
    assert m.fine_score(0.8, 0.75) == pytest.approx(0.6)
    assert isinstance(m.fine_score(0.8, 0.75), float)
    p, cd = np.array([0.8, 0.5, np.nan], np.float32), np.array([0.75, 0.0, 0.9], np.float32)  # NaN = not scored
    sf = m.fine_score(p, cd)
    assert sf.shape == (3,) and sf.dtype == np.float32
    np.testing.assert_allclose(sf, [0.6, 0.0, np.nan], rtol=1e-6)
    assert m.fine_score(1.0, 1.0) == 1.0 and m.fine_score(0.0, 1.0) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1))
def test_fine_score_in_unit_interval_and_at_most_each_factor(p: float, cd: float) -> None:
    sf = m.fine_score(p, cd)
    assert 0 <= sf <= min(p, cd) + 1e-12


# -- true quality -------------------------------------------------------------------------------
def test_true_quality_and_proxy_miou_by_hand() -> None:
    gt = np.array([[0, 1, 1, 255], [0, 1, 1, 255]], np.uint8)
    proxy = np.array([[0, 1, 2, 2], [0, 0, 1, 1]], np.uint8)
    # valid: first three columns. fg gt {(0,1),(0,2),(1,1),(1,2)}; fg proxy {(0,1),(0,2),(1,2)}
    # P = 3/3, R = 3/4 -> AGT = 6/7
    assert m.true_quality(proxy, gt) == pytest.approx(6 / 7)
    # classes: 0: inter 1 (1,0)... confusion over valid pixels: gt row-major
    # gt  [0,1,1,0,1,1] proxy [0,1,2,0,0,1]: class0 inter 2 union 3; class1 inter 2 union 4; class2 inter 0 union 1
    assert m.proxy_miou(proxy, gt, 2) == pytest.approx((2 / 3 + 2 / 4 + 0) / 3)
