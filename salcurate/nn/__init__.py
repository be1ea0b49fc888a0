"""Neural-network parts of salcurate (foundation): GDN, the SAL mask-scoring network (Table I),
SAL-Net, the tag classifier and its CAMs, device choice and checkpoint files.

Submodules are imported when used (``salcurate.nn.scorer``, ``salcurate.nn.salnet``, ...), so that
importing a config that names a device does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GDN": "gdn", "gdn": "gdn",
    "CHECKPOINT_FORMAT": "scorer", "CHECKPOINT_FORMAT_VERSION": "scorer", "MaskScorer": "scorer", "ResB": "scorer",
    "ScorerConfig": "scorer", "load_checkpoint": "scorer", "save_checkpoint": "scorer", "scorer_macs": "scorer",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"salcurate.nn.{_EXPORTS[name]}"), name)
    raise AttributeError(name)


__all__ = sorted(_EXPORTS)
