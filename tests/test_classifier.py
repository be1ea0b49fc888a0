"""Tag classifier (salcurate.nn.classifier): config, shapes, CAM = class map, GAP logits, files, SAL-Net weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from salcurate.errors import InputError
from salcurate.nn.classifier import (
    CLASSIFIER_FORMAT,
    CLASSIFIER_FORMAT_VERSION,
    ClassifierOutput,
    TagClassifier,
    TagClassifierConfig,
    backbone_state_dict_torchvision,
    load_classifier,
    read_classifier_file,
    save_classifier,
)
from salcurate.nn.salnet import SALNet, SALNetConfig, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ("background", "widget", "gadget", "gizmo")


@pytest.fixture(scope="module")
def small() -> TagClassifier:
    torch.manual_seed(0)
    return TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=3)).eval()


# -- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, text", [
    ({"backbone": "vgg19"}, "unknown backbone 'vgg19'; choose one of vgg16, resnet18, resnet50, resnet101"),
    ({"num_classes": 0}, "num_classes (C, foreground classes) must be a whole number >= 1, got 0"),
    ({"num_classes": True}, "num_classes"),
    ({"freeze_bn": "yes"}, "freeze_bn must be True, False or None"),
])
def test_bad_config_values(kwargs: dict, text: str) -> None:
    with pytest.raises(InputError) as err:
        TagClassifierConfig(**kwargs)
    assert text in str(err.value) and "\n" not in str(err.value)


def test_config_round_trips_through_a_dict() -> None:
    c = TagClassifierConfig(backbone="vgg16", num_classes=7, freeze_bn=False)
    assert TagClassifierConfig.from_dict(c.to_dict()) == c
    assert TagClassifierConfig().backbone == "resnet50"  # IRN's CAM network
    with pytest.raises(InputError, match="unknown tag classifier config keys"):
        TagClassifierConfig.from_dict({"backbone": "resnet18", "attention": "off"})


def test_model_needs_a_config() -> None:
    with pytest.raises(InputError, match="TagClassifier expects a TagClassifierConfig, got dict"):
        TagClassifier({"backbone": "resnet18"})  # type: ignore[arg-type]


# -- forward -----------------------------------------------------------------------------------
def test_shapes_at_output_stride_8(small: TagClassifier) -> None:
    with torch.no_grad():
        out = small(torch.randn(2, 3, 32, 48))
    assert isinstance(out, ClassifierOutput)
    assert out.logits.shape == (2, 3) and out.cams.shape == (2, 3, 4, 6)


def test_logits_are_the_average_of_the_cams_and_cams_are_class_maps(small: TagClassifier) -> None:
    """Zhou et al. 2016: M_c = sum_k w_k^c f_k, S_c = sum_k w_k^c GAP(f_k) = GAP(M_c)."""
    x = torch.randn(1, 3, 40, 24)
    with torch.no_grad():
        out = small(x)
        features = small.backbone(x)  # (1, 512, 5, 3)
    w = small.classifier.weight[:, :, 0, 0]  # (C, 512)
    torch.testing.assert_close(out.logits, features.mean(dim=(2, 3)) @ w.T)
    torch.testing.assert_close(out.cams, torch.einsum("ck,bkhw->bchw", w, features))
    torch.testing.assert_close(out.logits, out.cams.mean(dim=(2, 3)))
    assert small.classifier.bias is None


def test_gradient_reaches_classifier_and_backbone() -> None:
    torch.manual_seed(1)
    model = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=2)).train()
    out = model(torch.randn(2, 3, 24, 24))
    F.binary_cross_entropy_with_logits(out.logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]])).backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad is not None and model.backbone.stem[0].weight.grad.abs().sum() > 0
    backbone, head = model.parameter_groups()
    assert head == [model.classifier.weight] and len(backbone) > 10


def test_frozen_batch_norm_stays_in_eval_and_untrained() -> None:
    model = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=2, freeze_bn=True)).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    assert model.classifier.training
    auto = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=2))
    assert not auto.bn_frozen  # random initialization: batch norm trains


# -- files -------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path: Path, small: TagClassifier) -> None:
    path = save_classifier(tmp_path / "c" / "classifier.pt", small, class_names=NAMES, extra={"epoch": 3})
    model, info = load_classifier(path)
    assert not model.training and model.config == small.config
    assert info["class_names"] == list(NAMES) and info["epoch"] == 3 and info["config"] == small.config.to_dict()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x).cams, small(x).cams, rtol=0, atol=0)
    payload = read_classifier_file(path)
    assert payload["format"] == CLASSIFIER_FORMAT and payload["format_version"] == CLASSIFIER_FORMAT_VERSION


def test_save_refuses_wrong_class_names_and_reserved_keys(tmp_path: Path, small: TagClassifier) -> None:
    with pytest.raises(InputError, match=r"3 class names for a classifier of C \+ 1 = 4 classes"):
        save_classifier(tmp_path / "c.pt", small, class_names=NAMES[1:])
    with pytest.raises(InputError, match="extra key 'state_dict' is reserved"):
        save_classifier(tmp_path / "c.pt", small, class_names=NAMES, extra={"state_dict": {}})
    with pytest.raises(InputError, match="is a folder"):
        save_classifier(tmp_path, small, class_names=NAMES)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="is not a tag classifier file") as err:
        load_classifier(junk)
    assert "\n" not in str(err.value)
    other = tmp_path / "other.pt"
    torch.save({"format": "something.else", "state_dict": {}}, other)
    with pytest.raises(InputError, match="is not a tag classifier file"):
        load_classifier(other)
    future = tmp_path / "future.pt"
    torch.save({"format": CLASSIFIER_FORMAT, "format_version": CLASSIFIER_FORMAT_VERSION + 1}, future)
    with pytest.raises(InputError, match="upgrade salcurate"):
        load_classifier(future)


def test_load_refuses_a_salnet_model_by_name(tmp_path: Path) -> None:
    salnet = SALNet(SALNetConfig(backbone="resnet18", num_classes=3, attention="off"))
    path = save_model(tmp_path / "model.pt", salnet, class_names=NAMES)
    with pytest.raises(InputError, match="is a SAL-Net model, not a tag classifier"):
        load_classifier(path)


# -- backbone weights for SAL-Net --------------------------------------------------------------
def test_resnet_backbone_under_torchvision_names_loads_into_salnet(tmp_path: Path) -> None:
    from torchvision import models

    torch.manual_seed(2)
    classifier = TagClassifier(TagClassifierConfig(backbone="resnet18", num_classes=3))
    with torch.no_grad():  # make every weight and statistic distinct from a fresh network's
        for t in classifier.backbone.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t))
    state = backbone_state_dict_torchvision(classifier)
    reference = {k for k in models.resnet18().state_dict() if not k.startswith("fc.")}
    assert set(state) == reference
    assert "conv1.weight" in state and "bn1.running_mean" in state and "layer4.1.conv2.weight" in state
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    salnet = SALNet(SALNetConfig(backbone="resnet18", num_classes=5), backbone_weights=str(path))
    mine, theirs = classifier.backbone.state_dict(), salnet.backbone.state_dict()
    assert set(mine) == set(theirs)
    for k in mine:
        assert torch.equal(mine[k], theirs[k]), k


def test_vgg_backbone_keys_and_shapes_match_torchvision() -> None:
    from torchvision import models

    with torch.device("meta"):  # no memory, no initialization: VGG16 is 138 M parameters
        classifier = TagClassifier(TagClassifierConfig(backbone="vgg16", num_classes=3))
        reference = {k: v.shape for k, v in models.vgg16().state_dict().items() if k.startswith("features.")}
    state = backbone_state_dict_torchvision(classifier)
    assert {k: v.shape for k, v in state.items()} == reference
    assert "features.0.weight" in state and "features.28.bias" in state


def test_backbone_weights_need_a_model_with_a_backbone() -> None:
    with pytest.raises(InputError, match="expects a TagClassifier .a model with a backbone., got Linear"):
        backbone_state_dict_torchvision(torch.nn.Linear(2, 2))
