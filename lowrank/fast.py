"""Fast full-batch GD for MLP ensembles with hand-written backprop (no autograd).

The same update as :func:`lowrank.train.gd`, W_k ← (1−ηλ)W_k − η∇_{W_k}L (Section 2),
for ReLU, squared-ReLU and linear MLPs ``f(x) = W_K σ(W_{K−1} ⋯ σ(W_1 x))``, every
member of an ensemble at once with ``torch.matmul`` on (E, out, in) weights.

Public API (what other experiments plug into):

* :func:`loss_and_grads` ``(weights, x, y, activation) -> (loss (E,), [∇W_1, ..., ∇W_K])``
* :func:`gd` ``(weights, x, y, lam, eta, steps, activation, record_every, record,
  show_progress) -> (weights, History)``: a drop-in for ``lowrank.train.gd`` (same
  arguments, same :class:`lowrank.train.History`, same recorder signature
  ``record(step, weights, loss) -> list[dict]``, same
  :class:`lowrank.train.DivergenceError` naming the step and member), plus a
  progress bar. Inputs ``x`` are ``(n, d)`` (shared) or ``(E, n, d)`` (one data
  set per member), labels ``y`` are ``(n,)`` or ``(E, n)``; ``lam`` is a scalar or
  one λ per member.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowrank import train
from lowrank.losses import logistic, logistic_prime
from lowrank.nets import ACTIVATIONS
from lowrank.train import History, Recorder, _validate, record_loss_and_norms

__all__ = ["gd", "loss_and_grads", "flops_per_step"]


def _activation_and_slope(activation: str):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation == "linear":
        return (lambda z: z), None
    if activation == "relu":
        return torch.relu, lambda z: (z > 0).to(z.dtype)
    return (lambda z: torch.relu(z).square()), lambda z: 2 * torch.relu(z)


def _loss_and_grads(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    sigma, slope = _activation_and_slope(activation)
    hs, zs = [x], []
    for w in weights[:-1]:
        z = torch.matmul(hs[-1], w.transpose(-1, -2))
        zs.append(z)
        hs.append(sigma(z))
    out = torch.matmul(hs[-1], weights[-1].transpose(-1, -2)).squeeze(-1)
    margins = y * out
    loss = logistic(margins).mean(dim=-1)
    # dL/df_i = y_i ℓ'(y_i f_i)/n, then the chain rule layer by layer downwards.
    g = (y * logistic_prime(margins) / x.shape[-2]).unsqueeze(-1)
    grads: list[torch.Tensor] = [torch.empty(0)] * len(weights)
    for k in range(len(weights) - 1, -1, -1):
        grads[k] = torch.matmul(g.transpose(-1, -2), hs[k])
        if k > 0:
            g = torch.matmul(g, weights[k])
            if slope is not None:
                g = g * slope(zs[k - 1])
    return loss, grads


def loss_and_grads(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str = "relu"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """L(θ) = (1/n)Σℓ(y_i f_θ(x_i)) per member and ∇_{W_k}L by hand-written backprop."""
    weights, _ = _validate(weights, x, y, 0.0, 1.0)
    return _loss_and_grads(weights, x, y, activation)


def gd(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    eta: float,
    steps: int,
    activation: str = "relu",
    record_every: int | None = None,
    record: Recorder = record_loss_and_norms,
    show_progress: bool = False,
) -> tuple[list[torch.Tensor], History]:
    """Full-batch GD W ← (1−ηλ)W − η∇L (Section 2) with manual backprop; as ``train.gd``.

    Records ``record(step, weights, loss)`` at step 0, every ``record_every`` steps
    and at the end; the loss recorded at step s is that of the weights at step s.
    Raises :class:`lowrank.train.DivergenceError` naming the first step and member
    whose loss is not finite (checked every step on the CPU, at records on a GPU).
    """
    _activation_and_slope(activation)
    return train.gd(
        weights, x, y, lam, eta, steps, activation, record_every, record,
        show_progress=show_progress, loss_and_grads=_loss_and_grads,
    )


def flops_per_step(dims: Sequence[int], n: int, members: int = 1) -> float:
    """Multiply-adds ×2 of one GD step: forward 2n·Σ m_k m_{k−1}, backward twice that."""
    if len(dims) < 2 or any(int(m) < 1 for m in dims):
        raise ValueError(f"dims must list at least two positive widths, got {list(dims)}")
    macs = sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))
    # the first layer's input gradient is never formed: subtract one n·d·m_1 product
    return float(members) * 2.0 * n * (3 * macs - dims[0] * dims[1])
