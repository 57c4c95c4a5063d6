"""Section 3's Lemma 3, Corollary 1 and Remark 1 (chapter 5): right-hand sides and thresholds."""

from __future__ import annotations

import math

import torch

from lowrank.core.metrics import weighted_inverse_stable_rank


def _check_depth(K: int, H: int) -> None:
    if int(K) != K or int(H) != H or K < 2 or H < 1:
        raise ValueError(f"K must be an integer >= 2 and H an integer >= 1, got K={K}, H={H}")


def lemma3_z(K: int, H: int) -> int:
    """Lemma 3's Z = Σ_k H^{K−k}: K for H = 1, (H^K − 1)/(H − 1) otherwise."""
    _check_depth(K, H)
    return sum(H ** (K - k) for k in range(1, K + 1))


def lemma3_exponent(K: int, H: int) -> float:
    """Lemma 3's loss exponent 1/4 + 1/(2Z), in (1/4, 1/2]."""
    return 0.25 + 0.5 / lemma3_z(K, H)


def _positive(value: float | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(f"{name} must be finite and > 0, got {t.tolist()}")
    return t


def lemma3_rhs(
    lam: float | torch.Tensor, loss: float | torch.Tensor, K: int, H: int
) -> torch.Tensor:
    """Lemma 3's RHS √λ · L(θ)^{−(1/4 + 1/(2Z))}, elementwise over λ and L(θ)."""
    lam_t, loss_t = _positive(lam, "lam"), _positive(loss, "loss")
    return lam_t.sqrt() * loss_t.pow(-lemma3_exponent(K, H))


def lemma3_slack(
    weights: list[torch.Tensor], lam: float | torch.Tensor, loss: torch.Tensor, H: int
) -> torch.Tensor:
    """Lemma 3's LHS divided by its RHS, per member: ≥ 1 wherever the lemma holds."""
    lhs = weighted_inverse_stable_rank(weights, H).to(torch.float64)
    return lhs / lemma3_rhs(lam, loss.to(torch.float64), len(weights), H)


def corollary1_rhs(
    lam: float | torch.Tensor, loss0: float | torch.Tensor, sq_norm0: float | torch.Tensor
) -> torch.Tensor:
    """Corollary 1's bound √(λ/(L(θ₀) + λ‖θ₀‖²)), for a reference θ₀ with L(θ₀) ≥ 1."""
    lam_t, loss0_t = _positive(lam, "lam"), _positive(loss0, "loss0")
    sq = torch.as_tensor(sq_norm0, dtype=torch.float64)
    if bool((sq < 0).any()):
        raise ValueError(f"sq_norm0 must be ‖θ₀‖² >= 0, got {sq.tolist()}")
    if bool((loss0_t < 1).any()):
        raise ValueError(f"loss0 must be L(θ₀) >= 1 (Corollary 1's assumption), got {loss0}")
    return (lam_t / (loss0_t + lam_t * sq)).sqrt()


def c_hk(K: int, H: int) -> float:
    """Footnote 5's C_{H,K} = (Σ_k (H^{K−k})^{3/2}/Z)², the square of Lemma 3's largest LHS."""
    z = lemma3_z(K, H)
    return (sum((H ** (K - k)) ** 1.5 for k in range(1, K + 1)) / z) ** 2


def remark1_proxy(
    r: float | torch.Tensor, lam: float, K: int, sign: int = -1
) -> torch.Tensor:
    """Remark 1's proxy g_±(r) = λr²/2 + ln(1 + exp(±r^K K^{−K/2})), r = ‖θ‖ ≥ 0."""
    _check_depth(K, 1)
    if sign not in (-1, 1):
        raise ValueError(f"sign must be +1 (g_+) or -1 (g_-), got {sign}")
    r_t = torch.as_tensor(r, dtype=torch.float64)
    if bool((r_t < 0).any()):
        raise ValueError("r must be a norm, >= 0")
    s = r_t.pow(K) * K ** (-K / 2)
    return 0.5 * lam * r_t.square() + torch.nn.functional.softplus(sign * s)


def _sup_over_radius(fn, K: int) -> float:
    from scipy.optimize import minimize_scalar

    grid = torch.logspace(-3, 2, 4001, dtype=torch.float64)
    vals = fn(grid)
    i = int(torch.argmax(vals))
    lo, hi = math.log(float(grid[max(i - 1, 0)])), math.log(float(grid[min(i + 1, 4000)]))
    res = minimize_scalar(
        lambda t: -float(fn(torch.tensor(math.exp(t), dtype=torch.float64))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-12},
    )
    return max(-float(res.fun), float(vals[i]))


def remark1_global_threshold(K: int) -> float:
    """Remark 1 (H = 1): λ above which r = 0 is g_-'s unique global minimiser, so θ = 0 is L_λ's.

    g_-(r) > g_-(0) = ln 2 for every r > 0 iff λ > sup_r 2(ln 2 − ln(1 + e^{−s}))/r²,
    with s = r^K K^{−K/2}.
    """
    _check_depth(K, 1)
    if K == 2:
        return 0.5  # the supremum is the r → 0 limit: (ln 2 − ln(1 + e^{−u}))/u → 1/2

    def fn(r: torch.Tensor) -> torch.Tensor:
        s = r.pow(K) * K ** (-K / 2)
        return 2 * (math.log(2) - torch.nn.functional.softplus(-s)) / r.square()

    return _sup_over_radius(fn, K)


def remark1_critical_threshold(K: int) -> float:
    """Remark 1 (H = 1): λ above which g_-'(r) = 0 has the single solution r = 0.

    g_-'(r) = 0 with r > 0 iff λ = K s σ(−s)/r², s = r^K K^{−K/2}; the threshold is its supremum.
    """
    _check_depth(K, 1)
    if K == 2:
        return 0.5  # K s σ(−s)/r² = σ(−r²/2), largest as r → 0

    def fn(r: torch.Tensor) -> torch.Tensor:
        s = r.pow(K) * K ** (-K / 2)
        return K * s * torch.sigmoid(-s) / r.square()

    return _sup_over_radius(fn, K)


def lemma3_two_point_example(lam: float, c: float) -> dict[str, float]:
    """Lemma 3 on f = w₂w₁x, x = ±c, y = sign(x): the exact stationary point and both sides.

    Stationarity gives w₁ = w₂, λ = c σ(−w₁²c), so L(θ) = −ln(1 − λ/c); both layers are
    vectors, so the LHS is 1, and the RHS is √(λ/L(θ)) (K = 2, H = 1, Z = 2).
    """
    lam_f, c_f = float(_positive(lam, "lam")), float(_positive(c, "c"))
    if not lam_f < c_f / 2:
        raise ValueError(f"lam must be < c/2 for a non-zero stationary point, got {lam} (c={c})")
    beta = math.log(c_f / lam_f - 1) / c_f
    loss = -math.log1p(-lam_f / c_f)
    rhs = float(lemma3_rhs(lam_f, loss, 2, 1))
    return {"w": math.sqrt(beta), "loss": loss, "lhs": 1.0, "rhs": rhs, "slack": 1.0 / rhs}
