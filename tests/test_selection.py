"""Pure selection functions of ``salcurate.selection.select`` (SAL Eq. 9: w_i = 1 if score_i >= tau)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from salcurate.errors import InputError, SalcurateError
from salcurate.paper import TABLE_IV_TAUS as PAPER_TAUS
from salcurate.selection.select import (
    SelectConfig,
    default_score,
    fraction_count,
    per_class_counts,
    select_weights,
    sweep,
)

NAN = float("nan")


def kept(w: np.ndarray) -> list[int]:
    return np.flatnonzero(w).tolist()


# --------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------
def score_arrays(min_size: int = 0, max_size: int = 30) -> st.SearchStrategy[np.ndarray]:
    """(N,) float64 scores in [0, 1], some NaN, with repeated values (ties) likely."""
    element = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.55, 1.0, NAN]),
                        st.floats(0.0, 1.0, allow_nan=False))
    return hnp.arrays(np.float64, st.integers(min_size, max_size), elements=element)


@st.composite
def scores_and_classes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    scores = draw(score_arrays(min_size=1))
    c = draw(st.integers(1, 4))
    classes = draw(hnp.arrays(np.bool_, (len(scores), c)))
    return scores, classes


taus = st.floats(0.0, 1.0, allow_nan=False)


# --------------------------------------------------------------------------------------
# select_weights
# --------------------------------------------------------------------------------------
class TestSelectWeights:
    def test_smoke(self) -> None:
        w = select_weights(np.array([0.2, 0.8]), tau=0.5)
        assert kept(w) == [1]

    def test_eq9_hand_values(self) -> None:
        scores = np.array([0.1, 0.55, 0.56, 0.549999, 1.0, 0.0])
        w = select_weights(scores, tau=0.55)
        np.testing.assert_array_equal(w, [0, 1, 1, 0, 1, 0])

    def test_exactly_equal_is_kept(self) -> None:
        for tau in (0.0, 0.35, 0.55, 0.7, 1.0):
            w = select_weights(np.array([tau]), tau=tau)
            assert w.tolist() == [1.0], tau

    def test_float32_score_equal_to_tau_is_kept(self) -> None:
        # scores come from float32 store columns; 0.5 is exact in both precisions
        w = select_weights(np.array([0.5, 0.25], dtype=np.float32), tau=0.5)
        assert kept(w) == [0]

    def test_nan_is_never_kept(self) -> None:
        scores = np.array([NAN, 0.9, NAN, 0.0])
        assert kept(select_weights(scores, tau=0.0)) == [1, 3]
        assert kept(select_weights(scores)) == [1, 3]  # no tau: every scored sample
        assert kept(select_weights(scores, top_k=4)) == [1, 3]
        classes = np.ones((4, 1), bool)
        assert kept(select_weights(scores, tau=1.0, min_per_class=4, classes=classes)) == [1, 3]

    def test_all_nan(self) -> None:
        w = select_weights(np.full(3, NAN), tau=0.0, top_k=2)
        assert w.tolist() == [0.0, 0.0, 0.0]

    def test_empty(self) -> None:
        w = select_weights(np.zeros(0), tau=0.5)
        assert w.shape == (0,) and w.dtype == np.float32

    @pytest.mark.parametrize("tau", [1.5, -0.1, 1.0000001, NAN, float("inf")])
    def test_tau_outside_unit_interval_raises(self, tau: float) -> None:
        with pytest.raises(InputError, match=r"tau must be in \[0, 1\]"):
            select_weights(np.array([0.5]), tau=tau)

    def test_errors_are_salcurate_errors_with_one_line(self) -> None:
        with pytest.raises(SalcurateError) as info:
            select_weights(np.array([0.5]), tau=2.0)
        assert "\n" not in str(info.value) and "2.0" in str(info.value)

    @pytest.mark.parametrize("shape", [(2, 2), (), (1, 3)])
    def test_scores_not_1d_raise(self, shape: tuple[int, ...]) -> None:
        with pytest.raises(InputError, match=r"expected scores of shape \(N,\)"):
            select_weights(np.zeros(shape), tau=0.5)

    def test_negative_top_k_raises(self) -> None:
        with pytest.raises(InputError, match="top_k must be >= 0, got -1"):
            select_weights(np.array([0.5]), top_k=-1)

    def test_negative_min_per_class_raises(self) -> None:
        with pytest.raises(InputError, match="min_per_class must be >= 0, got -2"):
            select_weights(np.array([0.5]), min_per_class=-2, classes=np.ones((1, 1), bool))

    def test_min_per_class_needs_classes(self) -> None:
        with pytest.raises(InputError, match="min_per_class needs the image classes"):
            select_weights(np.array([0.5, 0.1]), tau=0.5, min_per_class=1)
        with pytest.raises(InputError, match="min_per_class needs the image classes"):
            select_weights(np.array([0.5, 0.1]), tau=0.5, min_per_class=1, classes=np.ones((3, 2), bool))

    def test_classes_ignored_without_min_per_class(self) -> None:
        w = select_weights(np.array([0.5, 0.1]), tau=0.5, classes=np.ones((7, 2), bool))
        assert kept(w) == [0]

    @pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
    def test_dtype_and_values(self, dtype: type) -> None:
        scores = np.array([0.9, 0.1, NAN, 0.6], dtype=dtype)
        w = select_weights(scores, tau=0.5)
        assert w.dtype == np.float32 and w.shape == (4,)
        assert set(np.unique(w).tolist()) <= {0.0, 1.0}

    def test_list_input(self) -> None:
        assert kept(select_weights([0.9, 0.1], tau=0.5)) == [0]

    # -- top_k ----------------------------------------------------------------------------
    def test_top_k_keeps_highest(self) -> None:
        w = select_weights(np.array([0.3, 0.9, 0.1, 0.7]), top_k=2)
        assert kept(w) == [1, 3]

    def test_top_k_ties_by_lower_index(self) -> None:
        scores = np.array([0.5, 0.9, 0.5, 0.5, 0.2])
        assert kept(select_weights(scores, top_k=2)) == [0, 1]
        assert kept(select_weights(scores, top_k=3)) == [0, 1, 2]
        assert kept(select_weights(np.full(5, 0.4), top_k=3)) == [0, 1, 2]

    def test_top_k_combined_with_tau(self) -> None:
        scores = np.array([0.8, 0.6, 0.9, 0.4, 0.95])
        # tau keeps 0, 1, 2, 4; top 2 of those are 4 and 2
        assert kept(select_weights(scores, tau=0.5, top_k=2)) == [2, 4]
        # fewer pass tau than K: only those that pass
        assert kept(select_weights(scores, tau=0.85, top_k=3)) == [2, 4]

    def test_top_k_zero_and_larger_than_n(self) -> None:
        scores = np.array([0.8, NAN, 0.9])
        assert kept(select_weights(scores, top_k=0)) == []
        assert kept(select_weights(scores, top_k=10)) == [0, 2]

    # -- min_per_class ----------------------------------------------------------------------
    def test_min_per_class_adds_best_dropped_of_rare_class(self) -> None:
        scores = np.array([0.9, 0.8, 0.3, 0.1, 0.2, 0.4])
        classes = np.array([
            [1, 0],  # 0 kept by tau
            [1, 0],  # 1 kept by tau
            [0, 1],  # 2 rare class, 0.3
            [0, 1],  # 3 rare class, 0.1
            [0, 1],  # 4 rare class, 0.2
            [1, 0],  # 5 common class, dropped 0.4
        ], bool)
        w = select_weights(scores, tau=0.5, min_per_class=2, classes=classes)
        # class 0 already has 2; class 1 gets its two best dropped images (2: 0.3 and 4: 0.2)
        assert kept(w) == [0, 1, 2, 4]
        np.testing.assert_array_equal(per_class_counts(w, classes), [2, 2])

    def test_min_per_class_never_exceeds_what_exists(self) -> None:
        scores = np.array([0.9, 0.1, NAN, 0.2])
        classes = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], bool)
        # class 1 has one scored image (the NaN one does not count): it gets that one only
        w = select_weights(scores, tau=0.95, min_per_class=5, classes=classes)
        assert kept(w) == [0, 1, 3]
        np.testing.assert_array_equal(per_class_counts(w, classes), [2, 1])

    def test_min_per_class_ties_by_lower_index(self) -> None:
        scores = np.array([0.2, 0.2, 0.2])
        classes = np.ones((3, 1), bool)
        assert kept(select_weights(scores, tau=0.5, min_per_class=2, classes=classes)) == [0, 1]

    def test_min_per_class_after_top_k(self) -> None:
        scores = np.array([0.9, 0.8, 0.7, 0.1])
        classes = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], bool)
        w = select_weights(scores, top_k=1, min_per_class=1, classes=classes)
        # top_k keeps 0; class 1 then gets 3 (may exceed K by design: rare classes survive)
        assert kept(w) == [0, 3]

    def test_min_per_class_untagged_image_not_added(self) -> None:
        scores = np.array([0.9, 0.8])
        classes = np.array([[0], [0]], bool)
        assert kept(select_weights(scores, tau=1.0, min_per_class=1, classes=classes)) == []

    # -- properties -------------------------------------------------------------------------
    @settings(max_examples=60, deadline=None)
    @given(scores=score_arrays(), t1=taus, t2=taus)
    def test_raising_tau_never_keeps_more(self, scores: np.ndarray, t1: float, t2: float) -> None:
        lo, hi = min(t1, t2), max(t1, t2)
        w_lo = select_weights(scores, tau=lo) > 0
        w_hi = select_weights(scores, tau=hi) > 0
        assert not (w_hi & ~w_lo).any()  # a subset, hence never more
        assert w_hi.sum() <= w_lo.sum()

    @settings(max_examples=60, deadline=None)
    @given(scores=score_arrays(), tau=taus)
    def test_matches_eq9_elementwise(self, scores: np.ndarray, tau: float) -> None:
        w = select_weights(scores, tau=tau)
        expected = [1.0 if (s == s and s >= tau) else 0.0 for s in scores.tolist()]
        assert w.tolist() == expected

    @settings(max_examples=60, deadline=None)
    @given(scores=score_arrays(), k=st.integers(0, 40), tau=st.one_of(st.none(), taus))
    def test_top_k_count_and_order(self, scores: np.ndarray, k: int, tau: float | None) -> None:
        w = select_weights(scores, tau=tau, top_k=k) > 0
        base = select_weights(scores, tau=tau) > 0
        assert w.sum() == min(k, base.sum())
        assert not (w & ~base).any()
        if w.any() and (base & ~w).any():  # every kept score >= every dropped candidate
            assert scores[w].min() >= scores[base & ~w].max()

    @settings(max_examples=60, deadline=None)
    @given(data=scores_and_classes(), m=st.integers(0, 4), tau=taus)
    def test_min_per_class_guarantee(self, data: tuple[np.ndarray, np.ndarray], m: int, tau: float) -> None:
        scores, classes = data
        w = select_weights(scores, tau=tau, min_per_class=m, classes=classes)
        base = select_weights(scores, tau=tau)
        counts = per_class_counts(w, classes)
        available = (classes & ~np.isnan(scores)[:, None]).sum(axis=0)
        assert (counts >= np.minimum(m, available)).all()
        assert ((w > 0) | (base == 0)).all()  # only adds
        assert not ((w > 0) & np.isnan(scores)).any()
        assert w.dtype == np.float32 and set(np.unique(w).tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------------------
# top_fraction and per_class
# --------------------------------------------------------------------------------------
#: Six images, two classes: class 0 easy (high scores), class 1 hard (all scores low).
HARD_SCORES = np.array([0.9, 0.2, 0.8, 0.1, 0.7, 0.15])
HARD_CLASSES = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [1, 0], [0, 1]], bool)


class TestTopFractionPerClass:
    def test_fraction_count_hand_values(self) -> None:
        assert [fraction_count(0.5, n) for n in (0, 1, 2, 3, 4, 5, 6)] == [0, 1, 1, 2, 2, 3, 3]
        assert fraction_count(0.7, 10) == 7  # 0.7 x 10 = 7.000000000000001 in floats: not 8
        assert fraction_count(1.0, 9) == 9 and fraction_count(0.01, 3) == 1

    def test_hard_class_wiped_out_globally_kept_per_class(self) -> None:
        # global best half: the three easy images (0.9, 0.8, 0.7); the hard class keeps nothing
        w = select_weights(HARD_SCORES, top_fraction=0.5)
        assert kept(w) == [0, 2, 4]
        np.testing.assert_array_equal(per_class_counts(w, HARD_CLASSES), [3, 0])
        # per class: the best half (ceil(3 x 0.5) = 2) of each class: easy 0.9, 0.8; hard 0.2, 0.15
        w = select_weights(HARD_SCORES, top_fraction=0.5, per_class=True, classes=HARD_CLASSES)
        assert kept(w) == [0, 1, 2, 5]
        np.testing.assert_array_equal(per_class_counts(w, HARD_CLASSES), [2, 2])

    def test_per_class_top_k(self) -> None:
        w = select_weights(HARD_SCORES, top_k=1, per_class=True, classes=HARD_CLASSES)
        assert kept(w) == [0, 1]  # the best of each class
        assert kept(select_weights(HARD_SCORES, top_k=1)) == [0]

    def test_per_class_with_tau_ranks_only_what_passes(self) -> None:
        # tau 0.15 drops image 3 (0.1); hard class: 0.2, 0.15 pass, best half of 2 = 1
        w = select_weights(HARD_SCORES, tau=0.15, top_fraction=0.5, per_class=True, classes=HARD_CLASSES)
        assert kept(w) == [0, 1, 2]

    def test_per_class_tau_only_equals_global_tau_for_tagged_images(self) -> None:
        g = select_weights(HARD_SCORES, tau=0.5)
        p = select_weights(HARD_SCORES, tau=0.5, per_class=True, classes=HARD_CLASSES)
        np.testing.assert_array_equal(g, p)

    def test_image_kept_for_any_of_its_classes(self) -> None:
        # image 1 has both classes: last in class 0, first in class 1: kept (for class 1)
        scores = np.array([0.9, 0.5, 0.8, 0.1])
        classes = np.array([[1, 0], [1, 1], [1, 0], [0, 1]], bool)
        w = select_weights(scores, top_k=1, per_class=True, classes=classes)
        assert kept(w) == [0, 1]
        # per-class counts count an image under each of its tags
        np.testing.assert_array_equal(per_class_counts(w, classes), [2, 1])

    def test_untagged_and_unscored_images_are_not_kept_per_class(self) -> None:
        scores = np.array([0.9, 0.8, NAN])
        classes = np.array([[0], [1], [1]], bool)
        w = select_weights(scores, top_fraction=1.0, per_class=True, classes=classes)
        assert kept(w) == [1]

    def test_top_k_and_top_fraction_together_keep_the_smaller(self) -> None:
        scores = np.array([0.9, 0.8, 0.7, 0.6])
        assert kept(select_weights(scores, top_k=3, top_fraction=0.5)) == [0, 1]
        assert kept(select_weights(scores, top_k=1, top_fraction=0.5)) == [0]

    def test_per_class_then_min_per_class(self) -> None:
        w = select_weights(HARD_SCORES, top_k=1, per_class=True, min_per_class=2, classes=HARD_CLASSES)
        assert kept(w) == [0, 1, 2, 5]

    @pytest.mark.parametrize("fraction", [0.0, -0.5, 1.01, NAN])
    def test_bad_top_fraction_raises(self, fraction: float) -> None:
        with pytest.raises(InputError, match=r"top_fraction must be in \(0, 1\]") as info:
            select_weights(np.array([0.5]), top_fraction=fraction)
        assert info.value.params == ("top_fraction",)

    def test_per_class_needs_classes(self) -> None:
        with pytest.raises(InputError, match="per_class needs the image classes") as info:
            select_weights(np.array([0.5, 0.1]), top_k=1, per_class=True)
        assert info.value.params == ("per_class",)
        with pytest.raises(InputError, match="per_class needs the image classes"):
            select_weights(np.array([0.5, 0.1]), top_k=1, per_class=True, classes=np.ones((3, 1), bool))

    @settings(max_examples=60, deadline=None)
    @given(data=scores_and_classes(), f=st.floats(0.01, 1.0), tau=st.one_of(st.none(), taus))
    def test_per_class_fraction_properties(self, data: tuple[np.ndarray, np.ndarray], f: float,
                                           tau: float | None) -> None:
        scores, classes = data
        w = select_weights(scores, tau=tau, top_fraction=f, per_class=True, classes=classes) > 0
        base = select_weights(scores, tau=tau) > 0
        assert not (w & ~base).any()  # only what passes tau
        for c in range(classes.shape[1]):
            cand = base & classes[:, c]
            mine = w & classes[:, c]
            # every class keeps at least its own best fraction of its candidates
            assert mine.sum() >= fraction_count(f, int(cand.sum()))
            if cand.any():
                assert mine.any()
        assert not (w & ~classes.any(axis=1)).any()  # untagged images are never kept

    @settings(max_examples=60, deadline=None)
    @given(scores=score_arrays(), f=st.floats(0.01, 1.0))
    def test_global_fraction_count_and_order(self, scores: np.ndarray, f: float) -> None:
        w = select_weights(scores, top_fraction=f) > 0
        n = int((~np.isnan(scores)).sum())
        assert w.sum() == fraction_count(f, n)
        if w.any() and (~w & ~np.isnan(scores)).any():
            assert scores[w].min() >= scores[~w & ~np.isnan(scores)].max()


class TestDefaultScore:
    def test_order_q_sf_sc(self) -> None:
        assert default_score(["sc", "sf", "q", "ac"], "proxy") == "q"
        assert default_score(["sc", "sf", "ac"], "proxy") == "sf"
        assert default_score(["sc", "ac"], "proxy") == "sc"
        assert default_score(["ac", "sc@1a2b3c"], "proxy") is None

    def test_named_set(self) -> None:
        names = ["q", "sf:cam", "sc:cam", "sc"]
        assert default_score(names, "cam") == "sf:cam"  # q belongs to the imported set
        assert default_score([*names, "q:cam"], "cam") == "q:cam"
        assert default_score(names, "other") is None


# --------------------------------------------------------------------------------------
# per_class_counts
# --------------------------------------------------------------------------------------
class TestPerClassCounts:
    def test_hand_values(self) -> None:
        w = np.array([1, 0, 1, 1], np.float32)
        classes = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], bool)
        counts = per_class_counts(w, classes)
        np.testing.assert_array_equal(counts, [2, 3, 0])
        assert counts.dtype == np.int64 and counts.shape == (3,)

    def test_weights_above_zero_count(self) -> None:
        classes = np.ones((3, 1), bool)
        assert per_class_counts(np.array([0.5, 0.0, 2.0]), classes).tolist() == [2]

    def test_int_classes_accepted(self) -> None:
        assert per_class_counts(np.ones(2), np.array([[1, 0], [1, 1]])).tolist() == [2, 1]

    def test_empty(self) -> None:
        counts = per_class_counts(np.zeros(0), np.zeros((0, 4), bool))
        assert counts.tolist() == [0, 0, 0, 0] and counts.dtype == np.int64


# --------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------
class TestSweep:
    def test_paper_taus(self) -> None:
        assert PAPER_TAUS == (0.0, 0.35, 0.55, 0.7, 0.8, 0.85)

    def test_hand_values(self) -> None:
        scores = np.array([0.0, 0.35, 0.6, 0.75, 0.9, NAN])
        classes = np.array([[1, 0], [1, 1], [0, 1], [1, 0], [0, 1], [1, 1]], bool)
        rows = sweep(scores, classes)
        assert [r["tau"] for r in rows] == list(PAPER_TAUS)
        assert [r["kept"] for r in rows] == [5, 4, 3, 2, 1, 1]
        assert rows[0]["per_class"] == [3, 3]
        assert rows[2]["per_class"] == [1, 2]
        assert rows[-1]["per_class"] == [0, 1]
        assert all(isinstance(r["kept"], int) and isinstance(r["per_class"], list) for r in rows)

    def test_custom_taus(self) -> None:
        rows = sweep(np.array([0.2, 0.4]), np.ones((2, 1), bool), taus=(0.3,))
        assert rows == [{"tau": 0.3, "kept": 1, "per_class": [1]}]

    @settings(max_examples=50, deadline=None)
    @given(data=scores_and_classes())
    def test_nos_non_increasing(self, data: tuple[np.ndarray, np.ndarray]) -> None:
        scores, classes = data
        rows = sweep(scores, classes)
        nos = [r["kept"] for r in rows]
        assert nos == sorted(nos, reverse=True)
        assert nos[0] == int((~np.isnan(scores)).sum())  # tau 0 keeps every scored mask
        per_class = np.array([r["per_class"] for r in rows])
        assert (np.diff(per_class, axis=0) <= 0).all()


# --------------------------------------------------------------------------------------
# SelectConfig
# --------------------------------------------------------------------------------------
class TestSelectConfig:
    @pytest.mark.parametrize(("config", "name"), [
        (SelectConfig(by="sc", tau=0.5), "sc_tau0.5"),
        (SelectConfig(by="sf", tau=0.55), "sf_tau0.55"),
        (SelectConfig(by="sc", tau=0.0), "sc_tau0"),
        (SelectConfig(by="sc", tau=1.0), "sc_tau1"),
        (SelectConfig(by="sc", top_k=10), "sc_top10"),
        (SelectConfig(by="sc", top_k=0), "sc_top0"),
        (SelectConfig(by="sf", tau=0.85, top_k=100, min_per_class=3), "sf_tau0.85_top100_min3"),
        (SelectConfig(by="ac@1a2b3c", tau=0.7), "ac@1a2b3c_tau0.7"),
        (SelectConfig(by="sf"), "sf"),
        (SelectConfig(by="q:cam", top_fraction=0.5, per_class=True), "q:cam_top0.5_perclass"),
        (SelectConfig(by="q", top_fraction=1.0), "q_top1.0"),  # not top1, the name of top_k 1
        (SelectConfig(by="q", top_k=1), "q_top1"),
        (SelectConfig(by="sf", tau=0.5, top_k=3, top_fraction=0.25, min_per_class=2, per_class=True),
         "sf_tau0.5_top3_top0.25_min2_perclass"),
    ])
    def test_default_name(self, config: SelectConfig, name: str) -> None:
        assert config.default_name() == name

    def test_name_ignores_run_options(self) -> None:
        a = SelectConfig(by="sc", tau=0.5)
        b = SelectConfig(by="sc", tau=0.5, dry_run=True, overwrite=True, sweep=True, name="x")
        assert a.default_name() == b.default_name()

    def test_defaults_and_frozen(self) -> None:
        c = SelectConfig()
        # by None: run picks q, else sf, else sc (default_score)
        assert (c.by, c.tau, c.top_k, c.min_per_class, c.dry_run, c.overwrite, c.sweep) == \
            (None, None, None, 0, False, False, False)
        assert (c.top_fraction, c.per_class) == (None, False)
        with pytest.raises(AttributeError):
            c.tau = 0.5  # type: ignore[misc]
