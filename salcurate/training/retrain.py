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
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from salcurate import store as store_mod
from salcurate.errors import InputError, SalcurateError
from salcurate.nn.device import resolve_device
from salcurate.nn.salnet import BACKBONES, SALNet, SALNetConfig, read_model_file, save_model
from salcurate.training import distributed as ddp
from salcurate.training.data import (Augment, EvalSet, RetrainSet, StreamSampler, plan_training,
                                     validation_indices)
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
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            probs = model(x).probabilities()  # upsampled as probabilities, as `salcurate evaluate` does
            pred = F.interpolate(probs, size=y.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            valid = y != 255
            cm += torch.bincount(y[valid] * num_classes + pred[valid], minlength=num_classes * num_classes)
    model.train()
    return ddp.all_reduce_sum(cm, info).cpu().numpy().reshape(num_classes, num_classes)


def _validation_metrics(cm: np.ndarray) -> dict[str, Any]:
    from salcurate.evaluation.metrics import iou_from_confusion, mean_iou, pixel_accuracy

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
        return _retrain(config, device, info, started, on_start, progress, on_validation)
    finally:
        ddp.teardown(info)


def _retrain(config: RetrainConfig, device: torch.device, info: ddp.DistInfo, started: float,
             on_start: Callable[[dict[str, Any]], None] | None, progress: Callable[[Progress], None] | None,
             on_validation: Callable[[int, dict[str, Any]], None] | None) -> RetrainResult:
    assert config.max_iter is not None and config.lr is not None
    out = Path(config.output)
    ckpt_path, model_path, log_path = out / "checkpoint.pt", out / "model.pt", out / "log.jsonl"
    with store_mod.MaskStore(config.store) as st:
        if config.selection is not None and config.selection not in st.selection_names():
            have = ", ".join(st.selection_names()) or "none"
            raise InputError(f"{st.path}: no selection {config.selection!r} (the store has: {have}); make one with "
                             "`salcurate select`, or pass --selection none to train on every proxy")
        plan = plan_training(st, split=config.split, selection=config.selection, sample=config.sample,
                             use_strong=config.use_strong)
        class_names = list(st.class_names)
        val_idx = validation_indices(st, config.val_split, config.val_limit) if config.val_split in st.split_names() \
            else np.empty(0, np.int64)
        ids_digest = _ids_digest(st.ids)
        max_side = int(max(st.heights[plan.indices].max(), st.widths[plan.indices].max()))
    if config.batch_size > plan.counts["kept"]:
        raise InputError(f"--batch-size {config.batch_size} is larger than the {plan.counts['kept']} images the selection "
                         "keeps; lower --batch-size or keep more images (a lower tau)")
    if config.attention != "off" and config.lam > 0 and not plan.has_tags.any():
        raise InputError("the training images have no image tags, which the attention loss learns from; import tags "
                         "(--tags or --tags-from-gt) or pass --attention off")
    if config.crop > max_side * config.scale_max:
        log.warning("--crop %d is larger than every scaled training image (largest side %d x %.2f): crops are padded "
                    "with the mean and label 255, as DeepLab does", config.crop, max_side, config.scale_max)

    recipe = {**config.recipe(info.world), "store_ids": ids_digest}
    recipe = json.loads(json.dumps(recipe))
    frozen = config.freeze_bn if config.freeze_bn is not None else config.backbone_weights != "none"
    model_cfg = SALNetConfig(backbone=config.backbone, num_classes=len(class_names) - 1, attention=config.attention,
                             freeze_bn=frozen)
    start_iter = 0
    payload = None
    if config.resume:
        if not ckpt_path.exists():
            raise InputError(f"{ckpt_path}: no checkpoint to resume from; drop --resume to start training")
        payload = read_model_file(ckpt_path)
        if payload.get("recipe") != recipe:
            diff = sorted(k for k in set(recipe) | set(payload.get("recipe") or {})
                          if recipe.get(k) != (payload.get("recipe") or {}).get(k))
            raise InputError(f"{ckpt_path}: the run was made with other settings ({', '.join(diff)} differ); resume "
                             "with the same options, or choose another -o folder to start anew")
        start_iter = int(payload["iteration"])
    elif info.main and ckpt_path.exists():
        raise InputError(f"{out} already holds a run (checkpoint.pt); pass --resume to continue it, or choose another -o folder")

    torch.manual_seed(config.seed)
    weights = "none" if payload is not None else config.backbone_weights
    model = SALNet(model_cfg, backbone_weights=weights)
    if payload is not None:
        model.load_state_dict(payload["state_dict"])
    amp = config.amp if config.amp is not None else device.type == "cuda"
    if amp and device.type == "cpu":
        log.info("bf16 autocast on the CPU")
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    backbone_params, head_params = model.parameter_groups()
    opt = torch.optim.SGD([{"params": backbone_params, "lr": config.lr, "mult": 1.0},
                           {"params": head_params, "lr": config.lr * config.head_lr_mult, "mult": config.head_lr_mult}],
                          lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if payload is not None:
        opt.load_state_dict(payload["optimizer"])
    net: torch.nn.Module = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
    fwd: Any = torch.compile(net) if config.compile else net

    aug = Augment(crop=config.crop, scale_min=config.scale_min, scale_max=config.scale_max, flip=config.flip)
    dataset = RetrainSet(config.store, plan, aug, seed=config.seed, rank=info.rank)
    sampler = StreamSampler(len(plan), seed=config.seed, rank=info.rank, world=info.world,
                            start=start_iter * config.batch_size)
    loader = DataLoader(dataset, sampler=sampler, batch_size=config.batch_size, num_workers=config.workers,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=False)
    val_loader = DataLoader(EvalSet(config.store, val_idx[info.rank::info.world]), batch_size=1,
                            num_workers=min(config.workers, 1))

    resolved = json.loads(json.dumps(dataclasses.asdict(config)))
    resolved.update(world_size=info.world, device_used=str(device.type), amp_used=amp, channels_last_used=channels_last,
                    bn_frozen=model.bn_frozen)
    tb = None
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"retrain": resolved, "model": model_cfg.to_dict(),
                                                     "counts": plan.counts, "class_names": class_names}, indent=2) + "\n")
        tb = _tensorboard(out, config.tensorboard)
        if on_start:
            on_start({"start": start_iter, "max_iter": config.max_iter, "counts": plan.counts,
                      "validation_images": int(len(val_idx)), "device": str(device), "world_size": info.world})

    def write_log(entry: dict[str, Any]) -> None:
        with log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        if tb is not None:
            for k, v in entry.items():
                if k != "iteration" and isinstance(v, (int, float)) and v is not None:
                    tb.add_scalar(k, v, entry["iteration"])

    def save(iteration: int, final: bool = False, interrupted: bool = False) -> None:
        if not info.main:
            return
        extra = {"iteration": iteration, "recipe": recipe, "retrain": resolved, "optimizer": opt.state_dict(),
                 "interrupted": interrupted, "metrics": last_metrics}
        save_model(ckpt_path, model, class_names=class_names, extra=extra)
        if final:
            save_model(model_path, model, class_names=class_names,
                       extra={"iteration": iteration, "retrain": resolved, "metrics": last_metrics})

    def validate(iteration: int) -> dict[str, Any] | None:
        if len(val_idx) == 0:
            return None
        # the bare model: a DDP forward would wait for ranks that hold fewer validation images
        cm = _eval_confusion(model, val_loader, len(class_names), device, amp, info)
        metrics = _validation_metrics(cm)
        if info.main:
            write_log({"iteration": iteration, "val_miou": metrics["val_miou"],
                       "val_pixel_accuracy": metrics["val_pixel_accuracy"], "val_images": int(len(val_idx))})
            if on_validation:
                on_validation(iteration, metrics)
        return metrics

    last_metrics: dict[str, Any] = dict(payload.get("metrics") or {}) if payload is not None else {}
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    window_n, window_t = 0, time.time()
    iteration = start_iter
    validation = None
    fwd.train()
    try:
        batches = iter(loader)
        while iteration < config.max_iter:
            x, y, w, tags, has_tags = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            w, tags, has_tags = w.to(device), tags.to(device), has_tags.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = poly_lr(config.lr, iteration, config.max_iter, config.power)
            for g in opt.param_groups:
                g["lr"] = lr * g["mult"]
            torch.manual_seed(config.seed * 1_000_003 + iteration * info.world + info.rank)  # dropout, exact on resume
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                o = fwd(x)
            attended = F.interpolate(o.attended.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss, l_sel, l_att = sal_loss(attended, o.classification, y, w, tags, lam=config.lam,
                                          form=config.attention_loss, tag_mask=has_tags)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            iteration += 1
            sums += torch.stack([loss.detach(), l_sel.detach(), l_att.detach()]).double()
            window_n += 1
            if iteration % config.log_every == 0 or iteration == config.max_iter:
                total = ddp.all_reduce_sum(sums.clone(), info) / (window_n * info.world)
                now = time.time()
                loss_v, sel_v, att_v = (float(v) for v in total.cpu())
                if not math.isfinite(loss_v):
                    raise SalcurateError(f"the loss became {loss_v} at iteration {iteration}; lower --lr "
                                         f"(now {config.lr}) or check the data")
                last_metrics = {"iteration": iteration, "loss": loss_v, "loss_sel": sel_v, "loss_atten": att_v,
                                "lr": lr, "iterations_per_s": window_n / max(now - window_t, 1e-9)}
                if info.main:
                    write_log(last_metrics)
                sums.zero_()
                window_n, window_t = 0, now
            if progress and info.main:
                progress(Progress(iteration, config.max_iter, lr, last_metrics))
            if config.val_every and iteration % config.val_every == 0 and iteration < config.max_iter:
                validation = validate(iteration)
            if iteration % config.checkpoint_every == 0 and iteration < config.max_iter:
                save(iteration)
    except KeyboardInterrupt:
        save(iteration, interrupted=True)
        raise SalcurateError(f"interrupted at iteration {iteration}; checkpoint saved to {ckpt_path}: "
                             "continue with --resume") from None
    validation = validate(iteration)
    if validation is not None:
        last_metrics = {**last_metrics, "val_miou": validation["val_miou"],
                        "val_pixel_accuracy": validation["val_pixel_accuracy"]}
    save(iteration, final=True)
    if tb is not None:
        tb.close()
    if info.main:
        with store_mod.transaction(config.store, command=COMMAND, config=resolved, started=started):
            pass
    ddp.barrier(info)
    return RetrainResult(output=str(out), model=str(model_path), checkpoint=str(ckpt_path), log=str(log_path),
                         iterations=iteration, resumed_from=start_iter, final=last_metrics, validation=validation,
                         counts=plan.counts, config=resolved, seconds=time.time() - started)


def _ids_digest(ids: tuple[str, ...]) -> str:
    import hashlib

    return hashlib.sha256("\0".join(ids).encode()).hexdigest()[:16]
