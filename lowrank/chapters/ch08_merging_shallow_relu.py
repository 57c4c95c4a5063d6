"""Chapter 8 (Lemma 4, Appendix C.2): the shallow ReLU net of Eq. (3) on two tasks.

‖W_t x'‖ against Lemma 4's bound, the function gap and the merged loss against Appendix
C.2's bound, per step, λ and side (:func:`lemma4_check`), and their figures. The model is
:func:`lowrank.core.models.shallow_net`, trained by :func:`lowrank.core.engine.shallow_gd`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lowrank.core.checks import check_positive
from lowrank.core.engine import shallow_gd
from lowrank.core.losses import empirical_loss
from lowrank.core.models import shallow_forward
from lowrank.data.synthetic import TaskPair
from lowrank.theory.lemma4 import decay_bound_any_step, lemma4_bound, merged_loss_bound


def _cross_norms(traj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """‖W_t x‖ for every step, member and input: shape (T+1, ..., n)."""
    return torch.matmul(x, traj.transpose(-1, -2)).norm(dim=-1)


def lemma4_check(
    pair: TaskPair,
    u: torch.Tensor,
    w0_first: torch.Tensor,
    w0_second: torch.Tensor,
    lams: Sequence[float],
    eta: float,
    steps: int,
    every: int = 1,
    allow_large_step: bool = False,
    corrected: bool = False,
) -> list[dict[str, Any]]:
    """Lemma 4 and Appendix C.2 measured against their bounds, per step, λ and side.

    Trains W on ``pair.first`` and W' on ``pair.second`` (one member per λ) and,
    for each side (the net evaluated on the other task's inputs), records the
    smallest slack of: Lemma 4's ‖W_t x'‖ bound; its per-neuron form
    |⟨w_{j,t}, x'⟩| ≤ |⟨w_{j,0}, x'⟩|(1−ηλ)^t + ε|u_j|(1−(1−ηλ)^t)/λ; the function gap
    |f_{W+W'}(x) − f_W(x)| ≤ ‖W'x‖; and the loss bound L(θ+θ') ≤ L(θ) + (1/n)Σ‖W'x_i‖.
    With ``corrected`` the two Lemma 4 bounds use |1−ηλ| (valid for every ηλ).
    """
    lam_list = [float(v) for v in lams]
    if not lam_list:
        raise ValueError("lams must list at least one weight decay strength")
    if w0_first.shape != w0_second.shape or w0_first.ndim != 2:
        raise ValueError(
            f"w0_first and w0_second must both have shape (m, d), got "
            f"{tuple(w0_first.shape)} and {tuple(w0_second.shape)}"
        )
    check_positive(every, "every")
    E = len(lam_list)
    trajs = {}
    for side, task, w0 in (("first", pair.first, w0_first), ("second", pair.second, w0_second)):
        start = w0.expand(E, *w0.shape).clone()
        trajs[side] = shallow_gd(start, u, task.x, task.y, lam_list, eta, steps)
    kept = list(range(0, steps + 1, int(every)))
    if kept[-1] != steps:
        kept.append(steps)
    t = torch.tensor(kept)
    rows: list[dict[str, Any]] = []
    for own, other, own_task in (("first", "second", pair.first), ("second", "first", pair.second)):
        w_own, w_other = trajs[own][t], trajs[other][t]  # (T', E, m, d)
        x_own = own_task.x
        # Lemma 4 for the other net on this task's inputs: ‖W'_t x‖ against its bound
        cross = _cross_norms(w_other, x_own)  # (T', E, n)
        cross0 = _cross_norms(trajs[other][:1], x_own)[0]  # (E, n)
        row_pre = torch.matmul(x_own, w_other.transpose(-1, -2)).abs()  # (T', E, n, m)
        row_pre0 = torch.matmul(x_own, trajs[other][0].transpose(-1, -2)).abs()  # (E, n, m)
        # the merged net on this task, against the net trained on it
        f_own = shallow_forward(w_own.reshape(-1, *w_own.shape[-2:]), u, x_own)
        f_merged = shallow_forward((w_own + w_other).reshape(-1, *w_own.shape[-2:]), u, x_own)
        gap = (f_merged - f_own).abs().reshape(len(kept), E, -1)
        loss_own = empirical_loss(own_task.y * f_own).reshape(len(kept), E)
        loss_merged = empirical_loss(own_task.y * f_merged).reshape(len(kept), E)
        loss_bound = merged_loss_bound(loss_own, cross)
        for e, lam in enumerate(lam_list):
            tt = t.unsqueeze(1)
            if corrected:
                bound = decay_bound_any_step(cross0[e], pair.eps, lam, eta, tt)
                row_bound = decay_bound_any_step(
                    row_pre0[e], pair.eps * u.abs(), lam, eta, t.view(-1, 1, 1)
                )
            else:
                bound = lemma4_bound(cross0[e], pair.eps, lam, eta, tt, allow_large_step)
                row_bound = lemma4_bound(
                    row_pre0[e], pair.eps * u.abs(), lam, eta, t.view(-1, 1, 1), allow_large_step
                )
            for k, step in enumerate(kept):
                rows.append(
                    {
                        "side": own,
                        "eps": pair.eps,
                        "lam": lam,
                        "eta": eta,
                        "step": step,
                        "norm_max": float(cross[k, e].max()),
                        "norm_bound_max": float(bound[k].max()),
                        "norm_slack": float((bound[k] - cross[k, e]).min()),
                        "norm_ratio": float((cross[k, e] / bound[k]).max()),
                        "row_slack": float((row_bound[k] - row_pre[k, e]).min()),
                        "gap_max": float(gap[k, e].max()),
                        "gap_slack": float((cross[k, e] - gap[k, e]).min()),
                        "loss_own": float(loss_own[k, e]),
                        "loss_merged": float(loss_merged[k, e]),
                        "loss_bound": float(loss_bound[k, e]),
                        "loss_slack": float(loss_bound[k, e] - loss_merged[k, e]),
                    }
                )
    return rows


def _measured_and_bound(sub, by: str):
    """``sub``'s max ‖W_t x'‖ and Lemma 4's bound as long rows (step, ``by``, quantity, value)."""
    long = sub.melt(
        id_vars=["step", by], value_vars=["norm_max", "norm_bound_max"],
        var_name="quantity", value_name="value",
    )
    long["quantity"] = long["quantity"].map({"norm_max": "measured", "norm_bound_max": "bound"})
    return long


def _legend_outside(fig, ax, **kw) -> None:
    """Move ``ax``'s legend outside the axes, beside the figure (it covers no curve there)."""
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    fig.legend(handles, labels, fontsize=9, **{"loc": "outside right center", **kw})


def lemma4_norm_figure(df, lam: float):
    """Chapter 8: max ‖W_t x'‖ against Lemma 4's bound over t (left) and their ratio (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = df[(df["lam"] == lam) & (df["side"] == "first")]
    long = _measured_and_bound(sub, "eps")
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.3, 3.4), constrained_layout=True)
    sns.lineplot(
        data=long.rename(columns={"eps": "ε"}), x="step", y="value", hue="ε",
        style="quantity", ax=left, palette="viridis", style_order=["measured", "bound"],
        legend=False,
    )
    left.set_yscale("log")
    left.set_ylabel(r"$\max_{x'} \|W_t x'\|$ and its bound")
    left.set_title(rf"$\lambda = {lam:g}$", fontsize=11)
    sns.lineplot(
        data=sub[sub["step"] > 0].rename(columns={"eps": "ε"}), x="step", y="norm_ratio",
        hue="ε", ax=right, palette="viridis",
    )
    right.set_ylim(0, 1.05)
    right.set_ylabel(r"$\max_{x'}\ \|W_t x'\|$ / bound")
    right.set_title("tightness (1 = attained)", fontsize=11)
    for ax in (left, right):
        ax.set_xlabel("GD step t")
    _legend_outside(fig, right, title="ε\n(dashed:\nbound)")
    return fig


def lemma4_lambda_figure(df, eps: float):
    """Chapter 8: max ‖W_t x'‖ (solid) and Lemma 4's bound (dashed) for each λ at one ε."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = _measured_and_bound(df[(df["eps"] == eps) & (df["side"] == "first")], "lam")
    long["λ"] = long["lam"].map(lambda v: f"{v:g}")
    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    sns.lineplot(
        data=long, x="step", y="value", hue="λ", style="quantity", ax=ax,
        style_order=["measured", "bound"],
    )
    ax.set_yscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel(r"$\max_{x'} \|W_t x'\|$")
    ax.set_title(rf"$\varepsilon = {eps:g}$: weight decay removes the initial term", fontsize=11)
    _legend_outside(fig, ax)
    return fig


def merged_loss_figure(df, eps: float):
    """Chapter 8: L(θ_t), L(θ_t + θ'_t) and the bound L(θ_t) + (1/n)Σ‖W'_t x_i‖, per λ."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = df[(df["eps"] == eps) & (df["side"] == "first")]
    names = {"loss_own": "L(θ_t)", "loss_merged": "L(θ_t + θ'_t)", "loss_bound": "bound"}
    long = sub.melt(
        id_vars=["step", "lam"], value_vars=list(names), var_name="quantity", value_name="loss"
    )
    long["quantity"] = long["quantity"].map(names)
    lams = sorted(sub["lam"].unique())
    fig, axes = plt.subplots(1, len(lams), figsize=(7.3, 3.3), sharey=True,
                             constrained_layout=True, squeeze=False)
    axes = list(axes[0])
    for ax, lam in zip(axes, lams, strict=True):
        sns.lineplot(
            data=long[long["lam"] == lam], x="step", y="loss", hue="quantity",
            style="quantity", ax=ax, legend=ax is axes[-1],
        )
        ax.set_title(rf"$\lambda = {lam:g}$, $\varepsilon = {eps:g}$", fontsize=11)
        ax.set_xlabel("GD step t")
    _legend_outside(fig, axes[-1], loc="outside lower center", ncol=len(names))
    return fig
