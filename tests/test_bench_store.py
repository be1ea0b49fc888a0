"""``benchmarks/bench_store.py`` (issue #13) at a tiny N: the whole path runs, every figure is
measured and sane, the store and sample tree go unless ``--keep``, and bad input is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_store.py"
N, POOL = 20, 4


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The work folder, the results and the printed table of one run without ``--keep``."""
    work = tmp_path_factory.mktemp("bench-store")
    proc = _run("--n", str(N), "--pool", str(POOL), "--reads", "50", "--repeats", "2", "--workdir", str(work))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, json.loads((work / f"store-{N}.json").read_text()), proc.stdout


def test_every_figure_is_measured(smoke: tuple[Path, dict[str, Any], str]) -> None:
    _, r, printed = smoke
    assert r["n"] == N and r["pool"] == POOL
    assert r["import"]["n"] == N and r["import"]["samples_per_s"] > 0 and r["import"]["peak_rss_mb"] > 0
    if sys.platform.startswith("linux"):
        assert set(r["import"]["rss_mb_at"]) == {"10%", "50%", "100%"}
    for key in ("score_commit_s", "select_s", "select_cli_s", "info_s", "info_cli_s", "read_median_ms",
                "read_p95_ms"):
        assert r[key] > 0, key
    assert len(r["score_commit_all_s"]) == len(r["select_all_s"]) == len(r["info_all_s"]) == 2
    assert r["read_p95_ms"] >= r["read_median_ms"] and r["reads"] == 50
    assert set(r["goals_met"]) == set(r["goals"])
    assert "select, library (median)" in printed and "store / source size" in printed


def test_sizes_count_linked_sources_in_full(smoke: tuple[Path, dict[str, Any], str]) -> None:
    work, r, _ = smoke
    pool = json.loads((work / "pool" / "pool.json").read_text())
    assert len(pool) == POOL
    assert all(40 << 10 <= p["image_bytes"] <= 100 << 10 for p in pool)  # COCO-sized JPEGs
    assert r["source_bytes"] >= N * min(p["image_bytes"] + p["proxy_bytes"] for p in pool)
    assert r["store_bytes"] > r["root_bytes"] > 0 and r["parts"] >= 1
    assert r["size_ratio"] == pytest.approx(r["store_bytes"] / r["source_bytes"])
    assert r["size_ratio"] > 0.9  # the images are kept bit-exact
    assert r["store_bytes"] - r["source_bytes"] < 8 << 20  # a tiny store carries only its fixed overhead


def test_store_and_tree_go_pool_and_json_stay(smoke: tuple[Path, dict[str, Any], str]) -> None:
    work, _, _ = smoke
    assert sorted(p.name for p in work.iterdir()) == ["pool", f"store-{N}.json"]


def test_keep_keeps_a_readable_store_of_hard_links(tmp_path: Path) -> None:
    proc = _run("--n", "8", "--pool", "2", "--reads", "5", "--repeats", "1", "--workdir", str(tmp_path), "--keep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from salcurate.data.store import MaskStore

    with MaskStore(tmp_path / "masks-8.h5") as st:
        assert len(st) == 8 and st.num_classes == 80
        assert st.map("proxy", 0).shape == (480, 640)
        assert "bench_top0.5" in st.selection_names() and st.selection("bench_top0.5").sum() == 4
    image = tmp_path / "coco-8" / "JPEGImages" / f"{0:012d}.jpg"
    assert image.stat().st_nlink >= 2  # a hard link to a pool file
    assert (tmp_path / "coco-8" / "ImageSets" / "Segmentation" / "train.txt").read_text().count("\n") == 8


@pytest.mark.parametrize(("args", "message"), [
    (["--n", "0"], "--n must be at least 1, got 0"),
    (["--n", "5", "--pool", "0"], "--pool must be at least 1, got 0"),
    ([], "the following arguments are required: --n"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _run(*args, "--workdir", str(tmp_path))
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())
