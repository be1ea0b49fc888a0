"""``export`` never writes or removes through a symbolic link inside its output folder: a link
where it would write (a folder, a file it writes, a mask file) is refused with one ``error:``
line naming the link, before anything in OUT or behind the link changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import TinyVoc, assert_ok, invoke, tree_digest
from test_import_errors import assert_one_line_error

LINK_MESSAGE = "is a symbolic link; export never writes or removes through links inside its output folder"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder outside OUT that a link points to; its content must never change."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "s001.png").write_bytes(b"not a mask, keep me")
    (folder / "notes.txt").write_text("mine\n")
    return folder


@pytest.fixture
def previous(tiny_store: Path, tmp_path: Path) -> Path:
    """A previous export in OUT (so that overwrite removes its files)."""
    out = tmp_path / "export"
    assert_ok(invoke(["export", tiny_store, out]))
    return out


def _snapshot(out: Path) -> dict[str, object]:
    """Every entry under ``out`` (links as links, not followed) with its content or target."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(out))
            if p.is_symlink():
                found[rel] = ("link", os.readlink(p))
            elif p.is_file():
                found[rel] = p.read_bytes()
            else:
                found[rel] = "folder"
    return found


def test_symlinked_masks_with_overwrite_is_refused(previous: Path, victim: Path, tiny_store: Path) -> None:
    """The issue's case: traceback and a half-removed export before."""
    shutil.rmtree(previous / "masks")
    (previous / "masks").symlink_to(victim, target_is_directory=True)
    before, victim_before = _snapshot(previous), tree_digest(victim)
    result = invoke(["export", tiny_store, previous, "--overwrite"])
    assert_one_line_error(result, f"{previous / 'masks'} {LINK_MESSAGE}", "remove the link or choose another output")
    assert _snapshot(previous) == before  # nothing removed: ids.txt and export.json still there
    assert (previous / "export.json").is_file() and (previous / "ids.txt").is_file()
    assert tree_digest(victim) == victim_before


def test_symlinked_folder_inside_out_without_previous_export(victim: Path, tiny_store: Path, tmp_path: Path) -> None:
    """No export.json in OUT: the masks were written into the link's target before."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "masks").symlink_to(victim, target_is_directory=True)
    victim_before = tree_digest(victim)
    # without overwrite a non-empty OUT is refused in any case
    assert_one_line_error(invoke(["export", tiny_store, out]), str(out), "folder is not empty", "--overwrite")
    assert tree_digest(victim) == victim_before
    result = invoke(["export", tiny_store, out, "--overwrite"])
    assert_one_line_error(result, f"{out / 'masks'} {LINK_MESSAGE}")
    assert tree_digest(victim) == victim_before
    assert sorted(p.name for p in out.iterdir()) == ["masks"]


def test_symlinked_images_folder_is_refused(victim: Path, tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "images").symlink_to(victim, target_is_directory=True)
    victim_before = tree_digest(victim)
    assert_one_line_error(invoke(["export", tiny_store, out, "--overwrite", "--images"]),
                          f"{out / 'images'} {LINK_MESSAGE}")
    assert tree_digest(victim) == victim_before
    assert sorted(p.name for p in out.iterdir()) == ["images"]


def test_symlinked_images_folder_of_previous_export_is_refused(previous: Path, victim: Path,
                                                               tiny_store: Path) -> None:
    """Overwrite removes a previous export's images/ even without images: a link there is refused too."""
    (previous / "images").symlink_to(victim, target_is_directory=True)
    before, victim_before = _snapshot(previous), tree_digest(victim)
    assert_one_line_error(invoke(["export", tiny_store, previous, "--overwrite"]),
                          f"{previous / 'images'} {LINK_MESSAGE}")
    assert _snapshot(previous) == before
    assert tree_digest(victim) == victim_before


def test_planted_link_file_is_refused_naming_the_link(victim: Path, tiny_store: Path, tmp_path: Path) -> None:
    """A link at OUT/masks/<id>.png: the message names the link, not the sample id."""
    out = tmp_path / "export"
    (out / "masks").mkdir(parents=True)
    link = out / "masks" / "s001.png"
    link.symlink_to(victim / "s001.png")
    victim_before = tree_digest(victim)
    line = assert_one_line_error(invoke(["export", tiny_store, out, "--overwrite"]), f"{link} {LINK_MESSAGE}")
    assert "sample id" not in line
    assert tree_digest(victim) == victim_before
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["s001.png"] and link.is_symlink()
    assert not (out / "ids.txt").exists()


def test_planted_link_file_in_previous_export_is_removed_not_followed(previous: Path, victim: Path,
                                                                      tiny_store: Path) -> None:
    """Overwrite removes a previous export's masks/: a link in it goes as a link, its target stays."""
    link = previous / "masks" / "s001.png"
    link.unlink()
    link.symlink_to(victim / "s001.png")
    victim_before = tree_digest(victim)
    assert_ok(invoke(["export", tiny_store, previous, "--overwrite"]))
    assert tree_digest(victim) == victim_before
    assert not link.is_symlink() and link.is_file()


@pytest.mark.parametrize("name", ["ids.txt", "export.json"])
def test_link_as_an_output_file_is_refused(name: str, previous: Path, victim: Path, tiny_store: Path) -> None:
    link = previous / name
    link.unlink()
    link.symlink_to(victim / "notes.txt")
    before, victim_before = _snapshot(previous), tree_digest(victim)
    assert_one_line_error(invoke(["export", tiny_store, previous, "--overwrite"]), f"{link} {LINK_MESSAGE}")
    assert _snapshot(previous) == before
    assert tree_digest(victim) == victim_before


def test_ids_link_in_fresh_folder_is_refused(victim: Path, tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    link = out / "ids.txt"
    link.symlink_to(victim / "notes.txt")
    victim_before = tree_digest(victim)
    assert_one_line_error(invoke(["export", tiny_store, out, "--overwrite"]), f"{link} {LINK_MESSAGE}")
    assert tree_digest(victim) == victim_before
    assert sorted(p.name for p in out.iterdir()) == ["ids.txt"]


def test_scores_csv_link_inside_out_is_refused(previous: Path, victim: Path, tiny_store: Path) -> None:
    link = previous / "scores.csv"
    link.symlink_to(victim / "notes.txt")
    victim_before = tree_digest(victim)
    assert_one_line_error(invoke(["export", tiny_store, previous, "--overwrite", "--scores", link]),
                          f"{link} {LINK_MESSAGE}")
    assert tree_digest(victim) == victim_before


def test_out_itself_may_be_a_link(tiny_voc: TinyVoc, tiny_store: Path, tmp_path: Path) -> None:
    """OUT named as a link to a folder is the user's choice: the export goes into its target."""
    real = tmp_path / "real"
    real.mkdir()
    out = tmp_path / "out-link"
    out.symlink_to(real, target_is_directory=True)
    assert_ok(invoke(["export", tiny_store, out]))
    assert sorted(p.name for p in (real / "masks").iterdir()) == [f"{i}.png" for i in tiny_voc.ids]
    assert_ok(invoke(["export", tiny_store, out, "--overwrite", "--split", "val"]))
    assert (real / "ids.txt").read_text().split() == ["s005", "s006"]
    assert out.is_symlink()


def test_out_link_to_nothing_is_refused(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "dangling"
    out.symlink_to(tmp_path / "missing", target_is_directory=True)
    assert_one_line_error(invoke(["export", tiny_store, out]), f"{out} is a symbolic link to a missing folder")
    assert not (tmp_path / "missing").exists()


def test_file_where_masks_folder_goes_is_refused(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "masks").write_text("a file\n")
    assert_one_line_error(invoke(["export", tiny_store, out, "--overwrite"]),
                          f"{out / 'masks'}: exists and is not a folder")
    assert (out / "masks").read_text() == "a file\n"


def test_folder_where_ids_file_goes_is_refused(previous: Path, tiny_store: Path) -> None:
    (previous / "ids.txt").unlink()
    (previous / "ids.txt").mkdir()
    before = _snapshot(previous)
    assert_one_line_error(invoke(["export", tiny_store, previous, "--overwrite"]),
                          f"{previous / 'ids.txt'}: is a folder where export writes a file")
    assert _snapshot(previous) == before


def test_library_refuses_link_with_param_free_message(previous: Path, victim: Path, tiny_store: Path) -> None:
    from salcurate.data.export import ExportConfig, run
    from salcurate.errors import InputError

    (previous / "list.txt").symlink_to(victim / "notes.txt")
    with pytest.raises(InputError, match="list.txt is a symbolic link; export never writes or removes through links"):
        run(ExportConfig(store=str(tiny_store), out=str(previous), overwrite=True, images=True))
    assert (victim / "notes.txt").read_text() == "mine\n"
