"""Appendix C.3 (chapter 9): Theorem 2, Lemma 5, Theorem 3's operator and the merged gap.

The bounds of Theorem 2 and Lemma 5 as functions of their constants, and the quantities
they bound measured along a deep linear flow (a :class:`~lowrank.core.flow.Trajectory`):
Lemma 5's integral, Eq. (5)'s coefficient, the overlap ⟨w(t), x'⟩ with an input orthogonal to
the training data, and the parts of the merged gap f_{θ+θ'}(x) − f_θ(x).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lowrank.core.checks import check_finite, check_positive, check_single_net
from lowrank.core.flow import (
    END_TO_END_FORMS,
    Trajectory,
    cumulative_integral,
    end_to_end,
    loss_and_grad,
    psd_power,
)
from lowrank.core.merge import merge_sum
from lowrank.core.models import forward

# --- the bounds of Theorem 2 and Lemma 5 ---------------------------------------------------


def _check_theorem2_args(C: float, lam: float, K: int) -> None:
    if not (float(C) > 0):
        raise ValueError(f"C must be > 0 (a bound on the loss L(θ(t))), got {C}")
    if not (float(lam) > 0):
        raise ValueError(f"lam must be > 0 (Theorem 2 divides by λ), got {lam}")
    if int(K) != K or K < 2:
        raise ValueError(f"K must be an integer >= 2 (a deep net), got {K}")


def _nonneg_array(value, name: str, allow_inf: bool = False) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    finite = np.isfinite(arr) | (allow_inf & (arr == np.inf))
    if not bool(np.all(finite)) or bool(np.any(arr < 0)):
        kind = "finite or +inf" if allow_inf else "finite"
        raise ValueError(f"{name} must be {kind} and >= 0, got {value}")
    return arr


def theorem2_B(w0_norm: float, C: float, lam: float) -> float:
    """Theorem 2's B = ‖w(0)‖² + C/λ (App. C.3.1, with L¹(w(0)) ≤ C)."""
    _check_theorem2_args(C, lam, 2)
    w0 = float(_nonneg_array(w0_norm, "w0_norm"))
    return w0**2 + float(C) / float(lam)


def theorem2_log_A1(B: float, C: float, lam: float, K: int) -> float:
    """log A₁ = B^{2−2/K}(K−1)(1+λK)C/(2λK) (Theorem 2); A₁ itself easily overflows."""
    _check_theorem2_args(C, lam, K)
    b = float(_nonneg_array(B, "B"))
    return b ** (2 - 2 / K) * (K - 1) * (1 + lam * K) * C / (2 * lam * K)


def theorem2_A1(B: float, C: float, lam: float, K: int) -> float:
    """A₁ = exp(B^{2−2/K}(K−1)(1+λK)C/(2λK)) (Theorem 2); inf when it overflows float64."""
    log_a1 = theorem2_log_A1(B, C, lam, K)
    return float("inf") if log_a1 > 709.0 else float(np.exp(log_a1))


def theorem2_A2(B: float, C: float, lam: float, K: int, t) -> np.ndarray:
    """A₂ = 2B^{2−2/K} C A₁ (1 − e^{−λKt/2})/(λK) (Theorem 2), for t ∈ [0, ∞] (scalar or array)."""
    log_a1 = theorem2_log_A1(B, C, lam, K)
    t_arr = _nonneg_array(t, "t", allow_inf=True)
    # A₁·(1 − e^{−λKt/2}) in log space: A₁ = inf times a vanishing factor (t = 0) is 0, not NaN
    with np.errstate(divide="ignore", over="ignore"):
        growth = np.exp(log_a1 + np.log(-np.expm1(-lam * K * t_arr / 2)))
    return 2 * float(B) ** (2 - 2 / K) * C * growth / (lam * K)


def theorem2_rhs(init_overlap, eps, B: float, C: float, lam: float, K: int, t) -> np.ndarray:
    """Theorem 2: |⟨w(0),x'⟩| A₁ e^{−λKt} + A₂ ε bounds |⟨w(t),x'⟩| (scalar or array t)."""
    t_arr = _nonneg_array(t, "t")
    init = _nonneg_array(init_overlap, "init_overlap")
    e = _nonneg_array(eps, "eps")
    log_a1 = theorem2_log_A1(B, C, lam, K)
    # A₁e^{−λKt} as one exponential: A₁ = inf times an underflowed e^{−λKt} is not NaN
    with np.errstate(over="ignore"):
        decay = init * np.exp(log_a1 - lam * K * t_arr) if float(init) > 0 else 0.0 * t_arr
    eps_term = theorem2_A2(B, C, lam, K, t_arr) * e if float(e) > 0 else 0.0 * t_arr
    return decay + eps_term


def lemma5_rhs(K: int, lam: float, L0: float, duration) -> np.ndarray:
    """Lemma 5's right-hand side √((K−1)(1+λK) L¹(w(0)) (t−s)) for durations t − s ≥ 0."""
    _check_theorem2_args(L0 if L0 > 0 else 1.0, lam, K)
    _nonneg_array(L0, "L0")
    return np.sqrt((K - 1) * (1 + lam * K) * L0 * _nonneg_array(duration, "duration"))


def balanced_norm_bound(w0_norm: float, L0: float, lam: float, K: int) -> float:
    """(‖w(0)‖^{2/K} + 2L(0)/(λK))^{K/2} ≥ ‖w(t)‖: L + (λK/2)‖w‖^{2/K} is non-increasing (ch. 9)."""
    _check_theorem2_args(L0 if L0 > 0 else 1.0, lam, K)
    w0 = float(_nonneg_array(w0_norm, "w0_norm"))
    l0 = float(_nonneg_array(L0, "L0"))
    return (w0 ** (2 / K) + 2 * l0 / (lam * K)) ** (K / 2)


def balanced_objective(w_norm, loss, lam: float, K: int) -> np.ndarray:
    """L_λ(θ) = L¹(w) + (λK/2)‖w‖^{2/K} for a balanced net (each ‖W_k‖_F² = ‖w‖^{2/K}), Eq. (1).

    Gradient flow does not increase it, so sup_t L(θ(t)) ≤ L_λ(θ(0)): a C the proof of
    Theorem 2 may use where it assumes sup_t L¹(w(t)) ≤ C (chapter 9).
    """
    _check_theorem2_args(1.0, lam, K)
    norms = _nonneg_array(w_norm, "w_norm")
    losses = _nonneg_array(loss, "loss")
    return losses + lam * K / 2 * norms ** (2 / K)


# --- the bounded quantities along a flow ----------------------------------------------------


def lemma5_integrand(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, K: int) -> float:
    """(K−1)‖w‖^{1−1/K}|⟨∇L¹(w), w⟩|, the integrand of Lemma 5's left-hand side."""
    _, g = loss_and_grad(w, x, y)
    return float((K - 1) * w.norm() ** (1.0 - 1.0 / K) * (g @ w).abs())


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


def arora_sum(w: np.ndarray, g: np.ndarray, K: int) -> np.ndarray:
    """Σ_{k=1}^K (WWᵀ)^{(k−1)/K} ∇L¹ (WᵀW)^{(K−k)/K} of Theorem 3 for the row W = wᵀ, by eigh."""
    row, grad = w[None, :], g[None, :]
    terms = [
        psd_power(row @ row.T, (k - 1) / K) @ grad @ psd_power(row.T @ row, (K - k) / K)
        for k in range(1, K + 1)
    ]
    return np.sum(terms, axis=0)[0]


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
    a, b = check_single_net(a, scalar_output=True), check_single_net(b, scalar_output=True)
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
    a, b = check_single_net(a, scalar_output=True), check_single_net(b, scalar_output=True)
    if [w.shape for w in a] != [w.shape for w in b]:
        raise ValueError("a and b must have the same layer shapes to be merged")
    w = end_to_end(a)
    if not float(w.norm()) > 0:
        raise ValueError("θ's end-to-end vector must be non-zero")
    merged_row = (_hidden_product(merge_sum(a, b)) @ a[0])[0]
    return float(merged_row @ w / (w @ w)) - 1.0
