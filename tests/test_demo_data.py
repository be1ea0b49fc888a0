"""Tests of the synthetic demo data set (salcurate.data.demo_data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salcurate.data.demo_data import (
    CLASS_NAMES,
    MARKER_NAME,
    PROXY_FAULTS,
    SALIENCY_FAULTS,
    DemoConfig,
    DemoProxies,
    make_demo_dataset,
    make_demo_sample,
    similar_classes,
)
from salcurate.errors import InputError
from salcurate.events import Events
from salcurate.imageio import read_grey_png, read_label_png

SMALL = DemoConfig(num_images=16, size=64, seed=3, proxies="faults")
NUM_FG = len(CLASS_NAMES) - 1


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text().splitlines()
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def _foreground_f1(gt: np.ndarray, proxy: np.ndarray) -> float:
    valid = gt != 255
    g = (gt > 0) & valid
    p = (proxy > 0) & (proxy != 255) & valid
    total = int(g.sum() + p.sum())
    return 2 * int((g & p).sum()) / total if total else 1.0


class _Recorder(Events):
    """Remembers the events a command sends."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.advanced: list[int] = []

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.started.append(total)

    def advance(self, n: int = 1, **info: object) -> None:
        self.advanced.append(n)


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    events = _Recorder()
    summary = make_demo_dataset(root, SMALL, events=events)
    assert events.started == [SMALL.num_images]
    assert sum(events.advanced) == SMALL.num_images
    assert summary.root == root
    assert summary.num_images == 16
    assert summary.class_names == CLASS_NAMES
    assert summary.splits == {"train": 12, "val": 4}
    return root


def test_layout_and_counts(small: Path) -> None:
    train, val = _ids(small, "train"), _ids(small, "val")
    ids = sorted(train + val)
    assert len(train) == 12 and len(val) == 4 and not set(train) & set(val)
    assert ids == [f"demo_{i:06d}" for i in range(16)]
    for folder, suffix in [("JPEGImages", ".jpg"), ("SegmentationClass", ".png"), ("Proxy", ".png"),
                           ("Saliency", ".png")]:
        assert sorted(p.name for p in (small / folder).iterdir()) == [i + suffix for i in ids]
    assert (small / "class_names.txt").read_text().splitlines() == list(CLASS_NAMES)
    assert CLASS_NAMES[0] == "background" and NUM_FG == 6
    marker = json.loads((small / MARKER_NAME).read_text())
    assert marker["config"]["num_images"] == 16 and marker["complete"] is True
    header, rows = _csv(small / "quality.csv")
    assert header == ["id", "split", "fault", "strength"]
    assert [r[0] for r in rows] == ids
    for image_id, split, fault, strength in rows:
        assert split == ("val" if image_id in val else "train")
        assert all(part in PROXY_FAULTS for part in fault.split("+"))
        assert 0.0 <= float(strength) <= 1.0 and (float(strength) == 0.0) == (fault == "none")
    header, rows = _csv(small / "saliency_quality.csv")
    assert header == ["id", "fault", "strength"] and len(rows) == 16
    assert all(r[1] in SALIENCY_FAULTS for r in rows)


def test_images_and_masks(small: Path) -> None:
    sizes = set()
    lo, hi = SMALL.size_range
    for image_path in sorted((small / "JPEGImages").iterdir()):
        with Image.open(image_path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            w, h = image.size
        assert lo <= h <= hi and lo <= w <= hi
        sizes.add((h, w))
        stem = image_path.stem
        gt = read_label_png(small / "SegmentationClass" / f"{stem}.png")
        proxy = read_label_png(small / "Proxy" / f"{stem}.png")
        saliency = read_grey_png(small / "Saliency" / f"{stem}.png")
        assert gt.shape == proxy.shape == saliency.shape == (h, w)
        with Image.open(small / "SegmentationClass" / f"{stem}.png") as png:
            assert png.mode == "P"
        assert set(np.unique(gt)) <= set(range(NUM_FG + 1)) | {255}
        assert (gt == 255).any() and (gt > 0).any()
        assert set(np.unique(proxy)) <= set(range(NUM_FG + 1)) | {255}
        assert saliency.max() > 100  # the objects stand out somewhere
    assert len(sizes) > 1


def test_tags_match_ground_truth(small: Path) -> None:
    header, rows = _csv(small / "tags.csv")
    assert header == ["id", "tags"]
    assert len(rows) == 16
    for image_id, tags in rows:
        gt = read_label_png(small / "SegmentationClass" / f"{image_id}.png")
        present = sorted(int(c) for c in np.unique(gt) if 0 < c < 255)
        assert [int(t) for t in tags.split()] == present
        assert 1 <= len(present) <= 3


def test_deterministic(tmp_path: Path) -> None:
    config = DemoConfig(num_images=12, size=64, seed=7, proxies="faults")
    make_demo_dataset(tmp_path / "a", config)
    make_demo_dataset(tmp_path / "b", config)
    make_demo_dataset(tmp_path / "c", DemoConfig(num_images=12, size=64, seed=8, proxies="faults"))
    a, b, c = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b"), _all_bytes(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    for folder in ("JPEGImages", "SegmentationClass", "Proxy", "Saliency"):
        assert all(a[k] != c[k] for k in a if k.startswith(folder))


def test_images_do_not_depend_on_each_other() -> None:
    few = DemoConfig(num_images=8, size=64, seed=1, proxies="faults")
    many = DemoConfig(num_images=40, size=64, seed=1, val_fraction=0.5, proxies="faults")
    one, other = make_demo_sample(5, few), make_demo_sample(5, many)
    assert np.array_equal(one.image, other.image)
    assert np.array_equal(one.proxy, other.proxy)
    assert np.array_equal(one.saliency, other.saliency)


def test_proxy_quality_spreads(tmp_path: Path) -> None:
    root = tmp_path / "q"
    make_demo_dataset(root, DemoConfig(num_images=60, size=64, seed=0, proxies="faults"))
    _, rows = _csv(root / "quality.csv")
    scores, faults = [], []
    for image_id, _, fault, _ in rows:
        gt = read_label_png(root / "SegmentationClass" / f"{image_id}.png")
        proxy = read_label_png(root / "Proxy" / f"{image_id}.png")
        scores.append(_foreground_f1(gt, proxy))
        faults.append(fault)
    scores_arr = np.array(scores)
    assert (scores_arr > 0.9).sum() >= 6
    assert (scores_arr < 0.5).sum() >= 6
    assert ((scores_arr > 0.5) & (scores_arr < 0.9)).sum() >= 6
    clean = [s for s, f in zip(scores, faults) if f == "none"]
    assert len(clean) >= 6 and min(clean) > 0.85
    assert 5 <= len(clean) <= 30  # about a quarter near-perfect


def test_zero_fault_strength_gives_perfect_proxies() -> None:
    config = DemoConfig(num_images=8, size=64, seed=2, fault_strength=0.0, proxies="faults")
    for index in range(8):
        sample = make_demo_sample(index, config)
        assert sample.proxy_fault == "none" and sample.saliency_fault == "none"
        valid = sample.ground_truth != 255
        assert np.array_equal(sample.proxy[valid], sample.ground_truth[valid])


def test_saliency_covers_objects() -> None:
    config = DemoConfig(num_images=8, size=64, seed=4, fault_strength=0.0)
    for index in range(4):
        sample = make_demo_sample(index, config)
        fg = sample.ground_truth > 0
        fg &= sample.ground_truth != 255
        bg = sample.ground_truth == 0
        assert sample.saliency[fg].mean() > sample.saliency[bg].mean() + 100


@pytest.mark.parametrize(
    "field, value",
    [("num_images", 7), ("size", 31), ("val_fraction", 0.0), ("val_fraction", 1.0), ("fault_strength", -0.1),
     ("seed", -1)],
)
def test_bad_config(field: str, value: object) -> None:
    with pytest.raises(InputError, match=field) as info:
        DemoConfig(**{field: value})
    assert "\n" not in str(info.value)


def test_refuses_non_empty_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    root.mkdir()
    (root / "JPEGImages").mkdir()
    (root / "notes.txt").write_text("mine\n")
    with pytest.raises(InputError, match="non-empty"):
        make_demo_dataset(root, DemoConfig(num_images=8, size=32))
    assert sorted(p.name for p in root.iterdir()) == ["JPEGImages", "notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="file"):
        make_demo_dataset(tmp_path / "file", DemoConfig(num_images=8, size=32))


def test_empty_folder_accepted(tmp_path: Path) -> None:
    summary = make_demo_dataset(tmp_path, DemoConfig(num_images=8, size=32))
    assert summary.splits == {"train": 6, "val": 2}


def test_rerun_into_demo_folder(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    make_demo_dataset(root, DemoConfig(num_images=16, size=48, seed=1, proxies="faults"))
    summary = make_demo_dataset(root, DemoConfig(num_images=12, size=48, seed=1, proxies="faults"))
    assert summary.num_images == 12
    for folder in ("JPEGImages", "SegmentationClass", "Proxy", "Saliency"):
        assert len(list((root / folder).iterdir())) == 12
    assert len(_ids(root, "train")) + len(_ids(root, "val")) == 12
    assert json.loads((root / MARKER_NAME).read_text())["config"]["num_images"] == 12
    fresh = tmp_path / "fresh"
    make_demo_dataset(fresh, DemoConfig(num_images=12, size=48, seed=1, proxies="faults"))
    assert _all_bytes(root) == _all_bytes(fresh)


# -- the default data set: tags and saliency only (the demo makes its proxies with pseudo-label) --
DEFAULT_SMALL = DemoConfig(num_images=10, size=48, seed=5)


@pytest.fixture(scope="module")
def tags_only(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo-tags") / "data"
    summary = make_demo_dataset(root, DEFAULT_SMALL)
    assert summary.class_names == CLASS_NAMES and summary.num_images == 10
    return root


def test_default_writes_no_proxies(tags_only: Path) -> None:
    assert DemoConfig().proxies == DemoProxies.NONE == "none"
    names = sorted(p.name for p in tags_only.iterdir())
    assert names == ["DEMO_DATASET", "ImageSets", "JPEGImages", "Saliency", "SegmentationClass", "class_names.txt",
                     "saliency_quality.csv", "tags.csv"]
    ids = sorted(_ids(tags_only, "train") + _ids(tags_only, "val"))
    assert ids == [f"demo_{i:06d}" for i in range(10)]
    for folder, suffix in [("JPEGImages", ".jpg"), ("SegmentationClass", ".png"), ("Saliency", ".png")]:
        assert sorted(p.name for p in (tags_only / folder).iterdir()) == [i + suffix for i in ids]
    assert (tags_only / "class_names.txt").read_text().splitlines() == list(CLASS_NAMES)
    assert CLASS_NAMES == ("background", "disc_a", "disc_b", "blob_a", "blob_b", "star_a", "star_b")
    marker = json.loads((tags_only / MARKER_NAME).read_text())
    assert marker["config"]["proxies"] == "none" and marker["complete"] is True


def test_default_tags_are_the_ground_truth_classes_and_saliency_is_there(tags_only: Path) -> None:
    header, rows = _csv(tags_only / "tags.csv")
    assert header == ["id", "tags"] and len(rows) == 10
    counts = []
    for image_id, tags in rows:
        gt = read_label_png(tags_only / "SegmentationClass" / f"{image_id}.png")
        present = sorted(int(c) for c in np.unique(gt) if 0 < c < 255)
        assert [int(t) for t in tags.split()] == present and 1 <= len(present) <= 4
        counts.append(len(present))
        saliency = read_grey_png(tags_only / "Saliency" / f"{image_id}.png")
        assert saliency.shape == gt.shape and saliency.dtype == np.uint8
        with Image.open(tags_only / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.size == gt.shape[::-1]
    assert max(counts) > 1  # several objects per image
    _, rows = _csv(tags_only / "saliency_quality.csv")
    assert all(r[1] in SALIENCY_FAULTS and 0.0 <= float(r[2]) <= 1.0 for r in rows)


def test_default_is_deterministic(tags_only: Path, tmp_path: Path) -> None:
    make_demo_dataset(tmp_path / "again", DEFAULT_SMALL)
    assert _all_bytes(tmp_path / "again") == _all_bytes(tags_only)
    sample = make_demo_sample(3, DEFAULT_SMALL)
    assert sample.proxy is None and sample.proxy_fault == ""
    # the proxies option changes nothing but the proxies
    faulty = make_demo_sample(3, DemoConfig(num_images=10, size=48, seed=5, proxies="faults"))
    assert np.array_equal(sample.image, faulty.image) and np.array_equal(sample.saliency, faulty.saliency)
    assert faulty.proxy is not None and faulty.proxy.shape == sample.ground_truth.shape


def test_rerun_without_proxies_removes_the_old_proxies(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    make_demo_dataset(root, DemoConfig(num_images=8, size=32, proxies="faults"))
    assert (root / "Proxy").is_dir() and (root / "quality.csv").is_file()
    make_demo_dataset(root, DemoConfig(num_images=8, size=32))
    make_demo_dataset(tmp_path / "fresh", DemoConfig(num_images=8, size=32))
    assert _all_bytes(root) == _all_bytes(tmp_path / "fresh")
    assert not (root / "Proxy").exists()


def test_saliency_faults_follow_fault_strength() -> None:
    clean = DemoConfig(num_images=30, size=32, seed=1, fault_strength=0.0)
    assert {make_demo_sample(i, clean).saliency_fault for i in range(30)} == {"none"}
    spread = {make_demo_sample(i, DemoConfig(num_images=30, size=32, seed=1)).saliency_fault for i in range(30)}
    assert "none" in spread and len(spread) >= 3


# -- the hand-made faults option -------------------------------------------------------------------
def test_similar_classes_are_the_look_alike_partners() -> None:
    assert similar_classes(6) == {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5}
    assert similar_classes(5) == {1: 2, 2: 1, 3: 4, 4: 5, 5: 3}  # the last group has three members


def test_faults_option_makes_the_old_faults(small: Path) -> None:
    root = small
    config = SMALL
    similar = similar_classes(config.num_classes)
    seen: set[str] = set()
    for index in range(40):
        sample = make_demo_sample(index, DemoConfig(num_images=40, size=64, seed=3, proxies="faults"))
        faults = set(sample.proxy_fault.split("+"))
        seen |= faults
        assert sample.proxy is not None
        gt, proxy = sample.ground_truth, sample.proxy
        valid = gt != 255
        fg, proxy_fg = (gt > 0) & valid, (proxy > 0) & valid
        if faults == {"erode"}:
            assert proxy_fg.sum() < fg.sum()
        if faults == {"dilate"}:
            assert proxy_fg.sum() > fg.sum()
        if faults == {"swap"}:  # part of an object takes its look-alike class
            assert any((proxy == similar[t]).any() for t in sample.tags)
        if faults == {"spurious"}:  # a blob on the background
            assert (proxy_fg & (gt == 0)).sum() > 0.2 * fg.sum()
        if faults == {"none"}:
            assert _foreground_f1(gt, proxy) > 0.85
    assert seen == set(PROXY_FAULTS)
    assert (root / "Proxy").is_dir() and (root / "quality.csv").is_file()


def test_bad_proxies_choice() -> None:
    with pytest.raises(InputError, match="proxies must be one of none, faults") as info:
        DemoConfig(proxies="cam")
    assert info.value.params == ("proxies",)
