"""Lemma 2 helpers: both sides of the identity, the gap, its bounds and the GD-step identity."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank import deep_linear as dl
from lowrank.data import sin_task
from lowrank.metrics import alignment_residual, loss_and_gradient
from lowrank.nets import init_mlp
from lowrank.train import gd

B2 = 1 / (1 + math.exp(1.0))  # −ℓ'(1)·1 at margin 1


@pytest.mark.parametrize(("activation", "degrees"), [("linear", [1, 1]), ("relu2", [2, 1])])
def test_sides_by_hand(activation, degrees, hand_net):
    weights, x, y = hand_net  # f(x) = 1 for both activations
    lhs, rhs = dl.lemma2_sides(weights, x, y, 0.5, activation)
    assert torch.allclose(lhs, torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert torch.allclose(rhs, B2 * torch.tensor(degrees, dtype=torch.float64))


@pytest.mark.parametrize("activation", ["linear", "relu", "relu2"])
def test_euler_identity_behind_the_rhs(activation):
    task = sin_task(20, 5, seed=1)
    weights = init_mlp([5, 6, 6, 1], members=3, seed=2)
    _, grads = loss_and_gradient(weights, 1.5 * task.x, task.y, activation)
    _, rhs = dl.lemma2_sides(weights, 1.5 * task.x, task.y, 0.1, activation)
    pairs = zip(weights, grads, strict=True)
    inner = torch.stack([-(w * g).sum(dim=(-2, -1)) for w, g in pairs], -1)
    assert torch.allclose(inner, rhs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation", ["linear", "relu", "relu2"])
def test_non_stationary_point_breaks_lemma2(activation):
    task = sin_task(20, 5, seed=1)
    weights = init_mlp([5, 6, 6, 1], members=3, seed=2)
    gap = dl.lemma2_gap(weights, 1.5 * task.x, task.y, 0.1, activation)
    _, grads = loss_and_gradient(weights, 1.5 * task.x, task.y, activation)
    rho = alignment_residual(weights, grads, 0.1, per_layer=True)
    assert gap.max() > 0.3
    assert (gap <= rho + 1e-13).all()  # Cauchy–Schwarz holds everywhere


@pytest.mark.parametrize("activation", ["relu", "relu2"])
def test_gd_step_identity(activation):
    task = sin_task(20, 5, seed=1)
    weights = init_mlp([5, 6, 6, 1], members=3, seed=2)
    x = 1.5 * task.x
    signed = dl.lemma2_signed_gap(weights, x, task.y, 0.1, activation)
    via_step = dl.lemma2_gap_from_gd_step(weights, x, task.y, 0.1, 0.3, activation)
    assert torch.allclose(signed, via_step, rtol=0, atol=1e-10)


def test_stationary_linear_net_satisfies_lemma2():
    task = sin_task(16, 4, a=2.0, seed=0)
    weights = init_mlp([4, 6, 6, 1], members=2, seed=0)
    weights, _ = gd(weights, task.x, task.y, 0.05, 0.5, 1500, activation="linear")
    assert dl.lemma2_gap(weights, task.x, task.y, 0.05, "linear").max() < 1e-12


def test_recorder_rows():
    task = sin_task(10, 4, seed=0)
    weights = init_mlp([4, 5, 1], members=2, seed=0)
    rows = dl.lemma2_recorder(task.x, task.y, 0.1, "relu")(0, weights, torch.zeros(2))
    assert len(rows) == 4 and {"lhs", "rhs", "gap", "residual"} <= set(rows[0])
    assert all(r["gap"] <= r["residual"] + 1e-13 for r in rows)


def test_bad_inputs_are_refused(hand_net):
    weights, x, y = hand_net
    with pytest.raises(ValueError, match="activation"):
        dl.lemma2_sides(weights, x, y, 0.5, "tanh")
    with pytest.raises(ValueError, match="lam"):
        dl.lemma2_sides(weights, x, y, -1.0, "relu")
    with pytest.raises(ValueError, match="y must hold"):
        dl.lemma2_sides(weights, x, torch.ones(3, dtype=torch.float64), 0.5, "relu")


def test_gd_step_identity_refuses_bad_step(hand_net):
    weights, x, y = hand_net
    with pytest.raises(ValueError, match="eta"):
        dl.lemma2_gap_from_gd_step(weights, x, y, 0.5, 0.0, "relu")
