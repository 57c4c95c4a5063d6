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


def decay_rate(t: np.ndarray, values: np.ndarray, last: int = 100) -> float:
    """−d log|v|/dt fitted over the last ``last`` samples (a straight line in log scale): the
    rate at which ⟨w(t), x'⟩ decays in Theorem 2 (λK as printed, λ at a nonzero limit)."""
    if len(t) != len(values) or not 2 <= last <= len(t):
        raise ValueError(f"need 2 <= last <= len(t) == len(values), got last={last}, "
                         f"{len(t)} times and {len(values)} values")
    return float(-np.polyfit(t[-last:], np.log(np.abs(values[-last:])), 1)[0])


def _series_legend(ax, ncol: int) -> None:
    """The seaborn legend under the axes (it covers no curve), without its hue/style titles."""
    pairs = [(h, lab) for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)
             if lab not in ("quantity", "K")]
    ax.legend(*zip(*pairs, strict=True), loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=ncol, fontsize=9, frameon=False, columnspacing=1.0)


def deep_linear_flow_figure(lemma5_df, theorem2_df):
    """Chapter 9: Lemma 5's two sides, and Theorem 2's bound against |⟨w(t),x'⟩| (ε = 0).

    Each frame is tidy with columns ``t``, ``quantity``, ``value`` and ``K``.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.6), layout="constrained")
    sns.lineplot(data=lemma5_df, x="t", y="value", hue="quantity", style="K", ax=axes[0])
    axes[0].set(title="Lemma 5: LHS against RHS", xlabel="t", ylabel="integral")
    sns.lineplot(data=theorem2_df, x="t", y="value", hue="quantity", style="K", ax=axes[1])
    axes[1].set(yscale="log", title="Theorem 2 with ε = 0", xlabel="t", ylabel="|⟨w(t), x'⟩|")
    for ax in axes:
        _series_legend(ax, ncol=2)
    return fig


def merged_gap_figure(merge_df):
    """Chapter 9: the parts of the merged K = 2 network's gap on task-1 inputs, against t.

    ``merge_df`` is tidy with columns ``t``, ``quantity`` and ``value``.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.0, 3.8), layout="constrained")
    sns.lineplot(data=merge_df, x="t", y="value", hue="quantity", ax=ax)
    ax.set(yscale="log", title="merged gap on task-1 inputs (K = 2)", xlabel="t",
           ylabel="mean absolute value")
    _series_legend(ax, ncol=2)
    return fig


def theorem1_gap_figure(df):
    """Chapter 9: the merged gap max_i |f_{θ+θ'}(x_i) − f_θ(x_i)| against Theorem 1's RHS, per K.

    ``df`` is tidy with columns ``t``, ``quantity``, ``value`` and ``K``; one log-scale panel per
    K, one legend under them all.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    depths = sorted(df["K"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(7.2, 3.3), squeeze=False,
                             layout="constrained")
    fig.suptitle("Theorem 1 with ε = 0: merged gap against the right-hand side")
    for ax, K in zip(axes[0], depths, strict=True):
        sns.lineplot(data=df[df["K"] == K], x="t", y="value", hue="quantity", ax=ax,
                     legend=ax is axes[0, 0])
        ax.set(yscale="log", title=f"K = {K}", xlabel="t",
               ylabel="max over task-1 inputs" if ax is axes[0, 0] else None)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[0, 0].get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    return fig
