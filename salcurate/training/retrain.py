"""``retrain``: SAL-Net joint training with the selection and attention losses (Section III-D).

One process, or many through ``torchrun`` (DistributedDataParallel, one rank per GPU).  The
paper's protocol is the default for each backbone (:data:`PROTOCOLS`); every value is an
option of :class:`RetrainConfig`, and the resolved config is saved in ``config.json``, in every
checkpoint and in the store's run log.

Files under ``config.output`` (written by rank 0 only):

* ``checkpoint.pt`` every ``checkpoint_every`` iterations, on Ctrl-C and at the end: model,
  optimizer and iteration.  ``resume`` continues from it exactly: the poly schedule is a
  function of the iteration, the sample stream and each draw's augmentation are functions of
  ``(seed, position)``, and dropout is re-seeded from ``(seed, iteration, rank)``.
* ``model.pt``: the final weights (what ``predict`` and ``evaluate`` load).
* ``log.jsonl``: a line per ``log_every`` iterations (loss terms, learning rate, iterations/s) and
  per validation (mIoU, pixel accuracy); TensorBoard event files in ``tb/`` when installed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from salcurate.data import store as store_mod
from salcurate.data.workarea import ids_fingerprint
from salcurate.errors import InputError, SalcurateError
from salcurate.nn.device import resolve_device
from salcurate.nn.salnet import BACKBONES, SALNet, SALNetConfig, read_model_file, save_model
from salcurate.training import distributed as ddp
from salcurate.training.data import (
    Augment,
    EvalSet,
    RetrainSet,
    StreamSampler,
    TrainingPlan,
    plan_training,
    validation_indices,
)
from salcurate.training.losses import ATTENTION_LOSSES, sal_loss

log = logging.getLogger(__name__)

COMMAND = "retrain"
#: The paper's protocol per backbone (Section IV-A): base learning rate and iterations.  The
#: paper gives VGG16 and ResNet101; ResNet18/50 take ResNet101's.
PROTOCOLS: dict[str, dict[str, float]] = {
    "vgg16": {"lr": 1e-3, "max_iter": 27000},
    "resnet101": {"lr": 1e-4, "max_iter": 15000},
    "resnet50": {"lr": 1e-4, "max_iter": 15000},
    "resnet18": {"lr": 1e-4, "max_iter": 15000},
}
#: Settings that do not change the trained weights (a resumed run may change them).
_RUN_ONLY = ("output", "resume", "device", "workers", "log_every", "checkpoint_every", "val_every", "val_limit",
             "compile", "tensorboard")


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """Settings of ``retrain``; None = the paper's value for the backbone (resolved by :meth:`resolved`)."""

    store: str = "masks.h5"
    output: str = "runs/salnet"
    backbone: str = "vgg16"
    backbone_weights: str = "imagenet"  # imagenet (local torch cache) | PATH | none
    selection: str | None = None  # None: every proxy (P2)
    sample: str = "selected"
    split: str = "train"
    val_split: str = "val"
    use_strong: bool = True
    attention: str = "multiply"
    attention_loss: str = "bce"
    lam: float = 2.0
    batch_size: int = 7  # per process
    crop: int = 321
    scale_min: float = 0.5
    scale_max: float = 1.5
    flip: bool = True
    lr: float | None = None
    max_iter: int | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    head_lr_mult: float = 10.0
    freeze_bn: bool | None = None
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast; None = on CUDA
    channels_last: bool | None = None  # None = on CUDA
    compile: bool = False
    workers: int = 2
    seed: int = 0
    checkpoint_every: int = 1000
    val_every: int = 0  # 0 = validate once at the end
    val_limit: int | None = None
    log_every: int = 20
    tensorboard: bool = True
    resume: bool = False

    def resolved(self) -> RetrainConfig:
        if self.backbone not in BACKBONES:
            raise InputError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        p = PROTOCOLS[self.backbone]
        return dataclasses.replace(self, lr=float(p["lr"]) if self.lr is None else self.lr,
                                   max_iter=int(p["max_iter"]) if self.max_iter is None else self.max_iter)

    def recipe(self, world: int) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in _RUN_ONLY:
            d.pop(k)
        d["world_size"] = world
        return d


def _check(c: RetrainConfig) -> None:
    problems = []
    if c.batch_size < 1:
        problems.append(f"--batch-size must be at least 1, got {c.batch_size}")
    if c.crop < 16:
        problems.append(f"--crop must be at least 16 pixels, got {c.crop}")
    if not 0 < c.scale_min <= c.scale_max:
        problems.append(f"--scale-min/--scale-max must satisfy 0 < min <= max, got {c.scale_min} and {c.scale_max}")
    if not (c.lr is not None and c.lr > 0 and math.isfinite(c.lr)):
        problems.append(f"--lr must be a positive number, got {c.lr}")
    if c.max_iter is None or c.max_iter < 1:
        problems.append(f"--max-iter must be at least 1, got {c.max_iter}")
    if c.lam < 0 or not math.isfinite(c.lam):
        problems.append(f"--lambda must be >= 0, got {c.lam}")
    if c.attention_loss not in ATTENTION_LOSSES:
        problems.append(f"--attention-loss must be one of {', '.join(ATTENTION_LOSSES)}, got {c.attention_loss!r}")
    if c.checkpoint_every < 1 or c.log_every < 1 or c.val_every < 0:
        problems.append("--checkpoint-every and --log-every must be >= 1 and --val-every >= 0")
    if problems:
        raise InputError(problems[0])


def poly_lr(base: float, iteration: int, max_iter: int, power: float) -> float:
    """The poly schedule (Eq. 15): ``base (1 - iteration / max_iter) ^ power``."""
    return base * (1.0 - iteration / max_iter) ** power


@dataclasses.dataclass
class Progress:
    """What the progress callback gets after each iteration (rank 0)."""

    iteration: int
    max_iter: int
    lr: float
    #: The loss terms of the last ``log_every`` window (empty before the first).
    logged: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RetrainResult:
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


def _eval_confusion(model: torch.nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
                    amp: bool, info: ddp.DistInfo) -> np.ndarray:
    """Single-scale confusion matrix over this rank's share of the validation images, summed over ranks."""
    from salcurate.segmentation_metrics import confusion_matrix

    cm = np.zeros((num_classes, num_classes), np.int64)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for x, y in loader:
            probs = model(x.to(device)).probabilities()  # upsampled as probabilities, as `salcurate evaluate` does
            pred = F.interpolate(probs, size=y.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            cm += confusion_matrix(pred.cpu().numpy(), y.numpy(), num_classes=num_classes)  # the one implementation
    model.train()
    return ddp.all_reduce_sum(torch.from_numpy(cm).to(device), info).cpu().numpy()


def _validation_metrics(cm: np.ndarray) -> dict[str, Any]:
    from salcurate.segmentation_metrics import iou_from_confusion, mean_iou, pixel_accuracy

    iou = iou_from_confusion(cm)
    return {"val_miou": mean_iou(cm), "val_pixel_accuracy": pixel_accuracy(cm),
            "val_iou": [None if not np.isfinite(v) else float(v) for v in iou]}


def _tensorboard(out: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: the JSONL log is the record
        log.debug("tensorboard not installed; metrics go to log.jsonl only")
        return None
    return SummaryWriter(str(out / "tb"))


def retrain(config: RetrainConfig, *, on_start: Callable[[dict[str, Any]], None] | None = None,
            progress: Callable[[Progress], None] | None = None,
            on_validation: Callable[[int, dict[str, Any]], None] | None = None) -> RetrainResult:
    """Train SAL-Net on the store's (selected) proxy annotations; see the module docstring.

    ``on_start(summary)`` once (iterations to go, counts), ``progress(Progress)`` after every
    iteration and ``on_validation(iteration, metrics)``; all on rank 0 only.
    """
    started = time.time()
    config = config.resolved()
    _check(config)
    device = resolve_device(config.device)
    info, device = ddp.setup(device)
    try:
        trainer = _Trainer(config, device, info, started, progress, on_validation)
        if info.main:
            trainer.start_files()
            if on_start:
                on_start({"start": trainer.start_iter, "max_iter": config.max_iter, "counts": trainer.data.plan.counts,
                          "validation_images": int(len(trainer.data.val_idx)), "device": str(device),
                          "world_size": info.world})
        return trainer.run()
    finally:
        ddp.teardown(info)


@dataclasses.dataclass(frozen=True)
class _StoreView:
    """What a run needs from the store (read once, then the store is closed)."""

    plan: TrainingPlan
    class_names: list[str]
    val_idx: np.ndarray
    ids_digest: str


def _read_store(config: RetrainConfig) -> _StoreView:
    with store_mod.MaskStore(config.store) as st:
        if config.selection is not None and config.selection not in st.selection_names():
            have = ", ".join(st.selection_names()) or "none"
            raise InputError(f"{st.path}: no selection {config.selection!r} (the store has: {have}); make one with "
                             "`salcurate select`, or pass --selection none to train on every proxy")
        plan = plan_training(st, split=config.split, selection=config.selection, sample=config.sample,
                             use_strong=config.use_strong)
        val_idx = (validation_indices(st, config.val_split, config.val_limit) if config.val_split in st.split_names()
                   else np.empty(0, np.int64))
        max_side = int(max(st.heights[plan.indices].max(), st.widths[plan.indices].max()))
        view = _StoreView(plan, list(st.class_names), val_idx, ids_fingerprint(st.ids))
    if config.batch_size > plan.counts["kept"]:
        raise InputError(f"--batch-size {config.batch_size} is larger than the {plan.counts['kept']} images the selection "
                         "keeps; lower --batch-size or keep more images (a lower tau)")
    if config.attention != "off" and config.lam > 0 and not plan.has_tags.any():
        raise InputError("the training images have no image tags, which the attention loss learns from; import tags "
                         "(--tags or --tags-from-gt) or pass --attention off")
    if config.crop > max_side * config.scale_max:
        log.warning("--crop %d is larger than every scaled training image (largest side %d x %.2f): crops are padded "
                    "with the mean and label 255, as DeepLab does", config.crop, max_side, config.scale_max)
    return view


def _read_checkpoint(config: RetrainConfig, recipe: dict[str, Any], info: ddp.DistInfo) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a new run); refuses one made with other settings."""
    out = Path(config.output)
    ckpt_path = out / "checkpoint.pt"
    if not config.resume:
        if info.main and ckpt_path.exists():
            raise InputError(f"{out} already holds a run (checkpoint.pt); pass --resume to continue it, "
                             "or choose another -o folder")
        return None
    if not ckpt_path.exists():
        raise InputError(f"{ckpt_path}: no checkpoint to resume from; drop --resume to start training")
    payload = read_model_file(ckpt_path)
    saved = payload.get("recipe") or {}
    if saved != recipe:
        diff = sorted(k for k in set(recipe) | set(saved) if recipe.get(k) != saved.get(k))
        raise InputError(f"{ckpt_path}: the run was made with other settings ({', '.join(diff)} differ); resume "
                         "with the same options, or choose another -o folder to start anew")
    return payload


class _Trainer:
    """One run's state: model, optimizer, loaders, logs; :meth:`run` is the training loop."""

    def __init__(self, config: RetrainConfig, device: torch.device, info: ddp.DistInfo, started: float,
                 progress: Callable[[Progress], None] | None,
                 on_validation: Callable[[int, dict[str, Any]], None] | None) -> None:
        assert config.max_iter is not None and config.lr is not None
        self.config, self.device, self.info, self.started = config, device, info, started
        self.progress, self.on_validation = progress, on_validation
        out = Path(config.output)
        self.out, self.ckpt_path, self.model_path, self.log_path = (out, out / "checkpoint.pt", out / "model.pt",
                                                                    out / "log.jsonl")
        self.data = _read_store(config)
        self.recipe = json.loads(json.dumps({**config.recipe(info.world), "store_ids": self.data.ids_digest}))
        payload = _read_checkpoint(config, self.recipe, info)
        self.start_iter = int(payload["iteration"]) if payload is not None else 0
        self.last_metrics: dict[str, Any] = dict(payload.get("metrics") or {}) if payload is not None else {}

        frozen = config.freeze_bn if config.freeze_bn is not None else config.backbone_weights != "none"
        self.model_cfg = SALNetConfig(backbone=config.backbone, num_classes=len(self.data.class_names) - 1,
                                      attention=config.attention, freeze_bn=frozen)
        torch.manual_seed(config.seed)
        self.model = SALNet(self.model_cfg, backbone_weights="none" if payload is not None else config.backbone_weights)
        if payload is not None:
            self.model.load_state_dict(payload["state_dict"])
        self.amp = config.amp if config.amp is not None else device.type == "cuda"
        self.channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
        self.model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        backbone_params, head_params = self.model.parameter_groups()
        self.opt = torch.optim.SGD(
            [{"params": backbone_params, "lr": config.lr, "mult": 1.0},
             {"params": head_params, "lr": config.lr * config.head_lr_mult, "mult": config.head_lr_mult}],
            lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        if payload is not None:
            self.opt.load_state_dict(payload["optimizer"])
        net: torch.nn.Module = self.model
        if info.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
        self.fwd: Any = torch.compile(net) if config.compile else net

        aug = Augment(crop=config.crop, scale_min=config.scale_min, scale_max=config.scale_max, flip=config.flip)
        sampler = StreamSampler(len(self.data.plan), seed=config.seed, rank=info.rank, world=info.world,
                                start=self.start_iter * config.batch_size)
        self.loader = DataLoader(RetrainSet(config.store, self.data.plan, aug, seed=config.seed, rank=info.rank),
                                 sampler=sampler, batch_size=config.batch_size, num_workers=config.workers,
                                 pin_memory=device.type == "cuda", drop_last=True)
        self.val_loader = DataLoader(EvalSet(config.store, self.data.val_idx[info.rank::info.world]), batch_size=1,
                                     num_workers=min(config.workers, 1))
        self.resolved = json.loads(json.dumps(dataclasses.asdict(config)))
        self.resolved.update(world_size=info.world, device_used=str(device.type), amp_used=self.amp,
                             channels_last_used=self.channels_last, bn_frozen=self.model.bn_frozen)
        self.tb: Any = None

    # -- files (rank 0) -------------------------------------------------------------------
    def start_files(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(
            {"retrain": self.resolved, "model": self.model_cfg.to_dict(), "counts": self.data.plan.counts,
             "class_names": self.data.class_names}, indent=2) + "\n")
        self.tb = _tensorboard(self.out, self.config.tensorboard)

    def write_log(self, entry: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        if self.tb is not None:
            for k, v in entry.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, entry["iteration"])

    def save(self, iteration: int, *, final: bool = False, interrupted: bool = False) -> None:
        if not self.info.main:
            return
        names = self.data.class_names
        save_model(self.ckpt_path, self.model, class_names=names, extra={
            "iteration": iteration, "recipe": self.recipe, "retrain": self.resolved, "optimizer": self.opt.state_dict(),
            "interrupted": interrupted, "metrics": self.last_metrics})
        if final:
            save_model(self.model_path, self.model, class_names=names,
                       extra={"iteration": iteration, "retrain": self.resolved, "metrics": self.last_metrics})

    # -- work -------------------------------------------------------------------------------
    def validate(self, iteration: int) -> dict[str, Any] | None:
        if len(self.data.val_idx) == 0:
            return None
        # the bare model: a DDP forward would wait for ranks that hold fewer validation images
        cm = _eval_confusion(self.model, self.val_loader, len(self.data.class_names), self.device, self.amp, self.info)
        metrics = _validation_metrics(cm)
        if self.info.main:
            self.write_log({"iteration": iteration, "val_miou": metrics["val_miou"],
                            "val_pixel_accuracy": metrics["val_pixel_accuracy"], "val_images": len(self.data.val_idx)})
            if self.on_validation:
                self.on_validation(iteration, metrics)
        return metrics

    def step(self, batch: tuple[torch.Tensor, ...], iteration: int) -> tuple[torch.Tensor, float]:
        """One SGD iteration; returns the detached loss terms (L, L_sel, L_atten) and the learning rate."""
        c, dev = self.config, self.device
        x, y, w, tags, has_tags = (t.to(dev, non_blocking=True) for t in batch)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        assert c.lr is not None and c.max_iter is not None
        lr = poly_lr(c.lr, iteration, c.max_iter, c.power)
        for g in self.opt.param_groups:
            g["lr"] = lr * g["mult"]
        torch.manual_seed(c.seed * 1_000_003 + iteration * self.info.world + self.info.rank)  # dropout, exact on resume
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
            o = self.fwd(x)
        attended = F.interpolate(o.attended.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss, l_sel, l_att = sal_loss(attended, o.classification, y, w, tags, lam=c.lam, form=c.attention_loss,
                                      tag_mask=has_tags)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return torch.stack([loss.detach(), l_sel.detach(), l_att.detach()]).double(), lr

    def log_window(self, sums: torch.Tensor, n: int, seconds: float, iteration: int, lr: float) -> None:
        """Mean loss terms of the last ``n`` iterations over all ranks, into the log."""
        means = ddp.all_reduce_sum(sums.clone(), self.info) / (n * self.info.world)
        loss_v, sel_v, att_v = (float(v) for v in means.cpu())
        if not math.isfinite(loss_v):
            raise SalcurateError(f"the loss became {loss_v} at iteration {iteration}; lower --lr "
                                 f"(now {self.config.lr}) or check the data")
        self.last_metrics = {"iteration": iteration, "loss": loss_v, "loss_sel": sel_v, "loss_atten": att_v, "lr": lr,
                             "iterations_per_s": n / max(seconds, 1e-9)}
        if self.info.main:
            self.write_log(self.last_metrics)

    def run(self) -> RetrainResult:
        c = self.config
        assert c.max_iter is not None
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        window_n, window_t = 0, time.time()
        iteration = self.start_iter
        self.fwd.train()
        try:
            batches = iter(self.loader)
            while iteration < c.max_iter:
                terms, lr = self.step(next(batches), iteration)
                iteration += 1
                sums += terms
                window_n += 1
                if iteration % c.log_every == 0 or iteration == c.max_iter:
                    now = time.time()
                    self.log_window(sums, window_n, now - window_t, iteration, lr)
                    sums.zero_()
                    window_n, window_t = 0, now
                if self.progress and self.info.main:
                    self.progress(Progress(iteration, c.max_iter, lr, self.last_metrics))
                if c.val_every and iteration % c.val_every == 0 and iteration < c.max_iter:
                    self.validate(iteration)
                if iteration % c.checkpoint_every == 0 and iteration < c.max_iter:
                    self.save(iteration)
        except KeyboardInterrupt:
            self.save(iteration, interrupted=True)
            raise SalcurateError(f"interrupted at iteration {iteration}; checkpoint saved to {self.ckpt_path}: "
                                 "continue with --resume") from None
        validation = self.validate(iteration)
        if validation is not None:
            self.last_metrics = {**self.last_metrics, "val_miou": validation["val_miou"],
                                 "val_pixel_accuracy": validation["val_pixel_accuracy"]}
        self.save(iteration, final=True)
        if self.tb is not None:
            self.tb.close()
        if self.info.main:
            with store_mod.transaction(c.store, command=COMMAND, config=self.resolved, started=self.started):
                pass
        ddp.barrier(self.info)
        return RetrainResult(output=str(self.out), model=str(self.model_path), checkpoint=str(self.ckpt_path),
                             log=str(self.log_path), iterations=iteration, resumed_from=self.start_iter,
                             final=self.last_metrics, validation=validation, counts=self.data.plan.counts,
                             config=self.resolved, seconds=time.time() - self.started)
