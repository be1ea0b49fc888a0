"""Retraining's data side: the training plan, the resumable sample stream, the augmentation."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import put_selection

from salcurate.data import store as store_mod
from salcurate.errors import InputError
from salcurate.training.data import Augment, StreamSampler, augment, plan_training, validation_indices


# -- plan ----------------------------------------------------------------------------------------
def test_plan_without_selection_draws_every_proxy_of_the_split(tiny_store: Path) -> None:
    with store_mod.MaskStore(tiny_store) as st:
        plan = plan_training(st, split="train", selection=None)
        assert [st.ids[i] for i in plan.indices] == ["s001", "s002", "s003", "s004"]
    assert plan.weights.tolist() == [1, 1, 1, 1]
    assert plan.counts == {"split": 4, "with_proxy": 4, "kept": 4, "strong": 0, "drawable": 4}
    assert set(plan.label_kind) == {"proxy"}


def test_plan_selected_versus_all(tiny_store: Path) -> None:
    put_selection(tiny_store, "half", [1, 0, 1, 0, 1, 1])
    with store_mod.MaskStore(tiny_store) as st:
        sel = plan_training(st, split="train", selection="half", sample="selected")
        every = plan_training(st, split="train", selection="half", sample="all")
    assert sel.indices.tolist() == [0, 2] and sel.weights.tolist() == [1, 1]
    assert every.indices.tolist() == [0, 1, 2, 3] and every.weights.tolist() == [1, 0, 1, 0]
    assert sel.counts["kept"] == every.counts["kept"] == 2


def test_strong_samples_use_their_ground_truth_with_weight_1(tiny_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put_selection(tiny_store, "none_kept_but_strong", [0, 0, 0, 0, 0, 0])
    with store_mod.MaskStore(tiny_store) as st:
        st.strong = np.array([False, True, False, False, False, False])
        plan = plan_training(st, split="train", selection="none_kept_but_strong")
        assert plan.indices.tolist() == [1] and plan.weights.tolist() == [1.0]
        assert plan.label_kind.tolist() == ["gt"] and plan.counts["strong"] == 1
        with pytest.raises(InputError, match="keeps no image"):
            plan_training(st, split="train", selection="none_kept_but_strong", use_strong=False)


def test_plan_errors(tiny_store: Path) -> None:
    put_selection(tiny_store, "nothing", [0, 0, 0, 0, 1, 1])
    with store_mod.MaskStore(tiny_store) as st:
        with pytest.raises(InputError, match="selection 'nothing' keeps no image of split 'train' .*lower tau"):
            plan_training(st, split="train", selection="nothing")
        with pytest.raises(InputError, match=r"no samples in split 'test' \(the store has: train, val\)"):
            plan_training(st, split="test", selection=None)
        with pytest.raises(InputError, match="sample must be one of selected, all"):
            plan_training(st, split="train", selection=None, sample="some")


def test_validation_indices_need_ground_truth(tiny_store: Path) -> None:
    with store_mod.MaskStore(tiny_store) as st:
        assert [st.ids[i] for i in validation_indices(st, "val")] == ["s005"]  # s006 has no gt
        assert len(validation_indices(st, "train", limit=2)) == 2


# -- sample stream -------------------------------------------------------------------------------
def test_stream_visits_every_row_once_per_epoch() -> None:
    draws = list(islice(StreamSampler(5, seed=1), 15))
    rows = [r for r, _ in draws]
    for e in range(3):
        assert sorted(rows[5 * e:5 * e + 5]) == [0, 1, 2, 3, 4]
    assert [p for _, p in draws] == list(range(15))
    assert rows[:5] != rows[5:10]  # a new order each epoch


def test_stream_resumes_exactly_at_any_position() -> None:
    full = list(islice(StreamSampler(7, seed=3), 30))
    for start in (0, 4, 7, 13):
        assert list(islice(StreamSampler(7, seed=3, start=start), 30 - start)) == full[start:]


def test_ranks_share_each_epoch_without_overlap() -> None:
    per_rank = [[r for r, _ in islice(StreamSampler(7, seed=0, rank=k, world=2), 4)] for k in range(2)]
    epoch = per_rank[0] + per_rank[1]
    assert set(epoch) == set(range(7)) and len(epoch) == 8  # 7 rows padded to 8 (one repeat), as DistributedSampler


# -- augmentation --------------------------------------------------------------------------------
def test_augment_shapes_and_padding() -> None:
    img = np.full((10, 12, 3), 200, np.uint8)
    labels = np.ones((10, 12), np.uint8)
    x, y = augment(img, labels, np.random.default_rng(0), Augment(crop=32, scale_min=1.0, scale_max=1.0, flip=False))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32, 32) and y.dtype == torch.int64
    assert (y[:10, :12] == 1).all() and (y[10:] == 255).all() and (y[:, 12:] == 255).all()
    assert torch.count_nonzero(x[:, 10:]) == 0  # the mean pixel: 0 after normalisation


def test_augment_moves_image_and_labels_together() -> None:
    img = np.zeros((40, 50, 3), np.uint8)
    img[:, :20] = 255  # bright left part labelled 1
    labels = np.zeros((40, 50), np.uint8)
    labels[:, :20] = 1
    for seed in range(8):
        x, y = augment(img, labels, np.random.default_rng([seed]), Augment(crop=24, scale_min=0.5, scale_max=1.5))
        bright = x[0] > 0
        valid = y != 255
        agree = (bright == (y == 1)) | ~valid
        assert agree.float().mean() > 0.95  # bilinear versus nearest disagree only on the edge


def test_augment_is_a_function_of_the_generator() -> None:
    img = np.random.default_rng(0).integers(0, 255, (30, 30, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 3, (30, 30), dtype=np.uint8)
    a = augment(img, labels, np.random.default_rng([1, 2]), Augment(crop=20))
    b = augment(img, labels, np.random.default_rng([1, 2]), Augment(crop=20))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
