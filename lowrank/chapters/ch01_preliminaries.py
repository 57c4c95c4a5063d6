"""Chapter 1 (Section 2, Preliminaries): the figure of the logistic-loss facts.

The facts and Euler's theorem per layer are :mod:`lowrank.theory.identities`.
"""

from __future__ import annotations

import torch


def resolved_range(
    x: torch.Tensor, gap: torch.Tensor, allowance: torch.Tensor, anchor: float = 0.0
) -> tuple[float, float]:
    """The grid interval around ``anchor`` on which a computed gap RHS − LHS of a Section 2
    fact exceeds its rounding ``allowance``: outside it float64 cannot resolve the gap.

    ``x``, ``gap`` and ``allowance`` are 1-D and of one length; returns the first and last
    grid point of the run of resolved points that holds the grid point nearest ``anchor``.
    """
    if x.ndim != 1 or gap.shape != x.shape or allowance.shape != x.shape:
        raise ValueError(
            f"x, gap and allowance must be 1-D of one length, got shapes "
            f"{tuple(x.shape)}, {tuple(gap.shape)}, {tuple(allowance.shape)}"
        )
    ok = gap.abs() > allowance
    i = int((x - anchor).abs().argmin())
    if not bool(ok[i]):
        raise ValueError(f"the gap is not resolved at x = {float(x[i]):g}, next to the anchor")
    bad = (~ok).nonzero().flatten()
    left, right = bad[bad < i], bad[bad > i]
    lo = int(left.max()) + 1 if left.numel() else 0
    hi = int(right.min()) - 1 if right.numel() else x.numel() - 1
    return float(x[lo]), float(x[hi])


def logistic_facts_figure(gaps, curves, crossing: float):
    """Chapter 1: the gaps RHS − LHS of Section 2's logistic facts, and the false −xℓ' ≤ ℓ.

    ``gaps``: tidy frame (x, fact, gap); ``curves``: tidy frame (x, curve, value).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6))
    sns.lineplot(data=gaps, x="x", y="gap", hue="fact", ax=axes[0])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("RHS − LHS (log scale)")
    axes[0].set_title("the three facts hold", fontsize=11)
    sns.lineplot(data=curves, x="x", y="value", hue="curve", ax=axes[1])
    axes[1].axvline(crossing, color="grey", linestyle=":")
    axes[1].annotate(
        f"x* ≈ {crossing:.4f}", (crossing, 0.7), xytext=(crossing + 0.3, 0.7), color="grey",
        fontsize=10,
    )
    axes[1].set_title("−xℓ′ ≤ ℓ fails for x > x*", fontsize=11)
    for ax in axes:  # legends below the axes, off the curves
        ax.tick_params(labelsize=10)
        sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, title=None,
                        frameon=False, fontsize=10, handlelength=1.5, columnspacing=1.0)
    fig.tight_layout()
    return fig
