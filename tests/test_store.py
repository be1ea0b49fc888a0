"""The mask store: round trip, transactions, score columns, selections, schema checks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from salcurate.data import store
from salcurate.data.store import MaskStore, SampleRecord
from salcurate.errors import StoreError

CLASSES = ("background", "cat", "dog", "fish")


def make_records(n: int, seed: int = 0, *, start: int = 0) -> list[SampleRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        h, w = (int(v) for v in rng.integers(8, 40, 2))
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
        labels = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), (h, w))
        out.append(SampleRecord(
            id=f"s{i:03d}", split="train" if i % 3 else "val", image_bytes=buf.getvalue(), image_format="JPEG",
            height=h, width=w, proxy=labels, gt=None if i % 2 else labels[::-1].copy(),
            saliency=rng.integers(0, 256, (h, w), dtype=np.uint8) if i % 4 else None,
            tags=rng.random(3) < 0.5 if i % 5 else None, strong=(i % 7 == 0),
        ))
    return out


def build(path: Path, records: list[SampleRecord], batch: int = 4) -> Path:
    with store.create_store(path, CLASSES, command="test import", config={"n": len(records)}) as w:
        for k in range(0, len(records), batch):
            w.append_samples(records[k : k + batch])
    return path


def digest(path: Path) -> bytes:
    import hashlib

    return hashlib.sha256(path.read_bytes()).digest()


@pytest.fixture
def records() -> list[SampleRecord]:
    return make_records(13)


@pytest.fixture
def store_path(tmp_path: Path, records: list[SampleRecord]) -> Path:
    return build(tmp_path / "masks.h5", records)


# -- round trip -------------------------------------------------------------------------
def test_round_trip_every_field(store_path: Path, records: list[SampleRecord]) -> None:
    with MaskStore(store_path) as st:
        assert st.class_names == CLASSES and st.num_classes == 3 and len(st) == len(records)
        for i, r in enumerate(records):
            assert st.ids[i] == r.id and st.splits[i] == r.split
            assert (st.heights[i], st.widths[i]) == (r.height, r.width)
            assert st.image_bytes(i) == r.image_bytes  # bit-exact original file
            assert st.image(i).shape == (r.height, r.width, 3)
            for kind in store.MAP_KINDS:
                got, want = st.map(kind, i), r.map(kind)
                assert (got is None) == (want is None)
                if want is not None:
                    np.testing.assert_array_equal(got, want)
            assert st.has_tags[i] == (r.tags is not None)
            np.testing.assert_array_equal(st.tags[i], r.tags if r.tags is not None else np.zeros(3, bool))
            assert st.strong[i] == r.strong
        assert st.index_of("s004") == 4


def test_iter_maps_matches_random_access(store_path: Path) -> None:
    with MaskStore(store_path) as st:
        for kind in store.MAP_KINDS:
            seen = [(i, m) for i, m in st.iter_maps(kind, block_bytes=300)]  # tiny blocks: many reads
            assert [i for i, _ in seen] == list(range(len(st)))
            for i, m in seen:
                ref = st.map(kind, i)
                assert (m is None and ref is None) or np.array_equal(m, ref)
        sub = [i for i, _ in st.iter_maps("proxy", [9, 2, 5])]
        assert sub == [2, 5, 9]


def test_class_histogram_counts_classes_and_ignore(store_path: Path, records: list[SampleRecord]) -> None:
    with MaskStore(store_path) as st:
        hist = st.class_histogram("proxy")
    assert hist.shape == (len(records), 5)
    for i, r in enumerate(records):
        expect = [int((r.proxy == c).sum()) for c in (0, 1, 2, 3, 255)]
        assert hist[i].tolist() == expect


def test_images_of_different_sizes_and_empty_store(tmp_path: Path) -> None:
    path = build(tmp_path / "empty.h5", [])
    with MaskStore(path) as st:
        assert len(st) == 0 and st.score_names() == [] and len(st.run_log()) == 1


def test_run_log_records_command_config_and_duration(store_path: Path) -> None:
    with MaskStore(store_path) as st:
        (entry,) = st.run_log()
    assert entry["command"] == "test import" and entry["config"] == {"n": 13}
    assert entry["duration_s"] >= 0 and entry["salcurate_version"]


# -- transactions -----------------------------------------------------------------------
def test_transaction_commits_scores_selections_and_log(store_path: Path) -> None:
    n = 13
    with store.transaction(store_path, command="score", config={"b": 0.1}) as tx:
        tx.put_scores({"sc": np.linspace(0, 1, n)}, config={"b": 0.1}, command="score")
        tx.put_selection("sc_0.5", (np.linspace(0, 1, n) >= 0.5).astype(float), rule={"tau": 0.5}, command="select")
    with MaskStore(store_path) as st:
        np.testing.assert_allclose(st.score("sc"), np.linspace(0, 1, n), rtol=1e-6)
        assert st.score_meta("sc")["config"] == {"b": 0.1}
        assert st.selection("sc_0.5").sum() == (np.linspace(0, 1, n) >= 0.5).sum()
        assert st.selection_meta("sc_0.5")["rule"] == {"tau": 0.5}
        assert [e["command"] for e in st.run_log()] == ["test import", "score"]


def test_failed_transaction_leaves_store_bit_identical(store_path: Path) -> None:
    before = digest(store_path)
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction(store_path, command="x", config={}) as tx:
            tx.put_scores({"a": np.zeros(13)}, config={}, command="x")
            raise RuntimeError("boom")
    assert digest(store_path) == before
    assert not list(store_path.parent.glob("*.partial"))


def test_existing_column_needs_overwrite(store_path: Path) -> None:
    with store.transaction(store_path, command="a", config={}) as tx:
        tx.put_selection("keep", np.ones(13), rule={}, command="a")
    before = digest(store_path)
    with pytest.raises(StoreError, match="exists already; pass overwrite"):
        with store.transaction(store_path, command="b", config={}) as tx:
            tx.put_selection("keep", np.zeros(13), rule={}, command="b")
    assert digest(store_path) == before
    with store.transaction(store_path, command="c", config={}) as tx:
        tx.put_selection("keep", np.zeros(13), rule={"v": 2}, command="c", overwrite=True)
    with MaskStore(store_path) as st:
        assert st.selection("keep").sum() == 0 and st.selection_meta("keep")["rule"] == {"v": 2}


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_invalid_column_names_refused(store_path: Path, name: str) -> None:
    with pytest.raises(StoreError, match="invalid column name"):
        with store.transaction(store_path, command="x", config={}) as tx:
            tx.put_scores({name: np.zeros(13)}, config={}, command="x")


def test_column_shape_checked(store_path: Path) -> None:
    with pytest.raises(StoreError, match=r"expected shape \(13,\), got \(12,\)"):
        with store.transaction(store_path, command="x", config={}) as tx:
            tx.put_scores({"a": np.zeros(12)}, config={}, command="x")


def test_append_grows_existing_columns(store_path: Path) -> None:
    with store.transaction(store_path, command="s", config={}) as tx:
        tx.put_scores({"a": np.ones(13)}, config={}, command="s")
        tx.put_selection("all", np.ones(13), rule={}, command="s")
    with store.transaction(store_path, command="append", config={}) as tx:
        tx.append_samples(make_records(3, seed=1, start=100))
    with MaskStore(store_path) as st:
        assert len(st) == 16 and st.ids[-1] == "s102"
        assert np.isnan(st.score("a")[13:]).all() and (st.score("a")[:13] == 1).all()
        assert st.selection("all")[13:].tolist() == [0, 0, 0]


def test_unknown_names_list_what_exists(store_path: Path) -> None:
    with MaskStore(store_path) as st:
        with pytest.raises(StoreError, match=r"no score column 'sf' \(the store has: none\)"):
            st.score("sf")
        with pytest.raises(StoreError, match="make one with `salcurate select`"):
            st.selection("nope")
        with pytest.raises(StoreError, match=r"no maps 'depth' in the store \(it has: gt, proxy, saliency\)"):
            st.map("depth", 0)


# -- computed binary maps ----------------------------------------------------------------
def test_bit_maps_round_trip_and_survive_append(store_path: Path, records: list[SampleRecord]) -> None:
    rng = np.random.default_rng(3)
    masks = [None if i == 4 else rng.random((r.height, r.width)) < 0.3 for i, r in enumerate(records)]
    with store.transaction(store_path, command="score-coarse", config={"crf": False}) as tx:
        tx.put_bit_maps("reference", (None if m is None else np.packbits(m.reshape(-1)) for m in masks),
                        config={"crf": False}, command="score-coarse")
    with MaskStore(store_path) as st:
        assert "reference" in st.map_names() and st.map_meta("reference")["config"] == {"crf": False}
        assert st.has_map("reference").tolist() == [m is not None for m in masks]
        for i, m in enumerate(masks):
            got = st.map("reference", i)
            assert (got is None) if m is None else (got.dtype == bool and np.array_equal(got, m))
        assert [i for i, _ in st.iter_maps("reference")] == list(range(len(records)))
    with store.transaction(store_path, command="append", config={}) as tx:
        tx.append_samples(make_records(2, seed=9, start=50))
    with MaskStore(store_path) as st:
        assert st.has_map("reference").tolist() == [m is not None for m in masks] + [False, False]
        np.testing.assert_array_equal(st.map("reference", 0), masks[0])


def test_bit_maps_need_overwrite_and_one_entry_per_sample(store_path: Path) -> None:
    with store.transaction(store_path, command="a", config={}) as tx:
        tx.put_bit_maps("ref", [None] * 13, config={}, command="a")
    with pytest.raises(StoreError, match="exist already; pass overwrite"):
        with store.transaction(store_path, command="b", config={}) as tx:
            tx.put_bit_maps("ref", [None] * 13, config={}, command="b")
    with pytest.raises(StoreError, match="expected 13 entries, got 12"):
        with store.transaction(store_path, command="c", config={}) as tx:
            tx.put_bit_maps("ref2", [None] * 12, config={}, command="c")
    with pytest.raises(StoreError, match="reserved"):
        with store.transaction(store_path, command="d", config={}) as tx:
            tx.put_bit_maps("proxy", [None] * 13, config={}, command="d")


def test_second_writer_is_refused_while_first_holds_the_lock(store_path: Path) -> None:
    with store.transaction(store_path, command="s", config={}):
        with pytest.raises(StoreError, match="another salcurate command is writing"):
            with store.transaction(store_path, command="t", config={}):
                pass


# -- opening and schema -----------------------------------------------------------------
def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="salcurate import voc"):
        MaskStore(tmp_path / "none.h5")


def test_not_hdf5_refused(tmp_path: Path) -> None:
    p = tmp_path / "notes.h5"
    p.write_text("hello")
    with pytest.raises(StoreError, match="not HDF5"):
        MaskStore(p)


def test_foreign_hdf5_refused(tmp_path: Path) -> None:
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreError, match="not a salcurate mask store"):
        MaskStore(p)


def test_newer_schema_refused_for_reading_and_writing(store_path: Path) -> None:
    with h5py.File(store_path, "r+") as f:
        f.attrs["schema_version"] = store.SCHEMA_VERSION + 1
    before = digest(store_path)
    with pytest.raises(StoreError, match="newer than this salcurate .* upgrade salcurate"):
        MaskStore(store_path)
    with pytest.raises(StoreError, match="newer"):
        with store.transaction(store_path, command="x", config={}):
            pass
    assert digest(store_path) == before


def test_layout_is_plain_hdf5(store_path: Path, records: list[SampleRecord]) -> None:
    """What docs/store-format.md promises: readable with h5py alone."""
    with h5py.File(store_path, "r") as f:
        assert f.attrs["salcurate_format"] == "salcurate.maskstore"
        off = f["maps/proxy/offsets"][:]
        h, w = f["samples/height"][2], f["samples/width"][2]
        np.testing.assert_array_equal(f["maps/proxy/pixels"][off[2] : off[3]].reshape(h, w), records[2].proxy)
        io_off = f["images/offsets"][:]
        assert f["images/bytes"][io_off[2] : io_off[3]].tobytes() == records[2].image_bytes
        assert [s.decode() for s in f["classes/names"][:]] == list(CLASSES)
        json.loads(f["log/entries"][0])
