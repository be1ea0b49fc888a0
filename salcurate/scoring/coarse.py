"""``score-coarse``: the saliency-guided coarse score SC of every proxy mask in a store.

For each sample with a proxy annotation G (SAL Section III-B1):

1. the reference mask H from its saliency map (``salcurate.scoring.reference``): imported
   maps in one pass, or the built-in saliency method with iterative erasing;
2. F1(H, B) and the objectness F(B) from the image's edges; AC = F1 x F^b (Eq. 3);
3. CD, the share of B's pixels whose class is among the image tags (Eq. 4);
4. SC = AC x CD (Eq. 5).

:func:`run` (settings: :class:`CoarseConfig`) stores them as score columns ``f1``, ``f``, ``ac``,
``cd``, ``sc`` and map kind ``reference`` (H); for a proxy set other than the imported one they
carry its name (``sc:cam``, ``reference:cam``, see ``salcurate.data.store.proxy_column``).
Work runs in worker processes that read the store themselves; results go to a work area
(``salcurate.data.workarea``) so that a killed run resumes, and reach the store in one transaction.
Under ``torchrun`` every rank scores its share of the samples (``salcurate.data.workarea.shard_work``)
and rank 0 commits them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.config import Choice, choice, run_only_names, setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.data.workarea import SHARD_TIMEOUT_S, config_hash, shard_work
from salcurate.distributed import DistInfo, session
from salcurate.errors import InputError, StoreError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.paper import OBJECTNESS_B
from salcurate.scoring import metrics
from salcurate.scoring.metrics import AcFormula
from salcurate.scoring.reference import Threshold

log = logging.getLogger(__name__)

COMMAND = "score-coarse"
#: Columns the workers compute per sample; AC, CD and SC follow from them and the store.
WORKER_COLUMNS = ("f1", "f")
COLUMNS = ("f1", "f", "ac", "cd", "sc")
REFERENCE = "reference"


class Saliency(Choice):
    """Where reference masks come from: ``auto`` uses the store's maps when every sample has
    one, else the built-in saliency method."""

    auto = "auto"
    store = "store"
    builtin = "builtin"


@dataclasses.dataclass(frozen=True)
class CoarseConfig:
    """Settings of ``score-coarse``.  :meth:`scoring` is what the results depend on and what is
    saved with them; the store and the ``run_only`` settings only say how to run."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    workers: int = setting(0, "Decoding threads (0 = all cores).", min=0, run_only=True)
    crf: bool = setting(False, "Refine reference masks with a dense CRF (needs the crf extra).", flag="--crf/--no-crf")
    b: float = setting(OBJECTNESS_B, "Objectness weight b in AC = F1 x F^b (Eq. 3); 0 switches it off.")
    ac_formula: AcFormula = setting(AcFormula.standard,
                                    "standard (P = |H∩B|/|B|, R = |H∩B|/|H|) or paper (Eq. 3 as printed).")
    saliency: Saliency = setting(Saliency.auto, "Reference masks from: store (imported maps), builtin, or auto.")
    # otsu beat 2 x mean on the demo data: docs/quality.md
    threshold: Threshold = setting(Threshold.otsu, "Saliency binarization: otsu or adaptive (2 x mean).")
    max_objects: int = setting(3, "Built-in saliency: objects found by iterative erasing.", min=1)
    overwrite: bool = setting(False, "Replace existing coarse scores made with another config.", run_only=True)
    # small tasks scatter HDF5 chunk reads across workers
    batch_size: int = setting(64, "Samples per worker task.", cli=False, run_only=True)

    def scoring(self) -> dict[str, Any]:
        """The settings the scores depend on, as plain values (saved with the columns; their hash
        names the columns of a second config)."""
        d = to_dict(self)
        for k in ("store", *run_only_names(CoarseConfig)):
            d.pop(k)
        if d["proxy"] in (None, store_mod.IMPORTED_PROXY):  # the imported set's columns keep their configs
            d.pop("proxy")
        if d["saliency"] != Saliency.builtin:
            d.pop("max_objects")
        return d


@dataclasses.dataclass(frozen=True)
class CoarseResult(Result):
    """What ``score-coarse`` did: the column names it wrote, counts and the mean SC."""

    columns: dict[str, str]  # role -> column name in the store (e.g. "sc" -> "sc@1a2b3c")
    reference: str
    scoring: dict[str, Any]
    computed: int
    resumed: int
    skipped_no_proxy: int
    nothing_to_do: bool
    seconds: float
    mean_sc: float | None


_CHOICES: tuple[tuple[str, type[Choice]], ...] = (("saliency", Saliency), ("ac_formula", AcFormula),
                                                  ("threshold", Threshold))


def check_config(config: CoarseConfig) -> CoarseConfig:
    """The config with its choices as enums; raises InputError for a bad setting."""
    resolved = {name: choice(cls, getattr(config, name), name) for name, cls in _CHOICES}
    if not (config.b >= 0 and np.isfinite(config.b)):
        raise InputError(f"b must be a number >= 0 (the objectness weight; 0 switches it off), got {config.b}",
                         param="b")
    if config.max_objects < 1:
        raise InputError(f"max_objects must be at least 1, got {config.max_objects}", param="max_objects")
    if config.batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {config.batch_size}", param="batch_size")
    if config.workers < 0:
        raise InputError(f"workers must be 0 (all cores) or more, got {config.workers}", param="workers")
    if config.crf:
        from salcurate.scoring.reference import crf_available

        if not crf_available():
            raise InputError("crf needs pydensecrf, which is not installed; install the extra: pip install "
                             "'salcurate[crf]' (or pip install pydensecrf2), or score without crf "
                             "(`salcurate score-coarse --no-crf`)", param="crf")
    return dataclasses.replace(config, **resolved)


def resolve_config(config: CoarseConfig, store: store_mod.MaskStore) -> CoarseConfig:
    """Check the config against the store; resolve the proxy set and ``saliency="auto"``."""
    config = check_config(config)
    proxy, has_proxy = store.resolve_proxy_masks(config.proxy)
    no_tags = has_proxy & ~store.has_tags
    if no_tags.any():
        first = store.ids[int(np.flatnonzero(no_tags)[0])]
        raise StoreError(
            f"{store.path}: {int(no_tags.sum())} samples with a proxy mask have no image tags (first: {first!r}); "
            "CD needs them: re-import with `salcurate import ... --tags FILE` "
            "(or `salcurate import ... --tags-dir DIR`, `salcurate import ... --tags-from-gt`)"
        )
    has_sal = store.has_map("saliency") | ~has_proxy
    builtin_hint = "`salcurate score-coarse --saliency builtin`"
    saliency = config.saliency
    if saliency == Saliency.auto:
        if has_sal.all():
            saliency = Saliency.store
        elif not store.has_map("saliency").any():
            saliency = Saliency.builtin
        else:
            raise StoreError(
                f"{store.path}: {int((~has_sal).sum())} samples have no saliency map; import them "
                f"(`salcurate import ... --saliency DIR`), or pass saliency='builtin' to use the built-in "
                f"saliency method for all ({builtin_hint})"
            )
    elif saliency == Saliency.store and not has_sal.all():
        first = store.ids[int(np.flatnonzero(~has_sal)[0])]
        raise StoreError(
            f"{store.path}: sample {first!r} has no saliency map ({int((~has_sal).sum())} such samples) but "
            f"saliency='store' was asked for; import the maps (`salcurate import ... --saliency DIR`) or pass "
            f"saliency='builtin' ({builtin_hint})"
        )
    return dataclasses.replace(config, saliency=saliency, proxy=proxy)


# ----------------------------------------------------------------------------------------
# One sample (pure given its arrays)
# ----------------------------------------------------------------------------------------
def needs_rgb(config: CoarseConfig) -> bool:
    """Whether reference masks need the RGB image (CRF or built-in saliency)."""
    return config.crf or config.saliency == "builtin"


def score_arrays(image: np.ndarray | None, edges: np.ndarray, proxy: np.ndarray, saliency: np.ndarray | None,
                 config: CoarseConfig) -> tuple[np.ndarray, np.ndarray]:
    """F1(H, B) and F(B) for one sample, and its reference mask H.

    image: ``(H, W, 3)`` uint8, or None when :func:`needs_rgb` is false; edges: ``(H, W)``
    float32 from ``metrics.edge_strength``; proxy: ``(H, W)`` uint8; saliency: ``(H, W)``
    uint8, or None for the built-in saliency → ``(values (2,) float32 [f1, f], H (H, W) bool)``.
    """
    from salcurate.scoring import reference

    if saliency is None:
        h = reference.builtin_reference(image, crf=config.crf, threshold=config.threshold,
                                        max_objects=config.max_objects)
    elif config.crf:
        h = reference.reference_mask(image, saliency, crf=True, threshold=config.threshold)
    else:
        h = reference.threshold_mask(saliency, threshold=config.threshold)
    b, valid = metrics.foreground(proxy)
    f1 = metrics.f_measure(h, b, valid=valid, formula=config.ac_formula)
    f = metrics.objectness(edges, b)
    return np.array([f1, f], np.float32), h


# ----------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(path: str, config: CoarseConfig) -> None:
    _WORKER["store"] = store_mod.MaskStore(path)
    _WORKER["config"] = config


def _score_indices(indices: Sequence[int]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    from salcurate.imageio import decode_grey_half, decode_image

    st: store_mod.MaskStore = _WORKER["store"]
    config: CoarseConfig = _WORKER["config"]
    out = []
    for i in indices:
        data = st.image_bytes(i)
        shape = (int(st.heights[i]), int(st.widths[i]))
        edges = metrics.edge_strength(decode_grey_half(data), shape)
        # Pillow, not torchvision: the same pixels, and a worker need not load torch (~700 MB)
        image = decode_image(data, backend="pillow") if needs_rgb(config) else None
        sal = st.map("saliency", i) if config.saliency == "store" else None
        values, h = score_arrays(image, edges, st.map(config.proxy, i), sal, config)
        out.append((i, values, np.packbits(h.reshape(-1))))
    return out


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Worker processes started inside get one BLAS/OpenMP thread each (one process per core)."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(path: Path, config: CoarseConfig, todo: np.ndarray, workers: int,
         on_result: Callable[[list[tuple[int, np.ndarray, np.ndarray]]], None]) -> None:
    if len(todo) == 0:
        return
    chunks = [todo[k : k + config.batch_size].tolist() for k in range(0, len(todo), config.batch_size)]
    if workers > 1:  # interleave contiguous shards: worker j tends to read shard j in file order
        shards = np.array_split(np.arange(len(chunks)), workers)
        order = [int(s[k]) for k in range(max(len(s) for s in shards)) for s in shards if k < len(s)]
        chunks = [chunks[k] for k in order]
    if workers <= 1:
        _init_worker(str(path), config)
        try:
            for chunk in chunks:
                on_result(_score_indices(chunk))
        finally:
            _WORKER.pop("store").close()
        return
    ctx = multiprocessing.get_context("spawn")  # no inherited HDF5 handles or threads
    with _single_threaded_children(), ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(str(path), config)) as pool:
        pending = set()
        it = iter(chunks)
        for chunk in it:
            pending.add(pool.submit(_score_indices, chunk))
            if len(pending) >= 3 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(fut.result())
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(_score_indices, nxt))


# ----------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------
def _names(store: store_mod.MaskStore, scoring: dict[str, Any], overwrite: bool, proxy: str) -> tuple[str, bool]:
    """The column suffix to use, and whether complete results with this config exist."""
    existing = store.score_names()
    has_proxy = store.has_map(proxy)
    sc = store_mod.proxy_column("sc", proxy)

    def matches(suffix: str) -> bool:
        return f"{sc}{suffix}" in existing and store.score_meta(f"{sc}{suffix}").get("config") == scoring

    def complete(suffix: str) -> bool:
        return bool(np.all(~np.isnan(store.score(f"{sc}{suffix}")[has_proxy])))

    if sc not in existing or overwrite:
        return "", False
    if matches(""):
        return "", complete("")
    suffix = f"@{config_hash(scoring)}"
    if matches(suffix):
        return suffix, complete(suffix)
    return suffix, False


def run(config: CoarseConfig, *, events: Events | None = None) -> CoarseResult:
    """Compute and store H, F1, F, AC, CD and SC for every sample with a proxy mask.

    Resumes a killed run with the same config; with the same config complete in the store it
    does nothing; with another config it writes new columns suffixed with the config's hash, or
    replaces the plain ones with ``overwrite``.  Events: ``start(masks to score, already done)``,
    ``advance(n)`` after each batch.  Under ``torchrun`` (gloo) each rank scores its share, rank 0
    alone reports events and commits, and every rank returns the same result.
    """
    with session("cpu", timeout_s=SHARD_TIMEOUT_S) as (info, _):
        return _score(config, info, (events or NO_EVENTS) if info.main else NO_EVENTS)


def _score(config: CoarseConfig, info: DistInfo, events: Events) -> CoarseResult:
    started = time.time()
    path = Path(config.store)
    with store_mod.MaskStore(path) as st:
        config = resolve_config(config, st)
        proxy = config.proxy
        scoring = config.scoring()
        suffix, complete = _names(st, scoring, config.overwrite, proxy)
        names = {c: f"{store_mod.proxy_column(c, proxy)}{suffix}" for c in COLUMNS}
        ref_name = f"{store_mod.proxy_column(REFERENCE, proxy)}{suffix}"
        has_proxy = st.has_map(proxy)
        ids = st.ids
        stamp = st.proxy_stamp(proxy)
        sizes = np.where(has_proxy, st.heights * st.widths, 0)
        cd = metrics.class_distribution(st.class_histogram(proxy), st.tags)
    if complete:
        log.info("%s with this config is complete in %s; nothing to do", names["sc"], path)
        return CoarseResult(names, ref_name, scoring, 0, 0, int((~has_proxy).sum()), True,
                            time.time() - started, None)

    # the ranks on one machine share its cores
    workers = config.workers if config.workers > 0 else max(1, (os.cpu_count() or 1) // info.local_world)
    with shard_work(path, COMMAND, {**scoring, "columns": names, "proxy_stamp": stamp}, ids=ids,
                    columns=WORKER_COLUMNS, needed=has_proxy, info=info, events=events, mask_sizes=sizes) as work:
        area = work.area

        def on_result(results: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
            order = sorted(results, key=lambda r: r[0])
            idx = [r[0] for r in order]
            masks = [np.unpackbits(r[2], count=int(sizes[r[0]])).view(bool) for r in order]
            area.write(idx, np.stack([r[1] for r in order]), masks)
            work.advance(len(idx))

        _run(path, config, work.mine, workers, on_result)
        work.gather()

        values = area.values()
        f1, f = values["f1"], values["f"]
        ac = metrics.boundary_accuracy(f1, f, b=config.b).astype(np.float32)
        cd_col = np.where(has_proxy, cd, np.nan).astype(np.float32)
        sc = metrics.coarse_score(ac, cd_col).astype(np.float32)
        columns = {names["f1"]: f1, names["f"]: f, names["ac"]: ac, names["cd"]: cd_col, names["sc"]: sc}
        if work.main:
            with store_mod.transaction(path, command=COMMAND, config={**to_dict(config), "columns": names},
                                       started=started) as tx:
                tx.put_scores(columns, config=scoring, command=COMMAND, overwrite=True)
                tx.put_bit_maps(ref_name, (area.packed_mask(i) for i in range(len(ids))), config=scoring,
                                command=COMMAND, overwrite=True)
        work.finish()
    log.info("scored %d masks in %s (%d by this process)", len(work.todo), path, len(work.mine))
    return CoarseResult(names, ref_name, scoring, int(len(work.todo)), work.resumed, int((~has_proxy).sum()), False,
                        time.time() - started, float(np.nanmean(sc)) if has_proxy.any() else None)
