"""Named proxy sets in the store (issue 11): writing, reading back, resolving ``--proxy``."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_NAMES, NUM_CLASSES, TinyVoc, assert_ok, file_digest, invoke
from PIL import Image
from test_cli_scoring import add_missing_tags, import_store

from salcurate.data import store as store_mod
from salcurate.data.store import MaskStore, SampleRecord, copy_store, proxy_column
from salcurate.errors import InputError, StoreError


def _cam_maps(path: Path, seed: int = 1) -> list[np.ndarray | None]:
    """One random label map per sample (values 0..C and a few 255), None for the second sample."""
    rng = np.random.default_rng(seed)
    with MaskStore(path) as st:
        sizes = list(zip(st.heights.tolist(), st.widths.tolist()))
    maps: list[np.ndarray | None] = []
    for h, w in sizes:
        labels = rng.integers(0, NUM_CLASSES + 1, size=(h, w)).astype(np.uint8)
        labels[0, :2] = 255
        maps.append(labels)
    maps[1] = None
    return maps


def put_cam(path: Path, name: str = "cam", maps: list[np.ndarray | None] | None = None, *,
            overwrite: bool = False) -> list[np.ndarray | None]:
    maps = _cam_maps(path) if maps is None else maps
    with store_mod.transaction(path, command="test", config={"test": name}) as tx:
        tx.put_label_maps(name, iter(maps), config={"backbone": "resnet18"}, command="pseudo-label",
                          overwrite=overwrite)
    return maps


def _record(i: int, h: int, w: int, proxy: np.ndarray | None) -> SampleRecord:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), (40 * i) % 256, np.uint8)).save(buf, format="PNG")
    return SampleRecord(id=f"n{i}", split="train", image_bytes=buf.getvalue(), image_format="PNG",
                        height=h, width=w, proxy=proxy)


@pytest.fixture
def bare_store(tmp_path: Path) -> Path:
    """Three samples and no imported proxies."""
    out = tmp_path / "bare.h5"
    with store_mod.create_store(out, CLASS_NAMES, command="test", config={}) as w:
        w.append_samples([_record(i, 8 + i, 10, None) for i in range(3)])
    return out


# --------------------------------------------------------------------------------------
# Writing and reading back
# --------------------------------------------------------------------------------------
def test_put_label_maps_reads_back_like_the_imported_proxies(tiny_store: Path) -> None:
    maps = put_cam(tiny_store)
    with MaskStore(tiny_store) as st:
        assert "cam" in st.map_names()
        np.testing.assert_array_equal(st.has_map("cam"), [m is not None for m in maps])
        for i, m in enumerate(maps):
            got = st.map("cam", i)
            if m is None:
                assert got is None
            else:
                assert got.dtype == np.uint8 and got.shape == (st.heights[i], st.widths[i])
                np.testing.assert_array_equal(got, m)
        for i, got in st.iter_maps("cam", block_bytes=64):
            if maps[i] is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got, maps[i])
        meta = st.map_meta("cam")
        assert meta["role"] == "proxy" and meta["encoding"] == "pixels"
        assert meta["config"] == {"backbone": "resnet18"} and meta["command"] == "pseudo-label"
        assert meta["created"] and meta["salcurate_version"]
        # the imported set is untouched
        assert st.has_map("proxy").all()
        assert st.run_log()[-1]["command"] == "test"


def test_proxy_set_histogram_counts_classes_and_ignore(tiny_store: Path) -> None:
    maps = put_cam(tiny_store)
    with MaskStore(tiny_store) as st:
        hist = st.class_histogram("cam")
        assert hist.shape == (st.num_samples, NUM_CLASSES + 2) and hist.dtype == np.int64
        for i, m in enumerate(maps):
            if m is None:
                assert not hist[i].any()
                continue
            expect = [int((m == k).sum()) for k in range(NUM_CLASSES + 1)] + [int((m == 255).sum())]
            assert hist[i].tolist() == expect
        with pytest.raises(StoreError, match="class histograms exist for proxy, gt, cam, not 'saliency'"):
            st.class_histogram("saliency")


def test_append_samples_grows_proxy_sets(tiny_store: Path) -> None:
    put_cam(tiny_store)
    with store_mod.transaction(tiny_store, command="test", config={}) as tx:
        tx.append_samples([_record(9, 6, 7, np.zeros((6, 7), np.uint8))])
    with MaskStore(tiny_store) as st:
        assert st.map("cam", st.num_samples - 1) is None
        assert st.class_histogram("cam").shape == (st.num_samples, NUM_CLASSES + 2)
        assert not st.class_histogram("cam")[-1].any()


def test_existing_set_is_refused_unless_overwrite(tiny_store: Path) -> None:
    first = put_cam(tiny_store)
    before = file_digest(tiny_store)
    with pytest.raises(StoreError, match="the set of proxies 'cam' exists already; pass overwrite"):
        put_cam(tiny_store, maps=_cam_maps(tiny_store, seed=7))
    assert file_digest(tiny_store) == before
    second = put_cam(tiny_store, maps=_cam_maps(tiny_store, seed=7), overwrite=True)
    with MaskStore(tiny_store) as st:
        assert st.proxy_names() == ["proxy", "cam"]
        np.testing.assert_array_equal(st.map("cam", 0), second[0])
        assert not np.array_equal(st.map("cam", 0), first[0])


@pytest.mark.parametrize("name, match", [
    ("gt", "reserved"), ("saliency", "reserved"), ("proxy", "reserved"), ("reference", "reserved"),
    ("reference@1a2b", "invalid name"), ("referenceX", "reserved"), ("a/b", "invalid name"), (".cam", "invalid name"),
    ("cam:x", "invalid name"), ("", "invalid name"),
])
def test_reserved_and_invalid_names_are_refused(tiny_store: Path, name: str, match: str) -> None:
    before = file_digest(tiny_store)
    with pytest.raises(InputError, match=match) as info:
        put_cam(tiny_store, name=name)
    assert "\n" not in str(info.value) and info.value.params == ("name",)
    assert file_digest(tiny_store) == before


def test_proxy_set_names_are_checked_for_the_caller_s_setting() -> None:
    store_mod.check_proxy_set_name("cam-2.v1")
    with pytest.raises(InputError, match=r"^proxy \[proxy\] is reserved") as info:
        store_mod.check_proxy_set_name("proxy", param="proxy")
    assert info.value.params == ("proxy",)
    with pytest.raises(InputError, match=r"^invalid name 'a b' for a set of proxies, given as proxy:"):
        store_mod.check_proxy_set_name("a b", param="proxy")


def test_bad_shapes_and_labels_are_refused_with_one_line(tiny_store: Path) -> None:
    before = file_digest(tiny_store)
    maps = _cam_maps(tiny_store)
    maps[2] = np.zeros((3, 3), np.uint8)
    with pytest.raises(InputError, match=r"sample 2 \('s003'\): expected a label map of shape \(16, 16\)"):
        put_cam(tiny_store, maps=maps)
    maps = _cam_maps(tiny_store)
    maps[3] = maps[3].copy()
    maps[3][1, 1] = NUM_CLASSES + 1
    with pytest.raises(InputError, match=r"label values must be 0..3 or 255 .*got \[4\]"):
        put_cam(tiny_store, maps=maps)
    maps = _cam_maps(tiny_store)
    maps[0] = maps[0].astype(np.float32)
    with pytest.raises(InputError, match="expected integer class labels"):
        put_cam(tiny_store, maps=maps)
    with pytest.raises(StoreError, match=r"expected 6 maps \(one per sample\), got 5"):
        put_cam(tiny_store, maps=_cam_maps(tiny_store)[:5])
    with pytest.raises(StoreError, match="expected 6 maps .*got more"):
        put_cam(tiny_store, maps=[*_cam_maps(tiny_store), None])
    assert file_digest(tiny_store) == before


def test_wider_integer_maps_are_stored_as_uint8(tiny_store: Path) -> None:
    maps = [None if m is None else m.astype(np.int64) for m in _cam_maps(tiny_store)]
    put_cam(tiny_store, maps=maps)
    with MaskStore(tiny_store) as st:
        np.testing.assert_array_equal(st.map("cam", 0), maps[0])


def test_refused_overwrite_leaves_the_old_set(tiny_store: Path) -> None:
    first = put_cam(tiny_store)
    bad = _cam_maps(tiny_store, seed=3)
    bad[-1] = np.zeros((1, 1), np.uint8)
    with pytest.raises(InputError):
        put_cam(tiny_store, maps=bad, overwrite=True)
    with MaskStore(tiny_store) as st:
        np.testing.assert_array_equal(st.map("cam", 0), first[0])


def test_kill_while_writing_a_set_leaves_the_store_as_it_was(tiny_store: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    before = file_digest(tiny_store)
    marker = tmp_path / "half"
    code = (
        "import time, numpy as np\n"
        "from pathlib import Path\n"
        "from salcurate.data import store as sm\n"
        f"path, marker = {str(tiny_store)!r}, Path({str(marker)!r})\n"
        "with sm.MaskStore(path) as st:\n"
        "    sizes = list(zip(st.heights.tolist(), st.widths.tolist()))\n"
        "def maps():\n"
        "    for k, (h, w) in enumerate(sizes):\n"
        "        if k == 3:\n"
        "            marker.write_text('x')\n"
        "            time.sleep(60)\n"
        "        yield np.zeros((h, w), np.uint8)\n"
        "with sm.transaction(path, command='t', config={}) as tx:\n"
        "    tx.put_label_maps('cam', maps(), config={}, command='t')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the writer never got halfway"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert file_digest(tiny_store) == before
    with MaskStore(tiny_store) as st:
        assert st.proxy_names() == ["proxy"]
    put_cam(tiny_store)  # the next writer is not hindered by the killed one's leftovers
    with MaskStore(tiny_store) as st:
        assert st.proxy_names() == ["proxy", "cam"]


# --------------------------------------------------------------------------------------
# Names and resolution
# --------------------------------------------------------------------------------------
def test_proxy_column_names() -> None:
    assert proxy_column("sc", "proxy") == "sc"
    assert proxy_column("reference", "proxy") == "reference"
    assert proxy_column("sc", "cam") == "sc:cam"
    assert proxy_column("reference", "cam") == "reference:cam"
    store_mod.check_column_name("sc:cam")
    store_mod.check_column_name("reference:cam@1a2b3c")


def test_proxy_names_in_creation_order(tiny_store: Path) -> None:
    with MaskStore(tiny_store) as st:
        assert st.proxy_names() == ["proxy"]
    put_cam(tiny_store, "zeta")
    put_cam(tiny_store, "alpha")
    with MaskStore(tiny_store) as st:
        assert st.proxy_names() == ["proxy", "zeta", "alpha"]


def test_resolve_proxy_with_the_imported_set(tiny_store: Path) -> None:
    put_cam(tiny_store)
    with MaskStore(tiny_store) as st:
        assert st.resolve_proxy(None) == "proxy"
        assert st.resolve_proxy("proxy") == "proxy"
        assert st.resolve_proxy("cam") == "cam"
        with pytest.raises(InputError, match=r"no set of proxies named 'nope'; it has \[proxy, cam\]") as info:
            st.resolve_proxy("nope")
        assert info.value.params == ("proxy",)
        assert "pseudo-label" in str(info.value)


def test_resolve_proxy_without_the_imported_set(bare_store: Path) -> None:
    with MaskStore(bare_store) as st:
        assert st.proxy_names() == []
        with pytest.raises(StoreError, match="the store has no proxies; make a set with `salcurate pseudo-label`"):
            st.resolve_proxy(None)
        with pytest.raises(StoreError, match="no set of proxies named 'cam' and no other"):
            st.resolve_proxy("cam")
    put_cam(bare_store, "cam")
    with MaskStore(bare_store) as st:
        assert st.proxy_names() == ["cam"]
        assert st.resolve_proxy(None) == "cam"
        with pytest.raises(InputError, match=r"no imported proxies; it has \[cam\]"):
            st.resolve_proxy("proxy")
    put_cam(bare_store, "cam2")
    with MaskStore(bare_store) as st:
        with pytest.raises(InputError, match=r"several sets of proxies \[cam, cam2\]; choose one with proxy") as info:
            st.resolve_proxy(None)
        assert info.value.params == ("proxy",)
        assert st.resolve_proxy("cam2") == "cam2"


# --------------------------------------------------------------------------------------
# --proxy through the CLI
# --------------------------------------------------------------------------------------
def _assert_unknown_proxy(result, store: Path, before: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "no set of proxies named 'nope'" in err and "[proxy, cam]" in err and "--proxy" in err, err
    assert "Traceback" not in result.output
    assert file_digest(store) == before


@pytest.mark.parametrize("args", [
    ["score-coarse", "--workers", "1"],
    ["select", "--tau", "0.5"],
    ["retrain", "--selection", "none", "--max-iter", "1"],
])
def test_unknown_proxy_is_refused_by_the_cli(tiny_store: Path, args: list[str]) -> None:
    put_cam(tiny_store)
    before = file_digest(tiny_store)
    result = invoke([args[0], str(tiny_store), *args[1:], "--proxy", "nope"])
    _assert_unknown_proxy(result, tiny_store, before)


# --------------------------------------------------------------------------------------
# Every command with --proxy NAME
# --------------------------------------------------------------------------------------
@pytest.fixture
def voc(tiny_voc: TinyVoc) -> TinyVoc:
    add_missing_tags(tiny_voc)
    return tiny_voc


@pytest.fixture
def two_sets(voc: TinyVoc, tmp_path: Path) -> Path:
    """The tiny dataset (tags for every sample) with the imported proxies and a set ``cam``."""
    out = import_store(voc, tmp_path / "two" / "s.h5")
    put_cam(out)
    return out


def test_score_coarse_with_a_named_set(two_sets: Path) -> None:
    from salcurate.scoring import metrics
    from salcurate.scoring.coarse import COLUMNS

    assert_ok(invoke(["score-coarse", two_sets, "--workers", "1", "--proxy", "cam"]))
    with MaskStore(two_sets) as st:
        assert {f"{c}:cam" for c in COLUMNS} <= set(st.score_names())
        assert not set(COLUMNS) & set(st.score_names())  # the imported set's columns are not made
        assert "reference:cam" in st.map_names() and "reference" not in st.map_names()
        has = st.has_map("cam")
        sc = st.score("sc:cam")
        assert np.isnan(sc[~has]).all() and not np.isnan(sc[has]).any()
        cd = metrics.class_distribution(st.class_histogram("cam"), st.tags)
        np.testing.assert_allclose(st.score("cd:cam")[has], cd[has], rtol=1e-6)
        assert st.has_map("reference:cam").tolist() == has.tolist()
        assert st.score_meta("sc:cam")["config"]["proxy"] == "cam"
        assert st.run_log()[-1]["config"]["proxy"] == "cam"
    before = file_digest(two_sets)
    again = invoke(["score-coarse", two_sets, "--workers", "1", "--proxy", "cam"])
    assert_ok(again)
    assert "already complete" in again.stdout and file_digest(two_sets) == before
    # the imported set keeps its plain names, and its config no proxy entry (stores made before stay valid)
    assert_ok(invoke(["score-coarse", two_sets, "--workers", "1"]))
    with MaskStore(two_sets) as st:
        assert "sc" in st.score_names() and "reference" in st.map_names()
        assert "proxy" not in st.score_meta("sc")["config"]
        assert st.run_log()[-1]["config"]["proxy"] == "proxy"
        assert not np.array_equal(st.score("sc"), st.score("sc:cam"), equal_nan=True)


def test_replacing_a_set_drops_what_was_computed_from_it(two_sets: Path) -> None:
    """Bug report: after `pseudo-label --overwrite`, score-coarse said "already complete" and kept
    the scores of the old proxies.  Replacing a set removes its columns, references and selections;
    those of the other sets stay."""
    assert_ok(invoke(["score-coarse", two_sets, "--workers", "1", "--proxy", "cam"]))
    assert_ok(invoke(["score-coarse", two_sets, "--workers", "1"]))
    assert_ok(invoke(["select", two_sets, "--by", "sc", "--proxy", "cam", "--tau", "0.3"]))
    assert_ok(invoke(["select", two_sets, "--by", "sc", "--tau", "0.3"]))
    with MaskStore(two_sets) as st:
        old_sc = st.score("sc:cam")
        kept = {n for n in st.selection_names() if ":cam" not in n}
    new_maps = _cam_maps(two_sets, seed=7)
    put_cam(two_sets, maps=new_maps, overwrite=True)
    with MaskStore(two_sets) as st:
        assert not [n for n in st.score_names() if n.endswith(":cam")]
        assert "reference:cam" not in st.map_names() and "reference" in st.map_names()
        assert set(st.selection_names()) == kept and kept
        assert "sc" in st.score_names()
    again = invoke(["score-coarse", two_sets, "--workers", "1", "--proxy", "cam"])
    assert_ok(again)
    assert "already complete" not in again.stdout
    with MaskStore(two_sets) as st:
        assert not np.array_equal(st.score("sc:cam"), old_sc, equal_nan=True)


def test_a_killed_run_does_not_resume_on_a_replaced_set(two_sets: Path) -> None:
    """The work area of a scoring run carries the set's stamp: partial results of the old
    proxies are not resumed after the set is replaced."""
    from salcurate.data.workarea import open_work_area

    with MaskStore(two_sets) as st:
        stamp = st.proxy_stamp("cam")
    assert stamp
    put_cam(two_sets, maps=_cam_maps(two_sets, seed=7), overwrite=True)
    with MaskStore(two_sets) as st:
        assert st.proxy_stamp("cam") not in ("", stamp)
        ids = st.ids
    with open_work_area(two_sets, "t", {"proxy_stamp": "a"}, ids=ids, columns=("x",)) as area:
        area.write([0], np.ones((1, 1), np.float32), None)
    with open_work_area(two_sets, "t", {"proxy_stamp": "b"}, ids=ids, columns=("x",)) as area:
        assert not area.done.any()


def test_select_evaluate_export_info_report_with_a_named_set(two_sets: Path, tmp_path: Path) -> None:
    from salcurate.selection.select import select_weights
    from salcurate.selection.validation import EvaluateScoresConfig
    from salcurate.selection.validation import run as evaluate_scores

    assert_ok(invoke(["score-coarse", two_sets, "--workers", "1", "--proxy", "cam"]))
    assert_ok(invoke(["select", two_sets, "--proxy", "cam", "--by", "sc", "--tau", "0"]))
    assert_ok(invoke(["select", two_sets, "--by", "sc:cam", "--tau", "0", "--name", "explicit"]))
    with MaskStore(two_sets) as st:
        expected = select_weights(st.score("sc:cam"), tau=0.0)
        np.testing.assert_array_equal(st.selection("sc:cam_tau0"), expected)
        np.testing.assert_array_equal(st.selection("explicit"), expected)
        rule = st.selection_meta("sc:cam_tau0")["rule"]
        assert rule["by"] == "sc:cam" and rule["proxy"] == "cam"
        assert st.run_log()[-1]["config"]["proxy"] == "cam"
    before = file_digest(two_sets)
    r = invoke(["select", two_sets, "--by", "sc:cam", "--proxy", "proxy", "--tau", "0"])
    assert r.exit_code != 0 and "belongs to the set of proxies 'cam'" in r.stderr and "--proxy" in r.stderr
    assert file_digest(two_sets) == before

    res = evaluate_scores(EvaluateScoresConfig(store=str(two_sets), proxy="cam", score="sc"))
    with MaskStore(two_sets) as st:
        assert res.score == "sc:cam" and res.proxy == "cam"
        assert res.samples == int((st.has_map("cam") & st.has_map("gt")).sum())

    target = tmp_path / "export"
    assert_ok(invoke(["export", two_sets, target, "--proxy", "cam"]))
    with MaskStore(two_sets) as st:
        exported = (target / "ids.txt").read_text().split()
        assert exported == [st.ids[i] for i in np.flatnonzero(st.has_map("cam"))]
        for sample_id in exported:
            got = np.asarray(Image.open(target / "masks" / f"{sample_id}.png"))
            np.testing.assert_array_equal(got, st.map("cam", st.index_of(sample_id)))
    assert json.loads((target / "export.json").read_text())["config"]["proxy"] == "cam"

    info = json.loads(invoke(["info", two_sets, "--json"]).stdout)
    assert list(info["proxies"]) == ["proxy", "cam"]
    assert info["proxies"]["cam"]["samples"] == 5 and info["proxies"]["cam"]["command"] == "pseudo-label"
    assert info["proxies"]["cam"]["config"] == {"backbone": "resnet18"}
    assert info["proxies"]["proxy"]["samples"] == 6 and info["proxies"]["proxy"]["command"] == "import voc"
    text = invoke(["info", two_sets]).stdout
    assert "proxy sets" in text and "pseudo-label" in text

    report = tmp_path / "report"
    assert_ok(invoke(["report", two_sets, "-o", report, "--proxy", "cam", "--k", "2"]))
    meta = json.loads((report / "report.json").read_text())
    assert meta["config"]["proxy"] == "cam" and meta["resolved_by"] == "sc:cam"


def test_the_only_set_is_the_default(voc: TinyVoc, tmp_path: Path) -> None:
    out = import_store(voc, tmp_path / "only" / "s.h5", drop=("--pseudo",))
    put_cam(out)
    assert_ok(invoke(["score-coarse", out, "--workers", "1"]))
    assert_ok(invoke(["select", out, "--by", "sc", "--tau", "0"]))
    with MaskStore(out) as st:
        assert "sc:cam" in st.score_names() and "sc:cam_tau0" in st.selection_names()
    put_cam(out, "cam2")
    before = file_digest(out)
    r = invoke(["score-coarse", out, "--workers", "1"])
    assert r.exit_code != 0 and "several sets of proxies [cam, cam2]; choose one with --proxy" in r.stderr
    assert file_digest(out) == before


def test_retrain_trains_on_the_set_of_its_selection(two_sets: Path) -> None:
    from salcurate.training.data import plan_training
    from salcurate.training.retrain import RetrainConfig, resolve_proxy

    assert_ok(invoke(["score-coarse", two_sets, "--workers", "1", "--proxy", "cam"]))
    assert_ok(invoke(["select", two_sets, "--proxy", "cam", "--by", "sc", "--tau", "0", "--name", "c"]))
    with MaskStore(two_sets) as st:
        plan = plan_training(st, split="train", selection=None, proxy="cam")
        assert set(plan.label_kind) == {"cam"}
        expect = np.flatnonzero((st.splits == "train") & st.has_map("cam"))
        np.testing.assert_array_equal(plan.indices, expect)
    base = RetrainConfig(store=str(two_sets)).resolved()
    assert resolve_proxy(base).proxy is None  # the imported set, saved as before
    assert resolve_proxy(dataclasses.replace(base, selection="c")).proxy == "cam"
    assert resolve_proxy(dataclasses.replace(base, selection="c", proxy="cam")).proxy == "cam"
    with pytest.raises(InputError, match=r"selection 'c' was made from the proxies \[cam\], not \[proxy\]"):
        resolve_proxy(dataclasses.replace(base, selection="c", proxy="proxy"))


def test_fine_scorer_on_a_copy_of_the_imported_set(demo_scored_store: Path, tmp_path: Path) -> None:
    """A set holding the imported maps gives train-scorer and score-fine the same numbers."""
    from salcurate.scoring.coarse import CoarseConfig
    from salcurate.scoring.coarse import run as score_coarse
    from salcurate.scoring.fine import ScoreFineConfig
    from salcurate.scoring.fine import run as score_fine
    from salcurate.scoring.synthesis import SynthesisConfig
    from salcurate.training.scorer import TrainScorerConfig
    from salcurate.training.scorer import run as train_scorer

    path = tmp_path / "masks.h5"
    copy_store(demo_scored_store, path)
    with MaskStore(path) as st:
        copy = [st.map("proxy", i) for i in range(len(st))]
    put_cam(path, "copy", copy)
    score_coarse(CoarseConfig(store=str(path), workers=1, proxy="copy"))
    tiny = dict(input_size=32, width=8, channels=12, hidden=6, batch_size=8, lr=1e-3, workers=0, epochs=1,
                synthesis=SynthesisConfig(scale=2))
    a = train_scorer(TrainScorerConfig(store=str(path), output=str(tmp_path / "a.pt"), **tiny))
    b = train_scorer(TrainScorerConfig(store=str(path), output=str(tmp_path / "b.pt"), proxy="copy", **tiny))
    assert a.config["proxy"] is None and b.config["proxy"] == "copy"  # None: the imported set
    assert a.final["train_l2"] == b.final["train_l2"] and a.final["val_l2"] == b.final["val_l2"]
    fine = score_fine(ScoreFineConfig(store=str(path), scorer=str(tmp_path / "a.pt"), workers=0, proxy="copy"))
    assert fine.columns == {"p": "p:copy", "sf": "sf:copy"}
    score_fine(ScoreFineConfig(store=str(path), scorer=str(tmp_path / "a.pt"), workers=0))
    with MaskStore(path) as st:
        np.testing.assert_array_equal(st.score("p"), st.score("p:copy"))
        np.testing.assert_allclose(st.score("sf:copy"), st.score("p:copy") * st.score("cd:copy"), rtol=1e-6)
        assert st.score_meta("sf:copy")["config"]["proxy"] == "copy" and "proxy" not in st.score_meta("sf")["config"]
