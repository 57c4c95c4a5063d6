"""Chapter 12, beyond the paper: a homogeneous attention head (section 5, ``beyond-attention``).

The argmax head of :mod:`lowrank.core.attention` trained with weight decay, Lemma 2's norm
identity on it per parameter (Section 3's closing remark), and what softmax changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lowrank.book import lam_label
from lowrank.chapters.ch12_beyond import legend_right
from lowrank.core.attention import attention_forward, attention_head, init_attention
from lowrank.core.checks import check_positive
from lowrank.core.engine import fit
from lowrank.core.losses import logistic, logistic_prime
from lowrank.core.metrics import error_rate
from lowrank.data.synthetic import marked_token_task
from lowrank.runner.experiment import Experiment


def attention_gd(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    query: torch.Tensor,
    kind: str,
    lams: torch.Tensor,
    eta: float,
    steps: int,
) -> dict[str, torch.Tensor]:
    """θ ← (1−ηλ)θ − η∇L(θ) (Section 2) for an ensemble of heads, one λ per member."""
    keys = list(params)  # the caller's key order: attention_lemma2's row order
    out, _ = fit(attention_head(query, kind, keys), [params[k] for k in keys], x, y, lams, eta,
                 steps)
    return dict(zip(keys, out, strict=True))


def attention_lemma2(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, query: torch.Tensor,
    kind: str, lams: torch.Tensor,
) -> list[dict]:
    """Lemma 2 per parameter: λ‖W‖², B² = −(1/n)Σℓ'(y f)y f, their ratio, alignment residual."""
    ps = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    out, attn = attention_forward(ps, x, query, kind)
    loss = logistic(y * out).mean(-1)
    grads = torch.autograd.grad(loss.sum(), list(ps.values()), allow_unused=True)
    b2 = -(logistic_prime(y * out) * y * out).mean(-1).detach()  # (E,)
    rows = []
    for (name, p), g in zip(ps.items(), grads, strict=True):
        g = torch.zeros_like(p) if g is None else g
        lam = lams.view(-1, *([1] * (p.ndim - 1)))
        dims = tuple(range(1, p.ndim))
        lhs = (lams * p.detach().square().sum(dims))
        resid = (lam * p.detach() + g).square().sum(dims).sqrt()
        scale = (lam * p.detach()).square().sum(dims).sqrt() + g.square().sum(dims).sqrt()
        grad_norm = g.square().sum(dims).sqrt()
        for e in range(p.shape[0]):
            rows.append({
                "kind": kind, "lam": float(lams[e]), "param": name, "lam_norm2": float(lhs[e]),
                "B2": float(b2[e]), "ratio": float(lhs[e] / b2[e]),
                "alignment_residual": float(resid[e] / scale[e]) if scale[e] > 0 else 0.0,
                "alignment_abs": float(resid[e]), "grad_norm": float(grad_norm[e]),
                "fro": float(p.detach()[e].square().sum().sqrt()),
                "loss": float(loss[e].detach()), "err": float(error_rate(y * out.detach())[e]),
            })  # fmt: skip
    return rows


def argmax_score_gaps(
    params: dict[str, torch.Tensor], x: torch.Tensor, query: torch.Tensor
) -> torch.Tensor:
    """Per member and sequence, top score minus runner-up of ⟨W_Q q, W_K x_j⟩ (0 at a tie)."""
    q = params["W_Q"] @ query  # (E, k)
    scores = torch.einsum("ekd,ntd,ek->ent", params["W_K"], x, q)
    top2 = scores.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def argmax_decay_trace(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    query: torch.Tensor,
    lams: torch.Tensor,
    eta: float,
    steps: int,
    every: int,
) -> list[dict]:
    """The argmax head along GD (Section 2's update) every ``every`` steps, per member.

    Records ‖W_Q‖_F, ‖W_K‖_F, the smallest and largest score gap, B² and Lemma 2's ratio
    λ‖W_Q‖²/B², and max_i |f(X_i)|/‖X_i‖_F against ∏‖W‖_2 (Lemma 3's first inequality with
    W_Q, W_K, W_V, w_O counted as layers).
    """
    check_positive(every, "every")
    lams = torch.as_tensor(lams, dtype=torch.float64)
    xnorm = x.flatten(1).norm(dim=1)  # ‖X_i‖_F
    rows: list[dict] = []
    p = {k: v.clone() for k, v in params.items()}
    t = 0
    while True:
        out, _ = attention_forward(p, x, query, "argmax")
        b2 = -(logistic_prime(y * out) * y * out).mean(-1)
        gaps = argmax_score_gaps(p, x, query)
        spec = [torch.linalg.matrix_norm(p[k], ord=2) for k in ("W_Q", "W_K", "W_V")]
        prod = spec[0] * spec[1] * spec[2] * p["w_O"].norm(dim=-1)
        f_scaled = (out.abs() / xnorm).amax(-1)
        for e in range(p["w_O"].shape[0]):
            fq = float(p["W_Q"][e].square().sum().sqrt())
            rows.append({
                "t": t, "lam": float(lams[e]), "fro_Q": fq,
                "fro_K": float(p["W_K"][e].square().sum().sqrt()),
                "fro_V": float(p["W_V"][e].square().sum().sqrt()),
                "fro_O": float(p["w_O"][e].square().sum().sqrt()),
                "gap_min": float(gaps[e].min()), "gap_max": float(gaps[e].max()),
                "B2": float(b2[e]), "lemma2_ratio_Q": float(lams[e]) * fq**2 / float(b2[e]),
                "f_over_x": float(f_scaled[e]), "layer_product": float(prod[e]),
            })  # fmt: skip
        if t >= steps:
            return rows
        n = min(int(every), int(steps) - t)
        p = attention_gd(p, x, y, query, "argmax", lams, eta, n)
        t += n


def argmax_jump(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    query: torch.Tensor,
    deltas: Sequence[float],
    seed: int = 0,
    zero_qk: bool = True,
) -> list[dict]:
    """At W_Q = W_K = 0 (every score ties), max_i |f(θ + δZ)(X_i) − f(θ)(X_i)| for each δ.

    Z is a seeded Gaussian direction in (W_Q, W_K); W_V, w_O stay as given. For the argmax
    head the jump does not shrink with δ (f is not locally Lipschitz there); for softmax
    it vanishes like δ². With ``zero_qk=False`` the perturbation starts from the given
    W_Q, W_K, where untied scores make the argmax head locally constant.
    """
    base = {k: v.clone() for k, v in params.items()}
    if zero_qk:
        base["W_Q"] = torch.zeros_like(base["W_Q"])
        base["W_K"] = torch.zeros_like(base["W_K"])
    gen = torch.Generator().manual_seed(seed)
    zq = torch.randn(base["W_Q"].shape, generator=gen, dtype=base["W_Q"].dtype)
    zk = torch.randn(base["W_K"].shape, generator=gen, dtype=base["W_K"].dtype)
    rows = []
    for kind in ("argmax", "softmax"):
        f0, _ = attention_forward(base, x, query, kind)
        for delta in deltas:
            check_positive(delta, "delta")
            moved = {**base, "W_Q": base["W_Q"] + delta * zq, "W_K": base["W_K"] + delta * zk}
            f1, _ = attention_forward(moved, x, query, kind)
            jump = (f1 - f0).abs().amax(-1)
            for e in range(jump.shape[0]):
                rows.append({"kind": kind, "member": e, "delta": float(delta),
                             "jump": float(jump[e]), "f_max": float(f0[e].abs().max())})
    return rows


def run_attention(spec: dict[str, Any], device, show_progress: bool = False) -> list[dict]:
    """Argmax and softmax heads trained with weight decay; Lemma 2's sides per parameter."""
    x, y, query, _ = marked_token_task(spec["n"], spec["tokens"], spec["d"], spec["seed"])
    lams = torch.tensor(spec["lams"], dtype=torch.float64)
    rows = []
    for kind in ("argmax", "softmax"):
        p0 = init_attention(len(lams), spec["d"], spec["k"], seed=spec["seed"] + 1,
                            scale=spec["init_scale"])
        pt = attention_gd(p0, x, y, query, kind, lams, spec["eta"], spec["steps"])
        _, a0 = attention_forward(p0, x, query, kind)
        _, at = attention_forward(pt, x, query, kind)
        moved = (a0 - at).abs().amax(dim=(1, 2))
        for r in attention_lemma2(pt, x, y, query, kind, lams):
            e = spec["lams"].index(r["lam"])
            r["fro_init"] = float(p0[r["param"]][e].square().sum().sqrt())
            r["attention_change"] = float(moved[e])
            r["steps"] = spec["steps"]
            r["eta"] = spec["eta"]
            rows.append(r)
    return rows


def lemma2_table(df):
    """Lemma 2 per parameter as a page prints it: λ‖W‖²/B² and the alignment residual of
    every (head, parameter) row, one column per λ."""
    wide = df.pivot_table(index=["kind", "param"], columns="lam",
                          values=["ratio", "alignment_residual"], sort=False)
    wide = wide[["ratio", "alignment_residual"]].rename(
        columns={"ratio": "λ‖W‖²/B²", "alignment_residual": "alignment residual"}, level=0)
    return wide.rename(columns=lam_label, level=1).rename_axis(index=[None, None],
                                                           columns=[None, None])


def head_table(df):
    """Per head (rows) and λ: the training error and the largest change of the attention
    weights from their initialisation (the same for every parameter row of a head)."""
    per_head = df.groupby(["kind", "lam"], sort=False)[["err", "attention_change"]].first()
    wide = per_head.unstack("lam").rename(
        columns={"err": "training error", "attention_change": "attention change"}, level=0)
    return wide.rename(columns=lam_label, level=1).rename_axis(index=None, columns=[None, None])


class AttentionExperiment(Experiment):
    """``beyond-attention``: Lemma 2 on a homogeneous (argmax) attention head, and softmax."""

    name = "beyond-attention"
    description = (
        "Chapter 12: Lemma 2's norm identity on a homogeneous (argmax) attention head "
        "trained with weight decay, and what softmax changes"
    )
    full_cost = "~5 min on a CPU (6 heads, 5e4 GD steps; theory check in float64)"

    def quick(self) -> dict[str, Any]:
        """Three λ, 128 sequences of 4 tokens, 2000 GD steps."""
        return {
            "n": 128, "tokens": 4, "d": 8, "k": 8, "seed": 0, "init_scale": 1.0,
            "lams": [0.01, 0.03, 0.1], "eta": 0.1, "steps": 2000,
        }  # fmt: skip

    def full(self) -> dict[str, Any]:
        """2000 sequences, wider heads, 5 × 10⁴ GD steps."""
        return {**self.quick(), "n": 2000, "d": 32, "k": 32, "steps": 50_000}

    def run(self, spec, device, show_progress=False):
        """Train both heads for every λ (one ensemble each) on the CPU in float64."""
        return run_attention(spec, device, show_progress)


ATTENTION = AttentionExperiment()


def beyond_attention_figure(df):
    """Chapter 12: λ‖W‖²/B² per parameter of the argmax and softmax heads (Lemma 2); one λ
    legend right of both panels."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = [lam_label(lam) for lam in sorted(df.lam.unique())]
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4), constrained_layout=True, sharey=True)
    for ax, kind in zip(axes, ("argmax", "softmax"), strict=True):
        sub = df[df.kind == kind].copy()
        sub["λ"] = sub.lam.map(lam_label)
        # one row per (head, λ, parameter): nothing to aggregate, so no error bar
        sns.barplot(data=sub, x="param", y="ratio", hue="λ", hue_order=order, errorbar=None,
                    ax=ax)
        ax.set_title(f"{kind} head")
        ax.set_xlabel("parameter")
        ax.set_ylabel(r"$\lambda\|W\|_F^2 / B^2$")
    axes[1].get_legend().remove()
    legend_right(fig, axes[0], "λ")
    return fig
