"""How stationary is a GD iterate? Goldstein's window version of Eq. (2) (footnote 3).

At a stationary point of L_λ = L + (λ/2)‖θ‖², λθ = −∇L(θ) (Eq. 2). For ReLU nets ∇ is a
Clarke subgradient (footnote 3), and GD iterates that hover over a kink never make the
pointwise residual small; what they do certify is Goldstein (δ, ε)-stationarity: a convex
combination of gradients of L_λ at points within δ of θ̄ has norm ≤ ε (Goldstein 1977;
Kornowski and Shamir 2021). The Clarke reading itself is :mod:`lowrank.theory.subgradient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lowrank.core.checks import check_finite, check_positive, check_single_net
from lowrank.core.metrics import loss_and_gradient
from lowrank.core.models import hidden_preactivations


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Every entry of a list of tensors as one vector (θ as a point of R^P)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def min_norm_convex_combination(vectors: torch.Tensor, iters: int = 2000) -> torch.Tensor:
    """Weights α in the simplex making ‖Σ_s α_s g_s‖ small (Frank-Wolfe, exact line search).

    Goldstein's ε is the least norm in conv{g_s}; any α gives an upper bound on it,
    so stopping Frank-Wolfe early only makes the certificate conservative.
    """
    check_finite(vectors, "vectors")
    if vectors.ndim != 2 or vectors.shape[0] < 1:
        raise ValueError(f"vectors must have shape (T, P) with T >= 1, got {tuple(vectors.shape)}")
    gram = vectors @ vectors.T
    alpha = torch.full((gram.shape[0],), 1.0 / gram.shape[0], dtype=gram.dtype)
    for _ in range(iters):
        slope = gram @ alpha
        vertex = int(torch.argmin(slope))
        direction = -alpha.clone()
        direction[vertex] += 1.0
        curvature = direction @ gram @ direction
        gap = -(direction @ slope)  # the Frank-Wolfe duality gap, >= 0
        if curvature <= 0 or gap <= 1e-15 * float(alpha @ slope):
            break
        alpha = alpha + torch.clamp(gap / curvature, 0.0, 1.0) * direction
    return alpha


@dataclass
class GoldsteinCertificate:
    """θ̄ is (δ, ε)-Goldstein stationary for L_λ, both relative: δ to ‖θ̄‖, ε to ‖λθ̄‖."""

    eps_mean: float  # ‖mean_s ∇L_λ(θ_s)‖ / ‖λθ̄‖: the window-averaged residual
    eps_min: float  # the same for the Frank-Wolfe convex combination (≤ eps_mean)
    delta: float  # max_s ‖θ_s − θ̄‖ / ‖θ̄‖: the radius of the window


def goldstein_certificate(
    iterates: Sequence[Sequence[torch.Tensor]],
    grads: Sequence[Sequence[torch.Tensor]],
    lam: float,
) -> GoldsteinCertificate:
    """Goldstein (δ, ε)-stationarity of θ̄ = mean_s θ_s from gradients ∇L(θ_s) (footnote 3).

    With one iterate it is Eq. (2)'s residual ‖λθ + ∇L(θ)‖/‖λθ‖ and δ = 0.
    """
    check_positive(lam, "lam")
    if len(iterates) == 0 or len(iterates) != len(grads):
        raise ValueError(
            f"iterates and grads must be non-empty and equally long, got {len(iterates)} "
            f"and {len(grads)}"
        )
    thetas = torch.stack([flatten(check_single_net(t, "iterates[s]")) for t in iterates])
    gs = torch.stack([flatten(check_single_net(g, "grads[s]")) for g in grads])
    if thetas.shape != gs.shape:
        raise ValueError(f"grads must match iterates in shape, got {gs.shape} vs {thetas.shape}")
    theta_bar = thetas.mean(0)
    scale = lam * theta_bar.norm()
    if scale == 0:
        raise ValueError("iterates average to θ̄ = 0: the relative residual is undefined")
    full = lam * thetas + gs  # ∇L_λ(θ_s)
    alpha = min_norm_convex_combination(full)
    return GoldsteinCertificate(
        eps_mean=(full.mean(0).norm() / scale).item(),
        eps_min=min((alpha @ full).norm() / scale, full.mean(0).norm() / scale).item(),
        delta=((thetas - theta_bar).norm(dim=1).max() / theta_bar.norm()).item(),
    )


def window_certificate(
    iterates: Sequence[Sequence[torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    activation: str,
) -> GoldsteinCertificate:
    """Goldstein certificate of a window of iterates, gradients taken by autograd."""
    grads = [loss_and_gradient(list(w), x, y, activation)[1] for w in iterates]
    return goldstein_certificate(iterates, grads, lam)


def straddled_kinks(
    iterates: Sequence[Sequence[torch.Tensor]], x: torch.Tensor, activation: str = "relu"
) -> list[torch.Tensor]:
    """Per hidden layer, the (n, m_k) mask of (input, unit) pairs whose pre-activation
    W_k h_{k−1} changes sign within the window: the ReLU kinks the iterates straddle."""
    if len(iterates) < 2:
        raise ValueError(f"iterates must hold at least two networks, got {len(iterates)}")
    signs = []
    for w in iterates:
        pre, _ = hidden_preactivations(check_single_net(w, "iterates[s]"), x, activation)
        signs.append([p > 0 for p in pre])
    masks = []
    for k in range(len(signs[0])):
        stacked = torch.stack([s[k] for s in signs])
        masks.append(stacked.any(0) & ~stacked.all(0))
    return masks


def pattern_flips(
    iterates: Sequence[Sequence[torch.Tensor]], x: torch.Tensor, activation: str = "relu"
) -> list[int]:
    """Per hidden layer, how many (input, unit) pairs change the sign of W_k h_{k−1} in the window.

    A flip means the iterates cross a ReLU kink, where the gradient jumps.
    """
    return [int(m.sum()) for m in straddled_kinks(iterates, x, activation)]
