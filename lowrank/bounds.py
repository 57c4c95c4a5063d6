"""Right-hand sides of the paper's bounds, each function citing its statement.

Sections: Lemma 3 / Corollary 1 / Remark 1 (chapter 5); the linear warm-up and
Lemma 4 (chapters 7-8); Theorem 2 and Lemma 5 (chapter 9).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# --- Section 3: Lemma 3, Corollary 1, Remark 1 (chapter 5) -------------------------


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
    from lowrank.metrics import weighted_inverse_stable_rank

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

# --- Section 4: the linear warm-up and Lemma 4 (chapters 7-8) ----------------------


def _check_decay_args(eps, lam: float, eta: float) -> None:
    from lowrank.checks import check_positive

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
    import torch

    return torch.as_tensor(value, dtype=torch.float64)


def _steps(t):
    import torch

    steps = torch.as_tensor(t)
    if steps.is_floating_point() or bool((steps < 0).any()):
        raise ValueError(f"t must be a non-negative integer step count (or tensor), got {t}")
    return steps.to(torch.float64)


def printed_decay_terms(lam: float, eta: float, t):
    """The factors (1−ηλ)^t and (1−(1−ηλ)^t)/λ of the warm-up bound and Lemma 4 (λ=0: ηt)."""
    import torch

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
    import torch

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


# --- Appendix C.3: Theorem 2 and Lemma 5 (chapter 9) -------------------------------


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
