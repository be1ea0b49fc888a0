"""GPU checks (issue #14), marked ``gpu``: skipped without CUDA; ``benchmarks/gpu_check.py`` runs them.

* bf16 autocast + channels-last against float32, forward and backward, for the scorer (Table I,
  256 x 256) and SAL-Net (vgg16, resnet101), within the tolerances stated below;
* GDN stays finite in bf16 on large activations (where fp16 would overflow);
* train-scorer, score-fine, retrain (20 iterations, interrupted at 10 and resumed), evaluate and
  predict end to end on CUDA;
* ``torchrun --nproc_per_node 1 -m salcurate retrain`` joins an NCCL process group.

The numerical comparisons also run on the CPU (CPU bf16 autocast, smaller sizes), unmarked, so
their tolerances are checked everywhere.  ``pytest -m gpu tests/test_gpu.py`` runs the GPU ones.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import assert_ok, invoke
from PIL import Image

from salcurate.data.store import copy_store
from salcurate.errors import SalcurateError
from salcurate.events import Events

CUDA = torch.cuda.is_available()
ROOT = Path(__file__).resolve().parents[1]

#: bf16 + channels-last against float32: the relative L2 error of the outputs is at most OUT_RTOL,
#: and the gradient (all parameters, flattened) points the same way (cosine >= GRAD_COS) with a
#: norm within GRAD_NORM_RTOL.  bf16 keeps 8 significant bits (0.4 %); the errors of a deep net's
#: layers add up to about 1 %.
OUT_RTOL = 0.03
GRAD_COS = 0.99
GRAD_NORM_RTOL = 0.05

gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]


def _device(name: str) -> torch.device:
    return torch.device(name)


def _on(device: str, *extra: Any) -> Any:
    """A parameter for ``device``: the CUDA one is marked gpu (and skipped without CUDA)."""
    return pytest.param(device, *extra, marks=gpu if device == "cuda" else (), id="-".join([device, *map(str, extra)]))


# ------------------------------------------------------------------------------------------
# bf16 + channels-last against float32
# ------------------------------------------------------------------------------------------
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])


def _compare(model: torch.nn.Module, x: torch.Tensor, loss_of: Callable[[Any], torch.Tensor],
             out_of: Callable[[Any], torch.Tensor]) -> dict[str, float]:
    """Forward and backward in float32 and in bf16 autocast + channels-last; the differences."""
    device = x.device
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    ref_out = model(x)
    loss_of(ref_out).backward()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        fast_out = fast(x.contiguous(memory_format=torch.channels_last))
    assert out_of(fast_out).dtype == torch.bfloat16  # autocast did compute in bf16
    loss_of(fast_out).backward()
    g_ref, g_fast = _grad(model), _grad(fast)
    assert torch.isfinite(g_fast).all() and torch.isfinite(out_of(fast_out).float()).all()
    return {"out": _rel(out_of(fast_out), out_of(ref_out)),
            "cos": float(torch.nn.functional.cosine_similarity(g_fast.double(), g_ref.double(), dim=0)),
            "norm": abs(float(g_fast.norm() / g_ref.norm()) - 1)}


def _assert_close(d: dict[str, float]) -> None:
    assert d["out"] <= OUT_RTOL and d["cos"] >= GRAD_COS and d["norm"] <= GRAD_NORM_RTOL, d


@pytest.mark.parametrize("device", [_on("cpu"), _on("cuda")])
def test_scorer_bf16_channels_last_matches_fp32(device: str) -> None:
    from salcurate.nn.scorer import MaskScorer, ScorerConfig

    dev = _device(device)
    # Table I at 256 x 256 on the GPU; a small scorer on the CPU (the paper's takes seconds there)
    cfg = ScorerConfig() if device == "cuda" else ScorerConfig(input_size=32, width=8, channels=12, hidden=6)
    torch.manual_seed(0)
    model = MaskScorer(cfg).to(dev).train()
    x = torch.rand(4, 4, cfg.input_size, cfg.input_size, device=dev)
    # Eq. 6's L2 loss towards 0: the samples' gradients do not cancel (a random init predicts about
    # the same for every input), so the comparison measures the arithmetic, not an ill-posed sum
    _assert_close(_compare(model, x, lambda out: torch.mean(out.float() ** 2), lambda out: out))


@pytest.mark.parametrize(("device", "backbone"), [
    pytest.param("cpu", "resnet18", marks=pytest.mark.slow, id="cpu-resnet18"),  # seconds on the CPU
    _on("cuda", "vgg16"), _on("cuda", "resnet101")])
def test_salnet_bf16_channels_last_matches_fp32(device: str, backbone: str) -> None:
    from salcurate.nn.salnet import SALNet, SALNetConfig
    from salcurate.training.losses import sal_loss

    dev = _device(device)
    size = 129 if device == "cuda" else 49
    torch.manual_seed(0)
    # batch norm fixed, as the paper's protocol trains the resnets (DeepLab-v2); with batch statistics a
    # random resnet is chaotic: any rounding grows layer by layer, in float32 as in bf16
    model = SALNet(SALNetConfig(backbone=backbone, num_classes=20, dropout=0.0, freeze_bn=True)).to(dev).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=g).to(dev)
    labels = torch.randint(0, 21, (2, size, size), generator=g).to(dev)
    tags = (torch.rand(2, 20, generator=g) < 0.2).float().to(dev)
    weights = torch.ones(2, device=dev)

    def loss_of(out: Any) -> torch.Tensor:
        att = torch.nn.functional.interpolate(out.attended.float(), size=(size, size), mode="bilinear",
                                              align_corners=False)
        return sal_loss(att, out.classification.float(), labels, weights, tags, lam=2.0)[0]

    _assert_close(_compare(model, x, loss_of, lambda out: out.segmentation))


@pytest.mark.parametrize("device", [_on("cpu"), _on("cuda")])
def test_gdn_stays_finite_in_bf16_on_large_activations(device: str) -> None:
    from salcurate.nn.gdn import GDN

    dev = _device(device)
    torch.manual_seed(0)
    layer = GDN(64).to(dev)
    for scale in (1e2, 1e4, 1e8):  # x ** 2 overflows fp16 (65504) from 256 on; bf16 keeps float32's range
        x = (torch.randn(2, 64, 16, 16, device=dev) * scale).requires_grad_()
        ref = layer(x)
        with torch.autocast(dev.type, dtype=torch.bfloat16):  # the input comes from a bf16 convolution
            y = layer(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
        y.float().square().mean().backward()
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all(), scale
        assert torch.isfinite(x.grad).all(), scale
        assert _rel(y, ref) <= OUT_RTOL, scale
        assert y.float().abs().max() <= 1 / np.sqrt(layer.gamma_init) * 1.05  # |y| <= 1 / sqrt(gamma) at init
        x.grad = None


# ------------------------------------------------------------------------------------------
# The commands end to end on CUDA
# ------------------------------------------------------------------------------------------
@pytest.fixture
def store(demo_scored_store: Path, tmp_path: Path) -> Path:
    path = tmp_path / "masks.h5"
    copy_store(demo_scored_store, path)
    return path


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_train_scorer_and_score_fine_on_cuda(store: Path, tmp_path: Path) -> None:
    from salcurate.data.store import MaskStore
    from salcurate.training.harness import cuda_bf16_supported

    ckpt = tmp_path / "scorer.pt"
    assert_ok(invoke(["train-scorer", store, "-o", ckpt, "--device", "cuda", "--epochs", "2", "--batch-size", "8",
                      "--input-size", "64", "--width", "16", "--channels", "24", "--hidden", "16", "--lr", "1e-3",
                      "--workers", "2"]))
    epochs = [json.loads(line) for line in ckpt.with_suffix(".jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2] and all(np.isfinite(e["train_l2"]) for e in epochs)
    assert_ok(invoke(["score-fine", store, "--scorer", ckpt, "--device", "cuda", "--overwrite", "--workers", "2"]))
    with MaskStore(store) as st:
        sf, has_proxy = st.score("sf"), st.has_map("proxy")
        trained = [e["config"] for e in st.run_log() if e["command"] == "train-scorer"][-1]
    assert has_proxy.any() and np.isfinite(sf[has_proxy]).all()
    assert trained["device_used"] == "cuda" and trained["amp_used"] == cuda_bf16_supported()
    assert trained["channels_last_used"]


class _StopAt(Events):
    def __init__(self, at: int) -> None:
        self.at, self.iteration = at, 0

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.iteration = done

    def advance(self, n: int = 1, **info: object) -> None:
        self.iteration += n
        if self.iteration == self.at:
            raise KeyboardInterrupt


def _images(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = [folder / f"im{i}.jpg" for i in range(n)]
    for p in paths:
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(p)
    return paths


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_retrain_resume_evaluate_predict_on_cuda(store: Path, tmp_path: Path) -> None:
    from salcurate.nn.salnet import read_model_file
    from salcurate.training.retrain import RetrainConfig
    from salcurate.training.retrain import run as retrain

    run = tmp_path / "run"
    # the paper's backbone, batch (7) and crop (321), from random weights; 20 iterations, cut at 10
    config = RetrainConfig(store=str(store), selection="none", output=str(run), backbone="vgg16",
                           backbone_weights="none", max_iter=20, device="cuda", workers=2, tensorboard=False,
                           log_every=5, checkpoint_every=5)
    with pytest.raises(SalcurateError, match="interrupted at iteration 10"):
        retrain(config, events=_StopAt(10))
    assert read_model_file(run / "checkpoint.pt")["iteration"] == 10
    assert_ok(invoke(["retrain", store, "--selection", "none", "-o", run, "--backbone", "vgg16", "--backbone-weights",
                      "none", "--max-iter", "20", "--device", "cuda", "--workers", "2", "--no-tensorboard",
                      "--resume"]))
    assert read_model_file(run / "model.pt")["iteration"] == 20
    facts = json.loads((run / "config.json").read_text())
    assert facts["retrain"]["device_used"] == "cuda" and facts["retrain"]["channels_last_used"]
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in logged if "loss" in r)

    report = tmp_path / "eval.json"
    assert_ok(invoke(["evaluate", store, "--model", run, "--split", "val", "--flip", "--device", "cuda",
                      "--json", report]))
    result = json.loads(report.read_text())
    assert result["device"] == "cuda" and all(s["miou"] is not None for s in result["settings"])
    images = _images(tmp_path / "images")
    assert_ok(invoke(["predict", run, *images, "-o", tmp_path / "pred", "--device", "cuda"]))
    for p in images:
        labels = np.asarray(Image.open(tmp_path / "pred" / f"{p.stem}.png"))
        assert labels.shape == (375, 500)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_torchrun_one_process_joins_nccl(store: Path, tmp_path: Path) -> None:
    from salcurate.nn.salnet import read_model_file

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SALCURATE_DIST_BACKEND", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "salcurate",
           "-v", "retrain", str(store), "--selection", "none", "-o", str(out), "--max-iter", "4", "--device", "cuda",
           "--backbone", "resnet18", "--backbone-weights", "none", "--crop", "96", "--batch-size", "2",
           "--workers", "0", "--no-tensorboard", "--log-every", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "joined process group: rank 0 of 1 (nccl)" in proc.stderr
    assert read_model_file(out / "model.pt")["iteration"] == 4
    assert json.loads((out / "config.json").read_text())["retrain"]["world_size"] == 1
