"""Section 4's linear warm-up and Lemma 4 (chapters 7-8): the bounds and the unrolled GD.

The bounds ``|⟨θ_0,x'⟩|(1−ηλ)^t + ε(1−(1−ηλ)^t)/λ`` as printed (they need ηλ ≤ 1) and
corrected for every ηλ; Appendix C.2's merged-loss bound; and the identity
θ_t = θ_0(1−ηλ)^t + Σ_i α_i(t) x_i of Section 4 with its coefficients α_i(t).
"""

from __future__ import annotations

import torch

from lowrank.core.checks import check_finite, check_positive, check_task
from lowrank.core.losses import logistic_prime


def _check_decay_args(eps, lam: float, eta: float) -> None:
    check_positive(eta, "eta")
    if not float(lam) >= 0:
        raise ValueError(f"lam must be >= 0 (weight decay), got {lam}")
    eps_t = _as_f64(eps)
    if not bool((eps_t >= 0).all()) or not bool(torch.isfinite(eps_t).all()):
        raise ValueError(f"eps must be >= 0 and finite (a bound on |<x_i, x'>|), got {eps}")


def _check_init(init, name: str) -> torch.Tensor:
    init_t = _as_f64(init)
    if not bool(torch.isfinite(init_t).all()) or bool((init_t < 0).any()):
        raise ValueError(f"{name} must be >= 0 and finite (a norm or |inner product|), got {init}")
    return init_t


def _as_f64(value):
    return torch.as_tensor(value, dtype=torch.float64)


def _steps(t):
    steps = torch.as_tensor(t)
    if steps.is_floating_point() or bool((steps < 0).any()):
        raise ValueError(f"t must be a non-negative integer step count (or tensor), got {t}")
    return steps.to(torch.float64)


def printed_decay_terms(lam: float, eta: float, t):
    """The factors (1−ηλ)^t and (1−(1−ηλ)^t)/λ of the warm-up bound and Lemma 4 (λ=0: ηt)."""
    _check_decay_args(0.0, lam, eta)
    steps = _steps(t)
    if lam == 0:
        return torch.ones_like(steps), eta * steps
    if eta * lam < 1:
        # log1p/expm1 keep 1 − (1−ηλ)^t accurate when ηλ is tiny (the paper's 1e-4)
        log_q = torch.log1p(torch.tensor(-eta * lam, dtype=torch.float64))
        return torch.exp(steps * log_q), -torch.expm1(steps * log_q) / lam
    decay = torch.tensor(1 - eta * lam, dtype=torch.float64) ** steps
    return decay, (1 - decay) / lam


def _printed_bound(init, eps, lam: float, eta: float, t, allow_large_step: bool, what: str):
    _check_decay_args(eps, lam, eta)
    if eta * lam > 1 and not allow_large_step:
        raise ValueError(
            f"eta*lam must be <= 1 for {what} as printed (its proof needs 1 - eta*lam >= 0), "
            f"got eta*lam = {eta * lam}; use decay_bound_any_step for larger steps"
        )
    init_t = _check_init(init, "the initial term")
    decay, accumulated = printed_decay_terms(lam, eta, t)
    return init_t * decay + _as_f64(eps) * accumulated


def warmup_bound(
    init_overlap, eps, lam: float, eta: float, t, allow_large_step: bool = False
):
    """Section 4's warm-up: |⟨θ_0,x'⟩|(1−ηλ)^t + ε(1−(1−ηλ)^t)/λ (needs ηλ ≤ 1; see ch. 7)."""
    return _printed_bound(init_overlap, eps, lam, eta, t, allow_large_step, "the warm-up bound")


def lemma4_bound(init_norm, eps, lam: float, eta: float, t, allow_large_step: bool = False):
    """Lemma 4: ‖W_0x'‖(1−ηλ)^t + ε(1−(1−ηλ)^t)/λ bounds ‖W_tx'‖ (needs ηλ ≤ 1; see ch. 8)."""
    return _printed_bound(init_norm, eps, lam, eta, t, allow_large_step, "Lemma 4")


def decay_bound_any_step(init, eps, lam: float, eta: float, t):
    """Warm-up / Lemma 4 corrected for every ηλ: init·|1−ηλ|^t + εη Σ_{s<t} |1−ηλ|^s."""
    _check_decay_args(eps, lam, eta)
    init_t = _check_init(init, "init")
    steps = _steps(t)
    q = abs(1 - eta * lam)
    decay = torch.tensor(q, dtype=torch.float64) ** steps
    accumulated = eta * steps if q == 1 else eta * (1 - decay) / (1 - q)
    return init_t * decay + _as_f64(eps) * accumulated


def merged_loss_bound(loss, cross_norms):
    """Appendix C.2: L(θ_t) + (1/n) Σ_i ‖W'_t x_i‖ bounds the merged loss L(θ_t + θ'_t)."""
    cross = _as_f64(cross_norms)
    if cross.ndim < 1 or cross.shape[-1] == 0 or bool((cross < 0).any()):
        raise ValueError(
            f"cross_norms must hold the norms ||W'_t x_i|| >= 0 along its last axis, got {cross}"
        )
    return _as_f64(loss) + cross.mean(dim=-1)


def warmup_alphas(
    thetas: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lam: float, eta: float
) -> torch.Tensor:
    """α_i(t) = −(1/n) Σ_{s<t} η(1−ηλ)^{t−s−1} ℓ'(y_i⟨θ_s, x_i⟩) y_i (Section 4, sign derived).

    Row t holds the coefficients of θ_t = θ_0(1−ηλ)^t + Σ_i α_i x_i; the paper
    prints α_i without the leading minus sign.
    """
    check_finite(thetas, "thetas")
    if thetas.ndim != 2:
        raise ValueError(f"thetas must be a trajectory (T+1, d), got shape {tuple(thetas.shape)}")
    check_task(x, y, thetas.shape[1])
    check_positive(eta, "eta")
    steps, n = thetas.shape[0] - 1, x.shape[0]
    q = 1 - eta * lam
    # the paper's sum as a matrix: weight[t, s] = q^{t-s-1} for s < t, else 0
    t_idx = torch.arange(steps + 1, dtype=torch.float64).unsqueeze(1)
    s_idx = torch.arange(steps, dtype=torch.float64).unsqueeze(0)
    lag = t_idx - s_idx - 1
    weight = torch.where(lag >= 0, torch.tensor(q, dtype=torch.float64) ** lag.clamp(min=0), 0.0)
    grads = logistic_prime(y * (thetas[:-1] @ x.T)) * y  # (T, n): ℓ'(y_i⟨θ_s, x_i⟩) y_i
    return -(eta / n) * (weight.to(thetas.dtype) @ grads)


def unrolled_theta(
    theta0: torch.Tensor, x: torch.Tensor, alphas: torch.Tensor, lam: float, eta: float
) -> torch.Tensor:
    """θ_0(1−ηλ)^t + Σ_i α_i(t) x_i for every t (Section 4's unrolled GD identity)."""
    steps = torch.arange(alphas.shape[0], dtype=torch.float64)
    decay = torch.tensor(1 - eta * lam, dtype=torch.float64) ** steps
    return decay.unsqueeze(1).to(theta0.dtype) * theta0 + alphas @ x
