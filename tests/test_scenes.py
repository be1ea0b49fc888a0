"""Synthetic scenes (salcurate.data.scenes): determinism, arrays, tags, classes, saliency failure modes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from salcurate.data.scenes import (
    SALIENCY_MODES,
    Scene,
    SceneConfig,
    class_names,
    make_scene,
    saliency_mode,
)
from salcurate.errors import InputError


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    config = SceneConfig(num_classes=6, size=64, seed=3)
    return [make_scene(i, config) for i in range(24)]


# -- determinism -------------------------------------------------------------------------------
def _same(a: Scene, b: Scene) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("image", "ground_truth", "labels", "saliency", "instances", "tag_vector")) \
        and (a.tags, a.saliency_mode, a.object_classes) == (b.tags, b.saliency_mode, b.object_classes)


def test_same_seed_and_index_give_the_same_scene() -> None:
    config = SceneConfig(size=48, seed=5)
    later = make_scene(7, config)
    assert _same(make_scene(7, SceneConfig(size=48, seed=5)), later)  # no hidden state between calls
    assert not np.array_equal(make_scene(8, config).image, later.image)
    assert not np.array_equal(make_scene(7, SceneConfig(size=48, seed=6)).image, later.image)


def test_saliency_mix_changes_only_the_saliency() -> None:
    a = make_scene(2, SceneConfig(size=48, saliency_mix=(("good", 1.0),)))
    b = make_scene(2, SceneConfig(size=48, saliency_mix=(("blur", 1.0),)))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.ground_truth, b.ground_truth)
    assert (a.saliency_mode, b.saliency_mode) == ("good", "blur")


# -- arrays ------------------------------------------------------------------------------------
def test_shapes_dtypes_and_values(scenes: list[Scene]) -> None:
    sizes = set()
    for s in scenes:
        h, w = s.image.shape[:2]
        sizes.add((h, w))
        assert s.image.dtype == np.uint8 and s.image.shape == (h, w, 3)
        for a in (s.ground_truth, s.labels, s.saliency, s.instances):
            assert a.dtype == np.uint8 and a.shape == (h, w)
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05 and abs(h * w - 64 * 64) < 0.1 * 64 * 64
        assert set(np.unique(s.ground_truth).tolist()) <= set(range(7)) | {255}
        assert s.saliency_mode in SALIENCY_MODES
        assert 1 <= len(s.object_classes) <= 4
        assert s.image.std() > 10  # a photo, not a flat colour
    assert len(sizes) > 5  # sides and aspects vary


def test_tags_are_the_classes_in_the_ground_truth(scenes: list[Scene]) -> None:
    for s in scenes:
        in_gt = set(np.unique(s.ground_truth).tolist()) - {0, 255}
        assert set(s.tags) == in_gt == set(np.unique(s.labels).tolist()) - {0}
        assert list(s.tags) == sorted(s.tags)
        assert np.flatnonzero(s.tag_vector).tolist() == [t - 1 for t in s.tags]
        assert set(s.tags) <= set(s.object_classes)


def test_ground_truth_is_labels_with_a_thin_boundary_band(scenes: list[Scene]) -> None:
    for s in scenes:
        band = s.ground_truth == 255
        assert np.array_equal(s.ground_truth[~band], s.labels[~band])
        assert 0 < band.mean() < 0.25


def test_objects_stay_mostly_visible(scenes: list[Scene]) -> None:
    for s in scenes:
        for k in range(1, len(s.object_classes) + 1):
            assert np.count_nonzero(s.instances == k) >= 20
        lut = np.array((0, *s.object_classes), np.uint8)
        assert np.array_equal(lut[s.instances], s.labels)


def test_look_alike_classes_occur_together() -> None:
    config = SceneConfig(num_classes=10, size=48, lookalike_rate=1.0, min_objects=2, max_objects=2)
    names = class_names(config)
    pairs = 0
    for i in range(12):
        classes = make_scene(i, config).object_classes
        families = {names[c].rsplit("_", 1)[0] for c in classes}
        pairs += len(classes) == 2 and len(families) == 1
    assert pairs >= 10  # only a retried-and-dropped placement can break the pair


# -- classes -----------------------------------------------------------------------------------
def test_class_names_come_in_look_alike_groups() -> None:
    names = class_names(SceneConfig())
    assert len(names) == 11 and names[0] == "background"
    assert names[1:5] == ("disc_a", "disc_b", "blob_a", "blob_b")
    families = [n.rsplit("_", 1)[0] for n in names[1:]]
    assert all(families.count(f) == 2 for f in families)
    odd = class_names(SceneConfig(num_classes=5))
    assert odd[1:] == ("disc_a", "disc_b", "blob_a", "blob_b", "blob_c")
    assert class_names(SceneConfig(num_classes=1)) == ("background", "disc_a")
    assert len(set(class_names(SceneConfig(num_classes=48)))) == 49


# -- saliency failure modes --------------------------------------------------------------------
def test_modes_occur_with_their_configured_frequencies() -> None:
    config = SceneConfig(seed=11)
    n = 4000
    drawn = [saliency_mode(i, config) for i in range(n)]
    for mode, p in config.mode_weights.items():
        count = drawn.count(mode)
        assert abs(count - n * p) < 4 * np.sqrt(n * p * (1 - p)) + 1, (mode, count, n * p)
    skewed = SceneConfig(saliency_mix=(("missed", 3.0), ("clutter", 1.0)))
    counts = [saliency_mode(i, skewed) for i in range(2000)]
    assert set(counts) == {"missed", "clutter"} and abs(counts.count("missed") / 2000 - 0.75) < 0.04


def test_make_scene_uses_the_drawn_mode(scenes: list[Scene]) -> None:
    config = SceneConfig(num_classes=6, size=64, seed=3)
    assert [s.saliency_mode for s in scenes] == [saliency_mode(i, config) for i in range(24)]


def _stats(s: Scene) -> tuple[float, float, float]:
    """(lowest mean saliency of an object, share of background above 0.5, highest saliency), in [0, 1]."""
    sal = s.saliency / 255.0
    objects = [sal[s.instances == k].mean() for k in range(1, len(s.object_classes) + 1)]
    return min(objects), float((sal[s.instances == 0] > 0.5).mean()), float(sal.max())


@pytest.mark.parametrize("mode", SALIENCY_MODES)
def test_each_failure_mode_does_what_it_says(mode: str) -> None:
    config = SceneConfig(size=64, seed=2, saliency_mix=((mode, 1.0),))
    for i in range(6):
        s = make_scene(i, config)
        weakest, clutter, peak = _stats(s)
        if mode == "good":
            assert weakest > 0.55 and clutter < 0.02
        elif mode == "missed":
            assert weakest < 0.25 and clutter < 0.02
        elif mode == "clutter":
            assert weakest > 0.55 and clutter > 0.005
        elif mode == "blur":
            assert peak < 0.75  # low contrast: nothing is clearly salient
        else:  # partial: an object is salient on one side only
            dark = [(s.saliency[s.instances == k] < 0.3 * 255).mean() for k in range(1, len(s.object_classes) + 1)]
            assert clutter < 0.02 and any(0.15 < d < 0.85 for d in dark)


# -- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, text", [
    ({"num_classes": 0}, "SceneConfig.num_classes: expected a whole number from 1 to 48, got 0"),
    ({"size": 16}, "SceneConfig.size: expected a whole number of pixels from 32 to 2048"),
    ({"min_objects": 3, "max_objects": 2}, "SceneConfig.max_objects: expected a whole number from min_objects (3)"),
    ({"seed": -1}, "SceneConfig.seed: expected a non-negative whole number"),
    ({"lookalike_rate": 2.0}, "SceneConfig.lookalike_rate: expected a number from 0 to 1"),
    ({"saliency_mix": (("great", 1.0),)}, "SceneConfig.saliency_mix: expected (mode, weight) pairs over good"),
    ({"saliency_mix": (("good", 0.0),)}, "positive sum"),
])
def test_bad_config(kwargs: dict, text: str) -> None:
    with pytest.raises(InputError) as err:
        SceneConfig(**kwargs)
    assert text in str(err.value) and "\n" not in str(err.value)


def test_mix_as_a_dict_and_bad_index() -> None:
    assert SceneConfig(saliency_mix={"good": 1, "blur": 1}).mode_weights["blur"] == 0.5
    with pytest.raises(InputError, match="make_scene expects a non-negative whole index and a SceneConfig"):
        make_scene(-1)
    with pytest.raises(InputError, match="class_names expects a SceneConfig, got int"):
        class_names(10)  # type: ignore[arg-type]


def test_fast_enough_for_benchmarks() -> None:
    config = SceneConfig(seed=9)
    make_scene(0, config)  # loads the photos
    start = time.perf_counter()
    for i in range(20):
        make_scene(i, config)
    # 50 scenes/s on one core is the target; allow a busy test machine 4x
    assert time.perf_counter() - start < 20 / 12.5
