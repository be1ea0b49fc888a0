"""``salcurate.selection.validation``: correlations, AUROC, kept quality and ``evaluate-scores`` on a store."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import NO_GT_ID, TinyVoc, assert_ok, file_digest, invoke, voc_args
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from salcurate.data.store import MaskStore
from salcurate.errors import InputError, StoreError
from salcurate.events import Events
from salcurate.paper import TABLE_IV_TAUS as PAPER_TAUS
from salcurate.scoring.metrics import proxy_miou, true_quality
from salcurate.selection.validation import EvaluateScoresConfig, kept_quality, run, true_quality_of_store
from salcurate.stats import auroc, pearson, spearman

NAN = float("nan")


def add_missing_tags(v: TinyVoc) -> None:
    """Give ``NO_GT_ID`` a tags line (the classes of its proxy), so that every sample can be scored.

    score-coarse refuses a store where a sample with a proxy mask has no tags (CD needs them),
    and the plain ``tiny_voc`` leaves ``NO_GT_ID`` untagged.
    """
    present = [int(k) for k in np.unique(v.proxy[NO_GT_ID]) if 1 <= k <= v.num_classes]
    with v.tags_csv.open("a", encoding="utf-8") as fh:
        fh.write(f"{NO_GT_ID},{' '.join(map(str, present))}\n")


@pytest.fixture
def scored_store(tiny_voc: TinyVoc, tmp_path: Path) -> Path:
    """tiny_voc (with tags for every sample) imported and scored by ``score-coarse --workers 1``."""
    add_missing_tags(tiny_voc)
    out = tmp_path / "scored" / "tiny.h5"
    out.parent.mkdir()
    assert_ok(invoke(voc_args(tiny_voc, out)))
    assert_ok(invoke(["score-coarse", out, "--workers", "1"]))
    return out


# --------------------------------------------------------------------------------------
# pearson / spearman
# --------------------------------------------------------------------------------------
class TestPearson:
    def test_hand_value(self) -> None:
        # x = 1, 2, 3; y = 2, 4, 7: dx = -1, 0, 1; dy = -7/3, -1/3, 8/3
        # cov = 7/3 + 8/3 = 5; sxx = 2; syy = (49 + 1 + 64) / 9 = 114 / 9
        r = pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))
        assert r == pytest.approx(5 / math.sqrt(2 * 114 / 9))
        assert isinstance(r, float)

    def test_perfect_and_reversed(self) -> None:
        x = np.array([0.1, 0.2, 0.5, 0.9])
        assert pearson(x, 3 * x + 1) == pytest.approx(1.0)
        assert pearson(x, -x) == pytest.approx(-1.0)

    @pytest.mark.parametrize(("x", "y"), [
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
        ([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]),
        ([1.0], [2.0]),
        ([], []),
    ])
    def test_nan_when_undefined(self, x: list[float], y: list[float]) -> None:
        assert math.isnan(pearson(np.array(x), np.array(y)))

    def test_constant_input_exact_std(self) -> None:
        x = np.array([0.5, 0.5, 0.5])  # np.std is exactly 0 here
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert math.isnan(pearson(x, np.array([1.0, 2.0, 3.0])))

    def test_constant_input_warns_nothing(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert math.isnan(pearson(np.array([0.1, 0.1, 0.1]), np.array([1.0, 2.0, 3.0])))

    @settings(max_examples=40, deadline=None)
    @given(hnp.arrays(np.float64, st.integers(3, 20), elements=st.floats(0, 1)),
           hnp.arrays(np.float64, 20, elements=st.floats(0, 1)))
    def test_matches_scipy(self, x: np.ndarray, y_all: np.ndarray) -> None:
        y = y_all[: len(x)]
        r = pearson(x, y)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            assert math.isnan(r)
        else:
            assert r == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
            assert -1 - 1e-12 <= r <= 1 + 1e-12


class TestSpearman:
    def test_hand_value_with_ties(self) -> None:
        # ranks of x: 1, 2.5, 2.5, 4; of y: 1, 2, 3, 4 → r = 4.5 / sqrt(4.5 * 5)
        r = spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0]))
        assert r == pytest.approx(4.5 / math.sqrt(4.5 * 5))

    def test_monotone(self) -> None:
        x = np.array([0.1, 0.3, 0.2, 0.9])
        assert spearman(x, np.exp(x)) == pytest.approx(1.0)
        assert spearman(x, -x ** 3) == pytest.approx(-1.0)

    @pytest.mark.parametrize(("x", "y"), [
        ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]),
        ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]),
        ([1.0], [2.0]),
    ])
    def test_nan_when_undefined(self, x: list[float], y: list[float]) -> None:
        assert math.isnan(spearman(np.array(x), np.array(y)))

    @settings(max_examples=40, deadline=None)
    @given(hnp.arrays(np.float64, 12, elements=st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0])),
           hnp.arrays(np.float64, 12, elements=st.floats(0, 1)))
    def test_matches_scipy(self, x: np.ndarray, y: np.ndarray) -> None:
        r = spearman(x, y)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            assert math.isnan(r)
        else:
            assert r == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-9)


# --------------------------------------------------------------------------------------
# auroc
# --------------------------------------------------------------------------------------
def auroc_pairs(detector: np.ndarray, positive: np.ndarray) -> float:
    """AUROC by counting every (positive, negative) pair: 1 if ordered, 1/2 if tied."""
    pos, neg = detector[positive], detector[~positive]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


class TestAuroc:
    def test_perfect(self) -> None:
        assert auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0], bool)) == 1.0

    def test_reversed(self) -> None:
        assert auroc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0], bool)) == 0.0

    def test_all_tied(self) -> None:
        assert auroc(np.full(5, 0.3), np.array([1, 0, 1, 0, 0], bool)) == 0.5

    def test_ties_count_one_half(self) -> None:
        # pairs: (1.0, 0.5) = 1, (0.5, 0.5) = 1/2, (1.0, 0.0) = 1, (0.5, 0.0) = 1 → 3.5 / 4
        detector = np.array([1.0, 0.5, 0.5, 0.0])
        positive = np.array([True, True, False, False])
        assert auroc(detector, positive) == pytest.approx(0.875)

    def test_hand_mixed(self) -> None:
        # positives 0.6, 0.3; negatives 0.4, 0.1: pairs 1, 1, 0, 1 → 0.75
        assert auroc(np.array([0.6, 0.4, 0.3, 0.1]), np.array([1, 0, 1, 0], bool)) == pytest.approx(0.75)

    @pytest.mark.parametrize("positive", [[True, True, True], [False, False, False], []])
    def test_nan_without_both_classes(self, positive: list[bool]) -> None:
        assert math.isnan(auroc(np.arange(len(positive), dtype=float), np.array(positive, bool)))

    def test_int_labels_accepted(self) -> None:
        assert auroc(np.array([0.2, 0.8]), np.array([0, 1])) == 1.0

    def test_returns_float(self) -> None:
        assert type(auroc(np.array([0.2, 0.8]), np.array([0, 1], bool))) is float

    @settings(max_examples=60, deadline=None)
    @given(hnp.arrays(np.float64, st.integers(2, 15), elements=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])),
           st.data())
    def test_matches_pair_count(self, detector: np.ndarray, data: st.DataObject) -> None:
        positive = data.draw(hnp.arrays(np.bool_, len(detector)))
        got = auroc(detector, positive)
        if positive.all() or not positive.any():
            assert math.isnan(got)
        else:
            assert got == pytest.approx(auroc_pairs(detector, positive))
            assert 0.0 <= got <= 1.0
            assert auroc(-detector, positive) == pytest.approx(1.0 - got)  # reversing the detector


# --------------------------------------------------------------------------------------
# kept_quality
# --------------------------------------------------------------------------------------
class TestKeptQuality:
    def test_hand_values(self) -> None:
        rows = kept_quality(np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.4, 0.6]), (0.0, 0.5, 0.95))
        assert [r["tau"] for r in rows] == [0.0, 0.5, 0.95]
        assert [r["kept"] for r in rows] == [3, 2, 0]
        assert rows[0]["mean_quality"] == pytest.approx(0.4)
        assert rows[1]["mean_quality"] == pytest.approx(0.5)
        assert rows[2]["mean_quality"] is None

    def test_json_ready(self) -> None:
        rows = kept_quality(np.array([0.5]), np.array([0.25]), PAPER_TAUS)
        json.dumps(rows)
        assert len(rows) == len(PAPER_TAUS)
        assert type(rows[0]["kept"]) is int and type(rows[0]["mean_quality"]) is float

    def test_nan_score_not_kept(self) -> None:
        rows = kept_quality(np.array([NAN, 0.7]), np.array([0.1, 0.9]), (0.0,))
        assert rows == [{"tau": 0.0, "kept": 1, "mean_quality": pytest.approx(0.9)}]

    @settings(max_examples=40, deadline=None)
    @given(hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(0, 1)))
    def test_kept_non_increasing_in_tau(self, score: np.ndarray) -> None:
        rows = kept_quality(score, np.ones_like(score), PAPER_TAUS)
        counts = [r["kept"] for r in rows]
        assert counts == sorted(counts, reverse=True)
        assert all(r["mean_quality"] in (None, 1.0) for r in rows)


# --------------------------------------------------------------------------------------
# evaluate-scores on a store
# --------------------------------------------------------------------------------------
def expected_quality(v: TinyVoc) -> tuple[dict[str, float], dict[str, float]]:
    agt = {i: true_quality(v.proxy[i], v.gt[i]) for i in v.gt}
    miou = {i: proxy_miou(v.proxy[i], v.gt[i], v.num_classes) for i in v.gt}
    return agt, miou


class TestEvaluateScores:
    def test_fields_and_values(self, scored_store: Path, tiny_voc: TinyVoc) -> None:
        res = run(EvaluateScoresConfig(store=str(scored_store), score="sc")).to_dict()
        json.dumps(res)  # plain data
        assert set(res) >= {"score", "samples", "pearson", "spearman", "pearson_miou", "spearman_miou", "auroc_bad",
                            "bad_below", "bad", "mean_quality_all", "mean_miou_all", "taus", "plot"}
        assert res["score"] == "sc" and res["plot"] is None and res["bad_below"] == 0.5
        assert res["samples"] == len(tiny_voc.gt) == 5  # NO_GT_ID has no ground truth
        with MaskStore(scored_store) as st:
            ids = [i for i in st.ids if i in tiny_voc.gt]
            sc = np.array([st.score("sc")[st.index_of(i)] for i in ids], np.float64)
        agt, miou = expected_quality(tiny_voc)
        q = np.array([agt[i] for i in ids])
        m = np.array([miou[i] for i in ids])
        assert res["pearson"] == pytest.approx(stats.pearsonr(sc, q)[0])
        assert res["spearman"] == pytest.approx(stats.spearmanr(sc, q)[0])
        assert res["pearson_miou"] == pytest.approx(stats.pearsonr(sc, m)[0])
        assert res["mean_quality_all"] == pytest.approx(q.mean())
        assert res["mean_miou_all"] == pytest.approx(m.mean())
        assert res["bad"] == int((q < 0.5).sum())
        if 0 < res["bad"] < res["samples"]:
            assert res["auroc_bad"] == pytest.approx(auroc_pairs(-sc, q < 0.5))
        else:
            assert res["auroc_bad"] is None
        assert [r["tau"] for r in res["taus"]] == list(PAPER_TAUS)
        assert res["taus"][0]["kept"] == res["samples"]
        assert res["taus"][0]["mean_quality"] == pytest.approx(q.mean())

    def test_bad_below_changes_bad_count(self, scored_store: Path, tiny_voc: TinyVoc) -> None:
        agt, _ = expected_quality(tiny_voc)
        q = np.array(list(agt.values()))
        threshold = float(np.median(q)) + 1e-6  # some bad, some good
        res = run(EvaluateScoresConfig(store=str(scored_store), score="sc", bad_below=threshold)).to_dict()
        assert res["bad"] == int((q < threshold).sum())
        assert 0 < res["bad"] < len(q)
        assert 0.0 <= res["auroc_bad"] <= 1.0

    @pytest.mark.parametrize("bad_below", [0.0, 1.0, -0.5, 2.0])
    def test_bad_below_outside_open_interval_raises(self, scored_store: Path, bad_below: float) -> None:
        with pytest.raises(InputError, match=r"bad_below must be in \(0, 1\)"):
            run(EvaluateScoresConfig(store=str(scored_store), bad_below=bad_below))

    def test_unknown_score_raises_listing_existing(self, scored_store: Path) -> None:
        with pytest.raises(StoreError, match=r"no score 'nope'.*it has: ac, cd, f, f1, sc"):
            run(EvaluateScoresConfig(store=str(scored_store), score="nope"))

    def test_any_score_column_can_be_judged(self, scored_store: Path) -> None:
        res = run(EvaluateScoresConfig(store=str(scored_store), score="ac")).to_dict()
        assert res["score"] == "ac" and res["samples"] == 5

    def test_plot_written(self, scored_store: Path, tmp_path: Path) -> None:
        png = tmp_path / "plots" / "sc.png"
        png.parent.mkdir()
        res = run(EvaluateScoresConfig(store=str(scored_store), score="sc", plot=str(png))).to_dict()
        assert res["plot"] == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_plot_folder_missing_is_refused(self, scored_store: Path, tmp_path: Path) -> None:
        png = tmp_path / "missing" / "sc.png"
        digest = file_digest(scored_store)
        with pytest.raises(InputError, match=r"the folder .*missing does not exist; create it or choose another plot"):
            run(EvaluateScoresConfig(store=str(scored_store), score="sc", plot=str(png)))
        assert not png.parent.exists()
        assert file_digest(scored_store) == digest

    def test_store_unchanged(self, scored_store: Path) -> None:
        digest = file_digest(scored_store)
        run(EvaluateScoresConfig(store=str(scored_store), score="sc"))
        assert file_digest(scored_store) == digest

    def test_progress_and_on_start(self, scored_store: Path) -> None:
        seen: list[int] = []
        started: list[int] = []

        class Record(Events):
            def start(self, total: int, done: int = 0, *, label: str = "") -> None:
                started.append(total)

            def advance(self, n: int = 1, **info: object) -> None:
                seen.append(n)

        run(EvaluateScoresConfig(store=str(scored_store)), events=Record())
        assert started == [5] and sum(seen) == 5

    def test_without_ground_truth_raises(self, tiny_voc: TinyVoc, tmp_path: Path) -> None:
        add_missing_tags(tiny_voc)
        tiny_voc.gt_dir.rename(tiny_voc.root / "no_gt")
        out = tmp_path / "nogt.h5"
        assert_ok(invoke(voc_args(tiny_voc, out)))
        assert_ok(invoke(["score-coarse", out, "--workers", "1"]))
        with pytest.raises(StoreError, match="0 samples have both a score 'sc' and ground truth.*--gt DIR"):
            run(EvaluateScoresConfig(store=str(out), score="sc"))


def test_true_quality_of_store(scored_store: Path, tiny_voc: TinyVoc) -> None:
    agt, miou = expected_quality(tiny_voc)
    with MaskStore(scored_store) as st:
        got_agt, got_miou = true_quality_of_store(st)
        ids = st.ids
    assert got_agt.shape == got_miou.shape == (len(ids),)
    for k, i in enumerate(ids):
        if i in agt:
            assert got_agt[k] == pytest.approx(agt[i]) and got_miou[k] == pytest.approx(miou[i])
        else:
            assert math.isnan(got_agt[k]) and math.isnan(got_miou[k])
