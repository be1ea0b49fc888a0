"""Starting SAL-Net from the tag classifier that made the proxies (``salcurate pseudo-label``).

A SAL-Net whose backbone comes from the tag classifier but whose heads start at random has to
learn, from the proxies alone, what the classifier already knows: which class each feature
vector belongs to.  On a CPU budget of a few hundred iterations it does not: on the realistic
benchmark such models predicted background everywhere (5-6 % val mIoU), below the classifier's
own CAMs.  Started from the whole classifier instead, SAL-Net's first prediction is the CAM
segmenter (``salnet.init_head_from_cams``: class maps M_c = w^c . f, background a constant b)
and its classification branch starts as the classifier's tag logits; training then refines it.

``b`` is fitted to the proxies, not to ground truth (``cam.background_logit``): over up to
``limit`` training images, seen at the training's mid scale, the ``(1 - f)``-quantile of the
largest class map, where f is the share of foreground pixels in their labels.

The classifier also fixes the scale at which its features mean something: it was trained on
images resized to a longer side of ``input_size`` pixels.  :func:`classifier_scale` is the factor
that brings a store's images there; a training far from it is warned about.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["CLASSIFIER_FILE", "WarmStart", "classifier_header", "classifier_input_size", "classifier_scale",
           "is_classifier_file", "start_from_classifier"]

#: The tag classifier's file in a ``pseudo-label`` run folder.
CLASSIFIER_FILE = "classifier.pt"
#: Training images looked at to fit the background logit.
FIT_IMAGES = 256


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What :func:`start_from_classifier` did (saved with the run's resolved config)."""

    classifier: str
    background_logit: float
    foreground_fraction: float
    images: int
    scale: float
    classifier_input_size: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def classifier_header(path: str | Path) -> dict[str, Any] | None:
    """A tag classifier file's settings (its payload without the weights), or None when ``path`` is
    not one (a missing file, a torchvision state dict, a SAL-Net model).  Reads no weights."""
    import torch

    from salcurate.nn.classifier import CLASSIFIER_FORMAT

    p = Path(path)
    if not p.is_file():
        return None
    try:
        payload = torch.load(p, map_location="meta", weights_only=True, mmap=True)
    except Exception:
        return None
    if not isinstance(payload, dict) or payload.get("format") != CLASSIFIER_FORMAT:
        return None
    return {k: v for k, v in payload.items() if k not in ("state_dict", "optimizer")}


def is_classifier_file(path: str | Path) -> bool:
    """Whether ``path`` is a tag classifier file of ``pseudo-label``."""
    return classifier_header(path) is not None


def classifier_input_size(info: dict[str, Any]) -> int | None:
    """The longer side (pixels) the classifier was trained at (``pseudo-label``'s ``input_size``), if recorded."""
    size = (info.get("train_config") or {}).get("input_size") if isinstance(info.get("train_config"), dict) else None
    return int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def classifier_scale(input_size: int, heights: np.ndarray, widths: np.ndarray) -> float:
    """The factor that brings images of these sizes to the classifier's longer side ``input_size``
    (their median longer side -> ``input_size``)."""
    longer = np.maximum(np.asarray(heights), np.asarray(widths))
    if longer.size == 0 or input_size < 1:
        raise InputError(f"classifier_scale expects images and input_size >= 1, got {longer.size} images and "
                         f"{input_size}")
    return float(input_size) / float(np.median(longer))


def start_from_classifier(model: Any, path: str | Path, *, store: Any, indices: np.ndarray, label_kinds: np.ndarray,
                          scale: float, seed: int = 0, limit: int = FIT_IMAGES, device: Any = "cpu") -> WarmStart:
    """Load the classifier at ``path`` into SAL-Net ``model`` (in place): its backbone, its CAM
    layer as the segmentation head with a fitted background, and as the classification branch.

    ``store``: an open :class:`~salcurate.data.store.MaskStore`; ``indices`` ``(N,)`` and
    ``label_kinds`` ``(N,)``: the training samples and the map each trains on (as the training
    plan has them); ``scale``: the factor the images are seen at (the training's mid scale);
    ``device``: where the classifier's pass over the images runs (the training's device).
    """
    import torch
    import torch.nn.functional as F

    from salcurate.nn.cam import background_logit, scaled_size
    from salcurate.nn.classifier import load_classifier
    from salcurate.nn.salnet import init_head_from_cams, preprocess

    clf, info = load_classifier(path, map_location=device)
    cfg = model.config
    if clf.config.backbone != cfg.backbone or clf.config.num_classes != cfg.num_classes:
        raise InputError(f"the tag classifier {path} is a {clf.config.backbone} of {clf.config.num_classes} classes; "
                         f"this SAL-Net is a {cfg.backbone} of {cfg.num_classes}: pass backbone "
                         f"{clf.config.backbone}, or start from other weights", param=("backbone", "backbone_weights"))
    model.backbone.load_state_dict(clf.backbone.state_dict())
    weight = clf.classifier.weight.detach()[:, :, 0, 0].cpu()

    rng = np.random.default_rng([seed, 0xC1A55])
    rows = rng.permutation(len(indices))[:limit]
    maxima, fg, total = [], 0, 0
    with torch.no_grad():
        for r in rows.tolist():
            i = int(indices[r])
            labels = store.map(str(label_kinds[r]), i)
            valid = labels != 255
            fg += int((valid & (labels != 0)).sum())
            total += int(valid.sum())
            x = preprocess(store.image(i))[None]
            size = tuple(int(v) for v in scaled_size(x.shape[-2], x.shape[-1], scale))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).to(device)
            maxima.append(clf(x).cams[0].float().max(dim=0).values.flatten().cpu().numpy())
    fraction = fg / max(total, 1)
    if not 0.0 < fraction < 1.0:
        raise InputError(f"the {len(rows)} training images looked at have "
                         f"{'no foreground' if fraction == 0 else 'no background'} in their labels; starting "
                         f"from the tag classifier needs both (to fit the background of its CAMs); pass "
                         "backbone_weights as a backbone .pth instead", param="backbone_weights")
    b = background_logit(np.concatenate(maxima), fraction)
    init_head_from_cams(model.aspp, weight, background=b)
    if model.classifier is not None:
        init_head_from_cams(model.classifier, weight)
    input_size = classifier_input_size(info)
    start = WarmStart(str(path), b, fraction, len(rows), float(scale),
                      input_size)
    log.info("started from the tag classifier %s: background logit %.3f (foreground %.1f %% of %d images' labels, "
             "scale %.2f)", path, b, 100 * fraction, len(rows), scale)
    return start
