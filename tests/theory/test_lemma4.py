"""The warm-up bound, Lemma 4 and the unrolled-GD identity."""

from __future__ import annotations

import pytest
import torch

from lowrank.core.engine import linear_gd
from lowrank.data.synthetic import eps_task_pair
from lowrank.theory import lemma4
from lowrank.theory.lemma4 import (
    decay_bound_any_step,
    lemma4_bound,
    merged_loss_bound,
    printed_decay_terms,
    unrolled_theta,
    warmup_alphas,
    warmup_bound,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize(
    "fn", [lemma4.warmup_bound, lemma4.lemma4_bound, lemma4.decay_bound_any_step]
)
def test_decay_bounds_refuse_non_finite_init_and_eps(fn):
    with pytest.raises(ValueError, match="must be >= 0 and finite"):
        fn(float("nan"), 0.1, 0.01, 1.0, 5)
    with pytest.raises(ValueError, match="eps must be >= 0 and finite"):
        fn(1.0, float("inf"), 0.01, 1.0, 5)
    with pytest.raises(ValueError, match="eps must be >= 0 and finite"):
        fn(1.0, float("nan"), 0.01, 1.0, 5)


def test_bound_values_by_hand():
    # q = 1 - ηλ = 0.5, t = 2: 1·0.25 + 0.1·(1 − 0.25)/0.5 = 0.4
    assert float(lemma4_bound(1.0, 0.1, 0.5, 1.0, 2)) == pytest.approx(0.4, abs=1e-15)
    assert float(warmup_bound(2.0, 0.0, 0.5, 1.0, 3)) == pytest.approx(0.25, abs=1e-15)
    # λ = 0: the initial term never decays and the ε term grows like εηt
    decay, acc = printed_decay_terms(0.0, 0.5, torch.tensor([0, 4]))
    assert decay.tolist() == [1.0, 1.0] and acc.tolist() == [0.0, 2.0]
    assert float(lemma4_bound(1.5, 0.1, 0.0, 0.5, 4)) == pytest.approx(1.7)
    # any step: |1 − 1.5| = 0.5, t = 2: 0.25 + 0.1·1·(1 + 0.5) = 0.4
    assert float(decay_bound_any_step(1.0, 0.1, 1.5, 1.0, 2)) == pytest.approx(0.4)
    assert float(decay_bound_any_step(1.0, 0.1, 0.0, 1.0, 3)) == pytest.approx(1.3)
    assert float(merged_loss_bound(0.3, t([0.1, 0.3]))) == pytest.approx(0.5)


def test_tiny_decay_is_accurate():
    # ηλ = 1e-12: (1 − (1 − ηλ)^t)/λ must be ≈ ηt, not cancellation noise
    _, acc = printed_decay_terms(1e-12, 1.0, 1000)
    assert float(acc) == pytest.approx(1000.0, rel=1e-8)


def test_printed_bound_refuses_large_steps_and_is_wrong_there():
    with pytest.raises(ValueError, match="eta\\*lam must be <= 1"):
        lemma4_bound(1.0, 0.0, 1.5, 1.0, 1)
    # ε = 0, ηλ = 1.5: W_1x' = −0.5 W_0x', yet the printed bound is −0.5‖W_0x'‖ < 0
    printed = lemma4_bound(1.0, 0.0, 1.5, 1.0, 1, allow_large_step=True)
    assert float(printed) == pytest.approx(-0.5)
    assert float(decay_bound_any_step(1.0, 0.0, 1.5, 1.0, 1)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1.0, -0.1, 0.1, 1.0, 1), "eps must be >= 0"),
        ((1.0, 0.1, -0.1, 1.0, 1), "lam must be >= 0"),
        ((1.0, 0.1, 0.1, 0.0, 1), "eta must be > 0"),
        ((1.0, 0.1, 0.1, 1.0, -1), "t must be a non-negative integer"),
        ((1.0, 0.1, 0.1, 1.0, 1.5), "t must be a non-negative integer"),
        ((-1.0, 0.1, 0.1, 1.0, 1), "must be >= 0"),
    ],
)
def test_bound_arguments_are_checked(args, match):
    with pytest.raises(ValueError, match=match):
        lemma4_bound(*args)


def test_linear_gd_one_step_by_hand():
    # θ_0 = 0, one input (1, 0) with y = 1: ℓ'(0) = −1/2, so θ_1 = η/2 · (1, 0)
    thetas = linear_gd(t([0.0, 0.0]), t([[1.0, 0.0]]), t([1.0]), lam=0.3, eta=1.0, steps=1)
    assert torch.allclose(thetas[1], t([0.5, 0.0]), atol=1e-16)
    alphas = warmup_alphas(thetas, t([[1.0, 0.0]]), t([1.0]), lam=0.3, eta=1.0)
    assert alphas[1].item() == pytest.approx(0.5)  # positive: the paper's α would be −0.5


def test_alpha_identity_holds_and_the_printed_sign_breaks_it():
    pair = eps_task_pair(20, 9, 0.1, seed=1)
    x, y = pair.first.x, pair.first.y
    theta0 = torch.randn(9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    thetas = linear_gd(theta0, x, y, 0.05, 0.5, 200)
    alphas = warmup_alphas(thetas, x, y, 0.05, 0.5)
    scale = thetas.abs().max()
    exact = (thetas - unrolled_theta(theta0, x, alphas, 0.05, 0.5)).abs().max() / scale
    printed = (thetas - unrolled_theta(theta0, x, -alphas, 0.05, 0.5)).abs().max() / scale
    assert exact < 1e-13
    assert printed > 0.1
