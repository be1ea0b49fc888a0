"""SAL-Net: a DeepLab-v2 segmentation network with the SAL classification branch (Fig. 7).

Zhou, Gong, Liu, Fu, "SAL: Selection and Attention Losses for Weakly Supervised Semantic
Segmentation", IEEE TMM, Section III-C and Fig. 7; DeepLab-v2: Chen et al., "DeepLab: Semantic
Image Segmentation with Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs",
TPAMI 2018.  Assembled from parts, each switched by :class:`SALNetConfig`::

    backbone (output stride 8)  ->  ASPP head             -> segmentation logits s  (B, C+1, h, w)
                                \\->  classification branch -> d_s (B, C, h, w) -> GAP -> class logits (B, C)
    attended logits  s + log a,  a = (1, sigmoid(class logits))   (Eq. 11, renormalised)

* Backbones (torchvision's definitions): ``vgg16`` with pool4 and pool5 at stride 1 (3x3,
  padding 1, as DeepLab-v2) and conv5 dilated by 2; ``resnet18/50/101`` with the last two
  stages at stride 1, dilated by 2 and 4.  Both give features at 1/8 of the input.
* ASPP (DeepLab-v2): four branches at rates 6, 12, 18, 24, summed.  For ResNets each branch is
  one 3x3 dilated convolution to C + 1 classes (DeepLab-v2 ResNet-101); for VGG16 each branch
  is DeepLab-v2's ASPP-L "fc6-fc7-fc8": 3x3 dilated conv to 1024, ReLU, dropout, 1x1 to 1024,
  ReLU, dropout, 1x1 to C + 1 (``aspp_hidden``).
* Classification subnetwork (Eq. 10): four 3x3 convolutions with dilation 1, 3, 6, 9 on the
  shared backbone features, each giving C class maps; d_s = d1 + d2 + d3 + d4; global average
  pooling gives one logit per class.
* Attention (Eq. 11): Ẑ = Z ⊗ a channel-wise with a_0 = 1 (background), a_c = sigmoid(logit_c),
  renormalised over classes.  Because softmax(s) ⊗ a / Σ = softmax(s + log a), the product is
  computed as logits ``s + log a`` (``attended``), which is exact and keeps the log stable.
  ``attention="multitask"`` trains the branch only through its own loss (the authors' released
  code: Ẑ = Z); ``"off"`` has no branch at all.

Checkpoints (``save_model`` / ``load_model``) hold plain types and tensors only and load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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
from salcurate.nn.fileio import atomic_torch_save

log = logging.getLogger(__name__)

__all__ = [
    "ATTENTION_MODES",
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_FORMAT",
    "ASPP",
    "ClassificationBranch",
    "SALNet",
    "SALNetConfig",
    "SALNetOutput",
    "attended_logits",
    "build_backbone",
    "imagenet_weights_path",
    "init_head_from_cams",
    "load_model",
    "preprocess",
    "save_model",
]

MODEL_FORMAT = "salcurate.salnet"
MODEL_FORMAT_VERSION = 1
#: Backbone name -> feature channels at output stride 8.
BACKBONES: dict[str, int] = {"vgg16": 512, "resnet18": 512, "resnet50": 2048, "resnet101": 2048}
ATTENTION_MODES: tuple[str, ...] = ("multiply", "multitask", "off")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SALNetConfig:
    """The architecture.  ``num_classes`` is C, the foreground classes (the head predicts C + 1)."""

    backbone: str = "vgg16"
    num_classes: int = 20
    attention: str = "multiply"
    aspp_rates: tuple[int, ...] = (6, 12, 18, 24)
    class_dilations: tuple[int, ...] = (1, 3, 6, 9)
    #: Hidden width of each ASPP branch (DeepLab-v2 ASPP-L: 1024 for VGG16); 0 = one conv per
    #: branch (DeepLab-v2 ResNet); None = the backbone's DeepLab-v2 choice.
    aspp_hidden: int | None = None
    dropout: float = 0.5
    #: Keep batch-norm statistics and affine parameters fixed (DeepLab-v2 does, with ImageNet
    #: weights and batches of 7-10).  None = frozen when ImageNet weights are loaded.
    freeze_bn: bool | None = None

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise InputError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.attention not in ATTENTION_MODES:
            raise InputError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {self.attention!r}",
                             param="attention")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise InputError(f"num_classes (C, foreground classes) must be a whole number >= 1, "
                             f"got {self.num_classes!r}")
        for name in ("aspp_rates", "class_dilations"):
            value = tuple(getattr(self, name))
            if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
                raise InputError(f"{name} must be whole numbers >= 1, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def hidden(self) -> int:
        if self.aspp_hidden is not None:
            return int(self.aspp_hidden)
        return 1024 if self.backbone == "vgg16" else 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aspp_rates"], d["class_dilations"] = list(self.aspp_rates), list(self.class_dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SALNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown SAL-Net config keys {sorted(unknown)}")
        d = dict(d)
        for k in ("aspp_rates", "class_dilations"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# ------------------------------------------------------------------------------------------
# Backbones
# ------------------------------------------------------------------------------------------
def _dilate(stage: nn.Module, dilation: int) -> None:
    """Turn a ResNet stage's stride 2 into dilation (DeepLab-v2): strides -> 1, 3x3 convs dilated."""
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            if m.stride == (2, 2):
                m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation, m.padding = (dilation, dilation), (dilation, dilation)


class _VGGBackbone(nn.Sequential):
    """VGG16 conv1-conv5 at output stride 8 (DeepLab-v2): pool4/pool5 3x3 stride 1, conv5 dilated 2."""


class _ResNetBackbone(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        _dilate(self.layer3, 2)
        _dilate(self.layer4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def imagenet_weights_path(backbone: str) -> tuple[Path, str]:
    """Where torchvision keeps a backbone's ImageNet weights in the local torch cache, and their URL."""
    from torchvision import models

    enum = {"vgg16": models.VGG16_Weights, "resnet18": models.ResNet18_Weights,
            "resnet50": models.ResNet50_Weights, "resnet101": models.ResNet101_Weights}[backbone]
    url = enum.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def _load_state(backbone: str, weights: str) -> dict[str, Tensor]:
    if weights == "imagenet":
        path, url = imagenet_weights_path(backbone)
        if not path.exists():
            raise InputError(
                f"ImageNet weights for {backbone} are not in the torch cache ({path}); download {url} to that path, "
                "or pass backbone_weights PATH, or backbone_weights none for random initialization",
                param="backbone_weights")
    else:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"backbone_weights {weights}: no such file; pass a torchvision {backbone} state dict "
                             "(.pth), imagenet (the torch cache) or none", param="backbone_weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}); "
                         f"pass torchvision's {backbone} ImageNet weights") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict of {backbone} weights, got {type(state).__name__}")
    return state


def build_backbone(name: str, *, weights: str = "none") -> nn.Module:
    """A backbone at output stride 8: ``(B, 3, H, W) -> (B, BACKBONES[name], ~H/8, ~W/8)``.

    ``weights``: ``"none"`` (random initialization), ``"imagenet"`` (torchvision's ImageNet
    weights from the local torch cache; never downloaded) or a path to a torchvision state dict.
    """
    from torchvision import models

    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    net = getattr(models, name)(weights=None)
    if weights != "none":
        state = _load_state(name, weights)
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise InputError(f"backbone_weights {weights}: the weights do not fit torchvision's {name} "
                             f"({str(exc).splitlines()[0]}); pass {name} weights", param="backbone_weights") from None
        body_missing = [k for k in missing if not k.startswith(("classifier", "fc."))]
        if body_missing or len(unexpected) == len(state):
            raise InputError(f"backbone_weights {weights}: {len(body_missing)} of {name}'s layers have no weights "
                             f"there (e.g. {(body_missing or list(unexpected))[:1]}); pass torchvision {name} weights",
                             param="backbone_weights")
        log.info("loaded %s weights from %s", name, weights)
    if name == "vgg16":
        layers = list(net.features.children())
        # torchvision indices: pool4 = 23, conv5_x = 24, 26, 28, pool5 = 30
        layers[23] = nn.MaxPool2d(3, stride=1, padding=1)
        layers[30] = nn.MaxPool2d(3, stride=1, padding=1)
        for i in (24, 26, 28):
            conv = layers[i]
            conv.dilation, conv.padding = (2, 2), (2, 2)
        return _VGGBackbone(*layers)
    return _ResNetBackbone(net)


# ------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------
def _init_head(m: nn.Module) -> None:
    """DeepLab-v2's head initialization: weights N(0, 0.01), biases 0."""
    for c in m.modules():
        if isinstance(c, nn.Conv2d):
            nn.init.normal_(c.weight, std=0.01)
            if c.bias is not None:
                nn.init.zeros_(c.bias)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLab-v2: branches at ``rates``, summed.

    ``(B, in_channels, h, w) -> (B, out_channels, h, w)``.  ``hidden`` = 0: each branch is one
    3x3 conv with dilation r; ``hidden`` > 0: 3x3 (r) -> ReLU -> dropout -> 1x1 -> ReLU ->
    dropout -> 1x1 (ASPP-L, VGG16).
    """

    def __init__(self, in_channels: int, out_channels: int, *, rates: Sequence[int] = (6, 12, 18, 24),
                 hidden: int = 0, dropout: float = 0.5) -> None:
        super().__init__()
        branches = []
        for r in rates:
            if hidden:
                branches.append(nn.Sequential(
                    nn.Conv2d(in_channels, hidden, 3, padding=r, dilation=r), nn.ReLU(inplace=True),
                    nn.Dropout2d(dropout),
                    nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
                    nn.Conv2d(hidden, out_channels, 1)))
            else:
                branches.append(nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r))
        self.branches = nn.ModuleList(branches)
        _init_head(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches[0](x)
        for b in self.branches[1:]:
            out = out + b(x)
        return out


def init_head_from_cams(head: nn.Module, class_weight: Tensor, *, background: float | None = None) -> None:
    """Start a head (:class:`ASPP` or :class:`ClassificationBranch`) as a tag classifier's CAMs, in place.

    ``class_weight``: ``(C, K)``, the bias-free 1x1 layer w^c of a CAM classifier on the same
    backbone features f (K channels).  The head then computes, at every position (Zhou et al.,
    CVPR 2016, Sec. 2: M_c = sum_k w_k^c f_k)::

        ASPP (background b given):  s_0(x, y) = b,   s_c(x, y) = M_c(x, y)    -> (B, C + 1, h, w)
        ClassificationBranch:       d_c(x, y) = M_c(x, y), logit_c = GAP(M_c)  -> the classifier's logits

    so SAL-Net's argmax is background wherever no class map reaches b, as a CAM proxy is below
    its threshold, and the attention a = sigmoid(logits) starts as the classifier's tag
    probabilities.  Each of the n summed branches carries w / n in the centre tap of its dilated
    3x3 convolution (b / n in the background bias); every other weight is 0, and training learns
    the context the CAM layer lacks.  ASPP-L branches (``hidden`` > 0, VGG16) first pass the
    features through unchanged (identity in their first K hidden channels: the features are ReLU
    outputs, >= 0, which the hidden ReLUs keep), then apply w / n.
    """
    if not isinstance(head, (ASPP, ClassificationBranch)):
        raise InputError(f"init_head_from_cams expects SAL-Net's ASPP or ClassificationBranch, got "
                         f"{type(head).__name__}")
    convs = [[c for c in b.modules() if isinstance(c, nn.Conv2d)] for b in head.branches]
    channels, out = convs[0][0].in_channels, convs[0][-1].out_channels
    classes = out - 1 if isinstance(head, ASPP) else out
    if (not isinstance(class_weight, Tensor) or tuple(class_weight.shape) != (classes, channels)
            or (background is None) != isinstance(head, ClassificationBranch)
            or (background is not None and not math.isfinite(background))):
        raise InputError(f"init_head_from_cams expects class weights of shape (C, K) = ({classes}, {channels}) and "
                         f"{'no background' if classes == out else 'a finite background logit'}, got "
                         f"{tuple(getattr(class_weight, 'shape', ()))} and background {background!r}; pass the tag "
                         "classifier's 1x1 layer of the same backbone and classes")
    narrow = [c.out_channels for branch in convs for c in branch[:-1] if c.out_channels < channels]
    if narrow:
        raise InputError(f"init_head_from_cams: the ASPP's hidden width {narrow[0]} is below the backbone's "
                         f"{channels} channels; use a wider head (aspp_hidden)")
    n = len(convs)
    w = class_weight.detach().to(convs[0][-1].weight.dtype) / n
    eye = torch.arange(channels)
    with torch.no_grad():
        for branch in convs:
            *through, last = branch
            for c in branch:
                c.weight.zero_()
                if c.bias is not None:
                    c.bias.zero_()
            for c in through:  # identity on the first K channels (centre tap)
                k = c.kernel_size[0] // 2
                c.weight[eye, eye, k, k] = 1.0
            k = last.kernel_size[0] // 2
            offset = out - classes  # 1 for ASPP: channel 0 is background
            last.weight[offset:, :channels, k, k] = w
            if background is not None:
                last.bias[0] = float(background) / n


class ClassificationBranch(nn.Module):
    """The SAL classification subnetwork (Eq. 10): d_s = d1 + d2 + d3 + d4, then global average pooling.

    ``(B, in_channels, h, w) -> (d_s (B, C, h, w), logits (B, C))``.
    """

    def __init__(self, in_channels: int, num_classes: int, *, dilations: Sequence[int] = (1, 3, 6, 9)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d) for d in dilations)
        _init_head(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ds = self.branches[0](x)
        for b in self.branches[1:]:
            ds = ds + b(x)
        return ds, ds.mean(dim=(2, 3))


def attended_logits(segmentation: Tensor, class_logits: Tensor) -> Tensor:
    """Eq. 11 as logits: ``softmax(result) = Z ⊗ a / Σ_c (Z ⊗ a)_c`` with Z = softmax(segmentation).

    Shapes: segmentation ``(B, C+1, h, w)``, class_logits ``(B, C)`` -> ``(B, C+1, h, w)``.
    a_0 = 1 for background and a_c = sigmoid(class_logits_c); adding ``log a`` to the logits and
    renormalising is the same product, without taking the log of a small probability.
    """
    if segmentation.dim() != 4 or class_logits.dim() != 2 or segmentation.shape[:2] != (class_logits.shape[0],
                                                                                          class_logits.shape[1] + 1):
        raise InputError(f"attended_logits expects (B, C+1, h, w) and (B, C), got {tuple(segmentation.shape)} "
                         f"and {tuple(class_logits.shape)}")
    log_a = F.pad(F.logsigmoid(class_logits), (1, 0))  # log a_0 = 0
    return segmentation + log_a[:, :, None, None].to(segmentation.dtype)


class SALNetOutput(NamedTuple):
    """What :class:`SALNet` returns (all at output stride 8)."""

    segmentation: Tensor  # (B, C+1, h, w) logits of Z
    classification: Tensor | None  # (B, C) class logits (global average of d_s); None with attention "off"
    attended: Tensor  # (B, C+1, h, w) logits of Ẑ (equal to segmentation unless attention is "multiply")

    def probabilities(self) -> Tensor:
        """Ẑ: ``(B, C+1, h, w)``, a distribution over the classes at every position."""
        return torch.softmax(self.attended.float(), dim=1)


class FrozenBatchNorm(nn.Module):
    """A model with a ``backbone`` whose batch norm can be fixed: statistics in eval mode and affine
    parameters without gradient (DeepLab's practice when starting from ImageNet weights)."""

    bn_frozen: bool = False
    backbone: nn.Module

    def set_bn_frozen(self, frozen: bool) -> None:
        """Fix (or free) the backbone's batch-norm statistics and affine parameters."""
        self.bn_frozen = bool(frozen)
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                for p in m.parameters():
                    p.requires_grad_(not self.bn_frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> FrozenBatchNorm:
        super().train(mode)
        if mode and self.bn_frozen:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


class SALNet(FrozenBatchNorm):
    """SAL-Net: backbone -> ASPP (segmentation) + classification branch, joined by attention."""

    def __init__(self, config: SALNetConfig, *, backbone_weights: str = "none") -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, weights=backbone_weights)
        channels = BACKBONES[config.backbone]
        self.aspp = ASPP(channels, config.num_classes + 1, rates=config.aspp_rates, hidden=config.hidden,
                         dropout=config.dropout)
        self.classifier = (None if config.attention == "off"
                           else ClassificationBranch(channels, config.num_classes, dilations=config.class_dilations))
        self.bn_frozen = False
        self.set_bn_frozen(config.freeze_bn if config.freeze_bn is not None else backbone_weights != "none")

    def forward(self, x: Tensor) -> SALNetOutput:
        features = self.backbone(x)
        seg = self.aspp(features)
        if self.classifier is None:
            return SALNetOutput(seg, None, seg)
        _, logits = self.classifier(features)
        attended = attended_logits(seg, logits) if self.config.attention == "multiply" else seg
        return SALNetOutput(seg, logits, attended)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, head parameters): the heads learn at 10x the backbone's rate."""
        heads = [*self.aspp.parameters(), *(self.classifier.parameters() if self.classifier is not None else ())]
        return [p for p in self.backbone.parameters() if p.requires_grad], [p for p in heads if p.requires_grad]


# ------------------------------------------------------------------------------------------
# Input
# ------------------------------------------------------------------------------------------
def preprocess(image: np.ndarray) -> Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32, normalised with the ImageNet mean and std."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"preprocess expects an (H, W, 3) uint8 RGB image, got {got}; "
                         "decode it with salcurate.imageio")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


# ------------------------------------------------------------------------------------------
# Model files
# ------------------------------------------------------------------------------------------
def save_model(path: str | os.PathLike[str], model: SALNet, *, class_names: Sequence[str],
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its config, class names, weights and ``extra``) atomically to ``path``.

    The file is ``{"format": "salcurate.salnet", "format_version", "salcurate_version", "config",
    "class_names", "state_dict", **extra}``; training checkpoints add their optimizer and
    progress through ``extra``.
    """
    model = getattr(model, "module", model)  # DistributedDataParallel / compiled wrappers
    model = getattr(model, "_orig_mod", model)
    if not isinstance(model, SALNet):
        raise InputError(f"save_model expects a SALNet, got {type(model).__name__}")
    if len(class_names) != model.config.num_classes + 1:
        raise InputError(f"save_model: {len(class_names)} class names for a model of C + 1 = "
                         f"{model.config.num_classes + 1} classes; pass the store's class names")
    payload: dict[str, Any] = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "salcurate_version": __version__,
        "config": model.config.to_dict(), "class_names": list(class_names), "bn_frozen": model.bn_frozen,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    for k, v in (extra or {}).items():
        if k in payload:
            raise InputError(f"save_model: extra key {k!r} is reserved")
        payload[k] = v
    path = Path(path)
    if path.is_dir():
        raise InputError(f"model path {path} is a folder; pass a file name such as {path / 'model.pt'}")
    return atomic_torch_save(payload, path)


def read_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload of a file written by :func:`save_model` (checked to be one)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model {path} not found; train one with `salcurate retrain` or check the path")
    not_ours = f"{path} is not a SAL-Net model file; pass a model.pt or checkpoint.pt written by `salcurate retrain`"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        log.debug("torch.load(%s) failed: %r", path, exc)
        raise InputError(not_ours) from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(not_ours)
    version = payload.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise InputError(f"{path} has model format {version!r}; this salcurate {__version__} reads up to "
                         f"{MODEL_FORMAT_VERSION}: upgrade salcurate")
    return payload


def load_model(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
               payload: dict[str, Any] | None = None) -> tuple[SALNet, dict[str, Any]]:
    """Load a model written by :func:`save_model`; returns ``(model in eval mode, info)``.

    ``info``: ``{"class_names", "config", "retrain", "iteration", "metrics"}`` (the last three
    from training; empty when absent).
    """
    if payload is None:
        payload = read_model_file(path)
    try:
        config = SALNetConfig.from_dict(payload["config"])
    except (KeyError, TypeError, InputError) as exc:
        raise InputError(f"{path}: the model file's config is unusable ({exc}); retrain it") from None
    model = SALNet(config)
    model.set_bn_frozen(bool(payload.get("bn_frozen", False)))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: the weights do not fit the model's config (damaged file?): "
                         f"{str(exc).splitlines()[0]}") from None
    model.to(map_location).eval()
    info = {"class_names": list(payload["class_names"]), "config": config.to_dict(),
            "retrain": payload.get("retrain") or {}, "iteration": int(payload.get("iteration", 0)),
            "metrics": payload.get("metrics") or {}}
    return model, info
