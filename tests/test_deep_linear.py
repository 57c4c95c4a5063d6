"""Lemma 1 helpers: r_i(θ), the rebuild of every layer, σ₂/σ₁ and the rank-one bound."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank import deep_linear as dl
from lowrank.data import sin_task
from lowrank.metrics import alignment_residual, loss_and_gradient
from lowrank.nets import init_mlp
from lowrank.train import gd

SIG = 1 / (1 + math.exp(1.0))  # −ℓ'(1) = sigmoid(−1)


def test_coefficients_by_hand(hand_net):
    weights, x, y = hand_net
    r = dl.lemma1_coefficients(weights, x, y, 0.5)  # f = 1, r = sigmoid(−1)/(1·0.5)
    assert torch.allclose(r, torch.tensor([SIG / 0.5], dtype=torch.float64))


def test_rebuild_by_hand(hand_net):
    weights, x, y = hand_net
    r = SIG / 0.5
    w1, w2 = dl.lemma1_rebuild(weights, x, y, 0.5)
    assert torch.allclose(w1, torch.tensor([[r, 0.0], [0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(w2, torch.tensor([[r, 0.0]], dtype=torch.float64))


def test_rebuild_is_minus_gradient_over_lambda_and_rank_one():
    task = sin_task(12, 5, seed=3)
    weights = init_mlp([5, 6, 7, 1], members=2, seed=4)
    lam = 0.1
    _, grads = loss_and_gradient(weights, task.x, task.y, "linear")
    rebuilt = dl.lemma1_rebuild(weights, task.x, task.y, lam)
    for b, g in zip(rebuilt, grads, strict=True):
        assert torch.allclose(b, -g / lam, rtol=1e-12, atol=1e-14)
    for b in rebuilt[:-1]:
        assert (dl.sigma_ratio(b) < 1e-12).all()


def test_non_stationary_point_fails_rebuild():
    task = sin_task(12, 5, seed=3)
    weights = init_mlp([5, 6, 7, 1], members=2, seed=4)
    err = dl.rebuild_errors(weights, task.x, task.y, 0.1)
    _, grads = loss_and_gradient(weights, task.x, task.y, "linear")
    rho = alignment_residual(weights, grads, 0.1, per_layer=True)
    assert (err > 0.1).all()
    assert torch.allclose(err, rho, rtol=1e-10)
    assert (dl.sigma_ratio(weights[0]) > 0.1).all()


def test_trained_deep_linear_net_is_rank_one():
    task = sin_task(16, 4, a=2.0, seed=0)
    weights = init_mlp([4, 6, 6, 1], members=2, seed=0)
    weights, _ = gd(weights, task.x, task.y, 0.05, 0.5, 1500, activation="linear")
    assert (dl.rebuild_errors(weights, task.x, task.y, 0.05) < 1e-12).all()
    for w in weights[:-1]:
        assert (dl.sigma_ratio(w) < 1e-12).all()


def test_sigma_ratio_known_values():
    u = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    assert dl.sigma_ratio(u @ u.T).item() < 1e-15
    assert dl.sigma_ratio(torch.diag(torch.tensor([4.0, 1.0]))).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="w must"):
        dl.sigma_ratio(torch.ones(3, 1))


def test_rank_one_ratio_bound():
    rho = torch.tensor([0.0, 0.6], dtype=torch.float64)
    assert torch.allclose(dl.rank_one_ratio_bound(rho), torch.tensor([0.0, 0.75], dtype=rho.dtype))
    with pytest.raises(ValueError, match="residual"):
        dl.rank_one_ratio_bound(torch.tensor([1.0]))
    # the bound holds for a random matrix against its best rank-one approximation
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(w)
    r1 = s[0] * torch.outer(u[:, 0], vh[0])
    rho = (w - r1).norm() / w.norm()
    assert dl.sigma_ratio(w) <= dl.rank_one_ratio_bound(rho) + 1e-15


def test_bad_inputs_are_refused(hand_net):
    weights, x, y = hand_net
    with pytest.raises(ValueError, match="lam must be > 0"):
        dl.lemma1_coefficients(weights, x, y, 0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        dl.lemma1_coefficients(weights, torch.ones(1, 3, dtype=torch.float64), y, 0.5)
    with pytest.raises(ValueError, match="y must hold"):
        dl.lemma1_coefficients(weights, x, torch.ones(2, dtype=torch.float64), 0.5)


def test_lemma2_gap_and_rebuild_refuse_a_zero_denominator():
    task = sin_task(10, 4, seed=0)
    from lowrank.nets import init_mlp

    ws = init_mlp([4, 3, 1], seed=0)
    with pytest.raises(ValueError, match="lam must be > 0"):
        dl.lemma2_gap(ws, task.x, task.y, 0.0, "linear")
    with pytest.raises(ValueError, match=r"weights\[1\] is a zero matrix"):
        dl.rebuild_errors([ws[0], torch.zeros_like(ws[1])], task.x, task.y, 0.1)
