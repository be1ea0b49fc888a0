"""``evaluate`` and ``predict``: the library (with a fake model in place of SAL-Net), the result
tables (JSON, Markdown), the CLI, and the bad-input messages.  The tests at the end build a
real (random, resnet18) SAL-Net checkpoint when ``salcurate.nn.salnet`` is there."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, NO_GT_ID, TinyVoc, assert_ok, invoke, voc_args
from PIL import Image
from torch import nn
from typer.testing import Result

from salcurate.errors import InputError, StoreError
from salcurate.evaluation import evaluate as ev
from salcurate.evaluation import inference as inf
from salcurate.evaluation import predict as pr
from salcurate.evaluation.inference import InferenceConfig
from salcurate.events import Events
from salcurate.imageio import read_label_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")
K = len(CLASS_NAMES)
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def normalise(image: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - MEAN) / STD


class Out(NamedTuple):
    segmentation: torch.Tensor
    classification: torch.Tensor | None
    attended: torch.Tensor


class ConstantNet(nn.Module):
    """Predicts class ``label`` everywhere, at stride 8."""

    def __init__(self, label: int, num_outputs: int = K) -> None:
        super().__init__()
        self.label, self.num_outputs = label, num_outputs

    def forward(self, x: torch.Tensor) -> Out:
        b, _, h, w = x.shape
        logits = torch.zeros(b, self.num_outputs, -(-h // 8), -(-w // 8))
        logits[:, self.label] = 6.0
        return Out(logits, None, logits)


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace the SAL-Net loader: every model path gives ConstantNet(0) with the tiny class
    names; tests change ``fake["net"]`` / ``fake["class_names"]``; loaded paths are recorded."""
    fake: dict[str, Any] = {"net": ConstantNet(0), "class_names": list(CLASS_NAMES), "loaded": []}

    def load(path: str | Path, *, device: Any) -> tuple[nn.Module, dict[str, Any], Any]:
        fake["loaded"].append((str(path), str(device)))
        return fake["net"], {"class_names": fake["class_names"], "config": {"backbone": "fake"}}, normalise

    monkeypatch.setattr(inf, "load_segmentation_model", load)
    return fake


class Recorder(Events):
    """The events a command sends: ``started`` totals, ``ticks`` advances."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ticks: list[int] = []

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.started.append(total)

    def advance(self, n: int = 1, **info: Any) -> None:
        self.ticks.append(n)


def flat(text: str) -> str:
    return " ".join(text.split())


def assert_error(result: Result, *fragments: str) -> None:
    """Non-zero exit and one ``error:`` line holding every fragment, no traceback."""
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def background_expectation(voc: TinyVoc, ids: list[str]) -> tuple[np.ndarray, float]:
    """IoU per class and pixel accuracy when everything is predicted background, by hand."""
    counts = np.zeros(K, np.int64)
    for i in ids:
        g = voc.gt[i]
        counts += np.bincount(g[g != 255], minlength=K)
    iou = np.full(K, np.nan)
    iou[0] = counts[0] / counts.sum()  # TP = gt background; union = all counted pixels
    iou[1:][counts[1:] > 0] = 0.0
    return iou, counts[0] / counts.sum()


def config(store: Path, **kwargs: Any) -> ev.EvaluateConfig:
    kwargs.setdefault("device", "cpu")
    return ev.EvaluateConfig(store=str(store), model="fake.pt", **kwargs)


# -- settings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("multiscale", "flip", "crf", "names"), [
    (True, False, False, ["single-scale", "multi-scale"]),
    (True, True, True, ["single-scale", "multi-scale + flip", "multi-scale + flip + CRF"]),
    (False, False, False, ["single-scale"]),
    (False, False, True, ["single-scale", "single-scale + CRF"]),
    (False, True, False, ["single-scale", "single-scale + flip"]),
])
def test_settings_for(multiscale: bool, flip: bool, crf: bool, names: list[str]) -> None:
    settings = inf.settings_for(multiscale=multiscale, flip=flip, crf=crf, scales=(0.5, 0.75, 1.0))
    assert [s.name for s in settings] == names
    assert settings[0].passes == [(1.0, False)]
    if multiscale and flip:
        assert settings[1].passes == [(0.5, False), (0.5, True), (0.75, False), (0.75, True), (1.0, False), (1.0, True)]


def test_settings_for_error() -> None:
    with pytest.raises(InputError, match="expected a non-empty list of scales, got"):
        inf.settings_for(multiscale=True, flip=False, crf=False, scales=())


# -- evaluate.run with a fake model --------------------------------------------------------------------
def test_evaluate_store_by_hand(tiny_store: Path, tiny_voc: TinyVoc, fake_model: dict[str, Any]) -> None:
    events = Recorder()
    res = ev.run(config(tiny_store, split="train"), events=events)
    started, ticks = events.started, events.ticks
    ids = tiny_voc.splits["train"]
    iou, accuracy = background_expectation(tiny_voc, ids)
    assert started == [4] and ticks == [1] * 4 and res.num_images == 4
    assert [s.name for s in res.settings] == ["single-scale", "multi-scale"]
    assert res.labels == ("bk", "widget", "gadget", "gizmo") and res.order == (0, 1, 2, 3)
    for s in res.settings:
        assert s.confusion.shape == (K, K) and s.confusion[:, 1:].sum() == 0  # all predicted background
        np.testing.assert_allclose(s.iou, iou)
        assert s.miou == pytest.approx(np.nanmean(iou)) and s.pixel_accuracy == pytest.approx(accuracy)
        assert s.num_images == 4 and s.seconds_per_image > 0
    assert res.settings[1].scales == (0.5, 0.75, 1.0)
    assert res.config["model"] == "fake.pt" and res.config["settings"] == ["single-scale", "multi-scale"]
    assert res.model_info["class_names"] == list(CLASS_NAMES) and res.device == "cpu"


def test_evaluate_store_perfect_class_and_limit(tiny_store: Path, tiny_voc: TinyVoc,
                                                fake_model: dict[str, Any]) -> None:
    fake_model["net"] = ConstantNet(2)
    res = ev.run(config(tiny_store, split="train", limit=1, multiscale=False))
    assert res.num_images == 1 and len(res.settings) == 1
    g = tiny_voc.gt[tiny_voc.splits["train"][0]]
    g = g[g != 255]
    assert res.settings[0].pixel_accuracy == pytest.approx(np.mean(g == 2))
    assert res.settings[0].iou[2] == pytest.approx(np.mean(g == 2))


def test_evaluate_store_with_crf_and_saved_masks(tiny_store: Path, tmp_path: Path, fake_model: dict[str, Any]) -> None:
    pytest.importorskip("pydensecrf.densecrf")
    fake_model["net"] = ConstantNet(3)
    masks = tmp_path / "masks" / "val"
    res = ev.run(config(tiny_store, inference=InferenceConfig(flip=True, crf=True), save_masks=str(masks)))
    assert [s.name for s in res.settings] == ["single-scale", "multi-scale + flip", "multi-scale + flip + CRF"]
    assert res.num_images == 1  # val: s005 (s006 has no ground truth)
    saved = read_label_png(masks / "s005.png")
    assert saved.shape == (32, 24) and (saved == 3).all()
    assert Image.open(masks / "s005.png").mode == "P"
    assert res.masks_dir == str(masks)
    crf = res.settings[-1]
    assert crf.seconds_per_image >= res.settings[1].seconds_per_image  # includes the passes it refines


def test_class_names_must_match_the_store(tiny_store: Path, fake_model: dict[str, Any]) -> None:
    fake_model["class_names"] = ["background", "widget", "doohickey", "gizmo"]
    with pytest.raises(InputError, match=r"the class names of model fake.pt differ from those of store .*tiny.h5 "
                                         r"\(class 2 is 'doohickey' in the model and 'gadget' in the store\)"):
        ev.run(config(tiny_store))
    fake_model["class_names"] = ["background", "widget"]
    with pytest.raises(InputError, match=r"\(2 classes in the model, 4 in the store\)"):
        ev.run(config(tiny_store))


def test_model_with_wrong_output_channels(tiny_store: Path, fake_model: dict[str, Any]) -> None:
    fake_model["net"] = ConstantNet(0, num_outputs=K + 1)
    with pytest.raises(InputError, match="the model predicts 5 classes but its class list has 4"):
        ev.run(config(tiny_store))


@pytest.fixture
def store_with_a_split_without_gt(tiny_voc: TinyVoc, tmp_path: Path) -> Path:
    tiny_voc.split_file("nogt").write_text(f"{NO_GT_ID}\n", encoding="utf-8")
    out = tmp_path / "nogt.h5"
    assert_ok(invoke(voc_args(tiny_voc, out, splits=("train", "nogt"))))
    return out


def test_split_without_ground_truth(store_with_a_split_without_gt: Path, fake_model: dict[str, Any]) -> None:
    with pytest.raises(StoreError, match=r"split 'nogt' has no samples with ground truth; splits with ground truth: "
                                         r"train \(4\); pass split"):
        ev.run(config(store_with_a_split_without_gt, split="nogt"))
    with pytest.raises(StoreError, match=r"no split 'val' in the store \(it has: nogt, train\)"):
        ev.run(config(store_with_a_split_without_gt, split="val"))
    assert fake_model["loaded"] == []  # the store is checked before the model is loaded


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"limit": 0}, r"limit must be a whole number >= 1, got 0"),
    ({"device": "tpu"}, r"device must be auto, cpu or cuda, got 'tpu'"),
])
def test_evaluate_config_errors(tiny_store: Path, fake_model: dict[str, Any], kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ev.run(config(tiny_store, **kwargs))


def test_save_masks_path_that_is_a_file(tiny_store: Path, tmp_path: Path, fake_model: dict[str, Any]) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"save_masks .*f exists and is not a folder"):
        ev.run(config(tiny_store, save_masks=str(tmp_path / "f")))


def test_missing_model_file_with_the_real_loader(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"model .*nope.pt not found; pass a model file \(or run folder\) "
                                         r"written by `salcurate retrain`"):
        ev.run(ev.EvaluateConfig(store=str(tiny_store), model=str(tmp_path / "nope.pt"), device="cpu"))
    with pytest.raises(InputError, match=r"model .* is a folder without model.pt; pass a model file \(or run folder\)"):
        ev.run(ev.EvaluateConfig(store=str(tiny_store), model=str(tmp_path), device="cpu"))


# -- JSON and Markdown -----------------------------------------------------------------------------------
def test_to_json_and_markdown(tiny_store: Path, tiny_voc: TinyVoc, fake_model: dict[str, Any]) -> None:
    res = ev.run(config(tiny_store, split="train"))
    iou, _ = background_expectation(tiny_voc, tiny_voc.splits["train"])
    data = ev.to_json(res)
    text = json.dumps(data, allow_nan=False)  # NaN became None
    assert json.loads(text) == data
    assert data["classes"] == ["bk", "widget", "gadget", "gizmo"] and data["num_images"] == 4
    s = data["settings"][0]
    assert s["name"] == "single-scale" and s["miou"] == pytest.approx(np.nanmean(iou))
    expected_iou = {label: (None if math.isnan(v) else pytest.approx(v)) for label, v in zip(data["classes"], iou)}
    assert s["per_class_iou"] == expected_iou
    assert np.array(s["confusion_matrix"]).shape == (K, K)
    assert data["config"]["split"] == "train" and data["config"]["inference"]["crf_bilateral_srgb"] == 13
    assert data["model"]["config"] == {"backbone": "fake"}

    md = ev.to_markdown(res).splitlines()
    assert md[2] == "| setting | bk | widget | gadget | gizmo | mIoU |"
    assert md[3] == "| :-- | --: | --: | --: | --: | --: |"
    cells = [("-" if math.isnan(v) else f"{100 * v:.1f}") for v in iou]
    assert md[4] == f"| single-scale | {' | '.join(cells)} | {100 * np.nanmean(iou):.1f} |"
    assert md[5].startswith("| multi-scale | ") and len(md) == 6


def test_result_functions_reject_other_objects() -> None:
    with pytest.raises(InputError, match="expected an EvaluationResult from salcurate.evaluation.evaluate.run"):
        ev.to_markdown({})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expected an EvaluateConfig, got dict"):
        ev.run({})  # type: ignore[arg-type]


# -- predict.run ---------------------------------------------------------------------------------------
def write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in (("a.png", (20, 28)), ("b.jpg", (17, 9))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths


def predict_config(images: list[Path], output: Path, **kwargs: Any) -> pr.PredictConfig:
    return pr.PredictConfig(model="fake.pt", images=tuple(map(str, images)), output=str(output), **kwargs)


def test_predict_images(tmp_path: Path, fake_model: dict[str, Any]) -> None:
    fake_model["net"] = ConstantNet(1)
    images = write_images(tmp_path / "in")
    events = Recorder()
    res = pr.run(predict_config(images, tmp_path / "out", device="cpu"), events=events)
    ticks = events.ticks
    assert res.written == 2 and res.setting == "multi-scale" and ticks == [1, 1]
    a, b = read_label_png(tmp_path / "out/a.png"), read_label_png(tmp_path / "out/b.png")
    assert a.shape == (20, 28) and b.shape == (17, 9) and (a == 1).all() and (b == 1).all()
    record = json.loads((tmp_path / "out/predict.json").read_text())
    assert record["config"]["setting"] == "multi-scale" and record["class_names"] == list(CLASS_NAMES)
    # a folder works as well as its files
    res = pr.run(predict_config([tmp_path / "in"], tmp_path / "out2", multiscale=False, device="cpu"))
    assert res.written == 2 and res.setting == "single-scale" and (tmp_path / "out2/b.png").exists()


def test_predict_images_errors(tmp_path: Path, fake_model: dict[str, Any]) -> None:
    images = write_images(tmp_path / "in")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no images given; pass image files"):
        pr.run(predict_config([], out, device="cpu"))
    with pytest.raises(InputError, match=r"image .*missing.jpg not found"):
        pr.run(predict_config([*images, tmp_path / "missing.jpg"], out, device="cpu"))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"bad.jpg: expected a readable image, but it does not decode"):
        pr.run(predict_config([*images, tmp_path / "bad.jpg"], out, device="cpu"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other/a.jpg").write_bytes((tmp_path / "in/b.jpg").read_bytes())
    with pytest.raises(InputError, match=r"a.png and .*a.jpg would both be written to .*a.png"):
        pr.run(predict_config([images[0], tmp_path / "other/a.jpg"], out, device="cpu"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"output .*file exists and is not a folder"):
        pr.run(predict_config(images, tmp_path / "file"))
    assert fake_model["loaded"] == [] and not (tmp_path / "out").exists()  # nothing ran, nothing written


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_evaluate_prints_table_and_writes_files(tiny_store: Path, tmp_path: Path,
                                                    fake_model: dict[str, Any]) -> None:
    j, md = tmp_path / "r/eval.json", tmp_path / "r/eval.md"
    result = invoke(["evaluate", tiny_store, "--model", "fake.pt", "--split", "train", "--device", "cpu",
                     "--scales", "0.5,1", "--json", j, "--markdown", md])
    assert_ok(result)
    text = flat(result.stdout)
    assert "fake.pt on train (4 images, cpu): IoU (%)" in text
    for fragment in ("single-scale", "multi-scale", "widget", "mIoU", "pixel accuracy", "written:"):
        assert fragment in text
    data = json.loads(j.read_text())
    assert data["config"]["inference"]["scales"] == [0.5, 1.0] and len(data["settings"]) == 2
    assert md.read_text().splitlines()[2].startswith("| setting | bk | widget")


def test_cli_evaluate_no_multi_scale(tiny_store: Path, fake_model: dict[str, Any]) -> None:
    result = invoke(["evaluate", tiny_store, "--model", "fake.pt", "--no-multi-scale", "--device", "cpu"])
    assert_ok(result)
    assert "multi-scale" not in result.stdout and "single-scale" in result.stdout


@pytest.mark.parametrize(("args", "fragments"), [
    ([], ["no model given; pass the SAL-Net model file with --model PATH"]),
    (["--model", "fake.pt", "--scales", "0.5,x"],
     ["--scales expects numbers separated by commas like 0.5,0.75,1.0, got '0.5,x'"]),
    (["--model", "fake.pt", "--scales", "0,1"], ["scales must be numbers in (0, 8]"]),
    (["--model", "fake.pt", "--split", "test"], ["no split 'test' in the store (it has: train, val)"]),
])
def test_cli_evaluate_errors(tiny_store: Path, fake_model: dict[str, Any], args: list[str],
                             fragments: list[str]) -> None:
    assert_error(invoke(["evaluate", tiny_store, "--device", "cpu", *args]), *fragments)


def test_cli_evaluate_split_without_ground_truth(store_with_a_split_without_gt: Path,
                                                 fake_model: dict[str, Any]) -> None:
    assert_error(invoke(["evaluate", store_with_a_split_without_gt, "--model", "x.pt", "--split", "nogt"]),
                 "split 'nogt' has no samples with ground truth; splits with ground truth: train (4)")


def test_cli_evaluate_missing_model(tiny_store: Path, tmp_path: Path) -> None:
    assert_error(invoke(["evaluate", tiny_store, "--model", tmp_path / "nope.pt", "--device", "cpu"]),
                 "nope.pt not found")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_gpu(tiny_store: Path, tmp_path: Path, fake_model: dict[str, Any]) -> None:
    assert_error(invoke(["evaluate", tiny_store, "--model", "fake.pt", "--device", "cuda"]),
                 "--device cuda, but no CUDA GPU is available here; use --device cpu (or auto)")
    images = write_images(tmp_path / "in")
    assert_error(invoke(["predict", "fake.pt", *images, "-o", tmp_path / "out", "--device", "cuda"]),
                 "--device cuda, but no CUDA GPU is available here")


def test_cli_predict(tmp_path: Path, fake_model: dict[str, Any]) -> None:
    fake_model["net"] = ConstantNet(2)
    images = write_images(tmp_path / "in")
    result = invoke(["predict", "fake.pt", *images, "-o", tmp_path / "out", "--single-scale", "--flip",
                     "--device", "cpu"])
    assert_ok(result)
    assert "wrote 2 label maps to" in flat(result.stdout) and "single-scale + flip" in result.stdout
    assert (read_label_png(tmp_path / "out/a.png") == 2).all()


def test_cli_predict_errors(tmp_path: Path, fake_model: dict[str, Any]) -> None:
    assert_error(invoke(["predict", "fake.pt", "-o", tmp_path / "out"]), "no images given")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert_error(invoke(["predict", "fake.pt", tmp_path / "bad.png", "-o", tmp_path / "out"]),
                 "bad.png: expected a readable image, but it does not decode")
    assert_error(invoke(["predict", "fake.pt", tmp_path / "gone.png", "-o", tmp_path / "out"]), "gone.png not found")


def test_cli_help_lists_the_options_from_the_configs() -> None:
    ev_help = flat(invoke(["evaluate", "--help"]).stdout)
    for text in ("-m, --model", "--multi-scale / --no-multi-scale", "Also report multi-scale inference.", "--scales",
                 "--flip", "--crf", "--device", "--split", "--json", "--markdown", "--save-masks", "--limit",
                 "Evaluate only the first N images.", "STORE"):
        assert text in ev_help, text
    pr_help = flat(invoke(["predict", "--help"]).stdout)
    for text in ("MODEL", "IMAGES", "Image files, or folders of images.", "-o, --output",
                 "--multi-scale / --single-scale", "Multi-scale inference (max fusion).", "--scales", "--flip",
                 "--crf", "--device"):
        assert text in pr_help, text
    assert "crf-iterations" not in ev_help + pr_help  # a TOML / Python setting only


def test_cli_errors_name_flags_where_the_library_names_parameters(tiny_store: Path, tmp_path: Path,
                                                                  fake_model: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_text("x")
    assert_error(invoke(["evaluate", tiny_store, "-m", "fake.pt", "--save-masks", tmp_path / "f"]),
                 "--save-masks ", "f exists and is not a folder")
    assert_error(invoke(["predict", "fake.pt", tmp_path / "f", "-o", tmp_path / "f"]),
                 "--output ", "f exists and is not a folder")
    monkeypatch.setattr(inf, "crf_available", lambda: False)
    assert_error(invoke(["evaluate", tiny_store, "-m", "fake.pt", "--crf"]),
                 "needs pydensecrf", "pip install 'salcurate[crf]'", "or leave out --crf")
    assert_error(invoke(["predict", "fake.pt", tmp_path / "f", "--crf"]), "or leave out --crf")


def test_cli_config_file_sets_the_crf_settings(tiny_store: Path, tmp_path: Path, fake_model: dict[str, Any]) -> None:
    toml = tmp_path / "eval.toml"
    toml.write_text('model = "fake.pt"\nsplit = "train"\n[inference]\nscales = [0.5, 1.0]\ncrf_iterations = 2\n')
    j = tmp_path / "eval.json"
    assert_ok(invoke(["evaluate", tiny_store, "--config", toml, "--device", "cpu", "--flip", "--json", j]))
    data = json.loads(j.read_text())["config"]
    assert data["model"] == "fake.pt" and data["split"] == "train" and data["inference"]["crf_iterations"] == 2
    assert data["inference"]["scales"] == [0.5, 1.0] and data["inference"]["flip"] is True  # file, then options


def test_results_are_plain_data_with_the_resolved_config(tiny_store: Path, tmp_path: Path,
                                                         fake_model: dict[str, Any]) -> None:
    res = ev.run(config(tiny_store, split="train", multiscale=False))
    data = res.to_dict()
    assert data == ev.to_json(res) and json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["config"]["device"] == "cpu" and data["config"]["inference"]["scales"] == [0.5, 0.75, 1.0]
    assert data["config"]["settings"] == ["single-scale"]
    images = write_images(tmp_path / "in")
    out = pr.run(predict_config(images, tmp_path / "out", device="cpu")).to_dict()
    assert out["written"] == 2 and out["output"] == str(tmp_path / "out") and out["setting"] == "multi-scale"
    record = json.loads((tmp_path / "out/predict.json").read_text())
    assert record["config"]["images"] == [str(f) for f in images] and record["config"]["device"] == "cpu"


def test_run_rejects_a_config_without_model_and_other_objects(tiny_store: Path) -> None:
    with pytest.raises(InputError, match=r"no SAL-Net checkpoint given; set model to a file") as info:
        ev.run(ev.EvaluateConfig(store=str(tiny_store)))
    assert info.value.params == ("model",)
    with pytest.raises(InputError, match="expected a PredictConfig, got dict"):
        pr.run({})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expected a list of image paths as images, got str"):
        pr.run(pr.PredictConfig(model="fake.pt", images="a.jpg"))  # type: ignore[arg-type]


# -- with a real SAL-Net checkpoint ------------------------------------------------------------------
@pytest.fixture(scope="module")
def salnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    salnet = pytest.importorskip("salcurate.nn.salnet")
    torch.manual_seed(0)
    model = salnet.SALNet(salnet.SALNetConfig(backbone="resnet18", num_classes=len(CLASS_NAMES) - 1))
    return Path(salnet.save_model(tmp_path_factory.mktemp("run") / "model.pt", model, class_names=CLASS_NAMES))


def test_real_model_evaluate_and_predict(tiny_store: Path, tiny_voc: TinyVoc, salnet_file: Path,
                                         tmp_path: Path) -> None:
    j = tmp_path / "eval.json"
    assert_ok(invoke(["evaluate", tiny_store, "--model", salnet_file, "--split", "train", "--device", "cpu",
                      "--json", j, "--save-masks", tmp_path / "masks"]))
    data = json.loads(j.read_text())
    assert [s["name"] for s in data["settings"]] == ["single-scale", "multi-scale"]
    assert data["model"]["class_names"] == list(CLASS_NAMES) and data["model"]["config"]["backbone"] == "resnet18"
    for s in data["settings"]:
        assert np.array(s["confusion_matrix"]).sum() == sum(int((tiny_voc.gt[i] != 255).sum())
                                                            for i in tiny_voc.splits["train"])
    for i in tiny_voc.splits["train"]:
        assert read_label_png(tmp_path / "masks" / f"{i}.png").shape == tiny_voc.sizes[i]
    result = invoke(["predict", salnet_file.parent, tiny_voc.images["s001"], "-o", tmp_path / "pred",
                     "--device", "cpu"])
    assert_ok(result)
    labels = read_label_png(tmp_path / "pred/s001.png")
    assert labels.shape == tiny_voc.sizes["s001"] and labels.max() < K


def test_real_loader_rejects_other_files(tiny_store: Path, tmp_path: Path, salnet_file: Path) -> None:
    not_salnet = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, not_salnet)
    assert_error(invoke(["evaluate", tiny_store, "--model", not_salnet, "--device", "cpu"]),
                 "weights.pt is not a SAL-Net model file")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    # the image is checked first
    assert_error(invoke(["predict", text, tiny_store, "-o", tmp_path / "out"]), "does not decode")
    assert_error(invoke(["evaluate", tiny_store, "--model", text, "--device", "cpu"]),
                 "notes.txt is not a SAL-Net model file")


def test_real_model_with_other_class_names(tiny_store: Path, tmp_path: Path) -> None:
    salnet = pytest.importorskip("salcurate.nn.salnet")
    model = salnet.SALNet(salnet.SALNetConfig(backbone="resnet18", num_classes=3))
    path = salnet.save_model(tmp_path / "voc.pt", model, class_names=("background", "aeroplane", "bicycle", "bird"))
    assert_error(invoke(["evaluate", tiny_store, "--model", path, "--device", "cpu"]),
                 "the class names of model", "differ from those of store",
                 "class 1 is 'aeroplane' in the model and 'widget' in the store")


class ConvNet(nn.Module):
    """A random strided convolution: outputs that vary over the image, at stride 8."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, K, 9, stride=8, padding=4)

    def forward(self, x: torch.Tensor) -> Out:
        logits = 3 * self.conv(x)
        return Out(logits, None, logits)


def test_evaluate_passes_agree_with_predict_probabilities() -> None:
    from salcurate.evaluation.inference import predict_probabilities

    image = np.random.default_rng(1).integers(0, 256, (29, 37, 3), dtype=np.uint8)
    net = ConvNet().eval()
    settings = inf.settings_for(multiscale=True, flip=True, crf=False, scales=(0.5, 0.75, 1.0))
    got = inf.predict_settings(net, normalise, image, settings, InferenceConfig(), torch.device("cpu"), CLASS_NAMES)
    single = predict_probabilities(net, image, preprocess=normalise)
    multi = predict_probabilities(net, image, scales=(0.5, 0.75, 1.0), flip=True, preprocess=normalise)
    np.testing.assert_array_equal(got[0][0], single.argmax(0))
    assert (got[1][0] == multi.argmax(0)).mean() > 0.999  # the same up to float rounding at near-ties
    assert not np.array_equal(got[0][0], got[1][0])  # and the settings do differ
