"""``train-scorer``: train the fine scorer network (SAL Section III-B2, Table I, Eq. 6).

A small network (Table I, ``salcurate.nn.scorer``) learns to predict a mask's AC from the image
and the mask, trained with an L2 loss (Eq. 6) on the synthesized set of
``salcurate.scoring.synthesis``; ``score-fine`` (``salcurate.scoring.fine``) then scores with it.
The mechanics (precision, checkpoint, log, Ctrl-C) are the shared training harness's
(``salcurate.training.harness``).

Files beside ``config.output`` (``models/scorer.pt`` by default): the checkpoint itself (what
``score-fine`` loads; ``resume`` continues from it, epoch by epoch), ``scorer.jsonl`` (a line per
epoch: train and validation L2, validation Spearman) and ``scorer.toml`` (the resolved settings,
what ``salcurate train-scorer --config`` reads back).

Not in the paper (issue 12): ``target`` names a score column of the proxy set (e.g. ``q``, the
combined score of ``score-combined``), and the scorer then learns that score from the store's own
proxies (each sample with a proxy and a value is an item; no synthesis); ``scorer_input``
``labels`` gives it the proxy's label map, one channel per class 0..C, instead of the binary mask
(``in_channels`` = 3 + C + 1).  The checkpoint records both (:class:`salcurate.scoring.fine.ScorerSpec`),
so ``score-fine`` builds the matching input and writes its own columns (``p_q``, ``sf_q``, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from salcurate.config import Choice, choice, setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.data.store import StoreHandle
from salcurate.data.workarea import ids_fingerprint
from salcurate.errors import InputError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.nn.device import Device, resolve_device
from salcurate.nn.scorer import MaskScorer, ScorerConfig, load_checkpoint, save_checkpoint
from salcurate.paper import SCORER_BATCH, SCORER_EPOCHS, SCORER_INPUT, SCORER_LR
from salcurate.scoring import synthesis
from salcurate.scoring.fine import PAPER_TARGET, ScorerInput, ScorerSpec, coarse_columns
from salcurate.scoring.synthesis import ScorerTrainingSet, SynthesisConfig
from salcurate.stats import spearman
from salcurate.training.harness import (
    Checkpoint,
    Precision,
    RunLog,
    checkpoint_on_interrupt,
    optimizer_state,
    prepare_model,
    recipe_of,
    restore_optimizer,
    write_config,
)

log = logging.getLogger(__name__)

TRAIN_COMMAND = "train-scorer"
#: The fewest proxies with a target value that ``train-scorer`` learns a score column from.
MIN_TARGET_SAMPLES = 10


class Optimizer(Choice):
    """The scorer's optimizer: Adam (the paper's) or SGD with momentum 0.9."""

    adam = "adam"
    sgd = "sgd"


# ------------------------------------------------------------------------------------------
# Settings and result
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainScorerConfig:
    """Settings of ``train-scorer``; the paper's by default (Adam, lr 1e-5, batch 8, 50 epochs).

    One seed (``synthesis.seed``, the ``seed`` property) seeds the training set, its split, the
    initial weights and the batch order.
    """

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    output: str = setting("models/scorer.pt", "Checkpoint to write (a JSONL log goes beside it).", short="-o",
                          run_only=True)
    epochs: int = setting(SCORER_EPOCHS, f"Epochs (paper: {SCORER_EPOCHS}).", run_only=True)
    batch_size: int = setting(SCORER_BATCH, f"Batch size (paper: {SCORER_BATCH}).")
    lr: float = setting(SCORER_LR, f"Learning rate (paper: {SCORER_LR:.0e}).".replace("e-0", "e-"))
    optimizer: Optimizer = setting(Optimizer.adam, "adam or sgd.")
    input_size: int = setting(SCORER_INPUT, f"Network input side in pixels (paper: {SCORER_INPUT}).")
    width: int = setting(ScorerConfig.width, f"Channels of the first conv (Table I: {ScorerConfig.width}).")
    channels: int = setting(ScorerConfig.channels, f"Channels of the later layers (Table I: {ScorerConfig.channels}).")
    hidden: int = setting(ScorerConfig.hidden, f"Units of the first fc layer (Table I: {ScorerConfig.hidden}).")
    synthesis: SynthesisConfig = dataclasses.field(default_factory=SynthesisConfig)
    device: Device = setting(Device.auto, "auto (CUDA when present), cpu or cuda.", run_only=True)
    workers: int = setting(2, "Data-loader processes.", min=0, run_only=True)
    coarse: str = setting("", "Suffix of the coarse columns to learn from: acSUFFIX and referenceSUFFIX (empty: ac "
                              "and reference).")
    resume: bool = setting(False, "Continue from the checkpoint at the output path.", run_only=True)
    target: str = setting(PAPER_TARGET, "What P learns: synthesized (the paper: AC of synthesized masks) or a score "
                                        "column of the proxy set, e.g. q, learned from the proxies themselves.")
    scorer_input: ScorerInput = setting(ScorerInput.mask, "mask: RGB + binary mask (the paper); labels: RGB + one "
                                                          "channel per class of the proxy's label map (needs a "
                                                          "score column as target).")

    @property
    def seed(self) -> int:
        return self.synthesis.seed

    def scorer_config(self, in_channels: int = 4) -> ScorerConfig:
        return ScorerConfig(input_size=self.input_size, in_channels=in_channels, width=self.width,
                            channels=self.channels, hidden=self.hidden)


@dataclasses.dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_l2: float
    val_l2: float
    val_spearman: float | None
    seconds: float


@dataclasses.dataclass(frozen=True)
class TrainScorerResult(Result):
    output: str
    log: str
    config_file: str
    epochs: int
    resumed_from: int
    final: dict[str, Any]
    items: dict[str, int]
    config: dict[str, Any]
    seconds: float


def _check(c: TrainScorerConfig) -> TrainScorerConfig:
    if c.epochs < 1 or c.batch_size < 1:
        raise InputError(f"epochs and batch_size must be at least 1, got {c.epochs} and {c.batch_size}",
                         param=("epochs", "batch_size"))
    if not (c.lr > 0 and math.isfinite(c.lr)):
        raise InputError(f"lr must be a positive number, got {c.lr}", param="lr")
    if c.input_size < 16:
        raise InputError(f"input_size must be at least 16, got {c.input_size}", param="input_size")
    out = Path(c.output)
    if not out.parent.is_dir():
        raise InputError(f"{out}: the folder {out.parent} does not exist; create it or choose another output path",
                         param="output")
    c = dataclasses.replace(c, optimizer=choice(Optimizer, c.optimizer, "optimizer"),
                            device=choice(Device, c.device, "device"),
                            scorer_input=choice(ScorerInput, c.scorer_input, "scorer_input"))
    if not c.target:
        raise InputError(f"target must be {PAPER_TARGET} or the name of a score column such as q, got nothing",
                         param="target")
    if c.scorer_input == ScorerInput.labels and c.target == PAPER_TARGET:
        raise InputError(f"scorer_input labels needs a score column as target (e.g. q): the {PAPER_TARGET} "
                         "training set holds binary masks only", param=("scorer_input", "target"))
    return c


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Data:
    """The training and validation sets and what they came from."""

    train: ScorerTrainingSet | ProxyTargetSet
    val: ScorerTrainingSet | ProxyTargetSet
    coarse_config: dict[str, Any]
    store_ids: str
    spec: ScorerSpec = ScorerSpec()
    target_config: dict[str, Any] | None = None
    target_digest: str | None = None

    @property
    def items(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val)}


class ProxyTargetSet(StoreHandle):
    """A torch-style dataset of the store's own proxies with a score column as target.

    Each item: ``(x (in_channels, S, S) float32, target float32)``, ``x`` built by ``spec``
    (RGB + binary mask, or RGB + one-hot label map).  A worker process opens its own handle.
    """

    def __init__(self, store_path: str, indices: np.ndarray, targets: np.ndarray, *, size: int, proxy: str,
                 spec: ScorerSpec) -> None:
        self.store_path, self.indices, self.targets = store_path, indices, np.asarray(targets, np.float32)
        self.size, self.proxy, self.spec = size, proxy, spec

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.float32]:
        i = int(self.indices[k])
        x = self.spec.network_input(self.store.image(i), self.store.map(self.proxy, i), self.size)
        return x, np.float32(self.targets[k])


def _missing_target(st: store_mod.MaskStore, name: str, proxy: str) -> InputError:
    have = [n for n in st.score_names() if store_mod.column_proxy(n) == store_mod.column_proxy(name)]
    made = ("make it with `salcurate score-combined`" if name.partition("@")[0].partition(":")[0] == "q"
            else "make it first (`salcurate score-coarse`, `score-evidence` or `score-combined`)")
    return InputError(f"{st.path}: no score column {name!r} to learn as target (the proxies {proxy!r} have: "
                      f"{', '.join(have) or 'none'}); {made}, or use target {PAPER_TARGET} (the paper)",
                      param="target")


def _read_targets(config: TrainScorerConfig, proxy: str) -> _Data:
    """The store's proxies with a value in the target column, split by image like the synthesized set."""
    with store_mod.MaskStore(config.store) as st:
        name, _ = st.resolve_column(config.target, proxy)
        if name not in st.score_names():
            raise _missing_target(st, name, proxy)
        values = st.score(name).astype(np.float64)
        target_config = st.score_meta(name).get("config") or {}
        usable = st.has_map(proxy) & np.isfinite(values)
        spec = ScorerSpec(config.scorer_input, name,
                          st.num_classes if config.scorer_input == ScorerInput.labels else None)
        store_ids = ids_fingerprint(st.ids)
    n = int(usable.sum())
    if n < MIN_TARGET_SAMPLES:
        raise InputError(f"only {n} proxies of the set {proxy!r} have a value in {name!r} (the others have no proxy "
                         f"or NaN); learning a target needs at least {MIN_TARGET_SAMPLES}: score more proxies or "
                         "choose another target", param="target")
    v = values[usable]
    if v.min() < 0 or v.max() > 1:
        raise InputError(f"the target {name!r} has values from {v.min():.3g} to {v.max():.3g}; the scorer predicts "
                         "in [0, 1]: choose a score column in [0, 1] such as q", param="target")
    idx = np.flatnonzero(usable)
    table = np.stack([np.zeros_like(idx), idx, np.full_like(idx, -1), np.zeros_like(idx)], axis=1)
    train_rows, val_rows = synthesis.split_train_val(table, len(values), config.synthesis.val_fraction, config.seed)
    if len(train_rows) < config.batch_size:
        raise InputError(f"the training set has {len(train_rows)} proxies with a target, fewer than batch_size "
                         f"{config.batch_size}; lower batch_size or val_fraction", param=("batch_size", "val_fraction"))
    digest = hashlib.sha256(np.where(usable, values, -1.0).tobytes()).hexdigest()[:16]
    sets = [ProxyTargetSet(str(config.store), rows[:, 1], values[rows[:, 1]], size=config.input_size, proxy=proxy,
                           spec=spec) for rows in (train_rows, val_rows)]
    return _Data(sets[0], sets[1], {}, store_ids, spec, target_config, digest)


def _read_store(config: TrainScorerConfig) -> _Data:
    proxy = config.proxy or store_mod.IMPORTED_PROXY
    if config.target != PAPER_TARGET:
        return _read_targets(config, proxy)
    with store_mod.MaskStore(config.store) as st:
        ac_name, _, ref_name, coarse_cfg = coarse_columns(st, config.coarse, proxy)
        ac = st.score(ac_name)
        table = synthesis.plan_training_set(ac, config.synthesis)
        train_rows, val_rows = synthesis.split_train_val(table, len(st), config.synthesis.val_fraction, config.seed)
        store_ids = ids_fingerprint(st.ids)
    if len(train_rows) < config.batch_size:
        raise InputError(f"the training set has {len(train_rows)} items, fewer than batch_size {config.batch_size}; "
                         "lower batch_size or raise scale", param=("batch_size", "scale"))
    common = dict(size=config.input_size, ac=ac, reference=ref_name, b=float(coarse_cfg.get("b", 0.1)),
                  formula=str(coarse_cfg.get("ac_formula", "standard")), proxy=proxy)
    return _Data(ScorerTrainingSet(str(config.store), train_rows, **common),
                 ScorerTrainingSet(str(config.store), val_rows, **common), coarse_cfg, store_ids)


# ------------------------------------------------------------------------------------------
# Checkpoint (the format score-fine reads: salcurate.nn.scorer)
# ------------------------------------------------------------------------------------------
def _write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    state = dict(state)
    model, metrics = state.pop("model"), state.pop("metrics")
    save_checkpoint(path, model, model.config, metrics=metrics, extra=state)


def _read_checkpoint(path: Path, *, expect: ScorerConfig) -> dict[str, Any]:
    model, _, info = load_checkpoint(path, expect=expect)
    return {**(info.get("extra") or {}), "model": model}


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
def _recipe(config: TrainScorerConfig, data: _Data) -> dict[str, Any]:
    """What the weights depend on; the paper's runs keep the recipe they had before target and scorer_input."""
    if data.spec.paper:
        recipe = recipe_of(config, store_ids=data.store_ids)
        return {k: v for k, v in recipe.items() if k not in ("target", "scorer_input")}
    return recipe_of(config, store_ids=data.store_ids, target_values=data.target_digest)


def _evaluate(model: MaskScorer, loader: DataLoader, precision: Precision) -> tuple[float, float | None]:
    """Validation L2 and Spearman correlation of prediction and target."""
    model.eval()
    preds, targets = [], []
    with torch.no_grad(), precision.autocast():
        for x, y in loader:
            preds.append(model(precision.inputs(x)).float().cpu())
            targets.append(y.float())
    if not preds:
        return float("nan"), None
    p, t = torch.cat(preds), torch.cat(targets)
    rho = spearman(p.numpy(), t.numpy())
    return float(((p - t) ** 2).mean()), (None if not np.isfinite(rho) else rho)


def _train_epoch(model: MaskScorer, loader: DataLoader, opt: torch.optim.Optimizer, precision: Precision,
                 events: Events) -> float:
    """One pass over the training set with the L2 loss (Eq. 6); returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = precision.inputs(x), y.to(precision.device, non_blocking=True)
        with precision.autocast():
            pred = model(x)
        loss = torch.mean((pred.float() - y) ** 2)  # Eq. 6
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        total += value * len(y)
        count += len(y)
        events.advance(1, loss=value)
    return total / max(count, 1)


def run(config: TrainScorerConfig, *, events: Events | None = None) -> TrainScorerResult:
    """Train the fine scorer on the store's coarse scores; write checkpoints to ``config.output``.

    ``events``: ``start(epochs x batches, done)``, ``advance(1, loss=...)`` per batch, a note
    when resuming and ``metrics`` per epoch (an :class:`EpochMetrics` as a dict).  Each epoch
    ends with a checkpoint (resumable with ``resume``) and a line in the JSONL log beside it;
    Ctrl-C saves a checkpoint too.
    """
    started = time.time()
    config = _check(config)
    with store_mod.MaskStore(config.store) as st:
        proxy = st.resolve_proxy(config.proxy)
    if config.proxy is not None or proxy != store_mod.IMPORTED_PROXY:  # None: the imported set, as before
        config = dataclasses.replace(config, proxy=proxy)
    return _ScorerTraining(config, Precision(resolve_device(config.device)), events or NO_EVENTS).train(started)


class _ScorerTraining:
    """One run's state: data, model, optimizer, loaders, log; :meth:`train` is the epoch loop."""

    def __init__(self, config: TrainScorerConfig, precision: Precision, events: Events) -> None:
        self.config, self.precision, self.events = config, precision, events
        self.out = Path(config.output)
        self.data = _read_store(config)

        # -- model, optimizer, and the checkpoint to resume from ---------------------------
        self.spec = self.data.spec
        net = config.scorer_config(self.spec.in_channels())
        self.checkpoint = Checkpoint(self.out, _recipe(config, self.data), write=_write_checkpoint,
                                     read=functools.partial(_read_checkpoint, expect=net))
        torch.manual_seed(config.seed)
        self.model = MaskScorer(net)
        state = self.checkpoint.resume(config.resume)
        if state is not None:
            self.model = state["model"]
        self.start_epoch = self.epochs_done = int(state["epochs_done"]) if state is not None else 0
        self.history: list[dict[str, Any]] = list(state.get("history", [])) if state is not None else []
        prepare_model(self.model, precision)
        if config.optimizer == Optimizer.adam:
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=0.9)
        restore_optimizer(self.opt, state.get("optimizer") if state is not None else None)

        # -- loaders and files --------------------------------------------------------------
        loader_kw: dict[str, Any] = dict(batch_size=config.batch_size, num_workers=config.workers,
                                         pin_memory=precision.device.type == "cuda",
                                         persistent_workers=config.workers > 0)
        self.val_loader = DataLoader(self.data.val, shuffle=False, **loader_kw)
        self.generator = torch.Generator()
        sampler = RandomSampler(self.data.train, generator=self.generator)
        self.train_loader = DataLoader(self.data.train, sampler=sampler, drop_last=True, **loader_kw)
        self.config_file = self.out.with_suffix(".toml")
        write_config(self.config_file, config, command=TRAIN_COMMAND)
        self.log = RunLog(self.out.with_suffix(".jsonl"), step="epoch", events=events)
        self.resolved = {**to_dict(config), **precision.to_dict()}

    def save(self, *, interrupted: bool = False) -> None:
        self.checkpoint.save({
            "model": self.model, "metrics": self.history[-1] if self.history else {}, "epochs_done": self.epochs_done,
            "optimizer": optimizer_state(self.opt), "history": self.history, "interrupted": interrupted,
            "train_config": to_dict(self.config), "coarse_config": self.data.coarse_config, "items": self.data.items,
            **self.spec.to_extra(), **({} if self.spec.paper else {"target_config": self.data.target_config})})

    def _save_interrupted(self) -> str:
        # the weights now hold part of the next epoch; a resume restarts that epoch from them
        self.save(interrupted=True)
        return f"during epoch {self.epochs_done + 1}"

    def train(self, started: float) -> TrainScorerResult:
        c = self.config
        batches = len(self.train_loader)
        self.events.start(c.epochs * batches, self.start_epoch * batches, label="training")
        if self.start_epoch:
            self.events.note(f"resuming after epoch {self.start_epoch}")
        with checkpoint_on_interrupt(self._save_interrupted, self.out):
            for epoch in range(self.start_epoch, c.epochs):
                t0 = time.time()
                self.generator.manual_seed(c.seed * 100003 + epoch)  # the same order on resume
                train_l2 = _train_epoch(self.model, self.train_loader, self.opt, self.precision, self.events)
                val_l2, val_rho = _evaluate(self.model, self.val_loader, self.precision)
                metrics = dataclasses.asdict(EpochMetrics(epoch + 1, train_l2, val_l2, val_rho, time.time() - t0))
                self.history.append(metrics)
                self.epochs_done = epoch + 1
                self.save()
                self.log.write(metrics)
        self.log.close()
        with store_mod.transaction(c.store, command=TRAIN_COMMAND, config=self.resolved, started=started):
            pass
        return TrainScorerResult(output=str(self.out), log=str(self.log.path), config_file=str(self.config_file),
                                 epochs=c.epochs, resumed_from=self.start_epoch,
                                 final=self.history[-1] if self.history else {}, items=self.data.items,
                                 config=self.resolved, seconds=time.time() - started)
