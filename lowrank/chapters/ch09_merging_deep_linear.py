"""Chapter 9 (Theorems 1-3, Lemma 5): deep linear flows, plot frames and figures.

The flows are :mod:`lowrank.core.flow`; the bounds and the quantities they bound are
:mod:`lowrank.theory.theorem2`.
"""

from __future__ import annotations

import numpy as np


def tidy(t: np.ndarray, series: dict[str, np.ndarray], **constants):
    """A long pandas frame with columns t, quantity, value (plus constant columns) for plots."""
    import pandas as pd

    frames = [pd.DataFrame({"t": t, "quantity": k, "value": v}) for k, v in series.items()]
    out = pd.concat(frames, ignore_index=True)
    for key, value in constants.items():
        out[key] = value
    return out


def deep_linear_flow_figure(lemma5_df, theorem2_df, merge_df):
    """Chapter 9: Lemma 5's two sides, Theorem 2's bound against |⟨w(t),x'⟩|, merged gap parts.

    Each frame is tidy with columns ``t``, ``quantity``, ``value`` (and ``K`` for the first two).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sns.lineplot(data=lemma5_df, x="t", y="value", hue="quantity", style="K", ax=axes[0])
    axes[0].set(title="Lemma 5: LHS against RHS", xlabel="t", ylabel="integral")
    sns.lineplot(data=theorem2_df, x="t", y="value", hue="quantity", style="K", ax=axes[1])
    axes[1].set(yscale="log", title="Theorem 2 with ε = 0", xlabel="t", ylabel="|⟨w(t), x'⟩|")
    sns.lineplot(data=merge_df, x="t", y="value", hue="quantity", ax=axes[2])
    axes[2].set(yscale="log", title="merged gap on task-1 inputs (K = 2)", xlabel="t",
                ylabel="mean absolute value")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def theorem1_gap_figure(df):
    """Chapter 9: the merged gap max_i |f_{θ+θ'}(x_i) − f_θ(x_i)| against Theorem 1's RHS, per K.

    ``df`` is tidy with columns ``t``, ``quantity``, ``value`` and ``K``; one log-scale panel per K.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    depths = sorted(df["K"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 3.8), squeeze=False)
    for ax, K in zip(axes[0], depths, strict=True):
        sns.lineplot(data=df[df["K"] == K], x="t", y="value", hue="quantity", ax=ax)
        ax.set(yscale="log", title=f"Theorem 1 with ε = 0, K = {K}", xlabel="t",
               ylabel="max over task-A inputs")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
