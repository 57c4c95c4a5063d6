"""Every synthetic task of the book: inputs on the unit sphere with sin labels (Sections 4-5).

Orthogonal and same-distribution task pairs (Figures 3 and 5), pairs with a bounded
cross-task overlap ε (Lemma 4), rotated subspaces and k mutually orthogonal tasks
(chapter 12), and token sequences for attention (chapters 6 and 12). Every draw is seeded
and made in float64 on the CPU, then cast, so one seed gives the same task in every dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lowrank.core.checks import check_finite, check_positive


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
    if not math.isfinite(a):
        raise ValueError(f"a (the frequency of sin(a wᵀx)) must be finite, got {a}")
    if w.ndim != 1 or x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"w must have shape ({x.shape[-1]},), got {tuple(w.shape)}")
    f_star = torch.sin(a * (x @ w))
    return torch.where(f_star >= 0, 1.0, -1.0).to(x.dtype)


def sin_task(n: int, d: int, a: float = 1.0, seed: int = 0, dtype=torch.float64) -> Task:
    """A task with inputs on the sphere and labels sign(sin(a wᵀx)), w ~ N(0, I_d)."""
    # drawn and labelled in float64 like every other task here, then cast: one seed gives
    # the same task in every dtype (float32 draws differ from float64 ones)
    x = unit_sphere(n, d, seed=seed)
    w = torch.randn(d, generator=torch.Generator().manual_seed(seed + 10_007), dtype=torch.float64)
    return Task(x.to(dtype), sin_labels(x, w, a).to(dtype))


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


def stack_tasks(
    tasks: Sequence[Task], *, dtype: torch.dtype, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (E, n, d) and labels (E, n) of E tasks of one size: one data set per member."""
    x = torch.stack([t.x for t in tasks]).to(device=device, dtype=dtype)
    y = torch.stack([t.y for t in tasks]).to(device=device, dtype=dtype)
    return x, y


# --- Section 5's pairs: different tasks (orthogonal inputs) and the same task ------------------

SYNTHETIC_SETTINGS = ("different", "same")


@dataclass
class TaskPairDraw:
    """One random draw of a pair of tasks: training sets and optional held-out sets."""

    setting: str
    seed: int
    train: tuple[Task, Task]
    test: tuple[Task, Task] | None = None


def _split(task: Task, n: int) -> tuple[Task, Task]:
    return Task(task.x[:n], task.y[:n]), Task(task.x[n:], task.y[n:])


def same_distribution_tasks(
    n: int, d: int, a: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Task, Task]:
    """The "same task" pair: both inputs from N(0, Σ_1) on the sphere, labels sign(sin(a w_iᵀx)).

    Σ_1 = Q_1Q_1ᵀ is the first task's subspace of ``orthogonal_tasks`` (same seed);
    the two tasks draw their own inputs and labelling vectors w_1, w_2 ~ N(0, I_d).
    """
    check_positive(n, "n")
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    basis = q[:, : d // 2]
    gen = torch.Generator().manual_seed(seed + 7_919)
    tasks = []
    for _ in range(2):
        x = torch.randn(n, basis.shape[1], generator=gen, dtype=torch.float64) @ basis.T
        x = x / x.norm(dim=1, keepdim=True)
        w = torch.randn(d, generator=gen, dtype=torch.float64)
        tasks.append(Task(x.to(dtype), sin_labels(x, w, a).to(dtype)))
    return tasks[0], tasks[1]


def synthetic_draw(setting: str, n: int, n_test: int, d: int, a: float, seed: int) -> TaskPairDraw:
    """Section 5's data: orthogonal tasks (``different``) or one input law (``same``)."""
    if setting not in SYNTHETIC_SETTINGS:
        raise ValueError(f"setting must be one of {SYNTHETIC_SETTINGS}, got {setting!r}")
    make = orthogonal_tasks if setting == "different" else same_distribution_tasks
    t1, t2 = make(n + n_test, d, a=a, seed=seed)
    (tr1, te1), (tr2, te2) = _split(t1, n), _split(t2, n)
    return TaskPairDraw(setting, seed, (tr1, tr2), (te1, te2) if n_test > 0 else None)


# --- task pairs with a bounded cross-task overlap ε (Section 4, chapters 7-8, 12) -------------


EPS_OVERLAP_MODES = ("uniform", "extreme", "label")


@dataclass
class TaskPair:
    """Two tasks with max_{i,j} |⟨x_i, x'_j⟩| = max_overlap ≤ eps (Section 4's ε)."""

    first: Task
    second: Task
    eps: float
    max_overlap: float


def _largest_root_below(eps: float, dtype: torch.dtype) -> torch.Tensor:
    # the largest ρ of the output dtype whose product with itself, as the float64 check
    # computes it, stays <= eps: then every |ρ s · ρ s'| with |s|, |s'| <= 1 does too
    rho = torch.tensor(eps**0.5, dtype=dtype)
    while float(rho.double() * rho.double()) > eps:
        rho = torch.nextafter(rho, torch.zeros_like(rho))
    return rho


def eps_task_pair(
    n: int,
    d: int,
    eps: float,
    a: float = 1.0,
    overlap: str = "uniform",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> TaskPair:
    """Two unit-norm tasks with cross-task overlap max_{i,j} |⟨x_i, x'_j⟩| ≤ ε (Lemma 4's ε).

    Coordinates 0..h-1 (h = (d-1)//2) carry task 1, h..d-2 task 2 and the last one
    is shared: x = (√(1−ρ²s²)·v, ρs) with v a uniform unit vector of the task's
    block, ρ = √ε and |s| ≤ 1, so ⟨x_i, x'_j⟩ = ρ² s_i s'_j exactly and ε = 0 gives
    orthogonal subspaces. ``overlap`` picks s: ``uniform`` (s ~ U[−1, 1]),
    ``extreme`` (random signs: every pair overlaps by exactly ε) or ``label``
    (s = y: every pair overlaps by ε, coherently with the labels, the worst case
    for Lemma 4). Labels are sign(sin(a wᵀv)) with w ~ N(0, I_d) per task.
    Axis-aligned blocks keep inner products exact in floating point; GD with a
    rotation-invariant initialisation is rotation-equivariant, so nothing is lost.
    """
    check_positive(n, "n")
    if int(d) < 3:
        raise ValueError(f"d must be >= 3 (two task blocks and one shared coordinate), got {d}")
    if not 0.0 <= float(eps) <= 1.0:
        raise ValueError(f"eps must be in [0, 1] (a bound on |<x, x'>| of unit vectors), got {eps}")
    if overlap not in EPS_OVERLAP_MODES:
        raise ValueError(f"overlap must be one of {EPS_OVERLAP_MODES}, got {overlap!r}")
    rho = float(_largest_root_below(float(eps), dtype))
    h = (d - 1) // 2
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for lo, hi in ((0, h), (h, d - 1)):
        v = torch.zeros(n, d, dtype=torch.float64)
        v[:, lo:hi] = torch.randn(n, hi - lo, generator=gen, dtype=torch.float64)
        v = v / v.norm(dim=1, keepdim=True)
        w = torch.randn(d, generator=gen, dtype=torch.float64)
        y = sin_labels(v, w, a)
        # one draw whatever the mode, so one seed gives the same v and y for every ε and mode
        r = torch.rand(n, generator=gen, dtype=torch.float64)
        if overlap == "uniform":
            s = 2 * r - 1
        elif overlap == "extreme":
            s = 1.0 - 2.0 * (r < 0.5).to(torch.float64)
        else:
            s = y.to(torch.float64)
        shared = rho * s.to(torch.float64)
        x = v * torch.sqrt(1 - shared.square()).unsqueeze(1)
        x[:, d - 1] = shared
        tasks.append(Task(x.to(dtype), y.to(dtype)))
    measured = float((tasks[0].x.double() @ tasks[1].x.double().T).abs().max())
    if measured > eps:
        raise RuntimeError(f"eps_task_pair broke its guarantee: overlap {measured} > eps {eps}")
    return TaskPair(tasks[0], tasks[1], float(eps), measured)


GEOMETRIES = ("rotated", "extreme")


def rotated_task_pair(
    n: int, d: int, eps: float, a: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float64
) -> TaskPair:
    """Two tasks on p-dim subspaces U_1, U_2 = εU_1 + √(1−ε²)U_⊥, so |⟨x, x'⟩| ≤ ε (p = d//2).

    All principal angles between the subspaces equal arccos ε: ε = 0 gives Section 5's
    orthogonal tasks, ε = 1 its "same task" setting (one input law, two labellings).
    """
    check_positive(n, "n")
    if int(d) < 2:
        raise ValueError(f"d must be >= 2 (two subspaces of dimension d//2), got {d}")
    if not 0.0 <= float(eps) <= 1.0:
        raise ValueError(f"eps must be in [0, 1] (the cosine of the principal angles), got {eps}")
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    p = d // 2
    u1 = q[:, :p]
    u2 = eps * u1 + math.sqrt(max(0.0, 1.0 - eps * eps)) * q[:, p : 2 * p]
    tasks = []
    for basis in (u1, u2):
        z = torch.randn(n, p, generator=gen, dtype=torch.float64)
        x = (z / z.norm(dim=1, keepdim=True)) @ basis.T
        x = x / x.norm(dim=1, keepdim=True)
        w = torch.randn(d, generator=gen, dtype=torch.float64)
        tasks.append(Task(x.to(dtype), sin_labels(x, w, a).to(dtype)))
    measured = float((tasks[0].x.double() @ tasks[1].x.double().T).abs().max())
    return TaskPair(tasks[0], tasks[1], float(eps), measured)


def task_pair(geometry: str, n: int, d: int, eps: float, a: float, seed: int) -> TaskPair:
    """``rotated`` (:func:`rotated_task_pair`) or ``extreme`` (every pair overlaps by ε)."""
    if geometry == "rotated":
        return rotated_task_pair(n, d, eps, a, seed)
    if geometry == "extreme":
        return eps_task_pair(n, d, eps, a, overlap="extreme", seed=seed)
    raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")


def subspace_tasks(
    n: int, p: int, k: int, a: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float64
) -> list[Task]:
    """k tasks on mutually orthogonal p-dim blocks of a random basis of R^{kp} (Section 5, k>2)."""
    check_positive(n, "n")
    check_positive(p, "p")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    d = p * k
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    tasks = []
    for j in range(k):
        z = torch.randn(n, p, generator=gen, dtype=torch.float64)
        x = z @ q[:, j * p : (j + 1) * p].T
        x = x / x.norm(dim=1, keepdim=True)
        w = torch.randn(d, generator=gen, dtype=torch.float64)
        tasks.append(Task(x.to(dtype), sin_labels(x, w, a).to(dtype)))
    return tasks


# --- sequence tasks for attention (chapter 12's head, chapter 6's block) ------------------------


def marked_token_task(n: int, tokens: int, d: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Sequences X (n, T, d) of Gaussian tokens, one marked (x_0 = 3); y = sign(⟨v*, x_marked⟩)."""
    check_positive(n, "n")
    if tokens < 2 or d < 3:
        raise ValueError(f"tokens must be >= 2 and d >= 3, got tokens={tokens}, d={d}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, tokens, d, generator=gen, dtype=torch.float64)
    x[:, :, 0] = 0.0
    marked = torch.randint(tokens, (n,), generator=gen)
    x[torch.arange(n), marked, 0] = 3.0  # the marker: what attention must find
    v = torch.randn(d, generator=gen, dtype=torch.float64)
    v[0] = 0.0
    y = torch.where(x[torch.arange(n), marked] @ v >= 0, 1.0, -1.0).to(torch.float64)
    query = torch.ones(d, dtype=torch.float64) / d**0.5
    return x, y, query, marked


def signed_pair_task(
    n: int, tokens: int = 5, d: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences X (n, T, d) in the unit ball with marked tokens A, B; y = sign⟨w, x_A − x_B⟩.

    Coordinate 0 marks the query token x_0, coordinates 1 and 2 mark A and B, the rest is
    Gaussian content. One head cannot attend to A and B with opposite signs, so a good
    block uses two live heads.
    """
    check_positive(n, "n")
    if tokens < 3 or d < 4:
        raise ValueError(f"tokens must be >= 3 and d >= 4, got tokens={tokens}, d={d}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, tokens, d, generator=gen, dtype=torch.float64) / math.sqrt(d - 3)
    x[:, :, :3] = 0.0
    x[:, 0, :] = 0.0
    x[:, 0, 0] = 1.0
    order = torch.argsort(torch.rand(n, tokens - 1, generator=gen), dim=-1) + 1
    rows = torch.arange(n)
    a, b = order[:, 0], order[:, 1]
    x[rows, a, 1] = 1.0
    x[rows, b, 2] = 1.0
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    w[:3] = 0.0
    y = torch.where((x[rows, a] - x[rows, b]) @ w >= 0, 1.0, -1.0).to(torch.float64)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1.0)  # every token in the unit ball
    return x, y
