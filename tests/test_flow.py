"""Deep linear gradient flow (Eq. 1) against the end-to-end ODE (Eq. 4), balanced starts."""

import math

import numpy as np
import pytest
import torch

from lowrank import flow
from lowrank.data import orthogonal_tasks
from lowrank.metrics import loss_and_gradient
from lowrank.nets import forward, init_mlp


@pytest.fixture(scope="module")
def tasks():
    return orthogonal_tasks(12, 6, seed=0)


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


def test_orthogonal_overlap_matches_direct_inner_product(tasks):
    (a, b) = tasks
    ws = flow.balanced_init([6, 3, 1], 0.5, seed=1)
    traj = flow.simulate_layers(ws, a.x, a.y, 0.1, np.linspace(0, 10, 11))
    exact = flow.orthogonal_overlap(traj, b.x[0], 0.1)
    np.testing.assert_allclose(exact, traj.w @ b.x[0].numpy(), rtol=0, atol=1e-10)


def test_cumulative_integral_of_a_line():
    t = np.linspace(0, 2, 5)
    np.testing.assert_allclose(flow.cumulative_integral(t, 3 * t), 1.5 * t**2, atol=1e-14)


def test_merged_gap_hand_example():
    a = [torch.tensor([[1.0, 0.0]]).double(), torch.tensor([[2.0]]).double()]
    b = [torch.tensor([[0.0, 1.0]]).double(), torch.tensor([[3.0]]).double()]
    x = torch.tensor([[1.0, 0.0]]).double()
    # f_a = 2, f_b = 0, f_{a+b} = 5·⟨(1, 1), x⟩ = 5: gap 3, all of it cross terms
    parts = flow.merged_gap(a, b, x)
    assert parts["gap"].item() == 3.0 and parts["other"].item() == 0.0
    assert parts["cross"].item() == 3.0


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


@pytest.mark.parametrize("K", [2, 3, 5])
def test_arora_sum_for_a_row_vector_is_the_corrected_eq4(K):
    gen = np.random.default_rng(0)
    w, g = gen.normal(size=4), gen.normal(size=4)
    n = np.linalg.norm(w)
    corrected = n ** (2 - 2 / K) * g + (K - 1) * n ** (-2 / K) * (g @ w) * w
    printed = n ** (2 - 2 / K) * g + (K - 1) * n ** (2 - 2 / K) * (g @ w) * w
    np.testing.assert_allclose(flow.arora_sum(w, g, K), corrected, rtol=1e-10)
    assert np.max(np.abs(flow.arora_sum(w, g, K) - printed)) > 0.1


def test_two_layer_cross_prediction_matches_expansion_for_balanced_nets():
    a = flow.balanced_init([4, 3, 1], 0.8, seed=0)
    b = flow.balanced_init([4, 3, 1], 1.3, seed=5)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(
        flow.two_layer_cross_prediction(a, b, x), flow.merged_gap(a, b, x)["cross"]
    )
    # an unbalanced net breaks W_1 = u cᵀ and with it the prediction
    c = init_mlp([4, 3, 1], seed=1)
    err = flow.two_layer_cross_prediction(a, c, x) - flow.merged_gap(a, c, x)["cross"]
    assert err.abs().max() > 1e-3


_X2, _Y2, _T2 = torch.eye(2).double(), torch.ones(2).double(), np.array([0.0, 1.0])


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


# --- chapter 9's Theorem 1 counterexample and the closed-form overlap --------------------


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


def test_orthogonal_overlaps_is_orthogonal_overlap_per_input(tasks):
    a, b = tasks
    traj = flow.simulate_layers(flow.balanced_init([6, 3, 1], 0.5, seed=1), a.x, a.y, 0.1,
                                np.linspace(0, 10, 6))
    many = flow.orthogonal_overlaps(traj, b.x[:3], 0.1)
    assert many.shape == (6, 3)
    for j in range(3):
        np.testing.assert_allclose(many[:, j], flow.orthogonal_overlap(traj, b.x[j], 0.1),
                                   rtol=1e-13, atol=0)


@pytest.mark.parametrize("K", [2, 3])
def test_balanced_overlap_closed_form_holds_for_balanced_starts_only(tasks, K):
    a, b = tasks
    t = np.linspace(0, 30, 31)
    dims = [6] + [3] * (K - 1) + [1]
    bal = flow.simulate_layers(flow.balanced_init(dims, 0.5, seed=1), a.x, a.y, 0.1, t)
    np.testing.assert_allclose(flow.balanced_overlap(bal, b.x[0], 0.1, K),
                               flow.orthogonal_overlap(bal, b.x[0], 0.1), rtol=1e-8)
    # an unbalanced start moves its hidden directions: the closed form is then wrong
    rand = flow.simulate_layers(init_mlp(dims, seed=3, init_scale=0.5), a.x, a.y, 0.1, t)
    err = flow.balanced_overlap(rand, b.x[0], 0.1, K) / flow.orthogonal_overlap(rand, b.x[0], 0.1)
    assert np.max(np.abs(err - 1)) > 1e-2


def test_eq5_coefficient_hand_values_and_stationary_limit():
    # d = 1, x = y = 1, w = 2, K = 2: g = −σ(−2); arora −2λ − g, printed −2λ − 4g
    x, y, lam = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64), 0.1
    g = -1 / (1 + math.exp(2))
    w = torch.tensor([2.0], dtype=torch.float64)
    assert flow.eq5_coefficient(w, x, y, lam, 2) == pytest.approx(-2 * lam - g, rel=1e-14)
    assert flow.eq5_coefficient(w, x, y, lam, 2, "printed") == pytest.approx(-2 * lam - 4 * g)
    # at the 1-D stationary point σ(−w) = λ the corrected a is −λ, the printed one is not
    ws = torch.tensor([math.log((1 - lam) / lam)], dtype=torch.float64)
    assert flow.eq5_coefficient(ws, x, y, lam, 2) == pytest.approx(-lam, rel=1e-12)
    assert abs(flow.eq5_coefficient(ws, x, y, lam, 2, "printed") + lam) > 0.1
    with pytest.raises(ValueError, match="form"):
        flow.eq5_coefficient(w, x, y, lam, 2, "paper")


def test_merged_gap_split_adds_up_for_any_nets():
    gen = torch.Generator().manual_seed(0)
    a, b = init_mlp([5, 4, 3, 1], seed=0), init_mlp([5, 4, 3, 1], seed=1)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    parts = flow.merged_gap_split(a, b, x)
    torch.testing.assert_close(parts["via_first"] + parts["via_other_first"], parts["gap"],
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="same layer shapes"):
        flow.merged_gap_split(a, init_mlp([5, 3, 3, 1], seed=1), x)


def test_merged_scale_is_rho_times_cosine_for_balanced_two_layer_nets():
    a = flow.balanced_init([4, 3, 1], 0.8, seed=0)
    b = flow.balanced_init([4, 3, 1], 1.3, seed=5)
    u, u2 = a[1][0] / a[1].norm(), b[1][0] / b[1].norm()
    rho = float(b[1].norm() / a[1].norm())
    assert flow.merged_scale(a, b) == pytest.approx(rho * float(u @ u2), rel=1e-12)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for K in (2, 3, 4):  # balanced θ: the products through W_1 are R f_θ(x)
        dims = [4] + [3] * (K - 1) + [1]
        a, b = flow.balanced_init(dims, 0.8, seed=0), flow.balanced_init(dims, 1.3, seed=5)
        torch.testing.assert_close(flow.merged_gap_split(a, b, x)["via_first"],
                                   flow.merged_scale(a, b) * forward(a, x, "linear"))
    # an unbalanced θ has a rank-2 W_1: no single R
    c, b = init_mlp([4, 3, 1], seed=1), flow.balanced_init([4, 3, 1], 1.3, seed=5)
    err = flow.merged_gap_split(c, b, x)["via_first"] - flow.merged_scale(c, b) * forward(
        c, x, "linear")
    assert err.abs().max() > 1e-3
