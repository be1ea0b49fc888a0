"""Reference reliability ``hr`` (salcurate.scoring.evidence_math.reference_agreement, score-evidence's column).

The IoU of the classifier's foreground (max over the tagged classes' normalized CAMs >= the
background threshold) with the reference H, against a 4x4 example worked out by hand; bad input;
a store scored before ``hr`` existed gets it on the next run, under the same column names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_evidence import CAMS, SAL, TAGS, _cam_set, _classifier, _columns

from salcurate.data.store import MaskStore
from salcurate.errors import InputError
from salcurate.scoring import evidence as ev
from salcurate.scoring.evidence import EvidenceConfig, run
from salcurate.scoring.evidence_math import reference_agreement
from salcurate.scoring.reference import threshold_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# max(A_1, A_2) of test_evidence's example (A_3 untagged, never read):
#   [[1, .5, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1], [.5, 0, 0, 0]]
# at t = 0.45: F = row 0, (1, 0), (1, 2), (2, 3), (3, 0): 8 pixels.  H = rows 2 and 3 (8 pixels).
# F & H = {(2, 3), (3, 0)}: 2; F | H = 8 + 8 - 2 = 14  ->  hr = 1/7.
# at t = 0.6: the two 0.5s drop out: F = 6 pixels, F & H = {(2, 3)}: 1, F | H = 13  ->  hr = 1/13.
H = np.zeros((4, 4), bool)
H[2:] = True


def test_reference_agreement_matches_the_hand_computation() -> None:
    assert reference_agreement(CAMS, TAGS, H, threshold=0.45) == pytest.approx(1 / 7)
    assert reference_agreement(CAMS, TAGS, H, threshold=0.6) == pytest.approx(1 / 13)
    assert reference_agreement(torch.from_numpy(CAMS), torch.from_numpy(TAGS), H, threshold=0.45) == \
        pytest.approx(1 / 7)  # tensors in: the same
    # the saliency map of the example binarized as score-coarse does it (Otsu) is that H
    np.testing.assert_array_equal(threshold_mask(SAL, threshold="otsu"), H)


def test_reference_agreement_edge_cases() -> None:
    fg = (np.maximum(CAMS[0], CAMS[1]) >= 0.45)
    assert reference_agreement(CAMS, TAGS, fg, threshold=0.45) == 1.0  # H is F: full agreement
    assert reference_agreement(CAMS, TAGS, ~fg, threshold=0.45) == 0.0  # disjoint
    assert reference_agreement(np.zeros((3, 4, 4), np.float32), TAGS, np.zeros((4, 4), bool), threshold=0.5) == 1.0
    assert reference_agreement(np.zeros((3, 4, 4), np.float32), TAGS, H, threshold=0.5) == 0.0
    assert math.isnan(reference_agreement(CAMS, np.zeros(3, bool), H, threshold=0.45))  # no tags
    only_untagged = CAMS.copy()
    only_untagged[:2] = 0  # the untagged channel (all 7) is not read
    assert reference_agreement(only_untagged, TAGS, H, threshold=0.45) == 0.0


@pytest.mark.parametrize("args, kw, match", [
    ((CAMS[0], TAGS, H), {"threshold": 0.5}, r"reference_agreement expects \(C, H, W\) float CAMs"),
    ((CAMS, TAGS[:2], H), {"threshold": 0.5}, r"\(C,\) bool tags"),
    ((CAMS, TAGS, H[:3]), {"threshold": 0.5}, r"an \(H, W\) bool reference of the same size"),
    ((CAMS, TAGS, H.astype(np.uint8)), {"threshold": 0.5}, "bool reference"),
    ((CAMS, TAGS, H), {"threshold": 0.0}, r"a threshold in \(0, 1\], got .* and 0.0"),
    ((CAMS, TAGS, H), {"threshold": 1.5}, "proxies' background threshold"),
])
def test_reference_agreement_refuses_bad_input(args: tuple[Any, ...], kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        reference_agreement(*args, **kw)


def test_hr_threshold_comes_from_the_proxy_set(tiny_store: Path, tmp_path: Path) -> None:
    assert ev._cam_settings({"scales": [1.0], "bg_threshold": 0.45}, {})[0]["hr_threshold"] == 0.45
    assert ev._cam_settings(None, {})[0]["hr_threshold"] == ev.DEFAULT_HR_THRESHOLD


def test_a_store_scored_before_hr_gets_it_under_the_same_names(tiny_store: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _cam_set(tiny_store, _classifier(tmp_path / "run" / "classifier.pt"))
    real_scores, real_settings = ev.image_scores, ev._cam_settings
    # the command as it was before hr: six columns, no hr_threshold in the saved config
    monkeypatch.setattr(ev, "COLUMNS", ev.COLUMNS[:6])
    monkeypatch.setattr(ev, "image_scores", lambda *a, hr_threshold=None, **kw: real_scores(*a, **kw)[:6])

    def old_settings(*a: Any) -> Any:
        cam, source = real_settings(*a)
        return {k: v for k, v in cam.items() if k != "hr_threshold"}, source

    monkeypatch.setattr(ev, "_cam_settings", old_settings)
    old = run(EvidenceConfig(store=str(tiny_store), proxy="cam", workers=0))
    assert "hr" not in old.columns
    monkeypatch.undo()
    new = run(EvidenceConfig(store=str(tiny_store), proxy="cam", workers=0))
    assert not new.nothing_to_do and new.computed == 5
    assert new.columns == {c: f"{c}:cam" for c in ev.COLUMNS}  # no suffix: the same settings otherwise
    cols, before = _columns(tiny_store, new.columns), _columns(tiny_store, {"ce": "ce:cam"})
    np.testing.assert_array_equal(cols["ce"], before["ce"])
    hr = cols["hr"][np.isfinite(cols["hr"])]
    assert len(hr) == 5 and ((hr >= 0) & (hr <= 1)).all()
    with MaskStore(tiny_store) as st:
        assert st.score_meta("hr:cam")["config"]["hr_threshold"] == ev.DEFAULT_HR_THRESHOLD
    assert run(EvidenceConfig(store=str(tiny_store), proxy="cam", workers=0)).nothing_to_do
