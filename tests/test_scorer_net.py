"""The SAL mask scorer (salcurate.nn.scorer): Table I structure, shapes, errors, gradients,
MACs and checkpoints. Small configs keep it fast; the default (256) config is only built, and
run on the meta device (shapes without arithmetic)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from salcurate._version import __version__
from salcurate.errors import InputError
from salcurate.nn import (
    CHECKPOINT_FORMAT,
    GDN,
    MaskScorer,
    ResB,
    ScorerConfig,
    load_checkpoint,
    save_checkpoint,
    scorer_macs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = ScorerConfig(input_size=32, width=8, channels=12, hidden=6)

#: Table I of the paper, one row per layer: (module, stride, in channels, out channels,
#: activation, output width). "conv" = 3x3 conv, padding 1.
TABLE_I = [
    ("conv", 1, 4, 128, "ReLU", 256),
    ("ResB", 1, 128, 192, "GDN", 256),
    ("conv", 2, 192, 192, "ReLU", 128),
    ("ResB", 1, 192, 192, "GDN", 128),
    ("conv", 2, 192, 192, "ReLU", 64),
    ("ResB", 1, 192, 192, "GDN", 64),
    ("conv", 2, 192, 192, "ReLU", 32),
    ("fc", 1, 192, 128, "GDN", None),
    ("fc", 1, 128, 1, "ReLU", None),
]


def _layers(model: MaskScorer) -> list[nn.Module]:
    return [model.get_submodule(f"features.layer{k}") for k in range(1, 8)] + [
        model.get_submodule(f"head.layer{k}") for k in (8, 9)
    ]


def _describe(layer: nn.Module) -> tuple[str, int, int, int, str]:
    if isinstance(layer, ResB):
        assert layer.conv1.kernel_size == (3, 3) and layer.conv2.kernel_size == (3, 3)
        assert layer.conv1.padding == (1, 1) and layer.conv2.padding == (1, 1)
        assert layer.conv1.stride == (1, 1) and layer.conv2.stride == (1, 1)
        return "ResB", 1, layer.conv1.in_channels, layer.conv2.out_channels, type(layer.gdn).__name__
    assert isinstance(layer, nn.Sequential) and len(layer) == 2
    op, act = layer
    if isinstance(op, nn.Conv2d):
        assert op.kernel_size == (3, 3) and op.padding == (1, 1)
        return "conv", op.stride[0], op.in_channels, op.out_channels, type(act).__name__
    assert isinstance(op, nn.Linear)
    return "fc", 1, op.in_features, op.out_features, type(act).__name__


def _count_macs_with_hooks(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of the Conv2d and Linear modules, per image, from the output shapes seen in forward."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        per_image = output[0].numel()
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += per_image * (module.in_channels // module.groups) * kh * kw
        else:
            total += per_image * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _small(seed: int = 0, config: ScorerConfig = SMALL) -> MaskScorer:
    torch.manual_seed(seed)
    return MaskScorer(config)


def _batch(n: int = 3, config: ScorerConfig = SMALL, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, config.in_channels - 1, config.input_size, config.input_size, generator=g)
    mask = (torch.rand(n, 1, config.input_size, config.input_size, generator=g) > 0.5).float()
    return torch.cat([image, mask], dim=1)


# -- config --------------------------------------------------------------------------------


def test_config_defaults_are_table_i() -> None:
    assert ScorerConfig().to_dict() == {
        "input_size": 256,
        "in_channels": 4,
        "width": 128,
        "channels": 192,
        "hidden": 128,
    }


def test_config_round_trip_and_defaults_for_missing_fields() -> None:
    assert ScorerConfig.from_dict(SMALL.to_dict()) == SMALL
    assert ScorerConfig.from_dict({"input_size": 96}) == ScorerConfig(input_size=96)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"input_size": 256, "depth": 3}, "unknown field(s) depth"),
        ({"input_size": "256"}, "input_size must be a positive integer, got '256'"),
        ({"channels": 0}, "channels must be a positive integer, got 0"),
        ({"hidden": True}, "hidden must be a positive integer"),
        ({"input_size": 4}, "input_size must be at least 8"),
        ([("input_size", 256)], "must be a mapping, got list"),
    ],
)
def test_config_refuses_bad_values(data: object, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        ScorerConfig.from_dict(data)  # type: ignore[arg-type]
    assert fragment in str(info.value)


# -- structure (Table I) -------------------------------------------------------------------


def test_default_model_matches_table_i() -> None:
    model = MaskScorer()  # built, not run on real data (about 2.4 s per image on 2 CPU cores)
    assert model.config == ScorerConfig()
    layers = _layers(model)
    assert [_describe(layer) for layer in layers] == [row[:5] for row in TABLE_I]
    # Parts: features = layers 1-7, head = pooling + layers 8-9; nothing else holds weights.
    assert list(model.features._modules) == [f"layer{k}" for k in range(1, 8)]
    assert list(model.head._modules) == ["pool", "flatten", "layer8", "layer9"]
    assert isinstance(model.head.pool, nn.AdaptiveAvgPool2d) and model.head.pool.output_size == 1
    assert [n for n, _ in model.named_children()] == ["features", "head"]
    # ResB shortcut: a 1x1 projection where channels change (layer 2), the identity elsewhere.
    assert isinstance(model.features.layer2.shortcut, nn.Conv2d)
    assert model.features.layer2.shortcut.kernel_size == (1, 1)
    assert isinstance(model.features.layer4.shortcut, nn.Identity)
    assert isinstance(model.features.layer6.shortcut, nn.Identity)
    # GDN at init: beta = 1, gamma = 0.1 I, in each of the four GDN layers.
    gdns = [m for m in model.modules() if isinstance(m, GDN)]
    assert [g.channels for g in gdns] == [192, 192, 192, 128]
    for g in gdns:
        assert torch.equal(g.beta, torch.ones(g.channels))
    # Final bias starts at 0.5 so the output ReLU is active at the start of training.
    assert float(model.head.layer9[0].bias.detach()) == 0.5


def test_default_model_widths_match_table_i_on_meta_device() -> None:
    with torch.device("meta"):
        model = MaskScorer()
    widths: list[tuple[int, ...]] = []
    handles = [
        layer.register_forward_hook(lambda _m, _i, out: widths.append(tuple(out.shape[1:])))
        for layer in _layers(model)
    ]
    out = model(torch.empty(2, 4, 256, 256, device="meta"))
    for h in handles:
        h.remove()
    assert out.shape == (2,)
    expected = [(row[3], row[5], row[5]) if row[5] else (row[3],) for row in TABLE_I]
    assert widths == expected


# -- forward, predict ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_output_shape_and_dtype(n: int) -> None:
    model = _small().eval()
    with torch.no_grad():
        out = model(_batch(n))
    assert out.shape == (n,) and out.dtype == torch.float32
    assert torch.all(out >= 0)  # the final ReLU


def test_other_input_size_and_double() -> None:
    config = ScorerConfig(input_size=45, width=4, channels=6, hidden=5)
    model = _small(config=config).double()
    out = model(_batch(2, config).double())
    assert out.shape == (2,) and out.dtype == torch.float64


def test_forward_is_raw_and_predict_is_clamped() -> None:
    model = _small().eval()
    x = _batch(4)
    with torch.no_grad():
        model.head.layer9[0].bias.fill_(5.0)
        raw, p = model(x), model.predict(x)
        assert torch.all(raw > 1) and torch.equal(p, torch.ones(4))
        model.head.layer9[0].bias.fill_(-5.0)
        assert torch.equal(model(x), torch.zeros(4)) and torch.equal(model.predict(x), torch.zeros(4))
        model.head.layer9[0].bias.fill_(0.5)
        raw, p = model(x), model.predict(x)
    assert torch.all((p >= 0) & (p <= 1))
    torch.testing.assert_close(p, raw.clamp(0, 1))


def test_samples_are_independent() -> None:
    model = _small().eval()
    x = _batch(3)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize(
    ("x", "fragments"),
    [
        (torch.zeros(2, 4, 64, 64), ["expects input of shape (N, 4, 32, 32)", "got (2, 4, 64, 64)", "resize to 32x32"]),
        (torch.zeros(2, 3, 32, 32), ["got (2, 3, 32, 32)", "concatenate the mask as channel 4"]),
        (torch.zeros(4, 32, 32), ["got (4, 32, 32)"]),
        (torch.zeros(1, 4, 32, 31), ["got (1, 4, 32, 31)"]),
        (torch.zeros(1, 4, 32, 32, dtype=torch.uint8), ["floating-point tensor, got torch.uint8", "x.float()"]),
        (np.zeros((1, 4, 32, 32), np.float32), ["expects a torch.Tensor of shape (N, 4, 32, 32), got ndarray"]),
    ],
)
def test_bad_input_raises_clear_error(x: object, fragments: list[str]) -> None:
    model = _small()
    for call in (model, model.predict):
        with pytest.raises(InputError) as info:
            call(x)  # type: ignore[arg-type]
        message = str(info.value)
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message, message


def test_gradient_reaches_every_parameter() -> None:
    model = _small().train()
    x = _batch(4)
    target = torch.tensor([0.9, 0.1, 0.5, 0.3])
    loss = ((model(x) - target) ** 2).mean()  # Eq. (6)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name


def test_a_few_training_steps_fit_a_tiny_batch() -> None:
    tiny = ScorerConfig(input_size=16, width=6, channels=8, hidden=6)
    model = _small(seed=0, config=tiny).train()
    x = _batch(4, tiny, seed=4)
    target = torch.tensor([0.9, 0.1, 0.5, 0.3])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.25 * losses[0], losses


# -- MACs ----------------------------------------------------------------------------------


def test_default_macs_match_the_notes() -> None:
    macs = scorer_macs(ScorerConfig())
    assert scorer_macs() == macs
    assert abs(macs - 59e9) <= 0.02 * 59e9, macs  # "about 59 G multiply-adds (118 GFLOP)"


def test_default_macs_match_hook_count_on_meta_device() -> None:
    with torch.device("meta"):
        model = MaskScorer()
    assert _count_macs_with_hooks(model, torch.empty(1, 4, 256, 256, device="meta")) == scorer_macs(ScorerConfig())


@pytest.mark.parametrize(
    "config",
    [SMALL, ScorerConfig(input_size=45, width=12, channels=12, hidden=3), ScorerConfig(input_size=8, in_channels=2)],
)
def test_macs_match_hook_count(config: ScorerConfig) -> None:
    model = _small(config=config)
    assert _count_macs_with_hooks(model, _batch(2, config)) == scorer_macs(config)


def test_macs_by_hand_and_with_gdn() -> None:
    c = ScorerConfig(input_size=8, in_channels=1, width=1, channels=2, hidden=3)
    # 8x8: conv 1->1 (9*64), ResB 1->2 (18*64 + 36*64 + 2*64 projection); 4x4: conv + 2 convs
    # 2->2 (3*36*16); 2x2: (3*36*4); 1x1: conv (36); fc 2*3 + 3*1.
    by_hand = 9 * 64 + 18 * 64 + 36 * 64 + 2 * 64 + 3 * 36 * 16 + 3 * 36 * 4 + 36 + 6 + 3
    assert scorer_macs(c) == by_hand
    # GDN adds C*C per position after each ResB (8x8, 4x4, 2x2 maps) and hidden^2 after fc 1.
    assert scorer_macs(c, include_gdn=True) == by_hand + 4 * (64 + 16 + 4) + 9


# -- checkpoints ---------------------------------------------------------------------------


def _save(tmp_path: Path, config: ScorerConfig = SMALL, name: str = "scorer.pt") -> tuple[Path, MaskScorer]:
    model = _small(seed=7, config=config)
    with torch.no_grad():  # move GDN off its initial values so the round trip is meaningful
        for g in model.modules():
            if isinstance(g, GDN):
                g.set_parameters(g.beta + 0.25, g.gamma + 0.01)
    path = save_checkpoint(
        tmp_path / name,
        model,
        config,
        metrics={"epoch": 3, "val_loss": 0.042, "spearman": np.float64(0.61)},
        extra={"trained_on": "tiny", "seeds": [1, 2], "lr": torch.tensor(1e-5)},
    )
    return path, model


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path, model = _save(tmp_path)
    assert os.listdir(tmp_path) == ["scorer.pt"]  # no temporary file left beside it
    loaded, config, info = load_checkpoint(path, expect=SMALL)
    assert config == SMALL and loaded.config == SMALL
    assert not loaded.training
    x = _batch(3)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert info["metrics"] == {"epoch": 3, "val_loss": 0.042, "spearman": 0.61}
    assert type(info["metrics"]["spearman"]) is float  # numpy scalar stored as a plain float
    assert info["extra"]["seeds"] == [1, 2] and info["extra"]["trained_on"] == "tiny"
    assert info["salcurate_version"] == __version__ and info["format_version"] == 1
    loaded2, _, _ = load_checkpoint(str(path))  # no expectation, str path
    assert all(torch.equal(a, b) for a, b in zip(loaded2.state_dict().values(), model.state_dict().values()))


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    path, model = _save(tmp_path)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"format", "format_version", "salcurate_version", "config", "state_dict", "metrics", "extra"}
    assert payload["format"] == CHECKPOINT_FORMAT == "salcurate.scorer"
    assert payload["format_version"] == 1
    assert payload["config"] == SMALL.to_dict()
    assert payload["state_dict"].keys() == model.state_dict().keys()


def test_save_replaces_atomically_and_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _save(tmp_path)
    before = path.read_bytes()

    def broken_save(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["scorer.pt"]


def test_save_creates_parent_folders(tmp_path: Path) -> None:
    path, _ = _save(tmp_path, name="models/run1/scorer.pt")
    assert path == tmp_path / "models/run1/scorer.pt" and path.is_file()


def test_save_refuses_bad_arguments(tmp_path: Path) -> None:
    model = _small()
    with pytest.raises(InputError, match="must hold only numbers, strings, lists, dicts and tensors, got object"):
        save_checkpoint(tmp_path / "a.pt", model, SMALL, metrics={"bad": object()})
    with pytest.raises(InputError, match="expects dicts for metrics and extra, got list and NoneType"):
        save_checkpoint(tmp_path / "a.pt", model, SMALL, metrics=[0.5])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="keys must be strings"):
        save_checkpoint(tmp_path / "a.pt", model, SMALL, metrics={1: 0.5})
    with pytest.raises(InputError, match="pass model.config"):
        save_checkpoint(tmp_path / "a.pt", model, ScorerConfig(), metrics={})
    with pytest.raises(InputError, match="is a folder"):
        save_checkpoint(tmp_path, model, SMALL, metrics={})
    assert os.listdir(tmp_path) == []


def test_load_refuses_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputError) as info:
        load_checkpoint(missing)
    assert str(info.value) == (
        f"scorer checkpoint {missing} not found; train one with `salcurate train-scorer` or pass scorer PATH"
    )


def _write_other(path: Path, kind: str) -> None:
    if kind == "bytes":
        path.write_bytes(b"not a checkpoint at all\x00\x01")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other-dict":
        torch.save({"model": {"w": torch.zeros(2)}}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "pickled-object":  # refused by weights_only=True, never executed
        with path.open("wb") as fh:
            pickle.dump(Path("x"), fh, protocol=2)
    elif kind == "bad-version":
        torch.save({"format": "salcurate.scorer", "format_version": "1"}, path)


@pytest.mark.parametrize("kind", ["bytes", "empty", "other-dict", "tensor", "pickled-object", "bad-version"])
def test_load_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "other.pt"
    _write_other(path, kind)
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path} is not a salcurate scorer checkpoint;")
    with pytest.raises(InputError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_load_refuses_other_config(tmp_path: Path) -> None:
    config96 = ScorerConfig(input_size=96, width=8, channels=12, hidden=6)
    path, _ = _save(tmp_path, config=config96)
    expect = ScorerConfig(input_size=256, width=8, channels=12, hidden=6)
    with pytest.raises(InputError) as info:
        load_checkpoint(path, expect=expect)
    message = str(info.value)
    assert f"scorer checkpoint {path} holds input size 96, expected 256;" in message
    with pytest.raises(InputError) as info:
        load_checkpoint(path, expect=ScorerConfig(input_size=96))
    assert "holds width 8, expected 128; channels 12, expected 192; hidden units 6, expected 128" in str(info.value)


def test_load_refuses_newer_format_version(tmp_path: Path) -> None:
    path, _ = _save(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 2
    payload["salcurate_version"] = "9.0.0"
    torch.save(payload, path)
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "format version 2 (written by salcurate 9.0.0)" in message
    assert "reads up to 1; upgrade salcurate" in message


def test_load_refuses_damaged_weights_and_config(tmp_path: Path) -> None:
    path, _ = _save(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("head.layer9.0.bias")
    torch.save(payload, path)
    with pytest.raises(InputError, match="weights that do not fit its config"):
        load_checkpoint(path)
    payload["config"] = {"input_size": 32, "depth": 9}
    torch.save(payload, path)
    with pytest.raises(InputError, match="unusable config"):
        load_checkpoint(path)
