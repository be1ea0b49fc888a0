"""Which torch device a command runs on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from salcurate.config import Choice
from salcurate.errors import InputError

if TYPE_CHECKING:
    import torch


class Device(Choice):
    """``auto``: CUDA when present, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``."""
    import torch  # here, not at the top: configs import Device without loading torch

    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda, but no CUDA GPU is available here; use device cpu (or auto)", param="device")
    if name not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, got {name!r}", param="device")
    return torch.device(name)
