"""Lemma 1 (deep linear nets are rank one) and Lemma 2 (norm preservation), Section 3.

Lemma 1's proof writes every layer of a stationary deep linear net from the data:
``W_k = w^(k+1) Σ_i r_i(θ) (W_{k−1}⋯W_1 x_i)ᵀ`` with ``r_i(θ) = −y_i ℓ'(y_i f_θ(x_i))/(nλ)``
(Appendix B). Lemma 2 says ``λ‖W_k‖_F² = −(H^{K−k}/n) Σ_i ℓ'(y_i f_θ(x_i)) y_i f_θ(x_i)``.
Everything here works for one net or an ensemble (leading dimension E), in the
dtype of the weights; the chapters use float64 on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lowrank.checks import (
    check_finite,
    check_lambda_per_member,
    check_positive,
    check_weights,
)
from lowrank.losses import logistic_prime
from lowrank.metrics import alignment_residual, loss_and_gradient
from lowrank.nets import activation_degree, forward, layer_degrees


def _members(weights: Sequence[torch.Tensor]) -> int | None:
    return weights[0].shape[0] if weights[0].ndim == 3 else None


def _check_data(weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> None:
    check_finite(x, "x")
    check_finite(y, "y")
    d = weights[0].shape[-1]
    if x.ndim not in (2, 3) or x.shape[-1] != d:
        raise ValueError(f"x must have shape (n, {d}) or (E, n, {d}), got {tuple(x.shape)}")
    if y.shape[-1] != x.shape[-2]:
        raise ValueError(f"y must hold one label per input ({x.shape[-2]}), got {tuple(y.shape)}")


def _lam_column(lam, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """λ as a scalar or an (E, 1) column, to broadcast against per-input rows (..., n)."""
    lam_t = check_lambda_per_member(lam, _members(weights), weights[0])
    return lam_t.reshape(-1, 1) if lam_t.ndim else lam_t


def lemma1_coefficients(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """r_i(θ) = −y_i ℓ'(y_i f_θ(x_i))/(nλ) of Lemma 1's proof (Appendix B); shape (..., n)."""
    weights = check_weights(weights)
    _check_data(weights, x, y)
    lam_c = _lam_column(lam, weights)
    if bool((lam_c == 0).any()):
        raise ValueError("lam must be > 0: Lemma 1's coefficients divide by nλ")
    margins = y * forward(weights, x, "linear")
    return -y * logistic_prime(margins) / (x.shape[-2] * lam_c)


def lemma1_rebuild(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
) -> list[torch.Tensor]:
    """W_k = w^(k+1) Σ_i r_i (W_{k−1}⋯W_1 x_i)ᵀ and w_K = Σ_i r_i W_{K−1}⋯W_1 x_i (Lemma 1).

    Here w^(k)ᵀ = w_Kᵀ W_{K−1}⋯W_k. Each rebuilt W_k (k < K) is an outer product,
    hence rank one, whatever θ is; it equals W_k exactly when θ is stationary.
    """
    weights = check_weights(weights)
    r = lemma1_coefficients(weights, x, y, lam).unsqueeze(-2)  # (..., 1, n)
    K = len(weights)
    # forward features h_{k-1} = W_{k-1}⋯W_1 x_i as rows, for k = 1..K
    feats = [x]
    for w in weights[:-1]:
        feats.append(torch.matmul(feats[-1], w.transpose(-1, -2)))
    # backward vectors w^(k+1) as rows w_Kᵀ W_{K−1}⋯W_{k+1}, for k = 1..K−1
    back = [weights[-1]]
    for w in reversed(weights[1:-1]):
        back.append(torch.matmul(back[-1], w))
    back.reverse()  # back[k-1] = w^(k+1)ᵀ, shape (..., 1, m_k)
    rebuilt = []
    for k in range(1, K + 1):
        row = torch.matmul(r, feats[k - 1])  # Σ_i r_i h_{k-1,i}ᵀ, shape (..., 1, m_{k-1})
        if k == K:
            rebuilt.append(row)
        else:
            rebuilt.append(back[k - 1].transpose(-1, -2) * row)
    return rebuilt


def rebuild_errors(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """‖W_k − W_k^rebuilt‖_F/‖W_k‖_F for Lemma 1's formulas, per layer: shape (..., K)."""
    rebuilt = lemma1_rebuild(weights, x, y, lam)
    errs = []
    for k, (w, b) in enumerate(zip(weights, rebuilt, strict=True)):
        norm = torch.linalg.matrix_norm(w, ord="fro")
        if bool((norm == 0).any()):
            raise ValueError(f"weights[{k}] is a zero matrix: its relative error is undefined")
        errs.append(torch.linalg.matrix_norm(w - b, ord="fro") / norm)
    return torch.stack(errs, dim=-1)


def sigma_ratio(w: torch.Tensor) -> torch.Tensor:
    """σ₂/σ₁ of a matrix (batched); 0 exactly for a rank-one matrix (Lemma 1)."""
    if w.ndim < 2 or min(w.shape[-2:]) < 2:
        raise ValueError(
            f"w must be a (batch of) matrices with >= 2 rows and columns, "
            f"got shape {tuple(w.shape)}"
        )
    s = torch.linalg.svdvals(w)
    return s[..., 1] / s[..., 0]


def rank_one_ratio_bound(residual: torch.Tensor) -> torch.Tensor:
    """σ₂/σ₁ ≤ ρ/√(1−ρ²) when ‖W − R‖_F ≤ ρ‖W‖_F for a rank-one R (Eckart–Young; Lemma 1)."""
    if bool((residual < 0).any()) or bool((residual >= 1).any()):
        raise ValueError("residual must lie in [0, 1) for the rank-one bound")
    return residual / (1 - residual.square()).sqrt()


def lemma2_sides(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lemma 2's two sides per layer: λ‖W_k‖_F² and −(H^{K−k}/n) Σ_i ℓ'(y_i f_i) y_i f_i.

    Both have shape (..., K); they agree at a stationary point of L_λ.
    """
    weights = check_weights(weights)
    _check_data(weights, x, y)
    lam_c = _lam_column(lam, weights)
    margins = y * forward(weights, x, activation)
    b2 = -(logistic_prime(margins) * margins).mean(dim=-1)  # B² of Lemma 3's proof
    degrees = layer_degrees(len(weights), activation_degree(activation))
    lam_v = lam_c.squeeze(-1) if lam_c.ndim else lam_c
    lhs = torch.stack([lam_v * w.square().sum(dim=(-2, -1)) for w in weights], dim=-1)
    rhs = torch.stack([deg * b2 for deg in degrees], dim=-1)
    return lhs, rhs


def lemma2_gap(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    activation: str,
) -> torch.Tensor:
    """|λ‖W_k‖_F² − RHS_k|/(λ‖W_k‖_F²), Lemma 2's relative gap per layer: shape (..., K)."""
    return lemma2_signed_gap(weights, x, y, lam, activation).abs()


def lemma2_signed_gap(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    activation: str,
) -> torch.Tensor:
    """(λ‖W_k‖_F² − RHS_k)/(λ‖W_k‖_F²) = ⟨λW_k + ∇_{W_k}L, W_k⟩/(λ‖W_k‖_F²) (Lemma 2)."""
    lhs, rhs = lemma2_sides(weights, x, y, lam, activation)
    if bool((lhs == 0).any()):
        raise ValueError("lam must be > 0 and no layer zero: the gap divides by λ‖W_k‖_F²")
    return (lhs - rhs) / lhs


def lemma2_gap_from_gd_step(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    eta: float,
    activation: str,
) -> torch.Tensor:
    """(‖W_k‖² − ‖W_k'‖²)/(2ηλ‖W_k‖²) + (ηλ/2)ρ_k² after one GD step W' = W − η(λW + ∇L).

    Equals Lemma 2's signed gap exactly (expand ‖W'‖²); shape (..., K).
    """
    weights = check_weights(weights)
    check_positive(eta, "eta")
    check_positive(lam, "lam")
    _, grads = loss_and_gradient(weights, x, y, activation)
    rho = alignment_residual(weights, grads, lam, per_layer=True)
    before = torch.stack([w.square().sum(dim=(-2, -1)) for w in weights], dim=-1)
    after = torch.stack(
        [
            (w - eta * (lam * w + g)).square().sum(dim=(-2, -1))
            for w, g in zip(weights, grads, strict=True)
        ],
        dim=-1,
    )
    return (before - after) / (2 * eta * lam * before) + 0.5 * eta * lam * rho.square()


def spectrum_recorder(lam: Sequence[float], top: int = 5) -> Callable[..., list[dict[str, Any]]]:
    """A ``gd`` recorder of the ``top`` singular values of every layer (Lemma 1's figure)."""
    lams = [float(v) for v in lam]

    def record(step: int, weights: list[torch.Tensor], loss: torch.Tensor) -> list[dict]:
        rows = []
        for k, w in enumerate(weights[:-1], start=1):
            s = torch.linalg.svdvals(w if w.ndim == 3 else w.unsqueeze(0))
            for e in range(s.shape[0]):
                for j in range(min(top, s.shape[-1])):
                    rows.append(
                        {
                            "step": step,
                            "member": e,
                            "lam": lams[e],
                            "layer": k,
                            "index": j + 1,
                            "sigma": float(s[e, j]),
                            "ratio": float(s[e, 1] / s[e, 0]),
                        }
                    )
        return rows

    return record


def lemma2_recorder(
    x: torch.Tensor, y: torch.Tensor, lam: float, activation: str
) -> Callable[..., list[dict[str, Any]]]:
    """A ``gd`` recorder of Lemma 2's sides, gap and per-layer alignment residual."""

    def record(step: int, weights: list[torch.Tensor], loss: torch.Tensor) -> list[dict]:
        lhs, rhs = lemma2_sides(weights, x, y, lam, activation)
        _, grads = loss_and_gradient(weights, x, y, activation)
        res = alignment_residual(weights, grads, lam, per_layer=True)
        lhs, rhs, res = (t.reshape(-1, t.shape[-1]) for t in (lhs, rhs, res))
        rows = []
        for e in range(lhs.shape[0]):
            for k in range(lhs.shape[1]):
                rows.append(
                    {
                        "step": step,
                        "member": e,
                        "activation": activation,
                        "layer": k + 1,
                        "lhs": float(lhs[e, k]),
                        "rhs": float(rhs[e, k]),
                        "gap": float((lhs[e, k] - rhs[e, k]).abs() / lhs[e, k]),
                        "residual": float(res[e, k]),
                    }
                )
        return rows

    return record


# --- Chapter drivers: the settings of chapters 3 and 4 and their training runs ----------

# The paper runs no experiment for Lemma 1: "full" is wider, with more data and seeds.
LEMMA1_SPECS: dict[str, dict[str, Any]] = {
    "quick": {
        "d": 8,
        "n": 40,
        "a": 2.0,
        "width": 20,
        "depths": [3, 4, 6],
        "seeds": 2,
        "lam": 0.05,
        "eta": 0.5,
        "steps": 2000,
        "record_every": 50,
    },
    "full": {
        "d": 20,
        "n": 200,
        "a": 2.0,
        "width": 100,
        "depths": [3, 4, 6],
        "seeds": 5,
        "lam": 0.05,
        "eta": 0.5,
        "steps": 6000,
        "record_every": 100,
    },
}

LEMMA2_SPECS: dict[str, dict[str, Any]] = {
    "quick": {
        "d": 8,
        "n": 40,
        "a": 2.0,
        "width": 20,
        "K": 3,
        "seeds": 2,
        "record_every": 100,
        "runs": {
            "linear": {"lam": 0.05, "eta": 0.5, "x_scale": 1.0, "steps": 3000},
            "relu": {"lam": 0.02, "eta": 0.5, "x_scale": 1.0, "steps": 6000},
            "relu2": {"lam": 0.02, "eta": 0.5, "x_scale": 1.5, "steps": 6000},
        },
    },
    # The paper runs no experiment for Lemma 2: "full" keeps the sizes (a wider relu2 net
    # collapses to θ = 0 at x_scale 1.5) and adds seeds and steps.
    "full": {
        "d": 8,
        "n": 40,
        "a": 2.0,
        "width": 20,
        "K": 3,
        "seeds": 8,
        "record_every": 200,
        "runs": {
            "linear": {"lam": 0.05, "eta": 0.5, "x_scale": 1.0, "steps": 3000},
            "relu": {"lam": 0.02, "eta": 0.5, "x_scale": 1.0, "steps": 20000},
            "relu2": {"lam": 0.02, "eta": 0.5, "x_scale": 1.5, "steps": 12000},
        },
    },
}


def train_lemma1(K: int, spec: dict[str, Any]):
    """GD on deep linear nets of depth K, the same inits with λ = spec['lam'] and λ = 0.

    Returns (weights, lams, task, history frame with a ``K`` column); members
    0..seeds−1 have weight decay, the rest are their λ = 0 twins.
    """
    from lowrank.data import sin_task
    from lowrank.nets import init_mlp
    from lowrank.train import gd

    task = sin_task(spec["n"], spec["d"], a=spec["a"], seed=0)
    dims = [spec["d"]] + [spec["width"]] * (K - 1) + [1]
    init = init_mlp(dims, members=spec["seeds"], seed=K)
    init = [torch.cat([w, w]) for w in init]
    lams = [spec["lam"]] * spec["seeds"] + [0.0] * spec["seeds"]
    weights, hist = gd(
        init,
        task.x,
        task.y,
        torch.tensor(lams, dtype=torch.float64),
        spec["eta"],
        spec["steps"],
        activation="linear",
        record_every=spec["record_every"],
        record=spectrum_recorder(lams),
    )
    frame = hist.frame()
    frame["K"] = K
    return weights, lams, task, frame


def train_lemma2(activation: str, spec: dict[str, Any], eta: float | None = None):
    """GD on a depth-K net with ``activation`` under chapter 4's settings, recording Lemma 2.

    Returns (weights, x, y, history frame); ``eta`` overrides the step size.
    """
    from lowrank.data import sin_task
    from lowrank.nets import init_mlp
    from lowrank.train import gd

    run = spec["runs"][activation]
    task = sin_task(spec["n"], spec["d"], a=spec["a"], seed=0)
    x = run["x_scale"] * task.x
    dims = [spec["d"]] + [spec["width"]] * (spec["K"] - 1) + [1]
    init = init_mlp(dims, members=spec["seeds"], seed=1)
    step = run["eta"] if eta is None else eta
    weights, hist = gd(
        init,
        x,
        task.y,
        run["lam"],
        step,
        run["steps"],
        activation=activation,
        record_every=spec["record_every"],
        record=lemma2_recorder(x, task.y, run["lam"], activation),
    )
    return weights, x, task.y, hist.frame()
