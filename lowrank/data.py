"""Synthetic tasks of the paper: inputs on the unit sphere, sin labelling, orthogonal tasks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowrank.checks import check_finite, check_positive


@dataclass
class Task:
    """Inputs x (n, d) and labels y ∈ {−1, +1} (n,) of one binary task."""

    x: torch.Tensor
    y: torch.Tensor


def unit_sphere(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n inputs drawn from N(0, I_d) and projected onto the sphere S^{d−1} (Section 5)."""
    check_positive(n, "n")
    check_positive(d, "d")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (x / x.norm(dim=1, keepdim=True)).to(dtype)


def sin_labels(x: torch.Tensor, w: torch.Tensor, a: float = 1.0) -> torch.Tensor:
    """y = 2·1(1/(1+e^{−f*(x)}) ≥ 1/2) − 1 with f*(x) = sin(a wᵀx) (Figure 2), i.e. sign, 0 ↦ +1."""
    check_finite(x, "x")
    check_finite(w, "w")
    if w.ndim != 1 or x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"w must have shape ({x.shape[-1]},), got {tuple(w.shape)}")
    f_star = torch.sin(a * (x @ w))
    return torch.where(f_star >= 0, 1.0, -1.0).to(x.dtype)


def sin_task(n: int, d: int, a: float = 1.0, seed: int = 0, dtype=torch.float64) -> Task:
    """A task with inputs on the sphere and labels sign(sin(a wᵀx)), w ~ N(0, I_d)."""
    x = unit_sphere(n, d, seed=seed, dtype=dtype)
    w = torch.randn(d, generator=torch.Generator().manual_seed(seed + 10_007), dtype=dtype)
    return Task(x, sin_labels(x, w, a))


def orthogonal_tasks(
    n: int, d: int, a: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Task, Task]:
    """Two tasks on orthogonal subspaces: x ~ N(0, Σ_i) normalised, ⟨Σ_1, Σ_2⟩ = 0 (Section 5).

    A seeded random orthonormal basis is split in two halves Q_1, Q_2 and
    Σ_i = Q_i Q_iᵀ; each task has its own labelling vector w_i ~ N(0, I_d).
    """
    check_positive(n, "n")
    if d < 2:
        raise ValueError(f"d must be >= 2 to split into two subspaces, got {d}")
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    tasks = []
    for basis in (q[:, : d // 2], q[:, d // 2 :]):
        z = torch.randn(n, basis.shape[1], generator=gen, dtype=torch.float64)
        x = z @ basis.T
        x = x / x.norm(dim=1, keepdim=True)
        w = torch.randn(d, generator=gen, dtype=torch.float64)
        tasks.append(Task(x.to(dtype), sin_labels(x, w, a).to(dtype)))
    return tasks[0], tasks[1]
