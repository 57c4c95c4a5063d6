"""Eq. (2) in footnote 3's (Clarke) reading: λθ̄ = −g for a subgradient g at the window mean.

At the window mean θ̄ of GD iterates, let σ' take any value in [0, 1] at the kinks the
window straddles and minimise ‖λθ̄ + g‖ over those values (:func:`subgradient_certificate`);
the residual is affine in one hidden layer's σ' values, so each block is a bounded
least-squares problem (:func:`bounded_least_squares`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lowrank.core.checks import check_finite, check_positive, check_single_net
from lowrank.core.losses import logistic_prime
from lowrank.core.models import hidden_preactivations
from lowrank.theory.certificates import flatten, straddled_kinks
from lowrank.theory.identities import lemma2_gap


def bounded_least_squares(
    a: torch.Tensor,
    b: torch.Tensor,
    lower: float = 0.0,
    upper: float = 1.0,
    start: torch.Tensor | None = None,
    max_iter: int | None = None,
) -> torch.Tensor:
    """argmin of ‖a s − b‖ over lower ≤ s ≤ upper (the σ' values of the Eq. (2) certificate).

    A primal active-set method (the bounded-variable least squares of Stark and Parker,
    1995): iterates stay feasible and the objective never rises; each step solves the
    least-squares problem on the free coordinates (minimum-norm step, so a rank-deficient
    ``a`` is fine), stops at the first bound it meets, or, at a minimiser over the free
    set, frees the bound coordinate whose Lagrange multiplier has the wrong sign.
    Torch only. Any feasible s it returns is a valid, if not optimal, σ' choice.
    """
    check_finite(a, "a")
    check_finite(b, "b")
    if a.ndim != 2 or b.shape != a.shape[:1]:
        raise ValueError(f"a must be (m, F) and b (m,), got {tuple(a.shape)} and {tuple(b.shape)}")
    if not lower < upper:
        raise ValueError(f"lower must be < upper, got {lower} and {upper}")
    n_var = a.shape[1]
    s = torch.full((n_var,), (lower + upper) / 2, dtype=a.dtype) if start is None else start
    s = s.to(a.dtype).clone().clamp(lower, upper)
    if n_var == 0:
        return s
    max_iter = 10 * n_var + 100 if max_iter is None else max_iter
    width = upper - lower
    # the working set: coordinates held at a bound
    bound = (s <= lower) | (s >= upper)
    grad_scale = float(a.norm() * (b.norm() + a.norm() * s.norm())) + 1e-300
    for _ in range(max_iter):
        free = ~bound
        if bool(free.any()):
            rest = a @ s - b
            step = torch.linalg.lstsq(a[:, free], -rest.unsqueeze(-1), driver="gelsd")
            d = torch.zeros_like(s)
            d[free] = step.solution.squeeze(-1)
            target = s + d
            outside = (target < lower) | (target > upper)
            if bool(outside.any()):
                # walk towards the free minimiser until the first bound is hit
                room = torch.where(d > 0, (upper - s) / d, (lower - s) / d)
                ratios = torch.where(outside & (d != 0), room, torch.full_like(s, torch.inf))
                j = int(torch.argmin(ratios))
                alpha = float(ratios[j].clamp(0.0, 1.0))
                s = (s + alpha * d).clamp(lower, upper)
                s[j] = upper if d[j] > 0 else lower
                bound = bound | (s <= lower + 1e-15 * width) | (s >= upper - 1e-15 * width)
                s = torch.where(bound & (s <= lower + 1e-15 * width), torch.full_like(s, lower), s)
                s = torch.where(bound & (s >= upper - 1e-15 * width), torch.full_like(s, upper), s)
                continue
            s = target
        grad = a.T @ (a @ s - b)
        # multipliers: at the lower bound the gradient must be >= 0, at the upper <= 0
        wrong = torch.where(s <= lower, -grad, grad) * bound
        j = int(torch.argmax(wrong))
        if float(wrong[j]) <= 1e-13 * grad_scale:
            break
        bound[j] = False
    return s


def relaxed_gradient(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    slopes: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """∇L of a ReLU net by backpropagation with σ'(W_k h_{k−1}) replaced by ``slopes``.

    ``slopes[k]`` has the shape (n, m_k) of the k-th hidden pre-activation. With
    slopes = 1(z > 0) it is autograd's gradient; with values in [0, 1] where z = 0 it is
    the chain-rule subgradient of footnote 3's reading of Eq. (2).
    """
    weights = check_single_net(weights, "weights")
    pre, out = hidden_preactivations(weights, x, "relu")
    if len(slopes) != len(pre) or any(
        s.shape != p.shape for s, p in zip(slopes, pre, strict=True)
    ):
        raise ValueError(
            f"slopes must be one (n, m_k) tensor per hidden layer, shapes "
            f"{[tuple(p.shape) for p in pre]}, got {[tuple(s.shape) for s in slopes]}"
        )
    hs = [x, *(torch.relu(z) for z in pre)]
    dout = y * logistic_prime(y * out) / x.shape[0]  # dL/df(x_i)
    grads: list[torch.Tensor] = [dout.unsqueeze(0) @ hs[-1]]
    back = dout.unsqueeze(-1) * weights[-1]  # dL/dh_{K−1}, shape (n, m_{K−1})
    for k in reversed(range(len(pre))):
        dz = back * slopes[k]
        grads.insert(0, dz.T @ hs[k])
        back = dz @ weights[k]
    return grads


@dataclass
class SubgradientCertificate:
    """Eq. (2) at θ̄ in footnote 3's (Clarke) reading: residuals relative to ‖λθ̄‖."""

    residual: float  # min over σ' ∈ [0, 1] at the free kinks of ‖λθ̄ + g‖/‖λθ̄‖
    residual_autograd: float  # the same with autograd's σ' = 1(z > 0) at θ̄
    free: int  # how many (input, unit) pairs had σ' free
    balance: float  # Lemma 2's max_k |λ‖W_k‖² − RHS_k|/(λ‖W_k‖²) at θ̄ (does not involve g)
    slopes: list[torch.Tensor] = field(repr=False)  # the σ' values used; 0/1 off the free pairs


def _solve_block(
    residual_vector: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    slopes: Sequence[torch.Tensor],
    k: int,
    mask: torch.Tensor,
) -> list[torch.Tensor]:
    """Re-choose layer k's free σ' values in [0, 1], the others fixed (an affine problem)."""
    idx = mask.reshape(-1).nonzero().squeeze(-1)
    base = slopes[k].reshape(-1).clone()
    base[idx] = 0.0

    def block(v: torch.Tensor) -> torch.Tensor:
        full = base.index_put((idx,), v).reshape(slopes[k].shape)
        return residual_vector([*slopes[:k], full, *slopes[k + 1 :]])

    current = slopes[k].reshape(-1)[idx]
    jac = torch.func.jacfwd(block)(current)  # exact: the residual is affine in this block
    offset = block(current) - jac @ current
    sol = bounded_least_squares(jac, -offset, 0.0, 1.0, start=current)
    return [*slopes[:k], base.index_put((idx,), sol).reshape(slopes[k].shape), *slopes[k + 1 :]]


def kink_certificate(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    free: Sequence[torch.Tensor],
    starts: Sequence[Sequence[torch.Tensor]] = (),
    rounds: int = 30,
) -> SubgradientCertificate:
    """Least Eq. (2) residual ‖λθ + g‖/‖λθ‖ over g with σ' ∈ [0, 1] on the ``free`` pairs.

    Off the free pairs σ' = 1(z > 0). The residual is affine in one hidden layer's σ'
    values with the others fixed, so each round solves one bounded least-squares problem
    per layer (block coordinate descent, never increasing the residual). It starts from
    autograd's pattern, from σ' = 1/2 on the free pairs and from each of ``starts``
    (full slope lists, e.g. the window's average pattern) and keeps the best.
    """
    weights = check_single_net(weights, "weights")
    check_positive(lam, "lam")
    pre, _ = hidden_preactivations(weights, x, "relu")
    if len(free) != len(pre) or any(f.shape != p.shape for f, p in zip(free, pre, strict=True)):
        raise ValueError("free must be one (n, m_k) boolean mask per hidden layer")
    theta = flatten(weights)
    scale = float(lam * theta.norm())
    if scale == 0:
        raise ValueError("θ = 0: the relative residual is undefined")
    pattern = [(p > 0).to(theta.dtype) for p in pre]

    def residual_vector(slopes: Sequence[torch.Tensor]) -> torch.Tensor:
        return lam * theta + flatten(relaxed_gradient(weights, x, y, slopes))

    def norm_of(slopes: Sequence[torch.Tensor]) -> float:
        return float(residual_vector(slopes).norm()) / scale

    half = [torch.where(f, torch.full_like(p, 0.5), p) for f, p in zip(free, pattern, strict=True)]
    candidates = [pattern, half]
    for st in starts:
        if len(st) != len(pre):
            raise ValueError("each start must hold one slope tensor per hidden layer")
        candidates.append(
            [torch.where(f, s.to(theta.dtype).clamp(0, 1), p)
             for f, s, p in zip(free, st, pattern, strict=True)]
        )
    best, best_value = pattern, norm_of(pattern)
    for cand in candidates:
        slopes = [s.clone() for s in cand]
        value = norm_of(slopes)
        for _ in range(rounds):
            before = value
            for k, mask in enumerate(free):
                if bool(mask.any()):
                    candidate = _solve_block(residual_vector, slopes, k, mask)
                    if norm_of(candidate) <= value:
                        slopes, value = candidate, norm_of(candidate)
            if before - value <= 1e-15 * max(before, 1e-300):
                break
        if value < best_value:
            best, best_value = slopes, value
    return SubgradientCertificate(
        residual=best_value,
        residual_autograd=norm_of(pattern),
        free=int(sum(int(f.sum()) for f in free)),
        balance=float(lemma2_gap(weights, x, y, lam, "relu").max()),
        slopes=best,
    )


def subgradient_certificate(
    iterates: Sequence[Sequence[torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    rounds: int = 30,
) -> SubgradientCertificate:
    """Eq. (2) at the window mean θ̄ with σ' ∈ [0, 1] at every straddled kink (footnote 3).

    Starts include the window's average activation pattern, the σ' that the window-mean
    gradient roughly uses.
    """
    if len(iterates) < 2:
        raise ValueError(f"iterates must hold at least two networks, got {len(iterates)}")
    nets = [check_single_net(w, "iterates[s]") for w in iterates]
    bar = [torch.stack([w[k] for w in nets]).mean(0) for k in range(len(nets[0]))]
    free = straddled_kinks(nets, x, "relu")
    average = [
        torch.stack([(p > 0).to(bar[0].dtype) for p in pres]).mean(0)
        for pres in zip(*(hidden_preactivations(w, x, "relu")[0] for w in nets), strict=True)
    ]
    return kink_certificate(bar, x, y, lam, free, starts=[average], rounds=rounds)
