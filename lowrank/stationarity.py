"""How stationary is a GD iterate? Eq. (2) pointwise, and Goldstein's window version.

At a stationary point of L_λ = L + (λ/2)‖θ‖², λθ = −∇L(θ) (Eq. 2). For a smooth loss
(linear or squared-ReLU nets) GD drives ‖λθ + ∇L(θ)‖ to zero. For ReLU nets ∇ is a
Clarke subgradient (footnote 3), and GD iterates that hover over a kink never make
the pointwise residual small; what they do certify is Goldstein (δ, ε)-stationarity:
a convex combination of gradients of L_λ at points within δ of θ̄ has norm ≤ ε
(Goldstein 1977; Kornowski and Shamir 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lowrank.checks import check_finite, check_positive, check_weights
from lowrank.metrics import alignment_cosine, alignment_residual, loss_and_gradient
from lowrank.nets import hidden_preactivations


def _single_net(weights: Sequence[torch.Tensor], name: str) -> list[torch.Tensor]:
    weights = check_weights(weights, name)
    if weights[0].ndim != 2:
        raise ValueError(f"{name} must be one network (2-D weight matrices), not an ensemble")
    return weights


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def alignment_rows(
    step: int,
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    activation: str,
) -> list[dict[str, Any]]:
    """Eq. (2)'s residual ‖λW_k + ∇_{W_k}L‖/‖λW_k‖ and cos(W_k, −∇_{W_k}L) per layer, tidy rows.

    One row per layer (``layer`` = 1..K) and one for the whole θ (``layer`` = "all").
    """
    weights = _single_net(weights, "weights")
    loss, grads = loss_and_gradient(weights, x, y, activation)
    res = alignment_residual(weights, grads, lam, per_layer=True).tolist()
    cos = alignment_cosine(weights, grads, per_layer=True).tolist()
    rows: list[dict[str, Any]] = [
        {"step": step, "layer": str(k + 1), "loss": loss.item(), "residual": r, "cosine": c}
        for k, (r, c) in enumerate(zip(res, cos, strict=True))
    ]
    rows.append(
        {
            "step": step,
            "layer": "all",
            "loss": loss.item(),
            "residual": alignment_residual(weights, grads, lam).item(),
            "cosine": alignment_cosine(weights, grads).item(),
        }
    )
    return rows


@dataclass
class StationarityRecorder:
    """A ``train.gd`` recorder (use ``record_every=1``): Eq. (2) rows every ``every`` steps,
    and copies of the distinct consecutive iterates of the last ``window`` steps."""

    x: torch.Tensor
    y: torch.Tensor
    lam: float
    activation: str
    steps: int
    every: int = 100
    window: int = 200
    iterates: list[list[torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_positive(self.lam, "lam")
        check_positive(self.every, "every")
        check_positive(self.window, "window")
        if self.window > self.steps + 1:
            raise ValueError(f"window must be <= steps + 1 = {self.steps + 1}, got {self.window}")

    def __call__(
        self, step: int, weights: list[torch.Tensor], loss: torch.Tensor
    ) -> list[dict[str, Any]]:
        last = self.iterates[-1] if self.iterates else None
        fresh = last is None or any(
            not torch.equal(a, b) for a, b in zip(last, weights, strict=True)
        )
        if step > self.steps - self.window and fresh:
            # gd hands over its live parameters, updated in place: keep copies. It may hand
            # the same iterate twice (after the last step and at the end), kept once.
            self.iterates.append([w.clone() for w in weights])
        if step % self.every == 0 or step == self.steps:
            return alignment_rows(step, weights, self.x, self.y, self.lam, self.activation)
        return []


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
    thetas = torch.stack([_flat(_single_net(t, "iterates[s]")) for t in iterates])
    gs = torch.stack([_flat(_single_net(g, "grads[s]")) for g in grads])
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


def pattern_flips(
    iterates: Sequence[Sequence[torch.Tensor]], x: torch.Tensor, activation: str = "relu"
) -> list[int]:
    """Per hidden layer, how many (input, unit) pairs change the sign of W_k h_{k−1} in the window.

    A flip means the iterates cross a ReLU kink, where the gradient jumps.
    """
    if len(iterates) < 2:
        raise ValueError(f"iterates must hold at least two networks, got {len(iterates)}")
    signs = []
    for w in iterates:
        pre, _ = hidden_preactivations(_single_net(w, "iterates[s]"), x, activation)
        signs.append([p > 0 for p in pre])
    flips = []
    for k in range(len(signs[0])):
        stacked = torch.stack([s[k] for s in signs])
        flips.append(int((stacked.any(0) & ~stacked.all(0)).sum()))
    return flips
