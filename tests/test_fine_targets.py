"""The fine scorer on better evidence (issue 12): ``train-scorer --target COLUMN --scorer-input labels``
and ``score-fine`` with such a scorer, beside the paper's path (unchanged)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_fails_one_line, file_digest, invoke

from salcurate.data import store as store_mod
from salcurate.data.store import MaskStore, copy_store
from salcurate.errors import InputError
from salcurate.nn.scorer import MaskScorer, ScorerConfig, load_checkpoint, save_checkpoint
from salcurate.scoring import fine
from salcurate.scoring.fine import ScoreFineConfig, ScorerInput, ScorerSpec, labels_input
from salcurate.scoring.synthesis import SynthesisConfig
from salcurate.training.scorer import MIN_TARGET_SAMPLES, TrainScorerConfig
from salcurate.training.scorer import run as train

TINY = dict(input_size=32, width=8, channels=12, hidden=6, batch_size=8, lr=1e-3, workers=0,
            synthesis=SynthesisConfig(scale=2, val_fraction=0.25))


@pytest.fixture
def store(demo_scored_store: Path, tmp_path: Path) -> Path:
    path = tmp_path / "masks.h5"
    copy_store(demo_scored_store, path)
    return path


def _put(path: Path, name: str, values: np.ndarray) -> None:
    with store_mod.transaction(path, command="test", config={}) as tx:
        tx.put_scores({name: np.asarray(values, np.float32)}, config={"test": True}, command="test", overwrite=True)


def _fails(args: list[object], *needles: str) -> None:
    assert_fails_one_line(args, *needles)


# -- pure input ----------------------------------------------------------------------------------
def test_labels_input_is_rgb_and_one_hot_classes() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    labels = np.array([[0, 1, 2, 255]] * 4, np.uint8)
    x = labels_input(img, labels, num_classes=3)
    assert x.shape == (3 + 3 + 1, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 0], (0 - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_array_equal(x[3:, 0], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert (x[3:, :, 3] == 0).all()  # ignore pixels are 0 in every class channel


def test_labels_input_refuses_mismatched_shapes() -> None:
    with pytest.raises(InputError, match=r"labels_input expects an \(S, S, 3\) image and an \(S, S\) label map"):
        labels_input(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.uint8), num_classes=2)


def test_spec_in_channels_and_column_names() -> None:
    assert ScorerSpec().paper and ScorerSpec().in_channels() == 4 and ScorerSpec().column_bases() == ("p", "sf")
    spec = ScorerSpec(ScorerInput.labels, "q:cam", 16)
    assert spec.in_channels() == 3 + 16 + 1 and spec.column_bases() == ("p_q_labels", "sf_q_labels")
    assert ScorerSpec(ScorerInput.mask, "q@1a2b3c").column_bases() == ("p_q", "sf_q")


# -- train-scorer with a target ------------------------------------------------------------------
def test_labels_scorer_round_trip(store: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "scorer.pt"
    res = train(TrainScorerConfig(store=str(store), output=str(ckpt), epochs=2, target="ac", scorer_input="labels",
                                  **TINY))
    with MaskStore(store) as st:
        c, n = st.num_classes, int((st.has_map("proxy") & np.isfinite(st.score("ac"))).sum())
    assert res.items["train"] + res.items["val"] == n and res.items["val"] > 0
    assert res.final["val_spearman"] is not None
    _, cfg, info = load_checkpoint(ckpt)
    assert cfg.in_channels == 3 + c + 1
    assert info["extra"]["scorer_input"] == "labels" and info["extra"]["target"] == "ac"
    assert info["extra"]["num_classes"] == c

    cfg_fine = ScoreFineConfig(store=str(store), scorer=str(ckpt), batch_size=8, workers=0)
    out = fine.run(cfg_fine)
    assert out.columns == {"p": "p_ac_labels", "sf": "sf_ac_labels"}
    with MaskStore(store) as st:
        assert "p" not in st.score_names() and "sf" not in st.score_names()  # the paper's columns untouched
        p, has = st.score("p_ac_labels"), st.has_map("proxy")
        assert np.isfinite(p[has]).all() and ((p[has] >= 0) & (p[has] <= 1)).all()
        np.testing.assert_allclose(st.score("sf_ac_labels")[has], (p * st.score("cd"))[has], rtol=1e-6)
        meta = st.score_meta("p_ac_labels")["config"]
        assert meta["scorer_input"] == "labels" and meta["target"] == "ac"
    before = file_digest(store)
    assert fine.run(cfg_fine).nothing_to_do and file_digest(store) == before


def test_mask_scorer_with_a_target_via_cli(store: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "s.pt"
    r = invoke(["train-scorer", store, "-o", ckpt, "--epochs", "1", "--target", "sc", "--input-size", "32",
                "--width", "8", "--channels", "12", "--hidden", "6", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    _, cfg, info = load_checkpoint(ckpt)
    assert cfg.in_channels == 4 and info["extra"]["target"] == "sc"
    r = invoke(["score-fine", store, "--scorer", ckpt, "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    with MaskStore(store) as st:
        assert {"p_sc", "sf_sc"} <= set(st.score_names()) and "sf" not in st.score_names()


def test_paper_path_unchanged(store: Path, tmp_path: Path) -> None:
    """Default settings: 4 channels, the synthesized set, columns p and sf with the config they always had."""
    ckpt = tmp_path / "paper.pt"
    train(TrainScorerConfig(store=str(store), output=str(ckpt), epochs=1, **TINY))
    _, cfg, info = load_checkpoint(ckpt)
    assert cfg.in_channels == 4 and info["extra"]["target"] == "synthesized"
    assert "target" not in info["extra"]["recipe"] and "scorer_input" not in info["extra"]["recipe"]
    res = fine.run(ScoreFineConfig(store=str(store), scorer=str(ckpt), workers=0))
    assert res.columns == {"p": "p", "sf": "sf"}
    with MaskStore(store) as st:
        assert set(st.score_meta("sf")["config"]) == {"scorer", "scorer_sha256", "input_size", "coarse"}


def test_old_checkpoint_without_the_new_keys_is_the_papers(store: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.pt"
    model = MaskScorer(ScorerConfig(input_size=32, width=8, channels=12, hidden=6))
    save_checkpoint(old, model, model.config, metrics={}, extra={"epochs_done": 1})
    res = fine.run(ScoreFineConfig(store=str(store), scorer=str(old), workers=0))
    assert res.columns == {"p": "p", "sf": "sf"}


# -- bad input -------------------------------------------------------------------------------------
def test_missing_target_names_the_columns_and_score_combined(store: Path, tmp_path: Path) -> None:
    before = file_digest(store)
    _fails(["train-scorer", store, "-o", tmp_path / "s.pt", "--target", "q"],
           "--target", "no score column 'q'", "ac, cd", "`salcurate score-combined`")
    assert file_digest(store) == before and not (tmp_path / "s.pt").exists()


def test_too_few_targets(store: Path, tmp_path: Path) -> None:
    with MaskStore(store) as st:
        values = np.full(len(st), np.nan)
    values[:3] = 0.5
    _put(store, "few", values)
    before = file_digest(store)
    _fails(["train-scorer", store, "-o", tmp_path / "s.pt", "--target", "few"],
           "only 3 proxies", f"at least {MIN_TARGET_SAMPLES}", "--target")
    assert file_digest(store) == before


def test_target_outside_unit_range(store: Path, tmp_path: Path) -> None:
    with MaskStore(store) as st:
        values = np.linspace(0, 2, len(st))
    _put(store, "wide", values)
    _fails(["train-scorer", store, "-o", tmp_path / "s.pt", "--target", "wide"], "values from 0 to 2", "[0, 1]")


def test_labels_input_needs_a_score_target(store: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="scorer_input labels needs a score column as target"):
        train(TrainScorerConfig(store=str(store), output=str(tmp_path / "s.pt"), scorer_input="labels", **TINY))
    _fails(["train-scorer", store, "-o", tmp_path / "s.pt", "--scorer-input", "labels"], "--scorer-input")


def test_labels_scorer_on_a_store_with_another_class_count(store: Path, tmp_path: Path) -> None:
    with MaskStore(store) as st:
        c = st.num_classes
    other = tmp_path / "other.pt"
    model = MaskScorer(ScorerConfig(input_size=32, in_channels=3 + c + 2, width=8, channels=12, hidden=6))
    save_checkpoint(other, model, model.config, metrics={},
                    extra={"scorer_input": "labels", "target": "q", "num_classes": c + 1})
    before = file_digest(store)
    _fails(["score-fine", store, "--scorer", other, "--workers", "0"],
           f"label maps of {c + 1} classes, this store has {c}", "--scorer")
    assert file_digest(store) == before
    with pytest.raises(InputError, match="takes 9 input channels"):  # channels that do not fit the recorded input
        bad = tmp_path / "bad.pt"
        m = MaskScorer(ScorerConfig(input_size=32, in_channels=9, width=8, channels=12, hidden=6))
        save_checkpoint(bad, m, m.config, metrics={}, extra={"scorer_input": "mask"})
        fine.run(dataclasses.replace(ScoreFineConfig(store=str(store), scorer=str(bad), workers=0)))
