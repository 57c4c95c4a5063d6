"""Stable ranks, norms, spectral norms and the alignment residual."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowrank.core import engine, metrics, models
from lowrank.data.synthetic import sin_task

matrices = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(0, 10_000))


def test_stable_rank_of_rank_one_is_one():
    u, v = torch.randn(7, 1, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    assert metrics.stable_rank(u @ v).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n", [1, 4, 9, 25])
def test_stable_rank_of_identity_is_sqrt_n(n):
    eye = torch.eye(n, dtype=torch.float64)
    assert metrics.stable_rank(eye).item() == pytest.approx(math.sqrt(n), rel=1e-12)
    assert metrics.stable_rank_squared(eye).item() == pytest.approx(n, rel=1e-12)
    assert metrics.inverse_stable_rank(eye).item() == pytest.approx(1 / math.sqrt(n), rel=1e-12)


def test_stable_rank_known_diagonal():
    # singular values 3 and 4: ‖·‖_F = 5, ‖·‖_2 = 4
    w = torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert metrics.stable_rank(w).item() == pytest.approx(5 / 4)


def test_stable_rank_is_batched():
    w = torch.stack([torch.eye(4, dtype=torch.float64), torch.ones(4, 4, dtype=torch.float64)])
    assert torch.allclose(metrics.stable_rank(w), torch.tensor([2.0, 1.0], dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(matrices, st.floats(1e-3, 1e3))
def test_stable_rank_invariant_under_scaling(shape, c):
    m, n, seed = shape
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.allclose(metrics.stable_rank(c * w), metrics.stable_rank(w), rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(matrices)
def test_stable_rank_invariant_under_orthogonal_maps(shape):
    m, n, seed = shape
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g, dtype=torch.float64)
    q1, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    assert torch.allclose(metrics.stable_rank(q1 @ w @ q2), metrics.stable_rank(w), rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(matrices, st.integers(1, 6))
def test_stable_rank_between_one_and_sqrt_rank(shape, r):
    m, n, seed = shape
    g = torch.Generator().manual_seed(seed)
    r = min(r, m, n)
    w = torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(
        r, n, generator=g, dtype=torch.float64
    )
    rank = torch.linalg.matrix_rank(w).item()
    sr = metrics.stable_rank(w).item()
    assert 1 - 1e-12 <= sr <= math.sqrt(rank) + 1e-12


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.ones(3, dtype=torch.float64), "2-D"),
        (torch.zeros(3, 3, dtype=torch.float64), "zero matrix"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN"),
    ],
)
def test_stable_rank_refuses_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        metrics.stable_rank(bad)


def test_lemma3_weights_by_hand():
    # K = 3, H = 2: degrees 4, 2, 1; Z = 7; weights 8/7, 2^{3/2}/7, 1/7
    w = metrics.lemma3_weights(3, 2)
    expected = torch.tensor([8 / 7, 2**1.5 / 7, 1 / 7], dtype=torch.float64)
    assert torch.allclose(w, expected)
    # H = 1: every weight is 1/K
    assert torch.allclose(metrics.lemma3_weights(4, 1), torch.full((4,), 0.25, dtype=torch.float64))


def test_weighted_inverse_stable_rank_and_pseudo_rank():
    eye = torch.eye(4, dtype=torch.float64)
    rank1 = torch.ones(1, 4, dtype=torch.float64)
    # H = 1, K = 2: (1/2)(1/2) + (1/2)(1) = 3/4
    lhs = metrics.weighted_inverse_stable_rank([eye, rank1], H=1)
    assert lhs.item() == pytest.approx(0.75)
    assert metrics.pseudo_rank([eye, rank1], H=1).item() == pytest.approx(4 / 3)


def test_frobenius_norms_shape_and_values():
    ws = models.init_mlp([3, 4, 1], members=2, seed=1)
    norms = metrics.frobenius_norms(ws)
    assert norms.shape == (2, 2)
    assert torch.allclose(norms[1, 0], ws[0][1].norm())


def test_loss_and_gradient_matches_finite_differences():
    task = sin_task(20, 3, seed=2)
    ws = models.init_mlp([3, 4, 1], seed=3)
    loss, grads = metrics.loss_and_gradient(ws, task.x, task.y, "relu2")
    h = 1e-6
    bumped = [w.clone() for w in ws]
    bumped[0][1, 2] += h
    loss_h, _ = metrics.loss_and_gradient(bumped, task.x, task.y, "relu2")
    assert ((loss_h - loss) / h).item() == pytest.approx(grads[0][1, 2].item(), rel=1e-4)


def test_alignment_residual_large_at_random_point():
    """The check can fail: a random initialisation is far from stationary."""
    task = sin_task(50, 5, seed=0)
    ws = models.init_mlp([5, 8, 1], seed=0)
    _, g = metrics.loss_and_gradient(ws, task.x, task.y, "linear")
    assert metrics.alignment_residual(ws, g, 1e-2).item() > 0.5
    assert metrics.alignment_cosine(ws, g).item() < 0.9


def test_alignment_residual_zero_at_a_constructed_stationary_point():
    ws = [torch.randn(3, 4, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)]
    lam = 0.3
    grads = [-lam * w for w in ws]
    assert metrics.alignment_residual(ws, grads, lam).item() == pytest.approx(0, abs=1e-15)
    assert metrics.alignment_cosine(ws, grads).item() == pytest.approx(1, abs=1e-15)
    per = metrics.alignment_residual(ws, grads, lam, per_layer=True)
    assert per.shape == (2,)


def test_alignment_residual_falls_during_gd():
    task = sin_task(40, 4, seed=5)
    ws = models.init_mlp([4, 6, 1], seed=5)
    lam = 0.05
    out, _ = engine.gd(ws, task.x, task.y, lam, 0.5, 3000, activation="linear")
    _, g0 = metrics.loss_and_gradient(ws, task.x, task.y, "linear")
    _, g1 = metrics.loss_and_gradient(out, task.x, task.y, "linear")
    r0 = metrics.alignment_residual(ws, g0, lam).item()
    r1 = metrics.alignment_residual(out, g1, lam).item()
    assert r1 < 1e-6 < r0


def test_alignment_residual_refuses_bad_lambda():
    ws = [torch.randn(3, 4, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)]
    with pytest.raises(ValueError, match="lam must be >= 0"):
        metrics.alignment_residual(ws, ws, -1.0)
    with pytest.raises(ValueError, match="lam must be > 0"):
        metrics.alignment_residual(ws, ws, 0.0)


def test_alignment_residual_per_member():
    ws = models.init_mlp([3, 4, 1], members=3, seed=0)
    grads = [-torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).view(3, 1, 1) * w for w in ws]
    r = metrics.alignment_residual(ws, grads, [0.1, 0.2, 0.3])
    assert r.shape == (3,) and r.abs().max().item() < 1e-15
    with pytest.raises(ValueError, match="one per member"):
        metrics.alignment_residual(ws, grads, [0.1, 0.2])


def test_alignment_measures_refuse_zero_layers_instead_of_nan_or_inf():
    ws = models.init_mlp([4, 3, 1], seed=0)
    zero = [torch.zeros_like(w) for w in ws]
    with pytest.raises(ValueError, match="zero layer"):
        metrics.alignment_residual([zero[0], ws[1]], ws, 0.1, per_layer=True)
    with pytest.raises(ValueError, match="zero layer"):
        metrics.alignment_residual(zero, ws, 0.1)
    with pytest.raises(ValueError, match="grads hold a zero layer"):
        metrics.alignment_cosine(ws, zero)
    with pytest.raises(ValueError, match="weights hold a zero layer"):
        metrics.alignment_cosine([zero[0], ws[1]], ws, per_layer=True)


def test_power_iteration_against_known_singular_values():
    gen = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(60, 20, generator=gen, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(30, 20, generator=gen, dtype=torch.float64)).Q
    s = torch.linspace(5.0, 0.1, 20, dtype=torch.float64)  # σ1 = 5, σ2 ≈ 4.74: a small gap
    w = u @ torch.diag(s) @ v.T
    for mat in (w, w.T, torch.stack([w, 2 * w])):
        est = metrics.spectral_norm_power(mat, tol=1e-12, iters=2000)
        assert torch.allclose(est, torch.linalg.svdvals(mat)[..., 0], rtol=1e-9)
    # one step is visibly wrong: the check is able to fail
    one = float(metrics.spectral_norm_power(w, iters=1, block=1, tol=1e-12))
    assert metrics.relative_error(one, 5.0) > 1e-3
    with pytest.raises(ValueError, match="method must be one of"):
        metrics.matrix_norms(w, method="randomized")


def _gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_lanczos_spectral_norm_matches_svdvals_on_a_gaussian_batch():
    # a Gaussian matrix has the smallest top gap a training run meets (its initialisation)
    w = _gaussian(2, 400, 600)
    exact = torch.linalg.svdvals(w)[..., 0]
    rel = (metrics.spectral_norm_lanczos(w) - exact).abs() / exact
    assert rel.max() < 1e-12


def test_lanczos_is_exact_once_the_krylov_space_is_the_whole_space():
    for w in (_gaussian(5, 7, 3, seed=1), _gaussian(3, 30, 50, seed=2).mT,
              _gaussian(4, 200, 1, seed=3) @ _gaussian(4, 1, 90, seed=4)):  # rank one: stops early
        exact = torch.linalg.svdvals(w)[..., 0]
        assert torch.allclose(metrics.spectral_norm_lanczos(w, steps=64), exact, rtol=1e-13)


def test_lanczos_with_too_few_steps_is_a_visible_lower_bound():
    w = _gaussian(2, 400, 600)
    exact = torch.linalg.svdvals(w)[..., 0]
    short = metrics.spectral_norm_lanczos(w, steps=3)
    assert (short <= exact * (1 + 1e-14)).all() and ((exact - short) / exact).max() > 1e-3
    with pytest.raises(ValueError, match="steps must be >= 1"):
        metrics.spectral_norm_lanczos(w, steps=0)


def test_spectral_norm_on_the_cpu_is_lapacks_and_lanczos_is_offered_by_name():
    w = _gaussian(3, 40, 70)
    assert torch.equal(metrics.spectral_norm(w), torch.linalg.matrix_norm(w, ord=2))
    _, spec = metrics.matrix_norms(w, "lanczos")
    assert torch.allclose(spec, torch.linalg.svdvals(w)[..., 0], rtol=1e-13)
