"""Positive-homogeneous networks as weight lists (Section 2), batched over an ensemble.

``f_θ(x) = <w_K, h_{K-1}>``, ``h_k = σ(W_k h_{k-1})``, ``h_0 = x``. The last weight
has one output row. Every function accepts a single net (``W_k`` of shape
``(out, in)``) or an ensemble (``(E, out, in)``) and inputs shared by all members
``(n, d)`` or one set per member ``(E, n, d)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lowrank.checks import check_finite, check_positive, check_weights

ACTIVATIONS = ("linear", "relu", "relu2")


def activation_degree(activation: str) -> int:
    """The homogeneity degree H of σ: 1 for linear and ReLU, 2 for the squared ReLU."""
    _check_activation(activation)
    return 2 if activation == "relu2" else 1


def activation_fn(activation: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """σ: identity, (v)_+ or the power-ReLU (v)_+^2, each H-positive-homogeneous."""
    _check_activation(activation)
    if activation == "linear":
        return lambda v: v
    if activation == "relu":
        return torch.relu
    return lambda v: torch.relu(v).square()


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def layer_degrees(K: int, H: int) -> list[int]:
    """Degree of f in W_k: H^{K-k} for k = 1..K (Euler's theorem per layer)."""
    if K < 1 or H < 1:
        raise ValueError(f"K and H must be >= 1, got K={K}, H={H}")
    return [H ** (K - k) for k in range(1, K + 1)]


def init_mlp(
    dims: Sequence[int],
    members: int | None = None,
    seed: int = 0,
    init_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """Gaussian weights W_k ~ N(0, init_scale²/fan_in) for widths d, m_1, ..., 1.

    Draws happen on the CPU from one seeded generator and are then moved, so the
    same seed gives the same weights on every device.
    """
    if len(dims) < 2 or any(int(m) < 1 for m in dims):
        raise ValueError(f"dims must list at least two positive widths, got {list(dims)}")
    if dims[-1] != 1:
        raise ValueError(f"dims must end in 1 (a scalar output), got {list(dims)}")
    if members is not None and members < 1:
        raise ValueError(f"members must be >= 1 or None, got {members}")
    check_positive(init_scale, "init_scale")
    gen = torch.Generator().manual_seed(seed)
    lead = () if members is None else (members,)
    weights = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
        w = torch.randn(*lead, fan_out, fan_in, generator=gen, dtype=torch.float64)
        weights.append((w * (init_scale / fan_in**0.5)).to(dtype=dtype, device=device))
    return weights


def hidden_preactivations(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str = "relu"
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Pre-activations W_k h_{k-1} of the hidden layers, and the output f_θ(x)."""
    sigma = activation_fn(activation)
    h = x
    pre = []
    for w in weights[:-1]:
        z = torch.matmul(h, w.transpose(-1, -2))
        pre.append(z)
        h = sigma(z)
    out = torch.matmul(h, weights[-1].transpose(-1, -2)).squeeze(-1)
    return pre, out


def forward(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str = "relu"
) -> torch.Tensor:
    """f_θ(x) for every input (and every member): shape (n,) or (E, n)."""
    check_weights(weights)
    check_finite(x, "x")
    if x.ndim not in (2, 3) or x.shape[-1] != weights[0].shape[-1]:
        raise ValueError(
            f"x must have shape (n, {weights[0].shape[-1]}) or (E, n, {weights[0].shape[-1]}), "
            f"got {tuple(x.shape)}"
        )
    if weights[-1].shape[-2] != 1:
        raise ValueError(
            f"weights[-1] must have one output row, got shape {tuple(weights[-1].shape)}"
        )
    return hidden_preactivations(weights, x, activation)[1]
