"""``score-combined``: one default score ``q`` from score columns already in the store.

The combined score of a proxy mask is the weighted geometric mean of component scores x_j, each
in [0, 1]:

    q = exp( sum_j w_j log(max(x_j, eps)) / sum_j w_j )

It generalizes SC = AC x CD (SAL Eq. 5), a plain product of two scores in [0, 1], to any number of
components: the weights are exponents (a weight 2 counts a component twice), dividing by
sum_j w_j keeps q in [0, 1] however many components there are, and a component near 0 pulls q
towards 0 as in Eq. 5.  ``eps`` (:data:`EPS`) keeps a single 0 from making q exactly 0 so that
masks with a zero component are still ranked by the others.  q is NaN where any used component is
NaN and where the set has no mask.  No ground truth is used.

Components are score columns of the chosen proxy set named by their base name (``ac`` reads
``ac:cam`` for the set ``cam``; see ``salcurate.data.store.proxy_column``) plus one built-in prior,
``tags`` = 1 / (number of classes the image is tagged with) (:func:`tag_prior`): the more tagged
classes, the more room for giving a region the wrong one of them (issue 12: minus the number of
tags predicts an image's mIoU well).  It comes from the store's tags, so it is always available.

The default weights are :data:`DEFAULT_WEIGHTS`; the setting ``components`` (``"ac=1,ce=1,tags=1"``)
replaces them.  :func:`run` (settings: :class:`CombinedConfig`) only reads columns and writes ``q``
(``q:cam``) in one store transaction; the column's config holds the resolved weights, ``eps`` and
the configs of the component columns, so a rerun with the same inputs does nothing.

Reference reliability (issue 12, opt-in): with the setting ``reliability`` naming a column r in
[0, 1] (``hr`` of ``score-evidence``: how far the saliency reference H agrees with the tag
classifier's foreground), AC's weight becomes w_ac x r_i per image, so that AC, which only says
whether the mask matches H, counts less where H is likely wrong:

    q_r = exp( (w_ac r log AC + sum_{j != ac} w_j log x_j) / (w_ac r + sum_{j != ac} w_j) )

On the realistic benchmark it beats q on both data sets, but so does a constant AC weight of the
mean r (docs/quality.md): the gain comes from AC counting less everywhere, not from r per image,
so it is not the default.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.config import setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.errors import InputError, StoreError
from salcurate.events import NO_EVENTS, Events, Result

log = logging.getLogger(__name__)

COMMAND = "score-combined"
#: The base name of the combined score column (``q``; ``q:cam`` for the set ``cam``).
COLUMN = "q"
#: The built-in prior component: 1 / number of tagged classes.
TAGS = "tags"
#: The floor under each component before the logarithm (a zero component gives q <= eps^(w/sum w)).
EPS = 1e-3
#: How far outside [0, 1] a stored component may lie from rounding (float32 columns); clipped.
RANGE_TOLERANCE = 1e-4
#: The default components and weights (chosen by measuring on a benchmark; see docs/method.md).
DEFAULT_WEIGHTS: dict[str, float] = {"ac": 1.0, "ce": 1.0, "tags": 1.0}
#: The component whose weight ``reliability`` scales per image (the one that trusts the saliency reference).
RELIABLE_COMPONENT = "ac"
#: The command that makes each score column (by base name), for the message when one is missing.
MAKERS: dict[str, str] = {
    **dict.fromkeys(("f1", "f", "ac", "cd", "sc"), "score-coarse"),
    **dict.fromkeys(("ce", "ce_in", "ce_pure", "tagp", "tagx", "rc", "hr"), "score-evidence"),
    **dict.fromkeys(("agree", "mm", "rr"), "score-model"),
    **dict.fromkeys(("sf", "p"), "score-fine"),
}


# ----------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------
def format_weights(weights: Mapping[str, float]) -> str:
    """``{"ac": 1.0, "tags": 0.5}`` → ``"ac=1,tags=0.5"`` (the form the ``components`` setting takes)."""
    return ",".join(f"{name}={w:g}" for name, w in weights.items())


def parse_components(text: str | None) -> dict[str, float]:
    """The ``components`` setting as ``{name: weight}``: ``"ac=1,ce=0.5,tags"`` (a bare name weighs 1).

    None gives :data:`DEFAULT_WEIGHTS`.  Weights must be finite and >= 0; a weight 0 leaves the
    component out (it is dropped from the result); at least one must be > 0.
    """
    if text is None:
        return dict(DEFAULT_WEIGHTS)
    weights: dict[str, float] = {}
    like = f"like {format_weights(DEFAULT_WEIGHTS)!r}"
    for part in str(text).split(","):
        name, eq, value = (s.strip() for s in part.strip().partition("="))
        if not name:
            raise InputError(f"components expects name=weight pairs separated by commas, {like}; got {text!r}",
                             param="components")
        try:
            w = float(value) if eq else 1.0
        except ValueError:
            raise InputError(f"components: the weight of {name!r} must be a number, got {value!r} ({like})",
                             param="components") from None
        if not (math.isfinite(w) and w >= 0):
            raise InputError(f"components: the weight of {name!r} must be a number >= 0, got {value!r}",
                             param="components")
        if name in weights:
            raise InputError(f"components names {name!r} twice in {text!r}", param="components")
        if name.partition("@")[0].partition(":")[0] == COLUMN:
            raise InputError(f"components cannot hold the combined score itself ({name!r}); got {text!r}",
                             param="components")
        store_mod.check_column_name(name)
        weights[name] = w
    used = {k: w for k, w in weights.items() if w > 0}
    if not used:
        raise InputError(f"components needs at least one weight > 0, got {text!r}", param="components")
    return used


def tag_prior(tags: np.ndarray, *, has_tags: np.ndarray | None = None) -> np.ndarray:
    """The built-in prior component ``tags``: 1 / (number of classes the image is tagged with).

    tags: ``(N, C)`` bool; has_tags: ``(N,)`` bool, False where the tags are unknown (None: all
    known) → ``(N,)`` float64 in (0, 1]: 1 for one tagged class (or none), 1/2 for two, ...;
    NaN where the tags are unknown.
    """
    tags = np.asarray(tags, dtype=bool)
    if tags.ndim != 2 or (has_tags is not None and np.shape(has_tags) != (tags.shape[0],)):
        raise InputError(f"expected tags of shape (N, C) and has_tags of shape (N,), got {tags.shape} and "
                         f"{None if has_tags is None else np.shape(has_tags)}")
    prior = 1.0 / np.maximum(tags.sum(axis=1), 1).astype(np.float64)
    if has_tags is not None:
        prior[~np.asarray(has_tags, dtype=bool)] = np.nan
    return prior


def combined_score(components: Mapping[str, np.ndarray], *, weights: Mapping[str, float],
                   eps: float = EPS, scales: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The weighted geometric mean of component scores (see the module docstring).

    components: name → ``(N,)`` float in [0, 1] (NaN = no score; values within
    :data:`RANGE_TOLERANCE` of the interval are clipped); weights: name → weight >= 0 (a name
    with weight 0 is not used, names missing from ``weights`` neither); scales: name of a used
    component → ``(N,)`` float in [0, 1], its weight per sample is then w_j x scale_i (the
    ``reliability`` setting) → ``(N,)`` float64 in [0, 1],
    ``exp(sum_j w_j log(max(x_j, eps)) / sum_j w_j)``, NaN where any used component or scale is
    NaN or where every weight of a sample is 0.
    """
    used = {k: float(w) for k, w in weights.items() if w != 0}
    arrays = {k: np.asarray(components[k], dtype=np.float64) for k in used if k in components}
    scaled = {k: np.asarray(v, dtype=np.float64) for k, v in (scales or {}).items()}
    shapes = {a.shape for a in (*arrays.values(), *scaled.values())}
    bad_weight = [k for k, w in used.items() if not (math.isfinite(w) and w > 0)]
    out_of_range = [k for k, a in (*arrays.items(), *scaled.items())
                    if np.any((a < -RANGE_TOLERANCE) | (a > 1 + RANGE_TOLERANCE))]
    if (not used or bad_weight or len(arrays) < len(used) or len(shapes) != 1 or len(next(iter(shapes))) != 1
            or out_of_range or not 0 < eps < 1 or not set(scaled) <= set(used)):
        raise InputError(
            f"combined_score needs at least one weight > 0 (finite, not negative: bad {bad_weight}), every weighted "
            f"component given ({sorted(set(used) - set(arrays))} missing), scales only for them (extra: "
            f"{sorted(set(scaled) - set(used))}), all of the same shape (N,) (got {sorted(map(str, shapes))}), "
            f"values in [0, 1] (outside: {out_of_range}) and 0 < eps < 1 (got {eps})", param="components")
    w_i = {k: w * np.clip(scaled[k], 0.0, 1.0) if k in scaled else w for k, w in used.items()}
    total = sum(w_i.values())
    log_sum = sum(w_i[k] * np.log(np.maximum(np.clip(arrays[k], 0.0, 1.0), eps)) for k in used)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.exp(np.where(total > 0, log_sum / np.where(total > 0, total, 1.0), np.nan))  # NaN propagates


# ----------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CombinedConfig:
    """Settings of ``score-combined``."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    components: str | None = setting(
        None, "Components and weights of the geometric mean, as name=weight pairs: any score column's base name of "
              f"the set, or 'tags' (1 / number of tagged classes); default {format_weights(DEFAULT_WEIGHTS)}.")
    reliability: str | None = setting(
        None, f"A score column in [0, 1] (e.g. hr, from score-evidence) that scales the weight of "
              f"{RELIABLE_COMPONENT} per image: AC counts less where the saliency reference is unreliable; "
              "default none.")
    overwrite: bool = setting(False, "Replace a combined score made with other weights or component columns.",
                              run_only=True)


@dataclasses.dataclass(frozen=True)
class CombinedResult(Result):
    """What ``score-combined`` did: the column, its weights and component columns, the mean q."""

    column: str
    weights: dict[str, float]
    columns: dict[str, str | None]  # component name -> score column read (None for the built-in ``tags``)
    scored: int
    nothing_to_do: bool
    seconds: float
    mean_q: float | None


def _missing_message(path: Path, proxy: str, weights: dict[str, float], missing: dict[str, str],
                     have: list[str]) -> str:
    for_set = "" if proxy == store_mod.IMPORTED_PROXY else f" for proxies {proxy!r}"
    parts = []
    for name, col in missing.items():
        maker = MAKERS.get(name.partition("@")[0].partition(":")[0])
        parts.append(f"{col!r} (made by `salcurate {maker}`{for_set})" if maker else
                     f"{col!r} (no salcurate command makes it; the store has: {', '.join(have) or 'none'})")
    rest = {k: w for k, w in weights.items() if k not in missing}
    leave = (f"or leave {'it' if len(missing) == 1 else 'them'} out: components {format_weights(rest)!r}" if rest
             else f"or choose others: components like {format_weights({TAGS: 1.0})!r}")
    return (f"{path}: the combined score needs score column{'s' if len(missing) > 1 else ''} the store does not "
            f"have: {', '.join(parts)}; make {'it' if len(missing) == 1 else 'them'} first, {leave}")


def _plain_json(value: Any) -> Any:
    """``value`` as it reads back from a column's JSON attributes."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _unit_column(st: store_mod.MaskStore, column: str, has_proxy: np.ndarray, why: str, *,
                 param: str) -> np.ndarray:
    """Score column ``column`` as ``(N,)`` float64, refused (one line saying ``why``) when a sample
    with a proxy holds a value outside [0, 1] beyond rounding."""
    x = st.score(column).astype(np.float64)
    seen = x[has_proxy & ~np.isnan(x)]
    if seen.size and (seen.min() < -RANGE_TOLERANCE or seen.max() > 1 + RANGE_TOLERANCE):
        raise InputError(f"{st.path}: score column {column!r} has values outside [0, 1] (min {seen.min():.4g}, "
                         f"max {seen.max():.4g}); {why}", param=param)
    return x


def run(config: CombinedConfig, *, events: Events | None = None) -> CombinedResult:
    """Compute the combined score ``q`` of every mask of the proxy set from the store's columns.

    With the same weights and the same component columns (by their configs) complete in the store
    it does nothing; a ``q`` made otherwise is replaced only with ``overwrite``.  Raises a one-line
    ``StoreError`` naming the command that makes a missing component, ``InputError`` for a bad
    ``components`` setting or a component outside [0, 1]; the store is then unchanged.
    """
    events = events or NO_EVENTS
    started = time.time()
    path = Path(config.store)
    weights = parse_components(config.components)
    with store_mod.MaskStore(path) as st:
        proxy, has_proxy = st.resolve_proxy_masks(config.proxy)
        column = store_mod.proxy_column(COLUMN, proxy)
        columns: dict[str, str | None] = {}
        for name in weights:
            columns[name] = None if name == TAGS else st.resolve_column(name, proxy)[0]
        reliability = None
        if config.reliability is not None:
            if RELIABLE_COMPONENT not in weights:
                raise InputError(f"reliability scales the weight of {RELIABLE_COMPONENT!r}, which components "
                                 f"{format_weights(weights)!r} leaves out; add {RELIABLE_COMPONENT} to components or "
                                 "drop reliability", param="reliability")
            store_mod.check_column_name(config.reliability)
            reliability = st.resolve_column(config.reliability, proxy)[0]
        have = st.score_names()
        if reliability is not None and reliability not in have:
            maker = MAKERS.get(config.reliability.partition("@")[0].partition(":")[0])
            made = f"made by `salcurate {maker}`" if maker else f"the store has: {', '.join(have) or 'none'}"
            raise StoreError(f"{path}: reliability needs score column {reliability!r} ({made}), which the store does "
                             "not have; make it first or leave out reliability", param="reliability")
        missing = {name: col for name, col in columns.items() if col is not None and col not in have}
        if missing:
            raise StoreError(_missing_message(path, proxy, weights, missing, have), param="components")
        values: dict[str, np.ndarray] = {}
        configs: dict[str, Any] = {}
        for name, col in columns.items():
            if col is None:
                values[name] = tag_prior(st.tags, has_tags=st.has_tags)
                continue
            values[name] = _unit_column(st, col, has_proxy, "a geometric mean needs scores in [0, 1]: leave it out "
                                                            "of components", param="components")
            configs[col] = st.score_meta(col).get("config")
        scales: dict[str, np.ndarray] = {}
        if reliability is not None:
            scales[RELIABLE_COMPONENT] = _unit_column(st, reliability, has_proxy, "reliability needs one in [0, 1] "
                                                      "(like hr of score-evidence)", param="reliability")
            configs[reliability] = st.score_meta(reliability).get("config")
        scoring = {"weights": weights, "eps": EPS, "columns": columns, "component_configs": configs}
        if reliability is not None:  # absent otherwise: q made before this setting stays complete
            scoring["reliability"] = {"component": RELIABLE_COMPONENT, "column": reliability}
        if proxy != store_mod.IMPORTED_PROXY:
            scoring["proxy"] = proxy
        scoring = _plain_json(scoring)
        if column in have and not config.overwrite:
            if st.score_meta(column).get("config") == scoring:
                log.info("%s with these weights and components is complete in %s; nothing to do", column, path)
                return CombinedResult(column, weights, columns, int(has_proxy.sum()), True, time.time() - started,
                                      None)
            raise StoreError(f"{path}: score column {column!r} exists already, made with other weights or component "
                             "columns; pass overwrite to replace it", param="overwrite")
    events.start(1, 0)
    q = np.where(has_proxy, combined_score(values, weights=weights, scales=scales), np.nan).astype(np.float32)
    with store_mod.transaction(path, command=COMMAND, config={**to_dict(config), "proxy": proxy, "column": column},
                               started=started) as tx:
        tx.put_scores({column: q}, config=scoring, command=COMMAND, overwrite=True)
    events.advance(1)
    scored = int((~np.isnan(q)).sum())
    log.info("wrote %s for %d masks in %s", column, scored, path)
    return CombinedResult(column, weights, columns, scored, False, time.time() - started,
                          float(np.nanmean(q)) if scored else None)
