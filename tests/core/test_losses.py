"""The logistic loss and its derivative."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.core import losses


def test_logistic_values_and_stability():
    z = torch.tensor([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=torch.float64)
    val = losses.logistic(z)
    assert torch.isfinite(val).all()
    assert val[2].item() == pytest.approx(math.log(2))
    assert val[0].item() == pytest.approx(1000.0)
    assert val[-1].item() == pytest.approx(0.0, abs=1e-300)
    d = losses.logistic_prime(z)
    assert d[2].item() == pytest.approx(-0.5)
    assert ((d > -1) & (d < 0) | (d == -1) | (d == 0)).all()


def test_logistic_prime_is_the_derivative():
    z = torch.linspace(-8, 8, 33, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(losses.logistic(z).sum(), z)
    assert torch.allclose(g, losses.logistic_prime(z.detach()), atol=1e-14)


def test_empirical_loss_is_mean():
    m = torch.tensor([[0.0, 0.0], [100.0, 100.0]], dtype=torch.float64)
    out = losses.empirical_loss(m)
    assert out.shape == (2,) and out[0].item() == pytest.approx(math.log(2))


def test_logistic_is_accurate_far_in_the_tail():
    # ℓ(z) = −z + ln(1 + e^{z}) for very negative z: compare with the log1p form in float64
    z = torch.tensor([-25.0, -35.0, -45.0], dtype=torch.float64)
    exact = -z + torch.log1p(torch.exp(z))
    assert torch.equal(losses.logistic(z), exact)


def test_logistic_gradient_at_zero_margin():
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(losses.logistic(z).sum(), z)
    assert torch.equal(g, torch.full((3,), -0.5, dtype=torch.float64))
