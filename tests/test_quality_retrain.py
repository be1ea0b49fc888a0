"""``benchmarks/quality_retrain.py``'s helpers: q ranked within each tag count (run P4qs)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("quality_retrain")


def test_group_percentile_by_hand(bench: ModuleType) -> None:
    values = np.array([0.9, 0.1, 0.5, np.nan, 0.3, 0.2])
    groups = np.array([1, 1, 1, 1, 2, 2])
    # group 1 (finite): 0.1 < 0.5 < 0.9 -> 1/3, 2/3, 3/3; group 2: 0.2 < 0.3 -> 1/2, 2/2
    expected = np.array([1.0, 1 / 3, 2 / 3, np.nan, 1.0, 0.5])
    np.testing.assert_allclose(bench.group_percentile(values, groups), expected)


def test_the_best_half_by_group_percentile_keeps_each_groups_share(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([1, 2, 3], [400, 200, 100])
    values = rng.random(700) - 0.3 * groups  # more tags, lower score: a global cut would drop group 3
    best = np.argsort(-bench.group_percentile(values, groups), kind="stable")[:350]
    assert np.bincount(groups[best], minlength=4)[1:].tolist() == [200, 100, 50]
