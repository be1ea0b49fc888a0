"""``benchmarks/gpu_check.py`` (issue #14) in smoke mode on the CPU: every section leaves its lines,
each line holds numbers or says why it was skipped, and bad input is one line with exit 2."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
KEYS = {"name", "section", "status", "figures", "info", "error", "skipped", "device", "torch", "date", "seconds"}


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return load_benchmark("gpu_check")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], str]:
    """The smoke run's lines and its printed output."""
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # the CPU, whatever the machine
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "figures.jsonl").read_text().splitlines()]
    return lines, proc.stdout


def _by_name(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in lines}


def test_every_section_ends_with_its_line_in_priority_order(smoke: tuple[list[dict[str, Any]], str],
                                                            gpu_check: ModuleType) -> None:
    lines, printed = smoke
    ends = [r["name"] for r in lines if r["name"] == r["section"]]
    assert ends == list(gpu_check.SECTION_NAMES)
    assert ends[:3] == ["environment", "matmul", "gpu_tests"]
    assert all(r["section"] in gpu_check.SECTION_NAMES for r in lines)
    assert "figures: " in printed and "score_fine: ok" in printed


def test_every_line_holds_numbers_or_says_why_it_was_skipped(smoke: tuple[list[dict[str, Any]], str]) -> None:
    lines, _ = smoke
    errors = [(r["name"], r["error"]) for r in lines if r["status"] == "error"]
    assert not errors  # on the CPU, in smoke mode, everything runs or is skipped with a reason
    for r in lines:
        assert set(r) == KEYS, r["name"]
        assert r["status"] in ("ok", "skipped") and r["device"].startswith("CPU") and r["torch"] == torch.__version__
        assert r["date"][:2] == "20" and r["seconds"] >= 0
        if r["status"] == "ok":
            assert r["figures"] and r["skipped"] is None, r["name"]
            for k, v in r["figures"].items():
                assert isinstance(v, (int, float)) and math.isfinite(v), (r["name"], k, v)
        else:
            assert isinstance(r["skipped"], str) and r["skipped"].strip() and not r["figures"], r["name"]


def test_the_cpu_skips_what_needs_a_gpu_and_says_so(smoke: tuple[list[dict[str, Any]], str]) -> None:
    lines, _ = smoke
    by = _by_name(lines)
    assert by["torchrun_nccl"]["status"] == "skipped" and "CUDA" in by["torchrun_nccl"]["skipped"]
    for name in ("scorer_compiled", "salnet_compiled"):
        assert by[name]["status"] == "skipped" and "smoke" in by[name]["skipped"]
    tests = [r for r in lines if r["section"] == "gpu_tests" and r["name"] != "gpu_tests"]
    assert len(tests) >= 6 and all(r["status"] == "skipped" and "CUDA" in r["skipped"] for r in tests)
    assert by["gpu_tests"]["figures"]["skipped"] == len(tests) and by["gpu_tests"]["figures"]["failed"] == 0


def test_the_issue_figures_are_there(smoke: tuple[list[dict[str, Any]], str]) -> None:
    lines, _ = smoke
    by = _by_name(lines)
    assert by["matmul"]["figures"]["bf16_tflops"] > 0 and by["matmul"]["figures"]["fp32_tflops"] > 0
    scorer = by["scorer_forward"]["figures"]
    assert {"bf16_images_per_s_b4", "fp32_images_per_s_b4", "bf16_best_batch", "bf16_tflops_b4"} <= set(scorer)
    assert by["scorer_forward/bf16/eager/b4"]["figures"]["fraction_of_bf16_matmul"] > 0
    assert by["salnet_train"]["figures"]["resnet18_bf16_ms_per_iter"] > 0
    fine = by["score_fine"]["figures"]
    assert fine["images"] == 40 and fine["images_per_s"] > 0
    shares = [fine[f"{k}_share"] for k in ("store", "decode", "resize", "model")]
    assert sum(shares) == pytest.approx(1.0, abs=1e-4)
    train = by["train_scorer/epoch/b8"]["figures"]
    assert train["train_items"] >= 48 and train["seconds_per_10k_samples"] > 0  # as many items as asked for
    assert by["train_scorer"]["figures"]["fastest_batch"] in (4, 8)
    evaluate = by["evaluate"]["figures"]
    assert evaluate["single_scale_images_per_s"] > 0 and evaluate["multi_scale_flip_images_per_s"] > 0
    cams = by["cam_proxies"]["figures"]
    assert cams["images"] == 2 and cams["images_per_s"] > 0
    assert cams["voc_10582_minutes"] == pytest.approx(10582 / cams["images_per_s"] / 60, rel=1e-6)
    model = by["score_model"]["figures"]
    assert model["images"] == 40 and model["folds"] == 2 and model["iterations_per_fold"] == 2
    assert model["voc_10582_minutes_300_iterations"] == pytest.approx(
        (2 * 300 * model["train_s_per_iteration"] + 10582 / model["predict_images_per_s"]) / 60, rel=1e-6)
    assert model["voc_10582_minutes_3000_iterations"] > model["voc_10582_minutes_300_iterations"] > 0


def test_bad_input_is_one_line_and_exit_2(gpu_check: ModuleType, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    if not torch.cuda.is_available():
        assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: --device cuda, but no CUDA GPU is available here")
    assert gpu_check.main(["--device", "cpu", "--only", "nonsense", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--only: unknown sections nonsense" in err and "score_fine" in err
    assert gpu_check.main(["--device", "cpu", "--budget-s", "0", "--out", str(tmp_path)]) == 2
    assert "--budget-s must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "figures.jsonl").exists()


def test_only_runs_the_sections_named(gpu_check: ModuleType, tmp_path: Path) -> None:
    assert gpu_check.main(["--device", "cpu", "--smoke", "--only", "environment,torchrun_nccl", "--out",
                           str(tmp_path)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "figures.jsonl").read_text().splitlines()]
    assert [r["name"] for r in lines] == ["environment", "torchrun_nccl"]


def test_a_spent_budget_skips_the_rest_and_says_so(gpu_check: ModuleType, tmp_path: Path) -> None:
    assert gpu_check.main(["--device", "cpu", "--budget-s", "1", "--out", str(tmp_path)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "figures.jsonl").read_text().splitlines()]
    assert [r["name"] for r in lines] == list(gpu_check.SECTION_NAMES)
    assert all(r["status"] == "skipped" and r["skipped"].startswith("time budget: ") for r in lines)
