"""Theorem 2 and Lemma 5's constants, and the merged gap along flows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowrank.core import flow
from lowrank.core.models import forward, init_mlp
from lowrank.data.synthetic import orthogonal_tasks
from lowrank.theory import theorem2


@pytest.fixture(scope="module")
def tasks():
    return orthogonal_tasks(12, 6, seed=0)


def test_B_is_norm_squared_plus_C_over_lambda():
    # ‖w(0)‖ = √2, C = 1, λ = 1/2: B = 2 + 2 = 4
    assert theorem2.theorem2_B(math.sqrt(2), 1.0, 0.5) == pytest.approx(4.0, rel=1e-15)


def test_log_A1_hand_values():
    # K = 2: B^{1}(K-1)(1+λK)C/(2λK) = 4·1·2·1/2 = 4
    assert theorem2.theorem2_log_A1(4.0, 1.0, 0.5, 2) == pytest.approx(4.0, rel=1e-15)
    # K = 4, B = 16, λ = 1/4: 16^{3/2}·3·2·1/(2·1) = 64·3 = 192
    assert theorem2.theorem2_log_A1(16.0, 1.0, 0.25, 4) == pytest.approx(192.0, rel=1e-15)
    assert theorem2.theorem2_A1(4.0, 1.0, 0.5, 2) == pytest.approx(math.exp(4.0), rel=1e-14)


def test_A1_overflow_is_inf_not_an_error():
    assert theorem2.theorem2_A1(1e6, 1.0, 0.01, 3) == math.inf


def test_A2_hand_value():
    # λK = 1 and t = 2 ln 2: 1 − e^{−λKt/2} = 1/2, so A2 = 2·4·1·e^4·(1/2)/1 = 4e^4
    a2 = theorem2.theorem2_A2(4.0, 1.0, 0.5, 2, 2 * math.log(2))
    assert float(a2) == pytest.approx(4 * math.exp(4), rel=1e-14)
    assert float(theorem2.theorem2_A2(4.0, 1.0, 0.5, 2, 0.0)) == 0.0


def test_theorem2_rhs_hand_value_and_array_t():
    t = 2 * math.log(2)
    # 0.5·e^4·e^{−2 ln 2} + 0.1·4e^4 = e^4 (1/8 + 2/5)
    rhs = theorem2.theorem2_rhs(0.5, 0.1, 4.0, 1.0, 0.5, 2, t)
    assert float(rhs) == pytest.approx(math.exp(4) * (0.125 + 0.4), rel=1e-14)
    arr = theorem2.theorem2_rhs(0.5, 0.0, 4.0, 1.0, 0.5, 2, np.array([0.0, t]))
    np.testing.assert_allclose(arr, [0.5 * math.exp(4), 0.125 * math.exp(4)], rtol=1e-14)


def test_lemma5_rhs_hand_value():
    # √((K−1)(1+λK) L0 (t−s)) = √(1·2·1·4) = √8
    assert float(theorem2.lemma5_rhs(2, 0.5, 1.0, 4.0)) == pytest.approx(math.sqrt(8), rel=1e-15)
    assert float(theorem2.lemma5_rhs(3, 0.5, 0.0, 4.0)) == 0.0


def test_balanced_norm_bound_hand_values():
    # K = 2: ‖w0‖ + 2L0/(λK) = 1 + 2 = 3; K = 4: (16^{1/2} + 2/(0.5·4))^2 = 25
    assert theorem2.balanced_norm_bound(1.0, 1.0, 0.5, 2) == pytest.approx(3.0, rel=1e-15)
    assert theorem2.balanced_norm_bound(16.0, 1.0, 0.5, 4) == pytest.approx(25.0, rel=1e-15)


@pytest.mark.parametrize(
    "call",
    [
        lambda: theorem2.theorem2_B(1.0, 1.0, 0.0),
        lambda: theorem2.theorem2_B(-1.0, 1.0, 0.1),
        lambda: theorem2.theorem2_log_A1(1.0, 0.0, 0.1, 2),
        lambda: theorem2.theorem2_log_A1(1.0, 1.0, 0.1, 1),
        lambda: theorem2.theorem2_log_A1(1.0, 1.0, 0.1, 2.5),
        lambda: theorem2.theorem2_A2(1.0, 1.0, 0.1, 2, -1.0),
        lambda: theorem2.theorem2_rhs(0.1, -0.1, 1.0, 1.0, 0.1, 2, 1.0),
        lambda: theorem2.lemma5_rhs(2, 0.1, 1.0, -1.0),
        lambda: theorem2.balanced_norm_bound(1.0, 1.0, -0.1, 2),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_A2_at_infinity_is_its_limit():
    # 2·4·1·e^4/(λK) with λK = 1
    assert float(theorem2.theorem2_A2(4.0, 1.0, 0.5, 2, math.inf)) == pytest.approx(8 * math.exp(4))


def test_theorem2_overflowing_A1_gives_no_nan():
    # log A1 ≈ 1.6e4: A1 = inf, yet A2(0) = 0 exactly and A1·e^{−λKt} underflows to 0 at large t
    t = np.array([0.0, 1.0, 1e6])
    a2 = theorem2.theorem2_A2(100.0, 1.0, 0.01, 3, t)
    assert a2[0] == 0.0 and a2[1] == math.inf
    rhs = theorem2.theorem2_rhs(1.0, 0.0, 100.0, 1.0, 0.01, 3, t)
    assert not np.isnan(rhs).any() and rhs[0] == math.inf and rhs[-1] == 0.0
    assert not np.isnan(theorem2.theorem2_rhs(1.0, 0.1, 100.0, 1.0, 0.01, 3, t)).any()


def test_balanced_objective_hand_value_and_equals_L_lambda_of_the_layers():
    # K = 2, ‖w‖ = 4, L = 0.5, λ = 0.1: 0.5 + 0.1·4 = 0.9
    assert float(theorem2.balanced_objective(4.0, 0.5, 0.1, 2)) == pytest.approx(0.9, rel=1e-15)
    from lowrank.core import flow

    ws = flow.balanced_init([5, 4, 3, 1], 2.0, seed=0)
    sq = sum(float((w**2).sum()) for w in ws)
    # (λ/2)‖θ‖² = (λK/2)‖w‖^{2/K} for a balanced net; a wrong exponent would miss it
    assert float(theorem2.balanced_objective(2.0, 0.0, 0.3, 3)) == pytest.approx(0.15 * sq)
    assert float(theorem2.balanced_objective(2.0, 0.0, 0.3, 2)) != pytest.approx(0.15 * sq)


def test_balanced_objective_bounds_the_loss_along_a_flow():
    from lowrank.core import flow
    from lowrank.data.synthetic import orthogonal_tasks

    task = orthogonal_tasks(10, 4, seed=0)[0]
    traj = flow.simulate_layers(flow.balanced_init([4, 3, 1], 3.0, seed=0), task.x, task.y, 0.1,
                                np.linspace(0, 40, 81))
    losses = flow.losses_along(traj, task.x, task.y)
    objective = theorem2.balanced_objective(np.linalg.norm(traj.w, axis=1), losses, 0.1, 2)
    assert np.all(np.diff(objective) <= 1e-9)  # L_λ does not increase
    assert losses.max() <= objective[0]
    with pytest.raises(ValueError):
        theorem2.balanced_objective(-1.0, 0.1, 0.1, 2)


def test_orthogonal_overlap_matches_direct_inner_product(tasks):
    (a, b) = tasks
    ws = flow.balanced_init([6, 3, 1], 0.5, seed=1)
    traj = flow.simulate_layers(ws, a.x, a.y, 0.1, np.linspace(0, 10, 11))
    exact = theorem2.orthogonal_overlap(traj, b.x[0], 0.1)
    np.testing.assert_allclose(exact, traj.w @ b.x[0].numpy(), rtol=0, atol=1e-10)


def test_merged_gap_hand_example():
    a = [torch.tensor([[1.0, 0.0]]).double(), torch.tensor([[2.0]]).double()]
    b = [torch.tensor([[0.0, 1.0]]).double(), torch.tensor([[3.0]]).double()]
    x = torch.tensor([[1.0, 0.0]]).double()
    # f_a = 2, f_b = 0, f_{a+b} = 5·⟨(1, 1), x⟩ = 5: gap 3, all of it cross terms
    parts = theorem2.merged_gap(a, b, x)
    assert parts["gap"].item() == 3.0 and parts["other"].item() == 0.0
    assert parts["cross"].item() == 3.0


@pytest.mark.parametrize("K", [2, 3, 5])
def test_arora_sum_for_a_row_vector_is_the_corrected_eq4(K):
    gen = np.random.default_rng(0)
    w, g = gen.normal(size=4), gen.normal(size=4)
    n = np.linalg.norm(w)
    corrected = n ** (2 - 2 / K) * g + (K - 1) * n ** (-2 / K) * (g @ w) * w
    printed = n ** (2 - 2 / K) * g + (K - 1) * n ** (2 - 2 / K) * (g @ w) * w
    np.testing.assert_allclose(theorem2.arora_sum(w, g, K), corrected, rtol=1e-10)
    assert np.max(np.abs(theorem2.arora_sum(w, g, K) - printed)) > 0.1


def test_two_layer_cross_prediction_matches_expansion_for_balanced_nets():
    a = flow.balanced_init([4, 3, 1], 0.8, seed=0)
    b = flow.balanced_init([4, 3, 1], 1.3, seed=5)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(
        theorem2.two_layer_cross_prediction(a, b, x), theorem2.merged_gap(a, b, x)["cross"]
    )
    # an unbalanced net breaks W_1 = u cᵀ and with it the prediction
    c = init_mlp([4, 3, 1], seed=1)
    err = theorem2.two_layer_cross_prediction(a, c, x) - theorem2.merged_gap(a, c, x)["cross"]
    assert err.abs().max() > 1e-3


def test_orthogonal_overlaps_is_orthogonal_overlap_per_input(tasks):
    a, b = tasks
    traj = flow.simulate_layers(flow.balanced_init([6, 3, 1], 0.5, seed=1), a.x, a.y, 0.1,
                                np.linspace(0, 10, 6))
    many = theorem2.orthogonal_overlaps(traj, b.x[:3], 0.1)
    assert many.shape == (6, 3)
    for j in range(3):
        np.testing.assert_allclose(many[:, j], theorem2.orthogonal_overlap(traj, b.x[j], 0.1),
                                   rtol=1e-13, atol=0)


@pytest.mark.parametrize("K", [2, 3])
def test_balanced_overlap_closed_form_holds_for_balanced_starts_only(tasks, K):
    a, b = tasks
    t = np.linspace(0, 30, 31)
    dims = [6] + [3] * (K - 1) + [1]
    bal = flow.simulate_layers(flow.balanced_init(dims, 0.5, seed=1), a.x, a.y, 0.1, t)
    np.testing.assert_allclose(theorem2.balanced_overlap(bal, b.x[0], 0.1, K),
                               theorem2.orthogonal_overlap(bal, b.x[0], 0.1), rtol=1e-8)
    # an unbalanced start moves its hidden directions: the closed form is then wrong
    rand = flow.simulate_layers(init_mlp(dims, seed=3, init_scale=0.5), a.x, a.y, 0.1, t)
    closed = theorem2.balanced_overlap(rand, b.x[0], 0.1, K)
    err = closed / theorem2.orthogonal_overlap(rand, b.x[0], 0.1)
    assert np.max(np.abs(err - 1)) > 1e-2


def test_eq5_coefficient_hand_values_and_stationary_limit():
    # d = 1, x = y = 1, w = 2, K = 2: g = −σ(−2); arora −2λ − g, printed −2λ − 4g
    x, y, lam = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64), 0.1
    g = -1 / (1 + math.exp(2))
    w = torch.tensor([2.0], dtype=torch.float64)
    assert theorem2.eq5_coefficient(w, x, y, lam, 2) == pytest.approx(-2 * lam - g, rel=1e-14)
    assert theorem2.eq5_coefficient(w, x, y, lam, 2, "printed") == pytest.approx(-2 * lam - 4 * g)
    # at the 1-D stationary point σ(−w) = λ the corrected a is −λ, the printed one is not
    ws = torch.tensor([math.log((1 - lam) / lam)], dtype=torch.float64)
    assert theorem2.eq5_coefficient(ws, x, y, lam, 2) == pytest.approx(-lam, rel=1e-12)
    assert abs(theorem2.eq5_coefficient(ws, x, y, lam, 2, "printed") + lam) > 0.1
    with pytest.raises(ValueError, match="form"):
        theorem2.eq5_coefficient(w, x, y, lam, 2, "paper")


def test_merged_gap_split_adds_up_for_any_nets():
    gen = torch.Generator().manual_seed(0)
    a, b = init_mlp([5, 4, 3, 1], seed=0), init_mlp([5, 4, 3, 1], seed=1)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    parts = theorem2.merged_gap_split(a, b, x)
    torch.testing.assert_close(parts["via_first"] + parts["via_other_first"], parts["gap"],
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="same layer shapes"):
        theorem2.merged_gap_split(a, init_mlp([5, 3, 3, 1], seed=1), x)


def test_merged_scale_is_rho_times_cosine_for_balanced_two_layer_nets():
    a = flow.balanced_init([4, 3, 1], 0.8, seed=0)
    b = flow.balanced_init([4, 3, 1], 1.3, seed=5)
    u, u2 = a[1][0] / a[1].norm(), b[1][0] / b[1].norm()
    rho = float(b[1].norm() / a[1].norm())
    assert theorem2.merged_scale(a, b) == pytest.approx(rho * float(u @ u2), rel=1e-12)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for K in (2, 3, 4):  # balanced θ: the products through W_1 are R f_θ(x)
        dims = [4] + [3] * (K - 1) + [1]
        a, b = flow.balanced_init(dims, 0.8, seed=0), flow.balanced_init(dims, 1.3, seed=5)
        torch.testing.assert_close(theorem2.merged_gap_split(a, b, x)["via_first"],
                                   theorem2.merged_scale(a, b) * forward(a, x, "linear"))
    # an unbalanced θ has a rank-2 W_1: no single R
    c, b = init_mlp([4, 3, 1], seed=1), flow.balanced_init([4, 3, 1], 1.3, seed=5)
    err = theorem2.merged_gap_split(c, b, x)["via_first"] - theorem2.merged_scale(c, b) * forward(
        c, x, "linear")
    assert err.abs().max() > 1e-3
