"""SAL-Net inference, shared by ``evaluate`` and ``predict``: the model file, the settings of a
prediction, class probabilities at one or several scales, optional flip, and the dense CRF.

NOTES.md "SAL-Net", Inference: the probabilities Ẑ = softmax(attended logits) are upsampled
bilinearly to the image size; multi-scale inference runs the image at scales 0.5, 0.75 and 1.0
and fuses the probabilities by their elementwise maximum (DeepLab-v2's max fusion), optionally
with each scale's horizontally flipped image too; a fully connected CRF (Krähenbühl & Koltun,
NIPS 2011) with DeepLab-v2's settings may refine the result.

The model is any ``nn.Module`` returning an object with an ``attended`` field (``(B, C+1, h,
w)`` logits at about stride 8; :class:`salcurate.nn.salnet.SALNetOutput`).  The prediction
functions are pure: arrays in, arrays out; pydensecrf is imported only when a CRF runs.  The
checks that both commands make live here too: :func:`check_scales`, :func:`require_crf`,
:func:`check_output_folder`.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from salcurate.config import setting, to_dict
from salcurate.crf import CRF_INSTALL, crf_available, dense_crf
from salcurate.errors import InputError
from salcurate.imageio import check_image
from salcurate.paper import INFERENCE_SCALES

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: The message when a CRF is asked for but pydensecrf is missing.
CRF_MISSING = f"the dense CRF needs pydensecrf, but it is not installed; {CRF_INSTALL}, or leave out crf"

#: Scales beyond this are surely a typo (and would take the memory of a 64x larger image).
MAX_SCALE = 8.0


# ------------------------------------------------------------------------------------------
# Checks shared by evaluate and predict
# ------------------------------------------------------------------------------------------
def check_scales(scales: object, *, as_setting: bool = False) -> tuple[float, ...]:
    """The one check of inference scales: a non-empty list of numbers in (0, 8] → floats.

    The rule is the same everywhere; ``as_setting`` only words the message for a config setting
    (written ``0.5,0.75,1.0`` on the command line) instead of a Python argument
    (``(0.5, 0.75, 1.0)``).
    """
    if as_setting:
        rule = f"scales must be numbers in (0, {MAX_SCALE:g}], e.g. {','.join(map(str, INFERENCE_SCALES))}"
    else:
        rule = f"scales must be a non-empty list of numbers in (0, {MAX_SCALE:g}], e.g. {INFERENCE_SCALES}"
    if isinstance(scales, np.ndarray) and scales.ndim == 1:
        scales = tuple(scales.tolist())
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not len(scales):
        lead = "" if as_setting else f"expected a non-empty list of scales, got {scales!r}; "
        raise InputError(f"{lead}{rule}" + (f", got {scales!r}" if as_setting else ""), param="scales")
    if not all(isinstance(s, numbers.Real) and not isinstance(s, (bool, np.bool_)) and 0 < s <= MAX_SCALE
               for s in scales):
        raise InputError(f"{rule}, got {scales!r}", param="scales")
    return tuple(float(s) for s in scales)


def _check_iterations(value: object, name: str, param: str) -> int:
    """Mean-field iterations of the CRF: a whole number >= 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {value!r}", param=param)
    return int(value)


def require_crf(crf: bool) -> None:
    """Raise InputError (what to install, or to leave out crf) when a CRF is asked for but
    pydensecrf is missing; checked before a model runs."""
    if crf and not crf_available():
        raise InputError(CRF_MISSING, param="crf")


def check_output_folder(path: str | Path | None, name: str) -> None:
    """An output folder setting (``name``) must not name an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise InputError(f"{name} {path} exists and is not a folder; pass a folder path", param=name)


# ------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How predictions are made (NOTES.md "SAL-Net", Inference; DeepLab-v2's CRF settings).

    ``scales``: the image scales of multi-scale inference, fused by elementwise max;
    ``flip``: also run each scale's mirrored image; ``crf``: refine with the dense CRF, whose
    Gaussian kernel (sxy 3, compat 3), bilateral kernel (sxy 80, srgb 13, compat 10) and
    mean-field iterations (10) are the ``crf_*`` settings (TOML and Python only).
    """

    scales: tuple[float, ...] = setting(INFERENCE_SCALES,
                                        "Scales of multi-scale inference, fused by max (paper: 0.5,0.75,1.0).")
    flip: bool = setting(False, "Also predict on mirrored images (fused by max).")
    crf: bool = setting(False, "Refine with a dense CRF (DeepLab's settings; needs the crf extra).")
    crf_iterations: int = setting(10, "Mean-field iterations of the dense CRF.", cli=False)
    crf_gaussian_sxy: float = setting(3.0, "Dense CRF: spatial width (pixels) of the Gaussian smoothness kernel.",
                                      cli=False)
    crf_gaussian_compat: float = setting(3.0, "Dense CRF: weight of the Gaussian kernel's Potts term.", cli=False)
    crf_bilateral_sxy: float = setting(80.0, "Dense CRF: spatial width (pixels) of the bilateral appearance kernel.",
                                       cli=False)
    crf_bilateral_srgb: float = setting(13.0, "Dense CRF: colour width of the bilateral kernel.", cli=False)
    crf_bilateral_compat: float = setting(10.0, "Dense CRF: weight of the bilateral kernel's Potts term.", cli=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", check_scales(self.scales, as_setting=True))
        _check_iterations(self.crf_iterations, "crf_iterations", "crf_iterations")

    def crf_params(self) -> dict[str, float]:
        """The keyword arguments of :func:`crf_segmentation`."""
        return {"iterations": self.crf_iterations, "gaussian_sxy": self.crf_gaussian_sxy,
                "gaussian_compat": self.crf_gaussian_compat, "bilateral_sxy": self.crf_bilateral_sxy,
                "bilateral_srgb": self.crf_bilateral_srgb, "bilateral_compat": self.crf_bilateral_compat}

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One way of predicting: the scales fused, whether mirrored images join, whether a CRF follows."""

    name: str
    scales: tuple[float, ...]
    flip: bool
    crf: bool

    @property
    def passes(self) -> list[tuple[float, bool]]:
        """The forward passes it fuses: ``(scale, mirrored)``."""
        return [(s, m) for s in self.scales for m in ((False, True) if self.flip else (False,))]


def settings_for(*, multiscale: bool, flip: bool, crf: bool, scales: Sequence[float]) -> list[Setting]:
    """The settings of one evaluation: single-scale always, then multi-scale (and/or flip) when
    asked for, then ``+ CRF`` on the last one when ``crf``.  ``predict`` uses the last one."""
    values = check_scales(scales)
    out = [Setting("single-scale", (1.0,), False, False)]
    second = values if multiscale else (1.0,)
    if flip or second != (1.0,):
        name = ("multi-scale" if multiscale else "single-scale") + (" + flip" if flip else "")
        out.append(Setting(name, second, bool(flip), False))
    if crf:
        last = out[-1]
        out.append(Setting(last.name + " + CRF", last.scales, last.flip, True))
    return out


def at_model_scale(settings: Sequence[Setting], base: float) -> list[Setting]:
    """The settings with every scale multiplied by the model's working scale ``base`` (a model trained
    at scales around 0.375 of the images is predicted at 0.375 x 0.5, 0.375 x 0.75, 0.375 x 1.0)."""
    if base == 1.0:
        return list(settings)
    return [dataclasses.replace(s, scales=tuple(v * base for v in s.scales)) for s in settings]


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------
def model_scale(info: dict[str, Any]) -> float:
    """A SAL-Net model's working scale: the scale ``retrain`` validated it at (``val_scale``; 1 for
    models trained at the images' own scale and for files from before the setting)."""
    value = (info.get("retrain") or {}).get("val_scale", 1.0)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_SCALE
    return float(value) if ok else 1.0


def load_segmentation_model(path: str | Path, *, device: Any
                            ) -> tuple[Any, dict[str, Any], Callable[[np.ndarray], Any]]:
    """A SAL-Net model file → ``(model in eval mode on device, info, preprocess)``.

    ``path`` may be a ``retrain`` run folder (its ``model.pt`` is loaded).  ``info`` has at
    least ``class_names`` (background first) and ``config``; ``preprocess`` turns an ``(H, W,
    3)`` uint8 image into the model's ``(3, H, W)`` input.  Raises InputError for a missing file
    or one that is not a SAL-Net model.
    """
    path = Path(path)
    if path.is_dir() and (path / "model.pt").is_file():
        path = path / "model.pt"
    if not path.is_file():
        what = "is a folder without model.pt" if path.is_dir() else "not found"
        raise InputError(f"model {path} {what}; pass a model file (or run folder) written by `salcurate retrain`")
    try:
        from salcurate.nn.salnet import load_model, preprocess
    except ImportError as exc:  # pragma: no cover - only in a broken install
        raise InputError(f"SAL-Net support is missing from this install ({exc}); reinstall salcurate") from None
    model, info = load_model(path, map_location=device)
    return model, info, preprocess


def _default_preprocess() -> Callable[[np.ndarray], Any]:
    from salcurate.nn.salnet import preprocess

    return preprocess


# ------------------------------------------------------------------------------------------
# Probabilities: one pass, the passes of settings, their fusion
# ------------------------------------------------------------------------------------------
def _scale_probabilities(model: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Class probabilities of one scale, at the input size (the building block; no input checks).

    x: ``(3, H, W)`` normalised float tensor on the model's device → ``(C+1, H, W)`` float32
    tensor.  Call it under ``torch.inference_mode()``.
    """
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    batch = x[None]
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch.device.type == "cuda"):
        out = model(batch)
    logits = getattr(out, "attended", None)
    if logits is None:
        logits = out.segmentation
    prob = torch.softmax(logits.float(), dim=1)
    return F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)[0]


def _passes_probabilities(model: Any, x: Any, passes: Sequence[tuple[float, bool]], device: Any
                          ) -> tuple[dict[tuple[float, bool], Any], dict[tuple[float, bool], float]]:
    """Run each ``(scale, mirrored)`` pass once: probabilities ``(C+1, H, W)`` tensors (a mirrored
    pass's mirrored back) and seconds."""
    import torch

    probs, seconds = {}, {}
    for scale, mirrored in passes:
        t0 = time.perf_counter()
        if mirrored:
            p = _scale_probabilities(model, x.flip(-1), scale).flip(-1)
        else:
            p = _scale_probabilities(model, x, scale)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        probs[(scale, mirrored)], seconds[(scale, mirrored)] = p, time.perf_counter() - t0
    return probs, seconds


def _fused(probs: dict[tuple[float, bool], Any], passes: Sequence[tuple[float, bool]]) -> np.ndarray:
    """Max fusion of the passes' probabilities, renormalised: ``(C+1, H, W)`` float32 numpy."""
    import torch

    fused = probs[passes[0]]
    for key in passes[1:]:
        fused = torch.maximum(fused, probs[key])
    if len(passes) > 1:
        fused = fused / fused.sum(dim=0, keepdim=True)
    return fused.cpu().numpy().astype(np.float32, copy=False)


def predict_probabilities(model: Any, image: np.ndarray, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                          device: str | torch.device = "cpu",
                          preprocess: Callable[[np.ndarray], Any] | None = None) -> np.ndarray:
    """Class probabilities Ẑ of an image, fused over scales (and flips) by elementwise max.

    image: ``(H, W, 3)`` uint8 RGB → ``(C+1, H, W)`` float32.  For each scale s the
    normalised image is resized bilinearly to ``round(s·H) × round(s·W)``, run through
    ``model`` (in eval mode, on ``device``), and ``softmax(out.attended)`` is upsampled
    bilinearly (align_corners=False) to H × W; with ``flip`` the mirrored image is run too and
    its prediction mirrored back.  The predictions are fused by their elementwise maximum and,
    when there is more than one, renormalised to sum to 1 over the classes (which does not
    change the argmax).  ``scales=(1.0,)`` is single-scale inference.  ``preprocess`` turns the
    image into a ``(3, H, W)`` tensor (default :func:`salcurate.nn.salnet.preprocess`,
    ImageNet mean/std).  Runs without gradients, with bf16 autocast on CUDA.
    """
    import torch

    check_image(image)
    passes = Setting("", check_scales(scales), bool(flip), False).passes
    prep = preprocess or _default_preprocess()
    device = torch.device(device)
    with torch.inference_mode():
        probs, _ = _passes_probabilities(model, prep(image).to(device), passes, device)
        return _fused(probs, passes)


def predict_settings(model: Any, prep: Callable[[np.ndarray], Any], image: np.ndarray, settings: Sequence[Setting],
                     inference: InferenceConfig, device: Any, class_names: Sequence[str]
                     ) -> list[tuple[np.ndarray, float]]:
    """``(labels (H, W) uint8, seconds)`` per setting for one image, sharing passes and CRF inputs.

    Each setting's seconds are those of its own passes, fusion and CRF, as if it ran alone.
    Raises InputError when the model's output channels differ from its class list.
    """
    import torch

    needed = list(dict.fromkeys(p for s in settings for p in s.passes))
    with torch.inference_mode():
        x = prep(image).to(device)
        probs, seconds = _passes_probabilities(model, x, needed, device)
        channels = int(probs[needed[0]].shape[0])
        if channels != len(class_names):
            raise InputError(f"the model predicts {channels} classes but its class list has {len(class_names)} "
                             f"({', '.join(class_names[:3])}, ...); the model file is damaged, retrain it")
        out = []
        fused_cache: dict[tuple[tuple[float, bool], ...], tuple[np.ndarray, float]] = {}
        for s in settings:
            key = tuple(s.passes)
            if key not in fused_cache:
                t0 = time.perf_counter()
                fused_cache[key] = (_fused(probs, s.passes), time.perf_counter() - t0)
            fused, fuse_seconds = fused_cache[key]
            t0 = time.perf_counter()
            if s.crf:
                labels = crf_segmentation(image, fused, **inference.crf_params())
            else:
                labels = fused.argmax(axis=0).astype(np.uint8)
            out.append((labels, sum(seconds[p] for p in s.passes) + fuse_seconds + time.perf_counter() - t0))
    return out


def warm_up(model: Any, prep: Callable[[np.ndarray], Any], image: np.ndarray, settings: Sequence[Setting],
            device: Any) -> None:
    """Run the forward passes once, untimed, so that one-time set-up costs (kernel selection,
    memory pools) do not count in the first image's seconds."""
    import torch

    with torch.inference_mode():
        _passes_probabilities(model, prep(image).to(device), list(dict.fromkeys(p for s in settings for p in s.passes)),
                              device)


# ------------------------------------------------------------------------------------------
# The dense CRF
# ------------------------------------------------------------------------------------------
def _check_crf_inputs(image: object, probabilities: object, iterations: object) -> None:
    check_image(image)
    assert isinstance(image, np.ndarray)
    if not isinstance(probabilities, np.ndarray) or probabilities.ndim != 3 or \
            probabilities.shape[1:] != image.shape[:2] or not 2 <= probabilities.shape[0] <= 255:
        got = getattr(probabilities, "shape", type(probabilities).__name__)
        raise InputError(f"expected probabilities (K, H, W) with 2 <= K <= 255 and H, W = {image.shape[:2]} (the "
                         f"image's), got {got}; upsample them to the image first", param="probabilities")
    _check_iterations(iterations, "CRF iterations", "iterations")


def crf_segmentation(image: np.ndarray, probabilities: np.ndarray, *, iterations: int = 10,
                     gaussian_sxy: float = 3, gaussian_compat: float = 3, bilateral_sxy: float = 80,
                     bilateral_srgb: float = 13, bilateral_compat: float = 10) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF; returns the labels.

    image: ``(H, W, 3)`` uint8 RGB; probabilities: ``(K, H, W)`` float, K = C + 1 →
    ``(H, W)`` uint8 labels.

    Krähenbühl & Koltun's multi-label dense CRF (pydensecrf) with DeepLab-v2's settings: unary
    -log(clip(p, 1e-5, 1)); Potts pairwise terms with a Gaussian kernel (sxy 3, compat 3) and a
    bilateral kernel (sxy 80, srgb 13, compat 10); ``iterations`` mean-field steps; labels =
    argmax of the result.  Raises InputError if pydensecrf is not installed.
    """
    _check_crf_inputs(image, probabilities, iterations)
    q = dense_crf(image, probabilities, iterations=int(iterations), gaussian_sxy=gaussian_sxy,
                  gaussian_compat=gaussian_compat, bilateral_sxy=bilateral_sxy, bilateral_srgb=bilateral_srgb,
                  bilateral_compat=bilateral_compat, missing=CRF_MISSING)
    return q.argmax(axis=0).astype(np.uint8)
