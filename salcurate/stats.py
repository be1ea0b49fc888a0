"""Statistics over score arrays: correlations and ranking quality (pure numpy/scipy).

Used wherever a score is judged against true quality: ``evaluate-scores``, the scorer's
per-epoch validation, the review report and the quality benchmarks.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of ``(N,)`` x and y; NaN when either is constant or N < 2."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(_scipy_stats().pearsonr(x, y)[0])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (ties get average ranks); NaN when undefined."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(_scipy_stats().spearmanr(x, y)[0])


def auroc(detector: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``detector`` (higher = more likely positive).

    detector: ``(N,)`` float; positive: ``(N,)`` bool → float in [0, 1], NaN without both
    classes.  Computed as the Mann-Whitney U statistic; ties count one half.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _scipy_stats().rankdata(detector)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use (it takes half a second to import)."""
    from scipy import stats

    return stats
