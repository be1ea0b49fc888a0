"""Generalized Divisive Normalization (GDN), the activation of the SAL mask scorer (Table I).

GDN was introduced by Ballé, Laparra and Simoncelli, "Density modeling of images using a
generalized normalization transformation", ICLR 2016 (arXiv:1511.06281, 2015: the "Ballé et
al. 2015" of the SAL notes). For an input with channels x_1 .. x_C at one position (one pixel
of a feature map, or one feature vector), that paper's transform with exponents alpha = 2 and
epsilon = 1/2 (the form used in practice, e.g. in Ballé, Laparra, Simoncelli, "End-to-end
optimized image compression", ICLR 2017) is::

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij * x_j ** 2)

The SAL paper cites it as [44] and uses it after each residual block and after the first fully
connected layer of the scorer.

Non-negative reparametrization
------------------------------
The square root needs beta_i > 0 and gamma_ij >= 0. Following Ballé, "Efficient nonlinear
transforms for lossy image compression", PCS 2018 (its reparameterization of GDN), each of
beta and gamma is stored as a raw parameter ``p`` and used as::

    value = max(p, sqrt(minimum + pedestal)) ** 2 - pedestal,   pedestal = 2 ** -36

and initialized with ``p = sqrt(value_0 + pedestal)``:

* the square makes the gradient with respect to ``p`` shrink as the value nears 0, so small
  values change slowly and Adam-like optimizers do not overshoot below zero;
* the pedestal (``(2 ** -18) ** 2``) keeps that gradient from vanishing at value 0;
* the lower bound ``max(p, sqrt(minimum + pedestal))`` gives ``value >= minimum`` whatever the
  optimizer does: ``minimum = beta_min`` (default 1e-6) for beta, 0 for gamma. Its backward
  pass lets the gradient through where ``p`` is above the bound *or* where the gradient would
  move ``p`` up (``grad < 0``), so a parameter stuck at the bound can still leave it; below the
  bound a gradient that pushes further down is dropped.

``GDN.beta`` and ``GDN.gamma`` give the effective (non-negative) values; the raw parameters are
``beta_raw`` and ``gamma_raw``. At initialization beta = 1 and gamma = gamma_init * I (0.1 * I
by default), so ``y = x / sqrt(1 + 0.1 * x ** 2)`` element-wise.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salcurate.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["GDN", "gdn"]

#: Pedestal of the non-negative reparametrization, (2 ** -18) ** 2 as in Ballé (PCS 2018).
PEDESTAL = 2.0**-36


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)`` whose gradient also passes where it would raise ``x`` above the bound."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


def _to_raw(value: Tensor) -> Tensor:
    """The raw parameter that reparametrizes to ``value`` (``value >= 0``)."""
    return torch.sqrt(value + PEDESTAL)


def _from_raw(raw: Tensor, minimum: float) -> Tensor:
    """Effective value ``max(raw, sqrt(minimum + pedestal)) ** 2 - pedestal`` (>= minimum)."""
    bound = math.sqrt(minimum + PEDESTAL)
    return _LowerBound.apply(raw, bound) ** 2 - PEDESTAL


def gdn(x: Tensor, beta: Tensor, gamma: Tensor) -> Tensor:
    """GDN with given (effective, non-negative) ``beta`` (C,) and ``gamma`` (C, C).

    ``x`` is (N, C, H, W) or (N, C). For feature maps the sum ``beta_i + sum_j gamma_ij x_j^2``
    at every pixel is a 1x1 convolution of ``x ** 2`` with weight ``gamma`` and bias ``beta``;
    for vectors it is a linear layer. Shapes are not checked here (``GDN.forward`` does).
    """
    if x.dim() == 4:
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
    else:
        norm = F.linear(x * x, gamma, beta)
    return x * torch.rsqrt(norm)


class GDN(nn.Module):
    """Generalized Divisive Normalization, ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``.

    Ballé, Laparra, Simoncelli, ICLR 2016, with alpha = 2, epsilon = 1/2; non-negative
    reparametrization of Ballé, PCS 2018 (see the module docstring for the exact formula).

    Args:
        channels: C, the size of dimension 1 of the input.
        beta_min: lower bound kept on every beta_i (so the denominator never reaches 0).
        gamma_init: gamma starts as ``gamma_init * I`` (beta starts at 1).

    Input (N, C, H, W) (normalized across channels at every pixel) or (N, C); output has the
    input's shape.
    """

    def __init__(self, channels: int, *, beta_min: float = 1e-6, gamma_init: float = 0.1) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise InputError(f"GDN channels must be a positive integer, got {channels!r}; pass the feature count")
        if not (beta_min > 0 and math.isfinite(beta_min)):
            raise InputError(f"GDN beta_min must be a positive finite number, got {beta_min!r}; use e.g. 1e-6")
        if not (gamma_init >= 0 and math.isfinite(gamma_init)):
            raise InputError(f"GDN gamma_init must be a non-negative finite number, got {gamma_init!r}; use e.g. 0.1")
        if beta_min > 1.0:
            raise InputError(f"GDN beta_min must be at most 1 (beta starts at 1), got {beta_min!r}; use e.g. 1e-6")
        self.channels = channels
        self.beta_min = float(beta_min)
        self.gamma_init = float(gamma_init)
        self.beta_raw = nn.Parameter(_to_raw(torch.ones(channels)))
        self.gamma_raw = nn.Parameter(_to_raw(gamma_init * torch.eye(channels)))

    @property
    def beta(self) -> Tensor:
        """Effective beta (C,), each >= ``beta_min``; differentiable in ``beta_raw``."""
        return _from_raw(self.beta_raw, self.beta_min)

    @property
    def gamma(self) -> Tensor:
        """Effective gamma (C, C), each >= 0; differentiable in ``gamma_raw``."""
        return _from_raw(self.gamma_raw, 0.0)

    @torch.no_grad()
    def set_parameters(self, beta: Tensor, gamma: Tensor) -> None:
        """Set the effective ``beta`` (C,) (each >= beta_min) and ``gamma`` (C, C) (each >= 0)."""
        c = self.channels
        beta = torch.as_tensor(beta, dtype=self.beta_raw.dtype, device=self.beta_raw.device)
        gamma = torch.as_tensor(gamma, dtype=self.gamma_raw.dtype, device=self.gamma_raw.device)
        if beta.shape != (c,):
            raise InputError(f"GDN beta must have shape ({c},), got {tuple(beta.shape)}; pass one value per channel")
        if gamma.shape != (c, c):
            raise InputError(
                f"GDN gamma must have shape ({c}, {c}), got {tuple(gamma.shape)}; pass a channels x channels matrix"
            )
        if not bool(torch.isfinite(beta).all()) or float(beta.min()) < self.beta_min:
            raise InputError(
                f"GDN beta must be finite and >= beta_min {self.beta_min:g}, got minimum {float(beta.min()):g}; "
                "pass larger values"
            )
        if not bool(torch.isfinite(gamma).all()) or float(gamma.min()) < 0:
            raise InputError(
                f"GDN gamma must be finite and non-negative, got minimum {float(gamma.min()):g}; pass values >= 0"
            )
        self.beta_raw.copy_(_to_raw(beta))
        self.gamma_raw.copy_(_to_raw(gamma))

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise InputError(
                f"GDN expects a torch.Tensor, got {type(x).__name__}; convert the input with torch.as_tensor"
            )
        if x.dim() not in (2, 4) or x.shape[1] != self.channels:
            raise InputError(
                f"GDN({self.channels}) expects input of shape (N, {self.channels}, H, W) or (N, {self.channels}), "
                f"got {tuple(x.shape)}; check the channel count of the layer before it"
            )
        if not x.is_floating_point():
            raise InputError(f"GDN expects a floating-point tensor, got {x.dtype}; convert it with x.float()")
        return gdn(x, self.beta, self.gamma)

    def extra_repr(self) -> str:
        return f"{self.channels}, beta_min={self.beta_min:g}, gamma_init={self.gamma_init:g}"
