"""Selecting proxy masks by score: w_i = 1 if score_i >= tau else 0 (SAL Eq. 9).

Pure functions over arrays plus :func:`run` (the ``select`` command), which reads a store's score
column and writes a named selection.  Per-class counts use the image tags (clean, image-level labels): an image
"has" class c when it is tagged with c.

Without ``by``, :func:`default_score` picks the set's combined score ``q`` (``score-combined``), else
SF, else SC.  With ``per_class`` the rule (tau, top_k, top_fraction) is applied within each class:
the images tagged with c are ranked among themselves, and an image is kept when it is kept for ANY
of its tagged classes (so an image of an easy and a hard class is not dropped for the easy class's
competition, and a hard class keeps its own best images instead of losing them all to a global
ranking); images without tags belong to no class and are not kept.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.config import setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.errors import InputError, StoreError
from salcurate.events import Events, Result
from salcurate.paper import TABLE_IV_TAUS


def fraction_count(fraction: float, n: int) -> int:
    """How many of ``n`` candidates the best ``fraction`` keeps: ceil(fraction x n), at most n
    (so any fraction > 0 keeps at least one of a non-empty group)."""
    return min(n, math.ceil(fraction * n - 1e-9))


def select_weights(scores: np.ndarray, *, tau: float | None = None, top_k: int | None = None,
                   top_fraction: float | None = None, per_class: bool = False, min_per_class: int = 0,
                   classes: np.ndarray | None = None) -> np.ndarray:
    """Selection weights from scores.

    scores: ``(N,)`` float, NaN = no score (never kept); classes: ``(N, C)`` bool, needed for
    ``min_per_class`` and ``per_class`` → ``(N,)`` float32 in {0, 1}.

    Keeps score >= ``tau`` (Eq. 9); then at most the ``top_k`` highest of those and at most the
    best ``top_fraction`` of them (:func:`fraction_count`; ties by lower index).  With
    ``per_class`` these apply within each class c (the images tagged with c, ranked among
    themselves) and an image is kept when it is kept for any of its classes; an untagged image is
    then never kept.  Last, for each class with fewer than ``min_per_class`` kept images, adds its
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
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise InputError(f"top_fraction must be in (0, 1] (0.5 keeps the best half), got {top_fraction}",
                         param="top_fraction")
    if min_per_class < 0:
        raise InputError(f"min_per_class must be >= 0, got {min_per_class}", param="min_per_class")
    for needs, param in ((min_per_class, "min_per_class"), (per_class, "per_class")):
        if needs and (classes is None or np.shape(classes)[0] != scores.shape[0]):
            raise InputError(f"{param} needs the image classes (N, C) of every sample", param=param)
    scored = ~np.isnan(scores)
    passed = scored.copy()
    if tau is not None:
        passed &= np.where(scored, scores, -np.inf) >= tau
    # rank: highest score first, ties by lower index (a stable sort of -score)
    rank = np.argsort(-np.where(scored, scores, -np.inf), kind="stable")

    def best(candidates: np.ndarray) -> np.ndarray:
        if top_k is None and top_fraction is None:
            return candidates
        ranked = rank[candidates[rank]]
        k = len(ranked)
        if top_k is not None:
            k = min(k, top_k)
        if top_fraction is not None:
            k = min(k, fraction_count(top_fraction, len(ranked)))
        out = np.zeros_like(candidates)
        out[ranked[:k]] = True
        return out

    if per_class:
        cls = np.asarray(classes, dtype=bool)
        keep = np.zeros_like(passed)
        for c in range(cls.shape[1]):
            keep |= best(passed & cls[:, c])
    else:
        keep = best(passed)
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


#: The score a selection uses without ``by``, in order of preference: the combined score
#: (``score-combined``), the fine score SF (``score-fine``), the coarse score SC (``score-coarse``).
DEFAULT_BY: tuple[str, ...] = ("q", "sf", "sc")


def default_score(names: Iterable[str], proxy: str) -> str | None:
    """The column a selection uses without ``by``: the first of :data:`DEFAULT_BY` that proxy set
    ``proxy`` has among the score columns ``names`` (``q:cam``, else ``sf:cam``, else ``sc:cam``), or None."""
    have = set(names)
    for base in DEFAULT_BY:
        column = store_mod.proxy_column(base, proxy)
        if column in have:
            return column
    return None


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    """Settings of ``select``; saved as the selection's rule."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    by: str | None = setting(None, "Score column (default: q, the combined score, when the set has it, else sf, "
                                   "else sc); any other column too.")
    tau: float | None = setting(None, "Keep masks whose score >= tau (Eq. 9).")
    top_k: int | None = setting(None, "Keep at most the K best masks (of each class when selecting per class).")
    top_fraction: float | None = setting(None, "Keep the best fraction of masks, e.g. 0.5 (of each class when "
                                               "selecting per class).")
    per_class: bool = setting(False, "Apply tau / top-k / top-fraction within each class (by tags); an image is kept "
                                     "when kept for any of its classes.", flag="--per-class")
    min_per_class: int = setting(0, "Keep at least K images per class (by tags).")
    name: str | None = setting(None, "Selection name (default from score and tau).")
    dry_run: bool = setting(False, "Show what would be kept; write nothing.")
    overwrite: bool = setting(False, "Replace an existing selection of this name.")
    sweep: bool = setting(False, "Show NoS for the paper's taus (Table IV).")

    def has_rule(self) -> bool:
        """Whether a rule to select by is given (tau, top_k or top_fraction)."""
        return self.tau is not None or self.top_k is not None or self.top_fraction is not None

    def default_name(self, column: str | None = None) -> str:
        """The selection's name from the score ``column`` (default ``by``; ``sf:cam`` for the
        column of proxy set ``cam``) and the rule: ``sf_tau0.55``, ``sf:cam_tau0.55``,
        ``q:cam_top0.5_perclass`` (a fraction always shows its decimal point: ``top1.0``, not
        ``top1`` as for top_k 1)."""
        head = column or self.by
        if head is None:
            raise ValueError("default_name needs the score column when by is None (run resolves it)")
        parts = [head]
        if self.tau is not None:
            parts.append(f"tau{self.tau:g}")
        if self.top_k is not None:
            parts.append(f"top{self.top_k}")
        if self.top_fraction is not None:
            text = f"{self.top_fraction:g}"
            parts.append(f"top{text}" if any(ch in text for ch in ".e") else f"top{text}.0")
        if self.min_per_class:
            parts.append(f"min{self.min_per_class}")
        if self.per_class:
            parts.append("perclass")
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
    by: str = ""  # the score column used
    by_default: bool = False  # True when by was not given and default_score chose it
    per_class: bool = False


def _score_for(st: store_mod.MaskStore, by: str) -> np.ndarray:
    if by not in st.score_names():
        base = by.partition(":")[0] if "@" not in by else by  # sf:cam is made as sf is
        hint = {"sf": "run `salcurate score-fine` first (or select by sc after `salcurate score-coarse`)",
                "sc": "run `salcurate score-coarse` first",
                "q": "run `salcurate score-combined` first"}.get(
            base, f"choose one of: {', '.join(st.score_names()) or 'none yet; run `salcurate score-coarse`'}")
        raise StoreError(f"{st.path}: no score {by!r} in the store; {hint}", param="by")
    return st.score(by)


def _resolve_by(st: store_mod.MaskStore, config: SelectConfig) -> tuple[str, str, bool]:
    """The score column, the proxy set and whether the column is the default one."""
    if config.by is not None:
        return (*st.resolve_column(config.by, config.proxy), False)
    proxy = st.resolve_proxy(config.proxy)
    column = default_score(st.score_names(), proxy)
    if column is None:
        looked = ", ".join(store_mod.proxy_column(b, proxy) for b in DEFAULT_BY)
        own = None if proxy == store_mod.IMPORTED_PROXY else proxy
        others = [n for n in st.score_names() if store_mod.column_proxy(n) == own]
        hint = f", or choose one of {', '.join(others)} with by" if others else ""
        raise StoreError(f"{st.path}: no score to select with for the set of proxies {proxy!r} (none of {looked}); "
                         f"run `salcurate score-coarse` first{hint}", param="by")
    return column, proxy, True


def run(config: SelectConfig, *, events: Events | None = None) -> SelectResult:
    """Make a named selection from a score column (or only report, with ``dry_run``/``sweep``).

    Without ``by`` the column is :func:`default_score`'s (``result.by``, ``result.by_default``)."""
    started = time.time()
    path = Path(config.store)
    if not config.has_rule() and not config.sweep:
        raise InputError("give tau (keep scores >= tau), top_k or top_fraction, or sweep to see what the paper's "
                         "taus keep", param=("tau", "top_k", "top_fraction", "sweep"))
    with store_mod.MaskStore(path) as st:
        by, proxy, by_default = _resolve_by(st, config)
        config = dataclasses.replace(config, proxy=proxy)
        scores = _score_for(st, by)
        classes = st.tags
        name = config.name or config.default_name(by)
        if not (config.dry_run or not config.has_rule()):
            if name in st.selection_names() and not config.overwrite:
                raise StoreError(f"{path}: selection {name!r} exists already; pass overwrite or choose another name",
                                 param=("overwrite", "name"))
            store_mod.check_column_name(name)
        rows = sweep(scores, classes) if config.sweep else None
        scored = ~np.isnan(scores)
        before = per_class_counts(scored.astype(np.float32), classes).tolist()
        if not config.has_rule():
            return SelectResult(name, False, 0, int(scored.sum()), len(st), st.class_names, before, before, rows,
                                by=by, by_default=by_default, per_class=config.per_class)
        weights = select_weights(scores, tau=config.tau, top_k=config.top_k, top_fraction=config.top_fraction,
                                 per_class=config.per_class, min_per_class=config.min_per_class, classes=classes)
        after = per_class_counts(weights, classes).tolist()
        score_config = st.score_meta(by).get("config")
        n, class_names = len(st), st.class_names
    written = False
    if not config.dry_run:
        rule = {"by": by, "by_default": by_default, "proxy": proxy, "tau": config.tau, "top_k": config.top_k,
                "top_fraction": config.top_fraction, "per_class": config.per_class,
                "min_per_class": config.min_per_class, "score_config": score_config, "kept": int(weights.sum()),
                "per_class_kept": dict(zip(class_names[1:], after))}
        with store_mod.transaction(path, command="select", config={**to_dict(config), "by": by},
                                   started=started) as tx:
            tx.put_selection(name, weights, rule=rule, command="select", overwrite=config.overwrite)
        written = True
    return SelectResult(name, written, int(weights.sum()), int(scored.sum()), n, class_names, before, after, rows,
                        by=by, by_default=by_default, per_class=config.per_class)
