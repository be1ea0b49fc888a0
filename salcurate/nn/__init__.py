"""Neural-network parts of salcurate: GDN and the SAL mask-scoring network (Table I)."""

from __future__ import annotations

from salcurate.nn.gdn import GDN, gdn
from salcurate.nn.scorer import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    MaskScorer,
    ResB,
    ScorerConfig,
    load_checkpoint,
    save_checkpoint,
    scorer_macs,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "GDN",
    "MaskScorer",
    "ResB",
    "ScorerConfig",
    "gdn",
    "load_checkpoint",
    "save_checkpoint",
    "scorer_macs",
]
