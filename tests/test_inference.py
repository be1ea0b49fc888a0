"""SAL-Net inference with tiny fake models: single/multi-scale probabilities, max fusion, flip,
and the dense CRF.  Nothing here needs the real SAL-Net."""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salcurate import config as cfg
from salcurate.errors import InputError
from salcurate.evaluation.inference import (
    InferenceConfig,
    check_scales,
    crf_segmentation,
    predict_probabilities,
    require_crf,
    settings_for,
)

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def normalise(image: np.ndarray) -> torch.Tensor:
    """ImageNet normalisation of ``(H, W, 3)`` uint8 → ``(3, H, W)`` float."""
    return (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - MEAN) / STD


class Out(NamedTuple):
    segmentation: torch.Tensor
    classification: torch.Tensor | None
    attended: torch.Tensor


class ColourNet(nn.Module):
    """3 classes = the brightest of R, G, B (normalised), at stride 8."""

    def forward(self, x: torch.Tensor) -> Out:
        logits = 4 * F.avg_pool2d(x, 8, ceil_mode=True)
        return Out(logits, None, logits)


class WidthNet(nn.Module):
    """Constant logits chosen by the input width (to check the fusion over scales by hand)."""

    def __init__(self, table: dict[int, tuple[float, ...]]) -> None:
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> Out:
        b, _, h, w = x.shape
        logits = torch.tensor(self.table[w]).view(1, -1, 1, 1).expand(b, -1, math.ceil(h / 8), math.ceil(w / 8))
        return Out(torch.zeros_like(logits), None, logits.contiguous())  # only ``attended`` may be used


class HalvesNet(nn.Module):
    """Logits (0, 5) on the left half of its output grid and (2, 0) on the right half."""

    def forward(self, x: torch.Tensor) -> Out:
        b, _, h, w = x.shape
        hh, ww = math.ceil(h / 8), math.ceil(w / 8)
        left = torch.arange(ww) < ww / 2
        logits = torch.where(left, torch.tensor([0.0, 5.0])[:, None], torch.tensor([2.0, 0.0])[:, None])
        logits = logits[None, :, None, :].expand(b, 2, hh, ww).contiguous()
        return Out(logits, None, logits)


def softmax(*logits: float) -> np.ndarray:
    e = np.exp(np.array(logits, dtype=np.float64))
    return e / e.sum()


def two_colour_image(h: int = 40, w: int = 48) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2, 0] = 255  # left red
    image[:, w // 2:, 2] = 255  # right blue
    return image


# -- predict_probabilities -----------------------------------------------------------------------
def test_smoke_shape_dtype_and_distribution() -> None:
    image = two_colour_image(37, 45)  # not a multiple of 8
    prob = predict_probabilities(ColourNet(), image, preprocess=normalise)
    assert prob.shape == (3, 37, 45) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)


def test_single_scale_is_the_upsampled_softmax_of_attended() -> None:
    image = two_colour_image()
    x = normalise(image)[None]
    expected = F.interpolate(torch.softmax(ColourNet()(x).attended, 1), size=(40, 48), mode="bilinear",
                             align_corners=False)
    prob = predict_probabilities(ColourNet(), image, scales=(1.0,), preprocess=normalise, device="cpu")
    np.testing.assert_allclose(prob, expected[0].numpy(), atol=1e-6)
    labels = prob.argmax(0)
    assert (labels[:, :16] == 0).all() and (labels[:, 32:] == 2).all()  # red -> 0, blue -> 2


def test_multi_scale_is_the_renormalised_max_by_hand() -> None:
    # width 16 at scale 1.0, round(0.5 * 16) = 8 at scale 0.5
    net = WidthNet({16: (2.0, 0.0, 0.0), 8: (0.0, 3.0, 0.0)})
    image = np.zeros((16, 16, 3), np.uint8)
    prob = predict_probabilities(net, image, scales=(0.5, 1.0), preprocess=normalise)
    fused = np.maximum(softmax(2, 0, 0), softmax(0, 3, 0))
    fused /= fused.sum()
    np.testing.assert_allclose(prob, np.broadcast_to(fused[:, None, None], (3, 16, 16)), rtol=1e-5)
    single = predict_probabilities(net, image, scales=(1.0,), preprocess=normalise)
    np.testing.assert_allclose(single[:, 0, 0], softmax(2, 0, 0), rtol=1e-5)
    assert prob.argmax(0).max() == 1 and single.argmax(0).max() == 0  # the 0.5 scale's confident class wins


def test_flip_fuses_the_mirrored_prediction_mirrored_back() -> None:
    image = np.zeros((16, 32, 3), np.uint8)  # output grid 2 x 4: columns 0, 1 "left"
    plain = predict_probabilities(HalvesNet(), image, preprocess=normalise)
    flipped = predict_probabilities(HalvesNet(), image, flip=True, preprocess=normalise)
    a, c = softmax(0, 5), softmax(2, 0)
    np.testing.assert_allclose(plain[:, :, :8], np.broadcast_to(a[:, None, None], (2, 16, 8)), rtol=1e-5)
    # left pixels: max(plain (a), mirrored-back right-half value (c)), renormalised
    expected = np.maximum(a, c) / np.maximum(a, c).sum()
    np.testing.assert_allclose(flipped[:, :, :8], np.broadcast_to(expected[:, None, None], (2, 16, 8)), rtol=1e-5)
    np.testing.assert_allclose(flipped[:, :, ::-1], flipped, rtol=1e-5)  # symmetric after fusing both ways


def test_tiny_image_and_tiny_scale() -> None:
    prob = predict_probabilities(ColourNet(), two_colour_image(3, 5), scales=(0.1, 1.0), preprocess=normalise)
    assert prob.shape == (3, 3, 5)


@pytest.mark.parametrize(("image", "scales", "message"), [
    (np.zeros((8, 8), np.uint8), (1.0,),
     r"expected the image as an \(H, W, 3\) uint8 RGB array.*got uint8 array of shape \(8, 8\)"),
    (np.zeros((8, 8, 3), np.float32), (1.0,), r"expected the image as an \(H, W, 3\) uint8 RGB array.*got float32"),
    (np.zeros((8, 8, 3), np.uint8), (), r"scales must be a non-empty list of numbers in \(0, 8\]"),
    (np.zeros((8, 8, 3), np.uint8), (0.0, 1.0),
     r"scales must be a non-empty list of numbers in \(0, 8\], e.g. \(0.5, 0.75, 1.0\), got \(0.0, 1.0\)"),
])
def test_predict_errors(image: np.ndarray, scales: tuple, message: str) -> None:
    with pytest.raises(InputError, match=message):
        predict_probabilities(ColourNet(), image, scales=scales, preprocess=normalise)


# -- InferenceConfig -----------------------------------------------------------------------------------
def test_inference_config_defaults_are_the_papers() -> None:
    c = InferenceConfig()
    assert c.scales == (0.5, 0.75, 1.0) and c.flip is False
    assert c.crf_params() == {"iterations": 10, "gaussian_sxy": 3, "gaussian_compat": 3, "bilateral_sxy": 80,
                              "bilateral_srgb": 13, "bilateral_compat": 10}
    assert c.to_dict()["scales"] == [0.5, 0.75, 1.0]
    assert InferenceConfig(scales=[1, 0.5]).scales == (1.0, 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scales": ()}, r"scales must be numbers in \(0, 8\], e.g. 0.5,0.75,1.0, got \(\)"),
    ({"scales": (-1.0,)}, r"scales must be numbers in \(0, 8\]"),
    ({"crf_iterations": 0}, r"crf_iterations must be a whole number >= 1, got 0"),
])
def test_inference_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        InferenceConfig(**kwargs)


def test_inference_config_from_toml_data_and_its_crf_settings() -> None:
    c = cfg.from_dict(InferenceConfig, {"scales": "1,0.5", "crf": True, "crf_iterations": 3, "crf_bilateral_srgb": 5})
    assert c.scales == (1.0, 0.5) and c.crf is True and c.crf_params()["iterations"] == 3
    assert c.crf_params()["bilateral_srgb"] == 5
    cli = {fi.name for fi in cfg.fields(InferenceConfig) if fi.meta["cli"]}
    assert cli == {"scales", "flip", "crf"}  # the CRF's parameters are TOML and Python settings only


# -- check_scales: the one check of scales ----------------------------------------------------------------
def test_check_scales_smoke() -> None:
    assert check_scales((0.5, 1)) == (0.5, 1.0)
    assert check_scales([np.float32(0.75), 8]) == (0.75, 8.0)
    assert check_scales(np.array([0.5, 1.0])) == (0.5, 1.0)


@pytest.mark.parametrize("scales", [(), "0.5,1", (True,), (0.5, float("nan")), (9.0,), (1.0, "2"), None, 1.0])
def test_check_scales_rejects(scales: object) -> None:
    with pytest.raises(InputError, match=r"scales must be a non-empty list of numbers in \(0, 8\]") as info:
        check_scales(scales)
    assert info.value.params == ("scales",)
    with pytest.raises(InputError, match=r"scales must be numbers in \(0, 8\], e.g. 0.5,0.75,1.0, got "):
        check_scales(scales, as_setting=True)


def test_every_scales_check_is_check_scales() -> None:
    """The config, the probabilities and the evaluation settings apply one rule."""
    for bad in ((), (0.0,), (8.5,)):
        for call in (lambda: InferenceConfig(scales=bad), lambda: settings_for(multiscale=True, flip=False, crf=False,
                                                                               scales=bad),
                     lambda: predict_probabilities(ColourNet(), two_colour_image(), scales=bad, preprocess=normalise)):
            with pytest.raises(InputError, match=r"scales must be .*numbers in \(0, 8\]"):
                call()


def test_require_crf_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from salcurate.evaluation import inference

    require_crf(False)
    monkeypatch.setattr(inference, "crf_available", lambda: False)
    require_crf(False)
    with pytest.raises(InputError, match=r"needs pydensecrf, .*'salcurate\[crf\]'.*, or leave out crf$") as info:
        require_crf(True)
    assert info.value.params == ("crf",) and "--" not in str(info.value)


# -- crf_segmentation ---------------------------------------------------------------------------------------
def _noisy_halves(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dark-left / bright-right image, weak probabilities that agree with it except at a few
    scattered pixels, and the clean labels (1 left, 2 right)."""
    rng = np.random.default_rng(seed)
    h, w = 24, 32
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2:] = 255
    clean = np.where(np.arange(w) < w // 2, 1, 2)[None].repeat(h, 0).astype(np.uint8)
    prob = np.full((3, h, w), 0.2, np.float32)
    prob[1][clean == 1] = 0.6
    prob[2][clean == 2] = 0.6
    noisy = rng.random((h, w)) < 0.05
    swap = prob[1][noisy].copy()
    prob[1][noisy], prob[2][noisy] = prob[2][noisy], swap  # wrong class at 5% of the pixels
    return image, prob, clean


def test_crf_smoke_shape_and_dtype() -> None:
    pytest.importorskip("pydensecrf.densecrf")
    image, prob, _ = _noisy_halves()
    labels = crf_segmentation(image, prob, iterations=2)
    assert labels.shape == (24, 32) and labels.dtype == np.uint8 and labels.max() < 3


def test_crf_keeps_confident_labels_and_removes_isolated_errors() -> None:
    pytest.importorskip("pydensecrf.densecrf")
    image, prob, clean = _noisy_halves()
    assert (prob.argmax(0) != clean).sum() > 10  # the argmax has the scattered errors
    np.testing.assert_array_equal(crf_segmentation(image, prob), clean)
    confident = np.where(np.arange(3)[:, None, None] == clean[None], 0.98, 0.01).astype(np.float32)
    np.testing.assert_array_equal(crf_segmentation(image, confident), clean)


def test_crf_without_pydensecrf_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    image, prob, _ = _noisy_halves()
    with pytest.raises(InputError, match=r"needs pydensecrf, but it is not installed; .*pip install pydensecrf2"):
        crf_segmentation(image, prob)


@pytest.mark.parametrize(("prob", "kwargs", "message"), [
    (np.full((3, 24, 31), 0.3, np.float32), {},
     r"expected probabilities \(K, H, W\) with 2 <= K <= 255 and H, W = \(24, 32\)"),
    (np.full((1, 24, 32), 1.0, np.float32), {}, r"expected probabilities \(K, H, W\) with 2 <= K <= 255"),
    (np.full((3, 24, 32), 0.3, np.float32), {"iterations": 0}, r"CRF iterations must be a whole number >= 1, got 0"),
])
def test_crf_errors(prob: np.ndarray, kwargs: dict, message: str) -> None:
    image, _, _ = _noisy_halves()
    with pytest.raises(InputError, match=message):
        crf_segmentation(image, prob, **kwargs)
