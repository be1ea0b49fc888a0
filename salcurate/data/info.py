"""What a store holds: counts, class frequencies, scores, selections and the run log.

Pure summaries over :class:`~salcurate.data.store.MaskStore` reads (:func:`store_summary`, which the
report uses too) and :func:`run`, the ``info`` command; the CLI renders them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from salcurate.config import store_setting
from salcurate.data.store import IMPORTED_PROXY, LABEL_KINDS, MAP_KINDS, MaskStore
from salcurate.events import Events, Result


@dataclasses.dataclass(frozen=True)
class InfoConfig:
    """Settings of ``info``."""

    store: str = store_setting()


@dataclasses.dataclass(frozen=True)
class InfoResult(Result):
    """Everything ``salcurate info`` shows (the fields of :func:`store_summary`)."""

    path: str
    schema_version: int
    salcurate_version: str | None
    created: str | None
    num_samples: int
    num_classes: int
    splits: dict[str, int]  # split -> samples
    maps: dict[str, int]  # map kind -> samples that have one
    with_tags: int
    strong: int
    image_sizes: dict[str, list[int] | None]  # height / width -> [min, max]
    classes: list[dict[str, Any]]  # per class, see class_table
    proxies: dict[str, dict[str, Any]]  # per proxy set, see proxy_sets
    scores: dict[str, dict[str, Any]]  # per score column: column_summary and its config
    selections: dict[str, dict[str, Any]]  # per selection: kept, total, rule
    log: list[dict[str, Any]]  # the store's run log


def column_summary(values: np.ndarray) -> dict[str, Any]:
    """Count, mean and range of a score column, ignoring NaN (not computed): ``(N,)`` float."""
    done = values[~np.isnan(values)]
    if done.size == 0:
        return {"computed": 0, "mean": None, "min": None, "max": None}
    return {"computed": int(done.size), "mean": float(done.mean()), "min": float(done.min()), "max": float(done.max())}


def class_table(store: MaskStore) -> list[dict[str, Any]]:
    """Per class: pixels and images in proxy and ground-truth maps, and images tagged with it."""
    pixels, images = {}, {}
    for k in LABEL_KINDS:  # whole-array sums: one pass over (N, C + 2), not one per class
        h = store.class_histogram(k)[store.has_map(k), : store.num_classes + 1]
        pixels[k], images[k] = h.sum(axis=0).tolist(), (h > 0).sum(axis=0).tolist()
    tagged = store.tags.sum(axis=0).tolist()
    rows = []
    for c, name in enumerate(store.class_names):
        row: dict[str, Any] = {"index": c, "name": name}
        for k in LABEL_KINDS:
            row[f"{k}_pixels"] = int(pixels[k][c])
            row[f"{k}_images"] = int(images[k][c])
        row["tagged_images"] = int(tagged[c - 1]) if c > 0 else None
        rows.append(row)
    return rows


def proxy_sets(store: MaskStore) -> dict[str, dict[str, Any]]:
    """Per proxy set (``MaskStore.proxy_names`` order): samples with a map, pixels per class,
    the command that made it, when, and its config (None for the imported set)."""
    imports = [e for e in store.run_log() if str(e.get("command", "")).startswith("import")]
    sets: dict[str, dict[str, Any]] = {}
    for name in store.proxy_names():
        meta = store.map_meta(name)
        hist = store.class_histogram(name)
        if name == IMPORTED_PROXY:
            made = {"command": imports[0]["command"] if imports else "import",
                    "created": imports[0].get("finished") if imports else None, "config": None}
        else:
            made = {"command": meta.get("command"), "created": meta.get("created"), "config": meta.get("config")}
        sets[name] = {"samples": int(store.has_map(name).sum()),
                      "pixels_per_class": hist[:, : store.num_classes + 1].sum(axis=0).tolist(), **made}
    return sets


def store_summary(store: MaskStore) -> dict[str, Any]:
    """Everything ``salcurate info`` shows, as plain JSON-ready data."""
    split_counts = Counter(store.splits.tolist())
    return {
        "path": str(store.path),
        "schema_version": store.schema_version,
        "salcurate_version": store.attrs.get("salcurate_version"),
        "created": store.attrs.get("created"),
        "num_samples": len(store),
        "num_classes": store.num_classes,
        "splits": {str(s): int(split_counts[s]) for s in sorted(split_counts)},
        "maps": {k: int(store.has_map(k).sum())
                 for k in (*MAP_KINDS, *(n for n in store.map_names() if n not in MAP_KINDS))},
        "with_tags": int(store.has_tags.sum()),
        "strong": int(store.strong.sum()),
        "image_sizes": {
            "height": [int(store.heights.min()), int(store.heights.max())] if len(store) else None,
            "width": [int(store.widths.min()), int(store.widths.max())] if len(store) else None,
        },
        "classes": class_table(store),
        "proxies": proxy_sets(store),
        "scores": {n: {**column_summary(store.score(n)), "config": store.score_meta(n).get("config")}
                   for n in store.score_names()},
        "selections": {n: {"kept": int((store.selection(n) > 0).sum()), "total": len(store),
                           "rule": store.selection_meta(n).get("rule")} for n in store.selection_names()},
        "log": store.run_log(),
    }


def run(config: InfoConfig, *, events: Events | None = None) -> InfoResult:
    """Summarize the store ``config.store`` (reads only)."""
    with MaskStore(config.store) as store:
        return InfoResult(**store_summary(store))
