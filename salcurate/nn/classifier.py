"""A multi-label tag classifier whose class maps are class activation maps (CAMs).

Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for Discriminative
Localization", CVPR 2016 (CAM).  With features f_k(x, y) of the last convolutional layer and a
bias-free linear classifier w^c, the class activation map and the class score are::

    M_c(x, y) = sum_k w_k^c f_k(x, y)                       (the map of class c, Sec. 2)
    S_c       = sum_k w_k^c GAP(f_k) = GAP(M_c)             (GAP: global average pooling)

so a 1x1 convolution without bias to C maps followed by GAP gives both the logits the network
is trained on (binary cross-entropy against the image's tags) and the CAMs, in one pass::

    backbone (output stride 8)  ->  1x1 conv, no bias  ->  M  (B, C, h, w)  ->  GAP  ->  logits (B, C)

The backbones are SAL-Net's (:func:`salcurate.nn.salnet.build_backbone`: ``vgg16``,
``resnet18/50/101``, output stride 8, ImageNet weights from the local torch cache, a file or
none).  :func:`backbone_state_dict_torchvision` gives a trained classifier's backbone under
torchvision's key names, so SAL-Net can start from it (``SALNet(..., backbone_weights=path)``).

Model files (:func:`save_classifier` / :func:`load_classifier`) hold plain types and tensors
only and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salcurate._version import __version__
from salcurate.errors import InputError
from salcurate.nn.cam import MIN_SIDE, resize_longer
from salcurate.nn.fileio import atomic_torch_save
from salcurate.nn.salnet import BACKBONES, MODEL_FORMAT, FrozenBatchNorm, build_backbone, preprocess

log = logging.getLogger(__name__)

__all__ = [
    "CLASSIFIER_FORMAT",
    "CLASSIFIER_FORMAT_VERSION",
    "ClassifierOutput",
    "TagClassifier",
    "TagClassifierConfig",
    "backbone_state_dict_torchvision",
    "load_classifier",
    "read_classifier_file",
    "save_classifier",
    "tag_probabilities",
]

CLASSIFIER_FORMAT = "salcurate.tag_classifier"
CLASSIFIER_FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TagClassifierConfig:
    """The architecture.  ``num_classes`` is C, the foreground classes (one logit and one CAM each).

    ``backbone`` defaults to ``resnet50``, the CAM network of IRN (Ahn, Cho, Kwak, CVPR 2019) and
    of most CAM pipelines since.  ``freeze_bn``: keep the backbone's batch-norm statistics and
    affine parameters fixed (IRN does, with ImageNet weights and small batches); None = frozen
    when ImageNet (or other) weights are loaded, trained from random initialization.
    """

    backbone: str = "resnet50"
    num_classes: int = 20
    freeze_bn: bool | None = None

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise InputError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}",
                             param="backbone")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise InputError(f"num_classes (C, foreground classes) must be a whole number >= 1, got "
                             f"{self.num_classes!r}; pass the store's number of foreground classes",
                             param="num_classes")
        if self.freeze_bn is not None and not isinstance(self.freeze_bn, bool):
            raise InputError(f"freeze_bn must be True, False or None, got {self.freeze_bn!r}; pass None for "
                             "the automatic choice", param="freeze_bn")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TagClassifierConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"unknown tag classifier config keys {sorted(unknown)}; expected backbone, "
                             "num_classes, freeze_bn")
        return cls(**d)


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------
class ClassifierOutput(NamedTuple):
    """What :class:`TagClassifier` returns."""

    logits: Tensor  # (B, C): S_c = GAP(M_c), trained with binary cross-entropy against the tags
    cams: Tensor  # (B, C, h, w): M_c at output stride 8 (raw: not rectified, not normalized)


class TagClassifier(FrozenBatchNorm):
    """Backbone -> bias-free 1x1 conv to C class maps -> GAP: ``(B, 3, H, W) -> ClassifierOutput``.

    ``logits (B, C)`` and ``cams (B, C, ~H/8, ~W/8)``; the logits are the spatial means of the
    CAMs (Zhou et al., CVPR 2016).  ``backbone_weights``: ``"none"``, ``"imagenet"`` (the local
    torch cache, never downloaded) or a path to a torchvision state dict, as for SAL-Net.
    """

    def __init__(self, config: TagClassifierConfig, *, backbone_weights: str = "none") -> None:
        super().__init__()
        if not isinstance(config, TagClassifierConfig):
            raise InputError(f"TagClassifier expects a TagClassifierConfig, got {type(config).__name__}; "
                             "build one with TagClassifierConfig(backbone=..., num_classes=...)")
        self.config = config
        self.backbone = build_backbone(config.backbone, weights=backbone_weights)
        self.classifier = nn.Conv2d(BACKBONES[config.backbone], config.num_classes, 1, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.01)  # the repository's head initialization (DeepLab-v2)
        self.bn_frozen = False
        self.set_bn_frozen(config.freeze_bn if config.freeze_bn is not None else backbone_weights != "none")

    def forward(self, x: Tensor) -> ClassifierOutput:
        cams = self.classifier(self.backbone(x))
        return ClassifierOutput(cams.mean(dim=(2, 3)), cams)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, classifier parameters): IRN trains the classifier at 10x the backbone's rate."""
        return ([p for p in self.backbone.parameters() if p.requires_grad],
                [p for p in self.classifier.parameters() if p.requires_grad])


def tag_probabilities(model: nn.Module, image: np.ndarray, *, side: int, amp: bool = False,
                      channels_last: bool = False) -> np.ndarray:
    """The classifier's tag probabilities for one whole image: ``(H, W, 3)`` uint8 -> ``(C,)`` float32.

    ``sigmoid(S_c)`` of the image normalized (``salnet.preprocess``), resized so that its longer
    side is ``side`` (the training scale) and padded at the bottom and right to at least
    ``MIN_SIDE`` pixels a side; the forward pass runs on the model's device, in bf16 autocast with
    ``amp`` and on a channels-last input with ``channels_last``.  The model outputs a
    :class:`ClassifierOutput`; put it in eval mode.  No gradients.
    """
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise InputError(f"tag_probabilities expects side >= 1 (the longer side the image is resized to), got "
                         f"{side!r}; pass the classifier's training input size", param="side")
    x = resize_longer(preprocess(image), side)
    h, w = x.shape[1:]
    if min(h, w) < MIN_SIDE:
        x = F.pad(x, (0, max(MIN_SIDE - w, 0), 0, max(MIN_SIDE - h, 0)))
    device = next(model.parameters()).device
    x = x[None].to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x).logits
    return torch.sigmoid(logits.float())[0].cpu().numpy()


# ------------------------------------------------------------------------------------------
# Backbone weights for SAL-Net
# ------------------------------------------------------------------------------------------
def backbone_state_dict_torchvision(model: nn.Module) -> dict[str, Tensor]:
    """The backbone's weights under torchvision's names: ``{name: tensor}`` (CPU copies).

    ResNets: ``stem.0.`` -> ``conv1.``, ``stem.1.`` -> ``bn1.``, ``layerN.`` unchanged; VGG16:
    ``N.`` -> ``features.N.`` (the output-stride-8 changes add no weights).  Saved with
    ``torch.save``, the dict is a file that ``build_backbone(name, weights=path)`` and
    ``SALNet(config, backbone_weights=path)`` load.  ``model``: a :class:`TagClassifier` (or
    anything with a ``backbone`` built by ``build_backbone``, such as a SAL-Net).
    """
    model = getattr(model, "module", model)  # DistributedDataParallel / compiled wrappers
    model = getattr(model, "_orig_mod", model)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise InputError(f"backbone_state_dict_torchvision expects a TagClassifier (a model with a backbone), got "
                         f"{type(model).__name__}; pass the trained classifier")
    resnet = hasattr(backbone, "stem")
    renames = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    out: dict[str, Tensor] = {}
    for key, value in backbone.state_dict().items():
        if resnet:
            head = key.split(".", 2)
            prefix = f"{head[0]}.{head[1]}."
            name = renames[prefix] + head[2] if prefix in renames else key
        else:
            name = f"features.{key}"
        out[name] = value.detach().clone() if value.is_meta else value.detach().to("cpu", copy=True)
    return out


# ------------------------------------------------------------------------------------------
# Model files
# ------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_classifier(path: str | os.PathLike[str], model: TagClassifier, *, class_names: Sequence[str],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its config, class names, weights and ``extra``) atomically to ``path``.

    ``class_names``: the store's C + 1 names, background first (as for SAL-Net's files).  The file
    is ``{"format": "salcurate.tag_classifier", "format_version", "salcurate_version", "config",
    "class_names", "bn_frozen", "state_dict", **extra}``; training adds its progress through ``extra``.
    """
    model = _unwrap(model)
    if not isinstance(model, TagClassifier):
        raise InputError(f"save_classifier expects a TagClassifier, got {type(model).__name__}; pass the model")
    if len(class_names) != model.config.num_classes + 1:
        raise InputError(f"save_classifier: {len(class_names)} class names for a classifier of C + 1 = "
                         f"{model.config.num_classes + 1} classes; pass the store's class names, background first",
                         param="class_names")
    payload: dict[str, Any] = {
        "format": CLASSIFIER_FORMAT, "format_version": CLASSIFIER_FORMAT_VERSION, "salcurate_version": __version__,
        "config": model.config.to_dict(), "class_names": [str(n) for n in class_names], "bn_frozen": model.bn_frozen,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    for k, v in (extra or {}).items():
        if k in payload:
            raise InputError(f"save_classifier: extra key {k!r} is reserved; rename it", param="extra")
        payload[k] = v
    path = Path(path)
    if path.is_dir():
        raise InputError(f"classifier path {path} is a folder; pass a file name such as {path / 'classifier.pt'}",
                         param="path")
    return atomic_torch_save(payload, path)


def read_classifier_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload of a file written by :func:`save_classifier` (checked to be one)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tag classifier {path} not found; train one with `salcurate pseudo-label` or check the path",
                         param="path")
    not_ours = (f"{path} is not a tag classifier file; pass a classifier.pt written by "
                "`salcurate pseudo-label` (or salcurate.nn.classifier.save_classifier)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        log.debug("torch.load(%s) failed: %r", path, exc)
        raise InputError(not_ours, param="path") from None
    if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
        raise InputError(f"{path} is a SAL-Net model, not a tag classifier; pass a classifier.pt written by "
                         "`salcurate pseudo-label`", param="path")
    if not isinstance(payload, dict) or payload.get("format") != CLASSIFIER_FORMAT:
        raise InputError(not_ours, param="path")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > CLASSIFIER_FORMAT_VERSION:
        raise InputError(f"{path} has tag classifier format {version!r}; this salcurate {__version__} reads up to "
                         f"{CLASSIFIER_FORMAT_VERSION}: upgrade salcurate", param="path")
    return payload


def load_classifier(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                    payload: dict[str, Any] | None = None) -> tuple[TagClassifier, dict[str, Any]]:
    """Load a classifier written by :func:`save_classifier`; returns ``(model in eval mode, info)``.

    ``info``: ``{"class_names", "config", **the file's extra keys}``.
    """
    if payload is None:
        payload = read_classifier_file(path)
    try:
        config = TagClassifierConfig.from_dict(payload["config"])
    except (KeyError, TypeError, InputError) as exc:
        raise InputError(f"{path}: the tag classifier file's config is unusable ({exc}); retrain it",
                         param="path") from None
    model = TagClassifier(config)
    model.set_bn_frozen(bool(payload.get("bn_frozen", False)))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: the weights do not fit the classifier's config (damaged file?): "
                         f"{str(exc).splitlines()[0]}; retrain it", param="path") from None
    model.to(map_location).eval()
    reserved = {"format", "format_version", "state_dict", "config", "class_names", "bn_frozen"}
    info = {"class_names": list(payload["class_names"]), "config": config.to_dict(),
            **{k: v for k, v in payload.items() if k not in reserved}}
    return model, info
