"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` package).

First the checker in ``browser.py`` is tested on small hand-made pages (a good page passes; a
missing or corrupt image, an uncaught exception, ``console.error`` and an unhandled rejection are
each caught), then the demo's report is rendered end to end: every image loads, the console
shows no error, the page asks for nothing from the network, and a screenshot is written.

Chromium is installed with apt-get when missing and allowed (root, apt-get); otherwise every
test here is skipped with the reason.  ``SALCURATE_REPORT_SCREENSHOT=path.png`` keeps a copy of
the end-to-end screenshot for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from browser import check_page, chromium_unavailable_reason, find_or_install_chromium, screenshot
from PIL import Image
from typer.testing import CliRunner

from salcurate.cli import app


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_or_install_chromium()
    if path is None:
        pytest.skip(f"headless Chromium is not available: {chromium_unavailable_reason()}")
    return path


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _page(folder: Path, body: str, head: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "index.html"
    index.write_text(f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>test page</title>{head}</head>\n"
                     f"<body>\n{body}\n</body></html>\n", encoding="utf-8")
    return index


def _assert_not_trivial(png: Path, *, min_bytes: int) -> None:
    assert png.is_file(), f"no screenshot at {png}"
    assert png.stat().st_size > min_bytes, f"screenshot is only {png.stat().st_size} bytes"
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1, "screenshot is a single colour"


# --------------------------------------------------------------------------------------
# the checker itself
# --------------------------------------------------------------------------------------
def test_checker_passes_a_good_page(tmp_path: Path, chromium: str) -> None:
    _png(tmp_path / "img" / "a.png", (200, 30, 30))
    Image.new("RGB", (32, 24), (30, 30, 200)).save(tmp_path / "b.jpg", quality=90)
    _png(tmp_path / "img" / "lazy.png", (30, 200, 30))
    index = _page(tmp_path, """
<h1>Good</h1><img src="img/a.png" alt="a"><img src="b.jpg" alt="b">
<div style="height: 6000px">spacer: the next image is far below the first screen</div>
<img src="img/lazy.png" loading="lazy" alt="lazy">
<script>console.log("just a log line"); console.info("info"); document.title = "good page";</script>
""")
    res = check_page(index, chromium=chromium)
    assert res["images_total"] == 3
    assert res["images_broken"] == []  # the lazy image below the fold is loaded too
    assert res["console_errors"] == []  # console.log and console.info are no errors
    assert res["external_requests"] == []
    assert res["title"] == "good page"  # the page's script ran
    assert [im["naturalWidth"] for im in res["images"]] == [40, 32, 40]


def test_checker_finds_broken_images(tmp_path: Path, chromium: str) -> None:
    _png(tmp_path / "img" / "good.png", (10, 120, 10))
    (tmp_path / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    index = _page(tmp_path, """
<img src="img/good.png"><img src="img/missing.png"><img src="img/corrupt.png">
<img src="http://127.0.0.1:9/remote.png">
""")
    res = check_page(index, chromium=chromium)
    assert res["images_total"] == 4
    assert res["images_broken"] == ["img/missing.png", "img/corrupt.png", "http://127.0.0.1:9/remote.png"]
    assert any("missing.png" in e and "ERR_FILE_NOT_FOUND" in e for e in res["console_errors"]), res["console_errors"]
    assert res["external_requests"] == ["http://127.0.0.1:9/remote.png"]


def test_checker_finds_javascript_errors(tmp_path: Path, chromium: str) -> None:
    _png(tmp_path / "ok.png", (90, 90, 90))
    index = _page(tmp_path, """
<img src="ok.png">
<script>console.warn("only a warning");</script>
<script>console.error("marker-console-error");</script>
<script>Promise.reject(new Error("marker-rejection"));</script>
<script>window.addEventListener("load", () => setTimeout(() => { throw new TypeError("marker-late"); }, 50));</script>
<script>throw new Error("marker-thrown")</script>
""")
    res = check_page(index, chromium=chromium)
    assert res["images_total"] == 1 and res["images_broken"] == []
    errors = "\n".join(res["console_errors"])
    for marker in ("marker-console-error", "marker-rejection", "marker-late", "marker-thrown"):
        assert marker in errors, f"{marker} not caught in:\n{errors}"
    assert len(res["console_errors"]) == 4, errors
    assert "only a warning" not in errors
    assert any("only a warning" in w for w in res["console_warnings"])


def test_screenshot_of_a_page(tmp_path: Path, chromium: str) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    index = _page(tmp_path / "site", '<h1>Screenshot</h1><img src="../noise.png">')
    shot = screenshot(index, tmp_path / "shot.png", chromium=chromium, window_size=(800, 600))
    with Image.open(shot) as im:
        assert im.size == (800, 600)
    _assert_not_trivial(shot, min_bytes=20_000)  # the noise image is there, not only white


# --------------------------------------------------------------------------------------
# the demo's report, end to end
# --------------------------------------------------------------------------------------
def _cli_commands() -> set[str]:
    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _demo_has_report_step(folder: Path) -> bool:
    from salcurate.data.demo_data import DemoConfig
    from salcurate.demo import demo_commands

    return any(argv[:1] == ["report"] for argv in demo_commands(folder, DemoConfig(num_images=48)))


@pytest.mark.slow
def test_demo_report_in_chromium(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "report" not in _cli_commands():
        pytest.skip("the `salcurate report` command is missing (not in `salcurate --help`), nothing to render")
    browser = request.getfixturevalue("chromium")  # only now: no install for a test that skips anyway

    folder = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", str(folder), "--images", "48"])
    assert result.exit_code == 0, f"demo exited {result.exit_code}\n{result.output}\n{result.exception!r}"
    index = folder / "report" / "index.html"
    if not index.exists():
        # A demo that does not (yet) end with a report step: build the report from its store.
        assert not _demo_has_report_step(folder), f"the demo runs `report` but wrote no {index}"
        out = tmp_path / "report"
        result = CliRunner().invoke(app, ["report", str(folder / "masks.h5"), "-o", str(out)])
        assert result.exit_code == 0, f"report exited {result.exit_code}\n{result.output}\n{result.exception!r}"
        index = out / "index.html"
    assert index.is_file()

    res = check_page(index, chromium=browser)
    assert res["images_total"] > 0, "the report shows no image"
    assert res["images_broken"] == [], f"{len(res['images_broken'])} of {res['images_total']} images did not load"
    assert res["console_errors"] == []
    assert res["external_requests"] == [], "a static report must not touch the network"

    shot = screenshot(index, tmp_path / "report.png", chromium=browser, window_size=(1280, 2400))
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
    _assert_not_trivial(shot, min_bytes=20_000)
    keep = os.environ.get("SALCURATE_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
