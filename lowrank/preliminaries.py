"""Section 2's tools, in checkable form: the logistic-loss facts and Euler's theorem per layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowrank.checks import check_finite, check_weights
from lowrank.losses import logistic, logistic_prime
from lowrank.nets import activation_degree, forward, layer_degrees


def logistic_fact_gaps(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """RHS − LHS of Section 2's facts −ℓ' ≤ ℓ, xℓ' ≤ ℓ, −xℓ' ≤ √ℓ (and the false −xℓ' ≤ ℓ)."""
    check_finite(x, "x")
    loss, slope = logistic(x), logistic_prime(x)
    return {
        "-l' <= l": loss + slope,
        "x l' <= l": loss - x * slope,
        "-x l' <= sqrt(l)": loss.sqrt() + x * slope,
        "-x l' <= l (false)": loss + x * slope,
    }


def euler_layer_traces(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str
) -> torch.Tensor:
    """tr(∇_{W_k} f_θ(x_i) W_kᵀ) for every layer k and input i, shape (K, n) (Lemma 2's proof).

    The trace is the derivative of f along W_k ↦ (1 + t)W_k at t = 0, so one
    forward-mode product per layer gives it for all inputs at once.
    """
    weights = check_weights(weights)
    if weights[0].ndim != 2:
        raise ValueError("weights must be one network (2-D weight matrices), not an ensemble")
    rows = []
    for k in range(len(weights)):

        def f_of_layer(w_k: torch.Tensor, k: int = k) -> torch.Tensor:
            return forward([*weights[:k], w_k, *weights[k + 1 :]], x, activation)

        _, tangent = torch.func.jvp(f_of_layer, (weights[k],), (weights[k],))
        rows.append(tangent)
    return torch.stack(rows)


def euler_layer_residual(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str
) -> torch.Tensor:
    """max_i |tr(∇_{W_k} f W_kᵀ) − H^{K−k} f| / max_i |f| per layer (Euler's theorem per layer)."""
    traces = euler_layer_traces(weights, x, activation)
    f = forward(weights, x, activation)
    degrees = layer_degrees(len(weights), activation_degree(activation))
    expected = torch.tensor(degrees, dtype=f.dtype).unsqueeze(-1) * f
    if float(f.abs().max()) == 0:
        raise ValueError("the network outputs f = 0 on every input x: relative residual undefined")
    return (traces - expected).abs().amax(dim=-1) / f.abs().max()


def homogeneity_degrees(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str, alpha: float = 0.6
) -> dict[str, torch.Tensor]:
    """Measured degrees of f_θ in its input and in θ, and Euler's identity in x (Section 2).

    ``degree_x`` = log(f_θ(αx)/f_θ(x))/log α and ``degree_theta`` = log(f_{αθ}(x)/f_θ(x))/log α
    on the inputs with |f_θ(x)| > 10⁻² max_i |f_θ(x_i)| (a log-ratio needs f well away from
    0); ``euler_x`` = max_i |⟨x_i, ∇_x f_θ(x_i)⟩ − H^{K−1} f_θ(x_i)| / max_i |f_θ(x_i)|.
    Expected: H^{K−1}, Z = Σ_k H^{K−k} and 0.
    """
    weights = check_weights(weights)
    check_finite(x, "x")
    if not (alpha > 0 and alpha != 1):
        raise ValueError(f"alpha must be > 0 and != 1, got {alpha}")
    f = forward(weights, x, activation)
    if float(f.abs().max()) == 0:
        raise ValueError("the network outputs f = 0 on every input x: no degree to measure")
    big = f.abs() > 1e-2 * f.abs().max()
    log_alpha = torch.tensor(alpha, dtype=f.dtype).log()
    f_in = forward(weights, alpha * x, activation)
    f_par = forward([alpha * w for w in weights], x, activation)
    x_req = x.detach().clone().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(forward(weights, x_req, activation).sum(), x_req)
    degree = activation_degree(activation) ** (len(weights) - 1)
    return {
        "degree_x": (f_in[big] / f[big]).log() / log_alpha,
        "degree_theta": (f_par[big] / f[big]).log() / log_alpha,
        "euler_x": ((x * grad_x).sum(-1) - degree * f).abs().max() / f.abs().max(),
    }
