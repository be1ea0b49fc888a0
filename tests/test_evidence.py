"""score-evidence (salcurate.scoring.evidence): class evidence, tag confidence and reference contrast.

The formulas against a 4x4 example worked out by hand; the pipeline of one image with a fake
classifier whose CAMs are that example; the command on the tiny store with a random ResNet-18
classifier (and once with one that `salcurate pseudo-label` trained); bad input through the CLI.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, NO_GT_ID, RecordingEvents, assert_ok, file_digest, invoke
from torch import nn

from salcurate.data import store as store_mod
from salcurate.data.store import MaskStore, copy_store
from salcurate.errors import InputError, StoreError
from salcurate.nn.classifier import (
    ClassifierOutput,
    TagClassifier,
    TagClassifierConfig,
    load_classifier,
    save_classifier,
)
from salcurate.scoring import evidence as ev
from salcurate.scoring.evidence import EvidenceConfig, image_scores, run
from salcurate.scoring.evidence_math import class_evidence, evidence_score, otsu_separability, tag_confidence

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# -- the hand-worked 4x4 example ------------------------------------------------------------------
#: Proxy: class 1 top left, class 2 top right, background below, one ignore pixel at (2, 3).
L = np.array([[1, 1, 2, 2],
              [1, 1, 2, 2],
              [0, 0, 0, 255],
              [0, 0, 0, 0]], np.uint8)
A1 = np.array([[1, .5, .5, 0],
               [1, 0, 0, 0],
               [0, 0, 0, 1],  # mass on the ignore pixel: neither inside nor outside
               [.5, 0, 0, 0]])
A2 = np.array([[0, .5, 1, 1],
               [0, 0, 1, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 0]])
A3 = np.full((4, 4), 7.0)  # untagged: never read
CAMS = np.stack([A1, A2, A3]).astype(np.float32)
TAGS = np.array([True, True, False])
# class 1: R_1 holds 1 + .5 + 1 + 0 = 2.5 of A_1; A_1 over the non-ignore pixels: 4.5 - 1 = 3.5;
#          A_1 + A_2 over R_1: 1 + 1 + 1 + 0 = 3
# class 2: R_2 holds 1 + 1 + 1 + 0 = 3 of A_2; A_2 in all: 3.5; A_1 + A_2 over R_2: 1.5 + 1 + 1 + 0 = 3.5
INSIDE = np.array([2.5 / 3.5, 3 / 3.5, np.nan])
PURITY = np.array([2.5 / 3, 3 / 3.5, np.nan])
CE = (math.sqrt(5 / 7 * 5 / 6) + 6 / 7) / 2
CE_IN, CE_PURE = 11 / 14, 71 / 84
#: Saliency of three levels: 8 x 0, 4 x 100, 4 x 200.  mu_T = 75, sigma_T^2 = 6875; the best cut
#: (0 | 100, 200) gives sigma_B^2 = (75 x 0.5 - 0)^2 / (0.5 x 0.5) = 5625, so eta = 5625 / 6875 = 9 / 11.
SAL = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [100, 100, 100, 100], [200, 200, 200, 200]], np.uint8)


def test_class_evidence_matches_the_hand_computation() -> None:
    inside, purity = class_evidence(CAMS, L, TAGS)
    np.testing.assert_allclose(inside, INSIDE, rtol=1e-12)
    np.testing.assert_allclose(purity, PURITY, rtol=1e-12)
    ce, ce_in, ce_pure = evidence_score(inside, purity)
    assert ce == pytest.approx(CE) and ce_in == pytest.approx(CE_IN) and ce_pure == pytest.approx(CE_PURE)
    # tensors in, the same numbers out; an untagged channel changes nothing
    other = torch.from_numpy(CAMS).clone()
    other[2] = 100.0
    t_inside, t_purity = class_evidence(other, torch.from_numpy(L), torch.from_numpy(TAGS))
    np.testing.assert_allclose(t_inside, INSIDE, rtol=1e-6)
    np.testing.assert_allclose(t_purity, PURITY, rtol=1e-6)


def test_a_missed_class_scores_zero_and_lowers_the_others_purity() -> None:
    cams = CAMS.copy()
    cams[2] = 0.25  # class 3 tagged, its CAM everywhere, but the proxy has no class-3 region
    inside, purity = class_evidence(cams, L, np.array([1, 1, 1]))
    assert inside[2] == 0 and purity[2] == 0
    assert purity[0] == pytest.approx(2.5 / (3 + 4 * 0.25)) and inside[0] == pytest.approx(2.5 / 3.5)
    ce, _, _ = evidence_score(inside, purity)
    assert ce < CE
    # no CAM mass at all: 0, not NaN
    inside, purity = class_evidence(np.zeros((3, 4, 4), np.float32), L, TAGS)
    np.testing.assert_array_equal(inside[:2], [0, 0])
    np.testing.assert_array_equal(purity[:2], [0, 0])


def test_swapped_labels_give_low_class_evidence() -> None:
    swapped = L.copy()
    swapped[L == 1], swapped[L == 2] = 2, 1  # each region given the other look-alike class
    good, _, _ = evidence_score(*class_evidence(CAMS, L, TAGS))
    bad, _, _ = evidence_score(*class_evidence(CAMS, swapped, TAGS))
    assert bad < 0.25 < 0.75 < good


def test_evidence_score_without_tags_is_nan() -> None:
    inside, purity = class_evidence(CAMS, L, np.zeros(3, bool))
    assert np.isnan(inside).all() and np.isnan(purity).all()
    assert all(math.isnan(v) for v in evidence_score(inside, purity))


@pytest.mark.parametrize("args, match", [
    ((CAMS[0], L, TAGS), r"class_evidence expects \(C, H, W\) float CAMs"),
    ((CAMS, L[:3], TAGS), "integer labels of the same size"),
    ((CAMS, L.astype(np.float32), TAGS), "integer labels"),
    ((CAMS, L, TAGS[:2]), r"\(C,\) bool tags, got float32 array of shape \(3, 4, 4\), uint8 array of shape \(4, 4\)"),
])
def test_class_evidence_refuses_bad_input(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(InputError, match=match):
        class_evidence(*args)


def test_evidence_score_refuses_mismatched_shares() -> None:
    with pytest.raises(InputError, match=r"evidence_score expects inside and purity as \(C,\) shares in \[0, 1\]"):
        evidence_score(np.array([0.5, np.nan]), np.array([0.5, 0.5]))
    with pytest.raises(InputError, match="class_evidence's output"):
        evidence_score(np.array([1.5]), np.array([0.5]))


def test_tag_confidence() -> None:
    probs = np.array([0.9, 0.2, 0.6, 0.1])
    assert tag_confidence(probs, np.array([1, 1, 0, 0], bool)) == (pytest.approx(0.2), pytest.approx(0.6))
    assert tag_confidence(probs, np.ones(4, bool)) == (pytest.approx(0.1), 0.0)  # nothing untagged
    tagp, tagx = tag_confidence(probs, np.zeros(4, bool))
    assert math.isnan(tagp) and tagx == pytest.approx(0.9)
    with pytest.raises(InputError, match=r"tag_confidence expects \(C,\) probabilities in \[0, 1\]"):
        tag_confidence(np.array([0.5, 1.5]), np.array([True, False]))
    with pytest.raises(InputError, match="bool tags"):
        tag_confidence(probs, np.ones(3, bool))


def test_otsu_separability_by_hand() -> None:
    assert otsu_separability(SAL) == pytest.approx(9 / 11)
    assert otsu_separability(SAL.astype(np.float32) / 255) == pytest.approx(9 / 11)  # float maps: the same levels
    two = np.where(np.arange(16).reshape(4, 4) < 5, 30, 220).astype(np.uint8)
    assert otsu_separability(two) == pytest.approx(1.0)  # a two-level map separates perfectly
    assert otsu_separability(np.full((4, 4), 90, np.uint8)) == 0.0  # a constant map separates nothing
    smear = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert 0.5 < otsu_separability(smear) < 0.8  # a uniform ramp: 3/4 in the continuum limit
    for bad in (np.zeros((2, 2, 3), np.uint8), np.zeros((0, 4), np.uint8), np.array([[np.nan, 0.0]]), "map"):
        with pytest.raises(InputError, match=r"otsu_separability expects an \(H, W\) saliency map"):
            otsu_separability(bad)  # type: ignore[arg-type]


# -- one image through the pipeline, with a fake classifier whose CAMs are the example -------------
class _FakeClassifier(nn.Module):
    """CAMs: the example in the top-left 4x4 of any input (multiscale_cams pads 4x4 to 8x8); fixed logits."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits), requires_grad=False)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        cams = torch.zeros(x.shape[0], 3, *x.shape[2:])
        cams[:, :, :4, :4] = torch.from_numpy(CAMS)
        return ClassifierOutput(self.logits.expand(x.shape[0], -1), cams)


def test_image_scores_with_a_known_classifier() -> None:
    logits = [2.0, -1.0, 0.5]  # p = 0.881, 0.269, 0.622
    image = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    values = image_scores(_FakeClassifier(logits).eval(), image, L, TAGS, SAL, scales=(1.0,), flip=False,
                          input_size=4)
    assert values.shape == (7,) and values.dtype == np.float32
    p = 1 / (1 + np.exp(-np.array(logits)))
    # normalizing by each class's maximum (1 + 1e-5 here) leaves both shares as they were
    # hr: max CAM >= 0.15 (the default) is 8 pixels, H (Otsu) rows 2-3, 2 shared: 2 / 14 (test_reliability.py)
    np.testing.assert_allclose(values, [CE, CE_IN, CE_PURE, p[1], p[2], 9 / 11, 1 / 7], rtol=1e-5)
    no_sal = image_scores(_FakeClassifier(logits).eval(), image, L, TAGS, None, scales=(1.0,), flip=False,
                          input_size=4)
    assert math.isnan(no_sal[5]) and math.isnan(no_sal[6]) and np.allclose(no_sal[:5], values[:5])
    with pytest.raises(InputError, match=r"image_scores expects the proxy and the saliency map at the image's size"):
        image_scores(_FakeClassifier(logits), image, L[:3], TAGS, None)


# -- the command on a store -----------------------------------------------------------------------
def _classifier(path: Path, *, seed: int = 0, names: tuple[str, ...] = CLASS_NAMES) -> Path:
    torch.manual_seed(seed)
    model = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=len(names) - 1))
    return save_classifier(path, model, class_names=names)


def _cam_set(store: Path, classifier: Path | None, *, name: str = "cam", command: str = "pseudo-label",
             seed: int = 1) -> list[np.ndarray | None]:
    """A proxy set ``name`` of random labels among each sample's tags, with a pseudo-label-like config."""
    rng = np.random.default_rng(seed)
    with MaskStore(store) as st:
        shapes, tags, has_tags = list(zip(st.heights, st.widths)), st.tags, st.has_tags
    maps: list[np.ndarray | None] = []
    for (h, w), t, has in zip(shapes, tags, has_tags):
        values = np.concatenate([[0], np.flatnonzero(t) + 1])
        maps.append(rng.choice(values, size=(h, w)).astype(np.uint8) if has else None)
    config = {"scales": [1.0, 0.5], "flip": True, "cam_max_side": 16, "input_size": 32}
    if classifier is not None:
        config["classifier"] = str(classifier)
    with store_mod.transaction(store, command="test", config={}) as tx:
        tx.put_label_maps(name, iter(maps), config=config, command=command)
    return maps


@pytest.fixture
def cam_store(tiny_store: Path, tmp_path: Path) -> Path:
    _cam_set(tiny_store, _classifier(tmp_path / "run" / "classifier.pt"))
    return tiny_store



def _columns(store: Path, names: dict[str, str]) -> dict[str, np.ndarray]:
    with MaskStore(store) as st:
        return {k: st.score(v) for k, v in names.items()}


def test_run_writes_the_columns_with_their_config(cam_store: Path) -> None:
    events = RecordingEvents()
    res = run(EvidenceConfig(store=str(cam_store), proxy="cam", workers=0), events=events)
    assert res.columns == {c: f"{c}:cam" for c in ("ce", "ce_in", "ce_pure", "tagp", "tagx", "rc", "hr")}
    assert res.computed == 5 and res.resumed == 0 and res.skipped_no_proxy == 1 and res.device == "cpu"
    assert res.images_per_s is not None and res.images_per_s > 0
    assert ("start", (5, 0)) in events.calls and [c for c in events.calls if c[0] == "advance"] == [("advance", 1)] * 5
    cols = _columns(cam_store, res.columns)
    with MaskStore(cam_store) as st:
        no_proxy = st.ids.index(NO_GT_ID)
        meta = st.score_meta("ce:cam")
        entry = st.run_log()[-1]
        tags, image, labels, sal = st.tags[0], st.image(0), st.map("cam", 0), st.map("saliency", 0)
    for name, v in cols.items():
        assert np.isnan(v[no_proxy]), name
        rest = np.delete(v, no_proxy)
        assert np.isfinite(rest).all() and ((rest >= 0) & (rest <= 1)).all(), name
    ce, ce_in, ce_pure = (np.delete(cols[k], no_proxy) for k in ("ce", "ce_in", "ce_pure"))
    assert (ce <= np.sqrt(ce_in * ce_pure) + 1e-6).all()  # Cauchy-Schwarz: mean sqrt(ab) <= sqrt(mean a mean b)
    # the settings came from the proxy set's config and are saved with the columns and in the log
    config = meta["config"]
    assert meta["command"] == "score-evidence" and config["cam_settings_from"] == "proxy set"
    assert config["scales"] == [1.0, 0.5] and config["cam_max_side"] == 16 and config["input_size"] == 32
    assert len(config["classifier_sha256"]) == 16 and config["proxy"] == "cam"
    assert entry["command"] == "score-evidence" and entry["config"]["columns"] == res.columns
    # the stored values are image_scores's
    model, _ = load_classifier(res.classifier)
    direct = image_scores(model, image, labels, tags, sal, scales=(1.0, 0.5), flip=True, cam_max_side=16,
                          input_size=32)
    np.testing.assert_allclose([cols[k][0] for k in ev.COLUMNS], direct, rtol=1e-5)
    assert not list(cam_store.parent.glob(".*.work"))  # the work area is gone
    # the same config again: nothing to do, store unchanged
    before = file_digest(cam_store)
    again = run(EvidenceConfig(store=str(cam_store), proxy="cam", workers=0))
    assert again.nothing_to_do and again.computed == 0 and file_digest(cam_store) == before


def test_killed_run_resumes_to_the_same_columns(cam_store: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tmp_path / "whole.h5"
    copy_store(cam_store, whole)
    expected = _columns(whole, run(EvidenceConfig(store=str(whole), proxy="cam", workers=0)).columns)

    real, calls = ev.image_scores, []

    def killed(*args: Any, **kw: Any) -> np.ndarray:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(ev, "image_scores", killed)
    before = file_digest(cam_store)
    with pytest.raises(KeyboardInterrupt):
        run(EvidenceConfig(store=str(cam_store), proxy="cam", workers=0))
    assert file_digest(cam_store) == before  # nothing reached the store
    monkeypatch.setattr(ev, "image_scores", real)
    res = run(EvidenceConfig(store=str(cam_store), proxy="cam", workers=0))
    assert res.resumed == 2 and res.computed == 3
    got = _columns(cam_store, res.columns)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


def test_another_classifier_gets_suffixed_columns_or_overwrites(cam_store: Path, tmp_path: Path) -> None:
    first = run(EvidenceConfig(store=str(cam_store), proxy="cam", workers=0))
    other = _classifier(tmp_path / "other.pt", seed=5)
    res = run(EvidenceConfig(store=str(cam_store), proxy="cam", classifier=str(other), workers=0))
    assert res.columns["ce"].startswith("ce:cam@") and res.classifier == str(other)
    assert res.scoring["classifier_sha256"] != first.scoring["classifier_sha256"]
    with MaskStore(cam_store) as st:
        assert {"ce:cam", res.columns["ce"]} <= set(st.score_names())
    again = run(EvidenceConfig(store=str(cam_store), proxy="cam", classifier=str(other), workers=0, overwrite=True))
    assert again.columns["ce"] == "ce:cam" and not again.nothing_to_do
    with MaskStore(cam_store) as st:
        assert st.score_meta("ce:cam")["config"]["classifier_sha256"] == res.scoring["classifier_sha256"]


def test_a_set_without_a_config_uses_the_classifier_files_settings_or_one_scale(tiny_store: Path,
                                                                               tmp_path: Path) -> None:
    clf = _classifier(tmp_path / "c.pt")
    _cam_set(tiny_store, None, name="plain", command="test")
    res = run(EvidenceConfig(store=str(tiny_store), classifier=str(clf), workers=0, proxy="plain"))
    assert res.columns["ce"] == "ce:plain" and res.scoring["cam_settings_from"] == "default"
    assert res.scoring["scales"] == [1.0] and res.scoring["flip"] is True and res.scoring["cam_max_side"] is None
    assert res.computed == 5
    # a classifier file that pseudo-label wrote carries its training config: its CAM settings come from there
    torch.manual_seed(0)
    model = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=3))
    trained = save_classifier(tmp_path / "t.pt", model, class_names=CLASS_NAMES,
                              extra={"train_config": {"scales": [1.0, 2.0], "flip": False, "input_size": 24}})
    res = run(EvidenceConfig(store=str(tiny_store), classifier=str(trained), workers=0, proxy="plain"))
    assert res.scoring["cam_settings_from"] == "classifier" and res.columns["ce"].startswith("ce:plain@")
    assert res.scoring["scales"] == [1.0, 2.0] and res.scoring["flip"] is False and res.scoring["input_size"] == 24


# -- end to end with pseudo-label --------------------------------------------------------------
def test_cli_after_pseudo_label_finds_its_classifier(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert_ok(invoke(["pseudo-label", tiny_store, "-o", out, "--backbone", "resnet18", "--backbone-weights", "none",
                      "--input-size", "32", "--epochs", "1", "--batch-size", "2", "--scales", "1.0", "--workers", "0",
                      "--refine", "none"]))
    result = invoke(["score-evidence", tiny_store, "--proxy", "cam", "--workers", "0"])
    assert_ok(result)
    assert "scored 5 masks on" in result.stdout and str(out / "classifier.pt") in result.stdout
    assert "ce:cam" in result.stdout and "images/s" in result.stdout
    with MaskStore(tiny_store) as st:
        meta = st.score_meta("ce:cam")["config"]
        assert meta["classifier"] == str(out / "classifier.pt") and meta["cam_settings_from"] == "proxy set"
        assert meta["input_size"] == 32 and np.isfinite(st.score("ce:cam")[st.has_map("cam")]).all()
    again = invoke(["score-evidence", tiny_store, "--proxy", "cam", "--workers", "0"])
    assert_ok(again)
    assert "already complete" in again.stdout


# -- bad input: one line, exit 2, store unchanged ----------------------------------------------
def _refused(args: list[Any], store: Path) -> str:
    before = file_digest(store)
    result = invoke(args)
    assert result.exit_code == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: ")
    assert file_digest(store) == before
    return line


def test_cli_a_set_without_classifier_says_which_command_makes_one(cam_store: Path) -> None:
    line = _refused(["score-evidence", cam_store], cam_store)  # the default set: the imported one
    assert "the set of proxies 'proxy' was not made by `salcurate pseudo-label`" in line
    assert "make a set with `salcurate pseudo-label` or pass that network's classifier.pt with --classifier" in line
    assert "sets made by it: cam" in line


def test_cli_a_missing_classifier_file(cam_store: Path, tmp_path: Path) -> None:
    line = _refused(["score-evidence", cam_store, "--proxy", "cam", "--classifier", tmp_path / "nope.pt"], cam_store)
    assert f"{tmp_path / 'nope.pt'} not found; pass with --classifier the classifier.pt" in line
    (tmp_path / "run" / "classifier.pt").unlink()  # the one the set names
    line = _refused(["score-evidence", cam_store, "--proxy", "cam"], cam_store)
    assert "classifier.pt `salcurate pseudo-label` made the set of proxies 'cam' with) not found" in line
    assert "pass its new place with --classifier" in line


def test_cli_a_classifier_of_other_classes(cam_store: Path, tmp_path: Path) -> None:
    other = _classifier(tmp_path / "o.pt", names=("background", "widget", "sprocket", "gizmo"))
    line = _refused(["score-evidence", cam_store, "--proxy", "cam", "--classifier", other], cam_store)
    assert "its classes do not match the store's (class 2 is 'sprocket' there and 'gadget' in the store)" in line
    fewer = _classifier(tmp_path / "f.pt", names=("background", "widget"))
    line = _refused(["score-evidence", cam_store, "--proxy", "cam", "--classifier", fewer], cam_store)
    assert "1 foreground classes, the store 3" in line
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a model")
    line = _refused(["score-evidence", cam_store, "--proxy", "cam", "--classifier", bogus], cam_store)
    assert "is not a tag classifier file" in line


def test_cli_other_bad_input(cam_store: Path) -> None:
    line = _refused(["score-evidence", cam_store, "--proxy", "nope"], cam_store)
    assert "no set of proxies named 'nope'" in line
    if not torch.cuda.is_available():
        line = _refused(["score-evidence", cam_store, "--proxy", "cam", "--device", "cuda"], cam_store)
        assert "no CUDA GPU" in line


def test_library_errors_name_parameters(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="was not made by `salcurate pseudo-label`") as err:
        run(EvidenceConfig(store=str(tiny_store)))
    assert err.value.params == ("classifier",)
    with pytest.raises(InputError, match="workers must be 0") as err2:
        run(EvidenceConfig(store=str(tiny_store), workers=-1))
    assert err2.value.params == ("workers",)
    # a proxy on a sample without tags: the class evidence needs the tags
    with MaskStore(tiny_store) as st:
        shapes = list(zip(st.heights, st.widths))
    with store_mod.transaction(tiny_store, command="test", config={}) as tx:
        tx.put_label_maps("all", iter([np.zeros(s, np.uint8) for s in shapes]), config={}, command="test")
    with pytest.raises(StoreError, match=r"1 samples with a proxy mask have no image tags \(first: 's006'\)"):
        run(EvidenceConfig(store=str(tiny_store), proxy="all", classifier=str(_classifier(tmp_path / "c.pt"))))
