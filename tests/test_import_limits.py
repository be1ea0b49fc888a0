"""Import limits and warnings: images and maps above ``max_pixels`` are refused from their
header, in one line, before decoding and without a Pillow warning; a tag source that gives no
sample a tag is accepted with a warning."""

from __future__ import annotations

import io
import logging
import time
import warnings
from pathlib import Path

import pytest
from conftest import TinyVoc, assert_ok, invoke, voc_args
from PIL import Image
from test_import_errors import assert_no_output_left, assert_one_line_error

from salcurate.data.store import MaskStore
from salcurate.errors import InputError
from salcurate.imageio import DEFAULT_MAX_PIXELS, probe_image, read_grey_png, read_label_png

HUGE = (12000, 12000)  # 144 million pixels: above the default limit and Pillow's warning limit


def _png_bytes(mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def _header_only_png(mode: str, size: tuple[int, int]) -> bytes:
    """A PNG with its header (IHDR) but no pixel data: opens, never decodes."""
    data = _png_bytes(mode, size)
    ihdr_end = 8 + 8 + 13 + 4  # signature, length + type, IHDR data, CRC
    return data[:ihdr_end] + b"\0\0\0\0IEND\xaeB`\x82"


def _bomb_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, Image.DecompressionBombWarning)]


def _invoke_recording(args: list[str]) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = invoke(args)
    return result, _bomb_warnings(record)


# --------------------------------------------------------------------------------------
# max_pixels through the CLI
# --------------------------------------------------------------------------------------
def test_huge_png_image_refused_in_one_line_without_pillow_warning(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    tiny_voc.images["s003"].unlink()
    victim = tiny_voc.image_dir / "s003.png"
    victim.write_bytes(_png_bytes("1", HUGE))
    out = tmp_path / "masks.h5"
    started = time.perf_counter()
    result, bomb = _invoke_recording(voc_args(tiny_voc, out))
    assert time.perf_counter() - started < 30
    line = assert_one_line_error(result, str(victim), "image is 12000 x 12000 = 144,000,000 pixels",
                                 "above --max-pixels (100,000,000)", "raise --max-pixels (0 = no limit)")
    assert "Decompression" not in line and "Warning" not in result.stderr
    assert bomb == []
    assert_no_output_left(out)


def test_huge_image_refused_before_decoding(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    """A header without pixel data: decoding would fail with 'does not decode'; the size check comes first."""
    tiny_voc.images["s001"].unlink()
    victim = tiny_voc.image_dir / "s001.png"
    victim.write_bytes(_header_only_png("1", HUGE))
    result, bomb = _invoke_recording(voc_args(tiny_voc, tmp_path / "masks.h5"))
    line = assert_one_line_error(result, str(victim), "12000 x 12000", "--max-pixels")
    assert "does not decode" not in line
    assert bomb == []


@pytest.mark.parametrize("which", ["proxy", "gt", "saliency"])
def test_huge_maps_refused_before_decoding(which: str, tiny_voc: TinyVoc, tmp_path: Path) -> None:
    folder = {"proxy": tiny_voc.proxy_dir, "gt": tiny_voc.gt_dir, "saliency": tiny_voc.saliency_dir}[which]
    victim = folder / "s004.png"
    victim.write_bytes(_header_only_png("P" if which != "saliency" else "L", (15000, 10000)))
    result, bomb = _invoke_recording(voc_args(tiny_voc, tmp_path / "masks.h5"))
    what = "saliency map" if which == "saliency" else "label map"
    line = assert_one_line_error(result, str(victim), f"{what} is 15000 x 10000 = 150,000,000 pixels",
                                 "--max-pixels")
    assert "does not decode" not in line
    assert bomb == []


def test_max_pixels_lower_limit(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    """s001 is 32 x 24 = 768 pixels, the largest of the tiny images."""
    out = tmp_path / "masks.h5"
    assert_one_line_error(invoke([*voc_args(tiny_voc, out), "--max-pixels", "700"]),
                          str(tiny_voc.images["s001"]), "image is 32 x 24 = 768 pixels", "above --max-pixels (700)")
    assert_no_output_left(out)
    assert_ok(invoke([*voc_args(tiny_voc, out), "--max-pixels", "768"]))
    with MaskStore(out) as store:
        assert len(store) == 6
        assert store.run_log()[-1]["config"]["max_pixels"] == 768


@pytest.mark.parametrize("limit", ["0", "200000000"])
def test_max_pixels_raised_decodes_without_pillow_warning(limit: str, tiny_voc: TinyVoc, tmp_path: Path) -> None:
    """A raised limit (or none) lets the image through, quietly; the import then stops at its too small mask."""
    tiny_voc.images["s003"].unlink()
    victim = tiny_voc.image_dir / "s003.png"
    victim.write_bytes(_png_bytes("1", HUGE))
    result, bomb = _invoke_recording([*voc_args(tiny_voc, tmp_path / "masks.h5"), "--max-pixels", limit])
    assert_one_line_error(result, str(tiny_voc.proxy_dir / "s003.png"), "but its image is 12000x12000")
    assert bomb == []


def test_max_pixels_negative_refused(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    result = invoke([*voc_args(tiny_voc, tmp_path / "masks.h5"), "--max-pixels", "-1"])
    assert result.exit_code != 0
    assert "--max-pixels" in result.stderr


# --------------------------------------------------------------------------------------
# max_pixels in imageio
# --------------------------------------------------------------------------------------
def test_probe_image_checks_header() -> None:
    data = _header_only_png("1", HUGE)
    with pytest.raises(InputError, match=r"^big.png: image is 12000 x 12000 = 144,000,000 pixels, above max_pixels "
                                         r"\(100,000,000\); shrink it, or raise max_pixels \(0 = no limit\)$") as info:
        probe_image(data, "big.png", max_pixels=DEFAULT_MAX_PIXELS)
    assert info.value.params == ("max_pixels",)
    with pytest.raises(InputError, match="does not decode"):  # no limit: decoding the header-only file fails
        probe_image(data, "big.png", max_pixels=0)
    assert probe_image(_png_bytes("L", (7, 5)), "small.png", max_pixels=35) == (5, 7, "PNG")


def test_read_maps_check_header() -> None:
    with pytest.raises(InputError, match="<bytes>: label map is 200 x 100 = 20,000 pixels, above max_pixels"):
        read_label_png(_header_only_png("P", (200, 100)), max_pixels=19_999)
    with pytest.raises(InputError, match="m.png: saliency map is 200 x 100 = 20,000 pixels"):
        read_grey_png(_header_only_png("L", (200, 100)), name="m.png", max_pixels=10)
    assert read_label_png(_png_bytes("P", (200, 100)), max_pixels=20_000).shape == (100, 200)


def test_pillow_limit_untouched() -> None:
    """Importing salcurate changes nothing in Pillow; a checked open restores Pillow's limit."""
    import salcurate.data.importing  # noqa: F401

    assert Image.MAX_IMAGE_PIXELS == 89478485
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        probe_image(_png_bytes("1", HUGE), "big.png", max_pixels=0)
        with pytest.raises(InputError):
            probe_image(_png_bytes("1", HUGE), "big.png", max_pixels=1000)
    assert _bomb_warnings(record) == []
    assert Image.MAX_IMAGE_PIXELS == 89478485
    with pytest.warns(Image.DecompressionBombWarning):  # without max_pixels Pillow's own check applies
        probe_image(_png_bytes("1", HUGE), "big.png")


# --------------------------------------------------------------------------------------
# A tag source that tags nothing
# --------------------------------------------------------------------------------------
def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "salcurate.data.importing"]


@pytest.mark.parametrize(
    ("content", "rows", "matched", "tagged"),
    [("", 0, 0, 0), ("id,tags\n", 0, 0, 0), ("zzz1,1 2\nzzz2,3\n", 2, 0, 0), ("s001,\ns002,\n", 2, 2, 2)],
    ids=["empty", "header-only", "other-ids", "empty-tag-lists"],
)
def test_tags_csv_giving_no_tags_warns(content: str, rows: int, matched: int, tagged: int, tiny_voc: TinyVoc,
                                       tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tiny_voc.tags_csv.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="salcurate.data.importing"):
        result = invoke(voc_args(tiny_voc, tmp_path / "masks.h5"))
    assert_ok(result)  # accepted, with a warning
    assert f"tags {tagged}," in result.stdout
    assert _warnings(caplog) == [
        f"{tiny_voc.tags_csv}: no imported sample got tags ({rows} rows, {matched} for imported ids, none with a "
        "tag); expected lines `id,tags` with the tags as space-separated class indices 1..3 or class names"]


def test_tags_dir_giving_no_tags_warns(tiny_voc: TinyVoc, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tags_dir = tmp_path / "tags"
    tags_dir.mkdir()
    for sample_id in tiny_voc.ids:
        (tags_dir / f"{sample_id}.txt").write_text("\n", encoding="utf-8")
    args = voc_args(tiny_voc, tmp_path / "masks.h5")
    args[args.index("--tags") : args.index("--tags") + 2] = ["--tags-dir", str(tags_dir)]
    with caplog.at_level(logging.WARNING, logger="salcurate.data.importing"):
        assert_ok(invoke(args))
    assert _warnings(caplog) == [f"{tags_dir}: no imported sample got tags (every <id>.txt is empty); expected one "
                                 "foreground class index 1..3 per line"]


def test_tags_file_with_tags_does_not_warn(tiny_voc: TinyVoc, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    tiny_voc.tags_csv.write_text("s001,\ns002,1\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="salcurate.data.importing"):
        assert_ok(invoke(voc_args(tiny_voc, tmp_path / "masks.h5")))
    assert _warnings(caplog) == []
    with MaskStore(tmp_path / "masks.h5") as store:
        assert store.has_tags.tolist() == [True, True, False, False, False, False]
        assert store.tags[:2].tolist() == [[False, False, False], [True, False, False]]
