"""Section 4's two merging models and their GD: the linear predictor and f(x) = ⟨u, (Wx)_+⟩.

The shallow net of Eq. (3) trains only its hidden matrix W (shape ``(m, d)``, or
``(E, m, d)`` for an ensemble with one λ per member); u is fixed with ‖u‖ ≤ 1.
Both GD loops follow the paper's update rule literally,
θ_{s+1} = (1−ηλ)θ_s − η∇L(θ_s), and return the whole trajectory so that bounds
can be checked at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lowrank.bounds import decay_bound_any_step, lemma4_bound, merged_loss_bound, warmup_bound
from lowrank.checks import check_finite, check_lambda_per_member, check_positive
from lowrank.data import TaskPair
from lowrank.losses import empirical_loss, logistic_prime
from lowrank.train import DivergenceError

# --- the linear warm-up f_θ(x) = ⟨θ, x⟩ ------------------------------------------------


def _check_data(x: torch.Tensor, y: torch.Tensor, d: int) -> None:
    check_finite(x, "x")
    check_finite(y, "y")
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"x must have shape (n, {d}), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must have shape ({x.shape[0]},) (one label per input), got {tuple(y.shape)}"
        )


def _check_steps(steps: int, eta: float) -> None:
    check_positive(eta, "eta")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")


def linear_gd(
    theta0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lam: float, eta: float, steps: int
) -> torch.Tensor:
    """Section 4's GD θ_{s+1} = (1−λη)θ_s − (η/n) Σ_i ℓ'(y_i⟨θ_s, x_i⟩) x_i y_i; all θ_0..θ_T."""
    check_finite(theta0, "theta0")
    if theta0.ndim != 1:
        raise ValueError(f"theta0 must be a vector (d,), got shape {tuple(theta0.shape)}")
    _check_data(x, y, theta0.shape[0])
    _check_steps(steps, eta)
    check_lambda_per_member(lam, None, theta0)
    n = x.shape[0]
    thetas = [theta0.clone()]
    for step in range(1, steps + 1):
        theta = thetas[-1]
        coef = logistic_prime(y * (x @ theta)) * y
        thetas.append((1 - lam * eta) * theta - (eta / n) * (coef @ x))
        _raise_if_overflowed(step, thetas[-1], param_dims=1)
    return torch.stack(thetas)


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
    _check_data(x, y, thetas.shape[1])
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


def warmup_check(
    pair: TaskPair,
    theta0: torch.Tensor,
    lam: float,
    eta: float,
    steps: int,
    allow_large_step: bool = False,
) -> dict[str, Any]:
    """Trains on ``pair.first`` and measures |⟨θ_t, x'⟩| on ``pair.second`` against the bound.

    Returns the trajectory, the α identity's relative residual and, per step,
    the largest overlap, the largest bound and the smallest slack over x'.
    """
    x, y = pair.first.x, pair.first.y
    thetas = linear_gd(theta0, x, y, lam, eta, steps)
    alphas = warmup_alphas(thetas, x, y, lam, eta)
    residual = (thetas - unrolled_theta(theta0, x, alphas, lam, eta)).abs().max()
    scale = thetas.abs().max()
    overlap = (thetas @ pair.second.x.T).abs()  # (T+1, n')
    t = torch.arange(steps + 1).unsqueeze(1)
    init = (pair.second.x @ theta0).abs().unsqueeze(0)
    bound = warmup_bound(init, pair.eps, lam, eta, t, allow_large_step=allow_large_step)
    return {
        "thetas": thetas,
        "alphas": alphas,
        "identity_residual": float(residual / scale),
        "overlap": overlap,
        "bound": bound,
        "min_slack": float((bound - overlap).min()),
    }


def warmup_rows(result: dict[str, Any], eps: float, overlap: str) -> list[dict[str, Any]]:
    """Tidy rows of :func:`warmup_check`: per step, max_x' |⟨θ_t, x'⟩| and the largest bound."""
    measured = result["overlap"].max(dim=1).values.tolist()
    bound = result["bound"].max(dim=1).values.tolist()
    rows = []
    for step, (m, b) in enumerate(zip(measured, bound, strict=True)):
        for quantity, value in (("measured", m), ("bound", b)):
            rows.append(
                {"step": step, "eps": eps, "overlap": overlap, "quantity": quantity, "value": value}
            )
    return rows


# --- the shallow ReLU net f(x) = ⟨u, (Wx)_+⟩ of Eq. (3) ---------------------------------


def _check_shallow(w: torch.Tensor, u: torch.Tensor, x: torch.Tensor) -> None:
    check_finite(w, "w")
    check_finite(u, "u")
    check_finite(x, "x")
    if w.ndim not in (2, 3):
        raise ValueError(f"w must have shape (m, d) or (E, m, d), got {tuple(w.shape)}")
    if u.shape != (w.shape[-2],):
        raise ValueError(
            f"u must have shape ({w.shape[-2]},) (one weight per neuron), got {tuple(u.shape)}"
        )
    if x.ndim != 2 or x.shape[1] != w.shape[-1]:
        raise ValueError(f"x must have shape (n, {w.shape[-1]}), got {tuple(x.shape)}")


def unit_output_vector(m: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A fixed u ∈ {±1/√m}^m with seeded signs, so ‖u‖ = 1 as Eq. (3) allows (‖u‖ ≤ 1)."""
    check_positive(m, "m")
    gen = torch.Generator().manual_seed(seed)
    signs = 1.0 - 2.0 * (torch.rand(m, generator=gen, dtype=torch.float64) < 0.5).double()
    u = signs / m**0.5
    # rounding can leave ‖u‖ a hair above 1; Lemma 4 needs ‖u‖ <= 1
    return (u / max(1.0, float(u.norm()) * (1 + 1e-15))).to(dtype)


def shallow_forward(w: torch.Tensor, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f(x) = ⟨u, (Wx)_+⟩ of Eq. (3) for every input: shape (n,) or (E, n)."""
    _check_shallow(w, u, x)
    return torch.relu(torch.matmul(x, w.transpose(-1, -2))) @ u


def shallow_loss(
    w: torch.Tensor, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """L(W) = (1/n) Σ_i ℓ(y_i f(x_i)) for the net of Eq. (3); per member."""
    return empirical_loss(y * shallow_forward(w, u, x))


def shallow_gradient(
    w: torch.Tensor, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """∇_W L = (1/n) Σ_i y_i ℓ'(y_i f(x_i)) D_i u x_iᵀ, D_i = diag(1(Wx_i > 0)) (App. C.1)."""
    _check_shallow(w, u, x)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    pre = torch.matmul(x, w.transpose(-1, -2))  # (..., n, m)
    active = (pre > 0).to(w.dtype)
    coef = y * logistic_prime(y * (torch.relu(pre) @ u))  # (..., n)
    return torch.matmul((coef.unsqueeze(-1) * active * u).transpose(-1, -2), x) / x.shape[0]


def shallow_gd(
    w0: torch.Tensor,
    u: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    eta: float,
    steps: int,
) -> torch.Tensor:
    """W_{s+1} = (1−ηλ)W_s − η∇_W L(W_s) (App. C.1), u fixed; all W_0..W_T, one λ per member."""
    _check_shallow(w0, u, x)
    _check_steps(steps, eta)
    lam_t = check_lambda_per_member(lam, w0.shape[0] if w0.ndim == 3 else None, w0)
    traj = [w0.clone()]
    for step in range(1, steps + 1):
        w = traj[-1]
        traj.append((1 - eta * lam_t) * w - eta * shallow_gradient(w, u, x, y))
        _raise_if_overflowed(step, traj[-1], param_dims=2)
    return torch.stack(traj)


def _raise_if_overflowed(step: int, params: torch.Tensor, param_dims: int) -> None:
    """DivergenceError naming the step (and member) whose weights stopped being finite.

    ``params`` is ([E,] *param) with ``param_dims`` trailing parameter dimensions.
    """
    bad = ~torch.isfinite(params).flatten(start_dim=params.ndim - param_dims).all(dim=-1)
    if bool(bad.any()):
        member = int(bad.reshape(-1).nonzero()[0, 0]) if bad.ndim > 0 else None
        raise DivergenceError(step, member, float("nan"))


def _cross_norms(traj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """‖W_t x‖ for every step, member and input: shape (T+1, ..., n)."""
    return torch.matmul(x, traj.transpose(-1, -2)).norm(dim=-1)


def lemma4_check(
    pair: TaskPair,
    u: torch.Tensor,
    w0_first: torch.Tensor,
    w0_second: torch.Tensor,
    lams: Sequence[float],
    eta: float,
    steps: int,
    every: int = 1,
    allow_large_step: bool = False,
    corrected: bool = False,
) -> list[dict[str, Any]]:
    """Lemma 4 and Appendix C.2 measured against their bounds, per step, λ and side.

    Trains W on ``pair.first`` and W' on ``pair.second`` (one member per λ) and,
    for each side (the net evaluated on the other task's inputs), records the
    smallest slack of: Lemma 4's ‖W_t x'‖ bound; its per-neuron form
    |⟨w_{j,t}, x'⟩| ≤ |⟨w_{j,0}, x'⟩|(1−ηλ)^t + ε|u_j|(1−(1−ηλ)^t)/λ; the function gap
    |f_{W+W'}(x) − f_W(x)| ≤ ‖W'x‖; and the loss bound L(θ+θ') ≤ L(θ) + (1/n)Σ‖W'x_i‖.
    With ``corrected`` the two Lemma 4 bounds use |1−ηλ| (valid for every ηλ).
    """
    lam_list = [float(v) for v in lams]
    if not lam_list:
        raise ValueError("lams must list at least one weight decay strength")
    if w0_first.shape != w0_second.shape or w0_first.ndim != 2:
        raise ValueError(
            f"w0_first and w0_second must both have shape (m, d), got "
            f"{tuple(w0_first.shape)} and {tuple(w0_second.shape)}"
        )
    check_positive(every, "every")
    E = len(lam_list)
    trajs = {}
    for side, task, w0 in (("first", pair.first, w0_first), ("second", pair.second, w0_second)):
        start = w0.expand(E, *w0.shape).clone()
        trajs[side] = shallow_gd(start, u, task.x, task.y, lam_list, eta, steps)
    kept = list(range(0, steps + 1, int(every)))
    if kept[-1] != steps:
        kept.append(steps)
    t = torch.tensor(kept)
    rows: list[dict[str, Any]] = []
    for own, other, own_task in (("first", "second", pair.first), ("second", "first", pair.second)):
        w_own, w_other = trajs[own][t], trajs[other][t]  # (T', E, m, d)
        x_own = own_task.x
        # Lemma 4 for the other net on this task's inputs: ‖W'_t x‖ against its bound
        cross = _cross_norms(w_other, x_own)  # (T', E, n)
        cross0 = _cross_norms(trajs[other][:1], x_own)[0]  # (E, n)
        row_pre = torch.matmul(x_own, w_other.transpose(-1, -2)).abs()  # (T', E, n, m)
        row_pre0 = torch.matmul(x_own, trajs[other][0].transpose(-1, -2)).abs()  # (E, n, m)
        # the merged net on this task, against the net trained on it
        f_own = shallow_forward(w_own.reshape(-1, *w_own.shape[-2:]), u, x_own)
        f_merged = shallow_forward((w_own + w_other).reshape(-1, *w_own.shape[-2:]), u, x_own)
        gap = (f_merged - f_own).abs().reshape(len(kept), E, -1)
        loss_own = empirical_loss(own_task.y * f_own).reshape(len(kept), E)
        loss_merged = empirical_loss(own_task.y * f_merged).reshape(len(kept), E)
        loss_bound = merged_loss_bound(loss_own, cross)
        for e, lam in enumerate(lam_list):
            tt = t.unsqueeze(1)
            if corrected:
                bound = decay_bound_any_step(cross0[e], pair.eps, lam, eta, tt)
                row_bound = decay_bound_any_step(
                    row_pre0[e], pair.eps * u.abs(), lam, eta, t.view(-1, 1, 1)
                )
            else:
                bound = lemma4_bound(cross0[e], pair.eps, lam, eta, tt, allow_large_step)
                row_bound = lemma4_bound(
                    row_pre0[e], pair.eps * u.abs(), lam, eta, t.view(-1, 1, 1), allow_large_step
                )
            for k, step in enumerate(kept):
                rows.append(
                    {
                        "side": own,
                        "eps": pair.eps,
                        "lam": lam,
                        "eta": eta,
                        "step": step,
                        "norm_max": float(cross[k, e].max()),
                        "norm_bound_max": float(bound[k].max()),
                        "norm_slack": float((bound[k] - cross[k, e]).min()),
                        "norm_ratio": float((cross[k, e] / bound[k]).max()),
                        "row_slack": float((row_bound[k] - row_pre[k, e]).min()),
                        "gap_max": float(gap[k, e].max()),
                        "gap_slack": float((cross[k, e] - gap[k, e]).min()),
                        "loss_own": float(loss_own[k, e]),
                        "loss_merged": float(loss_merged[k, e]),
                        "loss_bound": float(loss_bound[k, e]),
                        "loss_slack": float(loss_bound[k, e] - loss_merged[k, e]),
                    }
                )
    return rows

