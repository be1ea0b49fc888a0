"""``evaluate-scores``: how well a score predicts true mask quality, on samples with ground truth.

True quality of a proxy G against its ground truth (the paper's Fig. 6 and 9): AGT, the F1 of
G's foreground against the ground-truth foreground (Eq. 3 with H = ground truth, b = 0), and
the proxy's mIoU against the ground truth.  A score is judged by its Pearson and Spearman
correlation with AGT, the AUROC of finding bad masks (AGT below 0.5) from low scores, and the
mean AGT of the masks each tau keeps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.config import setting, store_setting
from salcurate.data import store as store_mod
from salcurate.errors import InputError, StoreError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.paper import TABLE_IV_TAUS as PAPER_TAUS
from salcurate.scoring.metrics import proxy_miou, true_quality
from salcurate.stats import auroc, pearson, spearman


def kept_quality(score: np.ndarray, quality: np.ndarray, taus: tuple[float, ...]) -> list[dict[str, Any]]:
    """For each tau: masks kept (score >= tau) and their mean true quality.  ``(N,)`` each."""
    rows = []
    for tau in taus:
        kept = score >= tau
        rows.append({"tau": tau, "kept": int(kept.sum()),
                     "mean_quality": float(quality[kept].mean()) if kept.any() else None})
    return rows


@dataclasses.dataclass(frozen=True)
class EvaluateScoresConfig:
    """Settings of ``evaluate-scores``."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    score: str = setting("sc", "Score column to judge, e.g. sc or sf.")
    plot: str | None = setting(None, "Write a scatter plot PNG of score against true quality.")
    bad_below: float = setting(0.5, "A mask is bad when its true quality is below this.")
    taus: tuple[float, ...] = setting(PAPER_TAUS, "Taus whose kept masks and their mean true quality are listed.",
                                      cli=False)


@dataclasses.dataclass(frozen=True)
class EvaluateScoresResult(Result):
    """How well score ``score`` predicts true quality; statistics that are undefined are None."""

    score: str  # the column judged (sc:cam for score sc of proxy set cam)
    samples: int
    pearson: float | None
    spearman: float | None
    pearson_miou: float | None
    spearman_miou: float | None
    auroc_bad: float | None
    bad_below: float
    bad: int
    mean_quality_all: float | None
    mean_miou_all: float | None
    taus: list[dict[str, Any]]
    plot: str | None
    proxy: str = store_mod.IMPORTED_PROXY  # the proxy set judged


def true_quality_of_store(st: store_mod.MaskStore, *, events: Events | None = None, miou: bool = True,
                          proxy: str = store_mod.IMPORTED_PROXY) -> tuple[np.ndarray, np.ndarray]:
    """AGT and mIoU of proxy set ``proxy`` per sample: ``(N,)`` float each, NaN without proxy or
    ground truth (and mIoU all NaN with ``miou=False``, which saves most of the time).

    ``events.advance(n)`` reports the samples done (in steps of 64).
    """
    events = events or NO_EVENTS
    n = len(st)
    agt = np.full(n, np.nan)
    mious = np.full(n, np.nan)
    both = np.flatnonzero(st.has_map(proxy) & st.has_map("gt"))
    gts = st.iter_maps("gt", both)
    for k, (i, labels) in enumerate(st.iter_maps(proxy, both)):
        _, gt = next(gts)
        agt[i] = true_quality(labels, gt)
        if miou:
            mious[i] = proxy_miou(labels, gt, st.num_classes)
        if k % 64 == 63:
            events.advance(64)
    if len(both) % 64:
        events.advance(len(both) % 64)
    return agt, mious


def run(config: EvaluateScoresConfig, *, events: Events | None = None) -> EvaluateScoresResult:
    """Correlation, AUROC and kept quality of score ``config.score`` against true quality.

    Reads the store, writes nothing to it (only the optional plot).  Events: ``start(samples with
    proxy and ground truth)``, ``advance(n)`` as their true quality is computed.
    """
    events = events or NO_EVENTS
    if not 0 < config.bad_below < 1:
        raise InputError(f"bad_below must be in (0, 1), got {config.bad_below}", param="bad_below")
    with store_mod.MaskStore(config.store) as st:
        column, proxy = st.resolve_column(config.score, config.proxy)
        if column not in st.score_names():
            have = ", ".join(st.score_names()) or "none; run `salcurate score-coarse`"
            raise StoreError(f"{st.path}: no score {column!r} in the store (it has: {have})")
        score = st.score(column).astype(np.float64)
        usable = st.has_map(proxy) & st.has_map("gt") & ~np.isnan(score)
        if usable.sum() < 2:
            raise StoreError(
                f"{st.path}: {int(usable.sum())} samples have both a score {column!r} and ground truth; "
                "evaluate-scores needs ground truth: import it with `salcurate import ... --gt DIR`"
            )
        events.start(int((st.has_map(proxy) & st.has_map("gt")).sum()))
        agt, miou = true_quality_of_store(st, events=events, proxy=proxy)
    s, q, m = score[usable], agt[usable], miou[usable]
    figures = {
        "pearson": pearson(s, q),
        "spearman": spearman(s, q),
        "pearson_miou": pearson(s, m),
        "spearman_miou": spearman(s, m),
        "auroc_bad": auroc(-s, q < config.bad_below),
        "mean_quality_all": float(q.mean()),
        "mean_miou_all": float(m.mean()),
    }
    result = EvaluateScoresResult(score=column, proxy=proxy, samples=int(usable.sum()), bad_below=config.bad_below,
                                  bad=int((q < config.bad_below).sum()),
                                  taus=_json_safe(kept_quality(s, q, config.taus)),
                                  plot=None, **_json_safe(figures))
    if config.plot:
        plot = scatter_plot(Path(config.plot), s, q, column, result)
        result = dataclasses.replace(result, plot=str(plot))
    return result


def _json_safe(value: Any) -> Any:
    """NaN (undefined statistics) becomes None, so the result is strict JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def scatter_plot(out: Path, score: np.ndarray, quality: np.ndarray, name: str,
                 result: EvaluateScoresResult) -> Path:
    """A scatter of score against true quality (AGT), like the paper's Fig. 9 (a, b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not out.parent.is_dir():
        raise InputError(f"{out}: the folder {out.parent} does not exist; create it or choose another plot path",
                         param="plot")
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(quality, score, s=6, alpha=0.5, linewidths=0)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("true quality AGT (F1 of proxy vs ground-truth foreground)")
    ax.set_ylabel(f"score {name}")
    ax.set_title(f"{name}: Pearson {_fmt(result.pearson)}, Spearman {_fmt(result.spearman)}\n"
                 f"{result.samples} masks with ground truth", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
