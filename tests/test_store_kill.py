"""Nothing is lost: a writer killed with SIGKILL at a random moment leaves a readable store
with every earlier write intact.

A child process loops over the store's write paths (transactions adding score columns,
selections and binary maps, appending samples now and then); the test kills it at random
points and checks the store after each kill.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from salcurate.data import store
from salcurate.data.store import MaskStore

sys.path.insert(0, str(Path(__file__).parent))
from test_store import build, make_records  # noqa: E402

N0 = 40

CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from salcurate.data import store
    from test_store import make_records
    path = {path!r}
    def expected(k, n):
        return np.random.default_rng(k).random(n).astype(np.float32)
    with store.MaskStore(path) as st:
        n, k = len(st), len([s for s in st.score_names() if s.startswith("t")])
    print("ready", flush=True)
    while True:
        with store.transaction(path, command=f"w{{k}}", config={{"k": k}}) as tx:
            if k % 4 == 3:
                tx.append_samples(make_records(2, seed=1000 + n, start=1000 + n))
                n += 2
            tx.put_scores({{f"t{{k}}": expected(k, n)}}, config={{"k": k}}, command=f"w{{k}}")
            tx.put_selection(f"sel{{k}}", expected(k, n) > 0.5, rule={{"k": k}}, command=f"w{{k}}")
            tx.put_bit_maps(f"ref{{k}}", [np.packbits(np.ones(5, bool))] * n, config={{}}, command=f"w{{k}}")
        k += 1
    """
)


def _expected(k: int, n: int) -> np.ndarray:
    return np.random.default_rng(k).random(n).astype(np.float32)


def _check_store(path: Path, originals: list[store.SampleRecord]) -> tuple[int, int]:
    with MaskStore(path) as st:  # must open
        n = len(st)
        for i, r in enumerate(originals):
            assert st.ids[i] == r.id
            assert st.image_bytes(i) == r.image_bytes
            np.testing.assert_array_equal(st.map("proxy", i), r.proxy)
        # appended samples are whole and right
        extra = st.ids[N0:]
        assert len(extra) % 2 == 0
        for j in range(0, len(extra), 2):
            start = int(extra[j][1:])
            for off, rec in enumerate(make_records(2, seed=start, start=start)):
                i = N0 + j + off
                assert st.ids[i] == rec.id and st.image_bytes(i) == rec.image_bytes
                np.testing.assert_array_equal(st.map("proxy", i), rec.proxy)
        names = [s for s in st.score_names() if s.startswith("t")]
        for name in names:
            k = int(name[1:])
            col = st.score(name)
            m = int(st.score_meta(name)["config"]["k"])
            assert m == k
            # a column made before later appends is NaN for the appended samples
            done = ~np.isnan(col)
            np.testing.assert_array_equal(col[done], _expected(k, int(done.sum())))
            assert (st.selection(f"sel{k}")[done] == (_expected(k, int(done.sum())) > 0.5)).all()
            assert st.has_map(f"ref{k}")[: int(done.sum())].all()
        log = st.run_log()
        assert log[0]["command"] == "test import"
        assert len(log) == 2 + len(names)
        return len(names), n


def _orphan_parts(path: Path) -> bool:
    with MaskStore(path) as st:
        used = {Path(p.filename).name for p in st._parts.values()}
    return any(p.name not in used for p in store.parts_dir(path).glob("*.h5"))


@pytest.mark.slow
def test_kill_minus_nine_at_random_points_never_loses_data(tmp_path: Path) -> None:
    originals = make_records(N0, seed=7)
    path = build(tmp_path / "masks.h5", originals)
    with store.transaction(path, command="setup", config={}) as tx:
        tx.put_scores({"setup": np.zeros(N0)}, config={}, command="setup")
    code = CHILD.format(tests=str(Path(__file__).parent), path=str(path), n0=N0)
    rng = np.random.default_rng(1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    committed = []
    mid_transaction = 0
    for _ in range(24):
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == b"ready", child.stderr.read().decode() if child.stderr else ""
        time.sleep(float(rng.uniform(0.0, 0.25)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL  # it was killed mid-work, not crashed
        # killed inside a write: a root being built, or a part no root refers to yet
        mid_transaction += bool(list(tmp_path.glob("*.partial"))) or _orphan_parts(path)
        k, _ = _check_store(path, originals)
        committed.append(k)
    # the writer made progress between kills, and the store still takes writes
    assert committed[-1] > committed[0]
    assert mid_transaction >= 12, mid_transaction  # most kills land inside a transaction
    with store.transaction(path, command="after", config={}) as tx:
        tx.put_selection("final", np.ones(tx.num_samples), rule={}, command="after")
    with MaskStore(path) as st:
        assert "final" in st.selection_names()
    assert not list(tmp_path.glob("*.partial"))


MIGRATE_CHILD = textwrap.dedent(
    """
    import time
    from salcurate.data import store
    print("ready", flush=True)
    store.migrate({path!r})
    print("done", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_kill_minus_nine_during_migration_never_loses_data(tmp_path: Path) -> None:
    """A v1 store killed at random points of its migration opens with all its data, as v1 or v2."""
    from test_store_v2 import make_v1

    originals = make_records(N0, seed=7)
    v2 = build(tmp_path / "v2.h5", originals)
    with store.transaction(v2, command="setup", config={}) as tx:
        tx.put_scores({"setup": _expected(0, N0)}, config={}, command="setup")
    template = make_v1(v2, tmp_path / "template.h5")
    path = tmp_path / "masks.h5"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = np.random.default_rng(3)
    versions = []
    for _ in range(10):
        store.remove_store(path)
        for extra in tmp_path.glob("masks.h5.v1-backup*"):
            extra.unlink()
        shutil.copyfile(template, path)
        child = subprocess.Popen([sys.executable, "-c", MIGRATE_CHILD.format(path=str(path))],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.0, 0.15)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        with MaskStore(path) as st:
            versions.append(st.schema_version)
            for i, r in enumerate(originals):
                assert st.ids[i] == r.id and st.image_bytes(i) == r.image_bytes
                np.testing.assert_array_equal(st.map("proxy", i), r.proxy)
            np.testing.assert_array_equal(st.score("setup"), _expected(0, N0))
        # the next write finishes (or redoes) the migration and leaves no junk
        with store.transaction(path, command="after", config={}) as tx:
            tx.put_selection("final", np.ones(N0), rule={}, command="after")
        with MaskStore(path) as st:
            assert st.schema_version == 2 and "final" in st.selection_names()
            np.testing.assert_array_equal(st.score("setup"), _expected(0, N0))
        assert not _orphan_parts(path) and not list(tmp_path.glob("*.partial"))
    assert 1 in versions  # some kills landed before the migration committed
