"""Gradient flows of deep linear nets (Eq. 1) and their end-to-end form (Eq. 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowrank.core import flow
from lowrank.core.metrics import loss_and_gradient
from lowrank.core.models import init_mlp
from lowrank.data.synthetic import orthogonal_tasks


@pytest.fixture(scope="module")
def tasks():
    return orthogonal_tasks(12, 6, seed=0)


_X2, _Y2, _T2 = torch.eye(2).double(), torch.ones(2).double(), np.array([0.0, 1.0])


def test_balanced_init_is_balanced_rank_one_with_given_norm():
    ws = flow.balanced_init([6, 4, 3, 1], 0.7, seed=2)
    assert flow.imbalance(ws) < 1e-15
    assert all(torch.linalg.matrix_rank(w).item() == 1 for w in ws)
    assert flow.end_to_end(ws).norm().item() == pytest.approx(0.7, rel=1e-14)


def test_random_init_is_not_balanced():
    assert flow.imbalance(init_mlp([6, 4, 1], seed=0, init_scale=0.5)) > 0.1


def test_layer_flow_rhs_matches_autograd(tasks):
    x, y = tasks[0].x, tasks[0].y
    ws = init_mlp([6, 4, 3, 1], seed=1)
    _, grads = loss_and_gradient(ws, x, y, "linear")
    for r, w, g in zip(flow.layer_flow_rhs(ws, x, y, 0.3), ws, grads, strict=True):
        torch.testing.assert_close(r, -0.3 * w - g, rtol=0, atol=1e-14)


def test_end_to_end_rhs_hand_values():
    # d = 1, x = 1, y = 1, w = 2, K = 2: g = ℓ'(2) = −σ(−2);
    # Arora: (−2λ − g)·2 − 2g = −4λ − 4g; printed: (−2λ − 4g)·2 − 2g = −4λ − 10g
    x, y, w, lam = torch.ones(1, 1, dtype=torch.float64), torch.ones(1), torch.tensor([2.0]), 0.1
    y, w = y.double(), w.double()
    g = -1 / (1 + math.exp(2))
    arora = flow.end_to_end_rhs(w, x, y, lam, 2, "arora")
    printed = flow.end_to_end_rhs(w, x, y, lam, 2, "printed")
    assert arora.item() == pytest.approx(-4 * lam - 4 * g, rel=1e-14)
    assert printed.item() == pytest.approx(-4 * lam - 10 * g, rel=1e-14)


def test_arora_form_vanishes_at_the_balanced_stationary_point_printed_does_not():
    # 1-D, K = 2: stationarity ∇L = −λ w/‖w‖ means σ(−w) = λ, w = ln((1−λ)/λ) ≠ 1
    lam = 0.1
    x, y = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    w = torch.tensor([math.log((1 - lam) / lam)], dtype=torch.float64)
    assert abs(flow.end_to_end_rhs(w, x, y, lam, 2, "arora").item()) < 1e-15
    assert abs(flow.end_to_end_rhs(w, x, y, lam, 2, "printed").item()) > 0.1


def test_per_layer_flow_matches_arora_form_not_printed_form(tasks):
    x, y = tasks[0].x, tasks[0].y
    ws = flow.balanced_init([6, 3, 3, 1], 0.5, seed=1)
    t = np.linspace(0, 20, 41)
    layers = flow.simulate_layers(ws, x, y, 0.05, t)
    w0 = torch.from_numpy(layers.w[0])
    nrm = np.linalg.norm(layers.w, axis=1)
    for form, ok in (("arora", True), ("printed", False)):
        e2e = flow.simulate_end_to_end(w0, x, y, 0.05, 3, t, form)
        err = np.max(np.linalg.norm(e2e.w - layers.w, axis=1) / nrm)
        assert (err < 1e-7) if ok else (err > 0.1), (form, err)


def test_unbalanced_start_breaks_end_to_end_agreement(tasks):
    x, y = tasks[0].x, tasks[0].y
    ws = init_mlp([6, 3, 1], seed=3, init_scale=0.5)
    t = np.linspace(0, 20, 41)
    layers = flow.simulate_layers(ws, x, y, 0.1, t)
    e2e = flow.simulate_end_to_end(torch.from_numpy(layers.w[0]), x, y, 0.1, 2, t)
    assert np.max(np.linalg.norm(e2e.w - layers.w, axis=1) / np.linalg.norm(layers.w, axis=1)) > 0.1


def test_imbalance_decays_exactly_like_exp_minus_two_lambda_t(tasks):
    x, y = tasks[0].x, tasks[0].y
    ws = init_mlp([6, 3, 1], seed=3, init_scale=0.5)
    traj = flow.simulate_layers(ws, x, y, 0.2, np.array([0.0, 5.0]))
    expected = flow.imbalance(ws) * math.exp(-2 * 0.2 * 5.0)
    assert flow.imbalance(traj.layers[-1]) == pytest.approx(expected, rel=1e-8)


def test_cumulative_integral_of_a_line():
    t = np.linspace(0, 2, 5)
    np.testing.assert_allclose(flow.cumulative_integral(t, 3 * t), 1.5 * t**2, atol=1e-14)


@pytest.mark.parametrize(
    "call",
    [
        lambda: flow.balanced_init([6, 1], 1.0),
        lambda: flow.balanced_init([6, 3, 2], 1.0),
        lambda: flow.balanced_init([6, 3, 1], 0.0),
        lambda: flow.end_to_end_rhs(torch.ones(2).double(), torch.eye(2).double(),
                                    torch.ones(2).double(), 0.1, 2, "paper"),
        lambda: flow.simulate_end_to_end(torch.ones(2).double(), torch.eye(2).double(),
                                         torch.ones(2).double(), 0.1, 2, np.array([1.0, 2.0])),
        lambda: flow.simulate_end_to_end(torch.ones(3).double(), torch.eye(2).double(),
                                         torch.ones(2).double(), 0.1, 2, np.array([0.0, 1.0])),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_psd_power_hand_values_and_zero_power_is_identity():
    m = np.diag([4.0, 0.0])
    np.testing.assert_allclose(flow.psd_power(m, 0.5), np.diag([2.0, 0.0]), atol=1e-15)
    np.testing.assert_allclose(flow.psd_power(m, 0.0), np.eye(2), atol=1e-15)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        # w0 = 0 made ‖w‖^{-2/K}·⟨∇L, w⟩ = inf·0: a silent NaN trajectory
        (lambda: flow.simulate_end_to_end(torch.zeros(2).double(), _X2, _Y2, 0.1, 2, _T2),
         "w0 must be non-zero"),
        (lambda: flow.simulate_end_to_end(torch.ones(2).double(), _X2, _Y2, 0.1, 0, _T2),
         "K must be an integer"),
        (lambda: flow.simulate_end_to_end(torch.ones(2).double(), _X2, _Y2, -0.1, 2, _T2),
         "lam must be"),
        (lambda: flow.simulate_layers(flow.balanced_init([2, 3, 1], 1.0), _X2, _Y2, -0.1, _T2),
         "lam must be"),
        # a one-layer net has no pair of layers: max() of nothing
        (lambda: flow.imbalance([torch.ones(1, 3).double()]), "at least two layers"),
    ],
)
def test_flow_refuses_degenerate_inputs_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_balanced_init_with_direction_keeps_hidden_draws_and_balance():
    d = torch.tensor([3.0, 0.0, 4.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    ws = flow.balanced_init([6, 4, 3, 1], 2.0, seed=2, direction=d)
    plain = flow.balanced_init([6, 4, 3, 1], 2.0, seed=2)
    assert flow.imbalance(ws) < 1e-14
    torch.testing.assert_close(flow.end_to_end(ws), 2.0 * d / 5.0, rtol=1e-14, atol=1e-15)
    for a, b in zip(ws[1:], plain[1:], strict=True):  # the hidden directions are the same draws
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="direction"):
        flow.balanced_init([6, 4, 1], 1.0, direction=torch.zeros(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="direction"):
        flow.balanced_init([6, 4, 1], 1.0, direction=torch.ones(5, dtype=torch.float64))
