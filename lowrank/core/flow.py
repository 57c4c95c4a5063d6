"""Gradient flow of deep linear nets (Eq. 1) and their end-to-end dynamics (Eq. 4, App. C.3).

A net is a weight list ``[W_1, ..., W_K]`` with ``W_K`` of shape ``(1, m_{K-1})``;
its end-to-end vector is ``wᵀ = W_K ⋯ W_1``. Flows are integrated in float64 by
``scipy.integrate.solve_ivp`` (imported lazily: the core needs only torch + numpy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lowrank.core.checks import check_finite, check_positive, check_single_net, check_task
from lowrank.core.losses import empirical_loss
from lowrank.core.models import linear_grad_sum

END_TO_END_FORMS = ("arora", "printed")


def _check_lam(lam: float) -> None:
    if not float(lam) >= 0 or not np.isfinite(float(lam)):
        raise ValueError(f"lam must be a finite weight decay >= 0, got {lam}")


def balanced_init(
    dims: Sequence[int], scale: float, seed: int = 0, direction: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """A balanced start W_{k+1}ᵀW_{k+1} = W_k W_kᵀ (Theorem 1): W_k = s·v_k v_{k-1}ᵀ, rank one.

    With a scalar output W_Kᵀ W_K has rank one, so balance forces every layer to
    rank one with matching singular vectors; ``scale`` = ‖w(0)‖ = s^K. ``direction``
    (optional) fixes w(0)/‖w(0)‖ = v_0; the hidden directions v_1, … are the same seeded
    draws either way.
    """
    if len(dims) < 3 or any(int(m) < 1 for m in dims) or dims[-1] != 1:
        raise ValueError(f"dims must be d, m_1, ..., m_{{K-1}}, 1 with K >= 2, got {list(dims)}")
    check_positive(scale, "scale")
    gen = torch.Generator().manual_seed(seed)
    vs = []
    for m in dims[:-1]:
        v = torch.randn(m, generator=gen, dtype=torch.float64)
        vs.append(v / v.norm())
    if direction is not None:
        check_finite(direction, "direction")
        if direction.shape != (dims[0],) or not bool(direction.ne(0).any()):
            raise ValueError(f"direction must be a non-zero vector of shape ({dims[0]},)")
        vs[0] = direction.to(torch.float64) / direction.to(torch.float64).norm()
    s = scale ** (1.0 / (len(dims) - 1))
    layers = [s * torch.outer(vs[k + 1], vs[k]) for k in range(len(vs) - 1)]
    return layers + [s * vs[-1][None, :]]


def imbalance(weights: Sequence[torch.Tensor]) -> float:
    """max_k ‖W_{k+1}ᵀW_{k+1} − W_k W_kᵀ‖_F, zero exactly for a balanced net (Theorem 3)."""
    weights = check_single_net(weights, scalar_output=True)
    if len(weights) < 2:
        raise ValueError(f"weights must have at least two layers to compare, got {len(weights)}")
    gaps = [
        torch.linalg.matrix_norm(b.T @ b - a @ a.T).item()
        for a, b in zip(weights[:-1], weights[1:], strict=True)
    ]
    return max(gaps)


def end_to_end(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """The end-to-end vector wᵀ = W_K ⋯ W_1 (Section 4), shape (d,)."""
    weights = check_single_net(weights, scalar_output=True)
    prod = weights[0]
    for w in weights[1:]:
        prod = w @ prod
    return prod[0]


def _grad_L1(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return linear_grad_sum(w, x, y) / x.shape[0]


def loss_and_grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """L¹(w) = (1/n)Σ ℓ(y_i⟨w, x_i⟩) and ∇L¹(w) = (1/n)Σ ℓ'(y_i⟨w, x_i⟩) y_i x_i (App. C.3)."""
    return float(empirical_loss(y * (x @ w))), _grad_L1(w, x, y)


def layer_flow_rhs(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, lam: float
) -> list[torch.Tensor]:
    """Eq. (1): Ẇ_k = −λW_k − ∇_{W_k}L, with ∇_{W_k}L = (W_K⋯W_{k+1})ᵀ ∇L¹ᵀ (W_{k-1}⋯W_1)ᵀ."""
    K = len(weights)
    lefts = [weights[0].new_ones(1)] * K  # lefts[k] = W_K⋯W_{k+2} as a row (0-based k)
    for k in range(K - 2, -1, -1):
        lefts[k] = lefts[k + 1] @ weights[k + 1]
    g = _grad_L1(lefts[0] @ weights[0], x, y)
    out, right = [], g  # right = W_{k-1}⋯W_1 ∇L¹
    for k in range(K):
        out.append(-lam * weights[k] - torch.outer(lefts[k], right))
        right = weights[k] @ right
    return out


def end_to_end_rhs(
    w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lam: float, K: int, form: str = "arora"
) -> torch.Tensor:
    """ẇ of Eq. (4): 'printed' uses ‖w‖^{2−2/K} in the (K−1)⟨∇L,w⟩w term, 'arora' ‖w‖^{−2/K}.

    'arora' is Arora et al.'s Theorem 1 specialised to a row vector, where
    (wwᵀ)^{p} = ‖w‖^{2p−2}wwᵀ for p > 0 (see chapter 9).
    """
    if form not in END_TO_END_FORMS:
        raise ValueError(f"form must be one of {END_TO_END_FORMS}, got {form!r}")
    g = _grad_L1(w, x, y)
    nrm = w.norm()
    inner = g @ w
    coef = nrm ** (-2.0 / K) if form == "arora" else nrm ** (2.0 - 2.0 / K)
    return (-lam * K - (K - 1) * coef * inner) * w - nrm ** (2.0 - 2.0 / K) * g


@dataclass
class Trajectory:
    """A solved flow: times t (T,), end-to-end vectors w (T, d), layers per time (or None)."""

    t: np.ndarray
    w: np.ndarray
    layers: list[list[torch.Tensor]] | None
    nfev: int


def _solve(rhs, y0: np.ndarray, t_eval: np.ndarray, rtol: float, atol: float, method: str):
    from scipy.integrate import solve_ivp

    t_eval = np.asarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size < 2 or np.any(np.diff(t_eval) <= 0) or t_eval[0] != 0:
        raise ValueError("t_eval must be an increasing 1-D array of times starting at 0")
    sol = solve_ivp(
        rhs, (0.0, float(t_eval[-1])), y0, method=method, t_eval=t_eval, rtol=rtol, atol=atol
    )
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return sol


def simulate_layers(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    t_eval: np.ndarray,
    rtol: float = 1e-11,
    atol: float = 1e-12,
    method: str = "DOP853",
) -> Trajectory:
    """Integrate the per-layer gradient flow Eq. (1) and record w(t) = W_K⋯W_1 at ``t_eval``."""
    weights = [w.to(torch.float64) for w in check_single_net(weights, scalar_output=True)]
    check_task(x, y, weights[0].shape[1])
    _check_lam(lam)
    shapes = [tuple(w.shape) for w in weights]
    sizes = [int(np.prod(s)) for s in shapes]

    def unpack(v: np.ndarray) -> list[torch.Tensor]:
        parts = np.split(v, np.cumsum(sizes)[:-1])
        return [torch.from_numpy(p.reshape(s)) for p, s in zip(parts, shapes, strict=True)]

    def rhs(_t, v):
        return np.concatenate([g.reshape(-1).numpy() for g in layer_flow_rhs(unpack(v), x, y, lam)])

    y0 = np.concatenate([w.reshape(-1).numpy() for w in weights])
    sol = _solve(rhs, y0, t_eval, rtol, atol, method)
    layers = [[p.clone() for p in unpack(sol.y[:, j].copy())] for j in range(sol.t.size)]
    w = np.stack([end_to_end(ls).numpy() for ls in layers])
    return Trajectory(sol.t, w, layers, sol.nfev)


def simulate_end_to_end(
    w0: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    K: int,
    t_eval: np.ndarray,
    form: str = "arora",
    rtol: float = 1e-11,
    atol: float = 1e-12,
    method: str = "DOP853",
) -> Trajectory:
    """Integrate the end-to-end ODE Eq. (4) on its own ('printed' or 'arora' form)."""
    check_finite(w0, "w0")
    if w0.ndim != 1:
        raise ValueError(f"w0 must be a vector (d,), got shape {tuple(w0.shape)}")
    if not bool(w0.ne(0).any()):
        raise ValueError("w0 must be non-zero: Eq. (4) has ‖w‖^{−2/K}, undefined at w = 0")
    if int(K) != K or K < 1:
        raise ValueError(f"K must be an integer >= 1 (the number of layers), got {K}")
    check_task(x, y, w0.shape[0])
    _check_lam(lam)

    def rhs(_t, v):
        return end_to_end_rhs(torch.from_numpy(v), x, y, lam, K, form).numpy()

    sol = _solve(rhs, w0.to(torch.float64).numpy().copy(), t_eval, rtol, atol, method)
    return Trajectory(sol.t, sol.y.T.copy(), None, sol.nfev)


def losses_along(traj: Trajectory, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """L¹(w(t)) at every recorded time."""
    return np.array([loss_and_grad(torch.from_numpy(w), x, y)[0] for w in traj.w])


def cumulative_integral(t: np.ndarray, values: np.ndarray) -> np.ndarray:
    """∫_0^t of sampled values by the cumulative Simpson rule, starting at 0."""
    from scipy.integrate import cumulative_simpson

    return cumulative_simpson(values, x=t, initial=0.0)


def psd_power(m: np.ndarray, p: float, rel_tol: float = 1e-12) -> np.ndarray:
    """M^p of a symmetric PSD matrix by eigh; eigenvalues below rel_tol·max count as 0, M^0 = I."""
    vals, vecs = np.linalg.eigh(m)
    vals = np.where(vals > rel_tol * max(vals.max(), 0.0), vals, 0.0)
    powered = np.ones_like(vals) if p == 0 else vals**p
    return (vecs * powered) @ vecs.T


def end_to_end_mismatch(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    t_eval: np.ndarray,
    form: str = "arora",
) -> float:
    """max_t ‖w_ODE(t) − w_layers(t)‖/‖w_layers(t)‖: Eq. (4) on its own against Eq. (1)."""
    layers = simulate_layers(weights, x, y, lam, t_eval)
    w0 = torch.from_numpy(layers.w[0].copy())
    e2e = simulate_end_to_end(w0, x, y, lam, len(weights), t_eval, form)
    gaps = np.linalg.norm(e2e.w - layers.w, axis=1) / np.linalg.norm(layers.w, axis=1)
    return float(gaps.max())
