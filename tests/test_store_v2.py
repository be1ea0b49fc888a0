"""Schema v2: a small root with links to immutable parts.  Writes cost what they change, replaced
data does not pile up, readers are not disturbed, v1 stores migrate, damage is named, and
permissions are kept."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_ok, invoke, make_demo_store, put_selection

from salcurate.data import store as store_mod
from salcurate.data.maintenance import CheckConfig, run_check
from salcurate.errors import StoreError


def flat(text: str) -> str:
    """Whitespace-normalized output (rich wraps long lines at the terminal width)."""
    return " ".join(text.split())


def _parts(path: Path) -> list[Path]:
    return sorted(store_mod.parts_dir(path).glob("*.h5"))


def _store_bytes(path: Path) -> int:
    return path.stat().st_size + sum(p.stat().st_size for p in _parts(path))


def make_v1(src: Path, dest: Path) -> Path:
    """Write store ``src`` as one schema v1 file (everything inside, no links, no checksums)."""
    with h5py.File(src, "r") as f, h5py.File(dest, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        g.attrs["schema_version"] = 1
        for top in ("classes", "samples", "images", "log"):
            g.copy(f[top], g, top)
        for group in ("maps", "scores", "selections"):
            out = g.create_group(group)
            for name in f[group]:
                obj = f[f"{group}/{name}"]
                out.copy(obj, out, name)
    return dest


# --------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------
def test_root_links_to_parts_and_plain_h5py_reads_through(tiny_store: Path) -> None:
    parts = _parts(tiny_store)
    assert [p.name.split("-")[0] for p in parts] == ["base"]
    assert tiny_store.stat().st_size < 64 << 10  # the root holds links, names and the log only
    with h5py.File(tiny_store, "r") as f:
        assert f.attrs["schema_version"] == 2
        link = f.get("samples", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == f"tiny.h5.d/{parts[0].name}"
        assert len(f["samples/id"]) == 6 and f["maps/proxy/pixels"].fletcher32


def test_a_write_adds_a_part_and_never_touches_the_bulk(tiny_store: Path) -> None:
    base = _parts(tiny_store)[0]
    before = (base.stat().st_ino, base.stat().st_mtime_ns, base.read_bytes())
    put_selection(tiny_store, "half", [1, 0, 1, 0, 1, 0])
    assert (base.stat().st_ino, base.stat().st_mtime_ns, base.read_bytes()) == before
    assert len(_parts(tiny_store)) == 2
    with store_mod.MaskStore(tiny_store) as s:
        np.testing.assert_array_equal(s.selection("half"), [1, 0, 1, 0, 1, 0])


def test_replaced_columns_do_not_pile_up(tiny_store: Path) -> None:
    put_selection(tiny_store, "w", [1] * 6)
    size = _store_bytes(tiny_store)
    for k in range(15):
        put_selection(tiny_store, "w", [k % 2] * 6)
    assert len(_parts(tiny_store)) == 2
    assert _store_bytes(tiny_store) < size + (16 << 10)  # only the log grows
    with store_mod.MaskStore(tiny_store) as s:
        assert s.selection("w").tolist() == [0.0] * 6


def test_an_open_reader_keeps_its_version_while_a_writer_replaces_it(tiny_store: Path) -> None:
    put_selection(tiny_store, "w", [1] * 6)
    with store_mod.MaskStore(tiny_store) as reader:
        put_selection(tiny_store, "w", [0] * 6)  # the old part is deleted
        assert reader.selection("w").tolist() == [1.0] * 6
        assert reader.map("proxy", 0) is not None
    with store_mod.MaskStore(tiny_store) as s:
        assert s.selection("w").tolist() == [0.0] * 6


def test_a_killed_writers_part_is_removed_by_the_next_writer(tiny_store: Path) -> None:
    code = ("import os, numpy as np\nfrom salcurate.data import store as s\n"
            f"with s.transaction({str(tiny_store)!r}, command='t', config={{}}) as tx:\n"
            "    tx.put_selection('x', np.ones(6), rule={}, command='t')\n"
            "    tx._part().flush()\n    os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert len(_parts(tiny_store)) == 2  # the orphan
    with store_mod.MaskStore(tiny_store) as s:
        assert "x" not in s.selection_names()
    put_selection(tiny_store, "y", [1] * 6)
    assert len(_parts(tiny_store)) == 2  # base + y's part; the orphan is gone


def test_copy_store_is_independent(tiny_store: Path, tmp_path: Path) -> None:
    copy = store_mod.copy_store(tiny_store, tmp_path / "copy.h5")
    put_selection(copy, "only_in_copy", [1] * 6)
    put_selection(tiny_store, "only_in_original", [1] * 6)
    with store_mod.MaskStore(copy) as c, store_mod.MaskStore(tiny_store) as o:
        assert c.selection_names() == ["only_in_copy"] and o.selection_names() == ["only_in_original"]
        np.testing.assert_array_equal(c.map("proxy", 2), o.map("proxy", 2))
    with pytest.raises(StoreError, match="exists already"):
        store_mod.copy_store(tiny_store, copy)
    with pytest.raises(StoreError, match="does not exist; create it first"):
        store_mod.copy_store(tiny_store, tmp_path / "missing" / "copy.h5")
    assert not (tmp_path / "missing").exists()


def test_append_keeps_everything_and_grows_columns(tiny_store: Path) -> None:
    put_selection(tiny_store, "w", [1] * 6)
    with store_mod.MaskStore(tiny_store) as s:
        rec = store_mod.SampleRecord(id="new", split="train", image_bytes=s.image_bytes(0),
                                     image_format=s.image_formats[0], height=int(s.heights[0]),
                                     width=int(s.widths[0]), proxy=s.map("proxy", 0))
        proxy0 = s.map("proxy", 0)
    with store_mod.transaction(tiny_store, command="t", config={}) as tx:
        tx.append_samples([rec])
    with store_mod.MaskStore(tiny_store) as s:
        assert len(s) == 7 and s.selection("w").tolist() == [1.0] * 6 + [0.0]
        np.testing.assert_array_equal(s.map("proxy", 6), proxy0)
    assert len(_parts(tiny_store)) == 1  # everything in the new part; the old ones are gone


# --------------------------------------------------------------------------------------
# migration and compaction
# --------------------------------------------------------------------------------------
def test_a_v1_store_is_read_and_migrated_on_first_write(tiny_store: Path, tmp_path: Path) -> None:
    put_selection(tiny_store, "w", [1, 0, 1, 0, 1, 0])
    v1 = make_v1(tiny_store, tmp_path / "old.h5")
    with store_mod.MaskStore(v1) as s, store_mod.MaskStore(tiny_store) as ref:
        assert s.schema_version == 1 and s.ids == ref.ids
        np.testing.assert_array_equal(s.map("gt", 1), ref.map("gt", 1))
    put_selection(v1, "w2", [0] * 6)
    backup = tmp_path / "old.h5.v1-backup"
    assert backup.exists()
    with h5py.File(backup, "r") as f:
        assert f.attrs["schema_version"] == 1
    with store_mod.MaskStore(v1) as s, store_mod.MaskStore(tiny_store) as ref:
        assert s.schema_version == 2 and s.selection_names() == ["w", "w2"]
        assert s.selection("w").tolist() == [1, 0, 1, 0, 1, 0]
        for i in range(6):
            assert s.image_bytes(i) == ref.image_bytes(i)
            for kind in ("proxy", "gt", "saliency"):
                a, b = s.map(kind, i), ref.map(kind, i)
                assert (a is None and b is None) or np.array_equal(a, b)
        assert s.run_log()[-2]["command"] == "migrate"
        np.testing.assert_array_equal(s.class_histogram("proxy"), ref.class_histogram("proxy"))


def test_migrate_command(tiny_store: Path, tmp_path: Path) -> None:
    v1 = make_v1(tiny_store, tmp_path / "old.h5")
    result = invoke(["migrate", v1])
    assert_ok(result)
    assert "migrated to schema v2" in flat(result.stdout) and "old.h5.v1-backup" in flat(result.stdout)
    result = invoke(["migrate", v1])
    assert_ok(result)
    assert "nothing to do" in flat(result.stdout)


def test_compact_gathers_small_parts(tiny_store: Path) -> None:
    for k in range(5):
        put_selection(tiny_store, f"s{k}", [k % 2] * 6)
    assert len(_parts(tiny_store)) == 6
    result = invoke(["compact", tiny_store])
    assert_ok(result)
    assert len(_parts(tiny_store)) == 2
    with store_mod.MaskStore(tiny_store) as s:
        assert [s.selection(f"s{k}")[0] for k in range(5)] == [0, 1, 0, 1, 0]


# --------------------------------------------------------------------------------------
# damage
# --------------------------------------------------------------------------------------
def _flip_bytes_of(path: Path, dataset: str, sample: int) -> None:
    """Damage one sample's stored bytes on disk (below HDF5), as a bad disk would."""
    with h5py.File(path, "r") as f:
        off = f["images/offsets"][sample] if dataset == "images/bytes" else f["maps/proxy/offsets"][sample]
        part_link = f.get("images" if dataset == "images/bytes" else "maps/proxy", getlink=True)
        part = path.parent / part_link.filename
        inner = ("/images/bytes" if dataset == "images/bytes" else "/maps/proxy/pixels")
    with h5py.File(part, "r") as p:
        ds = p[inner]
        chunk = int(off) // ds.chunks[0]
        info = ds.id.get_chunk_info_by_coord((chunk * ds.chunks[0],))
    with open(part, "r+b") as fh:
        fh.seek(info.byte_offset + min(int(off) - chunk * ds.chunks[0], info.size - 1) // 2)
        b = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_damaged_image_bytes_are_named_with_their_sample(tmp_path: Path) -> None:
    store = make_demo_store(tmp_path, num_images=8, size=32, seed=3)
    _flip_bytes_of(store, "images/bytes", 3)
    with store_mod.MaskStore(store) as s, pytest.raises(StoreError) as err:
        s.image(3)
    msg = str(err.value)
    assert "the store is damaged" in msg and "salcurate check" in msg and "\n" not in msg
    assert f"sample {s.ids[3]!r}" in msg
    result = invoke(["score-coarse", store, "--workers", "1"])
    assert result.exit_code != 0 and "salcurate check" in flat(result.output)
    assert "Traceback" not in result.output
    result = invoke(["check", store])
    assert result.exit_code == 1
    assert "damaged" in flat(result.stdout) and f"sample {s.ids[3]}" in flat(result.stdout)


def test_damaged_map_chunk_in_export_and_check(tiny_store: Path, tmp_path: Path) -> None:
    _flip_bytes_of(tiny_store, "maps/proxy", 0)
    result = invoke(["export", tiny_store, tmp_path / "out"])
    assert result.exit_code != 0 and "salcurate check" in flat(result.output)
    assert "Traceback" not in result.output
    res = run_check(CheckConfig(store=str(tiny_store)))
    assert not res.ok and "s001" in res.damaged_ids


def test_check_of_a_healthy_store(tiny_store: Path) -> None:
    result = invoke(["check", tiny_store, "--decode"])
    assert_ok(result)
    assert "ok, 6 samples in 2 files (checksums verified)" in flat(result.stdout)


@pytest.mark.parametrize("damage", ["schema_text", "no_scores", "missing_part", "garbage_root"])
def test_damaged_store_level_metadata_is_one_line(tiny_store: Path, damage: str) -> None:
    if damage == "schema_text":
        with h5py.File(tiny_store, "r+") as f:
            f.attrs["schema_version"] = "two"
        expect = "is not a whole number"
    elif damage == "no_scores":
        with h5py.File(tiny_store, "r+") as f:
            del f["scores"]
        expect = "layout is damaged"
    elif damage == "missing_part":
        _parts(tiny_store)[0].unlink()
        expect = "is missing"
    else:  # a root cut short, as by a full disk under a tool that wrote it in place
        data = tiny_store.read_bytes()
        tiny_store.write_bytes(data[: len(data) // 2])
        expect = "cannot open the store"
    for command in (["info", tiny_store], ["score-coarse", tiny_store], ["check", tiny_store]):
        result = invoke(command)
        assert result.exit_code != 0, command
        assert "Traceback" not in result.output
        assert expect in flat(result.output), (command, result.output)


# --------------------------------------------------------------------------------------
# permissions
# --------------------------------------------------------------------------------------
def test_a_read_only_store_is_refused_and_unchanged(tiny_store: Path) -> None:
    with store_mod.transaction(tiny_store, command="t", config={}) as tx:
        tx.put_scores({"sc": np.linspace(0, 1, 6)}, config={}, command="t")
    tiny_store.chmod(0o444)
    before = tiny_store.read_bytes()
    result = invoke(["select", tiny_store, "--by", "sc", "--tau", "0.5"])
    assert result.exit_code != 0
    assert "read-only" in flat(result.output) and "chmod u+w" in flat(result.output)
    assert tiny_store.read_bytes() == before and stat.S_IMODE(tiny_store.stat().st_mode) == 0o444
    with pytest.raises(StoreError, match="read-only"):
        put_selection(tiny_store, "w", [1] * 6)


def test_mode_owner_and_group_are_kept(tiny_store: Path) -> None:
    tiny_store.chmod(0o600)
    st = tiny_store.stat()
    time.sleep(0.01)
    put_selection(tiny_store, "w", [1] * 6)
    after = tiny_store.stat()
    assert stat.S_IMODE(after.st_mode) == 0o600 and (after.st_uid, after.st_gid) == (st.st_uid, st.st_gid)
    new_part = max(_parts(tiny_store), key=lambda p: p.stat().st_mtime_ns)
    assert stat.S_IMODE(new_part.stat().st_mode) == 0o600
    assert stat.S_IMODE(tiny_store.with_name(f".{tiny_store.name}.lock").stat().st_mode) == 0o600


class _DamagedDataset:
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        raise StoreError("masks.h5: sample 'a' (index 0): cannot read its image: the store is damaged (x); "
                         "run `salcurate check masks.h5` to list the damaged samples")


def test_damage_met_in_a_data_loader_worker_is_still_one_line() -> None:
    """torch re-raises a worker's error with the worker's traceback in the message; the CLI keeps its line."""
    import torch.utils.data

    from salcurate.cli.core import flag_message

    loader = torch.utils.data.DataLoader(_DamagedDataset(), num_workers=1)  # type: ignore[arg-type]
    with pytest.raises(StoreError) as err:
        next(iter(loader))
    assert "Traceback" in str(err.value)
    line = flag_message(err.value, {})
    assert line.startswith("masks.h5: sample 'a'") and "\n" not in line and "salcurate check" in line


def test_a_private_stores_work_area_is_private(tiny_store: Path) -> None:
    from salcurate.data.workarea import open_work_area

    tiny_store.chmod(0o600)
    with store_mod.MaskStore(tiny_store) as s:
        ids = s.ids
    with open_work_area(tiny_store, "t", {}, ids=ids, columns=["x"]):
        pass
    work = tiny_store.with_name(f".{tiny_store.name}.work")
    assert stat.S_IMODE(work.stat().st_mode) == 0o700


def test_ids_longer_than_the_stored_width_and_not_ascii(tiny_store: Path) -> None:
    long_id = "COCO_train2014_" + "é" * 30  # wider than the fixed-length column holds
    with store_mod.MaskStore(tiny_store) as s:
        rec = store_mod.SampleRecord(id=long_id, split="a-long-split-name", image_bytes=s.image_bytes(0),
                                     image_format=s.image_formats[0], height=int(s.heights[0]), width=int(s.widths[0]))
        ids = s.ids
    with store_mod.transaction(tiny_store, command="t", config={}) as tx:
        tx.append_samples([rec])
    with store_mod.MaskStore(tiny_store) as s:
        assert s.ids == (*ids, long_id) and s.index_of(long_id) == 6
        assert s.splits[-1] == "a-long-split-name" and s.splits[0] == "train"
    with h5py.File(tiny_store, "r") as f:  # plain h5py reads them too
        assert f["samples/id"].asstr()[-1] == long_id
