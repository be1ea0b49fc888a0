"""What SAL-Net retraining reads from the store: which images, with which labels and weights.

* :func:`plan_training` turns a store, a selection and the sampling rule into a
  :class:`TrainingPlan` (pure bookkeeping over the store's per-sample arrays).
* :class:`RetrainSet` reads one sample and augments it as DeepLab-v2 does: random scale,
  padding (image with the mean, labels with 255), random crop, random flip.  The augmentation of
  a draw depends only on ``(seed, position in the sample stream)``, never on the worker that
  made it, so a resumed run sees the same crops as an uninterrupted one.
* :class:`StreamSampler` is the endless, resumable, rank-sharded order of draws.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from salcurate.config import Choice
from salcurate.data import store as store_mod
from salcurate.errors import InputError
from salcurate.nn.salnet import preprocess
from salcurate.training.losses import IGNORE_INDEX

log = logging.getLogger(__name__)


class Sample(Choice):
    """Which images a retraining draws: ``selected`` (only kept ones, the authors' code) or ``all``
    (every image with a proxy, L_sel weighted by w, the literal Eq. 13)."""

    selected = "selected"
    all = "all"


SAMPLE_MODES: tuple[str, ...] = Sample.values()


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """The training rows of a store.  Shapes: all arrays ``(M,)`` over the M drawable samples."""

    indices: np.ndarray  # store index of each drawable sample
    weights: np.ndarray  # w_i (Eq. 9): 1 kept, 0 dropped; 1 for strong samples
    label_kind: np.ndarray  # the proxy set's map kind ("proxy", "cam") or "gt" (strong samples) per row, object array
    tags: np.ndarray  # (M, C) bool
    has_tags: np.ndarray  # (M,) bool
    counts: dict[str, int]  # what was found: split size, with proxy, kept, strong, drawable

    def __len__(self) -> int:
        return len(self.indices)


def plan_training(st: store_mod.MaskStore, *, split: str, selection: str | None, sample: str = "selected",
                  use_strong: bool = True, proxy: str = store_mod.IMPORTED_PROXY) -> TrainingPlan:
    """Which samples of ``split`` a retraining draws, with their weights and label maps.

    ``selection``: a selection name in the store (w_i from it) or None (P2: every proxy, w = 1).
    ``sample="selected"``: draw only images with w_i > 0 (the authors' code); ``"all"``: draw
    every image with a proxy, L_sel weighted by w_i (the literal Eq. 13).  Strong samples
    (imported with ground truth as strong samples) use their ground truth with w = 1.
    ``proxy``: the proxy set whose maps are the labels (a resolved name, see
    ``MaskStore.resolve_proxy``).
    """
    if sample not in SAMPLE_MODES:
        raise InputError(f"sample must be one of {', '.join(SAMPLE_MODES)}, got {sample!r}", param="sample")
    in_split = st.splits == split
    if not in_split.any():
        raise InputError(f"{st.path}: no samples in split {split!r} (the store has: {', '.join(st.split_names())}); "
                         "choose one of those", param="split")
    has_proxy = st.has_map(proxy)
    strong = st.strong & st.has_map("gt") & bool(use_strong)
    if selection is None:
        w = np.ones(len(st), np.float32)
    else:
        w = np.nan_to_num(st.selection(selection).astype(np.float32), nan=0.0)
    w = np.where(strong, 1.0, np.where(has_proxy, w, 0.0)).astype(np.float32)
    usable = in_split & (has_proxy | strong)
    kept = usable & (w > 0)
    if not kept.any():
        what = f"selection {selection!r}" if selection else "the store"
        raise InputError(f"{what} keeps no image of split {split!r} ({int((in_split & has_proxy).sum())} have a "
                         "proxy); choose a lower tau with `salcurate select`, another selection, or selection none",
                         param="selection")
    draw = kept if sample == "selected" else usable
    idx = np.flatnonzero(draw)
    counts = {"split": int(in_split.sum()), "with_proxy": int((in_split & has_proxy).sum()), "kept": int(kept.sum()),
              "strong": int((in_split & strong).sum()), "drawable": int(len(idx))}
    return TrainingPlan(indices=idx, weights=w[idx], label_kind=np.where(strong[idx], "gt", proxy).astype(object),
                        tags=st.tags[idx].astype(bool), has_tags=st.has_tags[idx].astype(bool), counts=counts)


def plan_indices(st: store_mod.MaskStore, indices: np.ndarray, *, proxy: str) -> TrainingPlan:
    """A plan that draws exactly the store samples ``indices`` (any split), each labelled by its
    map of proxy set ``proxy`` with w = 1: for a command that trains on a subset it chose itself
    (``score-model``'s folds).  Every index must hold a proxy."""
    idx = np.unique(np.asarray(indices, dtype=np.int64))
    if len(idx) == 0 or idx[0] < 0 or idx[-1] >= len(st) or not st.has_map(proxy)[idx].all():
        raise InputError(f"plan_indices expects store indices of samples with a {proxy!r} proxy, got {len(idx)} "
                         "indices of which some are out of range or have none")
    counts = {"split": len(idx), "with_proxy": len(idx), "kept": len(idx), "strong": 0, "drawable": len(idx)}
    return TrainingPlan(indices=idx, weights=np.ones(len(idx), np.float32),
                        label_kind=np.full(len(idx), proxy, dtype=object), tags=st.tags[idx].astype(bool),
                        has_tags=st.has_tags[idx].astype(bool), counts=counts)


def validation_indices(st: store_mod.MaskStore, split: str, limit: int | None = None) -> np.ndarray:
    """Store indices of ``split`` that hold ground truth (at most ``limit``, evenly spread)."""
    idx = np.flatnonzero((st.splits == split) & st.has_map("gt"))
    if limit is not None and len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]
    return idx


class StreamSampler(Sampler):
    """An endless stream of ``(row, position)`` draws for one rank, resumable at any position.

    Epoch e is a permutation of the M rows seeded by ``(seed, e)``, padded (by repeating its
    start) to a multiple of ``world`` and dealt round-robin to the ranks, as
    DistributedSampler does.  ``start`` skips this rank's first draws (``iterations x batch``).
    """

    def __init__(self, num_rows: int, *, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        if num_rows < 1:
            raise InputError("StreamSampler needs at least one row")
        self.num_rows, self.seed, self.rank, self.world, self.start = num_rows, seed, rank, world, start
        self.per_rank = -(-num_rows // world)  # draws of one rank per epoch

    def _epoch(self, e: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, 7919, e]).permutation(self.num_rows)
        padded = np.resize(perm, self.per_rank * self.world)
        return padded[self.rank::self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start
        while True:
            e, k = divmod(pos, self.per_rank)
            rows = self._epoch(e)
            for r in rows[k:]:
                yield int(r), pos
                pos += 1

    def __len__(self) -> int:  # pragma: no cover - endless; DataLoader only needs it for len()
        return 2**62


@dataclasses.dataclass(frozen=True)
class Augment:
    """DeepLab-v2's training augmentation: random scale, pad, random crop, random flip."""

    crop: int = 321
    scale_min: float = 0.5
    scale_max: float = 1.5
    flip: bool = True


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            aug: Augment) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8, ``(H, W)`` uint8 -> ``(3, crop, crop)`` float32 normalised, ``(crop, crop)`` int64.

    The image is resized bilinearly and the labels with nearest neighbours by a factor drawn
    from [scale_min, scale_max]; a side shorter than the crop is padded with the ImageNet mean
    (0 after normalisation) and label 255; then a random crop and a flip with probability 1/2.
    """
    s = float(rng.uniform(aug.scale_min, aug.scale_max))
    x = preprocess(image)[None]
    y = torch.from_numpy(np.ascontiguousarray(labels))[None, None].float()
    h, w = labels.shape
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=(nh, nw), mode="nearest")
    ph, pw = max(aug.crop - nh, 0), max(aug.crop - nw, 0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=0.0)  # 0 = the mean after normalisation
        y = F.pad(y, (0, pw, 0, ph), value=float(IGNORE_INDEX))
    H, W = nh + ph, nw + pw
    top = int(rng.integers(0, H - aug.crop + 1))
    left = int(rng.integers(0, W - aug.crop + 1))
    x = x[0, :, top:top + aug.crop, left:left + aug.crop]
    y = y[0, 0, top:top + aug.crop, left:left + aug.crop]
    if aug.flip and rng.random() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    return x.contiguous(), y.long().contiguous()


class RetrainSet(store_mod.StoreHandle, Dataset):
    """Training draws: ``(row, position) -> (image, labels, weight, tags, has_tags)``.

    Shapes: image ``(3, crop, crop)`` float32, labels ``(crop, crop)`` int64, weight ``()``
    float32, tags ``(C,)`` float32, has_tags ``()`` bool.
    """

    def __init__(self, store_path: str, plan: TrainingPlan, aug: Augment, *, seed: int, rank: int = 0) -> None:
        self.store_path, self.plan, self.aug, self.seed, self.rank = store_path, plan, aug, seed, rank


    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        row, position = key
        st = self.store
        i = int(self.plan.indices[row])
        labels = st.map(str(self.plan.label_kind[row]), i)
        rng = np.random.default_rng([self.seed, 104729, self.rank, position])
        x, y = augment(st.image(i), labels, rng, self.aug)
        return (x, y, torch.tensor(self.plan.weights[row]), torch.from_numpy(self.plan.tags[row].astype(np.float32)),
                torch.tensor(bool(self.plan.has_tags[row])))


class EvalSet(store_mod.StoreHandle, Dataset):
    """Whole images with ground truth: ``k -> ((3, H, W) float32, (H, W) int64)``."""

    def __init__(self, store_path: str, indices: np.ndarray) -> None:
        self.store_path, self.indices = store_path, indices


    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.indices[k])
        return preprocess(self.store.image(i)), torch.from_numpy(self.store.map("gt", i).astype(np.int64))
