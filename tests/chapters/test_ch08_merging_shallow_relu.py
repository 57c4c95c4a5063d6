"""Chapter 8: Lemma 4 and Appendix C.2 measured against their bounds."""

from __future__ import annotations

import pytest
import torch

from lowrank.chapters.ch08_merging_shallow_relu import lemma4_check
from lowrank.core.models import unit_output_vector
from lowrank.data.synthetic import TaskPair, eps_task_pair

TOL = 1e-10  # float64 rounding over a few hundred steps of O(1) quantities is ~1e-14


def _init(m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=torch.float64) / d**0.5


def _lemma4(pair, u=None, lams=(0.0, 0.05), steps=120, eta=0.5, **kw):
    u = unit_output_vector(8, seed=2) if u is None else u
    return lemma4_check(pair, u, _init(8, 11, 5), _init(8, 11, 6), lams, eta, steps, 10, **kw)


def _min(rows, key):
    return min(r[key] for r in rows)


@pytest.mark.parametrize("overlap", ["uniform", "label"])
def test_lemma4_and_merge_bounds_hold(overlap):
    rows = _lemma4(eps_task_pair(24, 11, 0.1, overlap=overlap, seed=0))
    for key in ("norm_slack", "row_slack", "gap_slack", "loss_slack"):
        assert _min(rows, key) >= -TOL, key


def test_lemma4_is_an_equality_for_orthogonal_tasks():
    rows = _lemma4(eps_task_pair(24, 11, 0.0, seed=0))
    # ε = 0: W_t x' = (1 − ηλ)^t W_0 x' exactly, so the bound is attained
    assert max(abs(r["norm_slack"]) for r in rows) < TOL
    final = {r["lam"]: r["norm_max"] for r in rows if r["step"] == 120 and r["side"] == "first"}
    initial = {r["lam"]: r["norm_max"] for r in rows if r["step"] == 0 and r["side"] == "first"}
    assert final[0.0] == pytest.approx(initial[0.0], rel=1e-12)  # λ = 0: never decays
    assert final[0.05] == pytest.approx(initial[0.05] * (1 - 0.025) ** 120, rel=1e-10)


def test_lemma4_fails_for_overlapping_tasks_passed_as_orthogonal():
    pair = eps_task_pair(24, 11, 0.2, overlap="label", seed=0)
    lied = TaskPair(pair.first, pair.second, eps=0.0, max_overlap=0.0)
    assert _min(_lemma4(lied), "norm_slack") < -1e-2
    assert _min(_lemma4(lied), "row_slack") < -1e-2


def test_gap_bound_needs_unit_u():
    pair = eps_task_pair(24, 11, 0.1, seed=0)
    big_u = 4 * unit_output_vector(8, seed=2)
    assert _min(_lemma4(pair, u=big_u, lams=(0.0,)), "gap_slack") < -1e-3


def test_lemma4_large_step_counterexample():
    pair = eps_task_pair(24, 11, 0.0, seed=0)
    with pytest.raises(ValueError, match="eta\\*lam"):
        _lemma4(pair, lams=(1.5,), eta=1.0, steps=3)
    rows = _lemma4(pair, lams=(1.5,), eta=1.0, steps=3, allow_large_step=True)
    # the initial term changes sign at odd steps: ‖W_1x'‖ = 0.5‖W_0x'‖ > −0.5‖W_0x'‖
    assert _min(rows, "norm_slack") < -0.1
