"""``benchmarks/score_model_cost.py``: the cost model of ``score-model`` on VOC (issue 12's GPU goal
where no GPU is lent), checked against hand computations of its formula."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def cost() -> ModuleType:
    return load_benchmark("score_model_cost")


def test_the_papers_own_network_costs_the_papers_time(cost: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scaled by FLOPs, the paper's configuration must take exactly the paper's measured times."""
    monkeypatch.setattr(cost, "count", lambda backbone, **kw: {"train_flops_per_iteration": 100,
                                                               "predict_flops_per_image": 10})
    res = cost.estimate(backbone="resnet101", folds=2, iterations=(300,), images=1000, speedup=4.0)
    assert res["gtx1080ti_s_per_iteration"] == pytest.approx(3.8 * 3600 / 15000)
    assert res["gtx1080ti_s_per_image"] == pytest.approx(0.15)
    by_hand = (2 * 300 * 0.912 + 1000 * 0.15) / 60
    assert res["gtx1080ti_minutes_300_iterations"] == pytest.approx(by_hand)
    assert res["modern_gpu_minutes_300_iterations"] == pytest.approx(by_hand / 4)


def test_flops_scale_with_the_work(cost: ModuleType) -> None:
    """Counted on the meta device: twice the batch is twice the training FLOPs; a training step
    costs about three forward passes; a deeper backbone costs more."""
    one = cost.count("resnet18", attention="off", batch=1, crop=65, image=(65, 65))
    two = cost.count("resnet18", attention="off", batch=2, crop=65, image=(65, 65))
    deep = cost.count("resnet50", attention="off", batch=1, crop=65, image=(65, 65))
    assert two["train_flops_per_iteration"] == 2 * one["train_flops_per_iteration"]
    assert 2.5 < one["train_flops_per_iteration"] / one["predict_flops_per_image"] < 3.5
    assert deep["predict_flops_per_image"] > one["predict_flops_per_image"] > 0


@pytest.mark.slow
def test_cli_writes_its_figures(tmp_path: Path, cost: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cost.json"
    assert cost.main(["--backbone", "resnet18", "--iterations", "300", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["modern_gpu_minutes_300_iterations"] < res["gtx1080ti_minutes_300_iterations"]
    assert "min on a GTX 1080 Ti" in capsys.readouterr().out
