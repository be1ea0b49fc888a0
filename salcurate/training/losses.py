"""The SAL losses (Section III-D): selection loss L_sel (Eq. 13) and attention loss L_atten (Eq. 12).

Pure functions over tensors; ``L = L_sel + λ L_atten`` (Eq. 14) is :func:`sal_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from salcurate.config import Choice
from salcurate.errors import InputError

IGNORE_INDEX = 255


class AttentionLoss(Choice):
    """The form of L_atten: ``bce`` (positive and negative terms) or ``positive`` (Eq. 12 as printed)."""

    bce = "bce"
    positive = "positive"


ATTENTION_LOSSES: tuple[str, ...] = AttentionLoss.values()


def _at_least_float32(t: Tensor) -> Tensor:
    """Losses are computed in float32 (or float64 when given), never in bf16/fp16."""
    return t if t.dtype == torch.float64 else t.float()


def selection_loss(attended: Tensor, labels: Tensor, weights: Tensor, *, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """L_sel (Eq. 13): cross-entropy of log Ẑ against the label map, image i weighted by w_i.

    Shapes: attended ``(B, K, H, W)`` logits whose softmax is Ẑ (K = C + 1), labels ``(B, H, W)``
    int64 in 0..K-1 or ``ignore_index``, weights ``(B,)`` -> scalar.

    ``L_sel = - Σ_i w_i Σ_{valid p} log Ẑ_p[G_p] / Σ_i w_i |valid_i|``: averaged over the weighted
    valid pixels, so an image with w_i = 0 contributes neither to the sum nor to the count (and
    gets no gradient).  0 when no weighted valid pixel exists.
    """
    if (attended.dim() != 4 or labels.shape != (attended.shape[0], *attended.shape[2:])
            or weights.shape != (attended.shape[0],)):
        raise InputError(f"selection_loss expects attended (B, K, H, W), labels (B, H, W) and weights (B,), got "
                         f"{tuple(attended.shape)}, {tuple(labels.shape)} and {tuple(weights.shape)}")
    nll = F.cross_entropy(_at_least_float32(attended), labels.long(), ignore_index=ignore_index,
                          reduction="none")  # (B, H, W)
    valid = (labels != ignore_index).to(nll.dtype)
    w = weights.to(nll.dtype)[:, None, None]
    denom = (w * valid).sum()
    return (w * nll).sum() / denom.clamp_min(1e-12)  # numerator is 0 too when denom is 0 (no GPU sync)


def attention_loss(class_logits: Tensor, tags: Tensor, *, mask: Tensor | None = None, form: str = "bce") -> Tensor:
    """L_atten (Eq. 12): multi-label loss of sigmoid(d_s) against the image tags Y.

    Shapes: class_logits ``(B, C)``, tags ``(B, C)`` in {0, 1}, mask ``(B,)`` (which images
    count; default all) -> scalar.  ``form="bce"``: binary cross-entropy over all C classes
    (positive and negative terms); ``"positive"``: only the printed term ``-Y log sigmoid(d)``.
    Both are averaged over the counted images and the C classes.
    """
    if form not in ATTENTION_LOSSES:
        raise InputError(f"attention_loss must be one of {', '.join(ATTENTION_LOSSES)}, got {form!r}",
                         param="attention_loss")
    if class_logits.dim() != 2 or tags.shape != class_logits.shape:
        raise InputError(f"attention_loss expects class logits and tags of the same (B, C) shape, got "
                         f"{tuple(class_logits.shape)} and {tuple(tags.shape)}")
    y = tags.to(torch.float64 if class_logits.dtype == torch.float64 else torch.float32)
    z = _at_least_float32(class_logits)
    if form == "bce":
        per = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    else:
        per = -y * F.logsigmoid(z)
    m = torch.ones(z.shape[0], device=z.device, dtype=z.dtype) if mask is None else mask.to(z.dtype)
    count = m.sum() * z.shape[1]
    return (per * m[:, None]).sum() / count.clamp_min(1e-12)


def sal_loss(attended: Tensor, class_logits: Tensor | None, labels: Tensor, weights: Tensor, tags: Tensor, *,
             lam: float = 2.0, form: str = "bce", tag_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """L = L_sel + λ L_atten (Eq. 14); returns ``(L, L_sel, L_atten)`` (L_atten 0 without a branch)."""
    sel = selection_loss(attended, labels, weights)
    if class_logits is None or lam == 0:
        att = sel.new_zeros(())
    else:
        att = attention_loss(class_logits, tags, mask=tag_mask, form=form)
    return sel + lam * att, sel, att
