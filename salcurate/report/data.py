"""The numbers behind each section of the review report, as pure functions over arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from salcurate.selection.select import per_class_counts
from salcurate.stats import pearson, spearman

#: Score columns the report shows, in pipeline order, with what each is.
SCORE_LABELS: dict[str, str] = {
    "ac": "AC, boundary accuracy (Eq. 3)",
    "f": "F, objectness",
    "cd": "CD, class distribution (Eq. 4)",
    "sc": "SC, coarse score (Eq. 5)",
    "p": "P, the scorer's prediction",
    "sf": "SF, fine score (Eq. 7)",
}
#: The paper's chosen taus (Table IV): SC 0.55 / 0.8, SF 0.55 / 0.85 (VGG16 / ResNet101).

#: Which command adds a missing score.
MAKES = {"ac": "score-coarse", "f": "score-coarse", "cd": "score-coarse", "sc": "score-coarse",
         "p": "score-fine", "sf": "score-fine"}


def histogram(values: np.ndarray, *, bins: int = 20) -> dict[str, Any]:
    """Counts of ``(N,)`` values in [0, 1] (NaN left out) over ``bins`` equal bins."""
    v = values[~np.isnan(values)]
    counts, edges = np.histogram(np.clip(v, 0, 1), bins=bins, range=(0.0, 1.0))
    return {"counts": counts.tolist(), "edges": edges.tolist(), "n": int(v.size),
            "mean": float(v.mean()) if v.size else None}


def agreement(score: np.ndarray, quality: np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman of a score with true quality over samples having both: ``(N,)`` each."""
    ok = ~np.isnan(score) & ~np.isnan(quality)
    s, q = score[ok], quality[ok]
    p, r = pearson(s, q), spearman(s, q)
    return {"n": int(ok.sum()), "pearson": None if np.isnan(p) else p, "spearman": None if np.isnan(r) else r}


def tau_view(score: np.ndarray, classes: np.ndarray, quality: np.ndarray | None,
             taus: np.ndarray | None = None) -> list[dict[str, Any]]:
    """For each tau: masks kept (score >= tau), kept per class, mean true quality of the kept.

    score: ``(N,)`` (NaN never kept); classes: ``(N, C)`` bool (tags); quality: ``(N,)`` or None.
    """
    taus = np.round(np.linspace(0, 1, 21), 2) if taus is None else taus
    rows = []
    for tau in taus:
        kept = ~np.isnan(score) & (np.where(np.isnan(score), -1, score) >= tau)
        q = None
        if quality is not None:
            good = kept & ~np.isnan(quality)
            q = float(quality[good].mean()) if good.any() else None
        rows.append({"tau": float(tau), "kept": int(kept.sum()),
                     "per_class": per_class_counts(kept.astype(np.float32), classes).tolist(), "mean_quality": q})
    return rows


def gallery(score: np.ndarray, k: int, *, among: np.ndarray | None = None) -> dict[str, list[int]]:
    """The k worst and k best samples by score (ties by index): ``{"worst": [...], "best": [...]}``.

    score: ``(N,)`` with NaN for unscored; among: ``(N,)`` bool, the samples to choose from.
    """
    ok = ~np.isnan(score) if among is None else (~np.isnan(score) & among)
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(score[idx], kind="stable")]
    return {"worst": order[:k].tolist(), "best": order[::-1][:k].tolist() if k else []}


def selection_view(weights: np.ndarray, classes: np.ndarray, scored: np.ndarray) -> dict[str, Any]:
    """What a selection keeps and drops, overall and per class (by tags)."""
    kept = weights > 0
    dropped = scored & ~kept
    return {"kept": int(kept.sum()), "dropped": int(dropped.sum()),
            "kept_per_class": per_class_counts(kept.astype(np.float32), classes).tolist(),
            "dropped_per_class": per_class_counts(dropped.astype(np.float32), classes).tolist()}
