"""Stable ranks, norms, Lemma 3's weighted mean and the alignment residual of Eq. (2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowrank.checks import check_lambda_per_member, check_matrix, check_weights
from lowrank.losses import empirical_loss
from lowrank.nets import forward, layer_degrees


def _norms(w: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_matrix(w, name)
    fro = torch.linalg.matrix_norm(w, ord="fro")
    if bool((fro == 0).any()):
        raise ValueError(f"{name} is a zero matrix: its stable rank is undefined")
    spec = torch.linalg.matrix_norm(w, ord=2)
    return fro, spec


def stable_rank(w: torch.Tensor) -> torch.Tensor:
    """The paper's stable rank ‖W‖_F/‖W‖_2 (Section 2), in [1, √rank]; batched."""
    fro, spec = _norms(w, "w")
    return fro / spec


def stable_rank_squared(w: torch.Tensor) -> torch.Tensor:
    """The usual squared stable rank ‖W‖_F²/‖W‖_2², in [1, rank]; batched."""
    return stable_rank(w).square()


def inverse_stable_rank(w: torch.Tensor) -> torch.Tensor:
    """‖W‖_2/‖W‖_F, the quantity Lemma 3 averages (and Figure 2 plots); batched."""
    fro, spec = _norms(w, "w")
    return spec / fro


def lemma3_weights(K: int, H: int) -> torch.Tensor:
    """Lemma 3's layer weights (H^{K-k})^{3/2}/Z with Z = Σ_k H^{K-k}."""
    deg = torch.tensor(layer_degrees(K, H), dtype=torch.float64)
    return deg.pow(1.5) / deg.sum()


def weighted_inverse_stable_rank(weights: Sequence[torch.Tensor], H: int) -> torch.Tensor:
    """Lemma 3's LHS Σ_k (H^{K-k})^{3/2}/Z · ‖W_k‖_2/‖W_k‖_F, per member."""
    check_weights(weights)
    coef = lemma3_weights(len(weights), H)
    terms = [c.item() * inverse_stable_rank(w) for c, w in zip(coef, weights, strict=True)]
    return torch.stack(terms, dim=-1).sum(dim=-1)


def pseudo_rank(weights: Sequence[torch.Tensor], H: int) -> torch.Tensor:
    """The pseudo-rank: the weighted harmonic mean of stable ranks, 1/(Lemma 3's LHS)."""
    return 1.0 / weighted_inverse_stable_rank(weights, H)


def frobenius_norms(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """‖W_k‖_F for every layer, stacked last: shape (K,) or (E, K)."""
    check_weights(weights)
    return torch.stack([torch.linalg.matrix_norm(w, ord="fro") for w in weights], dim=-1)


def loss_and_gradient(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str = "relu"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """L(θ) per member and ∇_{W_k} L(θ) for every layer (autograd; members independent)."""
    params = [w.detach().requires_grad_(True) for w in check_weights(weights)]
    loss = empirical_loss(y * forward(params, x, activation))
    grads = torch.autograd.grad(loss.sum(), params)
    return loss.detach(), [g.detach() for g in grads]


def _member_sq(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.square().sum(dim=(-2, -1)) for t in tensors], dim=-1)


def alignment_residual(
    weights: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    lam: float | Sequence[float] | torch.Tensor,
    per_layer: bool = False,
) -> torch.Tensor:
    """‖λθ + ∇L(θ)‖/‖λθ‖, zero exactly at a stationary point of L_λ (Eq. 2).

    Per member; with ``per_layer`` the ratio is taken layer by layer, shape (..., K).
    """
    check_weights(weights)
    check_weights(grads, "grads")
    members = weights[0].shape[0] if weights[0].ndim == 3 else None
    lam_t = check_lambda_per_member(lam, members, weights[0])
    if bool((lam_t == 0).any()):
        raise ValueError("lam must be > 0 for the alignment residual (λθ vanishes at λ = 0)")
    scaled = [lam_t * w for w in weights]
    num = _member_sq([s + g for s, g in zip(scaled, grads, strict=True)])
    den = _member_sq(scaled)
    if bool(((den if per_layer else den.sum(-1)) == 0).any()):
        raise ValueError("weights hold a zero layer (or θ = 0): λθ vanishes, ratio undefined")
    if per_layer:
        return (num / den).sqrt()
    return (num.sum(-1) / den.sum(-1)).sqrt()


def alignment_cosine(
    weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], per_layer: bool = False
) -> torch.Tensor:
    """cos(θ, −∇L(θ)); 1 at a stationary point of L_λ with λ > 0 (Eq. 2)."""
    check_weights(weights)
    check_weights(grads, "grads")
    pairs = zip(weights, grads, strict=True)
    dots = torch.stack([-(w * g).sum(dim=(-2, -1)) for w, g in pairs], -1)
    wn, gn = _member_sq(weights), _member_sq(grads)
    for name, sq in (("weights", wn), ("grads", gn)):
        if bool(((sq if per_layer else sq.sum(-1)) == 0).any()):
            raise ValueError(f"{name} hold a zero layer (or are all zero): the cosine is undefined")
    if per_layer:
        return dots / (wn * gn).sqrt()
    return dots.sum(-1) / (wn.sum(-1) * gn.sum(-1)).sqrt()
