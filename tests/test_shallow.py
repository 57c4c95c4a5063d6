"""The linear warm-up, the shallow net of Eq. (3), its GD, and the bounds of Section 4."""

import math

import pytest
import torch

from lowrank.bounds import (
    decay_bound_any_step,
    lemma4_bound,
    merged_loss_bound,
    printed_decay_terms,
    warmup_bound,
)
from lowrank.data import TaskPair, eps_task_pair
from lowrank.shallow import (
    lemma4_check,
    linear_gd,
    shallow_forward,
    shallow_gd,
    shallow_gradient,
    shallow_loss,
    unit_output_vector,
    unrolled_theta,
    warmup_alphas,
    warmup_check,
)
from lowrank.train import DivergenceError

TOL = 1e-10  # float64 rounding over a few hundred steps of O(1) quantities is ~1e-14


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def _init(m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=torch.float64) / d**0.5


# --- bounds: values worked out by hand --------------------------------------------------


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


# --- the linear warm-up ---------------------------------------------------------------


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


def test_warmup_bound_holds_and_fails_when_eps_is_understated():
    pair = eps_task_pair(30, 11, 0.1, overlap="label", seed=2)
    theta0 = torch.randn(11, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    good = warmup_check(pair, theta0, 0.05, 0.5, 300)
    assert good["min_slack"] >= -TOL and good["identity_residual"] < 1e-13
    lied = TaskPair(pair.first, pair.second, eps=0.01, max_overlap=pair.max_overlap)
    assert warmup_check(lied, theta0, 0.05, 0.5, 300)["min_slack"] < -1e-3


def test_warmup_large_step_counterexample():
    pair = eps_task_pair(30, 11, 0.0, seed=2)
    theta0 = torch.randn(11, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with pytest.raises(ValueError, match="eta\\*lam"):
        warmup_check(pair, theta0, 0.5, 3.0, 4)
    res = warmup_check(pair, theta0, 0.5, 3.0, 4, allow_large_step=True)
    assert res["min_slack"] < -0.1


# --- the shallow net of Eq. (3) --------------------------------------------------------


def test_forward_by_hand_and_unit_u():
    w = t([[1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    u = t([0.6, 0.8, 0.0])
    # Wx = (1, −2, 3) → (1, 0, 3) → 0.6
    assert shallow_forward(w, u, t([[1.0, 2.0]])).item() == pytest.approx(0.6)
    assert shallow_loss(w, u, t([[1.0, 2.0]]), t([-1.0])).item() == pytest.approx(
        math.log1p(math.exp(0.6))
    )
    u7 = unit_output_vector(7, seed=1)
    assert float(u7.norm()) <= 1.0 and float(u7.norm()) == pytest.approx(1.0)


def test_closed_form_gradient_matches_autograd():
    pair = eps_task_pair(12, 9, 0.1, seed=0)
    w = _init(6, 9, 1).requires_grad_(True)
    u = unit_output_vector(6, seed=2)
    shallow_loss(w, u, pair.first.x, pair.first.y).backward()
    closed = shallow_gradient(w.detach(), u, pair.first.x, pair.first.y)
    assert torch.allclose(closed, w.grad, atol=1e-15, rtol=1e-13)


def test_ensemble_gd_equals_member_by_member():
    pair = eps_task_pair(12, 9, 0.1, seed=0)
    u = unit_output_vector(6, seed=2)
    w0 = _init(6, 9, 1)
    both = shallow_gd(torch.stack([w0, w0]), u, pair.first.x, pair.first.y, [0.0, 0.1], 0.5, 20)
    alone = shallow_gd(w0, u, pair.first.x, pair.first.y, 0.1, 0.5, 20)
    assert both.shape == (21, 2, 6, 9)
    assert torch.allclose(both[:, 1], alone, atol=1e-15)
    assert not torch.allclose(both[-1, 0], both[-1, 1])


def test_shape_errors_are_named():
    w, u, x = _init(4, 5, 0), unit_output_vector(4), torch.zeros(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"u must have shape \(4,\)"):
        shallow_forward(w, u[:3], x)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 5\)"):
        shallow_forward(w, u, x[:, :4])
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        shallow_gradient(w, u, x, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        shallow_gd(w, u, x, torch.ones(3, dtype=torch.float64), 0.1, 0.5, -1)


# --- Lemma 4 and Appendix C.2 ---------------------------------------------------------


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


def test_trainers_stop_with_the_step_and_member_when_weights_overflow():
    x = torch.eye(3, dtype=torch.float64)
    y = torch.ones(3, dtype=torch.float64)
    with pytest.raises(DivergenceError, match="the network became nan at step") as e:
        linear_gd(torch.ones(3, dtype=torch.float64), x, y, 1e3, 10.0, 400)
    assert e.value.member is None and e.value.step > 0
    w0 = torch.ones(2, 4, 3, dtype=torch.float64)
    u = torch.full((4,), 0.5, dtype=torch.float64)
    with pytest.raises(DivergenceError) as e:
        shallow_gd(w0, u, x, y, [0.1, 1e3], 10.0, 400)
    assert e.value.member == 1
