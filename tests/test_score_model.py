"""``score-model``: K-fold model agreement (agree, mm, rr) over a store; resume; bad input via the CLI."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_NAMES, assert_ok, file_digest, invoke

from salcurate.data import store as store_mod
from salcurate.data.store import MaskStore, copy_store
from salcurate.data.workarea import ids_fingerprint
from salcurate.errors import InputError, StoreError
from salcurate.events import Events
from salcurate.nn.salnet import read_model_file
from salcurate.scoring.agreement import softmin_pool
from salcurate.training.folds import (
    COLUMNS,
    ScoreModelConfig,
    assign_folds,
    min_proxies,
    run,
    score_image,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(backbone="resnet18", backbone_weights="none", crop=24, batch_size=2, iterations=2, predict_batch=2,
            workers=0)
TINY_ARGS = ["--backbone", "resnet18", "--backbone-weights", "none", "--crop", "24", "--batch-size", "2",
             "--iterations", "2", "--predict-batch", "2"]


def _config(store: Path, out: Path, **kw: object) -> ScoreModelConfig:
    return ScoreModelConfig(store=str(store), output=str(out), **{**TINY, **kw})  # type: ignore[arg-type]


def _put_cam(store: Path, *, run_folder: Path, backbone: str = "resnet18", drop: tuple[int, ...] = ()) -> None:
    """A proxy set ``cam`` (copies of the imported proxies, none for the samples ``drop``) recorded as
    made by pseudo-label in ``run_folder``, which holds its ``classifier.pt`` (random weights)."""
    from salcurate.nn.classifier import TagClassifier, TagClassifierConfig, save_classifier

    model = TagClassifier(TagClassifierConfig(backbone=backbone, num_classes=len(CLASS_NAMES) - 1))
    save_classifier(run_folder / "classifier.pt", model, class_names=CLASS_NAMES,
                    extra={"train_config": {"input_size": 16}})
    with MaskStore(store) as st:
        maps = [None if i in drop else st.map("proxy", i) for i in range(len(st))]
    with store_mod.transaction(store, command="test", config={}) as tx:
        tx.put_label_maps("cam", iter(maps), config={"backbone": backbone, "output": str(run_folder)},
                          command="pseudo-label")


# -- pure pieces ---------------------------------------------------------------------------------
def test_min_proxies() -> None:
    assert min_proxies(2, 2) == 4  # folds of 2 and 2: each model trains on 2
    assert min_proxies(2, 8) == 16
    assert min_proxies(3, 2) == 3  # folds of 1: each model trains on 2
    assert min_proxies(4, 1) == 4  # at least 2 to train on and one per fold


def test_assign_folds_is_balanced_and_seeded() -> None:
    a = assign_folds(7, 3, 0)
    assert a.shape == (7,) and sorted(np.bincount(a).tolist()) == [2, 2, 3]
    np.testing.assert_array_equal(a, assign_folds(7, 3, 0))
    assert any(not np.array_equal(assign_folds(20, 2, s), assign_folds(20, 2, 0)) for s in (1, 2, 3))


def test_score_image_by_hand() -> None:
    probs = np.zeros((4, 2, 2))  # C = 3; the image is tagged with class 1 only: kept 0 and 1
    probs[:, 0, 0] = [0.6, 0.2, 0.1, 0.1]  # kept (0.75, 0.25) -> 0
    probs[:, 0, 1] = [0.1, 0.5, 0.4, 0.0]  # (1/6, 5/6) -> 1
    probs[:, 1, 0] = [0.2, 0.2, 0.6, 0.0]  # (0.5, 0.5) -> 0 (the first)
    probs[:, 1, 1] = [0.0, 0.3, 0.0, 0.7]  # (0, 1) -> 1
    proxy = np.array([[0, 1], [1, 255]], np.uint8)
    saliency = np.array([[255, 255], [0, 0]], np.uint8)  # Otsu: the top row
    tags = np.array([True, False, False])
    agree, mm, rr = score_image(probs, proxy, tags, saliency)
    assert agree == pytest.approx(softmin_pool(np.array([0.75, 5 / 6, 0.5])), rel=1e-6)
    # valid pixels: proxy (0, 1, 1) vs prediction (0, 1, 0): IoU 1/2 for class 0 and for class 1
    assert mm == pytest.approx(0.5)
    assert rr == pytest.approx(1 / 3)  # foreground {(0,1), (1,1)} vs {(0,0), (0,1)}
    _, _, rr_none = score_image(probs, proxy, tags, None)
    assert math.isnan(rr_none)
    # untagged: every class kept, the argmax at (1, 0) is class 2 and the label 1 there has 0.2
    agree_all, _, _ = score_image(probs, proxy, None, saliency)
    assert agree_all == pytest.approx(softmin_pool(np.array([0.6, 0.5, 0.2])), rel=1e-6)


# -- the command ---------------------------------------------------------------------------------
def test_run_scores_every_proxy_with_a_model_that_never_saw_it(tiny_store: Path, tmp_path: Path) -> None:
    res = run(_config(tiny_store, tmp_path / "runs"))
    assert res.columns == {c: c for c in COLUMNS} and not res.nothing_to_do
    assert res.fold_sizes == (3, 3) and res.computed == 6 and res.resumed == 0
    assert len(res.train_loss) == 2 and all(v is not None and math.isfinite(v) for v in res.train_loss)
    with MaskStore(tiny_store) as st:
        for c in COLUMNS:
            v = st.score(c)
            assert v.shape == (6,) and np.isfinite(v).all() and ((v >= 0) & (v <= 1)).all(), (c, v)
            assert st.score_meta(c)["config"] == res.scoring
            assert st.score_meta(c)["command"] == "score-model"
        entry = st.run_log()[-1]
        assert entry["command"] == "score-model" and entry["config"]["fold_sizes"] == [3, 3]
        assert [e["command"] for e in st.run_log()].count("score-model") == 1  # one transaction, no retrain entries
        with_proxy = np.flatnonzero(st.has_map("proxy"))
    folds = assign_folds(len(with_proxy), 2, 0)
    for k, model in enumerate(res.models):
        others = with_proxy[folds != k]  # the fold's model trained on the other fold only
        recipe = read_model_file(Path(model).parent / "checkpoint.pt")["recipe"]
        assert recipe["train_indices"] == ids_fingerprint([str(i) for i in others])
        assert recipe["attention"] == "off" and recipe["max_iter"] == 2
    before = file_digest(tiny_store)
    again = run(_config(tiny_store, tmp_path / "runs"))
    assert again.nothing_to_do and file_digest(tiny_store) == before


def test_other_config_needs_overwrite(tiny_store: Path, tmp_path: Path) -> None:
    run(_config(tiny_store, tmp_path / "runs"))
    before = file_digest(tiny_store)
    with pytest.raises(StoreError, match="exist with another config; pass overwrite"):
        run(_config(tiny_store, tmp_path / "runs", temperature=0.5))
    assert file_digest(tiny_store) == before
    res = run(_config(tiny_store, tmp_path / "runs", temperature=0.5, overwrite=True))
    with MaskStore(tiny_store) as st:
        assert st.score_meta("agree")["config"]["temperature"] == 0.5 == res.scoring["temperature"]


def test_auto_weights_come_from_the_tag_classifier(tiny_store: Path, tmp_path: Path) -> None:
    _put_cam(tiny_store, run_folder=tmp_path / "pl", drop=(2,))
    kw = {**TINY, "backbone": "auto", "backbone_weights": "auto"}
    res = run(ScoreModelConfig(store=str(tiny_store), output=str(tmp_path / "runs"), proxy="cam", **kw))
    assert res.columns == {c: f"{c}:cam" for c in COLUMNS}
    assert res.scoring["backbone"] == "resnet18"
    assert res.scoring["backbone_weights"] == str((tmp_path / "pl" / "classifier.pt").resolve())
    with MaskStore(tiny_store) as st:
        assert {f"{c}:cam" for c in COLUMNS} <= set(st.score_names()) and "agree" not in st.score_names()
        for c in COLUMNS:  # NaN exactly where the set has no proxy
            assert np.isnan(st.score(f"{c}:cam")).tolist() == [i == 2 for i in range(6)]
    assert res.fold_sizes in ((3, 2), (2, 3)) and res.skipped_no_proxy == 1


def test_auto_weights_refuse_another_backbone(tiny_store: Path, tmp_path: Path) -> None:
    _put_cam(tiny_store, run_folder=tmp_path / "pl", backbone="resnet50")
    with pytest.raises(InputError, match="is a resnet50, not a resnet18; pass backbone auto"):
        run(_config(tiny_store, tmp_path / "runs", proxy="cam", backbone_weights="auto"))


class _Crash(Events):
    """Raises once ``advance`` has been called ``after`` times under a bar whose label contains ``where``."""

    def __init__(self, where: str, after: int) -> None:
        self.where, self.after, self.label, self.n = where, after, "", 0

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.label = label

    def advance(self, n: int = 1, **info: object) -> None:
        if self.where in self.label:
            self.n += 1
            if self.n >= self.after:
                raise RuntimeError("power cut")


@pytest.mark.parametrize("where,after", [("fold 1/2 scoring", 1), ("fold 2/2 training", 3)])
def test_a_crashed_run_resumes_and_equals_a_straight_one(tiny_store: Path, tmp_path: Path, where: str,
                                                         after: int) -> None:
    straight = tmp_path / "straight.h5"
    copy_store(tiny_store, straight)
    run(_config(straight, tmp_path / "runs-straight", iterations=4, checkpoint_every=2))
    with pytest.raises(RuntimeError, match="power cut"):
        run(_config(tiny_store, tmp_path / "runs", iterations=4, checkpoint_every=2), events=_Crash(where, after))
    with MaskStore(tiny_store) as st:
        assert "agree" not in st.score_names()  # nothing half-made reached the store
    res = run(_config(tiny_store, tmp_path / "runs", iterations=4, checkpoint_every=2))
    if where.endswith("scoring"):
        assert 1 <= res.resumed <= 2  # the first batch of fold 1 (predict_batch 2)
    else:
        assert res.resumed == 3  # fold 1 (its model and its judgements); fold 2's training resumed at iteration 2
    with MaskStore(tiny_store) as a, MaskStore(straight) as b:
        for c in COLUMNS:
            np.testing.assert_allclose(a.score(c), b.score(c), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_killed_run_resumes(tiny_store: Path, tmp_path: Path) -> None:
    """kill -9 while the fold models train or judge: the store is untouched, a rerun finishes and
    equals an uninterrupted run."""
    clean = tmp_path / "clean.h5"
    copy_store(tiny_store, clean)
    kw = {**TINY, "iterations": 30, "checkpoint_every": 2}
    code = (f"from salcurate.training.folds import ScoreModelConfig, run\n"
            f"run(ScoreModelConfig(store={str(tiny_store)!r}, output={str(tmp_path / 'runs')!r}, **{kw!r}))\n")
    before = file_digest(tiny_store)
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                                                                "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").glob("fold1-*/checkpoint.pt")):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert file_digest(tiny_store) == before
    resumed = run(ScoreModelConfig(store=str(tiny_store), output=str(tmp_path / "runs"), **kw))  # type: ignore[arg-type]
    run(ScoreModelConfig(store=str(clean), output=str(tmp_path / "runs-clean"), **kw))  # type: ignore[arg-type]
    assert resumed.computed + resumed.resumed == 6
    with MaskStore(tiny_store) as a, MaskStore(clean) as b:
        for c in COLUMNS:
            np.testing.assert_allclose(a.score(c), b.score(c), rtol=1e-5, atol=1e-6)


# -- command line --------------------------------------------------------------------------------
def test_cli_score_model_smoke(tiny_store: Path, tmp_path: Path) -> None:
    result = invoke(["score-model", tiny_store, "-o", tmp_path / "runs", *TINY_ARGS])
    assert_ok(result)
    assert "judged 6 proxies with 2 fold models" in result.stdout and "agree, mm, rr" in result.stdout
    result = invoke(["score-model", tiny_store, "-o", tmp_path / "runs", *TINY_ARGS])
    assert_ok(result)
    assert "already complete" in result.stdout


@pytest.fixture
def bare_store(tmp_path: Path) -> Path:
    """Three samples and no proxies."""
    import io

    from PIL import Image

    def record(i: int) -> store_mod.SampleRecord:
        buf = io.BytesIO()
        Image.fromarray(np.full((8 + i, 10, 3), 40 * i, np.uint8)).save(buf, format="PNG")
        return store_mod.SampleRecord(id=f"n{i}", split="train", image_bytes=buf.getvalue(), image_format="PNG",
                                      height=8 + i, width=10)

    out = tmp_path / "bare.h5"
    with store_mod.create_store(out, CLASS_NAMES, command="test", config={}) as w:
        w.append_samples([record(i) for i in range(3)])
    return out


@pytest.mark.parametrize("args,message", [
    (["--folds", "1"], "--folds must be at least 2"),
    (["--scale", "0"], "--scale must be in (0, 8], got 0.0; leave it unset for the tag classifier's"),
    (["--batch-size", "8"], "proxy set 'proxy' has 6 proxies; 2-fold model agreement needs at least 16"),
    (["--folds", "7"], "has 6 proxies; 7-fold model agreement needs at least 7"),
    (["--proxy", "nope"], "no set of proxies named 'nope'"),
    (["--backbone-weights", "/no/such/weights.pth"], "--backbone-weights /no/such/weights.pth: no such file"),
    (["--backbone-weights", "auto"], "--backbone-weights auto starts from the tag classifier that made the proxy "
                                     "set, but proxy set 'proxy' was made by `salcurate import`"),
])
def test_cli_bad_input_is_one_line_and_leaves_the_store(tiny_store: Path, tmp_path: Path, args: list[str],
                                                        message: str) -> None:
    before = file_digest(tiny_store)
    base = ["--backbone", "resnet18", "--crop", "24", "--iterations", "2", "--predict-batch", "2"]
    base += [] if "--backbone-weights" in args else ["--backbone-weights", "none"]
    base += [] if "--batch-size" in args else ["--batch-size", "2"]
    result = invoke(["score-model", tiny_store, "-o", tmp_path / "runs", *base, *args])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert file_digest(tiny_store) == before and not (tmp_path / "runs").exists()


def test_cli_store_without_proxies(bare_store: Path, tmp_path: Path) -> None:
    before = file_digest(bare_store)
    result = invoke(["score-model", bare_store, "-o", tmp_path / "runs", *TINY_ARGS])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "the store has no proxy masks" in err, err
    assert file_digest(bare_store) == before
