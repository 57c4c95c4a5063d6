"""How stationary is a GD iterate? Eq. (2) pointwise, and Goldstein's window version.

At a stationary point of L_λ = L + (λ/2)‖θ‖², λθ = −∇L(θ) (Eq. 2). For a smooth loss
(linear or squared-ReLU nets) GD drives ‖λθ + ∇L(θ)‖ to zero. For ReLU nets ∇ is a
Clarke subgradient (footnote 3), and GD iterates that hover over a kink never make
the pointwise residual small; what they do certify is Goldstein (δ, ε)-stationarity:
a convex combination of gradients of L_λ at points within δ of θ̄ has norm ≤ ε
(Goldstein 1977; Kornowski and Shamir 2021). At the window mean θ̄ the Clarke reading of
Eq. (2) can be tested directly: let σ' take any value in [0, 1] at the kinks the window
straddles and minimise ‖λθ̄ + g‖ over those values (:func:`subgradient_certificate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lowrank.checks import check_finite, check_positive, check_weights
from lowrank.deep_linear import lemma2_gap
from lowrank.losses import logistic_prime
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


def straddled_kinks(
    iterates: Sequence[Sequence[torch.Tensor]], x: torch.Tensor, activation: str = "relu"
) -> list[torch.Tensor]:
    """Per hidden layer, the (n, m_k) mask of (input, unit) pairs whose pre-activation
    W_k h_{k−1} changes sign within the window: the ReLU kinks the iterates straddle."""
    if len(iterates) < 2:
        raise ValueError(f"iterates must hold at least two networks, got {len(iterates)}")
    signs = []
    for w in iterates:
        pre, _ = hidden_preactivations(_single_net(w, "iterates[s]"), x, activation)
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
    weights = _single_net(weights, "weights")
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
    weights = _single_net(weights, "weights")
    check_positive(lam, "lam")
    pre, _ = hidden_preactivations(weights, x, "relu")
    if len(free) != len(pre) or any(f.shape != p.shape for f, p in zip(free, pre, strict=True)):
        raise ValueError("free must be one (n, m_k) boolean mask per hidden layer")
    theta = _flat(weights)
    scale = float(lam * theta.norm())
    if scale == 0:
        raise ValueError("θ = 0: the relative residual is undefined")
    pattern = [(p > 0).to(theta.dtype) for p in pre]

    def residual_vector(slopes: Sequence[torch.Tensor]) -> torch.Tensor:
        return lam * theta + _flat(relaxed_gradient(weights, x, y, slopes))

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
    nets = [_single_net(w, "iterates[s]") for w in iterates]
    bar = [torch.stack([w[k] for w in nets]).mean(0) for k in range(len(nets[0]))]
    free = straddled_kinks(nets, x, "relu")
    average = [
        torch.stack([(p > 0).to(bar[0].dtype) for p in pres]).mean(0)
        for pres in zip(*(hidden_preactivations(w, x, "relu")[0] for w in nets), strict=True)
    ]
    return kink_certificate(bar, x, y, lam, free, starts=[average], rounds=rounds)
