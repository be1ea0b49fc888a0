"""The combined score ``q`` (``salcurate.scoring.combined``, ``score-combined``) and ``select``'s default score."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_ok, file_digest, invoke
from PIL import Image
from typer.testing import Result

from salcurate.data import store as store_mod
from salcurate.data.store import MaskStore, SampleRecord
from salcurate.errors import InputError, SalcurateError, StoreError
from salcurate.scoring.combined import (
    DEFAULT_WEIGHTS,
    EPS,
    CombinedConfig,
    combined_score,
    format_weights,
    parse_components,
    run,
    tag_prior,
)
from salcurate.selection.select import select_weights

NAN = float("nan")
CLASS_NAMES = ("background", "cat", "dog", "fox")
#: Tags of the six samples (classes 1..3); sample 5 has no tags known.
TAGS = [(1,), (1, 2), (2,), (1, 2, 3), (3,), None]
AC = np.array([0.9, 0.5, 0.2, 0.8, 0.0, 0.7], np.float32)
CE = np.array([0.8, 0.25, 0.9, 0.4, 0.6, 0.5], np.float32)


def assert_error(result: Result, *fragments: str) -> None:
    """Exit 2, one ``error:`` line holding every fragment, no traceback."""
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"


def flat(text: str) -> str:
    return " ".join(text.split())


def _record(i: int) -> SampleRecord:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), 30 * i, np.uint8)).save(buf, format="PNG")
    tags = None
    if TAGS[i] is not None:
        tags = np.zeros(len(CLASS_NAMES) - 1, bool)
        tags[[c - 1 for c in TAGS[i]]] = True
    return SampleRecord(id=f"c{i}", split="train", image_bytes=buf.getvalue(), image_format="PNG", height=6,
                        width=8, tags=tags)


def put_scores(path: Path, columns: dict[str, np.ndarray], config: dict | None = None) -> None:
    with store_mod.transaction(path, command="test", config={}) as tx:
        tx.put_scores(columns, config=config or {"made": "by hand"}, command="test", overwrite=True)


@pytest.fixture
def cam_store(tmp_path: Path) -> Path:
    """Six samples (no imported proxies), a proxy set ``cam`` with masks for samples 0-4, and the
    columns ``ac:cam`` and ``ce:cam``."""
    out = tmp_path / "c.h5"
    with store_mod.create_store(out, CLASS_NAMES, command="test", config={}) as w:
        w.append_samples([_record(i) for i in range(6)])
    maps = [np.full((6, 8), 1 + i % 3, np.uint8) for i in range(5)] + [None]
    with store_mod.transaction(out, command="test", config={}) as tx:
        tx.put_label_maps("cam", iter(maps), config={"backbone": "resnet18"}, command="pseudo-label")
    has = np.arange(6) < 5
    put_scores(out, {"ac:cam": np.where(has, AC, NAN), "ce:cam": np.where(has, CE, NAN)}, {"made": "ac, ce"})
    return out


# --------------------------------------------------------------------------------------
# combined_score
# --------------------------------------------------------------------------------------
class TestCombinedScore:
    def test_smoke(self) -> None:
        q = combined_score({"a": np.array([0.25])}, weights={"a": 1})
        assert q.tolist() == [0.25]

    def test_weighted_geometric_mean_hand_values(self) -> None:
        a, b = np.array([0.5, 0.8, 1.0]), np.array([0.25, 0.1, 1.0])
        q = combined_score({"a": a, "b": b}, weights={"a": 1, "b": 2})
        expected = [(0.5 * 0.25**2) ** (1 / 3), (0.8 * 0.1**2) ** (1 / 3), 1.0]
        np.testing.assert_allclose(q, expected, rtol=1e-12)
        assert q.shape == (3,) and q.dtype == np.float64

    def test_equal_weights_rank_as_the_product(self) -> None:
        # two components with equal weights: q = sqrt(AC x CD) = sqrt(SC), so q orders masks as SC (Eq. 5) does
        rng = np.random.default_rng(0)
        ac, cd = rng.uniform(0.01, 1, 50), rng.uniform(0.01, 1, 50)
        q = combined_score({"ac": ac, "cd": cd}, weights={"ac": 1, "cd": 1})
        np.testing.assert_allclose(q, np.sqrt(ac * cd), rtol=1e-12)
        np.testing.assert_array_equal(np.argsort(q), np.argsort(ac * cd))

    def test_scaling_the_weights_changes_nothing(self) -> None:
        c = {"a": np.array([0.3, 0.6]), "b": np.array([0.9, 0.2])}
        np.testing.assert_allclose(combined_score(c, weights={"a": 1, "b": 3}),
                                   combined_score(c, weights={"a": 0.5, "b": 1.5}), rtol=1e-12)

    def test_nan_where_any_used_component_is_nan(self) -> None:
        c = {"a": np.array([0.5, NAN, 0.5]), "b": np.array([NAN, 0.5, 0.5]), "c": np.array([NAN, NAN, NAN])}
        q = combined_score(c, weights={"a": 1, "b": 1, "c": 0})  # c has weight 0: not used
        assert np.isnan(q[:2]).all() and q[2] == pytest.approx(0.5)

    def test_zero_is_floored_at_eps(self) -> None:
        q = combined_score({"a": np.array([0.0, 0.0]), "b": np.array([1.0, 0.5])}, weights={"a": 1, "b": 1})
        np.testing.assert_allclose(q, [math.sqrt(EPS), math.sqrt(EPS * 0.5)])
        assert q[0] > q[1]  # a zero component still leaves the masks ranked by the others
        q = combined_score({"a": np.array([0.0])}, weights={"a": 1}, eps=1e-6)
        assert q[0] == pytest.approx(1e-6)

    def test_rounding_outside_unit_interval_is_clipped(self) -> None:
        q = combined_score({"a": np.array([1.00001, -0.00001])}, weights={"a": 1})
        np.testing.assert_allclose(q, [1.0, EPS])

    def test_unused_components_are_not_read(self) -> None:
        q = combined_score({"a": np.array([0.5]), "junk": np.array([7.0, 8.0])}, weights={"a": 1})
        assert q.tolist() == [0.5]

    @pytest.mark.parametrize(("components", "weights", "fragment"), [
        ({"a": np.array([0.5])}, {"a": -1}, "bad ['a']"),
        ({"a": np.array([0.5])}, {"a": float("inf")}, "bad ['a']"),
        ({"a": np.array([0.5])}, {}, "at least one weight > 0"),
        ({"a": np.array([0.5])}, {"a": 0}, "at least one weight > 0"),
        ({"a": np.array([0.5])}, {"a": 1, "b": 1}, "['b'] missing"),
        ({"a": np.array([0.5]), "b": np.array([0.5, 0.5])}, {"a": 1, "b": 1}, "same shape (N,)"),
        ({"a": np.zeros((2, 2))}, {"a": 1}, "same shape (N,)"),
        ({"a": np.array([0.5, 1.2])}, {"a": 1}, "outside: ['a']"),
        ({"a": np.array([-0.1])}, {"a": 1}, "outside: ['a']"),
    ])
    def test_bad_input_raises_one_line(self, components: dict, weights: dict, fragment: str) -> None:
        with pytest.raises(InputError) as info:
            combined_score(components, weights=weights)
        assert fragment in str(info.value) and "\n" not in str(info.value)
        assert info.value.params == ("components",)


class TestTagPrior:
    def test_hand_values(self) -> None:
        tags = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]], bool)
        np.testing.assert_allclose(tag_prior(tags), [1, 1 / 2, 1 / 3, 1])

    def test_unknown_tags_are_nan(self) -> None:
        p = tag_prior(np.array([[1, 1], [0, 0]], bool), has_tags=np.array([True, False]))
        assert p[0] == 0.5 and np.isnan(p[1])

    def test_bad_shapes(self) -> None:
        with pytest.raises(InputError, match=r"expected tags of shape \(N, C\)"):
            tag_prior(np.ones(3, bool))
        with pytest.raises(InputError, match="has_tags of shape"):
            tag_prior(np.ones((3, 2), bool), has_tags=np.ones(2, bool))


class TestParseComponents:
    def test_default(self) -> None:
        assert parse_components(None) == DEFAULT_WEIGHTS == {"ac": 1, "ce": 1, "tags": 1}
        assert parse_components(None) is not DEFAULT_WEIGHTS

    def test_hand_values(self) -> None:
        assert parse_components("ac=1, ce_in=0.5,tags") == {"ac": 1.0, "ce_in": 0.5, "tags": 1.0}
        assert parse_components("ac=2,mm=0") == {"ac": 2.0}  # weight 0 leaves mm out
        assert parse_components("sf@1a2b3c=1") == {"sf@1a2b3c": 1.0}

    def test_round_trip(self) -> None:
        assert parse_components(format_weights({"ac": 1.0, "tags": 0.25})) == {"ac": 1.0, "tags": 0.25}

    @pytest.mark.parametrize(("text", "fragment"), [
        ("", "name=weight pairs"),
        ("ac=1,,ce=1", "name=weight pairs"),
        ("ac=x", "the weight of 'ac' must be a number, got 'x'"),
        ("ac=-1", "must be a number >= 0, got '-1'"),
        ("ac=nan", "must be a number >= 0"),
        ("ac=1,ac=2", "names 'ac' twice"),
        ("q=1,ac=1", "cannot hold the combined score"),
        ("ac=0,tags=0", "at least one weight > 0"),
    ])
    def test_bad_text(self, text: str, fragment: str) -> None:
        with pytest.raises(InputError) as info:
            parse_components(text)
        assert fragment in str(info.value) and info.value.params == ("components",)


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------
def expected_q(weights: dict[str, float]) -> np.ndarray:
    prior = np.array([1, 1 / 2, 1, 1 / 3, 1, NAN])
    comps = {"ac": AC.astype(np.float64), "ce": CE.astype(np.float64), "tags": prior}
    q = combined_score(comps, weights=weights)
    q[5] = NAN  # sample 5 has no cam mask
    return q.astype(np.float32)


class TestRun:
    def test_writes_q_with_weights_and_component_configs(self, cam_store: Path) -> None:
        res = run(CombinedConfig(store=str(cam_store), components="ac=1,ce=2,tags=1"))
        assert res.column == "q:cam" and not res.nothing_to_do and res.scored == 5
        assert res.columns == {"ac": "ac:cam", "ce": "ce:cam", "tags": None}
        with MaskStore(cam_store) as st:
            q, meta, log = st.score("q:cam"), st.score_meta("q:cam"), st.run_log()[-1]
        np.testing.assert_allclose(q, expected_q({"ac": 1, "ce": 2, "tags": 1}), rtol=1e-6, equal_nan=True)
        # hand check of sample 1: ac 0.5, ce 0.25, two tags
        assert q[1] == pytest.approx((0.5 * 0.25**2 * 0.5) ** 0.25, rel=1e-6)
        assert res.mean_q == pytest.approx(float(np.nanmean(q)), rel=1e-6)
        config = meta["config"]
        assert config["weights"] == {"ac": 1.0, "ce": 2.0, "tags": 1.0} and config["eps"] == EPS
        assert config["component_configs"] == {"ac:cam": {"made": "ac, ce"}, "ce:cam": {"made": "ac, ce"}}
        assert config["proxy"] == "cam" and meta["command"] == "score-combined"
        assert log["command"] == "score-combined" and log["config"]["column"] == "q:cam"

    def test_rerun_with_same_config_does_nothing(self, cam_store: Path) -> None:
        config = CombinedConfig(store=str(cam_store), components="ac=1,tags=1")
        run(config)
        before = file_digest(cam_store)
        res = run(config)
        assert res.nothing_to_do and file_digest(cam_store) == before

    def test_other_weights_need_overwrite(self, cam_store: Path) -> None:
        run(CombinedConfig(store=str(cam_store), components="ac=1,tags=1"))
        before = file_digest(cam_store)
        with pytest.raises(StoreError, match="exists already, made with other weights") as info:
            run(CombinedConfig(store=str(cam_store), components="ac=1,ce=1"))
        assert info.value.params == ("overwrite",) and file_digest(cam_store) == before
        run(CombinedConfig(store=str(cam_store), components="ac=1,ce=1", overwrite=True))
        with MaskStore(cam_store) as st:
            np.testing.assert_allclose(st.score("q:cam"), expected_q({"ac": 1, "ce": 1}), rtol=1e-6,
                                       equal_nan=True)

    def test_a_changed_component_column_counts_as_another_config(self, cam_store: Path) -> None:
        run(CombinedConfig(store=str(cam_store), components="ac=1"))
        put_scores(cam_store, {"ac:cam": np.where(np.arange(6) < 5, AC / 2, NAN)}, {"made": "again"})
        with pytest.raises(StoreError, match="exists already"):
            run(CombinedConfig(store=str(cam_store), components="ac=1"))

    def test_missing_component_names_its_command(self, cam_store: Path) -> None:
        before = file_digest(cam_store)
        with pytest.raises(StoreError) as info:
            run(CombinedConfig(store=str(cam_store), components="ac=1,ce=1,mm=1,tags=1"))
        msg = str(info.value)
        assert "'mm:cam' (made by `salcurate score-model` for proxies 'cam')" in msg
        assert "leave it out: components 'ac=1,ce=1,tags=1'" in msg
        assert info.value.params == ("components",) and file_digest(cam_store) == before
        with pytest.raises(StoreError, match="'rc:cam' .*score-evidence.*'sf:cam' .*score-fine.*leave them out: "
                                             "components 'ac=1'"):
            run(CombinedConfig(store=str(cam_store), components="ac=1,rc=1,sf=1"))
        with pytest.raises(StoreError, match="'zz:cam' \\(no salcurate command makes it; the store has: ac:cam, "
                                             "ce:cam\\)"):
            run(CombinedConfig(store=str(cam_store), components="zz=1"))
        assert file_digest(cam_store) == before

    def test_the_default_components_are_ac_ce_and_the_tag_prior(self, cam_store: Path) -> None:
        res = run(CombinedConfig(store=str(cam_store)))
        assert res.columns == {"ac": "ac:cam", "ce": "ce:cam", "tags": None}
        with MaskStore(cam_store) as st:
            np.testing.assert_allclose(st.score("q:cam"), expected_q({"ac": 1, "ce": 1, "tags": 1}), rtol=1e-6,
                                       equal_nan=True)

    def test_component_outside_unit_interval(self, cam_store: Path) -> None:
        put_scores(cam_store, {"mm:cam": np.array([0.1, 0.2, 1.5, 0.3, 0.4, NAN], np.float32)})
        before = file_digest(cam_store)
        with pytest.raises(InputError, match="'mm:cam' has values outside \\[0, 1\\] \\(min 0.1, max 1.5\\)"):
            run(CombinedConfig(store=str(cam_store), components="ac=1,mm=1"))
        assert file_digest(cam_store) == before

    def test_tags_only_is_always_available(self, cam_store: Path) -> None:
        res = run(CombinedConfig(store=str(cam_store), components="tags"))
        with MaskStore(cam_store) as st:
            q = st.score("q:cam")
        np.testing.assert_allclose(q, [1, 0.5, 1, 1 / 3, 1, NAN], rtol=1e-6, equal_nan=True)
        assert res.columns == {"tags": None}

    def test_unknown_proxy_set(self, cam_store: Path) -> None:
        with pytest.raises(SalcurateError, match="no set of proxies named 'nope'"):
            run(CombinedConfig(store=str(cam_store), proxy="nope", components="ac=1"))


# --------------------------------------------------------------------------------------
# CLI: score-combined, then select by default
# --------------------------------------------------------------------------------------
def test_cli_score_combined_and_select_by_default(cam_store: Path) -> None:
    # without q, select falls back to... nothing it knows: ac/ce are not defaults
    before = file_digest(cam_store)
    assert_error(invoke(["select", cam_store, "--top-k", "2"]), "no score to select with", "'cam'",
                 "none of q:cam, sf:cam, sc:cam", "salcurate score-coarse", "ac:cam, ce:cam with --by")
    result = invoke(["score-combined", cam_store, "--components", "ac=1,ce=1,tags=1"])
    assert_ok(result)
    out = flat(result.stdout)
    assert "wrote q:cam for 5 masks" in out and "ac=1,ce=1,tags=1" in out and "ac=ac:cam" in out
    again = invoke(["score-combined", cam_store, "--components", "ac=1,ce=1,tags=1"])
    assert_ok(again)
    assert "already complete" in flat(again.stdout)
    result = invoke(["select", cam_store, "--top-fraction", "0.5", "--per-class"])
    assert_ok(result)
    out = flat(result.stdout)
    assert "selecting by q:cam (the combined score)" in out
    assert "selection 'q:cam_top0.5_perclass' written" in out
    with MaskStore(cam_store) as st:
        w, q, tags = st.selection("q:cam_top0.5_perclass"), st.score("q:cam"), st.tags
        rule = st.selection_meta("q:cam_top0.5_perclass")["rule"]
    np.testing.assert_array_equal(w, select_weights(q, top_fraction=0.5, per_class=True, classes=tags))
    assert rule["by"] == "q:cam" and rule["by_default"] is True and rule["proxy"] == "cam"
    assert file_digest(cam_store) != before


def test_cli_score_combined_missing_component(cam_store: Path) -> None:
    before = file_digest(cam_store)
    assert_error(invoke(["score-combined", cam_store, "--components", "ac=1,ce=1,mm=1,tags=1"]), "'mm:cam'",
                 "`salcurate score-model`", "--components 'ac=1,ce=1,tags=1'")
    assert_error(invoke(["score-combined", cam_store, "--components", "ac=-1"]),
                 "--components: the weight of 'ac' must be a number >= 0")
    assert_error(invoke(["score-combined", cam_store, "--components", "ac", "--proxy", "nope"]),
                 "no set of proxies named 'nope'", "--proxy")
    assert file_digest(cam_store) == before


def test_cli_score_combined_needs_overwrite(cam_store: Path) -> None:
    assert_ok(invoke(["score-combined", cam_store, "--components", "ac"]))
    before = file_digest(cam_store)
    assert_error(invoke(["score-combined", cam_store, "--components", "ce"]), "exists already", "--overwrite")
    assert file_digest(cam_store) == before
    assert_ok(invoke(["score-combined", cam_store, "--components", "ce", "--overwrite"]))
    with MaskStore(cam_store) as st:
        assert st.score_meta("q:cam")["config"]["weights"] == {"ce": 1.0}


# --------------------------------------------------------------------------------------
# reliability: AC's weight scaled per image by a column (hr of score-evidence)
# --------------------------------------------------------------------------------------
HR = np.array([1.0, 0.5, 0.0, 0.25, 1.0, 0.3], np.float32)


class TestReliability:
    def test_hand_values(self) -> None:
        comps = {"ac": np.array([0.25, 0.25, 0.25]), "ce": np.array([1.0, 1.0, 1.0])}
        q = combined_score(comps, weights={"ac": 1, "ce": 1}, scales={"ac": np.array([1.0, 0.5, 0.0])})
        # r = 1: sqrt(0.25) = 0.5; r = 1/2: 0.25^(1/2 / 3/2) = 0.25^(1/3); r = 0: AC not used, q = ce = 1
        np.testing.assert_allclose(q, [0.5, 0.25 ** (1 / 3), 1.0], rtol=1e-12)
        # scale 1 everywhere is the plain q; NaN in the scale gives NaN; every weight 0 gives NaN
        plain = combined_score(comps, weights={"ac": 1, "ce": 1})
        np.testing.assert_allclose(combined_score(comps, weights={"ac": 1, "ce": 1}, scales={"ac": np.ones(3)}),
                                   plain, rtol=1e-12)
        assert np.isnan(combined_score(comps, weights={"ac": 1, "ce": 1}, scales={"ac": np.array([NAN, 1, 1])})[0])
        assert np.isnan(combined_score({"ac": np.array([0.5])}, weights={"ac": 1}, scales={"ac": np.zeros(1)})[0])

    @pytest.mark.parametrize("scales, fragment", [
        ({"ce": np.ones(2)}, "scales only for them (extra: ['ce'])"),
        ({"ac": np.array([0.5, 1.5])}, "outside: ['ac']"),
        ({"ac": np.ones(3)}, "all of the same shape (N,)"),
    ])
    def test_bad_scales(self, scales: dict, fragment: str) -> None:
        with pytest.raises(InputError, match=None) as info:
            combined_score({"ac": np.ones(2)}, weights={"ac": 1}, scales=scales)
        assert fragment in str(info.value) and "\n" not in str(info.value)

    def test_run_scales_ac_by_the_column(self, cam_store: Path) -> None:
        put_scores(cam_store, {"hr:cam": np.where(np.arange(6) < 5, HR, NAN)}, {"made": "hr"})
        res = run(CombinedConfig(store=str(cam_store), reliability="hr"))
        with MaskStore(cam_store) as st:
            q, config = st.score("q:cam"), st.score_meta("q:cam")["config"]
        # sample 1: ac 0.5 at weight 0.5, ce 0.25, prior 1/2: exp((0.5 log 0.5 + log 0.25 + log 0.5) / 2.5)
        assert q[1] == pytest.approx(math.exp((0.5 * math.log(0.5) + math.log(0.25) + math.log(0.5)) / 2.5), rel=1e-6)
        assert q[2] == pytest.approx(math.sqrt(0.9 * 1.0), rel=1e-6)  # hr 0: AC left out
        assert q[0] == pytest.approx((0.9 * 0.8 * 1.0) ** (1 / 3), rel=1e-6)  # hr 1: the plain q
        assert np.isnan(q[5]) and res.scored == 5
        assert config["reliability"] == {"component": "ac", "column": "hr:cam"}
        assert config["component_configs"]["hr:cam"] == {"made": "hr"}
        before = file_digest(cam_store)
        assert run(CombinedConfig(store=str(cam_store), reliability="hr")).nothing_to_do
        with pytest.raises(StoreError, match="exists already"):  # plain q is another config
            run(CombinedConfig(store=str(cam_store)))
        assert file_digest(cam_store) == before

    def test_bad_reliability(self, cam_store: Path) -> None:
        before = file_digest(cam_store)
        with pytest.raises(StoreError, match=r"reliability needs score column 'hr:cam' \(made by `salcurate "
                                             r"score-evidence`\), which the store does not have") as info:
            run(CombinedConfig(store=str(cam_store), reliability="hr"))
        assert info.value.params == ("reliability",)
        with pytest.raises(InputError, match="reliability scales the weight of 'ac', which components 'ce=1,tags=1' "
                                             "leaves out"):
            run(CombinedConfig(store=str(cam_store), components="ce=1,tags=1", reliability="ce"))
        put_scores(cam_store, {"hr:cam": np.array([0.1, 0.2, 1.5, 0.3, 0.4, NAN], np.float32)})
        before = file_digest(cam_store)
        with pytest.raises(InputError, match=r"'hr:cam' has values outside \[0, 1\].*reliability needs one in"):
            run(CombinedConfig(store=str(cam_store), reliability="hr"))
        assert file_digest(cam_store) == before

    def test_cli(self, cam_store: Path) -> None:
        before = file_digest(cam_store)
        assert_error(invoke(["score-combined", cam_store, "--reliability", "hr"]), "'hr:cam'",
                     "`salcurate score-evidence`", "leave out --reliability")
        assert file_digest(cam_store) == before
        put_scores(cam_store, {"hr:cam": np.where(np.arange(6) < 5, HR, NAN)}, {"made": "hr"})
        assert_ok(invoke(["score-combined", cam_store, "--reliability", "hr"]))
