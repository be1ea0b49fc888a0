"""The fine scorer's training-set synthesis: counts, thresholds, determinism, item building."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from salcurate.errors import InputError
from salcurate.scoring import synthesis as syn
from salcurate.scoring.synthesis import SynthesisConfig


def _ac(n: int = 400, seed: int = 0) -> np.ndarray:
    ac = np.random.default_rng(seed).random(n)
    ac[::17] = np.nan  # not scored
    return ac


def test_counts_are_the_papers_scaled_to_the_store() -> None:
    assert syn.planned_counts(10582, SynthesisConfig()) == {"positive": 4000, "negative": 1000, "degraded": 3000,
                                                             "composite": 2000}
    assert syn.planned_counts(300, SynthesisConfig()) == {"positive": 113, "negative": 28, "degraded": 85,
                                                          "composite": 57}
    assert syn.planned_counts(300, SynthesisConfig(scale=2))["positive"] == 227
    assert syn.planned_counts(10582, SynthesisConfig(proportions=(1000, 0, 500, 0))) == {
        "positive": 1000, "negative": 0, "degraded": 500, "composite": 0}
    with pytest.raises(InputError, match="proportions must be 4 counts"):
        syn.planned_counts(10, SynthesisConfig(proportions=(1, 2, 3)))  # type: ignore[arg-type]


def test_plan_respects_thresholds_and_is_deterministic() -> None:
    ac = _ac()
    cfg = SynthesisConfig()
    table = syn.plan_training_set(ac, cfg)
    assert table.shape[1] == 4 and table.dtype == np.int64
    kind, i, j = table[:, 0], table[:, 1], table[:, 2]
    assert (ac[i[kind == syn.POSITIVE]] >= 0.8).all()
    assert (ac[i[kind == syn.NEGATIVE]] <= 0.3).all()
    assert (ac[i[kind == syn.DEGRADED]] >= 0.8).all()  # degraded copies start from good masks
    assert (ac[i[kind == syn.COMPOSITE]] >= 0.9).all() and (ac[j[kind == syn.COMPOSITE]] >= 0.3).all()
    assert (j[kind != syn.COMPOSITE] == -1).all()
    assert len(np.unique(i[kind == syn.POSITIVE])) == (kind == syn.POSITIVE).sum()  # without replacement
    assert not np.isnan(ac[i]).any()
    np.testing.assert_array_equal(table, syn.plan_training_set(ac, cfg))
    assert not np.array_equal(table, syn.plan_training_set(ac, SynthesisConfig(seed=1)))


def test_too_few_confident_samples_say_what_to_relax() -> None:
    ac = np.full(50, 0.5)
    ac[:3] = 0.95
    with pytest.raises(InputError, match=r"3 positive \(AC >= 0.8\) of 50 scored, need at least 8; relax positive_min"):
        syn.plan_training_set(ac, SynthesisConfig())


def test_split_keeps_each_image_on_one_side() -> None:
    ac = _ac()
    table = syn.plan_training_set(ac, SynthesisConfig())
    train, val = syn.split_train_val(table, len(ac), 0.2, seed=0)
    assert len(val) > 0 and len(train) + len(val) <= len(table)
    assert len(train) + len(val) >= len(table) - (table[:, 0] == syn.COMPOSITE).sum()  # only composites dropped
    val_images = set(val[:, 1]) | set(val[val[:, 2] >= 0, 2])
    train_images = set(train[:, 1]) | set(train[train[:, 2] >= 0, 2])
    assert not (val_images & train_images)
    with pytest.raises(InputError, match="val_fraction must be in"):
        syn.split_train_val(table, len(ac), 1.5, seed=0)


def test_degrade_only_removes_pixels_and_lowers_ac() -> None:
    mask = np.zeros((64, 64), bool)
    mask[16:48, 12:52] = True
    rng = np.random.default_rng(0)
    for _ in range(10):
        out = syn.degrade(mask, rng)
        assert not (out & ~mask).any() and out.sum() < mask.sum()


def test_paste_gives_unions_of_masks_and_references() -> None:
    s = 48
    src_img = np.full((s, s, 3), 200, np.uint8)
    src_mask = np.zeros((s, s), bool)
    src_mask[10:20, 10:20] = True
    dst_img = np.zeros((s, s, 3), np.uint8)
    dst_mask = np.zeros((s, s), bool)
    dst_mask[30:44, 30:44] = True
    img, mask, ref = syn.paste(src_img, src_mask, src_mask, dst_img, dst_mask, dst_mask.copy(),
                               np.random.default_rng(1))
    pasted = (img[..., 0] == 200)
    assert pasted.any() and not (pasted & dst_mask).any()  # placed on the background
    np.testing.assert_array_equal(mask, dst_mask | pasted)
    np.testing.assert_array_equal(ref, dst_mask | pasted)


def test_network_input_layout() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    mask = np.eye(8, dtype=bool)
    x = syn.network_input(img, mask)
    assert x.shape == (4, 8, 8) and x.dtype == np.float32
    assert set(np.unique(x[3]).tolist()) == {-1.0, 1.0}
    np.testing.assert_allclose(x[0, 0, 0], (0 - 0.485) / 0.229, rtol=1e-6)


def test_training_set_builds_items_lazily_and_deterministically(tmp_path, demo_scored_store) -> None:  # type: ignore[no-untyped-def]
    from salcurate.data.store import MaskStore

    path = demo_scored_store
    with MaskStore(path) as st:
        ac = st.score("ac")
    table = syn.plan_training_set(ac, SynthesisConfig(scale=2))
    ds = syn.ScorerTrainingSet(str(path), table, size=32, ac=ac, reference="reference", b=0.1, formula="standard")
    assert ds._store is None  # nothing read before an item is asked for
    kinds = {int(k): int(np.flatnonzero(table[:, 0] == k)[0]) for k in np.unique(table[:, 0])}
    assert set(kinds) == {syn.POSITIVE, syn.NEGATIVE, syn.DEGRADED, syn.COMPOSITE}
    for kind, k in kinds.items():
        x, y = ds[k]
        assert x.shape == (4, 32, 32) and 0.0 <= float(y) <= 1.0
        x2, y2 = ds[k]
        np.testing.assert_array_equal(x, x2)
        assert y == y2
        if kind in (syn.POSITIVE, syn.NEGATIVE):
            assert float(y) == pytest.approx(float(ac[table[k, 1]]))
    clone = pickle.loads(pickle.dumps(ds))  # what a data-loader worker gets: no open store
    assert clone._store is None and np.array_equal(clone[kinds[syn.DEGRADED]][0], ds[kinds[syn.DEGRADED]][0])
