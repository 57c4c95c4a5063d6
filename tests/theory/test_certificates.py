"""Goldstein certificates of a window of GD iterates and pattern flips."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.core.metrics import alignment_residual
from lowrank.theory.certificates import (
    goldstein_certificate,
    min_norm_convex_combination,
    pattern_flips,
)


def _toy():
    w = [torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), torch.ones(1, 2).double()]
    return w


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


def test_pattern_flips_counts_sign_changes():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    a = [torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.ones(1, 1).double()]
    b = [torch.tensor([[1.0, 1.0]], dtype=torch.float64), torch.ones(1, 1).double()]
    assert pattern_flips([a, a], x) == [0]
    assert pattern_flips([a, b], x) == [1]
    with pytest.raises(ValueError, match="at least two"):
        pattern_flips([a], x)
