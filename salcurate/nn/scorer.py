"""The SAL fine-scoring network (Table I): predicts the quality P of a binary mask.

Zhou, Gong, Liu, Fu, "SAL: Selection and Attention Losses for Weakly Supervised Semantic
Segmentation", IEEE TMM, Section III-B2 and Table I. The input is the RGB image concatenated
with the binary mask B (4 channels), resized to ``input_size`` x ``input_size`` (256 in the
paper). The network regresses AC (Eq. 3) with an L2 loss (Eq. 6); its output P, clamped to
[0, 1], gives the fine score SF = P x CD (Eq. 7).

Table I, in order (``MaskScorer.features`` holds layers 1-7, ``MaskScorer.head`` the global
average pooling and layers 8-9; each layer is a submodule named ``layerK``):

=====  ==================  ======  ========================  ==========
layer  module              stride  channels (default)        activation
=====  ==================  ======  ========================  ==========
1      3x3 conv            1       in_channels -> width      ReLU
                                   (4 -> 128)
2      ResB                1       width -> channels         GDN
                                   (128 -> 192)
3      3x3 conv            2       channels -> channels      ReLU
4      ResB                1       channels -> channels      GDN
5      3x3 conv            2       channels -> channels      ReLU
6      ResB                1       channels -> channels      GDN
7      3x3 conv            2       channels -> channels      ReLU
-      global avg pooling
8      fc                  -       channels -> hidden        GDN
                                   (192 -> 128)
9      fc                  -       hidden -> 1               ReLU
=====  ==================  ======  ========================  ==========

All 3x3 convolutions use padding 1, so a stride-2 layer maps S to ``(S - 1) // 2 + 1``
(256 -> 128 -> 64 -> 32, the "Width" row of Table I).

Reading of "ResB" (Table I cites He et al., "Deep residual learning for image recognition",
CVPR 2016, and lists GDN as ResB's activation): the basic residual block of He et al. without
batch normalization, ``GDN(conv3x3(ReLU(conv3x3(x))) + shortcut(x))``, where the shortcut is the
identity, or a 1x1 convolution (no bias) where the channel count changes (He et al.'s
projection shortcut, option B). GDN takes the place of the ReLU that He et al. apply after the
addition; the ReLU between the two convolutions is He et al.'s. See ``ResB``.

The final layer's bias starts at 0.5 (the middle of the target range) so that its ReLU starts
active; a ReLU that starts at 0 for every input passes no gradient and never trains.

Checkpoints (``save_checkpoint`` / ``load_checkpoint``) hold only plain Python types and
tensors, so they load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from salcurate._version import __version__
from salcurate.errors import InputError
from salcurate.nn.fileio import atomic_torch_save
from salcurate.nn.gdn import GDN

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "MaskScorer",
    "ResB",
    "ScorerConfig",
    "load_checkpoint",
    "save_checkpoint",
    "scorer_macs",
]

CHECKPOINT_FORMAT = "salcurate.scorer"
CHECKPOINT_FORMAT_VERSION = 1

#: Words for each config field in messages ("holds input size 96, expected 256").
_FIELD_WORDS = {
    "input_size": "input size",
    "in_channels": "input channels",
    "width": "width",
    "channels": "channels",
    "hidden": "hidden units",
}


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
    """Shape of a ``MaskScorer``; the defaults are the paper's Table I.

    Attributes:
        input_size: S, the side of the square input (image and mask resized to S x S).
        in_channels: input channels, RGB + mask = 4.
        width: output channels of layer 1 (the 3x3 conv "4 x 128").
        channels: channels of layers 2-7 (192).
        hidden: units of the first fully connected layer (layer 8, "192 x 128").
    """

    input_size: int = 256
    in_channels: int = 4
    width: int = 128
    channels: int = 192
    hidden: int = 128

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(
                    f"scorer config {f.name} must be a positive integer, got {value!r}; "
                    f"pass a whole number such as {f.default}"
                )
        if self.input_size < 8:
            raise InputError(
                f"scorer config input_size must be at least 8 (three stride-2 layers), got {self.input_size}; "
                "use e.g. 256"
            )

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorerConfig:
        """Inverse of ``to_dict``; missing fields take their defaults, unknown fields are refused."""
        if not isinstance(data, Mapping):
            raise InputError(f"scorer config must be a mapping, got {type(data).__name__}; pass a dict of fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(
                f"scorer config has unknown field(s) {', '.join(unknown)}; expected only {', '.join(sorted(known))} "
                "(a newer salcurate may have written it: upgrade salcurate)"
            )
        return cls(**dict(data))

    def differences(self, other: ScorerConfig) -> list[str]:
        """``"input size 96, expected 256"``-style phrases for each field where self != other."""
        out = []
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                out.append(f"{_FIELD_WORDS.get(f.name, f.name)} {mine}, expected {theirs}")
        return out


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


class ResB(nn.Module):
    """Residual block of Table I: ``GDN(conv3x3(ReLU(conv3x3(x))) + shortcut(x))``.

    He, Zhang, Ren, Sun, "Deep residual learning for image recognition", CVPR 2016, Fig. 2 /
    Eq. (1)-(2): ``y = F(x, {W_i}) + W_s x`` with F two 3x3 convolutions and a ReLU between
    them; ``W_s`` is the identity, or a 1x1 projection (Eq. 2, option B) when the channel count
    changes. Batch normalization is left out (Table I lists none) and the activation after the
    addition is GDN (Table I's "Activations" row for ResB) instead of ReLU. Stride 1, padding 1:
    the spatial size is kept.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut: nn.Module
        if in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.gdn = GDN(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.gdn(self.conv2(self.relu(self.conv1(x))) + self.shortcut(x))


class MaskScorer(nn.Module):
    """Table I of the SAL paper: (N, in_channels, S, S) image + mask -> (N,) predicted AC.

    ``forward`` returns the raw output of the final ReLU (>= 0, not clamped), what the L2 loss
    (Eq. 6) is computed on; ``predict`` clamps it to [0, 1], the P of Eq. (7).
    """

    def __init__(self, config: ScorerConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = ScorerConfig()
        if not isinstance(config, ScorerConfig):
            raise InputError(
                f"MaskScorer expects a ScorerConfig, got {type(config).__name__}; build one with ScorerConfig(...)"
            )
        self.config = config
        c = config
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("layer1", nn.Sequential(_conv3x3(c.in_channels, c.width, 1), nn.ReLU())),
                    ("layer2", ResB(c.width, c.channels)),
                    ("layer3", nn.Sequential(_conv3x3(c.channels, c.channels, 2), nn.ReLU())),
                    ("layer4", ResB(c.channels, c.channels)),
                    ("layer5", nn.Sequential(_conv3x3(c.channels, c.channels, 2), nn.ReLU())),
                    ("layer6", ResB(c.channels, c.channels)),
                    ("layer7", nn.Sequential(_conv3x3(c.channels, c.channels, 2), nn.ReLU())),
                ]
            )
        )
        self.head = nn.Sequential(
            OrderedDict(
                [
                    ("pool", nn.AdaptiveAvgPool2d(1)),
                    ("flatten", nn.Flatten(1)),
                    ("layer8", nn.Sequential(nn.Linear(c.channels, c.hidden), GDN(c.hidden))),
                    ("layer9", nn.Sequential(nn.Linear(c.hidden, 1), nn.ReLU())),
                ]
            )
        )
        final = self.head.layer9[0]
        assert isinstance(final, nn.Linear) and final.bias is not None
        with torch.no_grad():
            final.bias.fill_(0.5)

    def check_input(self, x: object) -> Tensor:
        """Return ``x`` if it is a float (N, in_channels, S, S) tensor, else raise InputError."""
        c = self.config
        want = f"(N, {c.in_channels}, {c.input_size}, {c.input_size})"
        if not isinstance(x, Tensor):
            raise InputError(
                f"mask scorer expects a torch.Tensor of shape {want}, got {type(x).__name__}; "
                "stack image and mask with torch.cat"
            )
        if x.dim() != 4 or x.shape[1] != c.in_channels or x.shape[2] != c.input_size or x.shape[3] != c.input_size:
            raise InputError(
                f"mask scorer expects input of shape {want} (RGB image + binary mask at the configured size), "
                f"got {tuple(x.shape)}; resize to {c.input_size}x{c.input_size} and concatenate the mask as channel "
                f"{c.in_channels}"
            )
        if not x.is_floating_point():
            raise InputError(f"mask scorer expects a floating-point tensor, got {x.dtype}; convert it with x.float()")
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Raw prediction (N,): the final ReLU's output, not clamped."""
        x = self.check_input(x)
        return self.head(self.features(x)).squeeze(1)

    def predict(self, x: Tensor) -> Tensor:
        """P (N,) in [0, 1]: ``forward`` clamped (Eq. 7 uses P; SF = P x CD)."""
        return self.forward(x).clamp(0.0, 1.0)


def _conv_out(size: int, stride: int, kernel: int = 3, padding: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def scorer_macs(config: ScorerConfig | None = None, *, include_gdn: bool = False) -> int:
    """Multiply-accumulates of one forward pass of ``MaskScorer(config)`` on one image.

    Counts the convolutions (3x3 and the 1x1 projection shortcut) and the fully connected
    layers, as ``k*k*C_in*C_out`` per output position (bias additions, ReLU, pooling and the
    residual additions not counted). At the defaults this is about 58.9 G MACs (the notes'
    "about 59 G multiply-adds, 118 GFLOP"). ``include_gdn=True`` adds GDN's C x C products per
    position (1x1 conv of x^2), about 3.2 G more at the defaults.
    """
    c = config if config is not None else ScorerConfig()
    s = c.input_size
    macs = 0
    gdn = 0

    def conv(size: int, cin: int, cout: int, k: int = 3) -> int:
        return size * size * cin * cout * k * k

    # layer 1: 3x3 conv, stride 1
    macs += conv(s, c.in_channels, c.width)
    # layer 2: ResB width -> channels (two 3x3 convs, 1x1 projection if channels change)
    macs += conv(s, c.width, c.channels) + conv(s, c.channels, c.channels)
    if c.width != c.channels:
        macs += conv(s, c.width, c.channels, k=1)
    gdn += s * s * c.channels * c.channels
    # layers 3-7: (3x3 conv stride 2, ResB) x 2, then a 3x3 conv stride 2
    for has_resb in (True, True, False):
        s = _conv_out(s, 2)
        macs += conv(s, c.channels, c.channels)
        if has_resb:
            macs += 2 * conv(s, c.channels, c.channels)
            gdn += s * s * c.channels * c.channels
    # layers 8-9 after global average pooling
    macs += c.channels * c.hidden + c.hidden * 1
    gdn += c.hidden * c.hidden
    return macs + gdn if include_gdn else macs


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain types + tensors (what ``torch.load(weights_only=True)`` accepts)."""
    if value is None:
        return None
    for plain in (bool, int, float, str):  # also numpy's float64 / str_ subclasses -> plain type
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"checkpoint {where} keys must be strings, got {k!r}; convert keys with str()")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return _plain(item(), where)
    raise InputError(
        f"checkpoint {where} must hold only numbers, strings, lists, dicts and tensors, got {type(value).__name__}; "
        "convert it to a plain type"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MaskScorer,
    config: ScorerConfig,
    *,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file beside it, then ``os.replace``).

    The file is a dict ``{"format": "salcurate.scorer", "format_version": 1,
    "salcurate_version", "config", "state_dict", "metrics", "extra"}`` of plain types and CPU
    tensors. Returns the path.
    """
    if not isinstance(model, MaskScorer):
        raise InputError(f"save_checkpoint expects a MaskScorer, got {type(model).__name__}; pass the trained scorer")
    if not isinstance(config, ScorerConfig):
        raise InputError(f"save_checkpoint expects a ScorerConfig, got {type(config).__name__}; pass model.config")
    if not isinstance(metrics, Mapping) or (extra is not None and not isinstance(extra, Mapping)):
        raise InputError(
            f"save_checkpoint expects dicts for metrics and extra, got {type(metrics).__name__} and "
            f"{type(extra).__name__}; pass e.g. metrics={{'val_loss': 0.04}}"
        )
    if model.config != config:
        raise InputError(
            f"save_checkpoint: the model was built with {model.config} but config is {config}; pass model.config"
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "salcurate_version": __version__,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metrics": _plain(dict(metrics), "metrics"),
        "extra": _plain(dict(extra), "extra") if extra is not None else None,
    }
    path = Path(path)
    if path.is_dir():
        raise InputError(f"scorer checkpoint path {path} is a folder; pass a file name such as {path / 'scorer.pt'}")
    atomic_torch_save(payload, path)
    log.info("saved scorer checkpoint %s (config %s)", path, config.to_dict())
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expect: ScorerConfig | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[MaskScorer, ScorerConfig, dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint`` (with ``torch.load(weights_only=True)``).

    Returns ``(model, config, info)``: the scorer in eval mode on ``map_location``, its config,
    and ``info = {"metrics", "extra", "salcurate_version", "format_version"}``.

    Raises InputError for a missing file, a file that is not a salcurate scorer checkpoint, one
    written in a newer format, and (when ``expect`` is given) one whose config differs from it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"scorer checkpoint {path} not found; train one with `salcurate train-scorer` or pass scorer PATH"
        )
    if not path.is_file():
        raise InputError(f"scorer checkpoint {path} is not a file; pass the checkpoint file as scorer PATH")
    not_ours = (
        f"{path} is not a salcurate scorer checkpoint; "
        "pass a file written by `salcurate train-scorer` as scorer PATH"
    )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and weights_only errors all mean "not ours"
        log.debug("torch.load(%s) failed: %r", path, exc)
        raise InputError(not_ours) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(not_ours)
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(not_ours)
    if version > CHECKPOINT_FORMAT_VERSION:
        raise InputError(
            f"scorer checkpoint {path} has format version {version} (written by salcurate "
            f"{payload.get('salcurate_version', '?')}), this salcurate {__version__} reads up to "
            f"{CHECKPOINT_FORMAT_VERSION}; upgrade salcurate"
        )
    try:
        config = ScorerConfig.from_dict(payload.get("config"))  # type: ignore[arg-type]
    except (InputError, TypeError) as exc:
        raise InputError(
            f"scorer checkpoint {path} has an unusable config ({exc}); retrain it with `salcurate train-scorer`"
        ) from exc
    if expect is not None and config != expect:
        raise InputError(
            f"scorer checkpoint {path} holds {'; '.join(config.differences(expect))}; "
            "pass a scorer trained with these settings, or train one with `salcurate train-scorer`"
        )
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise InputError(not_ours)
    model = MaskScorer(config)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise InputError(
            f"scorer checkpoint {path} has weights that do not fit its config (damaged file?); "
            "retrain it with `salcurate train-scorer`"
        ) from exc
    model.to(map_location)
    model.eval()
    info = {
        "metrics": payload.get("metrics") or {},
        "extra": payload.get("extra"),
        "salcurate_version": payload.get("salcurate_version"),
        "format_version": version,
    }
    log.info("loaded scorer checkpoint %s (config %s)", path, config.to_dict())
    return model, config, info
