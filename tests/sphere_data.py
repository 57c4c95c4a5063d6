"""One seeded draw the engine and model tests share: E data sets of n unit-norm inputs."""

from __future__ import annotations

import torch


def sphere_data(E: int = 3, n: int = 12, d: int = 6, seed: int = 0):
    """Inputs (E, n, d) on the unit sphere and labels ±1 (E, n), float64, seeded."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(E, n, d, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.where(torch.randn(E, n, generator=gen) >= 0, 1.0, -1.0).double()
    return x, y
