"""``score-fine``: the network-based fine mask score (SAL Section III-B2).

A small network (Table I, ``salcurate.nn.scorer``), trained by ``train-scorer``
(``salcurate.training.scorer``) to predict a mask's AC from the image and the mask, gives P for
every proxy; the fine score is SF = P x CD (Eq. 7).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from salcurate.data import store as store_mod
from salcurate.data.workarea import config_hash, open_work_area, remove_work_area
from salcurate.errors import InputError, StoreError
from salcurate.nn.device import resolve_device
from salcurate.nn.scorer import load_checkpoint
from salcurate.scoring.synthesis import network_input, resize_pair

log = logging.getLogger(__name__)

TRAIN_COMMAND = "train-scorer"
SCORE_COMMAND = "score-fine"


def coarse_columns(st: store_mod.MaskStore, suffix: str) -> tuple[str, str, str, dict[str, Any]]:
    ac, cd, ref = f"ac{suffix}", f"cd{suffix}", f"reference{suffix}"
    if ac not in st.score_names() or ref not in st.map_names():
        raise StoreError(f"{st.path}: no coarse scores {ac!r} with reference masks {ref!r}; run `salcurate score-coarse` first")
    return ac, cd, ref, st.score_meta(ac).get("config") or {}


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
    scorer: str | None = None  # None: default_scorer_path()
    batch_size: int = 32
    device: str = "auto"
    workers: int = 2
    coarse: str = ""
    overwrite: bool = False


class _FineItems(Dataset):
    def __init__(self, store_path: str, indices: np.ndarray, size: int) -> None:
        self.store_path, self.indices, self.size = store_path, indices, size
        self._store: Any = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def __getitem__(self, k: int) -> tuple[int, np.ndarray]:
        from salcurate.scoring.metrics import foreground

        if self._store is None:
            self._store = store_mod.MaskStore(self.store_path)
        i = int(self.indices[k])
        b, _ = foreground(self._store.map("proxy", i))
        img, (m,) = resize_pair(self._store.image(i), [b], self.size)
        return i, network_input(img, m)


@dataclasses.dataclass(frozen=True)
class FineSummary:
    columns: dict[str, str]
    computed: int
    resumed: int
    nothing_to_do: bool
    seconds: float
    mean_sf: float | None
    device: str


def score_fine(path: str | os.PathLike[str], config: ScoreFineConfig, *,
               progress: Callable[[int], None] | None = None,
               on_start: Callable[[int, int], None] | None = None) -> FineSummary:
    """P for every sample with a proxy mask, and SF = P x CD (Eq. 7); resumable like score-coarse."""
    started = time.time()
    path = Path(path)
    scorer_path = Path(config.scorer) if config.scorer else default_scorer_path()
    if config.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {config.batch_size}")
    device = resolve_device(config.device)
    model, scfg, info = load_checkpoint(scorer_path)
    digest = hashlib.sha256(scorer_path.read_bytes()).hexdigest()[:12]
    scoring = {"scorer": str(scorer_path), "scorer_sha256": digest, "input_size": scfg.input_size,
               "coarse": config.coarse}
    with store_mod.MaskStore(path) as st:
        _, cd_name, _, _ = coarse_columns(st, config.coarse)
        cd = st.score(cd_name)
        has_proxy = st.has_map("proxy")
        ids = st.ids
        suffix = ""
        existing = st.score_names()
        if "sf" in existing and not config.overwrite:
            meta = {k: v for k, v in (st.score_meta("sf").get("config") or {}).items() if k != "scorer"}
            if meta != {k: v for k, v in scoring.items() if k != "scorer"}:
                suffix = f"@{config_hash(scoring)}"
        names = {"p": f"p{suffix}", "sf": f"sf{suffix}"}
        if names["sf"] in existing and not config.overwrite:
            done_before = ~np.isnan(st.score(names["sf"])[has_proxy])
            if done_before.all():
                if on_start:
                    on_start(0, 0)
                return FineSummary(names, 0, 0, True, time.time() - started, None, device.type)
    model.to(device).eval()
    amp = device.type == "cuda"
    if amp:
        model.to(memory_format=torch.channels_last)
    with open_work_area(path, SCORE_COMMAND, {**scoring, "columns": names}, ids=ids, columns=("p",)) as area:
        todo = np.flatnonzero(has_proxy & ~area.done)
        resumed = int((area.done & has_proxy).sum())
        if on_start:
            on_start(int(has_proxy.sum()), resumed)
        loader = DataLoader(_FineItems(str(path), todo, scfg.input_size), batch_size=config.batch_size,
                            num_workers=config.workers, pin_memory=amp)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for idx, x in loader:
                x = x.to(device, non_blocking=True)
                if amp:
                    x = x.contiguous(memory_format=torch.channels_last)
                p = model.predict(x).float().cpu().numpy()
                area.write(idx.numpy(), p[:, None])
                if progress:
                    progress(len(idx))
        p_col = area.values()["p"]
        sf = (p_col * np.where(has_proxy, cd, np.nan)).astype(np.float32)
        with store_mod.transaction(path, command=SCORE_COMMAND, config={**dataclasses.asdict(config), **scoring,
                                   "device": device.type, "columns": names}, started=started) as tx:
            tx.put_scores({names["p"]: p_col, names["sf"]: sf}, config=scoring, command=SCORE_COMMAND, overwrite=True)
        remove_work_area(area)
    return FineSummary(names, int(len(todo)), resumed, False, time.time() - started,
                       float(np.nanmean(sf)) if has_proxy.any() else None, device.type)
