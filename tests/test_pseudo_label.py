"""pseudo-label (salcurate.training.pseudo_label): CAM proxies from tags, end to end and piece by piece.

Tiny and fast: ResNet-18 from random weights, 32-48 px crops, one epoch, a handful of images
(the tiny VOC fixture of conftest.py, or scenes of salcurate.data.scenes imported into a store).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, NO_GT_ID, assert_ok, file_digest, invoke
from PIL import Image

from salcurate.data import store as store_mod
from salcurate.data.scenes import SceneConfig, class_names, make_scene
from salcurate.data.store import MaskStore, copy_store
from salcurate.data.workarea import open_work_area
from salcurate.errors import InputError, SalcurateError, StoreError
from salcurate.imageio import write_label_png
from salcurate.nn.classifier import TagClassifier, TagClassifierConfig, load_classifier
from salcurate.nn.salnet import SALNet, SALNetConfig
from salcurate.stats import average_precision
from salcurate.training import pseudo_label as pl
from salcurate.training.pseudo_label import (
    PseudoLabelConfig,
    Refine,
    augment_image,
    cam_proxy,
    check_config,
    run,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Settings that make a run take a second or two.
FAST = dict(backbone="resnet18", backbone_weights="none", input_size=32, epochs=1, batch_size=2, scales=(1.0,),
            workers=0)
FAST_ARGS = ["--backbone", "resnet18", "--backbone-weights", "none", "--input-size", "32", "--epochs", "1",
             "--batch-size", "2", "--scales", "1.0", "--workers", "0"]


def _fast(store: Path, out: Path, **kw: object) -> PseudoLabelConfig:
    return PseudoLabelConfig(store=str(store), output=str(out), **{**FAST, **kw})  # type: ignore[arg-type]


def _maps(path: Path, kind: str) -> list[np.ndarray | None]:
    with MaskStore(path) as st:
        return [st.map(kind, i) for i in range(len(st))]


def scene_store(root: Path, *, num_images: int = 8, size: int = 48, tiny: tuple[int, int] | None = None,
                tags: bool = True) -> Path:
    """Scenes (4 classes) written in VOC layout (JPEG images, ground truth, tags) and imported into
    ``root/masks.h5``; ``tiny``: one more image of that (height, width), tagged with class 1."""
    from salcurate.data.importing import ImportConfig
    from salcurate.data.importing import run as import_dataset

    config = SceneConfig(num_classes=4, size=size, seed=1)
    voc = root / "voc"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    ids, lines = [], ["id,tags"]
    for k in range(num_images):
        scene = make_scene(k, config)
        sid = f"img{k:03d}"
        Image.fromarray(scene.image).save(voc / "JPEGImages" / f"{sid}.jpg", quality=95)
        write_label_png(voc / "SegmentationClass" / f"{sid}.png", scene.ground_truth)
        ids.append(sid)
        lines.append(f"{sid},{' '.join(str(t) for t in scene.tags)}")
    if tiny is not None:
        h, w = tiny
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = 200
        Image.fromarray(rgb).save(voc / "JPEGImages" / "tiny.jpg", quality=95)
        write_label_png(voc / "SegmentationClass" / "tiny.png", np.ones((h, w), np.uint8))
        ids.append("tiny")
        lines.append("tiny,1")
    (voc / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in ids))
    (voc / "tags.csv").write_text("\n".join(lines) + "\n")
    (voc / "class_names.txt").write_text("\n".join(class_names(config)) + "\n")
    out = root / "masks.h5"
    import_dataset(ImportConfig(layout="voc", root=str(voc), output=str(out), splits=("train",),
                                gt_dir=str(voc / "SegmentationClass"),
                                tags_file=str(voc / "tags.csv") if tags else None,
                                class_names_file=str(voc / "class_names.txt"), workers=1))
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scene_store(tmp_path_factory.mktemp("scenes"))


@pytest.fixture
def small_model() -> TagClassifier:
    torch.manual_seed(0)
    return TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=3)).eval()


# -- end to end through the CLI -------------------------------------------------------------------
def test_cli_writes_the_cam_set_and_a_classifier_retrain_can_start_from(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(["pseudo-label", tiny_store, "-o", out, *FAST_ARGS, "--held-out", "0.2"])
    assert_ok(result)
    assert "held-out mAP" in result.stdout and "proxy set 'cam'" in result.stdout
    assert "mIoU" in result.stdout and str(out / "classifier.pt") in result.stdout
    with MaskStore(tiny_store) as st:
        assert st.proxy_names() == ["proxy", "cam"]  # the imported set stays
        tags, has_tags, ids = st.tags, st.has_tags, st.ids
        cam = [st.map("cam", i) for i in range(len(st))]
        sizes = list(zip(st.heights.tolist(), st.widths.tolist()))
        entry = st.run_log()[-1]
        meta = st.map_meta("cam")
    for i, labels in enumerate(cam):
        if not has_tags[i]:
            assert labels is None and ids[i] == NO_GT_ID  # no tags, no proxy
            continue
        assert labels is not None and labels.dtype == np.uint8 and labels.shape == sizes[i]
        allowed = {0} | {c + 1 for c in np.flatnonzero(tags[i])}
        assert set(np.unique(labels).tolist()) <= allowed  # only background and the image's tags
    assert entry["command"] == "pseudo-label"
    config = entry["config"]
    assert config["proxy"] == "cam" and config["backbone"] == "resnet18" and config["refine"] == "pamr"
    assert config["input_size"] == 32 and config["counts"]["held_out"] == 1 and config["counts"]["tagged"] == 5
    assert meta["config"]["proxy"] == "cam" and meta["command"] == "pseudo-label"
    # the run folder: classifier, backbone weights SAL-Net loads, settings, log
    assert {p.name for p in out.iterdir()} >= {"classifier.pt", "backbone.pth", "config.toml", "log.jsonl"}
    model, info = load_classifier(out / "classifier.pt")
    assert info["class_names"] == list(CLASS_NAMES) and info["epochs_done"] == 1
    salnet = SALNet(SALNetConfig(backbone="resnet18", num_classes=3), backbone_weights=str(out / "backbone.pth"))
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(salnet.backbone.state_dict()[name], value), name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0]["epoch"] == 1 and "loss" in records[0]
    assert any("held_out_map" in r for r in records) and any("proxy_miou" in r for r in records)
    assert 'proxy = "cam"' in (out / "config.toml").read_text()
    assert not list(tiny_store.parent.glob(".*.work"))  # the work area is gone
    # the saved settings run again: the trained classifier makes the proxies anew
    again = invoke(["pseudo-label", "--config", out / "config.toml", "--resume", "--overwrite", "--refine", "none"])
    assert_ok(again)
    assert "is trained (1 epoch); going on to the proxies" in again.stdout
    with MaskStore(tiny_store) as st:
        assert st.proxy_names() == ["proxy", "cam"] and st.map_meta("cam")["config"]["refine"] == "none"
        assert st.map_meta("cam")["config"]["input_size"] == 32


def test_result_figures(scenes: Path, tmp_path: Path) -> None:
    store = tmp_path / "m.h5"
    copy_store(scenes, store)
    res = run(_fast(store, tmp_path / "run", held_out=0.25, refine="none"))
    assert res.counts == {"samples": 8, "tagged": 8, "train": 6, "held_out": 2, "proxies": 8, "with_gt": 8,
                          "cams_resumed": 0}
    assert res.map is None or 0 <= res.map <= 1
    assert set(res.class_ap) == set(class_names(SceneConfig(num_classes=4))[1:])
    assert res.miou is not None and 0 <= res.miou <= 1 and 0 <= res.miou_per_image <= 1
    assert res.train_seconds > 0 and res.cam_seconds > 0 and res.train_images_per_s > 0 and res.cam_images_per_s > 0
    assert res.resumed_from == 0 and res.epochs == 1
    d = res.to_dict()
    assert json.loads(json.dumps(d)) == d and d["config"]["refine"] == "none"


# -- resume -------------------------------------------------------------------------------------
def test_resume_after_an_interrupted_cam_phase_gives_identical_maps(scenes: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    whole, parts = tmp_path / "whole.h5", tmp_path / "parts.h5"
    copy_store(scenes, whole)
    copy_store(scenes, parts)
    run(_fast(whole, tmp_path / "run-whole"))

    real, calls = pl.cam_proxy, []

    def interrupted(*args: object, **kw: object) -> np.ndarray:
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pl, "cam_proxy", interrupted)
    before = file_digest(parts)
    with pytest.raises(SalcurateError, match=r"interrupted while making the proxies \(3 of 8 done and kept\); "
                                             "continue with resume"):
        run(_fast(parts, tmp_path / "run-parts"))
    assert file_digest(parts) == before  # nothing reached the store
    monkeypatch.setattr(pl, "cam_proxy", real)
    with pytest.raises(InputError, match="already holds a run"):  # without resume: refused
        run(_fast(parts, tmp_path / "run-parts"))
    res = run(_fast(parts, tmp_path / "run-parts", resume=True))
    assert res.counts["cams_resumed"] == 3 and res.resumed_from == 1 and res.train_seconds == 0
    for a, b in zip(_maps(whole, "cam"), _maps(parts, "cam")):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_in_training_saves_a_checkpoint_to_resume_from(scenes: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "m.h5"
    copy_store(scenes, store)
    real, calls = pl.poly_lr, []

    def interrupted(*args: object) -> float:
        if len(calls) == 4:  # in epoch 2's first batch (4 batches of 2 per epoch)
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pl, "poly_lr", interrupted)
    out = tmp_path / "run"
    with pytest.raises(SalcurateError, match="interrupted during epoch 2 of training; checkpoint saved to") as err:
        run(_fast(store, out, epochs=2, held_out=0.0))
    assert err.value.params == ("resume",)
    _, info = load_classifier(out / "classifier.pt")
    assert info["epochs_done"] == 1 and info["interrupted"] is True
    monkeypatch.setattr(pl, "poly_lr", real)
    res = run(_fast(store, out, epochs=2, held_out=0.0, resume=True))
    assert res.resumed_from == 1 and res.counts["proxies"] == 8
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()
            if "loss" in line] == [1, 2]


def test_resume_refuses_other_training_settings(scenes: Path, tmp_path: Path) -> None:
    store = tmp_path / "m.h5"
    copy_store(scenes, store)
    run(_fast(store, tmp_path / "run"))
    with pytest.raises(InputError, match=r"other settings \(input_size differ\)"):
        run(_fast(store, tmp_path / "run", resume=True, overwrite=True, input_size=40))
    # CAM settings may change: the trained classifier makes new proxies
    res = run(_fast(store, tmp_path / "run", resume=True, overwrite=True, bg_threshold=0.3, refine="none"))
    assert res.train_seconds == 0 and res.counts["cams_resumed"] == 0
    with MaskStore(store) as st:
        assert st.map_meta("cam")["config"]["bg_threshold"] == 0.3


# -- bad input: one line, exit 2, store unchanged -------------------------------------------------
def test_a_store_without_tags_says_how_to_import_them(tmp_path: Path) -> None:
    store = scene_store(tmp_path, num_images=3, tags=False)
    before = file_digest(store)
    result = invoke(["pseudo-label", store, "-o", tmp_path / "run", *FAST_ARGS])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "no image tags" in line
    assert "`salcurate import ... --tags FILE`" in line and "--tags-from-gt" in line
    assert file_digest(store) == before and not (tmp_path / "run").exists()


def test_an_existing_set_needs_overwrite(tiny_store: Path, tmp_path: Path) -> None:
    with MaskStore(tiny_store) as st:
        n = len(st)
    with store_mod.transaction(tiny_store, command="test", config={}) as tx:
        tx.put_label_maps("cam", [None] * n, config={}, command="test")
    before = file_digest(tiny_store)
    result = invoke(["pseudo-label", tiny_store, "-o", tmp_path / "run", *FAST_ARGS])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "set of proxies named 'cam' already" in line and "--overwrite" in line
    assert "--proxy" in line
    assert file_digest(tiny_store) == before and not (tmp_path / "run").exists()
    assert_ok(invoke(["pseudo-label", tiny_store, "-o", tmp_path / "run", *FAST_ARGS, "--overwrite"]))
    with MaskStore(tiny_store) as st:
        assert st.proxy_names() == ["proxy", "cam"] and st.map("cam", 0) is not None


@pytest.mark.parametrize(("args", "fragment"), [
    (["--proxy", "gt"], "reserved"),
    (["--proxy", "a/b"], "invalid name 'a/b'"),
    (["--held-out", "1"], "--held-out must be a share from 0 to below 1, got 1.0"),
    (["--epochs", "0"], "--epochs and --batch-size must be at least 1, got 0 and 2"),
    (["--scales", "1,-1"], "--scales must be positive numbers"),
    (["--bg-threshold", "1.5"], "--bg-threshold must be between 0 and 1, got 1.5"),
    (["--cam-max-side", "4"], "--cam-max-side must be at least 8 pixels"),
    (["--scale-min", "2", "--scale-max", "1"], "--scale-min must be above 0 and at most --scale-max, got 2.0 and 1.0"),
])
def test_bad_settings_are_one_line_errors(tiny_store: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    before = file_digest(tiny_store)
    result = invoke(["pseudo-label", tiny_store, "-o", tmp_path / "run", *FAST_ARGS, *args])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and fragment in line, line
    assert file_digest(tiny_store) == before and not (tmp_path / "run").exists()


def test_crf_without_pydensecrf_is_a_one_line_error(tiny_store: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pl, "crf_available", lambda: False)
    before = file_digest(tiny_store)
    result = invoke(["pseudo-label", tiny_store, "-o", tmp_path / "run", *FAST_ARGS, "--refine", "crf"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "--refine crf needs pydensecrf" in line and "pip install 'salcurate[crf]'" in line
    assert "--refine pamr or none" in line
    assert file_digest(tiny_store) == before
    with pytest.raises(InputError) as err:  # the library names the parameter
        check_config(PseudoLabelConfig(refine="crf"))
    assert err.value.params == ("refine",) and "--" not in str(err.value)


def test_missing_imagenet_weights_are_a_one_line_error(tiny_store: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty torch cache
    before = file_digest(tiny_store)
    args = [a for a in FAST_ARGS if a not in ("--backbone-weights", "none")]
    result = invoke(["pseudo-label", tiny_store, "-o", tmp_path / "run", *args])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "ImageNet weights for resnet18 are not in the torch cache" in line
    assert "--backbone-weights none" in line
    assert file_digest(tiny_store) == before and not (tmp_path / "run").exists()


def test_rare_classes_are_named_in_a_warning(tiny_store: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="salcurate.training.pseudo_label"):
        res = run(_fast(tiny_store, tmp_path / "run"))
    with MaskStore(tiny_store) as st:
        counts = st.tags[st.has_tags].sum(axis=0)
    expected = {CLASS_NAMES[c + 1]: int(counts[c]) for c in range(3) if counts[c] < 5}
    assert expected and res.rare_classes == expected
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "fewer than 5 tagged images" in warning
    for name, n in expected.items():
        assert f"{name} ({n})" in warning


# -- small images, refinement choices ----------------------------------------------------------
def test_an_image_smaller_than_the_stride_is_padded(tmp_path: Path) -> None:
    store = scene_store(tmp_path, num_images=3, size=40, tiny=(5, 6))
    res = run(_fast(store, tmp_path / "run", scales=(1.0, 0.5)))
    with MaskStore(store) as st:
        i = st.index_of("tiny")
        labels = st.map("cam", i)
    assert labels.shape == (5, 6) and set(np.unique(labels).tolist()) <= {0, 1}
    assert res.counts["proxies"] == 4


def test_augmentation_pads_small_images_and_keeps_the_crop_size() -> None:
    rng = np.random.default_rng(0)
    image = np.full((5, 9, 3), 200, np.uint8)
    x = augment_image(image, rng, size=32, scale_min=0.5, scale_max=0.5)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert (x == 0).any() and (x != 0).any()  # padded with the mean (0 after normalization)
    big = np.full((80, 120, 3), 10, np.uint8)
    assert augment_image(big, rng, size=32, scale_min=0.625, scale_max=1.25).shape == (3, 32, 32)


@pytest.mark.parametrize("refine", Refine.values())
def test_refinement_choices(small_model: TagClassifier, refine: str) -> None:
    if refine == "crf":
        pytest.importorskip("pydensecrf.densecrf")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
    tags = np.array([True, False, True])
    labels = cam_proxy(small_model, image, tags, scales=(1.0, 0.5), refine=refine)
    assert labels.shape == (20, 28) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= {0, 1, 3}
    small = cam_proxy(small_model, image, tags, scales=(1.0,), cam_max_side=10, refine=refine)
    assert small.shape == (20, 28) and set(np.unique(small).tolist()) <= {0, 1, 3}
    assert not cam_proxy(small_model, image, np.zeros(3, bool), refine=refine).any()  # no tags: background


def test_refine_choice_reaches_the_store(scenes: Path, tmp_path: Path) -> None:
    store = tmp_path / "m.h5"
    copy_store(scenes, store)
    run(_fast(store, tmp_path / "run", refine="none", proxy="plain"))
    with MaskStore(store) as st:
        assert st.proxy_names() == ["plain"] and st.map_meta("plain")["config"]["refine"] == "none"
    result = invoke(["pseudo-label", store, "-o", tmp_path / "run2", *FAST_ARGS, "--refine", "bogus"])
    assert result.exit_code == 2


# -- pieces --------------------------------------------------------------------------------------
def test_config_defaults_are_irns() -> None:
    c = PseudoLabelConfig()
    assert (c.proxy, c.output, c.backbone, c.backbone_weights) == ("cam", "runs/pseudo-label", "resnet50", "imagenet")
    assert (c.input_size, c.epochs, c.batch_size, c.weight_decay, c.power, c.head_lr_mult) == (512, 5, 16, 1e-4,
                                                                                                 0.9, 10.0)
    assert c.scales == (1.0, 0.5, 1.5, 2.0) and c.bg_threshold == 0.15 and c.refine == "pamr"
    assert c.held_out == 0.1 and c.cam_max_side is None
    resolved = check_config(dataclasses.replace(c, backbone="vgg16", refine="none"))  # type: ignore[arg-type]
    assert resolved.backbone is pl.CamBackbone.vgg16 and resolved.refine is Refine.none
    with pytest.raises(InputError, match="backbone must be one of resnet50, resnet18, vgg16, got 'resnet101'"):
        check_config(dataclasses.replace(c, backbone="resnet101"))  # type: ignore[arg-type]


def test_held_out_split_is_seeded() -> None:
    tagged = np.arange(0, 40, 2)
    train, held = pl._split_held_out(tagged, 0.1, 0)
    assert len(held) == 2 and len(train) == 18 and set(train) | set(held) == set(tagged.tolist())
    again = pl._split_held_out(tagged, 0.1, 0)
    np.testing.assert_array_equal(held, again[1])
    assert not np.array_equal(held, pl._split_held_out(tagged, 0.1, 1)[1])
    assert len(pl._split_held_out(np.array([3]), 0.5, 0)[0]) == 1  # at least one image trains


def test_average_precision() -> None:
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1], bool)) == pytest.approx((1 + 2 / 3) / 2)
    # tied scores enter together: one threshold at 1 (P 1/2, R 1/2), one at 0 (P 2/3, R 1)
    assert average_precision(np.array([1.0, 1.0, 0.0]), np.array([1, 0, 1], bool)) == pytest.approx(
        0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0], bool)) == 1.0
    assert np.isnan(average_precision(np.array([1.0, 2.0]), np.array([0, 0], bool)))


def test_work_area_keeps_label_maps_and_leaves_other_areas_alone(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    ids = ["a", "b", "c"]
    shapes = np.array([[2, 3], [0, 0], [4, 1]])
    with open_work_area(store, "pseudo-label", {"k": 1}, ids=ids, columns=(), label_shapes=shapes) as area:
        area.write([2], np.zeros((1, 1)), labels=[np.arange(4, dtype=np.uint8).reshape(4, 1)])
        with pytest.raises(StoreError, match="label map must be"):
            area.write([0], np.zeros((1, 1)), labels=[np.zeros((3, 2), np.uint8)])
    with open_work_area(store, "pseudo-label", {"k": 1}, ids=ids, columns=(), label_shapes=shapes) as area:
        assert area.done.tolist() == [False, False, True]
        np.testing.assert_array_equal(area.label_map(2), np.arange(4, dtype=np.uint8).reshape(4, 1))
        assert area.label_map(1) is None and area.label_map(0).shape == (2, 3)
        meta = json.loads((area.folder / "meta.json").read_text())
        assert "labels" in meta
    with open_work_area(store, "score-coarse", {"k": 1}, ids=ids, columns=("f1",), mask_sizes=np.ones(3)) as area:
        meta = json.loads((area.folder / "meta.json").read_text())
        assert set(meta) == {"command", "config", "ids", "num_samples", "columns", "masks"}  # as before
        assert area.label_map(0) is None
