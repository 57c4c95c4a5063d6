"""Section 2's facts and Section 3's identities, in checkable form.

The logistic-loss facts and Euler's theorem per layer (Section 2); Lemma 1 (deep linear
nets are rank one) and Lemma 2 (norm preservation). Lemma 1's proof writes every layer of a
stationary deep linear net from the data: ``W_k = w^(k+1) Σ_i r_i(θ) (W_{k−1}⋯W_1 x_i)ᵀ``
with ``r_i(θ) = −y_i ℓ'(y_i f_θ(x_i))/(nλ)`` (Appendix B). Lemma 2 says
``λ‖W_k‖_F² = −(H^{K−k}/n) Σ_i ℓ'(y_i f_θ(x_i)) y_i f_θ(x_i)``. Everything works for one
net or an ensemble (leading dimension E), in the dtype of the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowrank.core.checks import (
    check_finite,
    check_lambda_per_member,
    check_mlp_data,
    check_positive,
    check_single_net,
    check_weights,
    ensemble_size,
)
from lowrank.core.losses import logistic, logistic_prime
from lowrank.core.metrics import alignment_residual, loss_and_gradient
from lowrank.core.models import ACTIVATION_OF_DEGREE, activation_degree, forward, layer_degrees

# --- Section 2: the logistic-loss facts, Euler's theorem, homogeneity -----------------------


def logistic_fact_gaps(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """RHS − LHS of Section 2's facts −ℓ' ≤ ℓ, xℓ' ≤ ℓ, −xℓ' ≤ √ℓ (and the false −xℓ' ≤ ℓ)."""
    check_finite(x, "x")
    loss, slope = logistic(x), logistic_prime(x)
    return {
        "-l' <= l": loss + slope,
        "x l' <= l": loss - x * slope,
        "-x l' <= sqrt(l)": loss.sqrt() + x * slope,
        "-x l' <= l (false)": loss + x * slope,
    }


def euler_layer_traces(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str
) -> torch.Tensor:
    """tr(∇_{W_k} f_θ(x_i) W_kᵀ) for every layer k and input i, shape (K, n) (Lemma 2's proof).

    The trace is the derivative of f along W_k ↦ (1 + t)W_k at t = 0, so one
    forward-mode product per layer gives it for all inputs at once.
    """
    weights = check_single_net(weights)
    rows = []
    for k in range(len(weights)):

        def f_of_layer(w_k: torch.Tensor, k: int = k) -> torch.Tensor:
            return forward([*weights[:k], w_k, *weights[k + 1 :]], x, activation)

        _, tangent = torch.func.jvp(f_of_layer, (weights[k],), (weights[k],))
        rows.append(tangent)
    return torch.stack(rows)


def euler_layer_residual(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str
) -> torch.Tensor:
    """max_i |tr(∇_{W_k} f W_kᵀ) − H^{K−k} f| / max_i |f| per layer (Euler's theorem per layer)."""
    traces = euler_layer_traces(weights, x, activation)
    f = forward(weights, x, activation)
    degrees = layer_degrees(len(weights), activation_degree(activation))
    expected = torch.tensor(degrees, dtype=f.dtype).unsqueeze(-1) * f
    if float(f.abs().max()) == 0:
        raise ValueError("the network outputs f = 0 on every input x: relative residual undefined")
    return (traces - expected).abs().amax(dim=-1) / f.abs().max()


def homogeneity_degrees(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str, alpha: float = 0.6
) -> dict[str, torch.Tensor]:
    """Measured degrees of f_θ in its input and in θ, and Euler's identity in x (Section 2).

    ``degree_x`` = log(f_θ(αx)/f_θ(x))/log α and ``degree_theta`` = log(f_{αθ}(x)/f_θ(x))/log α
    on the inputs with |f_θ(x)| > 10⁻² max_i |f_θ(x_i)| (a log-ratio needs f well away from
    0); ``euler_x`` = max_i |⟨x_i, ∇_x f_θ(x_i)⟩ − H^{K−1} f_θ(x_i)| / max_i |f_θ(x_i)|.
    Expected: H^{K−1}, Z = Σ_k H^{K−k} and 0.
    """
    weights = check_weights(weights)
    check_finite(x, "x")
    if not (alpha > 0 and alpha != 1):
        raise ValueError(f"alpha must be > 0 and != 1, got {alpha}")
    f = forward(weights, x, activation)
    if float(f.abs().max()) == 0:
        raise ValueError("the network outputs f = 0 on every input x: no degree to measure")
    big = f.abs() > 1e-2 * f.abs().max()
    log_alpha = torch.tensor(alpha, dtype=f.dtype).log()
    f_in = forward(weights, alpha * x, activation)
    f_par = forward([alpha * w for w in weights], x, activation)
    x_req = x.detach().clone().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(forward(weights, x_req, activation).sum(), x_req)
    degree = activation_degree(activation) ** (len(weights) - 1)
    return {
        "degree_x": (f_in[big] / f[big]).log() / log_alpha,
        "degree_theta": (f_par[big] / f[big]).log() / log_alpha,
        "euler_x": ((x * grad_x).sum(-1) - degree * f).abs().max() / f.abs().max(),
    }


# --- Lemma 1: deep linear nets are rank one ------------------------------------------------


def _lam_column(lam, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """λ as a scalar or an (E, 1) column, to broadcast against per-input rows (..., n)."""
    lam_t = check_lambda_per_member(lam, ensemble_size(weights), weights[0])
    return lam_t.reshape(-1, 1) if lam_t.ndim else lam_t


def lemma1_coefficients(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """r_i(θ) = −y_i ℓ'(y_i f_θ(x_i))/(nλ) of Lemma 1's proof (Appendix B); shape (..., n)."""
    weights = check_weights(weights)
    check_mlp_data(weights, x, y)
    lam_c = _lam_column(lam, weights)
    if bool((lam_c == 0).any()):
        raise ValueError("lam must be > 0: Lemma 1's coefficients divide by nλ")
    margins = y * forward(weights, x, "linear")
    return -y * logistic_prime(margins) / (x.shape[-2] * lam_c)


def lemma1_rebuild(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
) -> list[torch.Tensor]:
    """W_k = w^(k+1) Σ_i r_i (W_{k−1}⋯W_1 x_i)ᵀ and w_K = Σ_i r_i W_{K−1}⋯W_1 x_i (Lemma 1).

    Here w^(k)ᵀ = w_Kᵀ W_{K−1}⋯W_k. Each rebuilt W_k (k < K) is an outer product,
    hence rank one, whatever θ is; it equals W_k exactly when θ is stationary.
    """
    weights = check_weights(weights)
    r = lemma1_coefficients(weights, x, y, lam).unsqueeze(-2)  # (..., 1, n)
    K = len(weights)
    # forward features h_{k-1} = W_{k-1}⋯W_1 x_i as rows, for k = 1..K
    feats = [x]
    for w in weights[:-1]:
        feats.append(torch.matmul(feats[-1], w.transpose(-1, -2)))
    # backward vectors w^(k+1) as rows w_Kᵀ W_{K−1}⋯W_{k+1}, for k = 1..K−1
    back = [weights[-1]]
    for w in reversed(weights[1:-1]):
        back.append(torch.matmul(back[-1], w))
    back.reverse()  # back[k-1] = w^(k+1)ᵀ, shape (..., 1, m_k)
    rebuilt = []
    for k in range(1, K + 1):
        row = torch.matmul(r, feats[k - 1])  # Σ_i r_i h_{k-1,i}ᵀ, shape (..., 1, m_{k-1})
        if k == K:
            rebuilt.append(row)
        else:
            rebuilt.append(back[k - 1].transpose(-1, -2) * row)
    return rebuilt


def rebuild_errors(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """‖W_k − W_k^rebuilt‖_F/‖W_k‖_F for Lemma 1's formulas, per layer: shape (..., K)."""
    rebuilt = lemma1_rebuild(weights, x, y, lam)
    errs = []
    for k, (w, b) in enumerate(zip(weights, rebuilt, strict=True)):
        norm = torch.linalg.matrix_norm(w, ord="fro")
        if bool((norm == 0).any()):
            raise ValueError(f"weights[{k}] is a zero matrix: its relative error is undefined")
        errs.append(torch.linalg.matrix_norm(w - b, ord="fro") / norm)
    return torch.stack(errs, dim=-1)


def sigma_ratio(w: torch.Tensor) -> torch.Tensor:
    """σ₂/σ₁ of a matrix (batched); 0 exactly for a rank-one matrix (Lemma 1)."""
    if w.ndim < 2 or min(w.shape[-2:]) < 2:
        raise ValueError(
            f"w must be a (batch of) matrices with >= 2 rows and columns, "
            f"got shape {tuple(w.shape)}"
        )
    s = torch.linalg.svdvals(w)
    return s[..., 1] / s[..., 0]


def rank_one_ratio_bound(residual: torch.Tensor) -> torch.Tensor:
    """σ₂/σ₁ ≤ ρ/√(1−ρ²) when ‖W − R‖_F ≤ ρ‖W‖_F for a rank-one R (Eckart–Young; Lemma 1)."""
    if bool((residual < 0).any()) or bool((residual >= 1).any()):
        raise ValueError("residual must lie in [0, 1) for the rank-one bound")
    return residual / (1 - residual.square()).sqrt()


# --- Lemma 2: norm preservation --------------------------------------------------------------


def lemma2_sides(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lemma 2's two sides per layer: λ‖W_k‖_F² and −(H^{K−k}/n) Σ_i ℓ'(y_i f_i) y_i f_i.

    Both have shape (..., K); they agree at a stationary point of L_λ.
    """
    weights = check_weights(weights)
    check_mlp_data(weights, x, y)
    lam_c = _lam_column(lam, weights)
    margins = y * forward(weights, x, activation)
    b2 = -(logistic_prime(margins) * margins).mean(dim=-1)  # B² of Lemma 3's proof
    degrees = layer_degrees(len(weights), activation_degree(activation))
    lam_v = lam_c.squeeze(-1) if lam_c.ndim else lam_c
    lhs = torch.stack([lam_v * w.square().sum(dim=(-2, -1)) for w in weights], dim=-1)
    rhs = torch.stack([deg * b2 for deg in degrees], dim=-1)
    return lhs, rhs


def lemma2_gap(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    activation: str,
) -> torch.Tensor:
    """|λ‖W_k‖_F² − RHS_k|/(λ‖W_k‖_F²), Lemma 2's relative gap per layer: shape (..., K)."""
    return lemma2_signed_gap(weights, x, y, lam, activation).abs()


def lemma2_signed_gap(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    activation: str,
) -> torch.Tensor:
    """(λ‖W_k‖_F² − RHS_k)/(λ‖W_k‖_F²) = ⟨λW_k + ∇_{W_k}L, W_k⟩/(λ‖W_k‖_F²) (Lemma 2)."""
    lhs, rhs = lemma2_sides(weights, x, y, lam, activation)
    if bool((lhs == 0).any()):
        raise ValueError("lam must be > 0 and no layer zero: the gap divides by λ‖W_k‖_F²")
    return (lhs - rhs) / lhs


def lemma2_gap_from_gd_step(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    eta: float,
    activation: str,
) -> torch.Tensor:
    """(‖W_k‖² − ‖W_k'‖²)/(2ηλ‖W_k‖²) + (ηλ/2)ρ_k² after one GD step W' = W − η(λW + ∇L).

    Equals Lemma 2's signed gap exactly (expand ‖W'‖²); shape (..., K).
    """
    weights = check_weights(weights)
    check_positive(eta, "eta")
    check_positive(lam, "lam")
    _, grads = loss_and_gradient(weights, x, y, activation)
    rho = alignment_residual(weights, grads, lam, per_layer=True)
    before = torch.stack([w.square().sum(dim=(-2, -1)) for w in weights], dim=-1)
    after = torch.stack(
        [
            (w - eta * (lam * w + g)).square().sum(dim=(-2, -1))
            for w, g in zip(weights, grads, strict=True)
        ],
        dim=-1,
    )
    return (before - after) / (2 * eta * lam * before) + 0.5 * eta * lam * rho.square()


def lemma2_residual(
    weights: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    H: int,
    activation: str | None = None,
) -> torch.Tensor:
    """max_k |λ‖W_k‖_F² / (H^{K−k} B²) − 1| with B² = −(1/n) Σ ℓ'(y f) y f (Lemma 2), per member."""
    activation = activation or ACTIVATION_OF_DEGREE[H]
    if activation_degree(activation) != H:
        raise ValueError(
            f"H must be the degree of {activation!r} ({activation_degree(activation)}), got {H}"
        )
    with torch.no_grad():
        lhs, rhs = lemma2_sides(weights, x, y, lam, activation)
    return (lhs / rhs - 1).abs().amax(-1)
