"""SAL-Net (salcurate.nn.salnet): config checks, shapes, output stride, attention product, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from salcurate.errors import InputError
from salcurate.nn.salnet import (
    ASPP,
    BACKBONES,
    ClassificationBranch,
    SALNet,
    SALNetConfig,
    attended_logits,
    build_backbone,
    imagenet_weights_path,
    load_model,
    preprocess,
    save_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small() -> SALNet:
    torch.manual_seed(0)
    return SALNet(SALNetConfig(backbone="resnet18", num_classes=3)).eval()


# -- config ------------------------------------------------------------------------------------
def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(InputError,
                       match="unknown backbone 'vgg19'; choose one of vgg16, resnet18, resnet50, resnet101"):
        SALNetConfig(backbone="vgg19")


@pytest.mark.parametrize("kwargs, text", [
    ({"attention": "yes"}, "attention must be one of multiply, multitask, off"),
    ({"num_classes": 0}, "num_classes"),
    ({"aspp_rates": (6, 0)}, "aspp_rates must be whole numbers >= 1"),
    ({"dropout": 1.0}, "dropout must be in"),
])
def test_bad_config_values(kwargs: dict, text: str) -> None:
    with pytest.raises(InputError, match=text.replace("(", r"\(")):
        SALNetConfig(**kwargs)


def test_config_round_trips_through_a_dict() -> None:
    c = SALNetConfig(backbone="resnet50", num_classes=7, attention="multitask", aspp_rates=(1, 2))
    assert SALNetConfig.from_dict(c.to_dict()) == c


def test_aspp_width_is_deeplab_v2s_per_backbone() -> None:
    assert SALNetConfig(backbone="vgg16").hidden == 1024  # ASPP-L fc6-fc7-fc8
    assert SALNetConfig(backbone="resnet101").hidden == 0  # one 3x3 conv per branch
    assert SALNetConfig(backbone="resnet101", aspp_hidden=64).hidden == 64


# -- backbones: output stride 8 ------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbones_give_stride_8_features(name: str) -> None:
    net = build_backbone(name).eval()
    with torch.no_grad():
        f = net(torch.randn(1, 3, 64, 96))
    assert f.shape == (1, BACKBONES[name], 8, 12)


def test_vgg16_is_deeplab_v2s() -> None:
    net = build_backbone("vgg16")
    pools = [m for m in net if isinstance(m, nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]  # pool4 and pool5 at stride 1
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [c.dilation for c in convs[-3:]] == [(2, 2)] * 3  # conv5 dilated by 2
    assert all(c.dilation == (1, 1) for c in convs[:-3])


@pytest.mark.parametrize("name", ["resnet18", "resnet101"])
def test_resnets_dilate_their_last_two_stages(name: str) -> None:
    net = build_backbone(name)
    for stage, d in ((net.layer3, 2), (net.layer4, 4)):
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs)
        assert {c.dilation for c in convs if c.kernel_size == (3, 3)} == {(d, d)}


# -- heads ---------------------------------------------------------------------------------------
def test_aspp_sums_its_branches() -> None:
    head = ASPP(4, 3, rates=(1, 2), hidden=0)
    x = torch.randn(1, 4, 9, 9)
    assert torch.allclose(head(x), head.branches[0](x) + head.branches[1](x))
    assert [b.dilation for b in head.branches] == [(1, 1), (2, 2)]


def test_classification_branch_is_eq_10_then_global_average_pooling() -> None:
    branch = ClassificationBranch(4, 5, dilations=(1, 3, 6, 9))
    x = torch.randn(2, 4, 10, 12)
    ds, logits = branch(x)
    assert ds.shape == (2, 5, 10, 12) and logits.shape == (2, 5)
    assert torch.allclose(ds, sum(b(x) for b in branch.branches), atol=1e-6)  # d_s = d1 + d2 + d3 + d4
    assert torch.allclose(logits, ds.mean(dim=(2, 3)), atol=1e-6)
    assert [b.dilation for b in branch.branches] == [(1, 1), (3, 3), (6, 6), (9, 9)]


def test_attended_logits_are_the_renormalised_product_by_hand() -> None:
    # one pixel, background + 2 classes: Z = softmax(s), a = (1, sigmoid(l1), sigmoid(l2))
    s = torch.tensor([[[[0.5]], [[1.0]], [[-0.3]]]])
    logits = torch.tensor([[2.0, -1.0]])
    z = np.exp([0.5, 1.0, -0.3]) / np.exp([0.5, 1.0, -0.3]).sum()
    a = np.array([1.0, 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(1.0))])
    expected = z * a / (z * a).sum()
    got = torch.softmax(attended_logits(s, logits), dim=1)[0, :, 0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_attention_product_leaves_a_distribution(small: SALNet) -> None:
    with torch.no_grad():
        out = small(torch.randn(2, 3, 40, 48))
    p = out.probabilities()
    assert p.shape == (2, 4, 5, 6)
    assert torch.all(p >= 0)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, 5, 6))


def test_attended_logits_shape_error() -> None:
    with pytest.raises(InputError, match=r"expects \(B, C\+1, h, w\) and \(B, C\)"):
        attended_logits(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3))


# -- the assembled model ------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["multiply", "multitask", "off"])
def test_forward_returns_named_parts(attention: str) -> None:
    torch.manual_seed(0)
    model = SALNet(SALNetConfig(backbone="resnet18", num_classes=2, attention=attention)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 47))
    assert out.segmentation.shape == (1, 3, 5, 6)
    if attention == "off":
        assert out.classification is None and model.classifier is None
    else:
        assert out.classification.shape == (1, 2)
    same = torch.equal(out.attended, out.segmentation)
    assert same == (attention != "multiply")


def test_attention_multiply_lets_the_selection_loss_train_the_branch() -> None:
    for attention, reaches in (("multiply", True), ("multitask", False)):
        torch.manual_seed(0)
        model = SALNet(SALNetConfig(backbone="resnet18", num_classes=2, attention=attention)).eval()
        out = model(torch.randn(1, 3, 32, 32))
        torch.log_softmax(out.attended, 1)[:, 1].sum().backward()  # a stand-in for L_sel
        grad = model.classifier.branches[0].weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches


def test_parameter_groups_split_backbone_and_heads(small: SALNet) -> None:
    backbone, heads = small.parameter_groups()
    ids = {id(p) for p in backbone} | {id(p) for p in heads}
    assert ids == {id(p) for p in small.parameters() if p.requires_grad}
    assert not {id(p) for p in backbone} & {id(p) for p in heads}
    assert {id(p) for p in small.classifier.parameters()} <= {id(p) for p in heads}


def test_frozen_batch_norm_stays_in_eval_mode_and_out_of_the_optimizer() -> None:
    model = SALNet(SALNetConfig(backbone="resnet18", num_classes=2, freeze_bn=True)).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    assert SALNet(SALNetConfig(backbone="resnet18", num_classes=2)).bn_frozen is False  # random init: trains BN


def test_preprocess_normalises_with_imagenet_statistics() -> None:
    img = np.full((2, 3, 3), 255, np.uint8)
    x = preprocess(img)
    assert x.shape == (3, 2, 3)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225],
                               rtol=1e-5)
    with pytest.raises(InputError, match=r"expects an \(H, W, 3\) uint8 RGB image"):
        preprocess(np.zeros((2, 3), np.uint8))


# -- backbone weights ----------------------------------------------------------------------------
def test_missing_imagenet_weights_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, url = imagenet_weights_path("resnet18")
    assert str(path).startswith(str(tmp_path))
    with pytest.raises(InputError, match=f"download {url} to that path.*backbone_weights none"):
        build_backbone("resnet18", weights="imagenet")


def test_weights_load_from_the_torch_cache_and_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(3)
    state = resnet18().state_dict()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache, _ = imagenet_weights_path("resnet18")
    cache.parent.mkdir(parents=True)
    torch.save(state, cache)
    for weights in ("imagenet", str(cache)):
        net = build_backbone("resnet18", weights=weights)
        assert torch.equal(net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert SALNet(SALNetConfig(backbone="resnet18", num_classes=2), backbone_weights="imagenet").bn_frozen


def test_wrong_weights_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "w.pth"
    torch.save({"something": torch.zeros(3)}, bad)
    with pytest.raises(InputError, match="layers have no weights there"):
        build_backbone("resnet18", weights=str(bad))
    with pytest.raises(InputError, match="no such file"):
        build_backbone("resnet18", weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable PyTorch weights file"):
        build_backbone("resnet18", weights=str(tmp_path / "junk.pth"))


# -- model files ---------------------------------------------------------------------------------
def test_model_file_round_trip(small: SALNet, tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.pt", small, class_names=["bg", "a", "b", "c"], extra={"iteration": 5})
    model, info = load_model(path)
    assert info["class_names"] == ["bg", "a", "b", "c"] and info["iteration"] == 5
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x).attended, small(x).attended)


def test_model_file_errors(small: SALNet, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"5 class names for a model of C \+ 1 = 4 classes"):
        save_model(tmp_path / "m.pt", small, class_names=["bg", "a", "b", "c", "d"])
    with pytest.raises(InputError, match="not found; train one with `salcurate retrain`"):
        load_model(tmp_path / "nope.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="is not a SAL-Net model file"):
        load_model(tmp_path / "other.pt")
