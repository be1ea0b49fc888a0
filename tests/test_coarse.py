"""score-coarse over a store: per-sample scoring, resuming after kill -9, equal results."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_demo_store

from salcurate.data.store import MaskStore, copy_store
from salcurate.data.workarea import config_hash
from salcurate.errors import InputError
from salcurate.scoring import metrics, reference
from salcurate.scoring.coarse import COLUMNS, CoarseConfig, Saliency, check_config, run, score_arrays
from salcurate.scoring.metrics import AcFormula
from salcurate.scoring.reference import Threshold


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_store(tmp_path_factory.mktemp("demo"), num_images=48, size=96, seed=3)


def _copy(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / "masks.h5"
    copy_store(src, dst)
    return dst


def test_score_arrays_matches_the_formulas(demo_store: Path) -> None:
    with MaskStore(demo_store) as st:
        image, proxy, sal = st.image(0), st.map("proxy", 0), st.map("saliency", 0)
    edges = metrics.edge_map(image)
    values, h = score_arrays(None, edges, proxy, sal, CoarseConfig())
    b, valid = metrics.foreground(proxy)
    assert h.shape == proxy.shape and h.dtype == bool
    s = sal.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(h, s >= reference.adaptive_threshold(s, method="otsu"))  # the default
    assert values[0] == pytest.approx(metrics.f_measure(h, b, valid=valid))
    assert values[1] == pytest.approx(metrics.objectness(edges, b))
    with_crf_path, h2 = score_arrays(image, edges, proxy, sal, CoarseConfig(saliency="store"))
    np.testing.assert_array_equal(h2, h)  # the shortcut without CRF equals reference_mask(crf=False)
    np.testing.assert_array_equal(h, reference.reference_mask(image, sal, crf=False, threshold="otsu"))


def test_scoring_settings_and_their_hash_are_plain_and_stable() -> None:
    """The saved scoring config holds plain values; its hash names suffixed columns, so it must not
    change for the same settings (stores scored before would otherwise be scored again)."""
    config = CoarseConfig(saliency=Saliency.store)
    assert config.scoring() == {"ac_formula": "standard", "b": 0.1, "crf": False, "saliency": "store",
                                "threshold": "otsu"}
    assert all(type(v) in (str, float, bool) for v in config.scoring().values())
    assert config_hash(config.scoring()) == "45b54c"
    builtin = CoarseConfig(saliency="builtin", b=0.0, workers=3, overwrite=True)  # plain strings work too
    assert builtin.scoring()["max_objects"] == 3 and config_hash(builtin.scoring()) == "3ad810"


@pytest.mark.parametrize(("change", "fragment"), [
    ({"threshold": "nope"}, "threshold must be one of adaptive, otsu, got 'nope'"),
    ({"saliency": "nope"}, "saliency must be one of auto, store, builtin, got 'nope'"),
    ({"ac_formula": "nope"}, "ac_formula must be one of standard, paper, got 'nope'"),
    ({"b": float("nan")}, "b must be a number >= 0"),
    ({"max_objects": 0}, "max_objects must be at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
])
def test_bad_settings_name_their_parameter(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(InputError, match=re.escape(fragment)) as info:
        check_config(CoarseConfig(**change))  # type: ignore[arg-type]
    assert info.value.params == tuple(change)


def test_check_config_turns_choices_into_enums() -> None:
    checked = check_config(CoarseConfig(threshold="adaptive", ac_formula="paper", saliency="builtin"))
    assert (checked.threshold, checked.ac_formula, checked.saliency) == (Threshold.adaptive, AcFormula.paper,
                                                                         Saliency.builtin)


def test_columns_hold_eq3_to_eq5(demo_store: Path, tmp_path: Path) -> None:
    path = _copy(demo_store, tmp_path)
    summary = run(CoarseConfig(store=str(path), workers=1, b=0.3))
    assert summary.computed == 48 and not summary.nothing_to_do
    with MaskStore(path) as st:
        cols = {c: st.score(c).astype(np.float64) for c in COLUMNS}
        np.testing.assert_allclose(cols["ac"], cols["f1"] * cols["f"] ** 0.3, rtol=1e-5)
        np.testing.assert_allclose(cols["sc"], cols["ac"] * cols["cd"], rtol=1e-5)
        np.testing.assert_allclose(cols["cd"], metrics.class_distribution(st.class_histogram("proxy"), st.tags),
                                   rtol=1e-5)
        for c in COLUMNS:
            assert ((cols[c] >= 0) & (cols[c] <= 1)).all()
        assert st.score_meta("sc")["config"]["b"] == 0.3
        assert st.run_log()[-1]["config"]["saliency"] == "store"  # auto resolved
    assert not (path.parent / ".masks.h5.work").exists()  # the work area is gone once committed


def test_killed_run_resumes_and_equals_an_uninterrupted_run(demo_store: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    killed, clean = _copy(demo_store, tmp_path / "a"), _copy(demo_store, tmp_path / "b")
    code = (f"from salcurate.scoring.coarse import CoarseConfig, run\n"
            f"run(CoarseConfig(store={str(killed)!r}, workers=1, batch_size=4, saliency='builtin'))\n")
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    done_file = next_done = None
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until some, not all, samples are done
        found = list((tmp_path / "a").glob(".masks.h5.work/score-coarse-*/done.u8"))
        if found:
            done_file = found[0]
            next_done = int(np.fromfile(done_file, np.uint8).sum())
            if next_done >= 8:
                break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert done_file is not None and 8 <= next_done < 48, next_done
    with MaskStore(killed) as st:
        assert "sc" not in st.score_names()  # nothing half-made reached the store

    resumed = run(CoarseConfig(store=str(killed), workers=1, batch_size=4, saliency="builtin"))
    assert resumed.resumed >= next_done and resumed.computed == 48 - resumed.resumed
    run(CoarseConfig(store=str(clean), workers=1, batch_size=4, saliency="builtin"))
    with MaskStore(killed) as a, MaskStore(clean) as b:
        for c in COLUMNS:
            np.testing.assert_array_equal(a.score(c), b.score(c))
        for i in range(len(a)):
            np.testing.assert_array_equal(a.map("reference", i), b.map("reference", i))
        assert a.score_meta("sc")["config"] == b.score_meta("sc")["config"]


@pytest.mark.slow
def test_two_workers_give_the_same_result_as_one(demo_store: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = _copy(demo_store, tmp_path / "a"), _copy(demo_store, tmp_path / "b")
    run(CoarseConfig(store=str(one), workers=1))
    run(CoarseConfig(store=str(two), workers=2))
    with MaskStore(one) as a, MaskStore(two) as b:
        for c in COLUMNS:
            np.testing.assert_array_equal(a.score(c), b.score(c))


def test_crf_path_runs_end_to_end_on_decoded_images(demo_store: Path, tmp_path: Path) -> None:
    """--crf through score-coarse: images come from Pillow as read-only arrays."""
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (the crf extra) is not installed")
    path = _copy(demo_store, tmp_path)
    run(CoarseConfig(store=str(path), workers=1, crf=True))
    with MaskStore(path) as st:
        sc = st.score("sc")
        assert st.score_meta("sc")["config"]["crf"] is True
        assert np.isfinite(sc).all() and ((sc >= 0) & (sc <= 1)).all()
