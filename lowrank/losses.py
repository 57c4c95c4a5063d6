"""The logistic loss ℓ(x) = ln(1 + e^{-x}) and its derivative, stable for any |x|."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logistic(z: torch.Tensor) -> torch.Tensor:
    """ℓ(z) = ln(1 + e^{-z}) (Section 2), as softplus(-z) so it never overflows."""
    return F.softplus(-z)


def logistic_prime(z: torch.Tensor) -> torch.Tensor:
    """ℓ'(z) = -e^{-z}/(1 + e^{-z}) = -sigmoid(-z) ∈ (-1, 0) (Section 2)."""
    return -torch.sigmoid(-z)


def empirical_loss(margins: torch.Tensor) -> torch.Tensor:
    """L(θ) = (1/n) Σ_i ℓ(y_i f_θ(x_i)) from margins y·f of shape (..., n)."""
    return logistic(margins).mean(dim=-1)
