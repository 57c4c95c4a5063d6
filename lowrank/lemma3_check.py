"""Chapter 5's numerical checks: Lemma 3 and Corollary 1 at GD stationary points, and
Remark 1's collapse of GD to θ = 0 for large λ. Each grid is one batched GD call per (K, H).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lowrank import bounds
from lowrank.data import sin_task
from lowrank.deep_linear import lemma2_sides
from lowrank.losses import empirical_loss
from lowrank.metrics import (
    alignment_residual,
    frobenius_norms,
    loss_and_gradient,
    weighted_inverse_stable_rank,
)
from lowrank.nets import activation_degree, forward, init_mlp
from lowrank.train import gd

ACTIVATION_OF_DEGREE = {1: "relu", 2: "relu2"}
# A member whose outputs are all below this in absolute value is the zero network
# for every purpose here (its loss is ln 2 to 9 digits): Lemma 3 excludes it.
ZERO_OUTPUT_TOL = 1e-9


def lemma2_residual(
    weights: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    H: int,
    activation: str | None = None,
) -> torch.Tensor:
    """max_k |λ‖W_k‖_F² / (H^{K−k} B²) − 1| with B² = −(1/n) Σ ℓ'(y f) y f (Lemma 2), per member."""
    activation = activation or ACTIVATION_OF_DEGREE[H]
    if activation_degree(activation) != H:
        raise ValueError(
            f"H must be the degree of {activation!r} ({activation_degree(activation)}), got {H}"
        )
    with torch.no_grad():
        lhs, rhs = lemma2_sides(weights, x, y, lam, activation)
    return (lhs / rhs - 1).abs().amax(-1)


def lemma3_grid(
    Ks: tuple[int, ...] = (2, 3, 4),
    Hs: tuple[int, ...] = (1, 2),
    lambdas: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08),
    seeds: int = 2,
    n: int = 16,
    d: int = 8,
    width: int = 6,
    steps: int = 3000,
    eta: float = 0.5,
    init_scale: tuple[float, float] = (2.5, 1.25),
    input_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Lemma 3 and Corollary 1 at GD limits: one row per (K, H, λ, seed) member.

    GD runs with step ``eta / H`` from ``init_scale[H − 1]`` (the squared ReLU has larger
    gradients) on a sin task with inputs on the sphere of radius ``input_scale`` (the
    proof needs ‖x‖ ≤ 1). Corollary 1 takes θ₀ = the initialisation.
    """
    task = sin_task(n, d, a=2.0, seed=0)
    x, y = task.x * input_scale, task.y
    rows: list[dict[str, Any]] = []
    for K in Ks:
        for H in Hs:
            act = ACTIVATION_OF_DEGREE[H]
            grid = [(lam, s) for lam in lambdas for s in range(seeds)]
            lam = torch.tensor([g[0] for g in grid], dtype=torch.float64)
            dims = [d] + [width] * (K - 1) + [1]
            w0 = init_mlp(dims, len(grid), seed=K, init_scale=init_scale[H - 1])
            w, _ = gd(w0, x, y, lam, eta=eta / H, steps=steps, activation=act)
            loss, grads = loss_and_gradient(w, x, y, act)
            loss0 = empirical_loss(y * forward(w0, x, act))
            sq0 = frobenius_norms(w0).square().sum(-1)
            sq = frobenius_norms(w).square().sum(-1)
            nonzero = forward(w, x, act).abs().amax(-1) > ZERO_OUTPUT_TOL
            align = alignment_residual(w, grads, lam)
            l2res = lemma2_residual(w, x, y, lam, H)
            for e, (lv, s) in enumerate(grid):
                row: dict[str, Any] = {"K": K, "H": H, "lam": lv, "seed": s}
                row.update(loss=float(loss[e]), sq_norm=float(sq[e]), nonzero=bool(nonzero[e]))
                row.update(alignment_residual=float(align[e]), lemma2_residual=float(l2res[e]))
                if nonzero[e]:
                    lhs = float(weighted_inverse_stable_rank([t[e] for t in w], H))
                    rhs = float(bounds.lemma3_rhs(lv, loss[e], K, H))
                else:
                    lhs = rhs = float("nan")
                row.update(lhs=lhs, rhs=rhs, slack=lhs / rhs)
                # Footnote 5: L_λ(θ) ≤ L_λ(0) = ln 2 ≤ 1 makes Lemma 3's RHS at least √λ.
                reg = float(loss[e]) + 0.5 * lv * float(sq[e])
                row.update(reg_loss=reg, below_zero_net=reg <= math.log(2))
                # Corollary 1 with θ₀ = the initialisation, where its assumptions hold.
                reg0 = float(loss0[e]) + 0.5 * lv * float(sq0[e])
                applies = float(loss0[e]) >= 1.0 and reg <= reg0
                cor = float(bounds.corollary1_rhs(lv, loss0[e], sq0[e])) if applies else math.nan
                row.update(loss0=float(loss0[e]), corollary1_applies=applies)
                row.update(corollary1_rhs=cor, corollary1_slack=lhs / cor)
                rows.append(row)
    return rows


def remark1_collapse(
    Ks: tuple[int, ...] = (2, 3, 4, 5),
    fractions: tuple[float, ...] = (0.01, 0.1, 0.5, 1.1, 2.0),
    scales: tuple[float, ...] = (0.1, 1.0, 3.0),
    n: int = 16,
    d: int = 8,
    width: int = 6,
    steps: int = 1500,
    eta: float = 0.2,
) -> list[dict[str, Any]]:
    """Remark 1: ReLU GD at λ = fraction × λ*(K) from starts of several scales; max |f| at the end.

    λ*(K) is :func:`lowrank.bounds.remark1_global_threshold`, above which θ = 0 is the
    unique global minimiser of L_λ (for ‖x‖ ≤ 1).
    """
    task = sin_task(n, d, a=2.0, seed=0)
    rows: list[dict[str, Any]] = []
    for K in Ks:
        threshold = bounds.remark1_global_threshold(K)
        grid = [(fr, sc) for fr in fractions for sc in scales]
        w0 = init_mlp([d] + [width] * (K - 1) + [1], len(grid), seed=K)
        scale_t = torch.tensor([g[1] for g in grid], dtype=torch.float64).view(-1, 1, 1)
        w0 = [w * scale_t for w in w0]
        lam = torch.tensor([fr * threshold for fr, _ in grid], dtype=torch.float64)
        w, _ = gd(w0, task.x, task.y, lam, eta=eta, steps=steps, activation="relu")
        out = forward(w, task.x, "relu").abs().amax(-1)
        loss = empirical_loss(task.y * forward(w, task.x, "relu"))
        for e, (fr, sc) in enumerate(grid):
            rows.append({
                "K": K, "threshold": threshold, "fraction": fr, "lam": float(lam[e]),
                "start_scale": sc, "max_abs_output": float(out[e]), "loss": float(loss[e]),
                "collapsed": bool(out[e] < 1e-3),
            })
    return rows
