"""Chapter 7: the warm-up bound along linear GD holds, and fails when ε is understated."""

from __future__ import annotations

import pytest
import torch

from lowrank.chapters.ch07_merging_linear import warmup_check
from lowrank.data.synthetic import TaskPair, eps_task_pair

TOL = 1e-10  # float64 rounding over a few hundred steps of O(1) quantities is ~1e-14


def test_warmup_bound_holds_and_fails_when_eps_is_understated():
    pair = eps_task_pair(30, 11, 0.1, overlap="label", seed=2)
    theta0 = torch.randn(11, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    good = warmup_check(pair, theta0, 0.05, 0.5, 300)
    assert good["min_slack"] >= -TOL and good["identity_residual"] < 1e-13
    lied = TaskPair(pair.first, pair.second, eps=0.01, max_overlap=pair.max_overlap)
    assert warmup_check(lied, theta0, 0.05, 0.5, 300)["min_slack"] < -1e-3


def test_warmup_large_step_counterexample():
    pair = eps_task_pair(30, 11, 0.0, seed=2)
    theta0 = torch.randn(11, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with pytest.raises(ValueError, match="eta\\*lam"):
        warmup_check(pair, theta0, 0.5, 3.0, 4)
    res = warmup_check(pair, theta0, 0.5, 3.0, 4, allow_large_step=True)
    assert res["min_slack"] < -0.1
