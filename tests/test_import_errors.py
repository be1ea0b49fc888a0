"""Bad input gives one ``error:`` line naming the culprit, a non-zero exit and no traceback,
and never damages (or half-creates) a store."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TinyVoc, assert_ok, file_digest, invoke, tree_digest, voc_args
from PIL import Image
from typer.testing import Result

from salcurate.data.store import copy_store
from salcurate.imageio import write_label_png


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """The command failed cleanly: exit != 0, one ``error:`` line on stderr with ``fragments``."""
    context = f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.exit_code != 0, context
    # An uncaught exception would surface here (CliRunner swallows tracebacks).
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}\n{context}"
    assert "Traceback" not in result.stdout + result.stderr, context
    lines = result.stderr.splitlines()
    assert len(lines) == 1, context
    assert lines[0].startswith("error: "), context
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in the error line\n{context}"
    return lines[0]


def assert_no_output_left(out: Path) -> None:
    """A failed import into a new store leaves neither the store nor a partial file."""
    assert not out.exists()
    leftovers = [n for n in os.listdir(out.parent) if n.endswith(".partial")]
    assert leftovers == []


# --------------------------------------------------------------------------------------
# Bad import input.  Each case breaks the tiny dataset (or the arguments) and returns the
# arguments to run and the fragments the error line must contain.
# --------------------------------------------------------------------------------------
Case = Callable[[TinyVoc, Path], tuple[list[str], list[str]]]


def _missing_root(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    root = v.root.parent / "no_such_root"
    return voc_args(v, out, root=root), [str(root), "dataset root folder not found"]


def _missing_jpeg_images(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    shutil.rmtree(v.image_dir)
    return voc_args(v, out), [str(v.image_dir), "image folder not found"]


def _missing_pseudo_dir(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    missing = v.root / "NoProxyHere"
    return voc_args(v, out, pseudo=missing), [str(missing), "--pseudo"]


def _missing_split_file(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    return voc_args(v, out, splits=("train", "test")), [str(v.split_file("test")), "list file not found"]


def _missing_class_names_file(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    v.class_names_file.unlink()
    return voc_args(v, out), [str(v.class_names_file), "class names file not found"]


def _missing_proxy_for_id(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.proxy_dir / "s005.png"
    victim.unlink()
    return voc_args(v, out), [str(victim), "proxy annotation for 's005' not found"]


def _truncated_jpeg(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.images["s005"]  # in val: some samples load fine before it fails
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return voc_args(v, out), [str(victim), "does not decode", "truncated"]


def _random_bytes_image(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.images["s006"]
    victim.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return voc_args(v, out), [str(victim), "does not decode"]


def _huge_png_image(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    """12000 x 12000 pixels (17 kB as a 1-bit PNG) is refused from its header, before decoding."""
    v.images["s002"].unlink()
    victim = v.image_dir / "s002.png"
    Image.new("1", (12000, 12000)).save(victim)
    return voc_args(v, out), [str(victim), "image is 12000 x 12000 = 144,000,000 pixels",
                              "above --max-pixels (100,000,000)", "raise --max-pixels (0 = no limit)"]


def _proxy_wrong_size(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.proxy_dir / "s002.png"  # image 30x20 (HxW)
    write_label_png(victim, np.zeros((20, 30), np.uint8))
    return voc_args(v, out), [str(victim), "mask is 30x20 but its image is 20x30 (WxH)"]


def _gt_wrong_size(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.gt_dir / "s004.png"  # image 20x28 (HxW)
    write_label_png(victim, np.zeros((21, 28), np.uint8))
    return voc_args(v, out), [str(victim), "mask is 28x21 but its image is 28x20 (WxH)"]


def _saliency_wrong_size(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.saliency_dir / "s003.png"  # image 16x16
    write_label_png(victim, np.zeros((16, 17), np.uint8), palette=False)
    return voc_args(v, out), [str(victim), "saliency map is 17x16 but its image is 16x16"]


def _rgb_proxy(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.proxy_dir / "s001.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(victim)
    return voc_args(v, out), [str(victim), "expected a palette or 8-bit grey PNG label map, got mode RGB"]


def _truncated_proxy_png(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.proxy_dir / "s004.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return voc_args(v, out), [str(victim), "label map image, but it does not decode"]


def _label_above_classes(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.proxy_dir / "s001.png"
    labels = v.proxy["s001"].copy()
    labels[5, 7] = 7  # 3 classes: 0..3 and 255 are valid
    write_label_png(victim, labels)
    return voc_args(v, out), [str(victim), "label value 7 is above the 3 classes and not 255"]


def _label_just_above_classes(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    victim = v.gt_dir / "s002.png"
    labels = v.gt["s002"].copy()
    labels[-1, -1] = 4  # C + 1
    write_label_png(victim, labels)
    return voc_args(v, out), [str(victim), "label value 4 is above the 3 classes"]


def _tags_line(v: TinyVoc, tags: str) -> None:
    with v.tags_csv.open("a", encoding="utf-8") as fh:
        fh.write(f"s006,{tags}\n")  # line 7: header + 5 tagged ids + this one


def _tag_index_zero(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    _tags_line(v, "1 0")
    return voc_args(v, out), [f"{v.tags_csv}:7", "tag index 0 is out of range", "1..3"]


def _tag_index_above(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    _tags_line(v, "4")
    return voc_args(v, out), [f"{v.tags_csv}:7", "tag index 4 is out of range", "1..3"]


def _tag_unknown_name(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    _tags_line(v, "widget cat")  # 'cat' is a VOC class, not one of ours
    return voc_args(v, out), [f"{v.tags_csv}:7", "unknown class name 'cat'"]


def _tag_background_name(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    _tags_line(v, "background")
    return voc_args(v, out), [f"{v.tags_csv}:7", "unknown class name 'background'"]


def _tags_row_without_comma(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    with v.tags_csv.open("a", encoding="utf-8") as fh:
        fh.write("s006\n")
    return voc_args(v, out), [f"{v.tags_csv}:7", "expected `id,tags`"]


def _missing_tags_file(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    v.tags_csv.unlink()
    return voc_args(v, out), [str(v.tags_csv), "tags file not found"]


def _strong_unknown_id(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    strong = v.root / "strong.txt"
    strong.write_text("s001\nzzz\n")
    return [*voc_args(v, out), "--strong", str(strong)], [str(strong), "id 'zzz' is not among the imported samples"]


def _strong_without_gt(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    strong = v.root / "strong.txt"
    strong.write_text("s006\n")  # the one id without ground truth
    return [*voc_args(v, out), "--strong", str(strong)], ["s006.png", "strong sample 's006' has no ground truth"]


def _tags_from_gt_without_gt(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    args = voc_args(v, out)
    del args[args.index("--tags") : args.index("--tags") + 2]
    return [*args, "--tags-from-gt"], [str(v.gt_dir / "s006.png"), "--tags-from-gt needs ground truth for 's006'"]


def _append_to_list(v: TinyVoc, split: str, *ids: str) -> Path:
    path = v.split_file(split)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(f"{i}\n" for i in ids))
    return path


def _id_without_image(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    path = _append_to_list(v, "val", "ghost")
    return voc_args(v, out), [str(path), "'ghost' has no image"]


def _duplicate_id_in_list(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    path = _append_to_list(v, "val", "s005")
    return voc_args(v, out), [str(path), "duplicate id 's005'", "already in split 'val'"]


def _duplicate_id_across_lists(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    path = _append_to_list(v, "val", "s001")
    return voc_args(v, out), [str(path), "duplicate id 's001'", "already in split 'train'"]


def _id_with_separator(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    path = _append_to_list(v, "val", "sub/s001")
    return voc_args(v, out), [f"{path}:3", "invalid sample id 'sub/s001'"]


def _id_with_backslash(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    path = _append_to_list(v, "val", "sub\\s001")
    return voc_args(v, out), [f"{path}:3", "invalid sample id"]


def _id_with_dotdot(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    path = _append_to_list(v, "val", "..")
    return voc_args(v, out), [f"{path}:3", "invalid sample id '..'"]


def _id_escaping_with_dotdot(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    path = _append_to_list(v, "val", "../JPEGImages/s001")
    return voc_args(v, out), [f"{path}:3", "invalid sample id '../JPEGImages/s001'"]


def _empty_split_file(v: TinyVoc, out: Path) -> tuple[list[str], list[str]]:
    v.split_file("val").write_text("\n\n", encoding="utf-8")
    return voc_args(v, out), [str(v.split_file("val")), "split 'val' is empty"]


IMPORT_CASES: dict[str, Case] = {
    "missing-root": _missing_root,
    "missing-JPEGImages": _missing_jpeg_images,
    "missing-pseudo-dir": _missing_pseudo_dir,
    "missing-split-file": _missing_split_file,
    "missing-class-names-file": _missing_class_names_file,
    "missing-proxy-for-id": _missing_proxy_for_id,
    "truncated-jpeg": _truncated_jpeg,
    "random-bytes-image": _random_bytes_image,
    "huge-png-image": _huge_png_image,
    "proxy-wrong-size": _proxy_wrong_size,
    "gt-wrong-size": _gt_wrong_size,
    "saliency-wrong-size": _saliency_wrong_size,
    "rgb-proxy": _rgb_proxy,
    "truncated-proxy-png": _truncated_proxy_png,
    "label-7-with-3-classes": _label_above_classes,
    "label-C+1-in-gt": _label_just_above_classes,
    "tag-index-0": _tag_index_zero,
    "tag-index-C+1": _tag_index_above,
    "tag-unknown-name": _tag_unknown_name,
    "tag-background-name": _tag_background_name,
    "tags-row-without-comma": _tags_row_without_comma,
    "missing-tags-file": _missing_tags_file,
    "strong-unknown-id": _strong_unknown_id,
    "strong-without-gt": _strong_without_gt,
    "tags-from-gt-without-gt": _tags_from_gt_without_gt,
    "id-without-image": _id_without_image,
    "duplicate-id-in-list": _duplicate_id_in_list,
    "duplicate-id-across-lists": _duplicate_id_across_lists,
    "id-with-slash": _id_with_separator,
    "id-with-backslash": _id_with_backslash,
    "id-dotdot": _id_with_dotdot,
    "id-dotdot-path": _id_escaping_with_dotdot,
    "empty-split-file": _empty_split_file,
}


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("case", list(IMPORT_CASES.values()), ids=list(IMPORT_CASES))
def test_bad_input_into_new_store_leaves_nothing(case: Case, tiny_voc: TinyVoc, out_dir: Path) -> None:
    out = out_dir / "masks.h5"
    args, fragments = case(tiny_voc, out)
    assert_one_line_error(invoke(args), *fragments)
    assert_no_output_left(out)


@pytest.mark.parametrize("case", list(IMPORT_CASES.values()), ids=list(IMPORT_CASES))
def test_bad_input_with_overwrite_keeps_old_store(case: Case, tiny_voc: TinyVoc, out_dir: Path) -> None:
    out = out_dir / "masks.h5"
    assert_ok(invoke(voc_args(tiny_voc, out)))  # a good store made before the input went bad
    before = file_digest(out)
    args, fragments = case(tiny_voc, out)
    assert_one_line_error(invoke([*args, "--overwrite"]), *fragments)
    assert file_digest(out) == before
    assert [n for n in os.listdir(out_dir) if n.endswith(".partial")] == []


@pytest.mark.parametrize("case", [_truncated_jpeg, _label_above_classes, _proxy_wrong_size],
                         ids=["truncated-jpeg", "label-7", "proxy-wrong-size"])
def test_bad_input_with_append_keeps_old_store(case: Case, tiny_voc: TinyVoc, out_dir: Path) -> None:
    """Appending goes through a transaction: a failure while loading leaves the store as it was."""
    out = out_dir / "masks.h5"
    # The store holds the split the broken file is not in, so the append itself is legal.
    broken_split = "val" if case is _truncated_jpeg else "train"
    other = "train" if broken_split == "val" else "val"
    assert_ok(invoke(voc_args(tiny_voc, out, splits=(other,))))
    before = file_digest(out)
    _, fragments = case(tiny_voc, out)  # breaks a file; the arguments are ours
    args = voc_args(tiny_voc, out, splits=(broken_split,))
    assert_one_line_error(invoke([*args, "--append"]), *fragments)
    assert file_digest(out) == before
    assert [n for n in os.listdir(out_dir) if n.endswith(".partial")] == []


def test_append_with_existing_id_keeps_store(tiny_voc: TinyVoc, tiny_store: Path) -> None:
    before = file_digest(tiny_store)
    result = invoke([*voc_args(tiny_voc, tiny_store, splits=("val",)), "--append"])
    assert_one_line_error(result, str(tiny_store), "id 's005' is already in the store")
    assert file_digest(tiny_store) == before


def test_append_with_other_classes_keeps_store(tiny_voc: TinyVoc, tiny_store: Path) -> None:
    before = file_digest(tiny_store)
    args = [*voc_args(tiny_voc, tiny_store, splits=("val",)), "--append"]
    args[args.index("--class-names") : args.index("--class-names") + 2] = []  # default: the 21 VOC classes
    args[args.index("--tags") : args.index("--tags") + 2] = []  # the tags use our own class indices
    assert_one_line_error(invoke(args), str(tiny_store), "differ from this import's (21)", "--class-names")
    assert file_digest(tiny_store) == before


def test_append_to_missing_store(tiny_voc: TinyVoc, out_dir: Path) -> None:
    out = out_dir / "masks.h5"
    assert_one_line_error(invoke([*voc_args(tiny_voc, out), "--append"]), str(out), "no mask store here")
    assert_no_output_left(out)


def test_import_onto_existing_output_needs_overwrite(tiny_voc: TinyVoc, tiny_store: Path) -> None:
    before = file_digest(tiny_store)
    result = invoke(voc_args(tiny_voc, tiny_store))
    assert_one_line_error(result, str(tiny_store), "exists already", "--overwrite", "--append")
    assert file_digest(tiny_store) == before


def test_import_onto_other_existing_file_needs_overwrite(tiny_voc: TinyVoc, out_dir: Path) -> None:
    out = out_dir / "notes.txt"
    out.write_text("keep me\n")
    assert_one_line_error(invoke(voc_args(tiny_voc, out)), str(out), "exists already")
    assert out.read_text() == "keep me\n"


def test_import_into_missing_folder(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    out = tmp_path / "no_such_folder" / "masks.h5"
    assert_one_line_error(invoke(voc_args(tiny_voc, out)), str(out), f"the folder {out.parent} does not exist")
    assert not out.parent.exists()


def test_import_overwrite_onto_a_folder(tiny_voc: TinyVoc, out_dir: Path) -> None:
    target = out_dir / "not_a_store"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    result = invoke([*voc_args(tiny_voc, target), "--overwrite"])
    assert (target / "keep.txt").read_text() == "mine\n"
    assert_one_line_error(result, str(target))


@pytest.mark.parametrize("which", ["split-list", "class-names", "tags-csv"])
def test_non_utf8_text_input(which: str, tiny_voc: TinyVoc, out_dir: Path) -> None:
    path = {"split-list": tiny_voc.split_file("val"), "class-names": tiny_voc.class_names_file,
            "tags-csv": tiny_voc.tags_csv}[which]
    path.write_bytes(path.read_bytes() + "caf\xe9\n".encode("latin-1"))
    out = out_dir / "masks.h5"
    assert_one_line_error(invoke(voc_args(tiny_voc, out)), str(path))
    assert_no_output_left(out)


def test_import_two_tag_sources(tiny_voc: TinyVoc, out_dir: Path) -> None:
    out = out_dir / "masks.h5"
    assert_one_line_error(invoke([*voc_args(tiny_voc, out), "--tags-from-gt"]), "give one tag source", "--tags")
    assert_no_output_left(out)


# --------------------------------------------------------------------------------------
# info / export on things that are not (usable) stores
# --------------------------------------------------------------------------------------
def _text_file(tmp_path: Path, tiny_store: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "masks.h5"
    path.write_text("this is not a store\n")
    return path, ["the file is not HDF5"]


def _foreign_hdf5(tmp_path: Path, tiny_store: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(10)
        f.attrs["schema_version"] = 1
    return path, ["an HDF5 file, but not a salcurate mask store"]


def _missing_path(tmp_path: Path, tiny_store: Path) -> tuple[Path, list[str]]:
    return tmp_path / "nowhere.h5", ["no mask store here"]


def _folder(tmp_path: Path, tiny_store: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "a_folder.h5"
    path.mkdir()
    return path, ["got a folder"]


def _newer_schema(tmp_path: Path, tiny_store: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "future.h5"
    copy_store(tiny_store, path)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 99
    return path, ["schema v99", "newer", "upgrade"]


def _truncated_store(tmp_path: Path, tiny_store: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "cut.h5"
    data = tiny_store.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, ["cannot open the store"]


def _no_schema_version(tmp_path: Path, tiny_store: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "noversion.h5"
    copy_store(tiny_store, path)
    with h5py.File(path, "r+") as f:
        del f.attrs["schema_version"]
    return path, ["unknown store schema version"]


STORE_CASES = {"text-file": _text_file, "foreign-hdf5": _foreign_hdf5, "missing": _missing_path,
               "folder": _folder, "newer-schema": _newer_schema, "truncated-store": _truncated_store,
               "no-schema-version": _no_schema_version}


def _snapshot(path: Path) -> str | None:
    return file_digest(path) if path.is_file() else None


@pytest.mark.parametrize("make", list(STORE_CASES.values()), ids=list(STORE_CASES))
@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_info_refuses_bad_store(make, as_json: bool, tmp_path: Path, tiny_store: Path) -> None:
    path, fragments = make(tmp_path, tiny_store)
    before = _snapshot(path)
    result = invoke(["info", path, *(["--json"] if as_json else [])])
    assert_one_line_error(result, str(path), *fragments)
    assert result.stdout == ""
    assert _snapshot(path) == before


@pytest.mark.parametrize("make", list(STORE_CASES.values()), ids=list(STORE_CASES))
def test_export_refuses_bad_store(make, tmp_path: Path, tiny_store: Path) -> None:
    path, fragments = make(tmp_path, tiny_store)
    before = _snapshot(path)
    target = tmp_path / "export"
    assert_one_line_error(invoke(["export", path, target]), str(path), *fragments)
    assert _snapshot(path) == before
    assert not target.exists()


def test_info_on_damaged_store_layout(tmp_path: Path, tiny_store: Path) -> None:
    path = tmp_path / "damaged.h5"
    copy_store(tiny_store, path)
    with h5py.File(path, "r+") as f:
        del f["samples"]
    assert_one_line_error(invoke(["info", path]), str(path))


def test_append_refuses_newer_schema(tiny_voc: TinyVoc, tmp_path: Path, tiny_store: Path) -> None:
    path, fragments = _newer_schema(tmp_path, tiny_store)
    before = file_digest(path)
    result = invoke([*voc_args(tiny_voc, path, splits=("val",)), "--append"])
    assert_one_line_error(result, str(path), *fragments)
    assert file_digest(path) == before


def test_export_into_non_empty_folder_needs_overwrite(tiny_store: Path, tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    before, store_before = tree_digest(target), file_digest(tiny_store)
    result = invoke(["export", tiny_store, target])
    assert_one_line_error(result, str(target), "folder is not empty", "--overwrite")
    assert tree_digest(target) == before
    assert file_digest(tiny_store) == store_before


def test_export_onto_a_file(tiny_store: Path, tmp_path: Path) -> None:
    target = tmp_path / "export.txt"
    target.write_text("mine\n")
    assert_one_line_error(invoke(["export", tiny_store, target]), str(target), "is not a folder")
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize(
    ("option", "fragments"),
    [
        (["--selection", "nope"], ["no selection 'nope'", "the store has: none"]),
        (["--split", "test"], ["no split 'test'", "train, val"]),
        (["--kind", "saliency"], ["unknown mask kind 'saliency'", "proxy, gt"]),
    ],
    ids=["selection", "split", "kind"],
)
def test_export_unknown_option_value(option: list[str], fragments: list[str], tiny_store: Path, tmp_path: Path) -> None:
    target = tmp_path / "export"
    before = file_digest(tiny_store)
    assert_one_line_error(invoke(["export", tiny_store, target, *option]), *fragments)
    assert file_digest(tiny_store) == before
    assert not target.exists()


def test_export_too_many_paths(tiny_store: Path, tmp_path: Path) -> None:
    assert_one_line_error(invoke(["export", tiny_store, tmp_path / "a", tmp_path / "b"]),
                          "expected [STORE] OUT, got 3 paths")
