"""``train-scorer``: train the fine scorer network (SAL Section III-B2, Table I, Eq. 6).

A small network (Table I, ``salcurate.nn.scorer``) learns to predict a mask's AC from the image
and the mask, trained with an L2 loss (Eq. 6) on the synthesized set of
``salcurate.scoring.synthesis``; ``score-fine`` (``salcurate.scoring.fine``) then scores with it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from salcurate.data import store as store_mod
from salcurate.data.workarea import ids_fingerprint
from salcurate.errors import InputError, SalcurateError
from salcurate.nn.device import resolve_device
from salcurate.nn.scorer import MaskScorer, ScorerConfig, load_checkpoint, save_checkpoint
from salcurate.scoring import synthesis
from salcurate.scoring.fine import coarse_columns
from salcurate.scoring.synthesis import ScorerTrainingSet, SynthesisConfig
from salcurate.stats import spearman

log = logging.getLogger(__name__)

TRAIN_COMMAND = "train-scorer"


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainScorerConfig:
    """Settings of ``train-scorer``; the paper's by default (Adam, lr 1e-5, batch 8, 50 epochs)."""

    output: str = "models/scorer.pt"
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-5
    optimizer: str = "adam"
    input_size: int = 256
    width: int = 128
    channels: int = 192
    hidden: int = 128
    device: str = "auto"
    seed: int = 0
    workers: int = 2  # data-loader processes
    coarse: str = ""  # suffix of the coarse columns to learn from ("" = ac, reference)
    resume: bool = False
    synthesis: SynthesisConfig = SynthesisConfig()

    def scorer_config(self) -> ScorerConfig:
        return ScorerConfig(input_size=self.input_size, width=self.width, channels=self.channels, hidden=self.hidden)

    def recipe(self) -> dict[str, Any]:
        """What the trained weights depend on (a resumed run must match it; epochs may grow)."""
        d = dataclasses.asdict(self)
        for k in ("output", "epochs", "device", "workers", "resume"):
            d.pop(k)
        return d


@dataclasses.dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_l2: float
    val_l2: float
    val_spearman: float | None
    seconds: float


def _check_train_config(c: TrainScorerConfig) -> None:
    if c.epochs < 1 or c.batch_size < 1:
        raise InputError(f"--epochs and --batch-size must be at least 1, got {c.epochs} and {c.batch_size}")
    if not (c.lr > 0 and np.isfinite(c.lr)):
        raise InputError(f"--lr must be a positive number, got {c.lr}")
    if c.optimizer not in ("adam", "sgd"):
        raise InputError(f"--optimizer must be adam or sgd, got {c.optimizer!r}")
    if c.input_size < 16:
        raise InputError(f"--input-size must be at least 16, got {c.input_size}")


def _evaluate(model: MaskScorer, loader: DataLoader, device: torch.device, amp: bool) -> tuple[float, float | None]:
    model.eval()
    preds, targets = [], []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            preds.append(model(x).float().cpu())
            targets.append(y.float())
    if not preds:
        return float("nan"), None
    p, t = torch.cat(preds), torch.cat(targets)
    rho = spearman(p.numpy(), t.numpy())
    return float(((p - t) ** 2).mean()), (None if not np.isfinite(rho) else rho)


def train_scorer(path: str | os.PathLike[str], config: TrainScorerConfig, *,
                 on_epoch: Callable[[EpochMetrics], None] | None = None,
                 on_start: Callable[[int, int, int], None] | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train the fine scorer on the store's coarse scores; write checkpoints to ``config.output``.

    ``on_start(epochs, start_epoch, batches_per_epoch)``, ``progress(1)`` per batch and
    ``on_epoch(metrics)`` per epoch.  Each epoch ends with a checkpoint (resumable with
    ``resume``) and a line in the JSONL log beside it; Ctrl-C saves a checkpoint too.
    """
    started = time.time()
    _check_train_config(config)
    device = resolve_device(config.device)
    out = Path(config.output)
    if not out.parent.is_dir():
        raise InputError(f"{out}: the folder {out.parent} does not exist; create it or choose another -o path")
    with store_mod.MaskStore(path) as st:
        ac_name, _, ref_name, coarse_cfg = coarse_columns(st, config.coarse)
        ac = st.score(ac_name)
        table = synthesis.plan_training_set(ac, config.synthesis)
        train_rows, val_rows = synthesis.split_train_val(table, len(st), config.synthesis.val_fraction,
                                                         config.synthesis.seed)
        store_ids = ids_fingerprint(st.ids)
    if len(train_rows) < config.batch_size:
        raise InputError(f"the training set has {len(train_rows)} items, fewer than --batch-size {config.batch_size}; "
                         "lower --batch-size or raise --scale")
    common = dict(size=config.input_size, ac=ac, reference=ref_name, b=float(coarse_cfg.get("b", 0.1)),
                  formula=str(coarse_cfg.get("ac_formula", "standard")))
    train_ds = ScorerTrainingSet(str(path), train_rows, **common)
    val_ds = ScorerTrainingSet(str(path), val_rows, **common)

    recipe = {**config.recipe(), "store_ids": store_ids}
    torch.manual_seed(config.seed)
    model = MaskScorer(config.scorer_config())
    start_epoch = 0
    history: list[dict[str, Any]] = []
    opt_state = None
    if config.resume:
        if not out.exists():
            raise InputError(f"{out}: no checkpoint to resume from; drop --resume to start training")
        model, _, info = load_checkpoint(out, expect=config.scorer_config())
        extra = info.get("extra") or {}
        if extra.get("recipe") != json.loads(json.dumps(recipe)):
            raise InputError(f"{out}: the checkpoint was trained with other settings or data; "
                             "resume with the same options, or drop --resume to start anew")
        start_epoch = int(extra["epochs_done"])
        opt_state = _optimizer_restore(extra.get("optimizer"))
        history = list(extra.get("history", []))
    amp = device.type == "cuda"
    model.to(device)
    if amp:
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    loader_kw: dict[str, Any] = dict(batch_size=config.batch_size, num_workers=config.workers,
                                     pin_memory=device.type == "cuda", persistent_workers=config.workers > 0)
    val_loader = DataLoader(val_ds, shuffle=False, **loader_kw)
    generator = torch.Generator()
    sampler = RandomSampler(train_ds, generator=generator)
    train_loader = DataLoader(train_ds, sampler=sampler, drop_last=True, **loader_kw)
    log_path = out.with_suffix(".jsonl")
    if on_start:
        on_start(config.epochs, start_epoch, len(train_loader))

    def save(epochs_done: int, metrics: dict[str, Any], interrupted: bool = False) -> None:
        save_checkpoint(out, model, config.scorer_config(), metrics=metrics, extra={
            "recipe": recipe, "epochs_done": epochs_done, "optimizer": _optimizer_plain(opt.state_dict()),
            "history": history,
            "interrupted": interrupted, "train_config": json.loads(json.dumps(dataclasses.asdict(config))),
            "coarse_config": coarse_cfg, "items": {"train": int(len(train_rows)), "val": int(len(val_rows))},
        })

    epoch = start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.time()
            generator.manual_seed(config.seed * 100003 + epoch)  # the same order on resume
            model.train()
            total, count = 0.0, 0
            for x, y in train_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if amp:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    pred = model(x)
                loss = torch.mean((pred.float() - y) ** 2)  # Eq. 6
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(y)
                count += len(y)
                if progress:
                    progress(1)
            val_l2, val_rho = _evaluate(model, val_loader, device, amp)
            m = EpochMetrics(epoch + 1, total / max(count, 1), val_l2, val_rho, time.time() - t0)
            history.append(dataclasses.asdict(m))
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(dataclasses.asdict(m)) + "\n")
            save(epoch + 1, dataclasses.asdict(m))
            if on_epoch:
                on_epoch(m)
    except KeyboardInterrupt:
        # the weights now hold part of this epoch; a resume restarts the epoch from them
        save(epoch, history[-1] if history else {}, interrupted=True)
        raise SalcurateError(f"interrupted during epoch {epoch + 1}; checkpoint saved to {out}: "
                             "continue with --resume") from None
    final = history[-1] if history else {}
    _log_command(path, TRAIN_COMMAND, {**dataclasses.asdict(config), "device": device.type}, started)
    return {"output": str(out), "log": str(log_path), "epochs": config.epochs, "resumed_from": start_epoch,
            "final": final, "items": {"train": int(len(train_rows)), "val": int(len(val_rows))}}


def _optimizer_plain(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict with string keys (checkpoints hold plain types only)."""
    return {"state": {str(k): v for k, v in state["state"].items()}, "param_groups": state["param_groups"]}


def _optimizer_restore(state: dict[str, Any] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"state": {int(k): v for k, v in state["state"].items()}, "param_groups": state["param_groups"]}


def _log_command(path: str | os.PathLike[str], command: str, config: dict[str, Any], started: float) -> None:
    """Record a command that used the store in its run log (an empty transaction)."""
    with store_mod.transaction(path, command=command, config=config, started=started):
        pass
