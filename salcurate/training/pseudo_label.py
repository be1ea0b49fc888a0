"""``pseudo-label``: proxy masks from image tags, through a tag classifier's CAMs (the paper's P1).

:func:`run` (settings: :class:`PseudoLabelConfig`) does, in order:

1. checks: the store has image tags, the proxy set's name is free (or ``overwrite``), the
   refinement is available; a class with fewer than :data:`RARE_CLASS` tagged images is named
   in a warning;
2. trains a :class:`~salcurate.nn.classifier.TagClassifier` on every tagged image but a seeded
   held-out share, with binary cross-entropy against the tags (IRN's recipe, below), on the
   shared training harness (``salcurate.training.harness``: progress, a checkpoint per epoch,
   ``resume``, Ctrl-C, bf16 and channels-last on CUDA, a JSONL log);
3. measures the classifier's mean average precision on the held-out images;
4. makes each tagged sample's proxy (``salcurate.nn.cam``): multi-scale, flipped CAMs ->
   normalized -> background score ``bg_threshold`` -> probabilities -> refinement (PAMR, the
   dense CRF or none) -> argmax over background and the image's tags.  Proxies go to a work
   area (``salcurate.data.workarea``), so a killed run resumes where it stopped;
5. writes them to the store in one transaction as the proxy set ``config.proxy``;
6. where ground truth exists, scores the proxies against it (mIoU over one confusion matrix,
   and the mean of the per-image mIoUs).

Training recipe (Ahn, Cho, Kwak, "Weakly Supervised Learning of Instance Segmentation with
Inter-pixel Relations", CVPR 2019, ``train_cam``): ResNet-50 (at output stride 16 in IRN; here
SAL-Net's stride-8 backbones are reused), batch 16, 5 epochs, crops of 512 from images whose
longer side is resized to 320-640 (0.625-1.25 x the crop) and flipped, weight decay 1e-4, the
poly schedule with power 0.9 and the classifier at 10x the backbone's rate.  IRN's learning rate
is 0.1 with plain SGD (its optimizer passes no momentum); with momentum 0.9 the same step size is
0.01, the default here.  CAM inference is IRN's too: scales 1.0, 0.5, 1.5, 2.0 with flips and a
background threshold of 0.15.  On the CPU, small CAM inputs run on one thread (:func:`_make_proxies`).

Files under ``config.output``: ``classifier.pt`` (the checkpoint after each epoch, and the final
classifier; ``salcurate.nn.classifier.load_classifier`` reads it), ``backbone.pth`` (the trained
backbone under torchvision's names: ``salcurate retrain --backbone-weights`` starts from it),
``config.toml`` (the resolved settings; ``salcurate pseudo-label --config`` reads it back) and
``log.jsonl`` (a line per epoch, the held-out mAP and the proxies' figures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from salcurate.config import Choice, choice, setting, store_setting, to_dict
from salcurate.crf import CRF_INSTALL, crf_available, dense_crf
from salcurate.data import store as store_mod
from salcurate.data.workarea import ids_fingerprint, open_work_area, remove_work_area
from salcurate.errors import InputError, SalcurateError, StoreError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.nn.cam import (
    cam_scores,
    multiscale_cams,
    normalize_cams,
    pamr,
    proxy_from_scores,
    resize_longer,
    score_probabilities,
)
from salcurate.nn.classifier import (
    TagClassifier,
    TagClassifierConfig,
    backbone_state_dict_torchvision,
    load_classifier,
    save_classifier,
)
from salcurate.nn.classifier import tag_probabilities as image_tag_probabilities
from salcurate.nn.device import Device, resolve_device
from salcurate.nn.fileio import atomic_torch_save
from salcurate.nn.salnet import preprocess
from salcurate.stats import average_precision
from salcurate.training.harness import (
    Checkpoint,
    Precision,
    RunLog,
    checkpoint_on_interrupt,
    optimizer_state,
    poly_lr,
    prepare_model,
    recipe_of,
    restore_optimizer,
    write_config,
)

log = logging.getLogger(__name__)

COMMAND = "pseudo-label"
#: A class with fewer tagged images than this gets a warning: its CAMs will be poor.
RARE_CLASS = 5
#: The dense CRF of PSA's and IRN's CAM refinement (``crf_inference``: DeepLab's kernels, 10 steps).
CRF_PARAMS: dict[str, float] = {"iterations": 10, "gaussian_sxy": 3.0, "gaussian_compat": 3.0,
                                "bilateral_sxy": 80.0, "bilateral_srgb": 13.0, "bilateral_compat": 10.0}
CRF_MISSING = f"refine crf needs pydensecrf, which is not installed; {CRF_INSTALL}, or choose refine pamr or none"


class CamBackbone(Choice):
    """The tag classifier's backbone (output stride 8, as SAL-Net's)."""

    resnet50 = "resnet50"
    resnet18 = "resnet18"
    vgg16 = "vgg16"


class Refine(Choice):
    """How CAM scores are refined before the argmax: PAMR (pure torch), the dense CRF, or not at all."""

    pamr = "pamr"
    crf = "crf"
    none = "none"


# ------------------------------------------------------------------------------------------
# Settings and result
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PseudoLabelConfig:
    """Settings of ``pseudo-label``; IRN's recipe by default (module docstring).

    Settings marked ``run_only`` do not change the classifier: a resumed run may change them
    (the CAM settings among them: a finished classifier makes new proxies with new CAM settings).
    """

    store: str = store_setting()
    proxy: str = setting("cam", "Name of the proxy set to write (the imported proxies stay).", run_only=True)
    output: str = setting("runs/pseudo-label", "Run folder: classifier.pt, backbone.pth (for `salcurate retrain "
                                               "--backbone-weights`), config.toml, log.jsonl.",
                          short="-o", run_only=True)
    backbone: CamBackbone = setting(CamBackbone.resnet50, "resnet50 (IRN's), resnet18 or vgg16.")
    backbone_weights: str = setting("imagenet", "imagenet (from the local torch cache), a .pth file, or none "
                                                "(random).")
    input_size: int = setting(512, "Training crop side (IRN: 512); images are resized to a random longer side "
                                   "of scale_min-scale_max x this, flipped and cropped; smaller ones padded.")
    scale_min: float = setting(0.625, "Smallest random longer side, as a share of input_size (IRN: 320/512).")
    scale_max: float = setting(1.25, "Largest random longer side, as a share of input_size (IRN: 640/512).")
    epochs: int = setting(5, "Training epochs (IRN: 5).")
    batch_size: int = setting(16, "Images per batch (IRN: 16).")
    lr: float = setting(0.01, "Backbone learning rate, SGD with momentum (IRN's 0.1 without momentum).")
    momentum: float = setting(0.9, "SGD momentum.")
    weight_decay: float = setting(1e-4, "SGD weight decay (IRN: 1e-4).")
    power: float = setting(0.9, "Poly schedule power (IRN: 0.9).")
    head_lr_mult: float = setting(10.0, "The classifier layer learns this many times faster (IRN: 10).")
    held_out: float = setting(0.1, "Share of the tagged images kept out of training to measure the classifier's "
                                   "mAP.")
    scales: tuple[float, ...] = setting((1.0, 0.5, 1.5, 2.0), "CAM scales (IRN: 1.0,0.5,1.5,2.0).", run_only=True)
    flip: bool = setting(True, "CAMs of the mirrored images too.", flag="--flip/--no-flip", run_only=True)
    cam_max_side: int | None = setting(None, "CAMs on the image resized to at most this longer side, the proxy "
                                             "resized back (default: the image's own size).", run_only=True)
    bg_threshold: float = setting(0.15, "Background score: a pixel is background where no tagged class's "
                                        "normalized CAM reaches it (IRN: 0.15).", run_only=True)
    refine: Refine = setting(Refine.pamr, "pamr (pure torch), crf (dense CRF; needs the crf extra) or none.",
                             run_only=True)
    device: Device = setting(Device.auto, "auto (CUDA when present), cpu or cuda.", run_only=True)
    workers: int = setting(2, "Data-loader processes.", min=0, run_only=True)
    seed: int = setting(0, "Seed of the held-out split, the initial weights, the batch order and the augmentation.")
    resume: bool = setting(False, "Continue the run in the output folder (training, then the proxies).",
                           run_only=True)
    overwrite: bool = setting(False, "Replace an existing proxy set of that name.", run_only=True)


@dataclasses.dataclass(frozen=True)
class PseudoLabelResult(Result):
    """What ``pseudo-label`` did: the set it wrote, the classifier and its figures."""

    proxy: str
    output: str
    classifier: str
    backbone_file: str
    log: str
    config_file: str
    map: float | None  # mean over classes with a held-out positive of the average precision
    class_ap: dict[str, float | None]
    miou: float | None  # the proxies against ground truth, one confusion matrix
    miou_per_image: float | None  # the mean of the per-image mIoUs
    counts: dict[str, int]
    rare_classes: dict[str, int]  # classes with fewer than RARE_CLASS tagged images: their count
    epochs: int
    resumed_from: int
    train_seconds: float
    cam_seconds: float
    train_images_per_s: float | None
    cam_images_per_s: float | None
    config: dict[str, Any]
    seconds: float


def _positive(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def check_config(c: PseudoLabelConfig) -> PseudoLabelConfig:
    """The config with its choices as enums; raises InputError for a bad setting."""
    resolved = dict(backbone=choice(CamBackbone, c.backbone, "backbone"), refine=choice(Refine, c.refine, "refine"),
                    device=choice(Device, c.device, "device"))
    if c.epochs < 1 or c.batch_size < 1:
        raise InputError(f"epochs and batch_size must be at least 1, got {c.epochs} and {c.batch_size}",
                         param=("epochs", "batch_size"))
    if c.input_size < 16:
        raise InputError(f"input_size must be at least 16 pixels, got {c.input_size}", param="input_size")
    if not (_positive(c.scale_min) and _positive(c.scale_max) and c.scale_min <= c.scale_max):
        raise InputError(f"scale_min must be above 0 and at most scale_max, got {c.scale_min} and {c.scale_max}",
                         param=("scale_min", "scale_max"))
    for name in ("lr", "head_lr_mult"):
        if not _positive(getattr(c, name)):
            raise InputError(f"{name} must be a positive number, got {getattr(c, name)}", param=name)
    for name in ("momentum", "weight_decay", "power"):
        v = getattr(c, name)
        if not (math.isfinite(v) and v >= 0):
            raise InputError(f"{name} must be a number >= 0, got {v}", param=name)
    if not (math.isfinite(c.held_out) and 0 <= c.held_out < 1):
        raise InputError(f"held_out must be a share from 0 to below 1, got {c.held_out}", param="held_out")
    if not c.scales or not all(_positive(s) for s in c.scales):
        raise InputError(f"scales must be positive numbers such as 1.0,0.5,1.5,2.0, got {list(c.scales)}",
                         param="scales")
    if c.cam_max_side is not None and c.cam_max_side < 8:
        raise InputError(f"cam_max_side must be at least 8 pixels (or unset), got {c.cam_max_side}",
                         param="cam_max_side")
    if not (math.isfinite(c.bg_threshold) and 0 < c.bg_threshold < 1):
        raise InputError(f"bg_threshold must be between 0 and 1, got {c.bg_threshold}", param="bg_threshold")
    if c.workers < 0:
        raise InputError(f"workers must be 0 or more, got {c.workers}", param="workers")
    store_mod.check_proxy_set_name(c.proxy)
    if resolved["refine"] == Refine.crf and not crf_available():
        raise InputError(CRF_MISSING, param="refine")
    return dataclasses.replace(c, **resolved)


# ------------------------------------------------------------------------------------------
# What the run reads from the store
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _StoreView:
    """The store's facts a run needs (read once; the store is closed while the run works)."""

    path: Path
    class_names: tuple[str, ...]
    ids: tuple[str, ...]
    shapes: np.ndarray  # (N, 2) height, width
    tags: np.ndarray  # (N, C) bool
    tagged: np.ndarray  # store indices of the tagged samples
    train: np.ndarray  # store indices the classifier learns from
    held_out: np.ndarray  # store indices kept out for the mAP
    has_gt: np.ndarray  # (N,) bool
    rare: dict[str, int]
    store_ids: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names) - 1


def _split_held_out(tagged: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) store indices: ``round(share x tagged)`` held out (at most all but one), seeded."""
    k = min(int(round(share * len(tagged))), max(len(tagged) - 1, 0))
    perm = np.random.default_rng([seed, 4099]).permutation(len(tagged))
    return np.sort(tagged[perm[k:]]), np.sort(tagged[perm[:k]])


def _read_store(config: PseudoLabelConfig) -> _StoreView:
    with store_mod.MaskStore(config.store) as st:
        if config.proxy in st.map_names():
            if config.proxy not in st.proxy_names():
                raise InputError(f"{st.path}: maps named {config.proxy!r} exist and are not proxies; choose another "
                                 "name with proxy", param="proxy")
            if not config.overwrite:
                raise StoreError(f"{st.path}: the store has a set of proxies named {config.proxy!r} already; pass "
                                 "overwrite to replace it, or choose another name with proxy",
                                 param=("overwrite", "proxy"))
        tagged = np.flatnonzero(st.has_tags)
        if len(tagged) == 0:
            raise StoreError(f"{st.path}: the store has no image tags, which pseudo-label learns from; import them "
                             "with `salcurate import ... --tags FILE` (or `salcurate import ... --tags-from-gt`)")
        tags = st.tags.astype(bool)
        counts = tags[tagged].sum(axis=0)
        rare = {st.class_names[c + 1]: int(counts[c]) for c in range(st.num_classes) if counts[c] < RARE_CLASS}
        train, held_out = _split_held_out(tagged, config.held_out, config.seed)
        view = _StoreView(path=st.path, class_names=tuple(st.class_names), ids=tuple(st.ids),
                          shapes=np.stack([st.heights, st.widths], axis=1).astype(np.int64), tags=tags,
                          tagged=tagged, train=train, held_out=held_out, has_gt=st.has_map("gt"), rare=rare,
                          store_ids=ids_fingerprint(st.ids))
    if rare:
        log.warning("classes with fewer than %d tagged images (their CAMs will be poor): %s", RARE_CLASS,
                    ", ".join(f"{name} ({n})" for name, n in rare.items()))
    return view


# ------------------------------------------------------------------------------------------
# Training data
# ------------------------------------------------------------------------------------------
def augment_image(image: np.ndarray, rng: np.random.Generator, *, size: int, scale_min: float,
                  scale_max: float) -> torch.Tensor:
    """IRN's training augmentation: ``(H, W, 3)`` uint8 -> ``(3, size, size)`` float32, normalized.

    The image is resized (bilinear, antialiased) so that its longer side is ``s x size``, s drawn
    from [scale_min, scale_max]; padded at the bottom and right with the ImageNet mean (0 after
    normalization) to at least ``size`` a side; cropped at random to ``size x size``; mirrored
    with probability 1/2.
    """
    h, w = image.shape[:2]
    f = float(rng.uniform(scale_min, scale_max)) * size / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    x = preprocess(image)[None]
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=f < 1)
    ph, pw = max(size - nh, 0), max(size - nw, 0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=0.0)
    top = int(rng.integers(0, nh + ph - size + 1))
    left = int(rng.integers(0, nw + pw - size + 1))
    x = x[0, :, top:top + size, left:left + size]
    if rng.random() < 0.5:
        x = x.flip(-1)
    return x.contiguous()


class _EpochSampler(Sampler):
    """Rows of one epoch in a seeded order, as ``(row, epoch)`` keys; set :attr:`epoch` before iterating."""

    def __init__(self, num_rows: int, seed: int) -> None:
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng([self.seed, 7919, self.epoch]).permutation(self.num_rows)
        return iter([(int(r), self.epoch) for r in order])

    def __len__(self) -> int:
        return self.num_rows


class TagSet(store_mod.StoreHandle, Dataset):
    """Training draws: ``(row, epoch) -> (image (3, size, size) float32, tags (C,) float32)``.

    The augmentation of a draw depends only on ``(seed, epoch, row)``, never on the worker that
    made it, so a resumed run sees the crops an uninterrupted one would.
    """

    def __init__(self, store_path: str, indices: np.ndarray, tags: np.ndarray, *, size: int, scale_min: float,
                 scale_max: float, seed: int) -> None:
        self.store_path, self.indices, self.tags = store_path, indices, tags
        self.size, self.scale_min, self.scale_max, self.seed = size, scale_min, scale_max, seed


    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        row, epoch = key
        i = int(self.indices[row])
        rng = np.random.default_rng([self.seed, 104729, epoch, row])
        x = augment_image(self.store.image(i), rng, size=self.size, scale_min=self.scale_min,
                          scale_max=self.scale_max)
        return x, torch.from_numpy(self.tags[i].astype(np.float32))


class _ImageSet(store_mod.StoreHandle, Dataset):
    """Whole images by position: ``k -> (store index, (H, W, 3) uint8 tensor)``."""

    def __init__(self, store_path: str, indices: np.ndarray) -> None:
        self.store_path, self.indices = store_path, indices


    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor]:
        i = int(self.indices[k])
        return i, torch.from_numpy(np.ascontiguousarray(self.store.image(i)))


def _images(store_path: str, indices: np.ndarray, workers: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(store index, (H, W, 3) uint8)`` for ``indices`` in order, decoded by ``workers`` processes."""
    loader = DataLoader(_ImageSet(store_path, indices), batch_size=None, num_workers=min(workers, len(indices)))
    for i, image in loader:
        yield int(i), image.numpy()


# ------------------------------------------------------------------------------------------
# The classifier's training (an epoch loop on the harness)
# ------------------------------------------------------------------------------------------
def _read_checkpoint(path: Path) -> dict[str, Any]:
    model, info = load_classifier(path)
    return {**info, "model": model}


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of a model's weights (names, shapes and bytes): identifies the classifier a work area used."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class _ClassifierTraining:
    """The classifier, its optimizer, loader and checkpoint; :meth:`train` runs the epochs still to do."""

    def __init__(self, config: PseudoLabelConfig, data: _StoreView, precision: Precision, events: Events) -> None:
        self.config, self.data, self.precision, self.events = config, data, precision, events
        self.out = Path(config.output)
        self.checkpoint = Checkpoint(self.out / "classifier.pt", recipe_of(config, store_ids=data.store_ids),
                                     write=self._write_checkpoint, read=_read_checkpoint)
        state = self.checkpoint.resume(config.resume, refuse_existing=True)

        # -- model and optimizer ------------------------------------------------------------
        torch.manual_seed(config.seed)
        if state is not None:
            self.model: TagClassifier = state["model"]
        else:
            self.model = TagClassifier(TagClassifierConfig(backbone=str(config.backbone),
                                                           num_classes=data.num_classes),
                                       backbone_weights=config.backbone_weights)
        self.start_epoch = self.epochs_done = int(state["epochs_done"]) if state is not None else 0
        self.history: list[dict[str, Any]] = list(state.get("history", [])) if state is not None else []
        self.fwd = prepare_model(self.model, precision)
        backbone_params, head_params = self.model.parameter_groups()
        self.opt = torch.optim.SGD(
            [{"params": backbone_params, "lr": config.lr, "mult": 1.0},
             {"params": head_params, "lr": config.lr * config.head_lr_mult, "mult": config.head_lr_mult}],
            lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        restore_optimizer(self.opt, state.get("optimizer") if state is not None else None)

        # -- data ---------------------------------------------------------------------------
        n = len(data.train)
        self.sampler = _EpochSampler(n, config.seed)
        dataset = TagSet(str(config.store), data.train, data.tags, size=config.input_size,
                         scale_min=config.scale_min, scale_max=config.scale_max, seed=config.seed)
        self.loader = DataLoader(dataset, sampler=self.sampler, batch_size=config.batch_size,
                                 num_workers=config.workers, drop_last=n > config.batch_size,
                                 pin_memory=precision.device.type == "cuda", persistent_workers=config.workers > 0)
        self.batches = len(self.loader)
        self.images_seen = 0

    def _write_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        save_classifier(path, self.model, class_names=self.data.class_names, extra=state)

    def save(self, *, interrupted: bool = False) -> None:
        self.checkpoint.save({"epochs_done": self.epochs_done, "optimizer": optimizer_state(self.opt),
                              "history": self.history, "interrupted": interrupted,
                              "train_config": to_dict(self.config)})

    def _save_interrupted(self) -> str:
        # the weights hold part of the next epoch; a resume restarts that epoch from them
        self.save(interrupted=True)
        return f"during epoch {self.epochs_done + 1} of training"

    def _epoch(self, epoch: int, run_log: RunLog) -> None:
        c = self.config
        t0, total, count = time.time(), 0.0, 0
        self.sampler.epoch = epoch
        self.fwd.train()
        max_iter = c.epochs * self.batches
        lr = c.lr
        for k, (x, y) in enumerate(self.loader):
            lr = poly_lr(c.lr, epoch * self.batches + k, max_iter, c.power)
            for g in self.opt.param_groups:
                g["lr"] = lr * g["mult"]
            x, y = self.precision.inputs(x), y.to(self.precision.device, non_blocking=True)
            with self.precision.autocast():
                logits = self.fwd(x).logits
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            value = loss.item()
            if not math.isfinite(value):
                raise SalcurateError(f"the loss became {value} in epoch {epoch + 1}; lower lr (now {c.lr}) or check "
                                     "the data", param="lr")
            total += value * len(y)
            count += len(y)
            self.events.advance(1, loss=value, lr=lr)
        seconds = time.time() - t0
        self.images_seen += count
        record = {"epoch": epoch + 1, "loss": total / max(count, 1), "lr": lr, "images": count,
                  "images_per_s": count / max(seconds, 1e-9), "seconds": seconds}
        self.history.append(record)
        self.epochs_done = epoch + 1
        self.save()
        run_log.write(record)

    def train(self, run_log: RunLog) -> float:
        """Run the remaining epochs; returns the seconds spent."""
        c = self.config
        started = time.time()
        if self.start_epoch >= c.epochs:
            self.events.note(f"the classifier in {self.checkpoint.path} is trained ({c.epochs} "
                             f"epoch{'s' if c.epochs != 1 else ''}); going on to the proxies")
            return 0.0
        self.events.note(f"training a {c.backbone} tag classifier on {len(self.data.train)} images "
                         f"({len(self.data.held_out)} held out) on {self.precision.device}"
                         + (f"; resuming after epoch {self.start_epoch}" if self.start_epoch else ""))
        self.events.start(c.epochs * self.batches, self.start_epoch * self.batches, label="training")
        with checkpoint_on_interrupt(self._save_interrupted, self.checkpoint.path):
            for epoch in range(self.start_epoch, c.epochs):
                self._epoch(epoch, run_log)
        return time.time() - started


# ------------------------------------------------------------------------------------------
# Held-out mAP
# ------------------------------------------------------------------------------------------
#: CAM inputs up to this side (at the largest scale) are too small to share between CPU threads.
SMALL_CAM_SIDE = 160


@contextlib.contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``n`` inside the block (None: left as they are)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _small_input_threads(side: float, precision: Precision) -> int | None:
    """1 for inputs up to :data:`SMALL_CAM_SIDE` on the CPU (see :func:`_make_proxies`), else None."""
    return 1 if precision.device.type == "cpu" and side <= SMALL_CAM_SIDE else None


def tag_probabilities(model: torch.nn.Module, image: np.ndarray, *, side: int, precision: Precision) -> np.ndarray:
    """The classifier's ``(C,)`` tag probabilities for one whole image resized to longer side ``side``
    (the training scale) and padded to at least 8 pixels a side (``salcurate.nn.classifier.tag_probabilities``
    in ``precision``'s numerics)."""
    return image_tag_probabilities(model, image, side=side, amp=precision.amp, channels_last=precision.channels_last)


def held_out_map(model: torch.nn.Module, config: PseudoLabelConfig, data: _StoreView,
                 precision: Precision) -> tuple[float | None, dict[str, float | None]]:
    """(mAP, AP per class name) on the held-out images; classes without a held-out positive get None."""
    names = data.class_names[1:]
    if len(data.held_out) == 0:
        return None, dict.fromkeys(names)
    model.eval()
    with _cpu_threads(_small_input_threads(config.input_size, precision)):
        probs = np.stack([tag_probabilities(model, image, side=config.input_size, precision=precision)
                          for _, image in _images(str(config.store), data.held_out, 0)])
    truth = data.tags[data.held_out]
    ap = [average_precision(probs[:, c], truth[:, c]) for c in range(len(names))]
    per_class = {n: (None if not math.isfinite(v) else float(v)) for n, v in zip(names, ap)}
    valid = [v for v in ap if math.isfinite(v)]
    return (float(np.mean(valid)) if valid else None), per_class


# ------------------------------------------------------------------------------------------
# Proxies from CAMs
# ------------------------------------------------------------------------------------------
def cam_proxy(model: torch.nn.Module, image: np.ndarray, tags: np.ndarray, *, scales: tuple[float, ...] = (1.0,),
              flip: bool = True, cam_max_side: int | None = None, bg_threshold: float = 0.15,
              refine: str = "pamr", precision: Precision | None = None) -> np.ndarray:
    """One image's proxy: ``(H, W, 3)`` uint8 image, ``(C,)`` bool tags -> ``(H, W)`` uint8 labels 0..C.

    Multi-scale CAMs (with flips) -> normalized -> ``cam_scores(bg_threshold)`` ->
    ``score_probabilities`` -> refinement (``pamr``, ``crf`` or ``none``) -> argmax.  Only the
    background and the tagged classes can win; an image without tags is all background.  With
    ``cam_max_side`` the CAMs and the refinement run on the image resized to that longer side,
    and the refined probabilities are resized back (bilinear) before the argmax.
    """
    precision = precision or Precision(torch.device("cpu"))
    h, w = image.shape[:2]
    tags = np.asarray(tags, dtype=bool)
    keep = np.flatnonzero(tags)
    if len(keep) == 0:
        return np.zeros((h, w), np.uint8)
    x = preprocess(image)
    small = cam_max_side is not None and max(h, w) > cam_max_side
    if small:
        x = resize_longer(x, int(cam_max_side))  # type: ignore[arg-type]
    x = x.to(precision.device)
    with precision.autocast():
        cams = multiscale_cams(model, x, scales=scales, flip=flip)
    scores = cam_scores(normalize_cams(cams, tags), tags, bg_threshold=bg_threshold)
    lut = np.concatenate([[0], keep + 1]).astype(np.uint8)  # compact channel -> class label
    probs = score_probabilities(scores)[torch.from_numpy(lut.astype(np.int64)).to(scores.device)]
    if refine == Refine.pamr:
        probs = pamr(x.float(), probs)
    elif refine == Refine.crf:
        rgb = image
        if small:  # the image at the CAMs' size
            rgb = np.asarray(Image.fromarray(image).resize((x.shape[2], x.shape[1]), Image.BILINEAR))
        q = dense_crf(rgb, probs.cpu().numpy(), missing=CRF_MISSING, **CRF_PARAMS)  # type: ignore[arg-type]
        probs = torch.from_numpy(q).to(probs.device)
    if small:
        probs = F.interpolate(probs[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
    labels = proxy_from_scores(probs.float())
    return lut[labels.cpu().numpy()]


def _make_proxies(model: torch.nn.Module, config: PseudoLabelConfig, data: _StoreView, area: Any, todo: np.ndarray,
                  precision: Precision, events: Events) -> None:
    """Each sample of ``todo``'s proxy into the work area, one image at a time.

    On the CPU, small CAM inputs (up to :data:`SMALL_CAM_SIDE` at the largest scale) run on one
    thread: their operations are too small to share, and OpenMP threads that wait for each other
    on a busy machine made this phase 10x slower (2 cores, measured).
    """
    largest = int(data.shapes[data.tagged].max()) if len(data.tagged) else 0
    threads = _small_input_threads(min(largest, config.cam_max_side or largest) * max(config.scales), precision)
    settings = dict(scales=tuple(config.scales), flip=config.flip, cam_max_side=config.cam_max_side,
                    bg_threshold=config.bg_threshold, refine=config.refine, precision=precision)
    try:
        with _cpu_threads(threads):
            for i, image in _images(str(config.store), todo, config.workers):
                labels = cam_proxy(model, image, data.tags[i], **settings)  # type: ignore[arg-type]
                area.write([i], np.zeros((1, 1), np.float32), labels=[labels])
                events.advance(1)
    except KeyboardInterrupt:
        made = int(area.done[data.tagged].sum())
        raise SalcurateError(f"interrupted while making the proxies ({made} of {len(data.tagged)} done and "
                             "kept); continue with resume", param="resume") from None


def _cam_area_config(config: PseudoLabelConfig, data: _StoreView, digest: str) -> dict[str, Any]:
    """What the proxies depend on: the classifier (its weights' digest), the tags and the CAM settings."""
    d = to_dict(config)
    return {**{k: d[k] for k in ("scales", "flip", "cam_max_side", "bg_threshold", "refine")},
            "classifier": digest, "tags": hashlib.sha256(np.packbits(data.tags).tobytes()).hexdigest()[:16]}


def _proxy_quality(area: Any, data: _StoreView) -> tuple[float | None, float | None, int]:
    """(mIoU over one confusion matrix, mean per-image mIoU, images) of the proxies against ground truth."""
    from salcurate.segmentation_metrics import confusion_matrix, mean_iou

    k = data.num_classes + 1
    cm = np.zeros((k, k), np.int64)
    per_image = []
    have = np.zeros(len(data.ids), bool)
    have[data.tagged] = True
    indices = np.flatnonzero(have & data.has_gt)
    if len(indices) == 0:
        return None, None, 0
    with store_mod.MaskStore(data.path) as st:
        for i, gt in st.iter_maps("gt", indices):
            one = confusion_matrix(area.label_map(i), gt, num_classes=k)
            cm += one
            v = mean_iou(one)
            if math.isfinite(v):
                per_image.append(v)
    total = mean_iou(cm)
    return (float(total) if math.isfinite(total) else None,
            float(np.mean(per_image)) if per_image else None, int(len(indices)))


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------
def run(config: PseudoLabelConfig, *, events: Events | None = None) -> PseudoLabelResult:
    """Train the tag classifier, make every tagged sample's proxy from its CAMs, and store them as
    the proxy set ``config.proxy``; see the module docstring.

    ``events``: notes on what runs; ``start(epochs x batches, done)`` and ``advance(1, loss=...,
    lr=...)`` per batch while training, then ``start(tagged images, done)`` and ``advance(1)``
    per proxy; ``metrics`` for each line of ``log.jsonl`` (epochs, the held-out mAP, the proxies).
    """
    started = time.time()
    events = events or NO_EVENTS

    # -- checks, before any work ------------------------------------------------------------
    config = check_config(config)
    data = _read_store(config)
    if len(data.train) == 0:
        raise InputError(f"{data.path}: no tagged image is left to train on; lower held_out", param="held_out")
    precision = Precision(resolve_device(config.device))

    # -- the classifier ---------------------------------------------------------------------
    training = _ClassifierTraining(config, data, precision, events)
    out = training.out
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.toml"
    write_config(config_file, config, command=COMMAND)
    run_log = RunLog(out / "log.jsonl", step="epoch", events=events)
    train_seconds = training.train(run_log)
    model = training.model.eval()
    backbone_file = atomic_torch_save(backbone_state_dict_torchvision(model), out / "backbone.pth")

    # -- held-out mAP -----------------------------------------------------------------------
    map_value, class_ap = held_out_map(model, config, data, precision)
    run_log.write({"epoch": training.epochs_done, "held_out_map": map_value, "held_out_images": len(data.held_out)})

    # -- proxies, in a work area ------------------------------------------------------------
    digest = weights_digest(model)
    area_config = _cam_area_config(config, data, digest)
    shapes = np.zeros_like(data.shapes)
    shapes[data.tagged] = data.shapes[data.tagged]
    cam_started = time.time()
    with open_work_area(data.path, COMMAND, area_config, ids=data.ids, columns=(), label_shapes=shapes) as area:
        done = area.done
        todo = data.tagged[~done[data.tagged]]
        resumed = len(data.tagged) - len(todo)
        if resumed:
            events.note(f"resuming the proxies: {resumed} of {len(data.tagged)} were made before")
        events.start(len(data.tagged), resumed, label="proxies")
        _make_proxies(model, config, data, area, todo, precision, events)
        cam_seconds = time.time() - cam_started

        # -- the proxies against ground truth ----------------------------------------------
        miou, miou_per_image, with_gt = _proxy_quality(area, data)
        run_log.write({"epoch": training.epochs_done, "proxies": len(data.tagged), "proxy_miou": miou,
                       "proxy_miou_per_image": miou_per_image, "with_gt": with_gt,
                       "cam_images_per_s": len(todo) / cam_seconds if len(todo) and cam_seconds > 0 else None})
        run_log.close()

        # -- one transaction: the proxy set ------------------------------------------------
        counts = {"samples": len(data.ids), "tagged": len(data.tagged), "train": len(data.train),
                  "held_out": len(data.held_out), "proxies": len(data.tagged), "with_gt": with_gt,
                  "cams_resumed": resumed}
        facts = {"classifier": str(training.checkpoint.path), "classifier_digest": digest,
                 "held_out_map": map_value, "proxy_miou": miou, "proxy_miou_per_image": miou_per_image,
                 "counts": counts, **precision.to_dict(), "bn_frozen": model.bn_frozen}
        resolved = {**to_dict(config), **facts}
        done = area.done
        maps = (area.label_map(i) if done[i] else None for i in range(len(data.ids)))
        with store_mod.transaction(data.path, command=COMMAND, config=resolved, started=started) as tx:
            tx.put_label_maps(config.proxy, maps, config=resolved, command=COMMAND, overwrite=config.overwrite)
        remove_work_area(area)
    log.info("wrote %d proxies as set %r to %s", len(data.tagged), config.proxy, data.path)
    trained = training.images_seen
    return PseudoLabelResult(
        proxy=config.proxy, output=str(out), classifier=str(training.checkpoint.path), backbone_file=str(backbone_file),
        log=str(run_log.path), config_file=str(config_file), map=map_value, class_ap=class_ap, miou=miou,
        miou_per_image=miou_per_image, counts=counts, rare_classes=data.rare, epochs=config.epochs,
        resumed_from=training.start_epoch, train_seconds=train_seconds, cam_seconds=cam_seconds,
        train_images_per_s=trained / train_seconds if trained and train_seconds > 0 else None,
        cam_images_per_s=len(todo) / cam_seconds if len(todo) and cam_seconds > 0 else None,
        config=resolved, seconds=time.time() - started)
