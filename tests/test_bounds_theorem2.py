"""Theorem 2's constants A1, A2, B and Lemma 5's right-hand side against hand-worked values."""

import math

import numpy as np
import pytest

from lowrank import bounds


def test_B_is_norm_squared_plus_C_over_lambda():
    # ‖w(0)‖ = √2, C = 1, λ = 1/2: B = 2 + 2 = 4
    assert bounds.theorem2_B(math.sqrt(2), 1.0, 0.5) == pytest.approx(4.0, rel=1e-15)


def test_log_A1_hand_values():
    # K = 2: B^{1}(K-1)(1+λK)C/(2λK) = 4·1·2·1/2 = 4
    assert bounds.theorem2_log_A1(4.0, 1.0, 0.5, 2) == pytest.approx(4.0, rel=1e-15)
    # K = 4, B = 16, λ = 1/4: 16^{3/2}·3·2·1/(2·1) = 64·3 = 192
    assert bounds.theorem2_log_A1(16.0, 1.0, 0.25, 4) == pytest.approx(192.0, rel=1e-15)
    assert bounds.theorem2_A1(4.0, 1.0, 0.5, 2) == pytest.approx(math.exp(4.0), rel=1e-14)


def test_A1_overflow_is_inf_not_an_error():
    assert bounds.theorem2_A1(1e6, 1.0, 0.01, 3) == math.inf


def test_A2_hand_value():
    # λK = 1 and t = 2 ln 2: 1 − e^{−λKt/2} = 1/2, so A2 = 2·4·1·e^4·(1/2)/1 = 4e^4
    a2 = bounds.theorem2_A2(4.0, 1.0, 0.5, 2, 2 * math.log(2))
    assert float(a2) == pytest.approx(4 * math.exp(4), rel=1e-14)
    assert float(bounds.theorem2_A2(4.0, 1.0, 0.5, 2, 0.0)) == 0.0


def test_theorem2_rhs_hand_value_and_array_t():
    t = 2 * math.log(2)
    # 0.5·e^4·e^{−2 ln 2} + 0.1·4e^4 = e^4 (1/8 + 2/5)
    rhs = bounds.theorem2_rhs(0.5, 0.1, 4.0, 1.0, 0.5, 2, t)
    assert float(rhs) == pytest.approx(math.exp(4) * (0.125 + 0.4), rel=1e-14)
    arr = bounds.theorem2_rhs(0.5, 0.0, 4.0, 1.0, 0.5, 2, np.array([0.0, t]))
    np.testing.assert_allclose(arr, [0.5 * math.exp(4), 0.125 * math.exp(4)], rtol=1e-14)


def test_lemma5_rhs_hand_value():
    # √((K−1)(1+λK) L0 (t−s)) = √(1·2·1·4) = √8
    assert float(bounds.lemma5_rhs(2, 0.5, 1.0, 4.0)) == pytest.approx(math.sqrt(8), rel=1e-15)
    assert float(bounds.lemma5_rhs(3, 0.5, 0.0, 4.0)) == 0.0


def test_balanced_norm_bound_hand_values():
    # K = 2: ‖w0‖ + 2L0/(λK) = 1 + 2 = 3; K = 4: (16^{1/2} + 2/(0.5·4))^2 = 25
    assert bounds.balanced_norm_bound(1.0, 1.0, 0.5, 2) == pytest.approx(3.0, rel=1e-15)
    assert bounds.balanced_norm_bound(16.0, 1.0, 0.5, 4) == pytest.approx(25.0, rel=1e-15)


@pytest.mark.parametrize(
    "call",
    [
        lambda: bounds.theorem2_B(1.0, 1.0, 0.0),
        lambda: bounds.theorem2_B(-1.0, 1.0, 0.1),
        lambda: bounds.theorem2_log_A1(1.0, 0.0, 0.1, 2),
        lambda: bounds.theorem2_log_A1(1.0, 1.0, 0.1, 1),
        lambda: bounds.theorem2_log_A1(1.0, 1.0, 0.1, 2.5),
        lambda: bounds.theorem2_A2(1.0, 1.0, 0.1, 2, -1.0),
        lambda: bounds.theorem2_rhs(0.1, -0.1, 1.0, 1.0, 0.1, 2, 1.0),
        lambda: bounds.lemma5_rhs(2, 0.1, 1.0, -1.0),
        lambda: bounds.balanced_norm_bound(1.0, 1.0, -0.1, 2),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_A2_at_infinity_is_its_limit():
    # 2·4·1·e^4/(λK) with λK = 1
    assert float(bounds.theorem2_A2(4.0, 1.0, 0.5, 2, math.inf)) == pytest.approx(8 * math.exp(4))


def test_theorem2_overflowing_A1_gives_no_nan():
    # log A1 ≈ 1.6e4: A1 = inf, yet A2(0) = 0 exactly and A1·e^{−λKt} underflows to 0 at large t
    t = np.array([0.0, 1.0, 1e6])
    a2 = bounds.theorem2_A2(100.0, 1.0, 0.01, 3, t)
    assert a2[0] == 0.0 and a2[1] == math.inf
    rhs = bounds.theorem2_rhs(1.0, 0.0, 100.0, 1.0, 0.01, 3, t)
    assert not np.isnan(rhs).any() and rhs[0] == math.inf and rhs[-1] == 0.0
    assert not np.isnan(bounds.theorem2_rhs(1.0, 0.1, 100.0, 1.0, 0.01, 3, t)).any()


@pytest.mark.parametrize(
    "fn", [bounds.warmup_bound, bounds.lemma4_bound, bounds.decay_bound_any_step]
)
def test_decay_bounds_refuse_non_finite_init_and_eps(fn):
    with pytest.raises(ValueError, match="must be >= 0 and finite"):
        fn(float("nan"), 0.1, 0.01, 1.0, 5)
    with pytest.raises(ValueError, match="eps must be >= 0 and finite"):
        fn(1.0, float("inf"), 0.01, 1.0, 5)
    with pytest.raises(ValueError, match="eps must be >= 0 and finite"):
        fn(1.0, float("nan"), 0.01, 1.0, 5)


def test_balanced_objective_hand_value_and_equals_L_lambda_of_the_layers():
    # K = 2, ‖w‖ = 4, L = 0.5, λ = 0.1: 0.5 + 0.1·4 = 0.9
    assert float(bounds.balanced_objective(4.0, 0.5, 0.1, 2)) == pytest.approx(0.9, rel=1e-15)
    from lowrank import flow

    ws = flow.balanced_init([5, 4, 3, 1], 2.0, seed=0)
    sq = sum(float((w**2).sum()) for w in ws)
    # (λ/2)‖θ‖² = (λK/2)‖w‖^{2/K} for a balanced net; a wrong exponent would miss it
    assert float(bounds.balanced_objective(2.0, 0.0, 0.3, 3)) == pytest.approx(0.15 * sq)
    assert float(bounds.balanced_objective(2.0, 0.0, 0.3, 2)) != pytest.approx(0.15 * sq)


def test_balanced_objective_bounds_the_loss_along_a_flow():
    from lowrank import flow
    from lowrank.data import orthogonal_tasks

    task = orthogonal_tasks(10, 4, seed=0)[0]
    traj = flow.simulate_layers(flow.balanced_init([4, 3, 1], 3.0, seed=0), task.x, task.y, 0.1,
                                np.linspace(0, 40, 81))
    losses = flow.losses_along(traj, task.x, task.y)
    objective = bounds.balanced_objective(np.linalg.norm(traj.w, axis=1), losses, 0.1, 2)
    assert np.all(np.diff(objective) <= 1e-9)  # L_λ does not increase
    assert losses.max() <= objective[0]
    with pytest.raises(ValueError):
        bounds.balanced_objective(-1.0, 0.1, 0.1, 2)
