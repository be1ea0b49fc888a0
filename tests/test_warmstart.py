"""Starting SAL-Net from the tag classifier: heads as CAMs (by hand), the background fit, retrain and
score-model with a classifier file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CLASS_NAMES, NUM_CLASSES, assert_fails_one_line, file_digest, invoke

from salcurate.data import store as store_mod
from salcurate.data.store import MaskStore
from salcurate.errors import InputError
from salcurate.nn.cam import background_logit
from salcurate.nn.classifier import TagClassifier, TagClassifierConfig, save_classifier
from salcurate.nn.salnet import ASPP, ClassificationBranch, SALNet, SALNetConfig, init_head_from_cams, preprocess
from salcurate.training import warmstart
from salcurate.training.folds import ScoreModelConfig
from salcurate.training.folds import run as score_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- init_head_from_cams: the head computes (b, w^c . f) -----------------------------------------
def _features(k: int = 4) -> torch.Tensor:
    return torch.rand(2, k, 5, 6, generator=torch.Generator().manual_seed(0))  # >= 0, as ReLU outputs are


@pytest.mark.parametrize("hidden", [0, 6])
def test_aspp_starts_as_the_cam_segmenter(hidden: int) -> None:
    f = _features()
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, 1.0, 3.0]])  # C = 2 classes on K = 4 channels
    aspp = ASPP(4, 3, rates=(1, 2, 3), hidden=hidden).eval()
    init_head_from_cams(aspp, w, background=0.7)
    out = aspp(f)
    by_hand = torch.empty(2, 3, 5, 6)
    by_hand[:, 0] = 0.7
    for c in range(2):
        for y in range(5):
            for x in range(6):
                by_hand[:, 1 + c, y, x] = sum(w[c, k] * f[:, k, y, x] for k in range(4))
    torch.testing.assert_close(out, by_hand, rtol=1e-5, atol=1e-6)


def test_classification_branch_starts_as_the_classifier_logits() -> None:
    f = _features()
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, 1.0, 3.0]])
    branch = ClassificationBranch(4, 2, dilations=(1, 3))
    init_head_from_cams(branch, w)
    maps, logits = branch(f)
    cams = torch.einsum("ck,bkhw->bchw", w, f)
    torch.testing.assert_close(maps, cams, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, cams.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)


def test_the_started_head_still_learns() -> None:
    aspp = ASPP(4, 3, rates=(1, 2))
    init_head_from_cams(aspp, torch.ones(2, 4), background=0.0)
    aspp(_features()).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aspp.parameters())


@pytest.mark.parametrize("head,weight,background,message", [
    (ASPP(4, 3, rates=(1,)), torch.ones(3, 4), 0.0, "class weights of shape (C, K) = (2, 4)"),
    (ASPP(4, 3, rates=(1,)), torch.ones(2, 4), None, "a finite background logit"),
    (ASPP(4, 3, rates=(1,)), torch.ones(2, 4), float("nan"), "a finite background logit"),
    (ClassificationBranch(4, 2), torch.ones(2, 4), 0.5, "no background"),
    (ASPP(4, 3, rates=(1,), hidden=2), torch.ones(2, 4), 0.0, "hidden width 2 is below the backbone's 4"),
    (torch.nn.Conv2d(4, 3, 1), torch.ones(2, 4), 0.0, "expects SAL-Net's ASPP or ClassificationBranch"),
])
def test_init_head_bad_input(head: torch.nn.Module, weight: torch.Tensor, background: float | None,
                             message: str) -> None:
    with pytest.raises(InputError) as err:
        init_head_from_cams(head, weight, background=background)
    assert message in str(err.value)


# -- background_logit -----------------------------------------------------------------------------
def test_background_logit_matches_the_foreground_share() -> None:
    values = np.arange(10.0)
    assert background_logit(values, 0.3) == pytest.approx(6.3)  # numpy's linear 0.7-quantile
    rng = np.random.default_rng(0)
    v = rng.normal(size=10000)
    b = background_logit(v, 0.2)
    assert (v > b).mean() == pytest.approx(0.2, abs=1e-3)


@pytest.mark.parametrize("values,fraction", [(np.array([]), 0.5), (np.array([1.0, np.nan]), 0.5),
                                             (np.arange(3.0), 0.0), (np.arange(3.0), 1.0), (np.arange(3.0), True)])
def test_background_logit_bad_input(values: np.ndarray, fraction: float) -> None:
    with pytest.raises(InputError, match="background_logit expects finite class-map maxima"):
        background_logit(values, fraction)


# -- start_from_classifier on a store -----------------------------------------------------------------
def _classifier(path: Path, *, backbone: str = "resnet18", num_classes: int = NUM_CLASSES,
                input_size: int = 16) -> Path:
    torch.manual_seed(3)
    model = TagClassifier(TagClassifierConfig(backbone=backbone, num_classes=num_classes))
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    names = CLASS_NAMES if num_classes == NUM_CLASSES else ("background", *[f"c{i}" for i in range(num_classes)])
    return save_classifier(path, model, class_names=names,
                           extra={"train_config": {"input_size": input_size, "backbone": backbone}})


def test_header_and_scale(tmp_path: Path) -> None:
    path = _classifier(tmp_path / "pl" / "classifier.pt", input_size=48)
    header = warmstart.classifier_header(path)
    assert header is not None and "state_dict" not in header and warmstart.classifier_input_size(header) == 48
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "backbone.pth")
    assert warmstart.classifier_header(tmp_path / "backbone.pth") is None
    assert warmstart.classifier_header(tmp_path / "missing.pt") is None
    assert warmstart.classifier_scale(48, np.array([100, 120, 90]), np.array([128, 96, 140])) == pytest.approx(48 / 128)


def test_salnet_starts_as_the_classifier(tiny_store: Path, tmp_path: Path) -> None:
    path = _classifier(tmp_path / "classifier.pt")
    torch.manual_seed(0)
    model = SALNet(SALNetConfig(backbone="resnet18", num_classes=NUM_CLASSES, attention="multiply"))
    with MaskStore(tiny_store) as st:
        idx = np.flatnonzero(st.splits == "train")
        kinds = np.array(["proxy"] * len(idx))
        start = warmstart.start_from_classifier(model, path, store=st, indices=idx, label_kinds=kinds, scale=1.0)
        labels = [st.map("proxy", int(i)) for i in idx]
        image = st.image(int(idx[0]))
    valid = np.concatenate([(p != 255).ravel() for p in labels])
    fg = np.concatenate([((p != 0) & (p != 255)).ravel() for p in labels])
    assert start.foreground_fraction == pytest.approx(fg.sum() / valid.sum())
    assert start.images == len(idx) and start.classifier_input_size == 16 and start.classifier == str(path)
    clf = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=NUM_CLASSES))
    clf.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    model.eval(), clf.eval()
    x = preprocess(image)[None]
    with torch.no_grad():
        out, ref = model(x), clf(x)
    torch.testing.assert_close(out.segmentation[:, 1:], ref.cams, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.segmentation[:, 0], torch.full_like(ref.cams[:, 0], start.background_logit),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.classification, ref.logits, rtol=1e-4, atol=1e-4)


def test_start_refuses_another_backbone_or_class_count(tiny_store: Path, tmp_path: Path) -> None:
    model = SALNet(SALNetConfig(backbone="resnet18", num_classes=NUM_CLASSES, attention="off"))
    with MaskStore(tiny_store) as st:
        idx = np.flatnonzero(st.splits == "train")
        kinds = np.array(["proxy"] * len(idx))
        for kw, message in (({"num_classes": 5}, "is a resnet18 of 5 classes; this SAL-Net is a resnet18 of 3"),):
            path = _classifier(tmp_path / "other.pt", **kw)  # type: ignore[arg-type]
            with pytest.raises(InputError, match=message):
                warmstart.start_from_classifier(model, path, store=st, indices=idx, label_kinds=kinds, scale=1.0)


def test_start_needs_foreground_and_background(tiny_store: Path, tmp_path: Path) -> None:
    path = _classifier(tmp_path / "classifier.pt")
    with MaskStore(tiny_store) as st:
        maps = [np.zeros_like(st.map("proxy", i)) for i in range(len(st))]
    with store_mod.transaction(tiny_store, command="test", config={}) as tx:
        tx.put_label_maps("empty", iter(maps), config={}, command="test")
    model = SALNet(SALNetConfig(backbone="resnet18", num_classes=NUM_CLASSES, attention="off"))
    with MaskStore(tiny_store) as st, pytest.raises(InputError, match="have no foreground in their labels"):
        warmstart.start_from_classifier(model, path, store=st, indices=np.arange(len(st)),
                                        label_kinds=np.array(["empty"] * len(st)), scale=1.0)


# -- retrain and score-model with a classifier file ---------------------------------------------------
RETRAIN = ["--backbone", "resnet18", "--attention", "multiply", "--batch-size", "2", "--crop", "24", "--max-iter", "2",
           "--workers", "0", "--no-tensorboard", "--selection", "none"]


def test_retrain_from_a_classifier_records_its_start(tiny_store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    import json

    path = _classifier(tmp_path / "classifier.pt", input_size=16)
    result = invoke(["retrain", tiny_store, "-o", tmp_path / "run", "--backbone-weights", path, "--val-scale", "0.5",
                     *RETRAIN])
    assert result.exit_code == 0, result.output
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["retrain"]
    start = resolved["warm_start"]
    assert start["classifier"] == str(path) and 0 < start["foreground_fraction"] < 1
    assert np.isfinite(start["background_logit"]) and resolved["val_scale"] == 0.5 and resolved["bn_frozen"]
    # the classifier saw 16 px images; these are ~30 px at scales 0.5-1.5: near enough, no warning
    assert "puts objects at sizes its features never saw" not in result.output


def test_retrain_warns_when_far_from_the_classifier_scale(tiny_store: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = _classifier(tmp_path / "classifier.pt", input_size=8)
    with caplog.at_level("WARNING"):
        result = invoke(["retrain", tiny_store, "-o", tmp_path / "run", "--backbone-weights", path,
                         "--scale-min", "2", "--scale-max", "3", *RETRAIN])
    assert result.exit_code == 0, result.output
    assert "puts objects at sizes its features never saw: pass scale_min" in caplog.text + result.output


def test_retrain_bad_inputs_are_one_line(tiny_store: Path, tmp_path: Path) -> None:
    before = file_digest(tiny_store)
    path = _classifier(tmp_path / "classifier.pt", num_classes=5)
    assert_fails_one_line(["retrain", tiny_store, "-o", tmp_path / "a", "--backbone-weights", path, *RETRAIN],
                          "is a resnet18 of 5 classes; this SAL-Net is a resnet18 of 3")
    assert_fails_one_line(["retrain", tiny_store, "-o", tmp_path / "b", "--val-scale", "0", *RETRAIN],
                          "--val-scale must be in (0, 8], got 0.0")
    assert file_digest(tiny_store) == before


def test_score_model_starts_from_the_classifier_at_its_scale(tiny_store: Path, tmp_path: Path) -> None:
    run_folder = tmp_path / "pl"
    path = _classifier(run_folder / "classifier.pt", input_size=16)
    with MaskStore(tiny_store) as st:
        maps = [st.map("proxy", i) for i in range(len(st))]
        longer = np.maximum(st.heights, st.widths)
    with store_mod.transaction(tiny_store, command="test", config={}) as tx:
        tx.put_label_maps("cam", iter(maps), config={"backbone": "resnet18", "output": str(run_folder)},
                          command="pseudo-label")
    res = score_model(ScoreModelConfig(store=str(tiny_store), output=str(tmp_path / "runs"), proxy="cam",
                                       batch_size=2, iterations=2, predict_batch=2, workers=0))
    scale = 16 / float(np.median(longer))
    assert res.scoring["backbone_weights"] == str(path.resolve()) and res.scoring["backbone"] == "resnet18"
    assert res.scoring["scale"] == pytest.approx(scale)
    assert res.scoring["crop"] == max(32, 8 * int(np.ceil(np.median(longer) * scale / 8)))
    import json

    fold = json.loads((Path(res.models[0]).parent / "config.json").read_text())["retrain"]
    assert fold["warm_start"]["classifier"] == str(path.resolve())
    assert fold["scale_min"] == pytest.approx(0.75 * scale) and fold["scale_max"] == pytest.approx(1.25 * scale)
    with MaskStore(tiny_store) as st:
        v = st.score("agree:cam")
        assert np.isfinite(v).all() and ((v >= 0) & (v <= 1)).all()


def test_predicting_at_a_scale_gives_full_size_probabilities() -> None:
    from salcurate.training.folds import padded_size, scaled_size

    np.testing.assert_array_equal(scaled_size(np.array([100, 7]), np.array([60, 30]), 0.5), [[50, 30], [8, 15]])
    np.testing.assert_array_equal(padded_size(np.array([100, 7]), np.array([60, 30]), 0.5), [[64, 32], [16, 16]])
    assert scaled_size(100, 7, 0.5).tolist() == [50, 8]  # one image: the rule retrain and warmstart resize by
    x = torch.rand(3, 10, 12)
    assert F.interpolate(x[None], size=(20, 24), mode="bilinear", align_corners=False).shape == (1, 3, 20, 24)


def test_head_learning_rate_follows_the_start(tmp_path: Path) -> None:
    from salcurate.training.retrain import HEAD_LR_MULT, HEAD_LR_MULT_FROM_CLASSIFIER, RetrainConfig

    path = _classifier(tmp_path / "classifier.pt")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "backbone.pth")
    assert RetrainConfig(backbone_weights=str(path)).resolved().head_lr_mult == HEAD_LR_MULT_FROM_CLASSIFIER == 1
    assert RetrainConfig(backbone_weights=str(tmp_path / "backbone.pth")).resolved().head_lr_mult == HEAD_LR_MULT == 10
    assert RetrainConfig(backbone_weights="none").resolved().head_lr_mult == 10
    assert RetrainConfig(backbone_weights=str(path), head_lr_mult=4.0).resolved().head_lr_mult == 4.0


def test_evaluate_and_predict_work_at_the_model_scale(tiny_store: Path, tmp_path: Path) -> None:
    """A model validated at val_scale s is evaluated and predicted at s times the asked scales."""
    from salcurate.evaluation import inference
    from salcurate.evaluation.evaluate import EvaluateConfig
    from salcurate.evaluation.evaluate import run as evaluate
    from salcurate.evaluation.inference import InferenceConfig, Setting

    path = _classifier(tmp_path / "classifier.pt")
    result = invoke(["retrain", tiny_store, "-o", tmp_path / "run", "--backbone-weights", path, "--val-scale", "0.5",
                     *RETRAIN])
    assert result.exit_code == 0, result.output
    res = evaluate(EvaluateConfig(store=str(tiny_store), model=str(tmp_path / "run"), multiscale=True,
                                  inference=InferenceConfig(scales=(0.5, 1.0)), device="cpu"))
    assert [s.scales for s in res.settings] == [(0.5,), (0.25, 0.5)]
    validated = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["val_miou"]
    assert res.settings[0].miou == pytest.approx(validated, abs=1e-6)  # what retrain's validation measured
    assert inference.model_scale({"retrain": {"val_scale": 0.5}}) == 0.5
    assert inference.model_scale({}) == inference.model_scale({"retrain": {"val_scale": "x"}}) == 1.0
    one = Setting("single-scale", (1.0,), False, False)
    assert inference.at_model_scale([one], 1.0) == [one]
    assert inference.at_model_scale([one], 0.25)[0].scales == (0.25,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_classifier_pass_runs_on_the_training_device(tiny_store: Path, tmp_path: Path) -> None:
    """On a GPU the fit of the background runs there and gives the CPU's start (to float32 rounding)."""
    path = _classifier(tmp_path / "classifier.pt")
    starts, heads = [], []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = SALNet(SALNetConfig(backbone="resnet18", num_classes=NUM_CLASSES, attention="off"))
        with MaskStore(tiny_store) as st:
            idx = np.flatnonzero(st.splits == "train")
            starts.append(warmstart.start_from_classifier(model, path, store=st, indices=idx, scale=1.0,
                                                          label_kinds=np.array(["proxy"] * len(idx)), device=device))
        heads.append(model.aspp.branches[0].weight.detach().clone())
    assert starts[1].background_logit == pytest.approx(starts[0].background_logit, rel=1e-3, abs=1e-4)
    torch.testing.assert_close(heads[0], heads[1])
