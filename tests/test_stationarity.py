"""Tests of lowrank.stationarity: Eq. (2)'s residual along GD and the Goldstein certificate."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.data import sin_task
from lowrank.metrics import alignment_residual, loss_and_gradient
from lowrank.nets import init_mlp
from lowrank.stationarity import (
    StationarityRecorder,
    alignment_rows,
    bounded_least_squares,
    goldstein_certificate,
    kink_certificate,
    min_norm_convex_combination,
    pattern_flips,
    relaxed_gradient,
    straddled_kinks,
    subgradient_certificate,
    window_certificate,
)
from lowrank.train import gd


def test_min_norm_convex_combination_known_values():
    # (2, 0) and (0, 1): minimise (2a)^2 + (1 - a)^2 -> a = 1/5, norm^2 = 4/5.
    v = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    alpha = min_norm_convex_combination(v)
    assert torch.allclose(alpha, torch.tensor([0.2, 0.8], dtype=torch.float64), atol=1e-12)
    assert (alpha @ v).norm().item() == pytest.approx(math.sqrt(0.8), abs=1e-12)
    # opposite vectors: 0 is in the hull; a single vector is its own hull
    opp = torch.tensor([[1.0, 1.0], [-3.0, -3.0]], dtype=torch.float64)
    assert (min_norm_convex_combination(opp) @ opp).norm().item() < 1e-12
    one = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert min_norm_convex_combination(one).tolist() == [1.0]


def test_min_norm_refuses_bad_shape():
    with pytest.raises(ValueError, match="vectors must have shape"):
        min_norm_convex_combination(torch.ones(3))


def _toy():
    w = [torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), torch.ones(1, 2).double()]
    return w


def test_goldstein_single_iterate_is_alignment_residual():
    w = _toy()
    g = [torch.full_like(t, 0.3) for t in w]
    cert = goldstein_certificate([w], [g], lam=0.5)
    expected = alignment_residual(w, g, 0.5).item()
    assert cert.eps_mean == pytest.approx(expected, rel=1e-14)
    assert cert.eps_min == pytest.approx(expected, rel=1e-14)
    assert cert.delta == 0.0


def test_goldstein_known_values_two_iterates():
    # θ_1 = θ̄ + u, θ_2 = θ̄ − u with grads cancelling λθ_s on average: ε = 0, δ = ‖u‖/‖θ̄‖.
    lam = 0.1
    bar = _toy()
    u = [torch.zeros_like(bar[0]), torch.tensor([[0.0, 0.5]], dtype=torch.float64)]
    t1 = [b + d for b, d in zip(bar, u, strict=True)]
    t2 = [b - d for b, d in zip(bar, u, strict=True)]
    g1 = [-lam * b + d for b, d in zip(bar, u, strict=True)]
    g2 = [-lam * b - d for b, d in zip(bar, u, strict=True)]
    cert = goldstein_certificate([t1, t2], [g1, g2], lam)
    norm_bar = math.sqrt(1 + 4 + 2)
    assert cert.eps_mean < 1e-15
    assert cert.delta == pytest.approx(0.5 / norm_bar, rel=1e-14)
    # shift both gradients by c: the hull no longer contains 0, ε = ‖c‖/‖λθ̄‖
    c = [torch.zeros_like(bar[0]), torch.tensor([[0.02, 0.0]], dtype=torch.float64)]
    g1s = [a + b for a, b in zip(g1, c, strict=True)]
    g2s = [a + b for a, b in zip(g2, c, strict=True)]
    shifted = goldstein_certificate([t1, t2], [g1s, g2s], lam)
    assert shifted.eps_mean == pytest.approx(0.02 / (lam * norm_bar), rel=1e-12)


def test_goldstein_refuses_mismatch():
    w = _toy()
    with pytest.raises(ValueError, match="equally long"):
        goldstein_certificate([w, w], [w], 0.1)
    with pytest.raises(ValueError, match="lam must be > 0"):
        goldstein_certificate([w], [w], 0.0)


def test_alignment_residual_large_at_random_point():
    task = sin_task(40, 6, seed=0)
    w = init_mlp([6, 8, 1], seed=0)
    rows = alignment_rows(0, w, task.x, task.y, 1e-2, "linear")
    whole = [r for r in rows if r["layer"] == "all"][0]
    assert whole["residual"] > 0.5
    assert whole["cosine"] < 0.9
    assert [r["layer"] for r in rows] == ["1", "2", "all"]


def test_gd_reaches_alignment_on_linear_net_and_telescopes():
    task = sin_task(40, 6, seed=0)
    lam, eta, steps = 5e-2, 1.0, 800
    rec = StationarityRecorder(task.x, task.y, lam, "linear", steps, every=400, window=20)
    w, hist = gd(init_mlp([6, 8, 1], seed=0), task.x, task.y, lam, eta, steps,
                 activation="linear", record_every=1, record=rec)
    # GD reaches a float64 fixed point inside the window; repeated iterates are kept once
    assert 1 <= len(rec.iterates) <= 20
    assert [r["step"] for r in hist.rows if r["layer"] == "all"] == [0, 400, 800]
    final = [r for r in hist.rows if r["layer"] == "all"][-1]
    assert final["residual"] < 1e-8 and final["cosine"] > 1 - 1e-12
    cert = window_certificate(rec.iterates, task.x, task.y, lam, "linear")
    assert cert.eps_mean < 1e-8 and cert.delta < 1e-8


def test_window_mean_gradient_telescopes_along_gd():
    # Far from stationarity: the window's mean ∇L_λ is (θ_first − θ_last)/(η(T−1)).
    task = sin_task(40, 6, seed=0)
    lam, eta, steps = 5e-2, 0.5, 10
    rec = StationarityRecorder(task.x, task.y, lam, "relu", steps, every=10, window=steps + 1)
    gd(init_mlp([6, 8, 1], seed=0), task.x, task.y, lam, eta, steps,
       activation="relu", record_every=1, record=rec)
    window = rec.iterates[:-1]  # consecutive GD iterates; each one's step leads to the next
    T = len(window)
    assert T >= steps - 1
    grads = [loss_and_gradient(t, task.x, task.y, "relu")[1] for t in window]
    cert = goldstein_certificate(window, grads, lam)
    first, last = rec.iterates[0], rec.iterates[-1]
    bar = [torch.stack([t[k] for t in window]).mean(0) for k in range(2)]
    disp = math.sqrt(sum((a - b).square().sum().item() for a, b in zip(first, last, strict=True)))
    norm_bar = math.sqrt(sum(b.square().sum().item() for b in bar))
    assert cert.eps_mean > 1e-2
    assert cert.eps_mean == pytest.approx(disp / (eta * T) / (lam * norm_bar), rel=1e-10)
    assert cert.eps_min <= cert.eps_mean + 1e-15


def test_pattern_flips_counts_sign_changes():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    a = [torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.ones(1, 1).double()]
    b = [torch.tensor([[1.0, 1.0]], dtype=torch.float64), torch.ones(1, 1).double()]
    assert pattern_flips([a, a], x) == [0]
    assert pattern_flips([a, b], x) == [1]
    with pytest.raises(ValueError, match="at least two"):
        pattern_flips([a], x)


def test_recorder_refuses_bad_window():
    x, y = torch.zeros(2, 2).double(), torch.ones(2).double()
    with pytest.raises(ValueError, match="window"):
        StationarityRecorder(x, y, 0.1, "relu", steps=5, window=10)


def test_bounded_least_squares_known_values():
    # a = I: the solution is b clipped to the box
    b = torch.tensor([-0.5, 0.3, 2.0], dtype=torch.float64)
    s = bounded_least_squares(torch.eye(3, dtype=torch.float64), b)
    assert s.tolist() == pytest.approx([0.0, 0.3, 1.0], abs=1e-15)
    # interior solution of an over-determined system is recovered exactly
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    truth = torch.rand(8, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    assert torch.allclose(bounded_least_squares(a, a @ truth), truth, atol=1e-12)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (200, 60)])
def test_bounded_least_squares_matches_scipy_and_respects_bounds(shape):
    from scipy.optimize import lsq_linear

    gen = torch.Generator().manual_seed(shape[1])
    a = torch.randn(*shape, generator=gen, dtype=torch.float64)
    b = 3 * torch.randn(shape[0], generator=gen, dtype=torch.float64)
    s = bounded_least_squares(a, b, lower=-0.5, upper=1.0)
    ref = lsq_linear(a.numpy(), b.numpy(), bounds=(-0.5, 1.0), method="bvls", tol=1e-14)
    assert float(s.min()) >= -0.5 and float(s.max()) <= 1.0
    ours, theirs = float((a @ s - b).norm()), math.sqrt(2 * ref.cost)
    assert ours <= theirs * (1 + 1e-10) + 1e-12
    if shape[0] > shape[1]:  # over-determined: the bounds are active, a real test
        assert bool(((s == -0.5) | (s == 1.0)).any())
    else:  # under-determined: an exact solution inside the box exists and is found
        assert ours < 1e-10


def test_bounded_least_squares_refuses_bad_input():
    with pytest.raises(ValueError, match="a must be"):
        bounded_least_squares(torch.ones(3, 2).double(), torch.ones(2).double())
    with pytest.raises(ValueError, match="lower must be < upper"):
        bounded_least_squares(torch.ones(3, 2).double(), torch.ones(3).double(), 1.0, 0.0)


def test_relaxed_gradient_with_the_sign_pattern_is_autograd():
    task = sin_task(30, 5, seed=1)
    w = init_mlp([5, 7, 6, 1], seed=2)
    from lowrank.nets import hidden_preactivations

    pre, _ = hidden_preactivations(w, task.x, "relu")
    ours = relaxed_gradient(w, task.x, task.y, [(z > 0).double() for z in pre])
    _, auto = loss_and_gradient(w, task.x, task.y, "relu")
    for a, b in zip(ours, auto, strict=True):
        assert torch.allclose(a, b, atol=1e-15, rtol=1e-13)
    with pytest.raises(ValueError, match="slopes must be"):
        relaxed_gradient(w, task.x, task.y, [torch.ones(30, 7).double()])


def _kinked_stationary_point(depth: int):
    """An exact Clarke-stationary point of L_λ with one kink: f(x) = a·(a·(a x_1)_+)_+ ...

    x_1 = (p, q) (y = +1) is active; x_2 = e_2 (y = −1) sits on the kink of every hidden
    unit. With all layers equal to a the e_1 and scale equations hold for
    λ = |ℓ'(a^K p)| a^{K−2} p / n, and the e_2 equation needs σ' products = 2 q |ℓ'(a^K p)|.
    """
    a, p, q, n = 1.3, 0.8, 0.3, 2
    c1 = 1 / (1 + math.exp(a**depth * p))  # −ℓ'(a^K p)
    lam = c1 * a ** (depth - 2) * p / n
    w = [torch.tensor([[a, 0.0]], dtype=torch.float64)]
    w += [torch.tensor([[a]], dtype=torch.float64) for _ in range(depth - 1)]
    x = torch.tensor([[p, q], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, -1.0], dtype=torch.float64)
    free = [torch.tensor([[False], [True]]) for _ in range(depth - 1)]
    return w, x, y, lam, free, 2 * q * c1


@pytest.mark.parametrize("depth", [2, 3])
def test_kink_certificate_is_zero_at_an_exact_clarke_stationary_point(depth):
    w, x, y, lam, free, product = _kinked_stationary_point(depth)
    cert = kink_certificate(w, x, y, lam, free)
    assert cert.residual < 1e-14
    assert cert.residual_autograd > 0.1  # autograd's σ'(0) = 0 misses it
    assert cert.balance < 1e-14  # Lemma 2 holds exactly there
    kink_slopes = [s[1, 0].item() for s in cert.slopes]
    assert all(0 <= v <= 1 for v in kink_slopes)
    assert math.prod(kink_slopes) == pytest.approx(product, rel=1e-12)
    assert [s[0, 0].item() for s in cert.slopes] == [1.0] * (depth - 1)  # not free: σ' = 1


def test_kink_certificate_fails_on_wrong_input():
    # the same point with the wrong λ, or without the kink free, is not certified
    w, x, y, lam, free, _ = _kinked_stationary_point(3)
    assert kink_certificate(w, x, y, 2 * lam, free).residual > 0.2
    none_free = [torch.zeros_like(f) for f in free]
    assert kink_certificate(w, x, y, lam, none_free).residual > 0.1
    # a random network with every pair free is far from stationary, slopes stay in [0, 1]
    task = sin_task(20, 4, seed=0)
    w0 = init_mlp([4, 5, 5, 1], seed=3)
    all_free = [torch.ones(20, 5, dtype=torch.bool) for _ in range(2)]
    cert = kink_certificate(w0, task.x, task.y, 1e-2, all_free, rounds=5)
    assert cert.residual > 0.5 and cert.residual <= cert.residual_autograd
    assert all(bool(((s >= 0) & (s <= 1)).all()) for s in cert.slopes)
    with pytest.raises(ValueError, match="free must be"):
        kink_certificate(w0, task.x, task.y, 1e-2, all_free[:1])


def test_subgradient_certificate_of_a_gd_window():
    task = sin_task(32, 6, seed=0)
    lam, steps = 1e-2, 3000
    rec = StationarityRecorder(task.x, task.y, lam, "relu", steps, every=steps, window=100)
    gd(init_mlp([6, 8, 8, 1], seed=0), task.x, task.y, lam, 1.0, steps,
       activation="relu", record_every=1, record=rec)
    masks = straddled_kinks(rec.iterates, task.x)
    assert [int(m.sum()) for m in masks] == pattern_flips(rec.iterates, task.x)
    cert = subgradient_certificate(rec.iterates, task.x, task.y, lam)
    assert cert.free == sum(pattern_flips(rec.iterates, task.x))
    assert cert.residual <= cert.residual_autograd
    assert all(bool(((s >= 0) & (s <= 1)).all()) for s in cert.slopes)
    with pytest.raises(ValueError, match="at least two"):
        subgradient_certificate(rec.iterates[:1], task.x, task.y, lam)
