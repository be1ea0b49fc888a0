"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from salcurate.config import Choice
from salcurate.errors import InputError


class Device(Choice):
    """``auto``: CUDA when present, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda, but no CUDA GPU is available here; use device cpu (or auto)", param="device")
    if name not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, got {name!r}", param="device")
    return torch.device(name)
