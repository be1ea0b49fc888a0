"""train-scorer and score-fine on a small coarse-scored demo store, with a tiny scorer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_fails_one_line, file_digest, invoke

from salcurate.data.store import MaskStore, copy_store
from salcurate.errors import InputError, SalcurateError
from salcurate.events import Events
from salcurate.nn.scorer import load_checkpoint
from salcurate.scoring import fine
from salcurate.scoring.fine import ScoreFineConfig
from salcurate.scoring.synthesis import SynthesisConfig
from salcurate.training.scorer import EpochMetrics, TrainScorerConfig, TrainScorerResult
from salcurate.training.scorer import run as run_train_scorer

TINY = dict(input_size=32, width=8, channels=12, hidden=6, batch_size=8, lr=1e-3, workers=0,
            synthesis=SynthesisConfig(scale=2))


@pytest.fixture
def store(demo_scored_store: Path, tmp_path: Path) -> Path:
    path = tmp_path / "masks.h5"
    copy_store(demo_scored_store, path)
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _, _ = load_checkpoint(path)
    return model.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train(store: Path, config: TrainScorerConfig, events: Events | None = None) -> TrainScorerResult:
    """train-scorer on ``store``."""
    return run_train_scorer(dataclasses.replace(config, store=str(store)), events=events)


class _TrainEvents(Events):
    """Each epoch's metrics; ``on_batch(n)`` after each batch."""

    def __init__(self, on_batch: object = None) -> None:
        self.epochs: list[EpochMetrics] = []
        self.on_batch, self.batches = on_batch, 0

    def advance(self, n: int = 1, **info: object) -> None:
        self.batches += n
        if self.on_batch is not None:
            self.on_batch(n)  # type: ignore[operator]

    def metrics(self, record: dict) -> None:
        self.epochs.append(EpochMetrics(**record))


def test_training_writes_checkpoint_and_jsonl_log(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "scorer.pt"
    events = _TrainEvents()
    res = _train(store, TrainScorerConfig(output=str(out), epochs=2, **TINY), events)
    seen = events.epochs
    assert out.exists() and [m.epoch for m in seen] == [1, 2]
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in lines] == [1, 2]
    assert {"train_l2", "val_l2", "val_spearman", "seconds"} <= set(lines[0])
    _, cfg, info = load_checkpoint(out)
    assert cfg.input_size == 32 and info["extra"]["epochs_done"] == 2
    assert info["extra"]["train_config"]["lr"] == 1e-3 and res.items["train"] > 0
    with MaskStore(store) as st:
        assert st.run_log()[-1]["command"] == "train-scorer"


def test_cpu_training_is_repeatable_with_a_seed(store: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    _train(store, TrainScorerConfig(output=str(a), epochs=1, **TINY))
    _train(store, TrainScorerConfig(output=str(b), epochs=1, **TINY))
    assert _same(_weights(a), _weights(b))


def test_resume_equals_an_uninterrupted_run(store: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    _train(store, TrainScorerConfig(output=str(straight), epochs=2, **TINY))
    _train(store, TrainScorerConfig(output=str(resumed), epochs=1, **TINY))
    res = _train(store, TrainScorerConfig(output=str(resumed), epochs=2, resume=True, **TINY))
    assert res.resumed_from == 1
    assert _same(_weights(straight), _weights(resumed))


def test_ctrl_c_saves_a_checkpoint_that_resumes(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "scorer.pt"
    calls = {"n": 0}

    def interrupt(_: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # in the middle of the first epoch
            raise KeyboardInterrupt

    with pytest.raises(SalcurateError, match="interrupted during epoch 1; checkpoint saved .* resume"):
        _train(store, TrainScorerConfig(output=str(out), epochs=2, **TINY), _TrainEvents(interrupt))
    _, _, info = load_checkpoint(out)
    assert info["extra"]["interrupted"] is True and info["extra"]["epochs_done"] == 0
    res = _train(store, TrainScorerConfig(output=str(out), epochs=2, resume=True, **TINY))
    assert res.resumed_from == 0 and load_checkpoint(out)[2]["extra"]["epochs_done"] == 2


def test_resume_with_other_settings_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "scorer.pt"
    _train(store, TrainScorerConfig(output=str(out), epochs=1, **TINY))
    with pytest.raises(InputError, match="trained with other settings or data"):
        _train(store, TrainScorerConfig(output=str(out), epochs=2, resume=True, **{**TINY, "lr": 0.1}))
    with pytest.raises(InputError, match="holds .*expected|differs|input"):
        _train(store, TrainScorerConfig(output=str(out), epochs=2, resume=True, **{**TINY, "input_size": 48}))


def test_score_fine_stores_p_and_sf_and_is_resumable(store: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "scorer.pt"
    _train(store, TrainScorerConfig(output=str(ckpt), epochs=1, **TINY))
    clean = tmp_path / "clean.h5"
    copy_store(store, clean)

    calls = {"n": 0}

    class Interrupt(Events):
        def advance(self, n: int = 1, **info: object) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt

    cfg = ScoreFineConfig(store=str(store), scorer=str(ckpt), batch_size=8, workers=0)
    with pytest.raises(KeyboardInterrupt):
        fine.run(cfg, events=Interrupt())
    with MaskStore(store) as st:
        assert "sf" not in st.score_names()  # nothing half-made in the store
    res = fine.run(cfg)
    assert res.resumed == 16 and res.computed == 32  # two batches were written before the interrupt
    fine.run(dataclasses.replace(cfg, store=str(clean)))
    with MaskStore(store) as a, MaskStore(clean) as b:
        np.testing.assert_array_equal(a.score("p"), b.score("p"))
        np.testing.assert_allclose(a.score("sf"), a.score("p") * a.score("cd"), rtol=1e-6)
        p = a.score("p")
        assert ((p >= 0) & (p <= 1)).all()
        assert a.score_meta("sf")["config"]["input_size"] == 32
    before = file_digest(store)
    assert fine.run(cfg).nothing_to_do and file_digest(store) == before


def test_select_and_evaluate_by_sf(store: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "scorer.pt"
    _train(store, TrainScorerConfig(output=str(ckpt), epochs=1, **TINY))
    fine.run(ScoreFineConfig(store=str(store), scorer=str(ckpt), workers=0))
    r = invoke(["select", store, "--tau", "0.3"])  # --by sf is the default
    assert r.exit_code == 0, r.stderr
    r = invoke(["evaluate-scores", store, "--score", "sf", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["score"] == "sf"


# -- bad input ------------------------------------------------------------------------------
def _fails(args: list[object], *needles: str) -> None:
    assert_fails_one_line(args, *needles)


def test_store_not_coarse_scored_says_which_command(tmp_path: Path, tiny_store: Path) -> None:
    before = file_digest(tiny_store)
    _fails(["train-scorer", tiny_store, "-o", tmp_path / "s.pt"], "run `salcurate score-coarse` first")
    _fails(["score-fine", tiny_store, "--scorer", tmp_path / "s.pt"], "not found")
    assert file_digest(tiny_store) == before


def test_too_few_confident_samples(store: Path, tmp_path: Path) -> None:
    before = file_digest(store)
    _fails(["train-scorer", store, "-o", tmp_path / "s.pt", "--positive-min", "0.999"],
           "too few confident samples", "relax --positive-min")
    assert file_digest(store) == before


def test_missing_or_foreign_checkpoint(store: Path, tmp_path: Path) -> None:
    before = file_digest(store)
    _fails(["score-fine", store, "--scorer", tmp_path / "none.pt"], "train one with `salcurate train-scorer`")
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    _fails(["score-fine", store, "--scorer", junk], "not a salcurate scorer checkpoint")
    assert file_digest(store) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without a GPU")
def test_device_cuda_without_gpu(store: Path, tmp_path: Path) -> None:
    before = file_digest(store)
    _fails(["train-scorer", store, "-o", tmp_path / "s.pt", "--device", "cuda"], "no CUDA GPU", "--device cpu")
    _fails(["score-fine", store, "--device", "cuda"], "no CUDA GPU")
    assert file_digest(store) == before
