"""Positive-homogeneous networks as weight lists (Section 2), batched over an ensemble.

``f_θ(x) = <w_K, h_{K-1}>``, ``h_k = σ(W_k h_{k-1})``, ``h_0 = x``. The last weight
has one output row. Every function accepts a single net (``W_k`` of shape
``(out, in)``) or an ensemble (``(E, out, in)``) and inputs shared by all members
``(n, d)`` or one set per member ``(E, n, d)``.

A :class:`Model` is what :mod:`lowrank.core.engine` trains: a per-member loss, its input
check and, where written by hand, a backward pass. The models here are the MLP
(:func:`mlp`), the linear predictor of Section 4 (:func:`linear_predictor`) and the shallow
net f(x) = ⟨u, (Wx)_+⟩ of Eq. (3) with fixed u (:func:`shallow_net`); the attention models
are in :mod:`lowrank.core.attention`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lowrank.core import layouts
from lowrank.core.checks import (
    check_finite,
    check_mlp_data,
    check_positive,
    check_task,
    check_weights,
    ensemble_size,
)
from lowrank.core.layouts import weight_grad, weight_t
from lowrank.core.losses import empirical_loss, logistic, logistic_prime
from lowrank.core.precision import matmul

Params = list[torch.Tensor]
#: ``backward(params, x, y) -> (loss per member, [∇ per parameter, None where unused])``
Backward = Callable[[Params, torch.Tensor, torch.Tensor], tuple[torch.Tensor, list]]


@dataclass(frozen=True)
class Activation:
    """An H-positive-homogeneous activation σ, its degree H and its slope σ' (None: σ' = 1)."""

    name: str
    degree: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    slope: Callable[[torch.Tensor], torch.Tensor] | None


ACTIVATION_TABLE = {
    "linear": Activation("linear", 1, lambda v: v, None),
    "relu": Activation("relu", 1, torch.relu, lambda z: (z > 0).to(z.dtype)),  # σ' (autograd's)
    "relu2": Activation("relu2", 2, lambda v: torch.relu(v).square(), lambda z: 2 * torch.relu(z)),
}
ACTIVATIONS = tuple(ACTIVATION_TABLE)
#: the activation of each degree H that the chapters use (Lemma 3's grid, Figure 2)
ACTIVATION_OF_DEGREE = {1: "relu", 2: "relu2"}


def activation(name: str) -> Activation:
    """The entry of the activation table, refusing unknown names."""
    if name not in ACTIVATION_TABLE:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")
    return ACTIVATION_TABLE[name]


def activation_degree(name: str) -> int:
    """The homogeneity degree H of σ: 1 for linear and ReLU, 2 for the squared ReLU."""
    return activation(name).degree


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """σ: identity, (v)_+ or the power-ReLU (v)_+^2, each H-positive-homogeneous."""
    return activation(name).fn


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
        z = matmul(h, weight_t(w))
        pre.append(z)
        h = sigma(z)
    out = matmul(h, weight_t(weights[-1])).squeeze(-1)
    return pre, out


def forward(
    weights: Sequence[torch.Tensor], x: torch.Tensor, activation: str = "relu"
) -> torch.Tensor:
    """f_θ(x) for every input (and every member): shape (n,) or (E, n)."""
    check_weights(weights)
    check_mlp_data(weights, x)
    return hidden_preactivations(weights, x, activation)[1]


# --- the Model the engine trains ---------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A homogeneous net as the engine trains it (Section 2): per-member loss, optional backward.

    ``loss(params, x, y)`` is L(θ) per member without input checks (``check`` runs once);
    ``backward`` returns the loss and the gradients (None: autograd of ``loss(...).sum()``).
    ``grad_is_sum`` says the backward returns Σ_i rather than (1/n)Σ_i, so that the engine's
    step multiplies by η/n; ``param_dims`` counts the trailing dimensions of one parameter.
    """

    loss: Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]
    check: Callable[[Params, torch.Tensor, torch.Tensor], None]
    members: Callable[[Params], int | None]
    backward: Backward | None = None
    grad_is_sum: bool = False
    param_dims: int = 2


# --- MLPs ----------------------------------------------------------------------------------


def mlp_loss(params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             activation: str = "relu") -> torch.Tensor:
    """L(θ) = (1/n)Σ ℓ(y_i f_θ(x_i)) per member, without input checks (the MLP's loss)."""
    # inputs were validated once up front; a per-step check would turn a divergence
    # into a "contains NaN" error before the divergence watch could name its step
    return empirical_loss(y * hidden_preactivations(params, x, activation)[1])


def _mlp_backward(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    act = ACTIVATION_TABLE[activation]
    sigma, slope = act.fn, act.slope
    relu = act.name == "relu"
    hs: list[torch.Tensor] = [x]
    zs: list[torch.Tensor | None] = []
    for w in weights[:-1]:
        z = matmul(hs[-1], weight_t(w))
        # ReLU in place: h > 0 exactly where z > 0, so the backward masks by h and z is not
        # kept (one (n, width) pass and buffer less per layer: 2x faster on the CPU)
        zs.append(None if relu else z)
        hs.append(z.clamp_min_(0) if relu else sigma(z))
    out = matmul(hs[-1], weight_t(weights[-1])).squeeze(-1)
    margins = y * out
    loss = logistic(margins).mean(dim=-1)
    # dL/df_i = y_i ℓ'(y_i f_i)/n, then the chain rule layer by layer downwards.
    g = (y * logistic_prime(margins) / x.shape[-2]).unsqueeze(-1)
    grads: list[torch.Tensor] = [torch.empty(0)] * len(weights)
    for k in range(len(weights) - 1, -1, -1):
        grads[k] = weight_grad(g, hs[k])
        if k > 0:
            g = matmul(g, weights[k])
            if relu:
                # g·1[h > 0] as autograd's own ReLU backward: one vectorised pass, 5-9x
                # faster on the CPU than compare-cast-multiply or torch.where
                g = torch.ops.aten.threshold_backward(g, hs[k], 0)
            elif slope is not None:
                g = g * slope(zs[k - 1])
    return loss, grads


#: on the CPU, members are back-propagated in groups whose widest activation holds at most
#: this many numbers (4 MiB of float32): an ensemble's (E, n, width) tensors larger than the
#: cache made the elementwise passes 5-11x slower per element than one member's
CPU_CHUNK_ELEMENTS = 1 << 20


def mlp_backward_in_chunks(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The hand-written backward, members in cache-sized groups on the CPU: the same iterates
    to rounding (members are independent, but a 2-D GEMM and a batched one may sum in another
    order: at the paper's widths the weights differ by 3e-8 of their size in float32)."""
    w0 = weights[0]
    if not layouts.cpu_layouts(w0.device) or w0.ndim < 3:
        return _mlp_backward(weights, x, y, activation)
    members = w0.shape[0]
    width = max(w.shape[-2] for w in weights)
    per_member = x.shape[-2] * width
    chunk = max(1, CPU_CHUNK_ELEMENTS // per_member)
    if chunk >= members:
        return _mlp_backward(weights, x, y, activation)
    losses, grads = [], [[] for _ in weights]
    for lo in range(0, members, chunk):
        # a group of one is one net: 2-D GEMMs, which this CPU runs faster than a 3-D batch
        part = lo if chunk == 1 else slice(lo, lo + chunk)
        xs = x[part] if x.ndim == 3 else x
        ys = y[part] if y.ndim == 2 else y
        loss, g = _mlp_backward([w[part] for w in weights], xs, ys, activation)
        losses.append(loss.reshape(-1))
        for k, gk in enumerate(g):
            grads[k].append(gk.unsqueeze(0) if chunk == 1 else gk)
    return torch.cat(losses), [torch.cat(gk) for gk in grads]


def mlp_loss_and_grads(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str = "relu"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """L(θ) = (1/n)Σℓ(y_i f_θ(x_i)) per member and ∇_{W_k}L by hand-written backprop."""
    weights = check_weights(weights)
    check_mlp_data(weights, x, y)
    return _mlp_backward(weights, x, y, activation)


def _check_mlp(params: Params, x: torch.Tensor, y: torch.Tensor) -> None:
    check_mlp_data(check_weights(params), x, y)


def mlp(activation_name: str = "relu", backward: bool = False) -> Model:
    """The MLP f_θ with σ = ``activation_name``; gradients by hand-written backprop if asked."""
    activation(activation_name)

    def loss(ps: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mlp_loss(ps, x, y, activation_name)

    def hand(ps: Params, x: torch.Tensor, y: torch.Tensor):
        return mlp_backward_in_chunks(ps, x, y, activation_name)

    return Model(loss, _check_mlp, ensemble_size, hand if backward else None)


def flops_per_step(dims: Sequence[int], n: int, members: int = 1) -> float:
    """Multiply-adds ×2 of one GD step: forward 2n·Σ m_k m_{k−1}, backward twice that."""
    if len(dims) < 2 or any(int(m) < 1 for m in dims):
        raise ValueError(f"dims must list at least two positive widths, got {list(dims)}")
    macs = sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))
    # the first layer's input gradient is never formed: subtract one n·d·m_1 product
    return float(members) * 2.0 * n * (3 * macs - dims[0] * dims[1])


# --- Section 4's linear predictor f_θ(x) = ⟨θ, x⟩ ---------------------------------------


def linear_grad_sum(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_i ℓ'(y_i⟨w, x_i⟩) y_i x_i: n times ∇L¹(w) of the linear predictor (Section 4)."""
    return matmul(logistic_prime(y * matmul(x, w)) * y, x)


def _check_linear(params: Params, x: torch.Tensor, y: torch.Tensor) -> None:
    theta = params[0]
    check_finite(theta, "theta0")
    if theta.ndim != 1:
        raise ValueError(f"theta0 must be a vector (d,), got shape {tuple(theta.shape)}")
    check_task(x, y, theta.shape[0])


def _linear_loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return empirical_loss(y * matmul(x, params[0]))


def _linear_backward(params: Params, x: torch.Tensor, y: torch.Tensor):
    return _linear_loss(params, x, y), [linear_grad_sum(params[0], x, y)]


def linear_predictor() -> Model:
    """f_θ(x) = ⟨θ, x⟩ with θ of shape (d,); its backward returns the sum Σ_i (η/n steps)."""
    return Model(_linear_loss, _check_linear, lambda ps: None, _linear_backward,
                 grad_is_sum=True, param_dims=1)


# --- the shallow ReLU net f(x) = ⟨u, (Wx)_+⟩ of Eq. (3) ---------------------------------


def check_shallow(
    w: torch.Tensor, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None
) -> None:
    """Refuse W (m, d) or (E, m, d), u (m,), x (n, d) or (E, n, d) and y that do not fit."""
    check_finite(w, "w")
    check_finite(u, "u")
    check_finite(x, "x")
    if w.ndim not in (2, 3):
        raise ValueError(f"w must have shape (m, d) or (E, m, d), got {tuple(w.shape)}")
    if u.shape != (w.shape[-2],):
        raise ValueError(
            f"u must have shape ({w.shape[-2]},) (one weight per neuron), got {tuple(u.shape)}"
        )
    if x.ndim == 3:
        if w.ndim != 3 or x.shape[0] != w.shape[0] or x.shape[2] != w.shape[2]:
            raise ValueError(
                f"w must be (E, m, d) and x (E, n, d) with the same E and d, got "
                f"{tuple(w.shape)} and {tuple(x.shape)}"
            )
    elif x.ndim != 2 or x.shape[1] != w.shape[-1]:
        raise ValueError(f"x must have shape (n, {w.shape[-1]}), got {tuple(x.shape)}")
    if y is not None:
        check_finite(y, "y")
        if y.shape != x.shape[:-1]:
            raise ValueError(f"y must have shape {tuple(x.shape[:-1])}, got {tuple(y.shape)}")


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
    check_shallow(w, u, x)
    return matmul(torch.relu(matmul(x, w.transpose(-1, -2))), u)


def shallow_loss(
    w: torch.Tensor, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """L(W) = (1/n) Σ_i ℓ(y_i f(x_i)) for the net of Eq. (3); per member."""
    return empirical_loss(y * shallow_forward(w, u, x))


def _shallow_backward(
    w: torch.Tensor, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    pre = matmul(x, w.transpose(-1, -2))  # (..., n, m)
    active = (pre > 0).to(w.dtype)
    margins = y * matmul(torch.relu(pre), u)  # (..., n)
    coef = y * logistic_prime(margins)
    grad = matmul((coef.unsqueeze(-1) * active * u).transpose(-1, -2), x) / x.shape[-2]
    return empirical_loss(margins), grad


def shallow_gradient(
    w: torch.Tensor, u: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """∇_W L = (1/n) Σ_i y_i ℓ'(y_i f(x_i)) D_i u x_iᵀ, D_i = diag(1(Wx_i > 0)) (App. C.1)."""
    check_shallow(w, u, x, y)
    return _shallow_backward(w, u, x, y)[1]


def shallow_net(u: torch.Tensor) -> Model:
    """The net of Eq. (3) with fixed output vector u; W (m, d) or (E, m, d) is trained."""

    def loss(ps: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return empirical_loss(y * matmul(torch.relu(matmul(x, ps[0].transpose(-1, -2))), u))

    def backward(ps: Params, x: torch.Tensor, y: torch.Tensor):
        loss_value, grad = _shallow_backward(ps[0], u, x, y)
        return loss_value, [grad]

    def check(ps: Params, x: torch.Tensor, y: torch.Tensor) -> None:
        check_shallow(ps[0], u, x, y)

    return Model(loss, check, lambda ps: ensemble_size(ps), backward)
