"""``evaluate-scores``: how well a score predicts true mask quality, on samples with ground truth.

True quality of a proxy G against its ground truth (the paper's Fig. 6 and 9): AGT, the F1 of
G's foreground against the ground-truth foreground (Eq. 3 with H = ground truth, b = 0), and
the proxy's mIoU against the ground truth.  A score is judged by its Pearson and Spearman
correlation with AGT, the AUROC of finding bad masks (AGT below 0.5) from low scores, and the
mean AGT of the masks each tau keeps.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.data import store as store_mod
from salcurate.errors import InputError, StoreError
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
    score: str = "sc"
    plot: str | None = None  # scatter plot PNG; None = no plot
    bad_below: float = 0.5
    taus: tuple[float, ...] = PAPER_TAUS


def true_quality_of_store(st: store_mod.MaskStore, *, progress: Callable[[int], None] | None = None,
                          miou: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """AGT and proxy mIoU per sample: ``(N,)`` float each, NaN without proxy or ground truth
    (and mIoU all NaN with ``miou=False``, which saves most of the time)."""
    n = len(st)
    agt = np.full(n, np.nan)
    mious = np.full(n, np.nan)
    both = np.flatnonzero(st.has_map("proxy") & st.has_map("gt"))
    gts = st.iter_maps("gt", both)
    for k, (i, proxy) in enumerate(st.iter_maps("proxy", both)):
        _, gt = next(gts)
        agt[i] = true_quality(proxy, gt)
        if miou:
            mious[i] = proxy_miou(proxy, gt, st.num_classes)
        if progress and k % 64 == 63:
            progress(64)
    if progress and len(both) % 64:
        progress(len(both) % 64)
    return agt, mious


def evaluate_scores(path: str | os.PathLike[str], config: EvaluateScoresConfig, *,
                    progress: Callable[[int], None] | None = None,
                    on_start: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Correlation, AUROC and kept quality of score ``config.score`` against true quality."""
    if not 0 < config.bad_below < 1:
        raise InputError(f"--bad-below must be in (0, 1), got {config.bad_below}")
    with store_mod.MaskStore(path) as st:
        if config.score not in st.score_names():
            have = ", ".join(st.score_names()) or "none; run `salcurate score-coarse`"
            raise StoreError(f"{st.path}: no score {config.score!r} in the store (it has: {have})")
        score = st.score(config.score).astype(np.float64)
        usable = st.has_map("proxy") & st.has_map("gt") & ~np.isnan(score)
        if usable.sum() < 2:
            raise StoreError(
                f"{st.path}: {int(usable.sum())} samples have both a score {config.score!r} and ground truth; "
                "evaluate-scores needs ground truth: import it with --gt DIR"
            )
        if on_start:
            on_start(int((st.has_map("proxy") & st.has_map("gt")).sum()))
        agt, miou = true_quality_of_store(st, progress=progress)
    s, q, m = score[usable], agt[usable], miou[usable]
    result = {
        "score": config.score,
        "samples": int(usable.sum()),
        "pearson": pearson(s, q),
        "spearman": spearman(s, q),
        "pearson_miou": pearson(s, m),
        "spearman_miou": spearman(s, m),
        "auroc_bad": auroc(-s, q < config.bad_below),
        "bad_below": config.bad_below,
        "bad": int((q < config.bad_below).sum()),
        "mean_quality_all": float(q.mean()),
        "mean_miou_all": float(m.mean()),
        "taus": kept_quality(s, q, config.taus),
        "plot": None,
    }
    if config.plot:
        result["plot"] = str(scatter_plot(Path(config.plot), s, q, config.score, result))
    return _json_safe(result)


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


def scatter_plot(out: Path, score: np.ndarray, quality: np.ndarray, name: str, result: dict[str, Any]) -> Path:
    """A scatter of score against true quality (AGT), like the paper's Fig. 9 (a, b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not out.parent.is_dir():
        raise InputError(f"{out}: the folder {out.parent} does not exist; create it or choose another --plot path")
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(quality, score, s=6, alpha=0.5, linewidths=0)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("true quality AGT (F1 of proxy vs ground-truth foreground)")
    ax.set_ylabel(f"score {name}")
    ax.set_title(f"{name}: Pearson {_fmt(result['pearson'])}, Spearman {_fmt(result['spearman'])}\n"
                 f"{result['samples']} masks with ground truth", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
