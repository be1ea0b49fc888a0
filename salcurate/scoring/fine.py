"""``score-fine``: the network-based fine mask score (SAL Section III-B2).

A small network (Table I, ``salcurate.nn.scorer``), trained by ``train-scorer``
(``salcurate.training.scorer``) to predict a mask's AC from the image and the mask, gives P for
every proxy; the fine score is SF = P x CD (Eq. 7, :func:`salcurate.scoring.metrics.fine_score`).
:func:`run` is the ``score-fine`` command; like ``score-coarse`` it resumes a killed run, and
under ``torchrun`` every rank (on ``cuda:LOCAL_RANK``) scores its share of the samples.  For a
proxy set other than the imported one the columns carry its name (``p:cam``, ``sf:cam``).

Not in the paper (issue 12): a scorer that ``train-scorer`` fitted to a score column of the proxies
themselves (``target``, e.g. the combined score q) and that may see the proxy's label map
(``scorer_input`` ``labels``: RGB + one channel per class 0..C) records both in its checkpoint;
:class:`ScorerSpec` reads them back, so the right input is built here, and such a scorer writes
its own columns, ``p_q`` and ``sf_q`` (mask input) or ``p_q_labels`` and ``sf_q_labels`` (label
input) for target ``q``, never the paper's P and SF.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from salcurate.config import Choice, setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.data.workarea import SHARD_TIMEOUT_S, config_hash, shard_work
from salcurate.distributed import DistInfo, session
from salcurate.errors import InputError, StoreError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.nn.device import Device, resolve_device
from salcurate.scoring.metrics import fine_score, foreground
from salcurate.scoring.synthesis import network_input, normalized_rgb, resize_pair

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TRAIN_COMMAND = "train-scorer"
SCORE_COMMAND = "score-fine"


def coarse_columns(st: store_mod.MaskStore, suffix: str, proxy: str) -> tuple[str, str, str, dict[str, Any]]:
    """The names of the AC, CD and reference columns of proxy set ``proxy`` with ``suffix``
    ("" or "@1a2b3c"), and the config that made them."""
    ac, cd, ref = (f"{store_mod.proxy_column(base, proxy)}{suffix}" for base in ("ac", "cd", "reference"))
    if ac not in st.score_names() or ref not in st.map_names():
        run = "`salcurate score-coarse`" + ("" if proxy == store_mod.IMPORTED_PROXY else f" for proxies {proxy!r}")
        raise StoreError(f"{st.path}: no coarse scores {ac!r} with reference masks {ref!r}; run {run} first")
    return ac, cd, ref, st.score_meta(ac).get("config") or {}


# ------------------------------------------------------------------------------------------
# What a scorer sees and learned from (the paper's, or a score column of the proxies)
# ------------------------------------------------------------------------------------------
#: ``train-scorer``'s target for the paper's training set (AC of synthesized masks).
PAPER_TARGET = "synthesized"


class ScorerInput(Choice):
    """The scorer's input besides RGB: the binary mask B (the paper's) or the proxy's label map, one-hot."""

    mask = "mask"
    labels = "labels"


def labels_input(image: np.ndarray, labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """A class-aware scorer's input: RGB and the label map, one channel per class.

    ``(S, S, 3)`` uint8 image and ``(S, S)`` uint8 labels (0..C, 255 ignore) → ``(3 + C + 1, S, S)``
    float32: ImageNet-normalized RGB as in :func:`salcurate.scoring.synthesis.network_input`, then
    channel 3 + c = 1 where the pixel has class c (0 = background), 0 elsewhere (an ignored pixel is 0
    in every class channel).  Not in the paper (issue 12): the paper's input is the binary mask.
    """
    if image.shape[:2] != labels.shape or image.ndim != 3 or labels.ndim != 2:
        raise InputError(f"labels_input expects an (S, S, 3) image and an (S, S) label map, got {image.shape} and "
                         f"{labels.shape}; resize both to the scorer's input size")
    onehot = (labels[None] == np.arange(num_classes + 1, dtype=labels.dtype)[:, None, None]).astype(np.float32)
    return np.concatenate([normalized_rgb(image), onehot], axis=0)


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """A label map resized to ``(size, size)`` by nearest neighbour (the sampling of ``resize_pair``'s masks)."""
    from PIL import Image

    return np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((size, size), Image.NEAREST))


@dataclasses.dataclass(frozen=True)
class ScorerSpec:
    """What a scorer checkpoint takes as input and what it learned to predict.

    ``input``: ``mask`` (RGB + B, 4 channels) or ``labels`` (RGB + C + 1 one-hot channels);
    ``target``: ``synthesized`` (the paper's AC of synthesized masks) or the score column it was
    fitted to (``q:cam``); ``num_classes``: C of the store it was trained on (``labels`` only).
    Checkpoints written before these settings existed are the paper's.
    """

    input: ScorerInput = ScorerInput.mask
    target: str = PAPER_TARGET
    num_classes: int | None = None

    @property
    def paper(self) -> bool:
        return self.input == ScorerInput.mask and self.target == PAPER_TARGET

    def in_channels(self) -> int:
        return 4 if self.input == ScorerInput.mask else 3 + int(self.num_classes or 0) + 1

    def to_extra(self) -> dict[str, Any]:
        """The keys ``train-scorer`` adds to the checkpoint's ``extra``."""
        return {"scorer_input": str(self.input), "target": self.target, "num_classes": self.num_classes}

    @classmethod
    def of_checkpoint(cls, info: dict[str, Any], path: Path, in_channels: int) -> ScorerSpec:
        extra = info.get("extra") or {}
        try:
            kind = ScorerInput(str(extra.get("scorer_input", "mask")))
        except ValueError:
            raise InputError(f"scorer checkpoint {path} has an unknown input {extra.get('scorer_input')!r}; upgrade "
                             "salcurate or retrain it with `salcurate train-scorer`", param="scorer") from None
        classes = extra.get("num_classes")
        spec = cls(kind, str(extra.get("target") or PAPER_TARGET), None if classes is None else int(classes))
        if spec.in_channels() != in_channels:
            raise InputError(f"scorer checkpoint {path} takes {in_channels} input channels, not the "
                             f"{spec.in_channels()} of its {kind} input; retrain it with `salcurate train-scorer`",
                             param="scorer")
        return spec

    def column_bases(self) -> tuple[str, str]:
        """The base names of its P and SF columns: ``p``/``sf`` for the paper's scorer, else
        ``p_T``/``sf_T`` for target column T (its base name), ``_labels`` added for label input."""
        if self.paper:
            return "p", "sf"
        base = self.target.partition("@")[0].partition(":")[0]
        tail = f"_{base}" + ("_labels" if self.input == ScorerInput.labels else "")
        return f"p{tail}", f"sf{tail}"

    def network_input(self, image: np.ndarray, proxy: np.ndarray, size: int) -> np.ndarray:
        """One proxy's input at ``size``: ``(H, W, 3)`` image and ``(H, W)`` label map → ``(in_channels, S, S)``."""
        if self.input == ScorerInput.mask:
            b, _ = foreground(proxy)
            img, (m,) = resize_pair(image, [b], size)
            return network_input(img, m)
        img, _ = resize_pair(image, [], size)
        return labels_input(img, resize_labels(proxy, size), num_classes=int(self.num_classes or 0))


# ------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------
def default_scorer_path() -> Path:
    """``models/scorer.pt`` here, else the demo scorer that ships in the repository's models/."""
    local = Path("models/scorer.pt")
    if local.exists():
        return local
    return Path(__file__).resolve().parents[2] / "models" / "scorer.pt"


@dataclasses.dataclass(frozen=True)
class ScoreFineConfig:
    """Settings of ``score-fine``; the scorer's file hash and input size are what the scores depend on."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    scorer: str | None = setting(None, "Scorer checkpoint (default models/scorer.pt).")
    batch_size: int = setting(32, "Images per forward pass.")
    device: Device = setting(Device.auto, "auto (CUDA when present), cpu or cuda.")
    workers: int = setting(2, "Data-loader processes.", min=0)
    coarse: str = setting("", "Suffix of the coarse columns whose CD and reference masks to use "
                          "('' for cd, '@1a2b3c' for cd@1a2b3c).", cli=False)
    overwrite: bool = setting(False, "Replace existing fine scores made with another scorer.")


class _FineItems(store_mod.StoreHandle):  # a map-style dataset for torch's DataLoader (no torch import at module level)
    def __init__(self, store_path: str, proxy: str, indices: np.ndarray, size: int, spec: ScorerSpec) -> None:
        self.store_path, self.proxy, self.indices, self.size, self.spec = store_path, proxy, indices, size, spec

    def __len__(self) -> int:
        return len(self.indices)


    def __getitem__(self, k: int) -> tuple[int, np.ndarray]:
        i = int(self.indices[k])
        return i, self.spec.network_input(self.store.image(i), self.store.map(self.proxy, i), self.size)


@dataclasses.dataclass(frozen=True)
class FineResult(Result):
    """What ``score-fine`` did: the column names it wrote, counts, the mean SF and the device."""

    columns: dict[str, str]
    computed: int
    resumed: int
    nothing_to_do: bool
    seconds: float
    mean_sf: float | None
    device: str


def run(config: ScoreFineConfig, *, events: Events | None = None) -> FineResult:
    """P for every sample with a proxy mask, and SF = P x CD (Eq. 7); resumable like score-coarse.

    With fine scores of this scorer complete in the store it does nothing; fine scores of another
    scorer stay, and the new ones get columns suffixed with a hash (or replace them with
    ``overwrite``).  Events: ``start(masks to score, already done)``, ``advance(n)`` per batch.
    Under ``torchrun`` each rank scores its share on its own device, rank 0 alone reports events
    and commits, and every rank returns the same result.
    """
    if config.batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {config.batch_size}", param="batch_size")
    if config.workers < 0:
        raise InputError(f"workers must be 0 (load in this process) or more, got {config.workers}", param="workers")
    with session(resolve_device(config.device), timeout_s=SHARD_TIMEOUT_S) as (info, device):
        return _score(config, device, info, (events or NO_EVENTS) if info.main else NO_EVENTS)


def _score(config: ScoreFineConfig, device: torch.device, info: DistInfo, events: Events) -> FineResult:
    import torch  # here: importing the module (for its config) does not load torch
    from torch.utils.data import DataLoader

    from salcurate.nn.scorer import load_checkpoint

    started = time.time()
    path = Path(config.store)
    scorer_path = Path(config.scorer) if config.scorer else default_scorer_path()
    with store_mod.MaskStore(path) as st:
        proxy = st.resolve_proxy(config.proxy)
        config = dataclasses.replace(config, proxy=proxy)
        model, scfg, ck_info = load_checkpoint(scorer_path)
        spec = ScorerSpec.of_checkpoint(ck_info, scorer_path, scfg.in_channels)
        if spec.input == ScorerInput.labels and spec.num_classes != st.num_classes:
            raise InputError(f"the scorer {scorer_path} was trained on label maps of {spec.num_classes} classes, this "
                             f"store has {st.num_classes}; train one on this store with `salcurate train-scorer "
                             "--scorer-input labels`", param="scorer")
        digest = hashlib.sha256(scorer_path.read_bytes()).hexdigest()[:12]
        scoring = {"scorer": str(scorer_path), "scorer_sha256": digest, "input_size": scfg.input_size,
                   "coarse": config.coarse}
        if proxy != store_mod.IMPORTED_PROXY:  # the imported set's columns keep their configs
            scoring["proxy"] = proxy
        if not spec.paper:  # the paper's scorer keeps its config (and its columns) as before
            scoring.update({"scorer_input": str(spec.input), "target": spec.target})
        p_base, sf_base = spec.column_bases()
        _, cd_name, _, _ = coarse_columns(st, config.coarse, proxy)
        cd = st.score(cd_name)
        has_proxy = st.has_map(proxy)
        ids = st.ids
        stamp = st.proxy_stamp(proxy)
        suffix = ""
        existing = st.score_names()
        sf_name = store_mod.proxy_column(sf_base, proxy)
        if sf_name in existing and not config.overwrite:
            meta = {k: v for k, v in (st.score_meta(sf_name).get("config") or {}).items() if k != "scorer"}
            if meta != {k: v for k, v in scoring.items() if k != "scorer"}:
                suffix = f"@{config_hash(scoring)}"
        names = {c: f"{store_mod.proxy_column(base, proxy)}{suffix}"
                 for c, base in (("p", p_base), ("sf", sf_base))}
        if names["sf"] in existing and not config.overwrite:
            done_before = ~np.isnan(st.score(names["sf"])[has_proxy])
            if done_before.all():
                return FineResult(names, 0, 0, True, time.time() - started, None, device.type)
    model.to(device).eval()
    amp = device.type == "cuda"
    if amp:
        model.to(memory_format=torch.channels_last)
    with shard_work(path, SCORE_COMMAND, {**scoring, "columns": names, "proxy_stamp": stamp}, ids=ids,
                    columns=("p",), needed=has_proxy, info=info, events=events) as work:
        loader = DataLoader(_FineItems(str(path), proxy, work.mine, scfg.input_size, spec),
                            batch_size=config.batch_size, num_workers=config.workers, pin_memory=amp)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for idx, x in loader:
                x = x.to(device, non_blocking=True)
                if amp:
                    x = x.contiguous(memory_format=torch.channels_last)
                p = model.predict(x).float().cpu().numpy()
                work.area.write(idx.numpy(), p[:, None])
                work.advance(len(idx))
        work.gather()
        p_col = work.area.values()["p"]
        sf = fine_score(p_col, np.where(has_proxy, cd, np.nan)).astype(np.float32)
        if work.main:
            with store_mod.transaction(path, command=SCORE_COMMAND, config={**to_dict(config), **scoring,
                                       "device": device.type, "columns": names}, started=started) as tx:
                tx.put_scores({names["p"]: p_col, names["sf"]: sf}, config=scoring, command=SCORE_COMMAND,
                              overwrite=True)
        work.finish()
    return FineResult(names, int(len(work.todo)), work.resumed, False, time.time() - started,
                      float(np.nanmean(sf)) if has_proxy.any() else None, device.type)
