"""``retrain``: SAL-Net joint training with the selection and attention losses (Section III-D).

One process, or many through ``torchrun`` (DistributedDataParallel, one rank per GPU).  The
paper's protocol is the default for each backbone (``salcurate.paper.PROTOCOLS``); every value
is a setting of :class:`RetrainConfig`, and the resolved config is saved as ``config.toml``
(what ``salcurate retrain --config`` reads back) and ``config.json``, in every checkpoint and in
the store's run log.  The mechanics (precision, checkpoints, logs, Ctrl-C, DDP) are the shared
training harness's (``salcurate.training.harness``).

Files under ``config.output`` (written by rank 0 only):

* ``checkpoint.pt`` every ``checkpoint_every`` iterations, on Ctrl-C and at the end: model,
  optimizer and iteration.  ``resume`` continues from it exactly: the poly schedule is a
  function of the iteration, the sample stream and each draw's augmentation are functions of
  ``(seed, position)``, and dropout is re-seeded from ``(seed, iteration, rank)``.
* ``model.pt``: the final weights (what ``predict`` and ``evaluate`` load).
* ``log.jsonl``: a line per ``log_every`` iterations (loss terms, learning rate, iterations/s) and
  per validation (mIoU, pixel accuracy); TensorBoard event files in ``tb/`` when installed.
* ``config.toml`` and ``config.json``: the resolved settings (and, in the JSON, what the run found).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from salcurate import distributed as ddp
from salcurate.config import Choice, choice, setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.data.workarea import ids_fingerprint
from salcurate.errors import InputError, SalcurateError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.nn.cam import scaled_size
from salcurate.nn.device import Device, resolve_device
from salcurate.nn.salnet import SALNet, SALNetConfig, read_model_file, save_model
from salcurate.paper import LAMBDA, PROTOCOLS, SALNET_BATCH, SALNET_CROP
from salcurate.training.data import (
    Augment,
    EvalSet,
    RetrainSet,
    Sample,
    StreamSampler,
    TrainingPlan,
    plan_indices,
    plan_training,
    validation_indices,
)
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
from salcurate.training.losses import AttentionLoss, sal_loss
from salcurate.training.warmstart import WarmStart, classifier_scale, is_classifier_file, start_from_classifier

log = logging.getLogger(__name__)

COMMAND = "retrain"
#: The heads' learning-rate multiplier: DeepLab-v2's for heads from random, and for heads that start
#: as a tag classifier's CAMs (on the realistic benchmark 10 swung val mIoU between 11 and 21 % from
#: one validation to the next; 1 kept it at 18-19 %).
HEAD_LR_MULT, HEAD_LR_MULT_FROM_CLASSIFIER = 10.0, 1.0
#: Starting from a tag classifier, training scales more than this factor away from the
#: classifier's own are warned about.
SCALE_TOLERANCE = 1.5


class Backbone(Choice):
    """SAL-Net's backbone (DeepLab-v2 at output stride 8)."""

    vgg16 = "vgg16"
    resnet18 = "resnet18"
    resnet50 = "resnet50"
    resnet101 = "resnet101"


class Attention(Choice):
    """How the classification branch acts: Eq. 11's product (paper), a second task only, or none."""

    multiply = "multiply"
    multitask = "multitask"
    off = "off"


def _protocol_help(key: str) -> str:
    """The paper's value of ``key`` per backbone family, for a help text ("1e-3 vgg16, 1e-4 resnets")."""
    def fmt(v: float) -> str:
        return f"{v:.0e}".replace("e-0", "e-") if v < 0.1 else f"{v:g}"

    return f"{fmt(PROTOCOLS['vgg16'][key])} vgg16, {fmt(PROTOCOLS['resnet101'][key])} resnets"


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """Settings of ``retrain``; None = the paper's value for the backbone (resolved by :meth:`resolved`).

    ``selection``: a selection's name, or ``"none"`` (or None) to train on every proxy (P2).
    """

    store: str = store_setting()
    selection: str | None = setting(None, "Selection to train on (from `salcurate select`); none = every proxy (P2).")
    output: str | None = setting(None, "Run folder (default runs/SELECTION).", short="-o", run_only=True)
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    backbone: Backbone = setting(Backbone.vgg16, "vgg16, resnet101, resnet50 or resnet18.")
    backbone_weights: str = setting("imagenet", "imagenet (from the local torch cache), a torchvision .pth file, "
                                                "a tag classifier (classifier.pt of `salcurate pseudo-label`: its "
                                                "backbone, and its CAMs as the heads), or none (random).")
    sample: Sample = setting(Sample.selected, "selected: draw only kept images (paper); all: every image, L_sel "
                                              "weighted by w.")
    split: str = setting("train", "Split to train on.")
    val_split: str = setting("val", "Split with ground truth for validation mIoU.")
    use_strong: bool = setting(True, "Strong samples train on their ground truth with w = 1.",
                               flag="--strong/--no-strong")
    attention: Attention = setting(Attention.multiply, "multiply (Eq. 11, paper), multitask (released code) or off "
                                                       "(no classification branch).")
    attention_loss: AttentionLoss = setting(AttentionLoss.bce, "bce (positive and negative terms) or positive "
                                                               "(Eq. 12 as printed).")
    lam: float = setting(LAMBDA, f"Weight of the attention loss (Eq. 14; paper {LAMBDA:g}).", flag="--lambda")
    batch_size: int = setting(SALNET_BATCH, f"Images per iteration and process (paper {SALNET_BATCH}).")
    crop: int = setting(SALNET_CROP, f"Random crop side (paper {SALNET_CROP}); smaller images are padded.")
    scale_min: float = setting(0.5, "Smallest random scale.")
    scale_max: float = setting(1.5, "Largest random scale.")
    flip: bool = setting(True, "Random horizontal flips.", flag="--flip/--no-flip")
    val_scale: float = setting(1.0, "Scale at which validation images are predicted (near your training scales).")
    lr: float | None = setting(None, f"Base learning rate (default: {_protocol_help('lr')}).")
    max_iter: int | None = setting(None, f"Iterations (default: {_protocol_help('max_iter')}).")
    momentum: float = setting(0.9, "SGD momentum (paper 0.9).")
    weight_decay: float = setting(5e-4, "SGD weight decay (paper 5e-4).")
    power: float = setting(0.9, "Poly schedule power.")
    head_lr_mult: float | None = setting(None, "Heads learn this many times faster than the backbone (default: 10, "
                                               "DeepLab-v2's, for heads from random; 1 for heads started from a tag "
                                               "classifier, which 10 pulls away from what it knows).")
    freeze_bn: bool | None = setting(None, "Batch-norm fixed (default: when ImageNet weights are loaded).",
                                     flag="--freeze-bn/--train-bn")
    device: Device = setting(Device.auto, "auto (CUDA when present), cpu or cuda.", run_only=True)
    amp: bool | None = setting(None, "bf16 autocast (default: on CUDA).", flag="--amp/--no-amp")
    channels_last: bool | None = setting(None, "Channels-last memory format (default: on CUDA).",
                                         flag="--channels-last/--no-channels-last")
    compile: bool = setting(False, "torch.compile the model.", run_only=True)
    workers: int = setting(2, "Data-loader processes per rank.", min=0, run_only=True)
    seed: int = setting(0, "Seed of the initial weights (those not loaded), the sample order, the augmentation and "
                           "dropout.")
    checkpoint_every: int = setting(1000, "Iterations between checkpoints (a killed run loses at most this many).",
                                    run_only=True)
    val_every: int = setting(0, "Iterations between validations (0: at the end only).", run_only=True)
    val_limit: int | None = setting(None, "Validate on at most this many images.", run_only=True)
    log_every: int = setting(20, "Iterations per line of log.jsonl.", run_only=True)
    tensorboard: bool = setting(True, "Also write TensorBoard events when installed.",
                                flag="--tensorboard/--no-tensorboard", run_only=True)
    resume: bool = setting(False, "Continue the run in the output folder.", run_only=True)

    def resolved(self) -> RetrainConfig:
        """Choices as enums, ``selection`` None as ``"none"``, the paper's protocol and the
        default output folder filled in."""
        backbone = Backbone(self.backbone)
        selection = "none" if self.selection is None or self.selection.lower() == "none" else self.selection
        p = PROTOCOLS[str(backbone)]
        return dataclasses.replace(
            self, backbone=backbone, selection=selection,
            output=self.output if self.output is not None else str(Path("runs") / ("all" if selection == "none"
                                                                                  else selection)),
            attention=choice(Attention, self.attention, "attention"),
            attention_loss=choice(AttentionLoss, self.attention_loss, "attention_loss"),
            sample=choice(Sample, self.sample, "sample"), device=choice(Device, self.device, "device"),
            lr=float(p["lr"]) if self.lr is None else self.lr,
            head_lr_mult=(self.head_lr_mult if self.head_lr_mult is not None
                          else HEAD_LR_MULT_FROM_CLASSIFIER if is_classifier_file(self.backbone_weights)
                          else HEAD_LR_MULT),
            max_iter=int(p["max_iter"]) if self.max_iter is None else self.max_iter)

    @property
    def selection_name(self) -> str | None:
        """The selection to read from the store (None: every proxy)."""
        return None if self.selection is None or self.selection.lower() == "none" else self.selection


def _check(c: RetrainConfig) -> None:
    if c.batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {c.batch_size}", param="batch_size")
    if c.crop < 16:
        raise InputError(f"crop must be at least 16 pixels, got {c.crop}", param="crop")
    if c.head_lr_mult is None or not (c.head_lr_mult > 0 and math.isfinite(c.head_lr_mult)):
        raise InputError(f"head_lr_mult must be a positive number, got {c.head_lr_mult}", param="head_lr_mult")
    if not (0 < c.val_scale <= 8 and math.isfinite(c.val_scale)):
        raise InputError(f"val_scale must be in (0, 8], got {c.val_scale}", param="val_scale")
    if not 0 < c.scale_min <= c.scale_max:
        raise InputError(f"scale_min/scale_max must satisfy 0 < min <= max, got {c.scale_min} and {c.scale_max}",
                         param=("scale_min", "scale_max"))
    if not (c.lr is not None and c.lr > 0 and math.isfinite(c.lr)):
        raise InputError(f"lr must be a positive number, got {c.lr}", param="lr")
    if c.max_iter is None or c.max_iter < 1:
        raise InputError(f"max_iter must be at least 1, got {c.max_iter}", param="max_iter")
    if c.lam < 0 or not math.isfinite(c.lam):
        raise InputError(f"lam must be >= 0, got {c.lam}", param="lam")
    if c.checkpoint_every < 1 or c.log_every < 1 or c.val_every < 0:
        raise InputError("checkpoint_every and log_every must be >= 1 and val_every >= 0",
                         param=("checkpoint_every", "log_every", "val_every"))


@dataclasses.dataclass(frozen=True)
class RetrainResult(Result):
    output: str
    model: str
    checkpoint: str
    log: str
    iterations: int
    resumed_from: int
    final: dict[str, Any]
    validation: dict[str, Any] | None
    counts: dict[str, int]
    config: dict[str, Any]
    seconds: float


def run(config: RetrainConfig, *, events: Events | None = None) -> RetrainResult:
    """Train SAL-Net on the store's (selected) proxy annotations; see the module docstring.

    ``events`` (rank 0 only): a note on what the run trains on, ``start(max_iter, start)``,
    ``advance(1, lr=..., loss=..., loss_sel=..., loss_atten=...)`` per iteration (the loss terms
    of the last logged window) and ``metrics`` for each line of ``log.jsonl`` (loss windows and
    validations, the latter with ``val_miou``).
    """
    return _train(config, events=events, indices=None)


def train_on_indices(config: RetrainConfig, indices: np.ndarray, *, events: Events | None = None) -> RetrainResult:
    """Train SAL-Net on the proxies of the store samples ``indices`` (any split; ``selection``,
    ``split``, ``use_strong`` and validation do not apply), for a command that trains models as a
    step of its own work (``score-model``'s folds): the run folder, checkpoints and ``resume`` are
    :func:`run`'s, the indices are part of the checkpoint's recipe, and the store's run log gets
    no entry (the calling command records its own)."""
    return _train(config, events=events, indices=np.asarray(indices))


def _train(config: RetrainConfig, *, events: Events | None, indices: np.ndarray | None) -> RetrainResult:
    started = time.time()
    config = config.resolved()
    _check(config)
    config = resolve_proxy(config)
    with ddp.session(resolve_device(config.device)) as (info, device):
        precision = Precision(device, amp=config.amp, channels_last=config.channels_last)
        return _Trainer(config, precision, info, events or NO_EVENTS, indices=indices).train(started)


def resolve_proxy(config: RetrainConfig) -> RetrainConfig:
    """The config with its proxy set resolved: the one named; by default the set the selection was
    made from (its rule records it), else the store's default (the imported set, or the only one).
    The imported set chosen by default stays None, so configs and checkpoints of runs on the
    imported proxies read as before."""
    selection = config.selection_name
    with store_mod.MaskStore(config.store) as st:
        made_from = None
        if selection is not None and selection in st.selection_names():
            made_from = (st.selection_meta(selection).get("rule") or {}).get("proxy")
        proxy = st.resolve_proxy(config.proxy if config.proxy is not None else made_from)
    if made_from is not None and proxy != made_from:
        # set names in brackets: the CLI writes the word for the setting as its flag
        raise InputError(f"selection {selection!r} was made from the proxies [{made_from}], not [{proxy}]; leave "
                         f"proxy out to train on [{made_from}] or choose a selection made from [{proxy}]",
                         param="proxy")
    if config.proxy is None and proxy == store_mod.IMPORTED_PROXY:
        return config
    return dataclasses.replace(config, proxy=proxy)


@dataclasses.dataclass(frozen=True)
class _StoreView:
    """What a run needs from the store (read once, then the store is closed)."""

    plan: TrainingPlan
    class_names: list[str]
    val_idx: np.ndarray
    ids_digest: str


def _read_store(config: RetrainConfig, indices: np.ndarray | None = None) -> _StoreView:
    selection = config.selection_name
    with store_mod.MaskStore(config.store) as st:
        if indices is not None:  # train_on_indices: the caller's samples, no validation
            plan = plan_indices(st, indices, proxy=config.proxy or store_mod.IMPORTED_PROXY)
            max_side = int(max(st.heights[plan.indices].max(), st.widths[plan.indices].max()))
            view = _StoreView(plan, list(st.class_names), np.empty(0, np.int64), ids_fingerprint(st.ids))
        elif selection is not None and selection not in st.selection_names():
            have = ", ".join(st.selection_names()) or "none"
            raise InputError(f"{st.path}: no selection {selection!r} (the store has: {have}); make one with "
                             "`salcurate select`, or choose selection none to train on every proxy")
        else:
            plan = plan_training(st, split=config.split, selection=selection, sample=config.sample,
                                 use_strong=config.use_strong, proxy=config.proxy or store_mod.IMPORTED_PROXY)
            val_idx = (validation_indices(st, config.val_split, config.val_limit)
                       if config.val_split in st.split_names() else np.empty(0, np.int64))
            max_side = int(max(st.heights[plan.indices].max(), st.widths[plan.indices].max()))
            view = _StoreView(plan, list(st.class_names), val_idx, ids_fingerprint(st.ids))
    if config.batch_size > plan.counts["kept"]:
        raise InputError(f"batch_size {config.batch_size} is larger than the {plan.counts['kept']} images the "
                         "selection keeps; lower batch_size or keep more images (a lower tau)", param="batch_size")
    if config.attention != Attention.off and config.lam > 0 and not plan.has_tags.any():
        raise InputError("the training images have no image tags, which L_atten learns from; import tags with tags "
                         "or tags_from_gt (`salcurate import`), or pass attention off", param="attention")
    if config.crop > max_side * config.scale_max:
        log.warning("crop %d is larger than every scaled training image (largest side %d x %.2f): crops are padded "
                    "with the mean and label 255, as DeepLab does", config.crop, max_side, config.scale_max)
    return view


def _eval_confusion(model: torch.nn.Module, loader: DataLoader, num_classes: int, precision: Precision,
                    info: ddp.DistInfo, scale: float = 1.0) -> np.ndarray:
    """Single-scale confusion matrix over this rank's share of the validation images, summed over ranks."""
    from salcurate.segmentation_metrics import confusion_matrix

    cm = np.zeros((num_classes, num_classes), np.int64)
    model.eval()
    with torch.no_grad(), precision.autocast():
        for x, y in loader:
            if scale != 1.0:
                size = tuple(int(v) for v in scaled_size(x.shape[-2], x.shape[-1], scale))
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            probs = model(x.to(precision.device)).probabilities()  # upsampled as probabilities, as `evaluate` does
            pred = F.interpolate(probs, size=y.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            cm += confusion_matrix(pred.cpu().numpy(), y.numpy(), num_classes=num_classes)  # the one implementation
    model.train()
    return ddp.all_reduce_sum(torch.from_numpy(cm).to(precision.device), info).cpu().numpy()


def _validation_metrics(cm: np.ndarray) -> dict[str, Any]:
    from salcurate.segmentation_metrics import iou_from_confusion, mean_iou, pixel_accuracy

    iou = iou_from_confusion(cm)
    return {"val_miou": mean_iou(cm), "val_pixel_accuracy": pixel_accuracy(cm),
            "val_iou": [None if not np.isfinite(v) else float(v) for v in iou]}


class _Trainer:
    """One run's state: model, optimizer, loaders, log; :meth:`train` is the training loop."""

    def __init__(self, config: RetrainConfig, precision: Precision, info: ddp.DistInfo, events: Events, *,
                 indices: np.ndarray | None = None) -> None:
        assert config.max_iter is not None and config.lr is not None and config.output is not None
        assert config.head_lr_mult is not None
        self.config, self.precision, self.info, self.events = config, precision, info, events
        # -- what the run reads and resumes from --------------------------------------------
        out = Path(config.output)
        self.out, self.model_path = out, out / "model.pt"
        self.data = _read_store(config, indices)
        self.own_run = indices is None  # train_on_indices: the calling command logs the run
        chosen = {} if indices is None else {"train_indices": ids_fingerprint([str(i) for i in self.data.plan.indices])}
        recipe = recipe_of(config, world_size=info.world, store_ids=self.data.ids_digest, **chosen)
        self.checkpoint = Checkpoint(out / "checkpoint.pt", recipe, write=self._write_checkpoint, read=read_model_file,
                                     main=info.main)
        payload = self.checkpoint.resume(config.resume, refuse_existing=True)
        self.start_iter = int(payload["iteration"]) if payload is not None else 0
        self.iteration = self.start_iter
        self.last_metrics: dict[str, Any] = dict(payload.get("metrics") or {}) if payload is not None else {}

        # -- model and optimizer ------------------------------------------------------------
        frozen = config.freeze_bn if config.freeze_bn is not None else config.backbone_weights != "none"
        self.model_cfg = SALNetConfig(backbone=str(config.backbone), num_classes=len(self.data.class_names) - 1,
                                      attention=str(config.attention), freeze_bn=frozen)
        torch.manual_seed(config.seed)
        from_classifier = is_classifier_file(config.backbone_weights)
        self.model = SALNet(self.model_cfg, backbone_weights="none" if payload is not None or from_classifier
                            else config.backbone_weights)
        if payload is not None:
            self.model.load_state_dict(payload["state_dict"])
            self.warm_start = (payload.get("retrain") or {}).get("warm_start")
        elif from_classifier:
            self.warm_start = self._start_from_classifier(config).to_dict()
        else:
            self.warm_start = None
        self.fwd: Any = prepare_model(self.model, precision, info, compile=config.compile)
        backbone_params, head_params = self.model.parameter_groups()
        self.opt = torch.optim.SGD(
            [{"params": backbone_params, "lr": config.lr, "mult": 1.0},
             {"params": head_params, "lr": config.lr * config.head_lr_mult, "mult": config.head_lr_mult}],
            lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        if payload is not None:
            restore_optimizer(self.opt, payload["optimizer"])

        # -- data ---------------------------------------------------------------------------
        aug = Augment(crop=config.crop, scale_min=config.scale_min, scale_max=config.scale_max, flip=config.flip)
        sampler = StreamSampler(len(self.data.plan), seed=config.seed, rank=info.rank, world=info.world,
                                start=self.start_iter * config.batch_size)
        cuda = precision.device.type == "cuda"
        self.loader = DataLoader(RetrainSet(config.store, self.data.plan, aug, seed=config.seed, rank=info.rank),
                                 sampler=sampler, batch_size=config.batch_size, num_workers=config.workers,
                                 pin_memory=cuda, drop_last=True)
        self.val_loader = DataLoader(EvalSet(config.store, self.data.val_idx[info.rank::info.world]), batch_size=1,
                                     num_workers=min(config.workers, 1))

        # -- files (rank 0) -----------------------------------------------------------------
        self.resolved = {**to_dict(config), "world_size": info.world, **precision.to_dict(),
                         "bn_frozen": self.model.bn_frozen, "warm_start": self.warm_start}
        if info.main:
            out.mkdir(parents=True, exist_ok=True)
        facts = {"retrain": self.resolved, "model": self.model_cfg.to_dict(), "counts": self.data.plan.counts,
                 "class_names": self.data.class_names}
        write_config(out / "config.toml", config, command=COMMAND, json_path=out / "config.json", facts=facts,
                     main=info.main)
        self.log = RunLog(out / "log.jsonl", step="iteration", tensorboard=out / "tb" if config.tensorboard else None,
                          events=events, main=info.main)

    def _start_from_classifier(self, config: RetrainConfig) -> WarmStart:
        """Backbone and heads from the tag classifier (``salcurate.training.warmstart``); warns when the
        training's scales are far from the classifier's."""
        plan, mid = self.data.plan, (config.scale_min + config.scale_max) / 2
        with store_mod.MaskStore(config.store) as st:
            start = start_from_classifier(self.model, config.backbone_weights, store=st, indices=plan.indices,
                                          label_kinds=plan.label_kind, scale=mid, seed=config.seed,
                                          device=self.precision.device)
            heights, widths = st.heights[plan.indices], st.widths[plan.indices]
        if start.classifier_input_size is not None:
            fit = classifier_scale(start.classifier_input_size, heights, widths)
            if not fit / SCALE_TOLERANCE <= mid <= fit * SCALE_TOLERANCE:
                log.warning("the tag classifier saw images of longer side %d px, about scale %.2f of these; training "
                            "at scales %g-%g puts objects at sizes its features never saw: pass scale_min %.2f and "
                            "scale_max %.2f (and val_scale %.2f)", start.classifier_input_size, fit,
                            config.scale_min, config.scale_max, 0.75 * fit, 1.25 * fit, fit)
        return start

    # -- checkpoints ------------------------------------------------------------------------
    def _write_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        save_model(path, self.model, class_names=self.data.class_names, extra=state)

    def save(self, *, final: bool = False, interrupted: bool = False) -> None:
        if not self.info.main:
            return
        self.checkpoint.save({"iteration": self.iteration, "retrain": self.resolved,
                              "optimizer": optimizer_state(self.opt), "interrupted": interrupted,
                              "metrics": self.last_metrics})
        if final:
            save_model(self.model_path, self.model, class_names=self.data.class_names,
                       extra={"iteration": self.iteration, "retrain": self.resolved, "metrics": self.last_metrics})

    def _save_interrupted(self) -> str:
        self.save(interrupted=True)
        return f"at iteration {self.iteration}"

    # -- work -------------------------------------------------------------------------------
    def validate(self) -> dict[str, Any] | None:
        if len(self.data.val_idx) == 0:
            return None
        # the bare model: a DDP forward would wait for ranks that hold fewer validation images
        cm = _eval_confusion(self.model, self.val_loader, len(self.data.class_names), self.precision, self.info,
                             self.config.val_scale)
        metrics = _validation_metrics(cm)
        self.log.write({"iteration": self.iteration, "val_miou": metrics["val_miou"],
                        "val_pixel_accuracy": metrics["val_pixel_accuracy"], "val_images": len(self.data.val_idx)})
        return metrics

    def step(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, float]:
        """One SGD iteration; returns the detached loss terms (L, L_sel, L_atten) and the learning rate."""
        c, dev = self.config, self.precision.device
        x, y, w, tags, has_tags = batch
        x = self.precision.inputs(x)
        y, w, tags, has_tags = (t.to(dev, non_blocking=True) for t in (y, w, tags, has_tags))
        assert c.lr is not None and c.max_iter is not None
        lr = poly_lr(c.lr, self.iteration, c.max_iter, c.power)
        for g in self.opt.param_groups:
            g["lr"] = lr * g["mult"]
        # dropout, exact on resume
        torch.manual_seed(c.seed * 1_000_003 + self.iteration * self.info.world + self.info.rank)
        with self.precision.autocast():
            o = self.fwd(x)
        attended = F.interpolate(o.attended.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss, l_sel, l_att = sal_loss(attended, o.classification, y, w, tags, lam=c.lam, form=str(c.attention_loss),
                                      tag_mask=has_tags)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return torch.stack([loss.detach(), l_sel.detach(), l_att.detach()]).double(), lr

    def log_window(self, sums: torch.Tensor, n: int, seconds: float, lr: float) -> None:
        """Mean loss terms of the last ``n`` iterations over all ranks, into the log."""
        means = ddp.all_reduce_sum(sums.clone(), self.info) / (n * self.info.world)
        loss_v, sel_v, att_v = (float(v) for v in means.cpu())
        if not math.isfinite(loss_v):
            raise SalcurateError(f"the loss became {loss_v} at iteration {self.iteration}; lower lr "
                                 f"(now {self.config.lr}) or check the data", param="lr")
        self.last_metrics = {"iteration": self.iteration, "loss": loss_v, "loss_sel": sel_v, "loss_atten": att_v,
                             "lr": lr, "iterations_per_s": n / max(seconds, 1e-9)}
        self.log.write(self.last_metrics)

    def _status(self, lr: float) -> dict[str, float]:
        m = self.last_metrics
        losses = {k: m[k] for k in ("loss", "loss_sel", "loss_atten") if m.get(k) is not None}
        return {"lr": lr, **losses}

    def _announce(self) -> None:
        c, counts = self.config, self.data.plan.counts
        resuming = f"; resuming at iteration {self.start_iter}" if self.start_iter else ""
        if not self.own_run:
            self.events.note(f"training on {counts['drawable']} chosen images; {self.precision.device}{resuming}")
            self.events.start(int(c.max_iter or 0), self.start_iter, label="retraining")
            return
        self.events.note(
            f"training on {counts['drawable']} images of {counts['split']} in split {c.split!r} "
            f"({counts['kept']} kept, {counts['strong']} strong), validating on {len(self.data.val_idx)}; "
            f"{self.precision.device}, {self.info.world} process(es){resuming}")
        self.events.start(int(c.max_iter or 0), self.start_iter, label="retraining")

    def train(self, started: float) -> RetrainResult:
        c = self.config
        assert c.max_iter is not None
        if self.info.main:
            self._announce()
        sums = torch.zeros(3, dtype=torch.float64, device=self.precision.device)
        window_n, window_t = 0, time.time()
        self.fwd.train()
        with checkpoint_on_interrupt(self._save_interrupted, self.checkpoint.path):
            batches = iter(self.loader)
            while self.iteration < c.max_iter:
                terms, lr = self.step(next(batches))
                self.iteration += 1
                sums += terms
                window_n += 1
                if self.iteration % c.log_every == 0 or self.iteration == c.max_iter:
                    now = time.time()
                    self.log_window(sums, window_n, now - window_t, lr)
                    sums.zero_()
                    window_n, window_t = 0, now
                if self.info.main:
                    self.events.advance(1, **self._status(lr))
                if c.val_every and self.iteration % c.val_every == 0 and self.iteration < c.max_iter:
                    self.validate()
                if self.iteration % c.checkpoint_every == 0 and self.iteration < c.max_iter:
                    self.save()
        validation = self.validate()
        if validation is not None:
            self.last_metrics = {**self.last_metrics, "val_miou": validation["val_miou"],
                                 "val_pixel_accuracy": validation["val_pixel_accuracy"]}
        self.save(final=True)
        self.log.close()
        if self.info.main and self.own_run:
            with store_mod.transaction(c.store, command=COMMAND, config=self.resolved, started=started):
                pass
        ddp.barrier(self.info)
        return RetrainResult(output=str(self.out), model=str(self.model_path), checkpoint=str(self.checkpoint.path),
                             log=str(self.log.path), iterations=self.iteration, resumed_from=self.start_iter,
                             final=self.last_metrics, validation=validation, counts=self.data.plan.counts,
                             config=self.resolved, seconds=time.time() - started)
