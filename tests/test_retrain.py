"""``retrain``: training runs, exact resume, checkpoints, bad input, many processes (gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_ok, file_digest, invoke, put_selection

from salcurate.data import store as store_mod
from salcurate.errors import InputError, SalcurateError
from salcurate.events import Events
from salcurate.nn.salnet import load_model, read_model_file
from salcurate.paper import PROTOCOLS
from salcurate.training.retrain import RetrainConfig, RetrainResult, poly_lr, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(backbone="resnet18", backbone_weights="none", crop=24, batch_size=2, lr=1e-3, log_every=2, workers=0,
            tensorboard=False)
TINY_ARGS = ["--backbone", "resnet18", "--backbone-weights", "none", "--crop", "24", "--batch-size", "2",
             "--lr", "1e-3", "--workers", "0", "--no-tensorboard", "--log-every", "2"]


@pytest.fixture
def store(tiny_store: Path) -> Path:
    put_selection(tiny_store, "kept3", [1, 1, 0, 1, 1, 1])
    return tiny_store


def _config(store: Path, out: Path, **kw: object) -> RetrainConfig:
    return RetrainConfig(store=str(store), output=str(out), selection="kept3", **{**TINY, **kw})  # type: ignore[arg-type]


class Seen(Events):
    """Records the iteration after each step and the validations; ``stop(iteration)`` may raise."""

    def __init__(self, stop: object = None) -> None:
        self.iteration, self.seen, self.validations, self.stop = 0, [], [], stop

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.iteration = done

    def advance(self, n: int = 1, **info: object) -> None:
        self.iteration += n
        self.seen.append(self.iteration)
        if self.stop is not None:
            self.stop(self)  # type: ignore[operator]

    def metrics(self, record: dict) -> None:
        if "val_miou" in record:
            self.validations.append(record["iteration"])


def retrain(config: RetrainConfig, events: Events | None = None) -> RetrainResult:
    return run(config, events=events)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_model_file(path)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_poly_schedule_is_eq_15() -> None:
    assert poly_lr(1e-3, 0, 100, 0.9) == 1e-3
    assert poly_lr(1e-3, 50, 100, 0.9) == pytest.approx(1e-3 * 0.5 ** 0.9)
    assert poly_lr(1e-3, 100, 100, 0.9) == 0.0


def test_paper_protocol_is_the_default_per_backbone() -> None:
    vgg = RetrainConfig(backbone="vgg16").resolved()
    res = RetrainConfig(backbone="resnet101").resolved()
    assert (vgg.lr, vgg.max_iter, res.lr, res.max_iter) == (1e-3, 27000, 1e-4, 15000)
    assert (vgg.batch_size, vgg.crop, vgg.momentum, vgg.weight_decay, vgg.head_lr_mult, vgg.lam) == (
        7, 321, 0.9, 5e-4, 10.0, 2.0)
    assert RetrainConfig(backbone="resnet50", lr=0.01).resolved().lr == 0.01
    assert set(PROTOCOLS) == {"vgg16", "resnet101", "resnet50", "resnet18"}


def test_a_run_writes_its_files_and_logs(store: Path, tmp_path: Path) -> None:
    events = Seen()
    res = retrain(_config(store, tmp_path / "run", max_iter=4), events)
    seen = events.seen
    out = tmp_path / "run"
    assert seen == [1, 2, 3, 4] and res.iterations == 4
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "model.pt", "log.jsonl", "config.json", "config.toml"}
    lines = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    assert [ln["iteration"] for ln in lines] == [2, 4, 4]  # two training windows, then the final validation
    assert {"loss", "loss_sel", "loss_atten", "lr", "iterations_per_s"} <= lines[0].keys()
    assert lines[0]["loss"] == pytest.approx(lines[0]["loss_sel"] + 2.0 * lines[0]["loss_atten"])
    assert 0.0 <= lines[-1]["val_miou"] <= 1.0 and lines[-1]["val_images"] == 1
    config = json.loads((out / "config.json").read_text())
    assert (config["retrain"]["lr"] == 1e-3 and config["retrain"]["max_iter"] == 4
            and config["retrain"]["world_size"] == 1)
    assert config["counts"]["drawable"] == 3 and config["class_names"][0] == "background"
    model, info = load_model(out / "model.pt")
    assert info["iteration"] == 4 and info["retrain"]["selection"] == "kept3" and info["class_names"][1] == "widget"
    with store_mod.MaskStore(store) as st:
        assert st.run_log()[-1]["command"] == "retrain"


def test_resume_after_ctrl_c_continues_exactly(store: Path, tmp_path: Path) -> None:
    retrain(_config(store, tmp_path / "straight", max_iter=6))

    def interrupt(p: object) -> None:
        if p.iteration == 3:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    with pytest.raises(SalcurateError, match="interrupted at iteration 3; checkpoint saved .* resume"):
        retrain(_config(store, tmp_path / "cut", max_iter=6), Seen(interrupt))
    assert read_model_file(tmp_path / "cut" / "checkpoint.pt")["iteration"] == 3
    res = retrain(_config(store, tmp_path / "cut", max_iter=6, resume=True, workers=1))  # workers do not matter
    assert res.resumed_from == 3 and res.iterations == 6
    _assert_same_weights(tmp_path / "straight" / "model.pt", tmp_path / "cut" / "model.pt")


def test_a_killed_run_loses_at_most_checkpoint_every_iterations(store: Path, tmp_path: Path) -> None:
    retrain(_config(store, tmp_path / "straight", max_iter=6, attention="multitask"))

    def crash(p: object) -> None:
        if p.iteration == 5:  # type: ignore[attr-defined]
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        retrain(_config(store, tmp_path / "killed", max_iter=6, attention="multitask", checkpoint_every=2), Seen(crash))
    assert read_model_file(tmp_path / "killed" / "checkpoint.pt")["iteration"] == 4
    retrain(_config(store, tmp_path / "killed", max_iter=6, attention="multitask", checkpoint_every=2, resume=True))
    _assert_same_weights(tmp_path / "straight" / "model.pt", tmp_path / "killed" / "model.pt")


def test_resume_refuses_another_config_and_a_run_needs_resume(store: Path, tmp_path: Path) -> None:
    retrain(_config(store, tmp_path / "run", max_iter=2))
    with pytest.raises(InputError, match=r"other settings \(crop, lam differ\)"):
        retrain(_config(store, tmp_path / "run", max_iter=2, crop=32, lam=1.0, resume=True))
    with pytest.raises(InputError, match="already holds a run .* pass resume"):
        retrain(_config(store, tmp_path / "run", max_iter=2))
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        retrain(_config(store, tmp_path / "fresh", max_iter=2, resume=True))


def test_crop_larger_than_every_image_is_padded(store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    res = retrain(_config(store, tmp_path / "run", max_iter=1, crop=64, scale_max=1.0, val_split="none"))
    assert res.iterations == 1 and res.validation is None
    assert "crops are padded with the mean and label 255" in caplog.text


def test_periodic_validation(store: Path, tmp_path: Path) -> None:
    events = Seen()
    retrain(_config(store, tmp_path / "run", max_iter=4, val_every=2), events)
    seen = events.validations
    assert seen == [2, 4]


# -- command line ------------------------------------------------------------------------------
def test_cli_retrain_smoke(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(["retrain", store, "--selection", "kept3", "-o", out, "--max-iter", "2", *TINY_ARGS])
    assert_ok(result)
    assert "training on 3 images of 4 in split 'train' (3 kept, 0 strong), validating on 1" in result.stdout
    assert f"model saved to {out / 'model.pt'} after 2 iterations" in result.stdout
    # the run's own validation and `salcurate evaluate` (single scale) measure the same thing
    assert_ok(invoke(["evaluate", store, "--model", out, "--no-multi-scale", "--json", tmp_path / "e.json"]))
    evaluated = json.loads((tmp_path / "e.json").read_text())
    logged = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert evaluated["settings"][0]["miou"] == pytest.approx(logged["val_miou"], abs=1e-9)


@pytest.mark.parametrize("args, text", [
    (["--selection", "best"], "no selection 'best' (the store has: kept3)"),
    ([], "pass --selection NAME (the store has: kept3"),
    (["--selection", "nothing"], "selection 'nothing' keeps no image of split 'train'"),
    (["--selection", "kept3", "--batch-size", "5"], "--batch-size 5 is larger than the 3 images the selection keeps"),
    (["--selection", "kept3", "--lambda", "-1"], "--lambda must be >= 0"),
])
def test_cli_bad_input(store: Path, tmp_path: Path, args: list[str], text: str) -> None:
    put_selection(store, "nothing", [0, 0, 0, 0, 1, 1])
    base = TINY_ARGS if "--batch-size" not in args else TINY_ARGS[:6] + TINY_ARGS[8:]
    before = file_digest(store)
    result = invoke(["retrain", store, "-o", tmp_path / "run", "--max-iter", "1", *base, *args])
    assert result.exit_code == 2, result.stdout
    assert file_digest(store) == before  # the store is left as it was
    text = text.replace("kept3", "kept3, nothing") if "the store has" in text else text
    assert result.stderr.startswith("error: ") and text in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, text", [
    (["--backbone", "alexnet"], "'alexnet' is not one of 'vgg16', 'resnet18', 'resnet50', 'resnet101'"),
    (["--attention", "sometimes"], "'sometimes' is not one of 'multiply', 'multitask', 'off'"),
    (["--sample", "most"], "'most' is not one of 'selected', 'all'"),
])
def test_cli_bad_choice_gets_typers_message(store: Path, tmp_path: Path, args: list[str], text: str) -> None:
    """Choices are enums: a typo gets Typer's own usage error (exit 2) naming the flag, the value and the choices."""
    before = file_digest(store)
    result = invoke(["retrain", store, "-o", tmp_path / "run", "--max-iter", "1", *TINY_ARGS, "--selection", "kept3",
                     *args])
    assert result.exit_code == 2, result.stdout
    assert file_digest(store) == before  # the store is left as it was
    assert "Invalid value for" in result.stderr and args[0] in result.stderr and text in result.stderr, result.stderr



def test_cli_missing_backbone_weights(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    args = [a for a in TINY_ARGS if a not in ("--backbone-weights", "none")]
    result = invoke(["retrain", store, "--selection", "kept3", "-o", tmp_path / "run", "--max-iter", "1", *args])
    assert result.exit_code == 2
    assert "ImageNet weights for resnet18 are not in the torch cache" in result.stderr
    assert "resnet18-f37072fd.pth" in result.stderr and "--backbone-weights none" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cli_no_gpu(store: Path, tmp_path: Path) -> None:
    result = invoke(["retrain", store, "--selection", "kept3", "-o", tmp_path / "run", "--max-iter", "1",
                     *TINY_ARGS, "--device", "cuda"])
    assert result.exit_code == 2 and "--device cuda, but no CUDA GPU is available here" in result.stderr


def test_cli_resume_with_other_config(store: Path, tmp_path: Path) -> None:
    assert_ok(invoke(["retrain", store, "--selection", "kept3", "-o", tmp_path / "run", "--max-iter", "1", *TINY_ARGS]))
    result = invoke(["retrain", store, "--selection", "kept3", "-o", tmp_path / "run", "--max-iter", "1", *TINY_ARGS,
                     "--attention", "off", "--resume"])
    assert result.exit_code == 2 and "other settings (attention differ)" in result.stderr


# -- many processes ------------------------------------------------------------------------------
def test_two_processes_with_gloo(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "salcurate",
           "retrain", str(store), "--selection", "kept3", "-o", str(out), "--max-iter", "4", "--device", "cpu",
           *TINY_ARGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["retrain"]["world_size"] == 2
    lines = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    assert [ln["iteration"] for ln in lines] == [2, 4, 4]  # rank 0 alone writes
    assert proc.stdout.count("model saved to") == 1
    assert read_model_file(out / "model.pt")["iteration"] == 4
    ws = _weights(out / "model.pt")
    assert all(torch.isfinite(v).all() for v in ws.values() if v.is_floating_point())
    assert np.isfinite(lines[-1]["val_miou"])


def test_tensorboard_gets_the_logged_scalars_when_installed(store: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    written: list[tuple[str, float, int]] = []

    class Writer:
        def __init__(self, folder: str) -> None:
            assert folder == str(tmp_path / "run" / "tb")

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

        def close(self) -> None:
            written.append(("closed", 0.0, 0))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    retrain(_config(store, tmp_path / "run", max_iter=2, tensorboard=True))
    tags = {t for t, _, _ in written}
    assert {"loss", "loss_sel", "loss_atten", "lr", "val_miou", "closed"} <= tags
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert ("loss", pytest.approx(first["loss"]), 2) in written


def test_the_gpu_code_path_runs_on_the_cpu(store: Path, tmp_path: Path) -> None:
    """bf16 autocast and channels-last (the CUDA defaults) forced on the CPU: a finite loss, a usable model."""
    res = retrain(_config(store, tmp_path / "run", max_iter=2, amp=True, channels_last=True))
    assert res.config["amp_used"] and res.config["channels_last_used"]
    assert np.isfinite(res.final["loss"]) and np.isfinite(res.validation["val_miou"])


def test_resume_with_imagenet_weights_and_frozen_batch_norm(store: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import resnet18

    from salcurate.nn.salnet import imagenet_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache, _ = imagenet_weights_path("resnet18")
    cache.parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(resnet18().state_dict(), cache)
    kw = dict(max_iter=4, backbone_weights="imagenet")
    retrain(_config(store, tmp_path / "straight", **kw))

    def interrupt(p: object) -> None:
        if p.iteration == 2:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    with pytest.raises(SalcurateError):
        retrain(_config(store, tmp_path / "cut", **kw), Seen(interrupt))
    retrain(_config(store, tmp_path / "cut", resume=True, **kw))
    _assert_same_weights(tmp_path / "straight" / "model.pt", tmp_path / "cut" / "model.pt")
    model, info = load_model(tmp_path / "cut" / "model.pt")
    assert model.bn_frozen and info["config"]["freeze_bn"] is True
    w, imagenet = _weights(tmp_path / "cut" / "model.pt"), torch.load(cache)
    for name in ("weight", "bias", "running_mean", "running_var"):  # frozen: batch norm as loaded
        assert torch.equal(w[f"backbone.stem.1.{name}"], imagenet[f"bn1.{name}"])
    assert not torch.equal(w["backbone.layer1.0.conv1.weight"], imagenet["layer1.0.conv1.weight"])  # convs trained
