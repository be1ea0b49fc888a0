"""CAM to proxy (salcurate.nn.cam): multi-scale CAMs, normalization, scores, PAMR, argmax."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salcurate.errors import InputError
from salcurate.nn.cam import (
    CAM_EPS,
    cam_scores,
    multiscale_cams,
    normalize_cams,
    pamr,
    pamr_affinities,
    proxy_from_scores,
    score_probabilities,
)
from salcurate.nn.classifier import TagClassifier, TagClassifierConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Identity2(nn.Module):
    """CAMs = the first two input channels, at stride 1 (so a map can be compared pixel by pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2]


class Pool8(nn.Module):
    """CAMs = 8x8 average pooling of the first two channels: fails on inputs under 8 pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, :2], 8)


# -- multiscale_cams ---------------------------------------------------------------------------
def test_smoke_with_a_tag_classifier() -> None:
    torch.manual_seed(0)
    model = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=3)).eval()
    cams = multiscale_cams(model, torch.randn(3, 20, 28), scales=(1.0, 0.5))
    assert cams.shape == (3, 20, 28) and cams.dtype == torch.float32
    assert not cams.requires_grad and bool((cams >= 0).all())


def test_flip_is_flipped_back_and_relu_applied() -> None:
    x = torch.randn(3, 5, 7)
    cams = multiscale_cams(Identity2(), x, scales=(1.0,), flip=True)
    torch.testing.assert_close(cams, 2 * x[:2].clamp_min(0))  # image and flipped image agree pixel by pixel
    torch.testing.assert_close(multiscale_cams(Identity2(), x, scales=(1.0,), flip=False), x[:2].clamp_min(0))


def test_scales_are_summed_by_hand() -> None:
    # a constant image: every scale gives the same constant map; 4 scales x 2 (flip) x relu(2) = 16, relu(-1) = 0
    x = torch.stack([torch.full((16, 24), 2.0), torch.full((16, 24), -1.0), torch.zeros(16, 24)])
    cams = multiscale_cams(Pool8(), x)
    torch.testing.assert_close(cams[0], torch.full((16, 24), 16.0))
    torch.testing.assert_close(cams[1], torch.zeros(16, 24))


def test_small_images_are_padded_not_refused() -> None:
    x = torch.ones(3, 5, 6)  # 0.5 x 5 = 2-3 pixels: under the stride of 8
    cams = multiscale_cams(Pool8(), x, scales=(1.0, 0.5))
    assert cams.shape == (2, 5, 6) and bool(torch.isfinite(cams).all())
    # the zero padding dilutes the pooled value but the map covers the whole image
    assert float(cams[0].min()) > 0


@pytest.mark.parametrize("image, scales", [
    (torch.randn(1, 3, 8, 8), (1.0,)),
    (torch.randn(3, 8, 8).int(), (1.0,)),
    (np.zeros((3, 8, 8), np.float32), (1.0,)),
    (torch.randn(3, 8, 8), ()),
    (torch.randn(3, 8, 8), (1.0, 0.0)),
])
def test_multiscale_cams_rejects_bad_input(image, scales) -> None:
    with pytest.raises(InputError, match=r"multiscale_cams expects a \(3, H, W\) float image tensor") as err:
        multiscale_cams(Identity2(), image, scales=scales)
    assert "\n" not in str(err.value)


# -- normalize_cams / cam_scores / score_probabilities -----------------------------------------
CAMS = torch.tensor([[[0.0, 2.0], [4.0, 1.0]],
                     [[3.0, 0.0], [0.0, 6.0]],
                     [[5.0, 5.0], [5.0, 5.0]]])
TAGS = np.array([True, True, False])


def test_normalize_cams_by_hand() -> None:
    out = normalize_cams(CAMS, TAGS)
    torch.testing.assert_close(out[0], CAMS[0] / (4 + CAM_EPS))
    torch.testing.assert_close(out[1], CAMS[1] / (6 + CAM_EPS))
    torch.testing.assert_close(out[2], torch.zeros(2, 2))  # untagged
    assert torch.equal(normalize_cams(torch.zeros(3, 2, 2), TAGS), torch.zeros(3, 2, 2))  # no division by 0
    torch.testing.assert_close(normalize_cams(CAMS, torch.tensor([0, 1, 0]))[1], out[1])  # 0/1 tensor tags


@pytest.mark.parametrize("tags", [np.array([True, False]), np.array([0, 2, 1]), "cat"])
def test_tags_must_be_a_c_vector(tags) -> None:
    with pytest.raises(InputError, match=r"expects tags as a \(3,\) bool vector over the foreground classes"):
        normalize_cams(CAMS, tags)


def test_cam_scores_constant_background() -> None:
    norm = normalize_cams(CAMS, TAGS)
    scores = cam_scores(norm, TAGS, bg_threshold=0.3)
    assert scores.shape == (4, 2, 2)
    torch.testing.assert_close(scores[0], torch.full((2, 2), 0.3))
    torch.testing.assert_close(scores[1:3], norm[:2])
    torch.testing.assert_close(scores[3], torch.zeros(2, 2))
    # by hand: (0,0): class 2 (0.5) > 0.3; (0,1): class 1 (0.5); (1,0): class 1 (1.0); (1,1): class 2 (1.0)
    assert proxy_from_scores(scores).tolist() == [[2, 1], [1, 2]]
    assert proxy_from_scores(cam_scores(norm, TAGS, bg_threshold=0.6)).tolist() == [[0, 0], [1, 2]]


def test_cam_scores_power_background_by_hand() -> None:
    norm = torch.tensor([[[0.5, 0.0]], [[0.0, 0.2]]])
    scores = cam_scores(norm, [True, True], bg_power=2.0)
    torch.testing.assert_close(scores[0], torch.tensor([[0.25, 0.64]]))  # (1 - 0.5)^2, (1 - 0.2)^2
    assert proxy_from_scores(scores).tolist() == [[1, 0]]


def test_untagged_classes_never_win() -> None:
    norm = torch.rand(3, 6, 6)
    scores = cam_scores(norm, [False, True, False], bg_threshold=0.05)
    assert set(proxy_from_scores(scores).unique().tolist()) <= {0, 2}
    probs = score_probabilities(scores)
    torch.testing.assert_close(probs.sum(0), torch.ones(6, 6))
    assert torch.equal(proxy_from_scores(probs), proxy_from_scores(scores))


@pytest.mark.parametrize("kwargs", [{"bg_threshold": 0.0}, {"bg_threshold": 1.5}, {"bg_power": -1.0}])
def test_cam_scores_rejects_bad_settings(kwargs) -> None:
    with pytest.raises(InputError, match="cam_scores expects .* 0 < bg_threshold < 1 and bg_power None or > 0"):
        cam_scores(torch.rand(3, 2, 2), TAGS, **kwargs)


# -- proxy_from_scores -------------------------------------------------------------------------
def test_proxy_from_scores_numpy_and_tensor_ties_to_background() -> None:
    scores = np.array([[[0.5, 0.2]], [[0.5, 0.1]], [[0.1, 0.7]]], np.float32)
    out = proxy_from_scores(scores)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.tolist() == [[0, 2]]
    t = proxy_from_scores(torch.from_numpy(scores))
    assert t.dtype == torch.uint8 and t.tolist() == [[0, 2]]
    with pytest.raises(InputError, match=r"proxy_from_scores expects \(1 \+ C, H, W\) scores"):
        proxy_from_scores(torch.zeros(2, 2))


# -- PAMR --------------------------------------------------------------------------------------
def _pamr_loops(image: np.ndarray, probs: np.ndarray, iterations: int, dilations, kernel: int) -> np.ndarray:
    """Eq. 3-4 pixel by pixel (float64), replicate border, written independently of the module."""
    k, h, w = image.shape
    r = kernel // 2

    def at(a: np.ndarray, y: int, x: int) -> np.ndarray:
        return a[:, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    aff = {}
    for y in range(h):
        for x in range(w):
            window, neigh = [], []
            for d in dilations:
                for a in range(-r, r + 1):
                    for b in range(-r, r + 1):
                        window.append(at(image, y + a * d, x + b * d))
                        if a or b:
                            neigh.append((a * d, b * d))
            sigma = np.std(np.stack(window), axis=0, ddof=1)  # per channel
            logits = np.array([np.mean(-np.abs(at(image, y + dy, x + dx) - image[:, y, x]) / (1e-8 + 0.1 * sigma))
                               for dy, dx in neigh])
            e = np.exp(logits - logits.max())
            aff[y, x] = (neigh, e / e.sum())
    p = probs.astype(np.float64)
    for _ in range(iterations):
        new = np.zeros_like(p)
        for (y, x), (neigh, wts) in aff.items():
            new[:, y, x] = sum(wt * at(p, y + dy, x + dx) for (dy, dx), wt in zip(neigh, wts))
        p = new
    return p


def test_pamr_centre_pixel_by_hand() -> None:
    # 3x3 image, bottom row bright: the centre's window has six 0s and three 1s, mean 1/3,
    # unbiased variance (6/9 + 3 * 4/9) / 8 = 1/4, sigma = 1/2, so k = -|0 - I_j| / 0.05 = 0 or -20.
    image = torch.zeros(3, 3, 3, dtype=torch.float64)
    image[:, 2, :] = 1.0
    probs = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(1, 3, 3)
    out = pamr(image, probs, iterations=1, dilations=(1,))
    e = math.exp(-20.0 / (1 + 1e-7))  # 1e-8 in the denominator: 0.05 + 1e-8
    expected = (1 + 2 + 3 + 4 + 6 + e * (7 + 8 + 9)) / (5 + 3 * e)
    assert math.isclose(float(out[0, 1, 1]), expected, rel_tol=1e-9)
    assert math.isclose(float(out[0, 1, 1]), 16 / 5, rel_tol=1e-7)  # the bright row is practically ignored


@pytest.mark.parametrize("dilations, kernel, iterations", [((1,), 3, 1), ((1, 2), 3, 2), ((1,), 5, 1)])
def test_pamr_matches_pixel_loops(dilations, kernel, iterations) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((3, 4, 5))
    probs = rng.random((2, 4, 5))
    out = pamr(torch.from_numpy(image), torch.from_numpy(probs), iterations=iterations, dilations=dilations,
               kernel=kernel)
    assert out.dtype == torch.float64 and out.shape == (2, 4, 5)
    np.testing.assert_allclose(out.numpy(), _pamr_loops(image, probs, iterations, dilations, kernel), rtol=1e-10)


def test_pamr_keeps_distributions_and_constants() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 12, 10)
    probs = torch.softmax(torch.randn(4, 12, 10), dim=0)
    out = pamr(image, probs)  # the paper's defaults: 10 iterations, dilations up to 24 (beyond the image)
    torch.testing.assert_close(out.sum(0), torch.ones(12, 10))
    assert bool((out >= 0).all())
    torch.testing.assert_close(pamr(image, torch.full((2, 12, 10), 0.25)), torch.full((2, 12, 10), 0.25))
    aff = pamr_affinities(image, dilations=(1, 2), kernel=3)
    assert aff.shape == (16, 12, 10)
    torch.testing.assert_close(aff.sum(0), torch.ones(12, 10))


def test_pamr_respects_a_strong_edge() -> None:
    # left half dark, right half bright; a blurry mask that leaks over the edge gets sharpened back to it
    image = torch.zeros(3, 8, 12)
    image[:, :, 6:] = 1.0
    image += 0.01 * torch.rand(3, 8, 12, generator=torch.Generator().manual_seed(0))
    fg = torch.zeros(8, 12)
    fg[:, 6:] = 1.0
    fg[:, 4:6] = 0.6  # a spill of 2 columns onto the dark side
    probs = torch.stack([1 - fg, fg])
    out = pamr(image, probs, iterations=10, dilations=(1, 2))
    assert float(out[1, :, :4].max()) < 0.1  # nothing leaks across the edge into the far left
    assert float(out[1, :, 6:].min()) > 0.9  # the bright side stays foreground
    assert float(out[1, :, 4:6].mean()) < 0.6  # the spill is pulled towards its own side's label


def test_pamr_is_differentiable_in_probs() -> None:
    image = torch.rand(3, 4, 4, dtype=torch.float64)
    probs = torch.rand(2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: pamr(image, p, iterations=2, dilations=(1, 2)), (probs,))


@pytest.mark.parametrize("kwargs", [
    {"probs": torch.rand(2, 3, 3)}, {"iterations": -1}, {"dilations": (0,)}, {"kernel": 4}, {"dilations": ()},
])
def test_pamr_rejects_bad_input(kwargs) -> None:
    args = {"image": torch.rand(3, 4, 4), "probs": torch.rand(2, 4, 4), **kwargs}
    image, probs = args.pop("image"), args.pop("probs")
    with pytest.raises(InputError, match="pamr expects a .K', H, W. float image") as err:
        pamr(image, probs, **args)
    assert "\n" not in str(err.value)
