"""Attention models as weight lists: the homogeneous (argmax) head of chapter 12 and the
multi-head softmax block of chapter 6, each also as a :class:`~lowrank.core.models.Model`.

The head (Section 3's closing remark): f(X) = w_Oᵀ W_V Xᵀ a with a the argmax (or softmax)
of ⟨W_Q q, W_K x_j⟩ over the tokens x_j of X, for an ensemble of E heads (leading dimension).

The block: f(X) = uᵀ Σ_h O_h V_h Xᵀ softmax(X K_hᵀ Q_h x_0 / √d_h) (head h: Q_h, K_h, V_h of
shape (d_h, d), O_h of shape (d, d_h); query token x_0; a fixed readout u), without biases
or rotary embeddings, with a hand-written backward (:func:`block_loss_and_grad`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lowrank.core.checks import check_finite, check_positive
from lowrank.core.losses import logistic
from lowrank.core.models import Model, Params

# --- the homogeneous attention head (chapter 12) -----------------------------------------

ATTENTION_PARAMS = ("W_Q", "W_K", "W_V", "w_O")


#: degree of the argmax head's output in each parameter: locally constant in W_Q, W_K
ARGMAX_DEGREES = {"W_Q": 0, "W_K": 0, "W_V": 1, "w_O": 1}


def attention_forward(
    params: dict[str, torch.Tensor], x: torch.Tensor, query: torch.Tensor, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """f(X) = w_Oᵀ W_V Xᵀ a, a = argmax or softmax of ⟨W_Q q, W_K x_j⟩ (no residual, no norm)."""
    if kind not in ("argmax", "softmax"):
        raise ValueError(f"kind must be 'argmax' or 'softmax', got {kind!r}")
    q = params["W_Q"] @ query  # (E, k)
    scores = torch.einsum("ekd,ntd,ek->ent", params["W_K"], x, q)
    if kind == "softmax":
        attn = torch.softmax(scores, dim=-1)
    else:
        # hard attention: a one-hot of the argmax, through which no gradient flows
        attn = torch.nn.functional.one_hot(scores.argmax(-1), x.shape[1]).to(x.dtype)
    values = torch.einsum("ekd,ntd->entk", params["W_V"], x)
    out = torch.einsum("ent,entk,ek->en", attn, values, params["w_O"])
    return out, attn


def init_attention(
    members: int, d: int, k: int, seed: int = 0, scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """Gaussian W_Q, W_K, W_V (E, k, d) of variance scale²/d and w_O (E, k) of scale²/k."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in ATTENTION_PARAMS:
        shape, fan = ((members, k), k) if name == "w_O" else ((members, k, d), d)
        out[name] = torch.randn(*shape, generator=gen, dtype=torch.float64) * (scale / fan**0.5)
    return out


def attention_head(
    query: torch.Tensor, kind: str, names: Sequence[str] = ATTENTION_PARAMS
) -> Model:
    """The head as a Model: parameters in the order ``names``, gradients by autograd.

    W_Q and W_K of the argmax head get no gradient (the argmax is locally constant): the
    engine only decays them.
    """
    if kind not in ("argmax", "softmax"):
        raise ValueError(f"kind must be 'argmax' or 'softmax', got {kind!r}")
    keys = tuple(names)

    def loss(ps: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out, _ = attention_forward(dict(zip(keys, ps, strict=True)), x, query, kind)
        return logistic(y * out).mean(-1)

    def check(ps: Params, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(ps) != len(keys):
            raise ValueError(f"params must hold {keys}, got {len(ps)} tensors")

    return Model(loss, check, lambda ps: ps[0].shape[0])


# --- the multi-head softmax block (chapter 6) ---------------------------------------------

BLOCK_ROLES = ("Q", "K", "V", "O")


def init_block(
    heads: int, d_head: int, d: int, seed: int = 0, scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """Gaussian Q, K, V (H, d_h, d) of variance scale²/d and O (H, d, d_h) of scale²/d_h."""
    for value, name in ((heads, "heads"), (d_head, "d_head"), (d, "d")):
        check_positive(value, name)
    gen = torch.Generator().manual_seed(seed)
    out = {r: torch.randn(heads, d_head, d, generator=gen, dtype=torch.float64) * (scale / d**0.5)
           for r in ("Q", "K", "V")}  # fmt: skip
    out["O"] = torch.randn(heads, d, d_head, generator=gen, dtype=torch.float64) * (
        scale / d_head**0.5
    )
    return out


def readout_vector(d: int) -> torch.Tensor:
    """The fixed readout u = (1, …, 1)/√d (‖u‖ = 1), not trained."""
    return torch.ones(d, dtype=torch.float64) / math.sqrt(d)


def _check_block(params: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    if set(params) != set(BLOCK_ROLES):
        raise ValueError(f"params must hold exactly {BLOCK_ROLES}, got {sorted(params)}")
    for r in BLOCK_ROLES:
        check_finite(params[r], r)
    h, dh, d = params["Q"].shape
    if params["K"].shape != (h, dh, d) or params["V"].shape[:1] != (h,):
        raise ValueError("Q and K must be (H, d_h, d) and V (H, d_v, d) with the same H")
    dv = params["V"].shape[1]
    if params["V"].shape != (h, dv, d) or params["O"].shape != (h, d, dv):
        raise ValueError(f"O must be (H, d, d_v) = {(h, d, dv)}, got {tuple(params['O'].shape)}")
    return h, dh, d


def block_output(
    params: dict[str, torch.Tensor], x: torch.Tensor, readout: torch.Tensor
) -> torch.Tensor:
    """f(X) = uᵀ Σ_h O_h V_h Xᵀ softmax(X K_hᵀ Q_h x_0/√d_h) for each sequence X (n, T, d)."""
    dh = params["Q"].shape[1]
    q = torch.einsum("hkd,nd->nhk", params["Q"], x[:, 0])
    k = torch.einsum("hkd,ntd->nhtk", params["K"], x)
    attn = torch.softmax(torch.einsum("nhk,nhtk->nht", q, k) / math.sqrt(dh), dim=-1)
    v = torch.einsum("hkd,ntd->nhtk", params["V"], x)
    z = torch.einsum("nht,nhtk->nhk", attn, v)
    return torch.einsum("hdk,nhk->nd", params["O"], z) @ readout


def block_loss_and_grad_autograd(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, readout: torch.Tensor
) -> tuple[float, dict[str, torch.Tensor]]:
    """L(θ) = (1/n) Σ ln(1 + e^{−y_i f(X_i)}) (Section 2) and its gradient, by autograd."""
    _check_block(params)
    ps = {r: params[r].detach().clone().requires_grad_(True) for r in BLOCK_ROLES}
    loss = torch.nn.functional.softplus(-y * block_output(ps, x, readout)).mean()
    grads = torch.autograd.grad(loss, [ps[r] for r in BLOCK_ROLES])
    return float(loss.detach()), {r: g.detach() for r, g in zip(BLOCK_ROLES, grads, strict=True)}


def _block_backward(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, readout: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    dh = params["Q"].shape[1]
    x0 = x[:, 0]
    q = torch.einsum("hkd,nd->nhk", params["Q"], x0)
    k = torch.einsum("hkd,ntd->nhtk", params["K"], x)
    attn = torch.softmax(torch.einsum("nhk,nhtk->nht", q, k) / math.sqrt(dh), dim=-1)
    xbar = torch.einsum("nht,ntd->nhd", attn, x)
    z = torch.einsum("hkd,nhd->nhk", params["V"], xbar)
    r = torch.einsum("hdk,d->hk", params["O"], readout)
    f = torch.einsum("nhk,hk->n", z, r)
    margins = y * f
    loss = torch.nn.functional.softplus(-margins).mean()
    c = -y * torch.sigmoid(-margins) / x.shape[0]
    grad_o = torch.einsum("d,nhk,n->hdk", readout, z, c)
    grad_v = torch.einsum("hk,nhd,n->hkd", r, xbar, c)
    v_x = torch.einsum("ntd,hkd,hk->nht", x, params["V"], r)  # r_hᵀ V_h x_nt
    da = c[:, None, None] * v_x
    ds = attn * (da - (attn * da).sum(-1, keepdim=True)) / math.sqrt(dh)
    grad_q = torch.einsum("nht,nhtk,nd->hkd", ds, k, x0)
    grad_k = torch.einsum("nht,nhk,ntd->hkd", ds, q, x)
    return loss, {"Q": grad_q, "K": grad_k, "V": grad_v, "O": grad_o}


def block_loss_and_grad(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, readout: torch.Tensor
) -> tuple[float, dict[str, torch.Tensor]]:
    """L(θ) and ∇L(θ) of :func:`block_output` by a hand-written backward pass (no autograd).

    With c_n = ∂L/∂f(X_n), r_h = O_hᵀu, z_nh = Σ_t a_nht V_h x_nt and x̄_nh = Σ_t a_nht x_nt:
    ∇O_h = u Σ_n c_n z_nhᵀ, ∇V_h = r_h Σ_n c_n x̄_nhᵀ, and the softmax backward for Q_h, K_h.
    """
    loss, grads = _block_backward(params, x, y, readout)
    return float(loss), grads


def stacked(
    params: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q, K, V, O) in ``torch.nn.Linear`` layout: Q, K, V (H d_h, d) by rows, O (d, H d_h)."""
    h, dh, d = _check_block(params)
    q, k, v = (params[r].reshape(-1, d) for r in ("Q", "K", "V"))
    o = params["O"].permute(1, 0, 2).reshape(d, -1)  # head h: columns h d_v … (h+1) d_v − 1
    return q, k, v, o


def attention_block(readout: torch.Tensor) -> Model:
    """The block as a Model: parameters in the order of BLOCK_ROLES, the hand-written backward."""

    def as_dict(ps: Params) -> dict[str, torch.Tensor]:
        return dict(zip(BLOCK_ROLES, ps, strict=True))

    def loss(ps: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(-y * block_output(as_dict(ps), x, readout)).mean()

    def backward(ps: Params, x: torch.Tensor, y: torch.Tensor):
        loss_value, grads = _block_backward(as_dict(ps), x, y, readout)
        return loss_value, [grads[r] for r in BLOCK_ROLES]

    def check(ps: Params, x: torch.Tensor, y: torch.Tensor) -> None:
        _check_block(as_dict(ps))

    return Model(loss, check, lambda ps: None, backward)
