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

from lowrank.checks import check_finite, check_positive, check_weights
from lowrank.losses import empirical_loss, logistic_prime
from lowrank.merge import merge_sum
from lowrank.nets import forward

END_TO_END_FORMS = ("arora", "printed")


def _check_task(x: torch.Tensor, y: torch.Tensor, d: int | None = None) -> None:
    check_finite(x, "x")
    check_finite(y, "y")
    if x.ndim != 2 or (d is not None and x.shape[1] != d):
        raise ValueError(f"x must have shape (n, {d if d else 'd'}), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")


def _check_lam(lam: float) -> None:
    if not float(lam) >= 0 or not np.isfinite(float(lam)):
        raise ValueError(f"lam must be a finite weight decay >= 0, got {lam}")


def _check_single_net(weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    weights = check_weights(weights)
    if weights[0].ndim != 2:
        raise ValueError("weights must be one net (2-D layers), not an ensemble")
    if weights[-1].shape[0] != 1:
        raise ValueError(f"weights[-1] must have one output row, got {tuple(weights[-1].shape)}")
    return weights


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
    weights = _check_single_net(weights)
    if len(weights) < 2:
        raise ValueError(f"weights must have at least two layers to compare, got {len(weights)}")
    gaps = [
        torch.linalg.matrix_norm(b.T @ b - a @ a.T).item()
        for a, b in zip(weights[:-1], weights[1:], strict=True)
    ]
    return max(gaps)


def end_to_end(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """The end-to-end vector wᵀ = W_K ⋯ W_1 (Section 4), shape (d,)."""
    weights = _check_single_net(weights)
    prod = weights[0]
    for w in weights[1:]:
        prod = w @ prod
    return prod[0]


def _grad_L1(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logistic_prime(y * (x @ w)) * y) @ x / x.shape[0]


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
    weights = [w.to(torch.float64) for w in _check_single_net(weights)]
    _check_task(x, y, weights[0].shape[1])
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
    _check_task(x, y, w0.shape[0])
    _check_lam(lam)

    def rhs(_t, v):
        return end_to_end_rhs(torch.from_numpy(v), x, y, lam, K, form).numpy()

    sol = _solve(rhs, w0.to(torch.float64).numpy().copy(), t_eval, rtol, atol, method)
    return Trajectory(sol.t, sol.y.T.copy(), None, sol.nfev)


def losses_along(traj: Trajectory, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """L¹(w(t)) at every recorded time."""
    return np.array([loss_and_grad(torch.from_numpy(w), x, y)[0] for w in traj.w])


def lemma5_integrand(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, K: int) -> float:
    """(K−1)‖w‖^{1−1/K}|⟨∇L¹(w), w⟩|, the integrand of Lemma 5's left-hand side."""
    _, g = loss_and_grad(w, x, y)
    return float((K - 1) * w.norm() ** (1.0 - 1.0 / K) * (g @ w).abs())


def cumulative_integral(t: np.ndarray, values: np.ndarray) -> np.ndarray:
    """∫_0^t of sampled values by the cumulative Simpson rule, starting at 0."""
    from scipy.integrate import cumulative_simpson

    return cumulative_simpson(values, x=t, initial=0.0)


def lemma5_lhs(traj: Trajectory, x: torch.Tensor, y: torch.Tensor, K: int) -> np.ndarray:
    """Lemma 5's LHS with s = 0: (K−1)∫_0^t ‖w‖^{1−1/K}|⟨∇L¹, w⟩| dr along a trajectory."""
    vals = np.array([lemma5_integrand(torch.from_numpy(w), x, y, K) for w in traj.w])
    return cumulative_integral(traj.t, vals)


def dissipation_terms(
    traj: Trajectory, x: torch.Tensor, y: torch.Tensor, K: int, lam: float
) -> dict[str, np.ndarray]:
    """Cumulative integrals in dL¹/dt = ⟨∇L¹, ẇ⟩ under the Arora form of Eq. (4).

    Keys: ``grad`` ∫‖w‖^{2−2/K}‖∇L¹‖², ``radial_printed`` ∫‖w‖^{2−2/K}⟨∇L¹,w⟩²,
    ``radial_arora`` ∫‖w‖^{−2/K}⟨∇L¹,w⟩², ``decay`` ∫⟨∇L¹,w⟩ and ``loss`` L¹(w(t)).
    """
    rows = []
    for w_np in traj.w:
        w = torch.from_numpy(w_np)
        loss, g = loss_and_grad(w, x, y)
        nrm, inner = float(w.norm()), float(g @ w)
        rows.append(
            (
                nrm ** (2 - 2 / K) * float(g @ g),
                nrm ** (2 - 2 / K) * inner**2,
                nrm ** (-2 / K) * inner**2,
                inner,
                loss,
            )
        )
    arr = np.array(rows)
    keys = ("grad", "radial_printed", "radial_arora", "decay")
    out = {k: cumulative_integral(traj.t, arr[:, j]) for j, k in enumerate(keys)}
    out["loss"] = arr[:, 4]
    return out


def merged_gap(
    a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """f_{θ+θ'}(x) − f_θ(x) split into f_{θ'}(x) (what Theorem 2 bounds) and the cross terms.

    For K layers (W_K+W'_K)⋯(W_1+W'_1) expands into 2^K products; the two pure ones
    are f_θ and f_θ', the other 2^K − 2 mix layers of both nets.
    """
    merged = merge_sum(a, b)
    f_ab = forward(merged, x, "linear")
    f_a, f_b = forward(a, x, "linear"), forward(b, x, "linear")
    return {"gap": f_ab - f_a, "other": f_b, "cross": f_ab - f_a - f_b}


def orthogonal_overlap(traj: Trajectory, x_prime: torch.Tensor, lam: float) -> np.ndarray:
    """⟨w(t),x'⟩ = e^{−λt} W_K(t)⋯W_2(t) W_1(0)x' when x' ⊥ every training input.

    Then ∇_{W_1}L x' = 0, so Eq. (1) gives d/dt W_1x' = −λW_1x' exactly; this form
    keeps full relative accuracy where ⟨w(t),x'⟩ itself sinks below the solver's atol.
    """
    if traj.layers is None:
        raise ValueError("traj must come from simulate_layers (it needs the layers)")
    check_finite(x_prime, "x_prime")
    start = traj.layers[0][0] @ x_prime
    out = []
    for t, layers in zip(traj.t, traj.layers, strict=True):
        v = start
        for w in layers[1:]:
            v = w @ v
        out.append(float(np.exp(-lam * t) * v[0]))
    return np.array(out)


def psd_power(m: np.ndarray, p: float, rel_tol: float = 1e-12) -> np.ndarray:
    """M^p of a symmetric PSD matrix by eigh; eigenvalues below rel_tol·max count as 0, M^0 = I."""
    vals, vecs = np.linalg.eigh(m)
    vals = np.where(vals > rel_tol * max(vals.max(), 0.0), vals, 0.0)
    powered = np.ones_like(vals) if p == 0 else vals**p
    return (vecs * powered) @ vecs.T


def arora_sum(w: np.ndarray, g: np.ndarray, K: int) -> np.ndarray:
    """Σ_{k=1}^K (WWᵀ)^{(k−1)/K} ∇L¹ (WᵀW)^{(K−k)/K} of Theorem 3 for the row W = wᵀ, by eigh."""
    row, grad = w[None, :], g[None, :]
    terms = [
        psd_power(row @ row.T, (k - 1) / K) @ grad @ psd_power(row.T @ row, (K - k) / K)
        for k in range(1, K + 1)
    ]
    return np.sum(terms, axis=0)[0]


def tidy(t: np.ndarray, series: dict[str, np.ndarray], **constants):
    """A long pandas frame with columns t, quantity, value (plus constant columns) for plots."""
    import pandas as pd

    frames = [pd.DataFrame({"t": t, "quantity": k, "value": v}) for k, v in series.items()]
    out = pd.concat(frames, ignore_index=True)
    for key, value in constants.items():
        out[key] = value
    return out


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


def two_layer_cross_prediction(
    a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Balanced K = 2 nets: cross terms = ⟨u,u'⟩(r f_θ(x) + f_θ'(x)/r) (chapter 9).

    Here u = W_2/‖W_2‖ and r = ‖W'_2‖/‖W_2‖. Balance makes W_1 = u cᵀ, so
    W'_2W_1x = ‖W'_2‖⟨u', u⟩cᵀx = r⟨u', u⟩ f_θ(x), and symmetrically.
    """
    if len(a) != 2 or len(b) != 2:
        raise ValueError(f"a and b must be two-layer nets, got {len(a)} and {len(b)} layers")
    u, u2 = a[1][0] / a[1].norm(), b[1][0] / b[1].norm()
    r = b[1].norm() / a[1].norm()
    f_a, f_b = forward(a, x, "linear"), forward(b, x, "linear")
    return (u @ u2) * (r * f_a + f_b / r)


def merged_gap_series(
    a: Trajectory, b: Trajectory, x: torch.Tensor, every: int = 1
) -> dict[str, np.ndarray]:
    """Mean |·| over inputs x of f_θ and the parts of ``merged_gap``, at every ``every``-th time."""
    if a.layers is None or b.layers is None or len(a.layers) != len(b.layers):
        raise ValueError("a and b must be simulate_layers trajectories on the same times")
    check_positive(every, "every")
    pairs = list(zip(a.layers, b.layers, strict=True))[:: int(every)]
    rows = [merged_gap(la, lb, x) | {"f": forward(la, x, "linear")} for la, lb in pairs]
    out = {key: np.array([r[key].abs().mean().item() for r in rows]) for key in rows[0]}
    out["t"] = a.t[:: int(every)]
    return out


def orthogonal_overlaps(traj: Trajectory, xs: torch.Tensor, lam: float) -> np.ndarray:
    """⟨w(t), x_j⟩ = e^{−λt} W_K(t)⋯W_2(t) W_1(0)x_j for rows x_j ⊥ every training input; (T, n).

    The matrix form of ``orthogonal_overlap``: full relative accuracy far below atol.
    """
    if traj.layers is None:
        raise ValueError("traj must come from simulate_layers (it needs the layers)")
    check_finite(xs, "xs")
    d = traj.layers[0][0].shape[1]
    if xs.ndim != 2 or xs.shape[1] != d:
        raise ValueError(f"xs must have shape (n, {d}), got {tuple(xs.shape)}")
    start = traj.layers[0][0] @ xs.T  # (m_1, n)
    out = []
    for t, layers in zip(traj.t, traj.layers, strict=True):
        v = start
        for w in layers[1:]:
            v = w @ v
        out.append(np.exp(-lam * t) * v[0].numpy())
    return np.stack(out)


def balanced_overlap(traj: Trajectory, x_prime: torch.Tensor, lam: float, K: int) -> np.ndarray:
    """⟨w(t),x'⟩ = e^{−λt}(‖w(t)‖/‖w(0)‖)^{1−1/K}⟨w(0),x'⟩: balanced start, x' ⊥ training inputs.

    From ``orthogonal_overlap``: a balanced net keeps its hidden directions v_1, …, v_{K−1}
    (every layer's gradient is ∝ v_k v_{k−1}ᵀ for k ≥ 2) and its common scale s = ‖w‖^{1/K},
    so W_K(t)⋯W_2(t) W_1(0)x' = s(t)^{K−1} s(0)⟨v_0(0), x'⟩ (chapter 9).
    """
    check_finite(x_prime, "x_prime")
    if int(K) != K or K < 2:
        raise ValueError(f"K must be an integer >= 2, got {K}")
    norms = np.linalg.norm(traj.w, axis=1)
    if not norms[0] > 0:
        raise ValueError("w(0) must be non-zero")
    start = float(traj.w[0] @ x_prime.numpy())
    return np.exp(-lam * traj.t) * (norms / norms[0]) ** (1 - 1 / K) * start


def eq5_coefficient(
    w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lam: float, K: int, form: str = "arora"
) -> float:
    """a(t) of Eq. (5): −λK − (K−1)‖w‖^p⟨∇L¹(w), w⟩, p = −2/K ('arora') or 2 − 2/K ('printed')."""
    if form not in END_TO_END_FORMS:
        raise ValueError(f"form must be one of {END_TO_END_FORMS}, got {form!r}")
    _, g = loss_and_grad(w, x, y)
    power = -2.0 / K if form == "arora" else 2.0 - 2.0 / K
    return float(-lam * K - (K - 1) * w.norm() ** power * (g @ w))


def _hidden_product(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    prod = weights[-1]
    for w in reversed(weights[1:-1]):
        prod = prod @ w
    return prod  # W_K ⋯ W_2, a (1, m_1) row


def merged_gap_split(
    a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """f_{θ+θ'}(x) − f_θ(x) = [P̄ − P]W_1x + P̄W'_1x, P = W_K⋯W_2, P̄ = (W_K+W'_K)⋯(W_2+W'_2).

    Keys ``gap``, ``via_first`` (the products through θ's first layer) and
    ``via_other_first`` (through θ''s first layer, which vanishes with W'_1x when x ⊥ θ''s task).
    """
    a, b = _check_single_net(a), _check_single_net(b)
    if [w.shape for w in a] != [w.shape for w in b]:
        raise ValueError("a and b must have the same layer shapes to be merged")
    merged = merge_sum(a, b)
    p_sum = _hidden_product(merged)
    via_first = ((p_sum - _hidden_product(a)) @ a[0] @ x.T)[0]
    via_other = (p_sum @ b[0] @ x.T)[0]
    gap = forward(merged, x, "linear") - forward(a, x, "linear")
    return {"gap": gap, "via_first": via_first, "via_other_first": via_other}


def merged_scale(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """R with (W_K+W'_K)⋯(W_2+W'_2)W_1 = (1+R)W_K⋯W_1 when W_1 is rank one (balanced θ).

    Then the products through θ's first layer add R f_θ(x) to the merged output; for K = 2,
    R = ⟨u, u'⟩‖W'_2‖/‖W_2‖. Computed as ⟨P̄W_1, w⟩/‖w‖² − 1 (chapter 9).
    """
    a, b = _check_single_net(a), _check_single_net(b)
    if [w.shape for w in a] != [w.shape for w in b]:
        raise ValueError("a and b must have the same layer shapes to be merged")
    w = end_to_end(a)
    if not float(w.norm()) > 0:
        raise ValueError("θ's end-to-end vector must be non-zero")
    merged_row = (_hidden_product(merge_sum(a, b)) @ a[0])[0]
    return float(merged_row @ w / (w @ w)) - 1.0
