"""Selecting proxy masks by score: w_i = 1 if score_i >= tau else 0 (SAL Eq. 9).

Pure functions over arrays plus :func:`run` (the ``select`` command), which reads a store's score
column and writes a named selection.  Per-class counts use the image tags (clean, image-level labels): an image
"has" class c when it is tagged with c.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.config import setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.errors import InputError, StoreError
from salcurate.events import Events, Result
from salcurate.paper import TABLE_IV_TAUS


def select_weights(scores: np.ndarray, *, tau: float | None = None, top_k: int | None = None,
                   min_per_class: int = 0, classes: np.ndarray | None = None) -> np.ndarray:
    """Selection weights from scores.

    scores: ``(N,)`` float, NaN = no score (never kept); classes: ``(N, C)`` bool, needed for
    ``min_per_class`` → ``(N,)`` float32 in {0, 1}.

    Keeps score >= ``tau`` (Eq. 9); then at most the ``top_k`` highest of those (ties by lower
    index); then, for each class with fewer than ``min_per_class`` kept images, adds its
    highest-scoring dropped images until it has ``min_per_class`` (or runs out), so that rare
    classes survive a strict tau.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise InputError(f"expected scores of shape (N,), got {scores.shape}")
    if tau is not None and not 0.0 <= tau <= 1.0:
        raise InputError(f"tau must be in [0, 1], got {tau}", param="tau")
    if top_k is not None and top_k < 0:
        raise InputError(f"top_k must be >= 0, got {top_k}", param="top_k")
    if min_per_class < 0:
        raise InputError(f"min_per_class must be >= 0, got {min_per_class}", param="min_per_class")
    if min_per_class and (classes is None or classes.shape[0] != scores.shape[0]):
        raise InputError("min_per_class needs the image classes (N, C) of every sample", param="min_per_class")
    scored = ~np.isnan(scores)
    keep = scored.copy()
    if tau is not None:
        keep &= np.where(scored, scores, -np.inf) >= tau
    # rank: highest score first, ties by lower index (a stable sort of -score)
    rank = np.argsort(-np.where(scored, scores, -np.inf), kind="stable")
    if top_k is not None:
        kept_ranked = rank[keep[rank]]
        keep = np.zeros_like(keep)
        keep[kept_ranked[:top_k]] = True
    if min_per_class:
        cls = np.asarray(classes, dtype=bool)
        for c in range(cls.shape[1]):
            have = int((keep & cls[:, c]).sum())
            if have >= min_per_class:
                continue
            candidates = rank[(cls[rank, c]) & ~keep[rank] & scored[rank]]
            keep[candidates[: min_per_class - have]] = True
    return keep.astype(np.float32)


def per_class_counts(weights: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Images kept per class: weights ``(N,)``, classes ``(N, C)`` bool → ``(C,)`` int64."""
    return (np.asarray(classes, dtype=bool) & (np.asarray(weights) > 0)[:, None]).sum(axis=0).astype(np.int64)


def sweep(scores: np.ndarray, classes: np.ndarray, taus: tuple[float, ...] = TABLE_IV_TAUS) -> list[dict[str, Any]]:
    """NoS (number of samples kept) and per-class counts for each tau: the Table IV row."""
    rows = []
    for tau in taus:
        w = select_weights(scores, tau=tau)
        rows.append({"tau": tau, "kept": int(w.sum()), "per_class": per_class_counts(w, classes).tolist()})
    return rows


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    """Settings of ``select``; saved as the selection's rule."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    by: str = setting("sf", "Score column: sf (fine), sc (coarse) or any other.")
    tau: float | None = setting(None, "Keep masks whose score >= tau (Eq. 9).")
    top_k: int | None = setting(None, "Keep at most the K best masks.")
    min_per_class: int = setting(0, "Keep at least K images per class (by tags).")
    name: str | None = setting(None, "Selection name (default from score and tau).")
    dry_run: bool = setting(False, "Show what would be kept; write nothing.")
    overwrite: bool = setting(False, "Replace an existing selection of this name.")
    sweep: bool = setting(False, "Show NoS for the paper's taus (Table IV).")

    def default_name(self, column: str | None = None) -> str:
        """The selection's name from the score ``column`` (default ``by``; ``sf:cam`` for the
        column of proxy set ``cam``) and the rule: ``sf_tau0.55``, ``sf:cam_tau0.55``."""
        parts = [column or self.by]
        if self.tau is not None:
            parts.append(f"tau{self.tau:g}")
        if self.top_k is not None:
            parts.append(f"top{self.top_k}")
        if self.min_per_class:
            parts.append(f"min{self.min_per_class}")
        return "_".join(parts)


@dataclasses.dataclass(frozen=True)
class SelectResult(Result):
    name: str
    written: bool
    kept: int
    scored: int
    total: int
    class_names: tuple[str, ...]
    per_class_before: list[int]
    per_class_after: list[int]
    sweep: list[dict[str, Any]] | None


def _score_for(st: store_mod.MaskStore, by: str) -> np.ndarray:
    if by not in st.score_names():
        base = by.partition(":")[0] if "@" not in by else by  # sf:cam is made as sf is
        hint = {"sf": "run `salcurate score-fine` first (or select by sc after `salcurate score-coarse`)",
                "sc": "run `salcurate score-coarse` first"}.get(
            base, f"choose one of: {', '.join(st.score_names()) or 'none yet; run `salcurate score-coarse`'}")
        raise StoreError(f"{st.path}: no score {by!r} in the store; {hint}", param="by")
    return st.score(by)


def run(config: SelectConfig, *, events: Events | None = None) -> SelectResult:
    """Make a named selection from a score column (or only report, with ``dry_run``/``sweep``)."""
    started = time.time()
    path = Path(config.store)
    if config.tau is None and config.top_k is None and not config.sweep:
        raise InputError("give tau (keep scores >= tau) or top_k, or sweep to see what the paper's taus keep",
                         param=("tau", "top_k", "sweep"))
    with store_mod.MaskStore(path) as st:
        by, proxy = st.resolve_column(config.by, config.proxy)
        config = dataclasses.replace(config, proxy=proxy)
        scores = _score_for(st, by)
        classes = st.tags
        name = config.name or config.default_name(by)
        if not (config.dry_run or (config.tau is None and config.top_k is None)):
            if name in st.selection_names() and not config.overwrite:
                raise StoreError(f"{path}: selection {name!r} exists already; pass overwrite or choose another name",
                                 param=("overwrite", "name"))
            store_mod.check_column_name(name)
        rows = sweep(scores, classes) if config.sweep else None
        scored = ~np.isnan(scores)
        before = per_class_counts(scored.astype(np.float32), classes).tolist()
        if config.tau is None and config.top_k is None:
            return SelectResult(name, False, 0, int(scored.sum()), len(st), st.class_names, before, before, rows)
        weights = select_weights(scores, tau=config.tau, top_k=config.top_k, min_per_class=config.min_per_class,
                                 classes=classes)
        after = per_class_counts(weights, classes).tolist()
        score_config = st.score_meta(by).get("config")
        n, class_names = len(st), st.class_names
    written = False
    if not config.dry_run:
        rule = {"by": by, "proxy": proxy, "tau": config.tau, "top_k": config.top_k,
                "min_per_class": config.min_per_class, "score_config": score_config, "kept": int(weights.sum())}
        with store_mod.transaction(path, command="select", config=to_dict(config), started=started) as tx:
            tx.put_selection(name, weights, rule=rule, command="select", overwrite=config.overwrite)
        written = True
    return SelectResult(name, written, int(weights.sum()), int(scored.sum()), n, class_names, before, after, rows)
