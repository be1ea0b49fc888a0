"""The review report: the data behind each section, the page it writes, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import file_digest, invoke
from PIL import Image

from salcurate.data.store import copy_store
from salcurate.errors import InputError
from salcurate.report import data
from salcurate.report.build import ReportConfig, run, thumbnail


# -- data ------------------------------------------------------------------------------------
def test_histogram_counts_and_ignores_nan() -> None:
    h = data.histogram(np.array([0.0, 0.04, 0.5, 1.0, np.nan]), bins=4)
    assert h["counts"] == [2, 0, 1, 1] and h["n"] == 4 and h["mean"] == pytest.approx(0.385)
    assert data.histogram(np.array([np.nan]))["mean"] is None


def test_agreement_uses_samples_with_both() -> None:
    s = np.array([0.1, 0.2, 0.3, np.nan, 0.5])
    q = np.array([0.2, 0.4, 0.6, 0.9, np.nan])
    a = data.agreement(s, q)
    assert a["n"] == 3 and a["spearman"] == pytest.approx(1.0) and a["pearson"] == pytest.approx(1.0)
    assert data.agreement(np.full(3, 0.5), np.array([0.1, 0.2, 0.3]))["pearson"] is None  # undefined


def test_tau_view_counts_kept_per_class_and_quality() -> None:
    score = np.array([0.9, 0.6, 0.3, np.nan])
    classes = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], bool)
    quality = np.array([1.0, 0.5, 0.2, 0.9])
    rows = data.tau_view(score, classes, quality, taus=np.array([0.0, 0.5, 0.95]))
    assert [r["kept"] for r in rows] == [3, 2, 0]
    assert rows[1]["per_class"] == [2, 1] and rows[1]["mean_quality"] == pytest.approx(0.75)
    assert rows[2]["mean_quality"] is None
    assert [r["tau"] for r in data.tau_view(score, classes, None)][:3] == [0.0, 0.05, 0.1]


def test_gallery_worst_and_best_with_ties_and_subset() -> None:
    score = np.array([0.5, 0.1, np.nan, 0.9, 0.1])
    assert data.gallery(score, 2) == {"worst": [1, 4], "best": [3, 0]}
    among = np.array([True, False, True, False, True])
    assert data.gallery(score, 5, among=among) == {"worst": [4, 0], "best": [0, 4]}


def test_selection_view_keeps_and_drops_per_class() -> None:
    v = data.selection_view(np.array([1, 0, 1, 0], np.float32), np.array([[1, 0], [1, 1], [0, 1], [0, 1]], bool),
                            scored=np.array([True, True, True, False]))
    assert v == {"kept": 2, "dropped": 1, "kept_per_class": [1, 1], "dropped_per_class": [1, 1]}


def test_thumbnail_is_a_strip_of_panels() -> None:
    img = np.zeros((40, 60, 3), np.uint8)
    labels = np.zeros((40, 60), np.uint8)
    labels[10:20, 10:30] = 1
    data_bytes = thumbnail(img, labels, labels > 0, labels, height=32)
    strip = Image.open(__import__("io").BytesIO(data_bytes))
    assert strip.format == "JPEG" and strip.height == 32 and strip.width == 4 * 48 + 3 * 3
    assert Image.open(__import__("io").BytesIO(thumbnail(img, labels, None, None, height=32))).width == 2 * 48 + 3


# -- the page ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored(demo_scored_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "masks.h5"
    copy_store(demo_scored_store, path)
    r = invoke(["select", path, "--by", "sc", "--tau", "0.5"])
    assert r.exit_code == 0, r.stderr
    return path


def test_report_has_every_section_and_every_image_exists(scored: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = run(ReportConfig(store=str(scored), output=str(out), k=3))
    page = res.index.read_text()
    for anchor in ("summary", "scores", "tau", "galleries", "selections"):
        assert f"id='{anchor}'" in page
    assert res.by == "sc"  # no SF yet: the galleries fall back to SC
    assert "Not in the store yet: p, sf" in page and "salcurate score-fine" in page
    srcs = re.findall(r"src='([^']+)'", page)
    assert srcs and all((out / s).is_file() for s in srcs)
    assert "sc_tau0.5" in page and "Pearson" in page
    meta = json.loads((out / "report.json").read_text())
    assert meta["config"]["k"] == 3 and meta["resolved_by"] == "sc"
    # per class galleries: one heading per tagged class
    assert page.count("<h4>worst</h4>") == 1 + 6


def test_store_without_scores_says_which_command_adds_them(tiny_store: Path, tmp_path: Path) -> None:
    res = run(ReportConfig(store=str(tiny_store), output=str(tmp_path / "r")))
    page = res.index.read_text()
    assert res.by is None and res.thumbnails == 0
    assert "salcurate score-coarse" in page and "salcurate score-fine" in page and "id='galleries'" not in page


def _fails(args: list[object], *needles: str) -> None:
    r = invoke(args)
    assert r.exit_code != 0 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles:
        assert n in " ".join(r.stderr.split()), r.stderr


def test_bad_input(scored: Path, tmp_path: Path) -> None:
    before = file_digest(scored)
    _fails(["report", scored, "-o", tmp_path / "a", "--k", "1000"], "--k 1000 is larger than the 48 samples")
    _fails(["report", scored, "-o", tmp_path / "b", "--by", "nope"], "no such score")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _fails(["report", scored, "-o", foreign], "holds no salcurate report", "--overwrite")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # nothing else touched
    ok = invoke(["report", scored, "-o", tmp_path / "c", "--k", "2"])
    assert ok.exit_code == 0, ok.stderr
    _fails(["report", scored, "-o", tmp_path / "c"], "previous report", "--overwrite")
    assert invoke(["report", scored, "-o", tmp_path / "c", "--overwrite"]).exit_code == 0
    assert file_digest(scored) == before  # the report never writes to the store
    with pytest.raises(InputError, match="k must be at least 1"):
        run(ReportConfig(store=str(scored), output=str(tmp_path / "d"), k=0))
