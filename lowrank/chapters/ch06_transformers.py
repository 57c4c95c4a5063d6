"""Chapter 6 (Figures 1 and 4, Table 1): pretrained transformers, and a block at a stationary point.

Per-layer, per-role norms and stable ranks of a safetensors checkpoint streamed one layer
at a time (:func:`analyse`, reading through :mod:`lowrank.data.checkpoints`), Table 1's
architecture row, the per-head balance of attention, and an untrained baseline. Then the
same balance on a small softmax block (:mod:`lowrank.core.attention`) trained by GD to a
stationary point of L_λ (:func:`train_block`): f depends on (Q_h, K_h) only through
Q_hᵀK_h and on (V_h, O_h) only through O_hV_h, so there Q_hQ_hᵀ = K_hK_hᵀ and V_hV_hᵀ = O_hᵀO_h.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lowrank.core.attention import BLOCK_ROLES, attention_block, stacked
from lowrank.core.checks import check_matrix, check_positive
from lowrank.core.engine import fit
from lowrank.core.metrics import matrix_norms, stable_rank
from lowrank.data.checkpoints import (
    ALL_ROLES,
    MINILM_ALIASES,
    ROLES,
    Checkpoint,
    attention_heads,
    minilm_checkpoint,
)

# --- a checkpoint's spectra (Figures 1 and 4, Table 1) --------------------------------------


def layer_rows(
    mats: dict[str, torch.Tensor], method: str = "exact", device: torch.device | str = "cpu"
) -> list[dict[str, Any]]:
    """‖W‖_F, ‖W‖_2 and the stable ranks of Section 2 for every role, batched by shape."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for role, w in mats.items():
        by_shape.setdefault(tuple(w.shape), []).append(role)
    out: dict[str, dict[str, Any]] = {}
    for shape, roles in by_shape.items():
        stack = torch.stack([mats[r] for r in roles]).to(device)
        fro, spec = matrix_norms(stack, method)
        for i, role in enumerate(roles):
            f, s = float(fro[i]), float(spec[i])
            if s == 0:
                raise ValueError(f"role {role} is a zero matrix: its stable rank is undefined")
            out[role] = {
                "role": role,
                "rows": shape[0],
                "cols": shape[1],
                "fro": f,
                "spectral": s,
                "stable_rank": f / s,
                "stable_rank_sq": (f / s) ** 2,
            }
    return [out[r] for r in mats]


def analyse(
    model: str | os.PathLike,
    method: str = "exact",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    label: str | None = None,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """One tidy row per (layer, role): the quantities of Figures 1 and 4, layer by layer."""
    from lowrank.config import default_device, default_dtype
    from lowrank.core.progress import progress

    dev = torch.device(device) if device is not None else default_device()
    dt = dtype if dtype is not None else default_dtype(dev)
    rows: list[dict[str, Any]] = []
    with Checkpoint(model) as ckpt:
        name = label or _model_label(model, ckpt)
        for layer in progress(ckpt.layers, len(ckpt.layers), f"spectra {name}", show_progress):
            mats = ckpt.layer_matrices(layer, dt)
            for row in layer_rows(mats, method, dev):
                rows.append({"model": name, "family": ckpt.naming.family, "layer": layer, **row,
                             "method": method})
    return rows


def _model_label(model: str | os.PathLike, ckpt: Checkpoint) -> str:
    if str(model) in MINILM_ALIASES or ckpt.files[0].parent == _packaged_minilm_folder():
        return "all-MiniLM-L6-v2"
    path = Path(model)
    if not path.exists():
        return str(model)
    return path.stem if path.is_file() else path.name


def _packaged_minilm_folder() -> Path | None:
    try:
        return minilm_checkpoint()
    except ValueError:
        return None


def architecture(model: str | os.PathLike) -> dict[str, Any]:
    """Table 1's row: number of layers, model dimension and FF dimension, from shapes alone."""
    with Checkpoint(model) as ckpt:
        shapes = [ckpt.role_shapes(layer) for layer in ckpt.layers]
        family = ckpt.naming.family
    d_model = {s["Q"][1] for s in shapes} | {s["O"][0] for s in shapes}
    d_ff = {s["M1"][0] for s in shapes} | {s["M2"][1] for s in shapes}
    if len(d_model) != 1 or len(d_ff) != 1:
        raise ValueError(f"layers disagree on sizes: model dims {d_model}, FF dims {d_ff}")
    return {"family": family, "layers": len(shapes), "d_model": d_model.pop(), "d_ff": d_ff.pop()}


def layer_head_balance(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, heads: int
) -> dict[str, torch.Tensor]:
    """Per head: ‖Q_h‖/‖K_h‖, ‖V_h‖/‖O_h‖ and the Gram residuals ‖Q_hQ_hᵀ−K_hK_hᵀ‖/‖Q_hQ_hᵀ‖.

    At a stationary point of L + λ/2‖θ‖², invariance of attention under Q_h → A Q_h,
    K_h → A^{-T} K_h forces Q_hQ_hᵀ = K_hK_hᵀ (so ‖Q_h‖ = ‖K_h‖), and invariance under
    V_h → B V_h, O_h → O_h B^{-1} forces V_hV_hᵀ = O_hᵀO_h (so ‖V_h‖ = ‖O_h‖).
    """
    for t, name in ((q, "q"), (k, "k"), (v, "v"), (o, "o")):
        check_matrix(t, name, batched=False)
    if isinstance(heads, bool) or int(heads) != heads or heads < 1:
        raise ValueError(f"heads must be a positive integer (attention heads), got {heads!r}")
    heads = int(heads)
    d_in = q.shape[1]
    if q.shape[1:] == k.shape[1:] and k.shape[0] < q.shape[0] and q.shape[0] % k.shape[0] == 0:
        raise ValueError(
            f"k is narrower than q ({tuple(k.shape)} vs {tuple(q.shape)}): grouped-query "
            "attention shares one K head among several Q heads, and the per-head balance "
            "Q_h Q_hᵀ = K_h K_hᵀ is derived for one K per Q head; use the spectra instead"
        )
    if q.shape != k.shape or q.shape[0] % heads:
        raise ValueError(f"q and k must share a shape (heads*d_h, d), got {q.shape}, {k.shape}")
    if v.shape[0] != o.shape[1] or v.shape[0] % heads:
        raise ValueError(
            f"o must be (d, heads*d_h) with v (heads*d_h, d), got {o.shape}, {v.shape}"
        )
    dq, dv = q.shape[0] // heads, v.shape[0] // heads
    qh, kh = q.reshape(heads, dq, d_in), k.reshape(heads, dq, d_in)
    vh = v.reshape(heads, dv, v.shape[1])
    oh = o.reshape(o.shape[0], heads, dv).permute(1, 2, 0)  # head h: O[:, h] transposed
    for pair, a, b in (("q and k", qh, kh), ("v and o", vh, oh)):
        norms = torch.cat([torch.linalg.matrix_norm(a), torch.linalg.matrix_norm(b)])
        if bool((norms == 0).any()):
            raise ValueError(f"{pair} must have no all-zero head: the head balance is undefined")
    gq, gk = qh @ qh.mT, kh @ kh.mT
    gv, go = vh @ vh.mT, oh @ oh.mT
    fro = torch.linalg.matrix_norm
    return {
        "qk_ratio": fro(qh) / fro(kh),
        "vo_ratio": fro(vh) / fro(oh),
        "qk_gram_residual": fro(gq - gk) / fro(gq),
        "vo_gram_residual": fro(gv - go) / fro(gv),
    }


def balance_rows(model: str | os.PathLike, heads: int | None = None) -> list[dict[str, Any]]:
    """layer_head_balance for every layer and head of a checkpoint, as tidy rows."""
    rows: list[dict[str, Any]] = []
    with Checkpoint(model) as ckpt:
        n_heads = heads if heads is not None else attention_heads(ckpt.config)
        for layer, m in ckpt.iter_layers(torch.float64):
            bal = layer_head_balance(m["Q"], m["K"], m["V"], m["O"], n_heads)
            for h in range(n_heads):
                rows.append({"layer": layer, "head": h, **{k: float(t[h]) for k, t in bal.items()}})
    return rows


def init_baseline(
    model: str | os.PathLike, std: float = 0.02, seed: int = 0, heads: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Frobenius norms and head balances of a seeded N(0, std²) draw of a checkpoint's shapes.

    BERT-style initialisation (std 0.02 for every matrix) is the untrained baseline for the
    norms of Figures 1 and 4 and for :func:`layer_head_balance`: rows as in :func:`analyse`
    (``layer``, ``role``, ``rows``, ``cols``, ``fro``) and as in :func:`balance_rows`.
    """
    check_positive(std, "std")
    gen = torch.Generator().manual_seed(seed)
    fro_rows: list[dict[str, Any]] = []
    bal_rows: list[dict[str, Any]] = []
    with Checkpoint(model) as ckpt:
        n_heads = heads if heads is not None else attention_heads(ckpt.config)
        for layer in ckpt.layers:
            shapes = ckpt.role_shapes(layer)
            mats = {r: std * torch.randn(*shapes[r], generator=gen, dtype=torch.float64)
                    for r in ROLES if r != "QKV"}  # fmt: skip
            mats["QKV"] = torch.cat([mats["Q"], mats["K"], mats["V"]], dim=0)
            for role in ROLES:
                rows, cols = shapes[role]
                fro = float(torch.linalg.matrix_norm(mats[role]))
                fro_rows.append({"layer": layer, "role": role, "rows": rows, "cols": cols,
                                 "fro": fro})  # fmt: skip
            bal = layer_head_balance(mats["Q"], mats["K"], mats["V"], mats["O"], n_heads)
            for h in range(n_heads):
                bal_rows.append({"layer": layer, "head": h,
                                 **{k: float(t[h]) for k, t in bal.items()}})  # fmt: skip
    return fro_rows, bal_rows


def gaussian_stable_rank(rows: int, cols: int, seed: int = 0) -> float:
    """The stable rank ‖G‖_F/‖G‖_2 of a seeded Gaussian matrix: the no-structure baseline."""
    check_positive(rows, "rows")
    check_positive(cols, "cols")
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    return float(stable_rank(g))


def spectra_roles(df) -> list[str]:
    """The roles of :data:`ALL_ROLES` that ``df`` has rows for, in that order (G where gated)."""
    present = set(df["role"])
    return [r for r in ALL_ROLES if r in present]


def transformer_spectra(df, title: str = "", baseline: dict | None = None):
    """Figures 1 and 4: stable rank ‖W‖_F/‖W‖_2 and Frobenius norm per layer, by role.

    ``df`` holds tidy rows of :func:`analyse`; every role it has is drawn, the gate G of a
    gated MLP included. ``baseline`` optionally maps a role to the stable rank of a
    Gaussian matrix of its shape, drawn as dotted lines.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    roles = spectra_roles(df)
    palette = dict(zip(roles, sns.color_palette("colorblind", len(roles)), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(7.3, 3.4), constrained_layout=True)
    for ax, col, label in (
        (axes[0], "stable_rank", r"stable rank $\|W\|_F/\|W\|_2$"),
        (axes[1], "fro", r"Frobenius norm $\|W\|_F$"),
    ):
        sns.lineplot(data=df, x="layer", y=col, hue="role", hue_order=roles, style="role",
                     markers=True, dashes=False, palette=palette, ax=ax)
        ax.set_ylabel(label)
        ax.set_xlabel("layer")
        ax.get_legend().remove()
    for role, value in (baseline or {}).items():
        if role in palette:
            axes[0].axhline(value, color=palette[role], ls=":", lw=1)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="role", fontsize=9,
               title_fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --- a block trained to a stationary point ----------------------------------------------------


def block_alignment_residual(
    params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lam: float
) -> float:
    """‖λθ + ∇L(θ)‖/‖λθ‖: zero exactly at a stationary point of L_λ (Eq. (2))."""
    check_positive(lam, "lam")
    num = sum(float((lam * params[r] + grads[r]).square().sum()) for r in BLOCK_ROLES)
    den = sum(float((lam * params[r]).square().sum()) for r in BLOCK_ROLES)
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


def train_block(
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
    The residual is checked every ``check_every`` steps and at ``max_steps``.
    """
    check_positive(check_every, "check_every")
    state = {"residual": math.nan}

    def stop(step: int, ps: list[torch.Tensor], grads) -> bool:
        if lam > 0 and (step % check_every == 0 or step == max_steps):
            state["residual"] = block_alignment_residual(
                dict(zip(BLOCK_ROLES, ps, strict=True)), dict(zip(BLOCK_ROLES, grads, strict=True)),
                lam,
            )
            return tol is not None and state["residual"] < tol
        return False

    ps, history = fit(attention_block(readout), [params[r] for r in BLOCK_ROLES], x, y, lam,
                      eta, max_steps, stop=stop)
    return GDRun(dict(zip(BLOCK_ROLES, ps, strict=True)), history.steps_taken,
                 float(history.final_loss), state["residual"])


def block_head_balance(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per head: the ratios and Gram residuals of :func:`layer_head_balance`, plus
    the wrong-orientation residual ‖V_hᵀV_h − O_hO_hᵀ‖/‖V_hᵀV_h‖ (d × d) for contrast."""
    q, k, v, o = stacked(params)
    out = layer_head_balance(q, k, v, o, params["Q"].shape[0])
    gv = params["V"].mT @ params["V"]  # (H, d, d)
    go = params["O"] @ params["O"].mT
    fro = torch.linalg.matrix_norm
    out["vo_gram_wrong_orientation"] = fro(gv - go) / fro(gv)
    return out


def balance_residual(params: dict[str, torch.Tensor]) -> float:
    """The largest per-head Gram residual, Q–K or V–O: 0 exactly at a stationary point."""
    bal = block_head_balance(params)
    worst = torch.maximum(bal["qk_gram_residual"], bal["vo_gram_residual"])
    return float(worst.max())


def balance_bound(params: dict[str, torch.Tensor], residual: float) -> torch.Tensor:
    """Per head, max of r‖θ‖(‖Q_h‖+‖K_h‖)/‖Q_hQ_hᵀ‖ and r‖θ‖(‖V_h‖+‖O_h‖)/‖V_hV_hᵀ‖.

    Differentiating L_λ along the orbit (A Q_h, A^{−T} K_h), A = I + εE, gives
    λ⟨E, Q_hQ_hᵀ − K_hK_hᵀ⟩ = ⟨∇_Q L_λ, EQ_h⟩ − ⟨∇_K L_λ, EᵀK_h⟩, so the Gram residual is at
    most ‖∇L_λ‖(‖Q_h‖+‖K_h‖)/(λ‖Q_hQ_hᵀ‖) with ‖∇L_λ‖ = r λ‖θ‖; the same for (V_h, O_h).
    """
    check_positive(residual, "residual")
    theta = math.sqrt(sum(float(params[r].square().sum()) for r in BLOCK_ROLES))
    fro = torch.linalg.matrix_norm
    q, k, v, o = (params[r] for r in BLOCK_ROLES)
    qk = residual * theta * (fro(q) + fro(k)) / fro(q @ q.mT)
    vo = residual * theta * (fro(v) + fro(o)) / fro(v @ v.mT)
    return torch.maximum(qk, vo)


def rescale_values(params: dict[str, torch.Tensor], head: int, c: float) -> dict[str, torch.Tensor]:
    """V_h → cV_h, O_h → O_h/c for one head: f (hence L) unchanged, the balance broken."""
    check_positive(c, "c")
    out = {r: params[r].clone() for r in BLOCK_ROLES}
    out["V"][head] = c * out["V"][head]
    out["O"][head] = out["O"][head] / c
    return out
