"""The per-sample scoring commands under ``torchrun``: ranks share the samples, rank 0 commits.

The sharding helper (``salcurate.data.workarea.shard_work``) in one process, with the barriers
switched off to play several ranks one after the other; then ``score-coarse``, ``score-fine`` and
``score-evidence`` as two gloo processes started by torchrun, whose stores must equal a one-process
run's; and a two-process run killed with SIGKILL that resumes to the same store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import NO_GT_ID, RecordingEvents, TinyVoc, assert_ok, invoke, make_demo_store, voc_args

from salcurate.data import store as store_mod
from salcurate.data import workarea
from salcurate.data.store import MaskStore, copy_store
from salcurate.data.workarea import Shard, shard_work
from salcurate.distributed import BACKEND_ENV, DistInfo, env_info
from salcurate.errors import StoreError
from salcurate.events import Events
from salcurate.nn.classifier import TagClassifier, TagClassifierConfig, save_classifier
from salcurate.nn.scorer import MaskScorer, ScorerConfig, save_checkpoint
from salcurate.scoring.coarse import COLUMNS, CoarseConfig
from salcurate.scoring.coarse import run as coarse_run
from salcurate.scoring.evidence import EvidenceConfig
from salcurate.scoring.evidence import run as evidence_run
from salcurate.scoring.fine import ScoreFineConfig
from salcurate.scoring.fine import run as fine_run

REPO = Path(__file__).resolve().parents[1]
IDS = [f"s{k}" for k in range(7)]
NEEDED = np.array([1, 1, 0, 1, 1, 1, 1], bool)  # s2 has no proxy: never computed



# -- the sharding helper, one process ------------------------------------------------------------
@pytest.fixture
def no_barriers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks played one after the other in this process: nothing to wait for."""
    monkeypatch.setattr(workarea, "barrier", lambda info: None)


def _shard(tmp_path: Path, info: DistInfo | None = None, events: Events | None = None,
           config: dict[str, Any] | None = None) -> Any:
    return shard_work(tmp_path / "masks.h5", "score-x", config or {"k": 1}, ids=IDS, columns=("a", "b"),
                      needed=NEEDED, info=info, events=events, mask_sizes=np.where(NEEDED, 12, 0))


def _write(shard: Shard, indices: Any) -> None:
    for i in indices:
        mask = (np.arange(12) % (i + 2) == 0).reshape(3, 4)
        shard.area.write([i], np.array([[i, -i]], np.float32), masks=[mask])
        shard.advance(1)


def _rank(r: int, world: int) -> DistInfo:
    return DistInfo(rank=r, world=world, local_rank=r, launched=True, local_world=world)


def test_one_process_takes_every_needed_sample_and_resumes(tmp_path: Path) -> None:
    events = RecordingEvents()
    with _shard(tmp_path, events=events) as shard:
        assert shard.main and shard.total == 6 and shard.resumed == 0
        assert shard.todo.tolist() == [0, 1, 3, 4, 5, 6] and shard.mine.tolist() == shard.todo.tolist()
        _write(shard, [0, 4])  # then killed
    assert events.calls == [("start", (6, 0)), ("advance", 1), ("advance", 1)]
    events = RecordingEvents()
    with _shard(tmp_path, events=events) as shard:
        assert shard.resumed == 2 and shard.mine.tolist() == [1, 3, 5, 6]
        _write(shard, shard.mine)
        shard.gather()
        values = shard.area.values()
        np.testing.assert_array_equal(values["a"], [0, 1, np.nan, 3, 4, 5, 6])
        np.testing.assert_array_equal(values["b"], [0, -1, np.nan, -3, -4, -5, -6])
        shard.finish()
    assert events.calls[0] == ("start", (6, 2)) and events.advanced() == 4
    assert not (tmp_path / ".masks.h5.work").exists()  # finish deleted the work area


def test_gather_refuses_a_pass_with_samples_missing(tmp_path: Path) -> None:
    with _shard(tmp_path) as shard:
        _write(shard, [0, 1, 3, 5, 6])
        with pytest.raises(StoreError, match=r"^1 samples have no results in the work area .*score-x-\w+ after every "
                                             r"rank finished \(first: 's4'\); run the command again to compute them$"):
            shard.gather()


def test_two_ranks_split_the_samples_and_rank_0_sees_them_all(tmp_path: Path, no_barriers: None) -> None:
    ev0, ev1 = RecordingEvents(), RecordingEvents()
    with _shard(tmp_path, _rank(0, 2), ev0) as s0, _shard(tmp_path, _rank(1, 2), ev1) as s1:
        assert s0.todo.tolist() == s1.todo.tolist() == [0, 1, 3, 4, 5, 6]
        assert s0.mine.tolist() == [0, 3, 5] and s1.mine.tolist() == [1, 4, 6]
        assert s0.main and not s1.main
        _write(s1, s1.mine)
        _write(s0, s0.mine)
        folder = s0.area.folder
        # one writer per file: rank 0 writes done.u8, columns.f32, masks.bits; rank 1 the same with .1.
        assert np.fromfile(folder / "done.u8", np.uint8).tolist() == [1, 0, 0, 1, 0, 1, 0]
        assert np.fromfile(folder / "done.1.u8", np.uint8).tolist() == [0, 1, 0, 0, 1, 0, 1]
        assert (folder / "masks.1.bits").is_file() and (folder / "columns.1.f32").is_file()
        s1.gather()
        s0.gather()
        for shard in (s0, s1):  # every rank reads every rank's results
            np.testing.assert_array_equal(shard.area.values()["a"], [0, 1, np.nan, 3, 4, 5, 6])
            for i in (1, 3):
                expected = np.packbits((np.arange(12) % (i + 2) == 0))
                np.testing.assert_array_equal(shard.area.packed_mask(i), expected)
        s1.finish()
        assert folder.exists()  # rank 0 deletes it, after its commit
        s0.finish()
        assert not folder.exists()
    assert ev1.calls == []  # only rank 0 reports progress, of every rank's samples
    assert ev0.calls[0] == ("start", (6, 0)) and ev0.advanced() == 6


def test_a_killed_two_rank_run_resumes_with_another_number_of_ranks(tmp_path: Path, no_barriers: None) -> None:
    with _shard(tmp_path, _rank(0, 2)) as s0, _shard(tmp_path, _rank(1, 2)) as s1:
        _write(s0, s0.mine[:1])  # 0
        _write(s1, s1.mine[:2])  # 1, 4; then the job is killed
    with _shard(tmp_path, _rank(0, 3)) as r0, _shard(tmp_path, _rank(1, 3)) as r1, \
            _shard(tmp_path, _rank(2, 3)) as r2:
        assert r0.resumed == 3 and r0.todo.tolist() == [3, 5, 6]
        assert (r0.mine.tolist(), r1.mine.tolist(), r2.mine.tolist()) == ([3], [5], [6])
        for r in (r0, r1, r2):
            _write(r, r.mine)
        for r in (r2, r1, r0):
            r.gather()
        np.testing.assert_array_equal(r0.area.values()["b"], [0, -1, np.nan, -3, -4, -5, -6])
    with _shard(tmp_path) as one:  # and one process finds nothing left to do
        assert one.resumed == 6 and one.todo.tolist() == []
        one.gather()


def test_a_rank_started_with_other_arguments_is_refused(tmp_path: Path, no_barriers: None) -> None:
    with _shard(tmp_path, _rank(0, 2)):
        with pytest.raises(StoreError, match=r"masks.h5: rank 1 found no work area of `salcurate score-x` with its "
                                             r"config \(score-x-\w+\) where rank 0 made one; start every rank with "
                                             r"the same arguments and the same store \(one file system for all "
                                             r"machines\)$"):
            with _shard(tmp_path, _rank(1, 2), config={"k": 2}):
                pass


def test_a_second_run_while_one_holds_the_work_area_is_refused(tmp_path: Path, no_barriers: None) -> None:
    with _shard(tmp_path, _rank(0, 2)):  # rank 0 holds the work area's lock for the whole job
        with pytest.raises(StoreError, match=r"another `salcurate score-x` with this config is running; wait for it"):
            with _shard(tmp_path):
                pass


def test_without_torchrun_nothing_is_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    info = env_info()
    assert not info.enabled and info.main and (info.world, info.local_world) == (1, 1)


# -- the commands under torchrun -----------------------------------------------------------------
def _torchrun(*args: Any, nproc: int = 2, **popen: Any) -> Any:
    """``torchrun --nproc_per_node 2 -m salcurate ARGS`` (or ``SCRIPT.py`` when the first arg is one),
    gloo on the CPU; waits and checks the exit status unless ``popen`` options are given."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop(BACKEND_ENV, None)
    target = [str(args[0])] if str(args[0]).endswith(".py") else ["-m", "salcurate", *(str(a) for a in args)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *target]
    if popen:
        return subprocess.Popen(cmd, env=env, **popen)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def store(tiny_voc: TinyVoc, tmp_path: Path) -> Path:
    """The tiny dataset with tags for every sample (score-coarse needs them for every proxy)."""
    present = [int(k) for k in np.unique(tiny_voc.proxy[NO_GT_ID]) if 1 <= k <= tiny_voc.num_classes]
    with tiny_voc.tags_csv.open("a", encoding="utf-8") as fh:
        fh.write(f"{NO_GT_ID},{' '.join(map(str, present))}\n")
    out = tmp_path / "many" / "masks.h5"
    out.parent.mkdir()
    assert_ok(invoke(voc_args(tiny_voc, out)))
    return out


def _one(path: Path, tmp_path: Path) -> Path:
    """A copy of the store at ``path`` for the one-process run."""
    (tmp_path / "one").mkdir(exist_ok=True)
    return copy_store(path, tmp_path / "one" / path.name)


def _scores(path: Path, names: Any) -> dict[str, np.ndarray]:
    with MaskStore(path) as st:
        return {n: st.score(n) for n in names}


def _assert_same_scores(many: Path, one: Path, names: Any) -> None:
    a, b = _scores(many, names), _scores(one, names)
    for n in names:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)


def _log_commands(path: Path) -> list[str]:
    with MaskStore(path) as st:
        return [e["command"] for e in st.run_log()]


def test_score_coarse_with_two_processes_equals_one(store: Path, tmp_path: Path) -> None:
    one = _one(store, tmp_path)
    before = _log_commands(store)
    proc = _torchrun("score-coarse", store, "--workers", "1")
    assert proc.stdout.count("scored 6 masks") == 1  # rank 0 alone prints
    assert _log_commands(store) == [*before, "score-coarse"]  # one commit
    assert not (store.parent / ".masks.h5.work").exists()
    coarse_run(CoarseConfig(store=str(one), workers=1))
    _assert_same_scores(store, one, COLUMNS)
    with MaskStore(store) as a, MaskStore(one) as b:
        assert a.score_meta("sc")["config"] == b.score_meta("sc")["config"]
        for i in range(len(a)):
            np.testing.assert_array_equal(a.map("reference", i), b.map("reference", i))
    again = _torchrun("score-coarse", store, "--workers", "1")
    assert again.stdout.count("already complete") == 1


def test_score_fine_with_two_processes_equals_one(store: Path, tmp_path: Path, one_torch_thread: None) -> None:
    """Each rank computes on one thread (torchrun's OMP_NUM_THREADS=1), so does the one process: the
    float sums of other thread counts may differ in the last bit."""
    coarse_run(CoarseConfig(store=str(store), workers=1))
    torch.manual_seed(0)
    cfg = ScorerConfig(input_size=32, width=8, channels=12, hidden=6)
    scorer = save_checkpoint(tmp_path / "scorer.pt", MaskScorer(cfg).eval(), cfg, metrics={})
    one = _one(store, tmp_path)
    proc = _torchrun("score-fine", store, "--scorer", scorer, "--batch-size", "2", "--workers", "0",
                     "--device", "cpu")
    assert proc.stdout.count("scored 6 masks on cpu") == 1
    res = fine_run(ScoreFineConfig(store=str(one), scorer=str(scorer), batch_size=2, workers=0, device="cpu"))
    _assert_same_scores(store, one, ("p", "sf"))
    assert np.isfinite(_scores(store, ("p",))["p"]).all() and res.computed == 6
    assert not (store.parent / ".masks.h5.work").exists()


@pytest.mark.slow
def test_score_evidence_with_two_processes_equals_one(store: Path, tmp_path: Path, one_torch_thread: None) -> None:
    torch.manual_seed(0)
    model = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=3))
    rng = np.random.default_rng(1)
    with MaskStore(store) as st:
        shapes, tags, names = list(zip(st.heights, st.widths)), st.tags, tuple(st.class_names)
    classifier = save_classifier(tmp_path / "classifier.pt", model, class_names=names)
    maps = [rng.choice(np.concatenate([[0], np.flatnonzero(t) + 1]), size=(h, w)).astype(np.uint8)
            for (h, w), t in zip(shapes, tags)]
    with store_mod.transaction(store, command="test", config={}) as tx:
        tx.put_label_maps("cam", iter(maps), config={"scales": [1.0], "flip": True, "cam_max_side": 16,
                                                      "input_size": 32}, command="pseudo-label")
    one = _one(store, tmp_path)
    proc = _torchrun("score-evidence", store, "--proxy", "cam", "--classifier", classifier, "--workers", "0",
                     "--device", "cpu")
    assert proc.stdout.count("scored 6 masks on cpu") == 1
    res = evidence_run(EvidenceConfig(store=str(one), proxy="cam", classifier=str(classifier), workers=0,
                                      device="cpu"))
    _assert_same_scores(store, one, res.columns.values())


def _workers_of(pid: int) -> list[int]:
    """The processes torchrun (``pid``) started: its children, read from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers in /proc")
def test_a_killed_two_process_run_resumes_to_the_same_store(tmp_path: Path) -> None:
    demo = make_demo_store(tmp_path / "demo", num_images=24, size=96, seed=3)
    (tmp_path / "many").mkdir()
    killed = copy_store(demo, tmp_path / "many" / "masks.h5")
    one = _one(demo, tmp_path)
    script = tmp_path / "score.py"  # the library: batches of one sample, to kill the ranks between them
    script.write_text("from salcurate.scoring.coarse import CoarseConfig, run\n"
                      f"res = run(CoarseConfig(store={str(killed)!r}, workers=1, batch_size=1, saliency='builtin'))\n"
                      "import os, pathlib\n"  # one file per rank: two ranks printing at once interleave their lines
                      f"pathlib.Path({str(tmp_path)!r}, 'result.' + os.environ['RANK']).write_text("
                      "f'resumed {res.resumed} computed {res.computed}')\n")
    agent = _torchrun(script, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = killed.parent / ".masks.h5.work"
    done = 0
    try:
        deadline = time.time() + 120
        while time.time() < deadline and done < 6:  # some samples done by both ranks, not all
            done = sum(int(np.fromfile(f, np.uint8).sum()) for f in work.glob("score-coarse-*/done*.u8"))
            time.sleep(0.02)
        for pid in _workers_of(agent.pid):
            os.kill(pid, signal.SIGKILL)
    finally:
        agent.kill()
        agent.wait()
    assert 6 <= done < 24, done
    with MaskStore(killed) as st:
        assert "sc" not in st.score_names()  # nothing half-made reached the store
    for old in tmp_path.glob("result.*"):
        old.unlink()
    _torchrun(script)
    resumed = [p.read_text().split() for p in sorted(tmp_path.glob("result.*"))]
    assert len(resumed) == 2  # every rank returns the same result
    assert resumed[0] == resumed[1] and int(resumed[0][1]) >= done and int(resumed[0][3]) == 24 - int(resumed[0][1])
    coarse_run(CoarseConfig(store=str(one), workers=1, saliency="builtin"))
    _assert_same_scores(killed, one, COLUMNS)
    with MaskStore(killed) as a, MaskStore(one) as b:
        for i in range(len(a)):
            np.testing.assert_array_equal(a.map("reference", i), b.map("reference", i))
