"""Chapter 6: the per-head balance of softmax attention at a stationary point of L_λ (Eq. (2)).

A small multi-head softmax attention block without biases and without rotary embeddings,

    f(X) = uᵀ Σ_h O_h V_h Xᵀ softmax(X K_hᵀ Q_h x_0 / √d_h),

(head h: Q_h, K_h, V_h of shape (d_h, d), O_h of shape (d, d_h); query token x_0; a fixed
readout u), trained by full-batch GD on the logistic loss with weight decay, in float64,
until the Eq. (2) residual ‖λθ + ∇L(θ)‖/‖λθ‖ is tiny. f depends on (Q_h, K_h) only through
Q_hᵀK_h and on (V_h, O_h) only through O_hV_h, so at a stationary point of L_λ with λ > 0

    Q_hQ_hᵀ = K_hK_hᵀ  and  V_hV_hᵀ = O_hᵀO_h   (d_h × d_h Gram matrices),

hence ‖Q_h‖_F = ‖K_h‖_F and ‖V_h‖_F = ‖O_h‖_F. The measure is :func:`lowrank.spectra.head_balance`,
the same function the chapter applies to MiniLM, after :func:`stacked` puts the block in
``torch.nn.Linear``'s (out, in) layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowrank.checks import check_finite, check_positive
from lowrank.spectra import head_balance as _layer_head_balance

ROLES = ("Q", "K", "V", "O")


def signed_pair_task(
    n: int, tokens: int = 5, d: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences X (n, T, d) in the unit ball with marked tokens A, B; y = sign⟨w, x_A − x_B⟩.

    Coordinate 0 marks the query token x_0, coordinates 1 and 2 mark A and B, the rest is
    Gaussian content. One head cannot attend to A and B with opposite signs, so a good
    block uses two live heads.
    """
    check_positive(n, "n")
    if tokens < 3 or d < 4:
        raise ValueError(f"tokens must be >= 3 and d >= 4, got tokens={tokens}, d={d}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, tokens, d, generator=gen, dtype=torch.float64) / math.sqrt(d - 3)
    x[:, :, :3] = 0.0
    x[:, 0, :] = 0.0
    x[:, 0, 0] = 1.0
    order = torch.argsort(torch.rand(n, tokens - 1, generator=gen), dim=-1) + 1
    rows = torch.arange(n)
    a, b = order[:, 0], order[:, 1]
    x[rows, a, 1] = 1.0
    x[rows, b, 2] = 1.0
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    w[:3] = 0.0
    y = torch.where((x[rows, a] - x[rows, b]) @ w >= 0, 1.0, -1.0).to(torch.float64)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1.0)  # every token in the unit ball
    return x, y


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


def _check_params(params: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    if set(params) != set(ROLES):
        raise ValueError(f"params must hold exactly {ROLES}, got {sorted(params)}")
    for r in ROLES:
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


def loss_and_grad(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, readout: torch.Tensor
) -> tuple[float, dict[str, torch.Tensor]]:
    """L(θ) = (1/n) Σ ln(1 + e^{−y_i f(X_i)}) (Section 2) and its gradient, by autograd."""
    _check_params(params)
    ps = {r: params[r].detach().clone().requires_grad_(True) for r in ROLES}
    loss = torch.nn.functional.softplus(-y * block_output(ps, x, readout)).mean()
    grads = torch.autograd.grad(loss, [ps[r] for r in ROLES])
    return float(loss.detach()), {r: g.detach() for r, g in zip(ROLES, grads, strict=True)}


def block_loss_and_grad(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, readout: torch.Tensor
) -> tuple[float, dict[str, torch.Tensor]]:
    """L(θ) and ∇L(θ) of :func:`block_output` by a hand-written backward pass (no autograd).

    With c_n = ∂L/∂f(X_n), r_h = O_hᵀu, z_nh = Σ_t a_nht V_h x_nt and x̄_nh = Σ_t a_nht x_nt:
    ∇O_h = u Σ_n c_n z_nhᵀ, ∇V_h = r_h Σ_n c_n x̄_nhᵀ, and the softmax backward for Q_h, K_h.
    """
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
    loss = float(torch.nn.functional.softplus(-margins).mean())
    c = -y * torch.sigmoid(-margins) / x.shape[0]
    grad_o = torch.einsum("d,nhk,n->hdk", readout, z, c)
    grad_v = torch.einsum("hk,nhd,n->hkd", r, xbar, c)
    v_x = torch.einsum("ntd,hkd,hk->nht", x, params["V"], r)  # r_hᵀ V_h x_nt
    da = c[:, None, None] * v_x
    ds = attn * (da - (attn * da).sum(-1, keepdim=True)) / math.sqrt(dh)
    grad_q = torch.einsum("nht,nhtk,nd->hkd", ds, k, x0)
    grad_k = torch.einsum("nht,nhk,ntd->hkd", ds, q, x)
    return loss, {"Q": grad_q, "K": grad_k, "V": grad_v, "O": grad_o}


def alignment_residual(
    params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lam: float
) -> float:
    """‖λθ + ∇L(θ)‖/‖λθ‖: zero exactly at a stationary point of L_λ (Eq. (2))."""
    check_positive(lam, "lam")
    num = sum(float((lam * params[r] + grads[r]).square().sum()) for r in ROLES)
    den = sum(float((lam * params[r]).square().sum()) for r in ROLES)
    if den == 0:
        raise ValueError("θ = 0: the residual ‖λθ + ∇L‖/‖λθ‖ is undefined")
    return math.sqrt(num / den)


@dataclass(frozen=True)
class GDRun:
    """The end of a GD run: parameters, steps taken, loss and (λ > 0) the Eq. (2) residual."""

    params: dict[str, torch.Tensor]
    steps: int
    loss: float
    residual: float


def train_gd(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    readout: torch.Tensor,
    lam: float,
    eta: float,
    max_steps: int,
    tol: float | None = None,
    check_every: int = 100,
) -> GDRun:
    """θ ← (1−ηλ)θ − η∇L(θ) (Section 2) until the Eq. (2) residual is below ``tol``.

    With λ = 0 (or ``tol`` None) it runs ``max_steps`` steps; the residual is NaN at λ = 0.
    """
    check_positive(eta, "eta")
    check_positive(check_every, "check_every")
    if lam < 0:
        raise ValueError(f"lam must be >= 0 (weight decay), got {lam}")
    p = {r: params[r].detach().clone() for r in ROLES}
    residual = math.nan
    step = 0
    _check_params(p)
    while True:
        loss, g = block_loss_and_grad(p, x, y, readout)
        if not math.isfinite(loss):
            raise ValueError(f"GD diverged: loss {loss} at step {step}; lower eta")
        if lam > 0 and (step % check_every == 0 or step == max_steps):
            residual = alignment_residual(p, g, lam)
            if tol is not None and residual < tol:
                break
        if step >= max_steps:
            break
        p = {r: (1 - eta * lam) * p[r] - eta * g[r] for r in ROLES}
        step += 1
    return GDRun(p, step, loss, residual)


def stacked(
    params: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q, K, V, O) in ``torch.nn.Linear`` layout: Q, K, V (H d_h, d) by rows, O (d, H d_h)."""
    h, dh, d = _check_params(params)
    q, k, v = (params[r].reshape(-1, d) for r in ("Q", "K", "V"))
    o = params["O"].permute(1, 0, 2).reshape(d, -1)  # head h: columns h d_v … (h+1) d_v − 1
    return q, k, v, o


def head_balance(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per head: the ratios and Gram residuals of :func:`lowrank.spectra.head_balance`, plus
    the wrong-orientation residual ‖V_hᵀV_h − O_hO_hᵀ‖/‖V_hᵀV_h‖ (d × d) for contrast."""
    q, k, v, o = stacked(params)
    out = _layer_head_balance(q, k, v, o, params["Q"].shape[0])
    gv = params["V"].mT @ params["V"]  # (H, d, d)
    go = params["O"] @ params["O"].mT
    fro = torch.linalg.matrix_norm
    out["vo_gram_wrong_orientation"] = fro(gv - go) / fro(gv)
    return out


def balance_residual(params: dict[str, torch.Tensor]) -> float:
    """The largest per-head Gram residual, Q–K or V–O: 0 exactly at a stationary point."""
    bal = head_balance(params)
    worst = torch.maximum(bal["qk_gram_residual"], bal["vo_gram_residual"])
    return float(worst.max())


def balance_bound(params: dict[str, torch.Tensor], residual: float) -> torch.Tensor:
    """Per head, max of r‖θ‖(‖Q_h‖+‖K_h‖)/‖Q_hQ_hᵀ‖ and r‖θ‖(‖V_h‖+‖O_h‖)/‖V_hV_hᵀ‖.

    Differentiating L_λ along the orbit (A Q_h, A^{−T} K_h), A = I + εE, gives
    λ⟨E, Q_hQ_hᵀ − K_hK_hᵀ⟩ = ⟨∇_Q L_λ, EQ_h⟩ − ⟨∇_K L_λ, EᵀK_h⟩, so the Gram residual is at
    most ‖∇L_λ‖(‖Q_h‖+‖K_h‖)/(λ‖Q_hQ_hᵀ‖) with ‖∇L_λ‖ = r λ‖θ‖; the same for (V_h, O_h).
    """
    check_positive(residual, "residual")
    theta = math.sqrt(sum(float(params[r].square().sum()) for r in ROLES))
    fro = torch.linalg.matrix_norm
    q, k, v, o = (params[r] for r in ROLES)
    qk = residual * theta * (fro(q) + fro(k)) / fro(q @ q.mT)
    vo = residual * theta * (fro(v) + fro(o)) / fro(v @ v.mT)
    return torch.maximum(qk, vo)


def rescale_values(params: dict[str, torch.Tensor], head: int, c: float) -> dict[str, torch.Tensor]:
    """V_h → cV_h, O_h → O_h/c for one head: f (hence L) unchanged, the balance broken."""
    check_positive(c, "c")
    out = {r: params[r].clone() for r in ROLES}
    out["V"][head] = c * out["V"][head]
    out["O"][head] = out["O"][head] / c
    return out
