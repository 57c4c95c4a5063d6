"""Section 2's facts and Euler per layer, Lemma 1's rebuild and Lemma 2's sides."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.core.engine import gd
from lowrank.core.metrics import alignment_residual, loss_and_gradient
from lowrank.core.models import init_mlp, layer_degrees
from lowrank.data.synthetic import sin_task
from lowrank.theory import identities
from lowrank.theory.identities import (
    euler_layer_residual,
    euler_layer_traces,
    homogeneity_degrees,
    lemma2_residual,
    logistic_fact_gaps,
)

SIG = 1 / (1 + math.exp(1.0))  # −ℓ'(1) = sigmoid(−1)


B2 = 1 / (1 + math.exp(1.0))  # −ℓ'(1)·1 at margin 1


def test_lemma2_residual_takes_a_scalar_lambda_and_a_single_net():
    from lowrank.core.models import init_mlp
    from lowrank.data.synthetic import sin_task

    task = sin_task(10, 4, seed=0)
    ens = init_mlp([4, 3, 3, 1], members=2, seed=0)
    res = lemma2_residual(ens, task.x, task.y, 0.1, 1)
    assert res.shape == (2,)
    single = lemma2_residual([w[0] for w in ens], task.x, task.y, 0.1, 1)
    assert float(single) == pytest.approx(float(res[0]), rel=1e-12)
    with pytest.raises(ValueError, match="H must be the degree"):
        lemma2_residual(ens, task.x, task.y, 0.1, 2, "relu")


def test_coefficients_by_hand(hand_net):
    weights, x, y = hand_net
    r = identities.lemma1_coefficients(weights, x, y, 0.5)  # f = 1, r = sigmoid(−1)/(1·0.5)
    assert torch.allclose(r, torch.tensor([SIG / 0.5], dtype=torch.float64))


def test_rebuild_by_hand(hand_net):
    weights, x, y = hand_net
    r = SIG / 0.5
    w1, w2 = identities.lemma1_rebuild(weights, x, y, 0.5)
    assert torch.allclose(w1, torch.tensor([[r, 0.0], [0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(w2, torch.tensor([[r, 0.0]], dtype=torch.float64))


def test_rebuild_is_minus_gradient_over_lambda_and_rank_one():
    task = sin_task(12, 5, seed=3)
    weights = init_mlp([5, 6, 7, 1], members=2, seed=4)
    lam = 0.1
    _, grads = loss_and_gradient(weights, task.x, task.y, "linear")
    rebuilt = identities.lemma1_rebuild(weights, task.x, task.y, lam)
    for b, g in zip(rebuilt, grads, strict=True):
        assert torch.allclose(b, -g / lam, rtol=1e-12, atol=1e-14)
    for b in rebuilt[:-1]:
        assert (identities.sigma_ratio(b) < 1e-12).all()


def test_non_stationary_point_fails_rebuild():
    task = sin_task(12, 5, seed=3)
    weights = init_mlp([5, 6, 7, 1], members=2, seed=4)
    err = identities.rebuild_errors(weights, task.x, task.y, 0.1)
    _, grads = loss_and_gradient(weights, task.x, task.y, "linear")
    rho = alignment_residual(weights, grads, 0.1, per_layer=True)
    assert (err > 0.1).all()
    assert torch.allclose(err, rho, rtol=1e-10)
    assert (identities.sigma_ratio(weights[0]) > 0.1).all()


def test_trained_deep_linear_net_is_rank_one():
    task = sin_task(16, 4, a=2.0, seed=0)
    weights = init_mlp([4, 6, 6, 1], members=2, seed=0)
    weights, _ = gd(weights, task.x, task.y, 0.05, 0.5, 1500, activation="linear")
    assert (identities.rebuild_errors(weights, task.x, task.y, 0.05) < 1e-12).all()
    for w in weights[:-1]:
        assert (identities.sigma_ratio(w) < 1e-12).all()


def test_sigma_ratio_known_values():
    u = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    assert identities.sigma_ratio(u @ u.T).item() < 1e-15
    ratio = identities.sigma_ratio(torch.diag(torch.tensor([4.0, 1.0])))
    assert ratio.item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="w must"):
        identities.sigma_ratio(torch.ones(3, 1))


def test_rank_one_ratio_bound():
    rho = torch.tensor([0.0, 0.6], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.75], dtype=rho.dtype)
    assert torch.allclose(identities.rank_one_ratio_bound(rho), expected)
    with pytest.raises(ValueError, match="residual"):
        identities.rank_one_ratio_bound(torch.tensor([1.0]))
    # the bound holds for a random matrix against its best rank-one approximation
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(w)
    r1 = s[0] * torch.outer(u[:, 0], vh[0])
    rho = (w - r1).norm() / w.norm()
    assert identities.sigma_ratio(w) <= identities.rank_one_ratio_bound(rho) + 1e-15


def test_bad_inputs_are_refused(hand_net):
    weights, x, y = hand_net
    with pytest.raises(ValueError, match="lam must be > 0"):
        identities.lemma1_coefficients(weights, x, y, 0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        identities.lemma1_coefficients(weights, torch.ones(1, 3, dtype=torch.float64), y, 0.5)
    with pytest.raises(ValueError, match="y must hold"):
        identities.lemma1_coefficients(weights, x, torch.ones(2, dtype=torch.float64), 0.5)


def test_lemma2_gap_and_rebuild_refuse_a_zero_denominator():
    task = sin_task(10, 4, seed=0)
    from lowrank.core.models import init_mlp

    ws = init_mlp([4, 3, 1], seed=0)
    with pytest.raises(ValueError, match="lam must be > 0"):
        identities.lemma2_gap(ws, task.x, task.y, 0.0, "linear")
    with pytest.raises(ValueError, match=r"weights\[1\] is a zero matrix"):
        identities.rebuild_errors([ws[0], torch.zeros_like(ws[1])], task.x, task.y, 0.1)


@pytest.mark.parametrize(("activation", "degrees"), [("linear", [1, 1]), ("relu2", [2, 1])])
def test_sides_by_hand(activation, degrees, hand_net):
    weights, x, y = hand_net  # f(x) = 1 for both activations
    lhs, rhs = identities.lemma2_sides(weights, x, y, 0.5, activation)
    assert torch.allclose(lhs, torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert torch.allclose(rhs, B2 * torch.tensor(degrees, dtype=torch.float64))


@pytest.mark.parametrize("activation", ["linear", "relu", "relu2"])
def test_euler_identity_behind_the_rhs(activation):
    task = sin_task(20, 5, seed=1)
    weights = init_mlp([5, 6, 6, 1], members=3, seed=2)
    _, grads = loss_and_gradient(weights, 1.5 * task.x, task.y, activation)
    _, rhs = identities.lemma2_sides(weights, 1.5 * task.x, task.y, 0.1, activation)
    pairs = zip(weights, grads, strict=True)
    inner = torch.stack([-(w * g).sum(dim=(-2, -1)) for w, g in pairs], -1)
    assert torch.allclose(inner, rhs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation", ["linear", "relu", "relu2"])
def test_non_stationary_point_breaks_lemma2(activation):
    task = sin_task(20, 5, seed=1)
    weights = init_mlp([5, 6, 6, 1], members=3, seed=2)
    gap = identities.lemma2_gap(weights, 1.5 * task.x, task.y, 0.1, activation)
    _, grads = loss_and_gradient(weights, 1.5 * task.x, task.y, activation)
    rho = alignment_residual(weights, grads, 0.1, per_layer=True)
    assert gap.max() > 0.3
    assert (gap <= rho + 1e-13).all()  # Cauchy–Schwarz holds everywhere


@pytest.mark.parametrize("activation", ["relu", "relu2"])
def test_gd_step_identity(activation):
    task = sin_task(20, 5, seed=1)
    weights = init_mlp([5, 6, 6, 1], members=3, seed=2)
    x = 1.5 * task.x
    signed = identities.lemma2_signed_gap(weights, x, task.y, 0.1, activation)
    via_step = identities.lemma2_gap_from_gd_step(weights, x, task.y, 0.1, 0.3, activation)
    assert torch.allclose(signed, via_step, rtol=0, atol=1e-10)


def test_stationary_linear_net_satisfies_lemma2():
    task = sin_task(16, 4, a=2.0, seed=0)
    weights = init_mlp([4, 6, 6, 1], members=2, seed=0)
    weights, _ = gd(weights, task.x, task.y, 0.05, 0.5, 1500, activation="linear")
    assert identities.lemma2_gap(weights, task.x, task.y, 0.05, "linear").max() < 1e-12


def test_bad_inputs_are_refused_norm_preservation(hand_net):
    weights, x, y = hand_net
    with pytest.raises(ValueError, match="activation"):
        identities.lemma2_sides(weights, x, y, 0.5, "tanh")
    with pytest.raises(ValueError, match="lam"):
        identities.lemma2_sides(weights, x, y, -1.0, "relu")
    with pytest.raises(ValueError, match="y must hold"):
        identities.lemma2_sides(weights, x, torch.ones(3, dtype=torch.float64), 0.5, "relu")


def test_gd_step_identity_refuses_bad_step(hand_net):
    weights, x, y = hand_net
    with pytest.raises(ValueError, match="eta"):
        identities.lemma2_gap_from_gd_step(weights, x, y, 0.5, 0.0, "relu")


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
    from lowrank.core.models import forward

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
