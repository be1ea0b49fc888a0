"""The scoring commands through the CLI: ``score-coarse``, ``select``, ``evaluate-scores``, ``info``.

Every run uses ``--workers 1`` (in-process), except one test that checks ``--workers 2`` gives
the same bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import NO_GT_ID, TinyVoc, assert_ok, file_digest, invoke, tree_digest, voc_args
from typer.testing import Result

from salcurate.data.store import MaskStore, copy_store
from salcurate.data.workarea import config_hash
from salcurate.paper import TABLE_IV_TAUS as PAPER_TAUS
from salcurate.scoring import metrics
from salcurate.scoring.reference import reference_mask
from salcurate.selection.select import select_weights, sweep

COLUMNS = ("f1", "f", "ac", "cd", "sc")
SUFFIXED = re.compile(r"^sc@[0-9a-f]{6}$")
DEFAULT_SCORING = {"ac_formula": "standard", "b": 0.1, "crf": False, "saliency": "store", "threshold": "otsu"}


def flat(text: str) -> str:
    """Whitespace-normalized output (rich wraps long lines at the terminal width)."""
    return " ".join(text.split())


def coarse(store: Path, *args: str) -> Result:
    return invoke(["score-coarse", store, "--workers", "1", *args])


def assert_error(result: Result, *fragments: str) -> None:
    """Non-zero exit, one ``error:`` line on stderr holding every fragment, no traceback."""
    assert result.exit_code != 0, result.stdout
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"


def table_rows(text: str) -> list[list[str]]:
    """Body cells of the rich tables in ``text`` (rows drawn with │)."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def add_missing_tags(v: TinyVoc) -> None:
    """Tag ``NO_GT_ID`` with its proxy's classes: score-coarse needs tags for every proxy mask."""
    present = [int(k) for k in np.unique(v.proxy[NO_GT_ID]) if 1 <= k <= v.num_classes]
    with v.tags_csv.open("a", encoding="utf-8") as fh:
        fh.write(f"{NO_GT_ID},{' '.join(map(str, present))}\n")


def import_store(v: TinyVoc, out: Path, *, drop: tuple[str, ...] = (), splits: tuple[str, ...] = ("train", "val"),
                 extra: tuple[str, ...] = ()) -> Path:
    """``import voc`` the tiny dataset, leaving out the options in ``drop`` (e.g. ``--pseudo``)."""
    args = voc_args(v, out, splits=splits)
    for opt in drop:
        k = args.index(opt)
        del args[k : k + 2]
    out.parent.mkdir(parents=True, exist_ok=True)
    assert_ok(invoke([*args, *extra]))
    return out


@pytest.fixture
def voc(tiny_voc: TinyVoc) -> TinyVoc:
    """tiny_voc with tags for every sample."""
    add_missing_tags(tiny_voc)
    return tiny_voc


@pytest.fixture
def store(voc: TinyVoc, tmp_path: Path) -> Path:
    """The tiny dataset imported with proxy, gt, saliency and tags for every sample."""
    return import_store(voc, tmp_path / "stores" / "tiny.h5")


@pytest.fixture
def scored(store: Path) -> Path:
    """``store`` after ``score-coarse --workers 1``."""
    assert_ok(coarse(store))
    return store


# --------------------------------------------------------------------------------------
# score-coarse
# --------------------------------------------------------------------------------------
def test_score_coarse_writes_columns_and_reference(store: Path, voc: TinyVoc) -> None:
    result = coarse(store)
    assert_ok(result)
    out = flat(result.stdout)
    assert "scored 6 masks" in out and "columns f1, f, ac, cd, sc" in out and "reference masks 'reference'" in out
    assert result.stderr == ""
    with MaskStore(store) as st:
        assert set(COLUMNS) <= set(st.score_names())
        assert "reference" in st.map_names()
        cols = {c: st.score(c) for c in COLUMNS}
        has_proxy = st.has_map("proxy")
        for c, values in cols.items():
            assert values.dtype == np.float32 and values.shape == (len(st),)
            np.testing.assert_array_equal(np.isnan(values), ~has_proxy)
            assert ((values[has_proxy] >= 0) & (values[has_proxy] <= 1)).all(), c
            assert st.score_meta(c)["config"] == DEFAULT_SCORING
        # Eq. 3-5 relations between the columns
        np.testing.assert_allclose(cols["ac"], cols["f1"] * cols["f"] ** 0.1, rtol=1e-5)
        np.testing.assert_allclose(cols["sc"], cols["ac"] * cols["cd"], rtol=1e-5)
        for i, sample_id in enumerate(st.ids):
            proxy = voc.proxy[sample_id]
            # CD by hand: foreground pixels (not 0, not 255) whose class is tagged
            fg = proxy[(proxy != 0) & (proxy != 255)]
            tagged = np.isin(fg, voc.tags.get(sample_id) or tuple(
                int(k) for k in np.unique(proxy) if 1 <= k <= voc.num_classes))
            assert cols["cd"][i] == pytest.approx(tagged.mean() if fg.size else 0.0, abs=1e-6)
            h = st.map("reference", i)
            assert h is not None and h.dtype == bool and h.shape == voc.sizes[sample_id]
            expected_h = reference_mask(st.image(i), voc.saliency[sample_id], crf=False, threshold="otsu")
            np.testing.assert_array_equal(h, expected_h)
            b, valid = metrics.foreground(proxy)
            assert cols["f1"][i] == pytest.approx(metrics.f_measure(expected_h, b, valid=valid), abs=1e-6)
        entry = st.run_log()[-1]
    assert entry["command"] == "score-coarse"
    assert entry["config"]["saliency"] == "store"  # resolved from auto
    assert entry["config"]["workers"] == 1 and entry["config"]["b"] == 0.1
    assert entry["config"]["columns"] == {c: c for c in COLUMNS}
    assert not list(store.parent.glob(".*work*/*/*"))  # work area gone


def test_score_coarse_nan_only_without_proxy(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    """val imported without proxies, train appended with them: val scores stay NaN."""
    out = import_store(tiny_voc, tmp_path / "mixed" / "m.h5", drop=("--pseudo",), splits=("val",))
    import_store(tiny_voc, out, splits=("train",), extra=("--append",))
    result = coarse(out)
    assert_ok(result)
    assert "scored 4 masks" in flat(result.stdout)
    with MaskStore(out) as st:
        has_proxy = st.has_map("proxy")
        assert has_proxy.sum() == 4
        for c in COLUMNS:
            np.testing.assert_array_equal(np.isnan(st.score(c)), ~has_proxy)
        for i in range(len(st)):
            assert (st.map("reference", i) is None) == (not has_proxy[i])
        sc = st.score("sc")
    # selection never keeps unscored samples
    res = invoke(["select", out, "--by", "sc", "--tau", "0", "--name", "all"])
    assert_ok(res)
    with MaskStore(out) as st:
        np.testing.assert_array_equal(st.selection("all") > 0, ~np.isnan(sc))


def test_rerun_same_config_is_nothing_to_do(scored: Path) -> None:
    before = tree_digest(scored.parent)
    result = coarse(scored)
    assert_ok(result)
    assert "nothing to do" in flat(result.stdout)
    assert tree_digest(scored.parent) == before


def test_other_config_writes_suffixed_columns(scored: Path) -> None:
    with MaskStore(scored) as st:
        sc_before, meta_before = st.score("sc"), st.score_meta("sc")
        ref_before = [st.map("reference", i) for i in range(len(st))]
    result = coarse(scored, "--b", "0")
    assert_ok(result)
    with MaskStore(scored) as st:
        new = [n for n in st.score_names() if SUFFIXED.match(n)]
        assert len(new) == 1
        suffix = new[0][2:]
        config = st.score_meta(new[0])["config"]
        assert config == {**DEFAULT_SCORING, "b": 0.0}
        assert suffix == "@" + config_hash(config)
        for c in COLUMNS:
            assert f"{c}{suffix}" in st.score_names()
        assert f"reference{suffix}" in st.map_names()
        # the plain columns are untouched
        np.testing.assert_array_equal(st.score("sc"), sc_before)
        assert st.score_meta("sc") == meta_before
        for i in range(len(st)):
            np.testing.assert_array_equal(st.map("reference", i), ref_before[i])
        # b = 0: AC = F1
        np.testing.assert_allclose(st.score(f"ac{suffix}"), st.score(f"f1{suffix}"))
        np.testing.assert_allclose(st.score(f"sc{suffix}"), st.score(f"f1{suffix}") * st.score(f"cd{suffix}"),
                                   rtol=1e-6)
    assert f"sc{suffix}" in flat(result.stdout)
    # the suffixed config is recognized as complete too
    digest = file_digest(scored)
    again = coarse(scored, "--b", "0")
    assert_ok(again)
    assert "nothing to do" in flat(again.stdout)
    assert file_digest(scored) == digest


def test_overwrite_replaces_plain_columns(scored: Path) -> None:
    result = coarse(scored, "--b", "0", "--overwrite")
    assert_ok(result)
    with MaskStore(scored) as st:
        assert not [n for n in st.score_names() if "@" in n]
        assert st.score_meta("sc")["config"]["b"] == 0
        np.testing.assert_allclose(st.score("ac"), st.score("f1"))
        assert st.map_meta("reference")["config"]["b"] == 0
        assert st.run_log()[-1]["config"]["overwrite"] is True


def test_saliency_builtin(scored: Path, voc: TinyVoc) -> None:
    result = coarse(scored, "--saliency", "builtin")
    assert_ok(result)
    with MaskStore(scored) as st:
        new = [n for n in st.score_names() if SUFFIXED.match(n)]
        assert len(new) == 1
        config = st.score_meta(new[0])["config"]
        assert config["saliency"] == "builtin" and config["max_objects"] == 3
        suffix = new[0][2:]
        values = st.score(new[0])
        assert not np.isnan(values).any() and ((values >= 0) & (values <= 1)).all()
        for i, sample_id in enumerate(st.ids):
            h = st.map(f"reference{suffix}", i)
            assert h.dtype == bool and h.shape == voc.sizes[sample_id]
        np.testing.assert_array_equal(st.score(f"cd{suffix}"), st.score("cd"))  # CD does not use H


@pytest.fixture
def store_missing_saliency(voc: TinyVoc, tmp_path: Path) -> Path:
    (voc.saliency_dir / "s003.png").unlink()
    return import_store(voc, tmp_path / "nosal" / "s.h5")


def test_saliency_store_with_a_sample_lacking_saliency(store_missing_saliency: Path) -> None:
    before = tree_digest(store_missing_saliency.parent)
    assert_error(coarse(store_missing_saliency, "--saliency", "store"), "'s003'", "--saliency builtin")
    assert_error(coarse(store_missing_saliency), "1 samples have no saliency map", "--saliency builtin")  # auto
    assert tree_digest(store_missing_saliency.parent) == before
    assert_ok(coarse(store_missing_saliency, "--saliency", "builtin"))
    with MaskStore(store_missing_saliency) as st:
        assert st.score_meta("sc")["config"]["saliency"] == "builtin"


def test_saliency_auto_uses_builtin_when_store_has_none(voc: TinyVoc, tmp_path: Path) -> None:
    out = import_store(voc, tmp_path / "nosal" / "s.h5", drop=("--saliency",))
    assert_ok(coarse(out))
    with MaskStore(out) as st:
        assert st.score_meta("sc")["config"]["saliency"] == "builtin"
        assert st.run_log()[-1]["config"]["saliency"] == "builtin"


def test_workers_2_matches_workers_1(scored: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "tiny.h5"
    copy.parent.mkdir()
    with MaskStore(scored) as st:
        one = {c: st.score(c) for c in COLUMNS}
        ref_one = [st.map("reference", i) for i in range(len(st))]
    # the same store scored again from scratch (--overwrite) by two worker processes
    copy_store(scored, copy)
    result = invoke(["score-coarse", copy, "--workers", "2", "--overwrite"])
    assert_ok(result)
    assert "scored 6 masks" in flat(result.stdout)
    with MaskStore(copy) as st:
        for c in COLUMNS:
            np.testing.assert_array_equal(st.score(c), one[c])
        for i in range(len(st)):
            np.testing.assert_array_equal(st.map("reference", i), ref_one[i])


# --------------------------------------------------------------------------------------
# score-coarse: bad input
# --------------------------------------------------------------------------------------
def test_tiny_store_with_an_untagged_sample_is_refused(tiny_store: Path) -> None:
    """The plain fixture store has a proxy for NO_GT_ID but no tags: CD cannot be computed."""
    before = tree_digest(tiny_store.parent)
    assert_error(coarse(tiny_store), "no image tags", repr(NO_GT_ID), "--tags")
    assert tree_digest(tiny_store.parent) == before


def test_store_without_proxy_masks(voc: TinyVoc, tmp_path: Path) -> None:
    out = import_store(voc, tmp_path / "np" / "s.h5", drop=("--pseudo",))
    before = tree_digest(out.parent)
    assert_error(coarse(out), "no proxy masks", "--pseudo DIR")
    assert tree_digest(out.parent) == before


def test_store_without_tags(voc: TinyVoc, tmp_path: Path) -> None:
    out = import_store(voc, tmp_path / "nt" / "s.h5", drop=("--tags",))
    before = tree_digest(out.parent)
    assert_error(coarse(out), "6 samples with a proxy mask have no image tags", "--tags FILE", "--tags-from-gt")
    assert tree_digest(out.parent) == before


@pytest.mark.parametrize(("args", "fragments"), [
    (["--b", "-1"], ["--b must be a number >= 0", "-1"]),
    (["--b", "nan"], ["--b must be a number >= 0"]),
    (["--b", "inf"], ["--b must be a number >= 0"]),
], ids=["b-negative", "b-nan", "b-inf"])
def test_bad_options(store: Path, args: list[str], fragments: list[str]) -> None:
    before = tree_digest(store.parent)
    assert_error(coarse(store, *args), *fragments)
    assert tree_digest(store.parent) == before


@pytest.mark.parametrize(("args", "fragments"), [
    (["--ac-formula", "nope"], ["--ac-formula", "'nope' is not one of 'standard', 'paper'"]),
    (["--threshold", "nope"], ["--threshold", "'nope' is not one of 'adaptive', 'otsu'"]),
    (["--saliency", "nope"], ["--saliency", "'nope' is not one of 'auto', 'store', 'builtin'"]),
], ids=["ac-formula", "threshold", "saliency"])
def test_bad_choices_get_typers_message(store: Path, args: list[str], fragments: list[str]) -> None:
    """Choices are enums: a typo gets Typer's own usage error (exit 2) naming the flag, the value and the choices."""
    before = tree_digest(store.parent)
    result = coarse(store, *args)
    assert result.exit_code == 2 and "Traceback" not in result.stdout + result.stderr
    assert "Invalid value for" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"
    assert tree_digest(store.parent) == before


def test_crf_without_pydensecrf(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("salcurate.scoring.reference.crf_available", lambda: False)
    before = tree_digest(store.parent)
    assert_error(coarse(store, "--crf"), "--crf needs pydensecrf", "salcurate[crf]", "--no-crf")
    assert tree_digest(store.parent) == before


def test_bad_options_leave_a_scored_store_alone(scored: Path) -> None:
    before = tree_digest(scored.parent)
    assert_error(coarse(scored, "--b", "-1", "--overwrite"), "--b must be a number >= 0")
    assert tree_digest(scored.parent) == before


# --------------------------------------------------------------------------------------
# select
# --------------------------------------------------------------------------------------
def test_select_tau_writes_selection(scored: Path) -> None:
    result = invoke(["select", scored, "--by", "sc", "--tau", "0.5"])
    assert_ok(result)
    out = flat(result.stdout)
    with MaskStore(scored) as st:
        sc, tags = st.score("sc"), st.tags
        expected = select_weights(sc, tau=0.5)
        w = st.selection("sc_tau0.5")
        meta = st.selection_meta("sc_tau0.5")
        log = st.run_log()[-1]
    np.testing.assert_array_equal(w, expected)
    assert w.dtype == np.float32
    assert f"kept {int(expected.sum())} of 6 scored masks (NoS)" in out
    assert "selection 'sc_tau0.5' written" in out
    rows = {r[0]: r[1:] for r in table_rows(result.stdout)}
    for c, name in enumerate(("widget", "gadget", "gizmo")):
        assert rows[name] == [str(int(tags[:, c].sum())), str(int((tags[:, c] & (w > 0)).sum()))]
    rule = meta["rule"]
    assert rule["by"] == "sc" and rule["tau"] == 0.5 and rule["top_k"] is None and rule["min_per_class"] == 0
    assert rule["score_config"] == DEFAULT_SCORING
    assert rule["kept"] == int(expected.sum())
    assert log["command"] == "select" and log["config"]["tau"] == 0.5


def test_select_dry_run_writes_nothing(scored: Path) -> None:
    before = tree_digest(scored.parent)
    result = invoke(["select", scored, "--by", "sc", "--tau", "0.05", "--dry-run"])
    assert_ok(result)
    assert "not written (--dry-run)" in flat(result.stdout)
    assert tree_digest(scored.parent) == before


def test_select_sweep_prints_a_row_per_paper_tau(scored: Path) -> None:
    before = file_digest(scored)
    result = invoke(["select", scored, "--by", "sc", "--sweep"])
    assert_ok(result)
    assert "NoS" in result.stdout
    with MaskStore(scored) as st:
        expected = sweep(st.score("sc"), st.tags)
    rows = table_rows(result.stdout)
    assert [r[0] for r in rows] == [f"{t:g}" for t in PAPER_TAUS]
    for row, exp in zip(rows, expected):
        assert row[1:] == [str(exp["kept"]), *map(str, exp["per_class"])]
    nos = [int(r[1]) for r in rows]
    assert nos[0] == 6 and nos == sorted(nos, reverse=True)
    assert file_digest(scored) == before  # a sweep alone writes nothing


def test_select_top_k(scored: Path) -> None:
    assert_ok(invoke(["select", scored, "--by", "sc", "--top-k", "2"]))
    with MaskStore(scored) as st:
        w, sc = st.selection("sc_top2"), st.score("sc")
        rule = st.selection_meta("sc_top2")["rule"]
    assert int(w.sum()) == 2 and rule["top_k"] == 2 and rule["tau"] is None
    assert sc[w > 0].min() >= sc[w == 0].max()


def test_select_min_per_class(scored: Path) -> None:
    result = invoke(["select", scored, "--by", "sc", "--tau", "1", "--min-per-class", "1", "--name", "rare"])
    assert_ok(result)
    with MaskStore(scored) as st:
        w, tags = st.selection("rare"), st.tags
        rule = st.selection_meta("rare")["rule"]
    assert rule["min_per_class"] == 1 and rule["tau"] == 1
    assert ((tags & (w > 0)[:, None]).sum(axis=0) >= 1).all()  # every tagged class keeps an image
    assert 1 <= w.sum() <= tags.shape[1]


def test_select_existing_name_needs_overwrite(scored: Path) -> None:
    assert_ok(invoke(["select", scored, "--by", "sc", "--tau", "0.5", "--name", "mine"]))
    before = tree_digest(scored.parent)
    assert_error(invoke(["select", scored, "--by", "sc", "--tau", "0.05", "--name", "mine"]),
                 "selection 'mine' exists already", "--overwrite")
    assert tree_digest(scored.parent) == before
    assert_ok(invoke(["select", scored, "--by", "sc", "--tau", "0.05", "--name", "mine", "--overwrite"]))
    with MaskStore(scored) as st:
        assert st.selection_meta("mine")["rule"]["tau"] == 0.05
        np.testing.assert_array_equal(st.selection("mine"), select_weights(st.score("sc"), tau=0.05))


@pytest.mark.parametrize(("args", "fragments"), [
    (["--by", "sc", "--tau", "1.5"], ["--tau must be in [0, 1]", "1.5"]),
    (["--by", "sc", "--tau", "-0.1"], ["--tau must be in [0, 1]", "-0.1"]),
    (["--by", "nope", "--tau", "0.5"], ["no score 'nope'", "ac, cd, f, f1, sc"]),
    (["--by", "sf", "--tau", "0.5"], ["no score 'sf'", "salcurate score-fine", "--by sc"]),
    (["--by", "sc"], ["--tau", "--top-k", "--sweep"]),
    (["--by", "sc", "--top-k", "-1"], ["--top-k must be >= 0"]),
    (["--by", "sc", "--tau", "0.5", "--min-per-class", "-1"], ["--min-per-class must be >= 0"]),
    (["--by", "sc", "--tau", "0.5", "--name", "a/b"], ["invalid column name 'a/b'"]),
    (["--by", "sc", "--top-fraction", "0"], ["--top-fraction must be in (0, 1]", "got 0.0"]),
    (["--by", "sc", "--top-fraction", "1.5"], ["--top-fraction must be in (0, 1]", "1.5"]),
    (["--by", "q", "--tau", "0.5"], ["no score 'q'", "salcurate score-combined"]),
], ids=["tau-above", "tau-below", "by-unknown", "by-sf", "no-rule", "top-k", "min-per-class", "name",
        "top-fraction-0", "top-fraction-above", "by-q"])
def test_select_bad_input(scored: Path, args: list[str], fragments: list[str]) -> None:
    before = tree_digest(scored.parent)
    assert_error(invoke(["select", scored, *args]), *fragments)
    assert tree_digest(scored.parent) == before


def test_select_before_scoring(store: Path) -> None:
    before = tree_digest(store.parent)
    assert_error(invoke(["select", store, "--by", "sc", "--tau", "0.5"]), "no score 'sc'", "salcurate score-coarse")
    assert tree_digest(store.parent) == before


def test_select_before_scoring_without_by(store: Path) -> None:
    before = tree_digest(store.parent)
    assert_error(invoke(["select", store, "--tau", "0.5"]), "no score to select with", "none of q, sf, sc",
                 "salcurate score-coarse")
    assert tree_digest(store.parent) == before


def put_column(path: Path, name: str, values: np.ndarray) -> None:
    from salcurate.data import store as store_mod

    with store_mod.transaction(path, command="test", config={}) as tx:
        tx.put_scores({name: values}, config={"test": name}, command="test", overwrite=True)


def test_select_default_is_sc_without_sf_or_q(scored: Path) -> None:
    """Without --by a store with SC only selects by SC (before issue 12 it asked for SF)."""
    result = invoke(["select", scored, "--tau", "0.5"])
    assert_ok(result)
    out = flat(result.stdout)
    assert "selecting by sc; run `salcurate score-combined` for the combined score" in out
    with MaskStore(scored) as st:
        np.testing.assert_array_equal(st.selection("sc_tau0.5"), select_weights(st.score("sc"), tau=0.5))
        rule = st.selection_meta("sc_tau0.5")["rule"]
    assert rule["by"] == "sc" and rule["by_default"] is True and rule["per_class"] is False


def test_select_default_prefers_sf_then_q(scored: Path) -> None:
    with MaskStore(scored) as st:
        sc = st.score("sc")
    sf = np.where(np.isnan(sc), np.nan, 1.0 - sc).astype(np.float32)  # another order than sc
    put_column(scored, "sf", sf)
    result = invoke(["select", scored, "--top-k", "2"])
    assert_ok(result)
    assert "selecting by sf; run `salcurate score-combined` for the combined score" in flat(result.stdout)
    with MaskStore(scored) as st:
        np.testing.assert_array_equal(st.selection("sf_top2"), select_weights(sf, top_k=2))
    q = np.linspace(0.1, 0.9, len(sc)).astype(np.float32)
    put_column(scored, "q", q)
    result = invoke(["select", scored, "--top-k", "2"])
    assert_ok(result)
    assert "selecting by q (the combined score)" in flat(result.stdout)
    with MaskStore(scored) as st:
        w = st.selection("q_top2")
    assert kept_ids(w) == [len(sc) - 2, len(sc) - 1]  # the best two by q
    # an explicit --by says nothing about defaults
    result = invoke(["select", scored, "--by", "sc", "--top-k", "2"])
    assert_ok(result)
    assert "selecting by" not in flat(result.stdout)


def kept_ids(w: np.ndarray) -> list[int]:
    return np.flatnonzero(w).tolist()


def test_select_top_fraction_per_class(scored: Path) -> None:
    with MaskStore(scored) as st:
        tags, n = st.tags, len(st)
    q = np.linspace(0.9, 0.1, n).astype(np.float32)  # image 0 best
    put_column(scored, "q", q)
    result = invoke(["select", scored, "--top-fraction", "0.5", "--per-class"])
    assert_ok(result)
    out = flat(result.stdout)
    assert "selecting by q (the combined score)" in out and "ranked within each class" in out
    expected = select_weights(q, top_fraction=0.5, per_class=True, classes=tags)
    with MaskStore(scored) as st:
        w = st.selection("q_top0.5_perclass")
        rule = st.selection_meta("q_top0.5_perclass")["rule"]
    np.testing.assert_array_equal(w, expected)
    assert rule["per_class"] is True and rule["top_fraction"] == 0.5 and rule["by"] == "q"
    counts = (tags & (w > 0)[:, None]).sum(axis=0)
    assert rule["per_class_kept"] == dict(zip(("widget", "gadget", "gizmo"), counts.tolist()))
    rows = {r[0]: r[1:] for r in table_rows(result.stdout)}
    for c, name in enumerate(("widget", "gadget", "gizmo")):
        assert rows[name] == [str(int(tags[:, c].sum())), str(int(counts[c]))]
        assert counts[c] >= 1  # every tagged class keeps its best half (rounded up)
    assert f"kept {int(expected.sum())} of {n} scored masks (NoS)" in out


# --------------------------------------------------------------------------------------
# evaluate-scores
# --------------------------------------------------------------------------------------
def test_evaluate_scores_json(scored: Path) -> None:
    before = tree_digest(scored.parent)
    result = invoke(["evaluate-scores", scored, "--score", "sc", "--json"])
    assert_ok(result)
    res = json.loads(result.stdout)
    assert {"pearson", "spearman", "auroc_bad", "taus"} <= set(res)
    assert res["score"] == "sc" and res["samples"] == 5
    assert -1 <= res["pearson"] <= 1 and -1 <= res["spearman"] <= 1
    assert res["auroc_bad"] is None or 0 <= res["auroc_bad"] <= 1
    assert [r["tau"] for r in res["taus"]] == list(PAPER_TAUS)
    assert tree_digest(scored.parent) == before


def test_evaluate_scores_json_is_strict_json(scored: Path) -> None:
    result = invoke(["evaluate-scores", scored, "--score", "sc", "--json"])
    assert_ok(result)

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    json.loads(result.stdout, parse_constant=refuse)


def test_evaluate_scores_text_and_plot(scored: Path, tmp_path: Path) -> None:
    png = tmp_path / "sc.png"
    result = invoke(["evaluate-scores", scored, "--score", "sc", "--plot", png])
    assert_ok(result)
    out = flat(result.stdout)
    assert "Pearson" in out and "Spearman" in out and "5 masks with ground truth" in out
    assert f"scatter plot: {png}" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_scores_plot_folder_missing(scored: Path, tmp_path: Path) -> None:
    assert_error(invoke(["evaluate-scores", scored, "--plot", tmp_path / "nowhere" / "sc.png"]),
                 "does not exist", "--plot")


def test_evaluate_scores_unknown_score(scored: Path) -> None:
    before = tree_digest(scored.parent)
    assert_error(invoke(["evaluate-scores", scored, "--score", "nope"]), "no score 'nope'", "ac, cd, f, f1, sc")
    assert tree_digest(scored.parent) == before


def test_evaluate_scores_without_ground_truth(voc: TinyVoc, tmp_path: Path) -> None:
    voc.gt_dir.rename(voc.root / "elsewhere")
    out = import_store(voc, tmp_path / "nogt" / "s.h5")
    assert_ok(coarse(out))
    before = tree_digest(out.parent)
    assert_error(invoke(["evaluate-scores", out, "--score", "sc"]), "needs ground truth", "--gt DIR")
    assert tree_digest(out.parent) == before


# --------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------
def test_info_lists_scores_and_selection(scored: Path) -> None:
    assert_ok(invoke(["select", scored, "--by", "sc", "--tau", "0.05"]))
    result = invoke(["info", scored])
    assert_ok(result)
    assert "score columns" in result.stdout and "selections" in result.stdout
    names = {r[0] for r in table_rows(result.stdout) if r}
    assert set(COLUMNS) | {"sc_tau0.05"} <= names
    as_json = json.loads(invoke(["info", scored, "--json"]).stdout)
    assert set(COLUMNS) <= set(as_json["scores"])
    assert as_json["scores"]["sc"]["computed"] == 6
    assert list(as_json["maps"]) == ["proxy", "gt", "saliency", "reference"] and as_json["maps"]["reference"] == 6
    assert as_json["selections"]["sc_tau0.05"]["rule"]["tau"] == 0.05
    assert [e["command"] for e in as_json["log"]] == ["import voc", "score-coarse", "select"]
