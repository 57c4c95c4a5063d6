"""Chapter 1 (Section 2, Preliminaries): the figure of the logistic-loss facts.

The facts and Euler's theorem per layer are :mod:`lowrank.theory.identities`.
"""

from __future__ import annotations


def logistic_facts_figure(gaps, curves, crossing: float):
    """Chapter 1: the gaps RHS − LHS of Section 2's logistic facts, and the false −xℓ' ≤ ℓ.

    ``gaps``: tidy frame (x, fact, gap); ``curves``: tidy frame (x, curve, value).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(data=gaps, x="x", y="gap", hue="fact", ax=axes[0])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("RHS − LHS (log scale)")
    axes[0].set_title("the three facts hold on [−50, 50]")
    sns.lineplot(data=curves, x="x", y="value", hue="curve", ax=axes[1])
    axes[1].axvline(crossing, color="grey", linestyle=":")
    axes[1].annotate(
        f"x* ≈ {crossing:.4f}", (crossing, 0.05), xytext=(crossing + 0.4, 0.1), color="grey"
    )
    axes[1].set_title("−xℓ′ ≤ ℓ fails for x > x*")
    fig.tight_layout()
    return fig
