"""Statistics over score arrays: correlations and ranking quality (pure numpy/scipy).

Used wherever a score is judged against true quality: ``evaluate-scores``, the scorer's
per-epoch validation, the review report and the quality benchmarks; and for the tag
classifier's mean average precision (``pseudo-label``).
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


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ranking by ``scores`` (higher = more likely positive).

    scores: ``(N,)`` float; positive: ``(N,)`` bool → float in [0, 1], NaN without positives.
    AP = Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds from high to low, P_k and R_k
    the precision and recall of the items scoring at least the k-th threshold (tied items enter
    together): the definition of scikit-learn's ``average_precision_score`` and of PASCAL VOC's
    classification mAP since 2010 (the area under the step precision-recall curve, not interpolated).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # the last item of each group of equal scores
    tp = np.cumsum(p)[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use (it takes half a second to import)."""
    from scipy import stats

    return stats
