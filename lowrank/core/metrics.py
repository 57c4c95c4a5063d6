"""Stable ranks and norms, error rates, Lemma 3's weighted mean and Eq. (2)'s residual."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lowrank.core.checks import (
    check_lambda_per_member,
    check_matrix,
    check_positive,
    check_same_shapes,
    check_weights,
    ensemble_size,
)
from lowrank.core.losses import empirical_loss
from lowrank.core.models import forward, layer_degrees


def _norms(w: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_matrix(w, name)
    # scale by the largest entry first, so 1e200·I does not overflow when squared
    peak = w.abs().amax(dim=(-2, -1), keepdim=True)
    if bool((peak == 0).any()):
        raise ValueError(f"{name} is a zero matrix: its stable rank is undefined")
    w = w / peak
    fro = torch.linalg.matrix_norm(w, ord="fro")
    return fro, spectral_norm(w)


#: the largest side for which PyTorch hands a batch to cuSOLVER's batched Jacobi SVD; larger
#: matrices are factored one after another (PyTorch's ``svd_cusolver``), so a record's stable
#: ranks of 200 nets 1000×1568 would take longer on a GPU than the training between records
CUDA_BATCHED_SVD_MAX = 32
#: Lanczos steps for a record's spectral norms: exact to rounding up to this shorter side, and
#: within 2e-13 of svdvals for a Gaussian 1000×1568 matrix (the smallest top gap a run meets)
LANCZOS_STEPS = 64


def spectral_norm(w: torch.Tensor) -> torch.Tensor:
    """‖W‖_2 of a matrix or a batch: LAPACK's SVD on the CPU; batched Lanczos on a GPU."""
    if w.device.type == "cpu" or max(w.shape[-2:]) <= CUDA_BATCHED_SVD_MAX:
        return torch.linalg.matrix_norm(w, ord=2)
    return spectral_norm_lanczos(w)


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
    check_same_shapes(weights, grads, "weights", "grads")
    members = ensemble_size(weights)
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
    check_same_shapes(weights, grads, "weights", "grads")
    pairs = zip(weights, grads, strict=True)
    dots = torch.stack([-(w * g).sum(dim=(-2, -1)) for w, g in pairs], -1)
    wn, gn = _member_sq(weights), _member_sq(grads)
    for name, sq in (("weights", wn), ("grads", gn)):
        if bool(((sq if per_layer else sq.sum(-1)) == 0).any()):
            raise ValueError(f"{name} hold a zero layer (or are all zero): the cosine is undefined")
    if per_layer:
        return dots / (wn * gn).sqrt()
    return dots.sum(-1) / (wn.sum(-1) * gn.sum(-1)).sqrt()


def error_rate(margins: torch.Tensor) -> torch.Tensor:
    """The misclassification rate: the share of margins y_i f(x_i) ≤ 0, per member."""
    return (margins <= 0).to(margins.dtype).mean(-1)


# --- spectral norms of large matrices (chapter 6, benchmarks) ------------------------------

SPECTRAL_METHODS = ("exact", "power", "lanczos")


def spectral_norm_power(
    w: torch.Tensor, iters: int = 200, block: int = 4, tol: float = 1e-7, seed: int = 0
) -> torch.Tensor:
    """‖W‖_2 by block power (subspace) iteration on WᵀW with a Rayleigh-Ritz step; batched.

    Returns a lower bound on ‖W‖_2 that converges like (σ_{block+1}/σ_1)^{2t}; stops once
    the largest relative change over the batch falls below ``tol``.
    """
    check_matrix(w, "w")
    if iters < 1 or block < 1:
        raise ValueError(f"iters and block must be >= 1, got iters={iters}, block={block}")
    check_positive(tol, "tol")
    a = w if w.shape[-2] >= w.shape[-1] else w.mT
    n = a.shape[-1]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(*a.shape[:-2], n, min(block, n), generator=gen, dtype=a.dtype)
    v = torch.linalg.qr(v.to(a.device)).Q
    sigma = torch.linalg.svdvals(a @ v)[..., 0]
    for _ in range(iters):
        v = torch.linalg.qr(a.mT @ (a @ v)).Q
        new = torch.linalg.svdvals(a @ v)[..., 0]
        done = bool(((new - sigma).abs() <= tol * new).all())
        sigma = new
        if done:
            break
    return sigma


def spectral_norm_lanczos(
    w: torch.Tensor, steps: int = LANCZOS_STEPS, seed: int = 0
) -> torch.Tensor:
    """‖W‖_2 by Lanczos on the Gram matrix of W's shorter side, fully reorthogonalised; batched.

    Every member of a batch advances together (two batched matrix-vector products per step,
    no host sync until the end). With ``steps`` ≥ min(m, n) the Krylov space is the whole
    space and the result is exact to rounding; with fewer it is the largest Ritz value, a
    lower bound whose error shrinks like a Chebyshev polynomial in the top spectral gap.
    """
    check_matrix(w, "w")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    a = w if w.shape[-2] >= w.shape[-1] else w.mT  # (…, m, n) with n ≤ m: aᵀa is n × n
    lead, (m, n) = a.shape[:-2], a.shape[-2:]
    a = a.reshape(-1, m, n)
    k = min(steps, n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(a.shape[0], n, 1, generator=gen, dtype=a.dtype).to(a.device)
    v = v / v.norm(dim=1, keepdim=True)
    basis = a.new_zeros(a.shape[0], n, k)
    alpha, beta = a.new_zeros(a.shape[0], k), a.new_zeros(a.shape[0], k - 1)
    scale = a.new_zeros(a.shape[0], 1, 1)  # the largest |α| so far: a lower bound on ‖aᵀa‖
    for j in range(k):
        basis[:, :, j : j + 1] = v
        u = a.mT @ (a @ v)
        alpha[:, j] = (v * u).sum(dim=(1, 2))
        if j + 1 == k:
            break
        q = basis[:, :, : j + 1]
        for _ in range(2):  # Gram-Schmidt twice keeps the basis orthonormal to rounding
            u = u - q @ (q.mT @ u)
        scale = torch.maximum(scale, alpha[:, j].abs().reshape(-1, 1, 1))
        b = u.norm(dim=1, keepdim=True)
        # b at rounding level: the Krylov space is invariant and holds every eigenvalue it
        # can reach; normalising the rounding noise would break the basis' orthogonality
        live = b > 64 * torch.finfo(a.dtype).eps * scale
        beta[:, j] = torch.where(live, b, 0.0).reshape(-1)
        v = torch.where(live, u / torch.where(live, b, 1.0), 0.0)
    t = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    top = torch.linalg.eigvalsh(t.cpu())[:, -1].clamp_min(0)  # k × k: cheap on the host
    return top.sqrt().to(a.device).reshape(lead)


def matrix_norms(w: torch.Tensor, method: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """(‖W‖_F, ‖W‖_2) of a matrix or a batch; ‖W‖_2 from svdvals, power iteration or Lanczos."""
    check_matrix(w, "w")
    if method not in SPECTRAL_METHODS:
        raise ValueError(f"method must be one of {SPECTRAL_METHODS}, got {method!r}")
    fro = torch.linalg.matrix_norm(w, ord="fro")
    if method == "exact":
        spec = torch.linalg.svdvals(w)[..., 0]
    elif method == "power":
        spec = spectral_norm_power(w)
    else:
        spec = spectral_norm_lanczos(w)
    return fro, spec


def relative_error(estimate: float, exact: float) -> float:
    """|estimate − exact|/|exact|, the error reported for the power method."""
    if exact == 0 or not math.isfinite(exact):
        raise ValueError(f"exact must be finite and non-zero, got {exact}")
    return abs(estimate - exact) / abs(exact)
