"""Tests of lowrank.preliminaries: the logistic-loss facts and Euler's theorem per layer."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.nets import init_mlp, layer_degrees
from lowrank.preliminaries import (
    euler_layer_residual,
    euler_layer_traces,
    homogeneity_degrees,
    logistic_fact_gaps,
)


def test_fact_gaps_known_values_at_zero():
    gaps = logistic_fact_gaps(torch.tensor([0.0], dtype=torch.float64))
    ln2 = math.log(2.0)
    assert gaps["-l' <= l"].item() == pytest.approx(ln2 - 0.5, rel=1e-15)
    assert gaps["x l' <= l"].item() == pytest.approx(ln2, rel=1e-15)
    assert gaps["-x l' <= sqrt(l)"].item() == pytest.approx(math.sqrt(ln2), rel=1e-15)


def test_true_facts_hold_and_false_one_fails_on_grid():
    x = torch.linspace(-50, 50, 10_001, dtype=torch.float64)
    gaps = logistic_fact_gaps(x)
    eps = torch.finfo(torch.float64).eps
    loss = torch.nn.functional.softplus(-x)
    for name in ("-l' <= l", "x l' <= l"):
        assert bool((gaps[name] >= -4 * eps * loss).all()), name
    assert bool((gaps["-x l' <= sqrt(l)"] >= 0).all())
    wrong = gaps["-x l' <= l (false)"] < 0
    assert bool(wrong.any())
    assert x[wrong].min().item() == pytest.approx(1.1446, abs=0.01)  # crossing x* ≈ 1.14455


def test_fact_gaps_refuse_nan():
    with pytest.raises(ValueError, match="x contains NaN"):
        logistic_fact_gaps(torch.tensor([float("nan")]))


@pytest.mark.parametrize("activation", ["linear", "relu", "relu2"])
def test_euler_per_layer(activation):
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = init_mlp([5, 7, 7, 1], seed=1)
    assert euler_layer_residual(w, x, activation).max().item() < 1e-12


def test_euler_traces_known_values_shallow_linear():
    # f(x) = w2 W1 x: every layer trace equals f itself (degree 1).
    w = [torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64),
         torch.tensor([[3.0, -1.0]], dtype=torch.float64)]
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    assert euler_layer_traces(w, x, "linear").flatten().tolist() == [8.0, 8.0]
    # squared ReLU, K = 2: layer 1 has degree H = 2, layer 2 degree 1: f = 3·9 − 1·1 = 26
    assert euler_layer_traces(w, x, "relu2").flatten().tolist() == [52.0, 26.0]


def test_euler_with_wrong_degrees_fails():
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = init_mlp([5, 7, 7, 1], seed=1)
    traces = euler_layer_traces(w, x, "relu2")
    from lowrank.nets import forward

    f = forward(w, x, "relu2")
    wrong = torch.tensor(layer_degrees(3, 1), dtype=f.dtype)[:, None] * f  # H = 1 degrees
    assert (traces - wrong).abs().max().item() > 0.1 * f.abs().max().item()


def test_euler_refuses_ensemble():
    w = init_mlp([3, 4, 1], members=2)
    with pytest.raises(ValueError, match="not an ensemble"):
        euler_layer_traces(w, torch.zeros(2, 3, dtype=torch.float64), "relu")


def test_euler_residual_refuses_a_network_that_outputs_zero():
    w = init_mlp([3, 4, 1], seed=0)
    w = [w[0], torch.zeros_like(w[1])]
    with pytest.raises(ValueError, match="f = 0"):
        euler_layer_residual(w, torch.eye(3, dtype=torch.float64), "relu")


@pytest.mark.parametrize("activation", ["linear", "relu", "relu2"])
@pytest.mark.parametrize("K", [2, 3])
def test_homogeneity_degrees_in_input_and_parameters(activation, K):
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    w = init_mlp([5] + [7] * (K - 1) + [1], seed=K)
    H = 2 if activation == "relu2" else 1
    deg = homogeneity_degrees(w, x, activation, alpha=0.6)
    assert (deg["degree_x"] - H ** (K - 1)).abs().max() < 1e-11
    assert (deg["degree_theta"] - sum(layer_degrees(K, H))).abs().max() < 1e-11
    assert deg["euler_x"] < 1e-12
    if H == 1:  # Section 2's printed f_θ(αx) = α^K f_θ(x) is refuted by the measurement
        assert (deg["degree_x"] - K).abs().min() > 0.99


def test_homogeneity_degrees_known_values_and_wrong_input():
    # f(x) = 3·(x_1)_+ − (x_2)_+ has degree 1 in x and 2 in θ = (W_1, w_2)
    w = [torch.eye(2, dtype=torch.float64), torch.tensor([[3.0, -1.0]], dtype=torch.float64)]
    x = torch.tensor([[0.6, 0.8], [0.5, -0.1]], dtype=torch.float64)
    deg = homogeneity_degrees(w, x, "relu", alpha=2.0)
    assert deg["degree_x"].tolist() == pytest.approx([1.0, 1.0], abs=1e-14)
    assert deg["degree_theta"].tolist() == pytest.approx([2.0, 2.0], abs=1e-14)
    # α = 1 measures nothing (log α = 0), and the zero network has no degree: both refused
    with pytest.raises(ValueError, match="alpha"):
        homogeneity_degrees(w, x, "relu", alpha=1.0)
    with pytest.raises(ValueError, match="f = 0"):
        homogeneity_degrees([w[0], torch.zeros(1, 2, dtype=torch.float64)], x, "relu")
