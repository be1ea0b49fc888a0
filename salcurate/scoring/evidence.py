"""``score-evidence``: class evidence and tag confidence from the tag classifier, and the saliency map's reliability.

CD (Eq. 4) is 1 on proxies made from CAMs and AC only sees the foreground, so no coarse score sees
the dominant fault of such proxies: a region given the wrong one of the image's (look-alike,
co-occurring) tagged classes.  The tag classifier that made the proxies does see it: its CAM of
class c should lie inside c's region, and the region should hold c's evidence rather than another
tagged class's.  For each sample with a proxy (every split), :func:`run` (settings:
:class:`EvidenceConfig`) computes

* the CAMs as the proxy set's ``pseudo-label`` run made them (its scales, flips and
  ``cam_max_side``; one scale with flips when no config says), resized (bilinear) to the proxy's
  size and normalized per tagged class by its maximum (IRN, as ``pseudo-label`` does);
* ``ce`` (class evidence), ``ce_in`` and ``ce_pure`` from the shares inside_c and purity_c of
  every tagged class (formulas and why in ``salcurate.scoring.evidence_math``);
* ``tagp`` and ``tagx``, the classifier's image-level confidence in the tags and in the most
  likely untagged class (the image at the classifier's training size, as for its held-out mAP);
* ``rc``, reference contrast: Otsu's separability of the saliency map (NaN without one);
* ``hr``, reference reliability: the IoU of the reference H (the saliency map binarized with Otsu,
  as ``score-coarse`` makes it by default) with the classifier's foreground (max over the tagged
  classes' normalized CAMs >= the background threshold the proxy set was made with; NaN without
  a saliency map).

The columns carry the proxy set's name (``ce:cam``, ``tagp:cam``, ...; see
``salcurate.data.store.proxy_column``); they depend on the classifier file (its SHA-256) and the
CAM settings, saved with them.  Which classifier: ``classifier="auto"`` reads the proxy set's
config, where ``pseudo-label`` recorded its ``classifier.pt``; or a path.  Per-sample results go
to a work area (``salcurate.data.workarea``) so that a killed run resumes, and reach the store in
one transaction; under ``torchrun`` every rank (on ``cuda:LOCAL_RANK``) scores its share of the
samples and rank 0 commits them all.  On CUDA the forward passes run in bf16 autocast, as
``pseudo-label``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from salcurate.config import choice, setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.data.workarea import SHARD_TIMEOUT_S, config_hash, shard_work
from salcurate.distributed import DistInfo, session
from salcurate.errors import InputError, StoreError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.nn.device import Device, resolve_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

COMMAND = "score-evidence"
#: The columns, in the work area's order.
COLUMNS = ("ce", "ce_in", "ce_pure", "tagp", "tagx", "rc", "hr")
#: The CAM settings when neither the proxy set nor the classifier file names them: one scale with
#: flips at the image's size, and ``pseudo-label``'s default training size for the tag probabilities.
DEFAULT_CAM = {"scales": [1.0], "flip": True, "cam_max_side": None, "input_size": 512}
#: ``hr``'s CAM threshold when the proxy set's config names none (``pseudo-label``'s default ``bg_threshold``).
DEFAULT_HR_THRESHOLD = 0.15
_MAKE = "`salcurate pseudo-label`"


@dataclasses.dataclass(frozen=True)
class EvidenceConfig:
    """Settings of ``score-evidence``; the classifier and the CAM settings it finds are what the
    scores depend on (``scoring`` in the result, saved with the columns)."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to score (default: the imported one, or the only one).")
    classifier: str = setting("auto", "Tag classifier (a classifier.pt), or auto: the one `salcurate pseudo-label` "
                                      "made the proxy set with.")
    device: Device = setting(Device.auto, "auto (CUDA when present), cpu or cuda.", run_only=True)
    workers: int = setting(2, "Data-loader processes.", min=0, run_only=True)
    overwrite: bool = setting(False, "Replace existing evidence scores made with another classifier or CAM "
                                     "settings.", run_only=True)


@dataclasses.dataclass(frozen=True)
class EvidenceResult(Result):
    """What ``score-evidence`` did: the columns it wrote, the classifier, counts and means."""

    columns: dict[str, str]  # role -> column name (e.g. "ce" -> "ce:cam")
    classifier: str
    scoring: dict[str, Any]
    computed: int
    resumed: int
    skipped_no_proxy: int
    nothing_to_do: bool
    seconds: float
    images_per_s: float | None
    device: str
    means: dict[str, float | None]  # role -> mean over the scored samples (None: no finite value)


# ------------------------------------------------------------------------------------------
# Checks and the classifier
# ------------------------------------------------------------------------------------------
def _pseudo_label_sets(st: store_mod.MaskStore) -> list[str]:
    return [p for p in st.proxy_names() if st.proxy_run_config(p) is not None]


def _classifier_path(config: EvidenceConfig, st: store_mod.MaskStore, proxy: str,
                     run_config: dict[str, Any] | None) -> Path:
    if config.classifier != "auto":
        path = Path(config.classifier)
        if not path.is_file():
            raise InputError(f"{path} not found; pass with classifier the classifier.pt of a `salcurate pseudo-label` "
                             "run (or leave classifier at auto)", param="classifier")
        return path
    if run_config is None or not (run_config.get("classifier") or run_config.get("output")):
        others = [p for p in _pseudo_label_sets(st) if p != proxy]
        hint = (f" (the store's sets made by it: {', '.join(others)}; choose one with "
                f"`salcurate score-evidence --proxy NAME`)") if others else ""
        raise StoreError(f"{st.path}: the set of proxies {proxy!r} was not made by {_MAKE}, which trains the "
                         f"tag-classifying CAM network the class evidence needs{hint}; make a set with {_MAKE} or "
                         "pass that network's classifier.pt with classifier", param="classifier")
    named = Path(str(run_config.get("classifier") or Path(str(run_config["output"])) / "classifier.pt"))
    path = st.locate(named)
    if not path.is_file():
        raise InputError(f"{named} (the classifier.pt {_MAKE} made the set of proxies {proxy!r} with) not found; "
                         "pass its new place with classifier, or make the set again with "
                         "`salcurate pseudo-label --overwrite`", param="classifier")
    return path


def _cam_settings(run_config: dict[str, Any] | None, info: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The CAM settings (scales, flip, cam_max_side, input_size, hr_threshold) and where they came
    from: the proxy set's run, else the classifier file's training config, else :data:`DEFAULT_CAM`."""
    train = info.get("train_config") if isinstance(info.get("train_config"), dict) else None
    hr = float((run_config or {}).get("bg_threshold") or DEFAULT_HR_THRESHOLD)
    for source, cfg in (("proxy set", run_config), ("classifier", train)):
        if cfg is not None and "scales" in cfg:
            out = {k: cfg.get(k, v) for k, v in DEFAULT_CAM.items()}
            if train is not None and "input_size" in train:  # the size the classifier was trained at
                out["input_size"] = train["input_size"]
            out["scales"] = [float(s) for s in out["scales"]]
            return {**out, "hr_threshold": hr}, source
    return {**DEFAULT_CAM, "hr_threshold": hr}, "default"


def _check_classes(path: Path, names: list[str], st: store_mod.MaskStore) -> None:
    store_names = list(st.class_names)
    if names == store_names:
        return
    if len(names) != len(store_names):
        what = f"{len(names) - 1} foreground classes, the store {len(store_names) - 1}"
    else:
        k = next(k for k, (a, b) in enumerate(zip(names, store_names)) if a != b)
        what = f"class {k} is {names[k]!r} there and {store_names[k]!r} in the store"
    raise InputError(f"{path}: its classes do not match the store's ({what}); pass with classifier the "
                     f"classifier.pt trained on this store (made by {_MAKE})", param="classifier")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _check_store(st: store_mod.MaskStore, proxy: str) -> np.ndarray:
    """``(N,)`` which samples have a proxy; raises for an empty set or proxies without tags."""
    has_proxy = st.has_map(proxy)
    if not has_proxy.any():
        raise StoreError(f"{st.path}: the set of proxies {proxy!r} holds no masks; make it again with {_MAKE}")
    no_tags = has_proxy & ~st.has_tags
    if no_tags.any():
        first = st.ids[int(np.flatnonzero(no_tags)[0])]
        raise StoreError(f"{st.path}: {int(no_tags.sum())} samples with a proxy mask have no image tags (first: "
                         f"{first!r}); the class evidence needs them: re-import with `salcurate import ... --tags "
                         "FILE` (or `salcurate import ... --tags-from-gt`)")
    return has_proxy


# ------------------------------------------------------------------------------------------
# One image
# ------------------------------------------------------------------------------------------
def image_scores(model: torch.nn.Module, image: np.ndarray, labels: np.ndarray, tags: np.ndarray,
                 saliency: np.ndarray | None, *, scales: tuple[float, ...] = (1.0,), flip: bool = True,
                 cam_max_side: int | None = None, input_size: int = 512, hr_threshold: float = DEFAULT_HR_THRESHOLD,
                 amp: bool = False) -> np.ndarray:
    """The seven scores of one sample, in :data:`COLUMNS`'s order.

    image: ``(H, W, 3)`` uint8; labels: ``(H, W)`` uint8 proxy (0 background, 1..C, 255
    ignore); tags: ``(C,)`` bool; saliency: ``(H, W)`` uint8 or None -> ``(7,)`` float32
    ``[ce, ce_in, ce_pure, tagp, tagx, rc, hr]``.  ``model``: a tag classifier in eval mode on its
    device; ``hr_threshold``: the CAM threshold of ``hr``'s foreground; ``amp``: bf16 autocast of
    its forward passes.
    """
    import torch
    import torch.nn.functional as F

    from salcurate.nn.cam import multiscale_cams, normalize_cams, resize_longer
    from salcurate.nn.classifier import tag_probabilities
    from salcurate.nn.salnet import preprocess
    from salcurate.scoring.evidence_math import (
        class_evidence,
        evidence_score,
        otsu_separability,
        reference_agreement,
        tag_confidence,
    )
    from salcurate.scoring.reference import threshold_mask

    h, w = image.shape[:2]
    if labels.shape != (h, w) or (saliency is not None and saliency.shape != (h, w)):
        raise InputError(f"image_scores expects the proxy and the saliency map at the image's size {(h, w)}, got "
                         f"{labels.shape} and {None if saliency is None else saliency.shape}; pass the store's maps",
                         param=("labels", "saliency"))
    tags = np.asarray(tags, dtype=bool)
    tagp, tagx = tag_confidence(tag_probabilities(model, image, side=int(input_size), amp=amp), tags)
    ce = ce_in = ce_pure = hr = math.nan
    keep = np.flatnonzero(tags)
    if len(keep):
        device = next(model.parameters()).device
        x = preprocess(image)
        if cam_max_side is not None and max(h, w) > cam_max_side:
            x = resize_longer(x, int(cam_max_side))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            cams = multiscale_cams(model, x.to(device), scales=scales, flip=flip)
        cams = cams[torch.as_tensor(keep, device=cams.device)]  # the tagged classes only
        if tuple(cams.shape[1:]) != (h, w):
            cams = F.interpolate(cams[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        cams = normalize_cams(cams, np.ones(len(keep), bool))  # per class, at the proxy's resolution
        full = cams.new_zeros((len(tags), h, w))  # untagged channels: not read
        full[torch.as_tensor(keep, device=cams.device)] = cams
        inside, purity = class_evidence(full, torch.from_numpy(np.ascontiguousarray(labels)), tags)
        ce, ce_in, ce_pure = evidence_score(inside, purity)
        if saliency is not None:  # H as score-coarse makes it by default (Otsu, no CRF)
            hr = reference_agreement(full, tags, threshold_mask(saliency, threshold="otsu"),
                                     threshold=float(hr_threshold))
    rc = otsu_separability(saliency) if saliency is not None else math.nan
    return np.array([ce, ce_in, ce_pure, tagp, tagx, rc, hr], np.float32)


class _Items(store_mod.StoreHandle):
    """``k -> (store index, image, proxy, saliency or an empty array)`` for a torch DataLoader."""

    def __init__(self, store_path: str, proxy: str, indices: np.ndarray, saliency: bool) -> None:
        self.store_path, self.proxy, self.indices, self.saliency = store_path, proxy, indices, saliency

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        i = int(self.indices[k])
        st = self.store
        sal = st.map("saliency", i) if self.saliency else None
        return (i, st.image(i), st.map(self.proxy, i),
                np.zeros((0, 0), np.uint8) if sal is None else sal)


def _as_is(item: Any) -> Any:
    """The DataLoader's collate function: numpy arrays stay numpy arrays."""
    return item


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------
def _names(st: store_mod.MaskStore, scoring: dict[str, Any], overwrite: bool, proxy: str,
           has_proxy: np.ndarray) -> tuple[dict[str, str], bool]:
    """The column names to write, and whether complete results with this config are there."""
    def same(meta: dict[str, Any]) -> bool:  # the classifier's file may have moved: its digest says
        # columns made before hr existed have no hr_threshold: the same for the others (hr is then missing)
        skip = {"classifier"} | ({"hr_threshold"} if "hr_threshold" not in meta else set())
        return {k: v for k, v in meta.items() if k not in skip} == {k: v for k, v in scoring.items() if k not in skip}

    existing = st.score_names()
    key = store_mod.proxy_column("tagx", proxy)  # finite for every scored sample
    suffix = ""
    if key in existing and not overwrite and not same(st.score_meta(key).get("config") or {}):
        suffix = f"@{config_hash({k: v for k, v in scoring.items() if k != 'classifier'})}"
    names = {c: store_mod.proxy_column(f"{c}{suffix}", proxy) for c in COLUMNS}
    complete = (not overwrite and names["tagx"] in existing and names["hr"] in existing
                and same(st.score_meta(names["hr"]).get("config") or {})
                and bool(np.all(~np.isnan(st.score(names["tagx"])[has_proxy]))))
    return names, complete


def _means(columns: dict[str, np.ndarray], names: dict[str, str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for role, name in names.items():
        v = columns[name][np.isfinite(columns[name])]
        out[role] = float(v.mean()) if len(v) else None
    return out


def run(config: EvidenceConfig, *, events: Events | None = None) -> EvidenceResult:
    """Compute and store ce, ce_in, ce_pure, tagp, tagx, rc and hr for every sample with a proxy (module docstring).

    Resumes a killed run with the same classifier and CAM settings; with those complete in the
    store it does nothing; with others it writes new columns suffixed with their hash, or replaces
    the plain ones with ``overwrite``.  Events: a note on the classifier, ``start(samples to score,
    already done)``, ``advance(1)`` per image.  Under ``torchrun`` each rank scores its share on
    its own device, rank 0 alone reports events and commits, and every rank returns the same result.
    """
    config = dataclasses.replace(config, device=choice(Device, config.device, "device"))
    if config.workers < 0:
        raise InputError(f"workers must be 0 (load in this process) or more, got {config.workers}", param="workers")
    with session(resolve_device(config.device), timeout_s=SHARD_TIMEOUT_S) as (dist_info, device):
        return _score(config, device, dist_info, (events or NO_EVENTS) if dist_info.main else NO_EVENTS)


def _score(config: EvidenceConfig, device: torch.device, dist_info: DistInfo, events: Events) -> EvidenceResult:
    import torch
    from torch.utils.data import DataLoader

    from salcurate.nn.classifier import load_classifier, read_classifier_file

    started = time.time()
    path = Path(config.store)
    with store_mod.MaskStore(path) as st:
        proxy = st.resolve_proxy(config.proxy)
        run_config = st.proxy_run_config(proxy)
        classifier = _classifier_path(config, st, proxy, run_config)
        has_proxy = _check_store(st, proxy)
        payload = read_classifier_file(classifier)
        _check_classes(classifier, list(payload.get("class_names") or []), st)
        model, info = load_classifier(classifier, map_location=device, payload=payload)
        cam, source = _cam_settings(run_config, info)
        scoring: dict[str, Any] = {"classifier": str(classifier), "classifier_sha256": _file_sha256(classifier),
                                   **cam, "cam_settings_from": source}
        if proxy != store_mod.IMPORTED_PROXY:
            scoring["proxy"] = proxy
        names, complete = _names(st, scoring, config.overwrite, proxy, has_proxy)
        ids = st.ids
        stamp = st.proxy_stamp(proxy)
        tags = st.tags.astype(bool)
        saliency = "saliency" in st.map_names()
    config = dataclasses.replace(config, proxy=proxy)
    if complete:
        log.info("%s with this classifier is complete in %s; nothing to do", names["ce"], path)
        return EvidenceResult(names, str(classifier), scoring, 0, 0, int((~has_proxy).sum()), True,
                              time.time() - started, None, device.type, {})

    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
    events.note(f"class evidence of the set of proxies {proxy!r} from the tag classifier {classifier} on "
                f"{device.type}{' (bf16)' if amp else ''}; CAMs at scales {cam['scales']}"
                f"{' with flips' if cam['flip'] else ''} (settings from the {source})")
    settings = dict(scales=tuple(cam["scales"]), flip=bool(cam["flip"]), cam_max_side=cam["cam_max_side"],
                    input_size=int(cam["input_size"]),
                    hr_threshold=float(cam.get("hr_threshold", DEFAULT_HR_THRESHOLD)), amp=amp)
    with shard_work(path, COMMAND, {**scoring, "columns": names, "proxy_stamp": stamp}, ids=ids,
                    columns=COLUMNS, needed=has_proxy, info=dist_info, events=events) as work:
        loader = DataLoader(_Items(str(path), proxy, work.mine, saliency), batch_size=None,
                            num_workers=min(config.workers, len(work.mine)), collate_fn=_as_is)
        work_started = time.time()
        for i, image, labels, sal in loader:
            values = image_scores(model, image, labels, tags[i], sal if sal.size else None,
                                  **settings)  # type: ignore[arg-type]
            work.area.write([i], values[None])
            work.advance(1)
        work.gather()
        seconds = time.time() - work_started  # every rank's images in the time of the slowest
        values = work.area.values()
        columns = {names[c]: np.where(has_proxy, values[c], np.nan).astype(np.float32) for c in COLUMNS}
        if work.main:
            with store_mod.transaction(path, command=COMMAND, config={**to_dict(config), **scoring,
                                       "device": device.type, "amp": amp, "columns": names}, started=started) as tx:
                tx.put_scores(columns, config=scoring, command=COMMAND, overwrite=True)
        work.finish()
    todo = len(work.todo)
    log.info("scored %d masks in %s (%d by this process)", todo, path, len(work.mine))
    return EvidenceResult(names, str(classifier), scoring, todo, work.resumed, int((~has_proxy).sum()), False,
                          time.time() - started, todo / seconds if todo and seconds > 0 else None,
                          device.type, _means(columns, names))
