"""Chapter 7 (Section 4's linear warm-up): |⟨θ_t, x'⟩| on the other task against its bound.

The GD loop is :func:`lowrank.core.engine.linear_gd`; the bound and the unrolled-GD identity
are :mod:`lowrank.theory.lemma4`.
"""

from __future__ import annotations

from typing import Any

import torch

from lowrank.core.engine import linear_gd
from lowrank.data.synthetic import TaskPair
from lowrank.theory.lemma4 import unrolled_theta, warmup_alphas, warmup_bound


def warmup_check(
    pair: TaskPair,
    theta0: torch.Tensor,
    lam: float,
    eta: float,
    steps: int,
    allow_large_step: bool = False,
) -> dict[str, Any]:
    """Trains on ``pair.first`` and measures |⟨θ_t, x'⟩| on ``pair.second`` against the bound.

    Returns the trajectory, the α identity's relative residual and, per step,
    the largest overlap, the largest bound and the smallest slack over x'.
    """
    x, y = pair.first.x, pair.first.y
    thetas = linear_gd(theta0, x, y, lam, eta, steps)
    alphas = warmup_alphas(thetas, x, y, lam, eta)
    residual = (thetas - unrolled_theta(theta0, x, alphas, lam, eta)).abs().max()
    scale = thetas.abs().max()
    overlap = (thetas @ pair.second.x.T).abs()  # (T+1, n')
    t = torch.arange(steps + 1).unsqueeze(1)
    init = (pair.second.x @ theta0).abs().unsqueeze(0)
    bound = warmup_bound(init, pair.eps, lam, eta, t, allow_large_step=allow_large_step)
    return {
        "thetas": thetas,
        "alphas": alphas,
        "identity_residual": float(residual / scale),
        "overlap": overlap,
        "bound": bound,
        "min_slack": float((bound - overlap).min()),
    }


def warmup_rows(result: dict[str, Any], eps: float, overlap: str) -> list[dict[str, Any]]:
    """Tidy rows of :func:`warmup_check`: per step, max_x' |⟨θ_t, x'⟩| and the largest bound."""
    measured = result["overlap"].max(dim=1).values.tolist()
    bound = result["bound"].max(dim=1).values.tolist()
    rows = []
    for step, (m, b) in enumerate(zip(measured, bound, strict=True)):
        for quantity, value in (("measured", m), ("bound", b)):
            rows.append(
                {"step": step, "eps": eps, "overlap": overlap, "quantity": quantity, "value": value}
            )
    return rows


def warmup_bound_figure(df):
    """Chapter 7: max_x' |⟨θ_t, x'⟩| (solid) under the warm-up bound (dashed), per ε and mode."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    modes = list(dict.fromkeys(df["overlap"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(7.3, 3.4), sharey=True,
                             constrained_layout=True, squeeze=False)
    axes = list(axes[0])
    for ax, mode in zip(axes, modes, strict=True):
        sub = df[df["overlap"] == mode]
        sns.lineplot(
            data=sub.rename(columns={"eps": "ε"}), x="step", y="value", hue="ε",
            style="quantity", ax=ax, palette="viridis", style_order=["measured", "bound"],
            legend=ax is axes[-1],
        )
        ax.set_yscale("log")
        ax.set_title(f"overlap mode: {mode}", fontsize=11)
        ax.set_xlabel("GD step t")
        ax.set_ylabel(r"$\max_{x'} |\langle \theta_t, x'\rangle|$ and its bound")
    handles, labels = axes[-1].get_legend_handles_labels()
    axes[-1].get_legend().remove()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    return fig
