"""Chapter 13's tables and figures, laid out for comparison with chapter 10's Figure 3."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry imports every chapter module: no pandas at import time
    import pandas as pd

from lowrank.book import lam_label


def eval_table(df: pd.DataFrame, split: str = "train") -> pd.DataFrame:
    """One row per (optimiser, λ, ρ, task): loss and accuracy of the individual and merged nets."""
    ev = df[(df.metric == "eval") & (df.split == split)]
    return ev.pivot_table(index=["opt", "lam", "rho", "task"], columns="model",
                          values=["loss", "acc"])


def gaps(df: pd.DataFrame, split: str = "train") -> pd.DataFrame:
    """Merged − individual loss and individual − merged accuracy per merge, mean over tasks."""
    t = eval_table(df, split)
    out = {}
    for m in ("task_arithmetic", "linear", "ties"):
        out[f"loss gap {m}"] = t[("loss", m)] - t[("loss", "individual")]
        out[f"acc drop {m}"] = t[("acc", "individual")] - t[("acc", m)]
    import pandas as pd

    return pd.DataFrame(out).groupby(level=["opt", "lam", "rho"]).mean()


def merging_figure(df: pd.DataFrame, lam_main: float, adam_lam_main: float):
    """Left: training loss of the individual and merged nets against ρ (anchored GD, λ_main);
    right: against λ at ρ = 0 for both optimisers (chapter 10's λ sweep panel)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ev = df[(df.metric == "eval") & (df.split == "train")].copy()
    ev["model"] = ev.model.str.replace("_", " ")
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6), layout="constrained", sharey=True)
    gd = ev[(ev.opt == "gd") & (ev.lam == lam_main)]
    order = ["individual", "task arithmetic", "ties", "linear"]
    sns.lineplot(data=gd, x="rho", y="loss", hue="model", hue_order=order, style="task",
                 markers=True, errorbar=None, ax=axes[0])
    axes[0].set(title=f"anchored GD, {lam_label(lam_main)}", xlabel="vocabulary overlap ρ",
                ylabel="training logistic loss", yscale="log")
    sweep = ev[ev.rho == 0.0].copy()
    sweep["fine-tuning"] = [f"{o}, {lam_label(lam)}" for o, lam in zip(sweep.opt, sweep.lam,
                                                                          strict=True)]
    sns.barplot(data=sweep, x="fine-tuning", y="loss", hue="model", hue_order=order,
                errorbar=None, ax=axes[1])
    axes[1].set(title="ρ = 0: λ and optimiser", xlabel="", yscale="log")
    axes[1].tick_params(axis="x", labelrotation=20, labelsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        ax.get_legend().remove()
    keep = [(h, lab) for h, lab in zip(handles, labels, strict=True) if lab not in ("model",
                                                                                    "task")]
    fig.legend([h for h, _ in keep], [lab if lab not in "AB" else f"task {lab}"
                                      for _, lab in keep],
               loc="outside lower center", ncol=6, fontsize=9, frameon=False)
    return fig


def mechanism_figure(df: pd.DataFrame, lam_main: float):
    """Left: mean |cos| between task A's and B's word-token inputs to every layer at θ₀, by ρ;
    right: leak ‖τ_B x_A‖ against signal ‖τ_A x_A‖ in the first fine-tuned Q, K, V."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4), layout="constrained")
    ov = df[(df.metric == "overlap") & (df.when == "θ₀") & (df.opt == "gd")
            & (df.lam == lam_main)].copy()
    ov["input of"] = ov.site.map({"in": "Q, K, V", "ffn_in": "M1"})
    ov["ρ"] = ov.rho.map("{:g}".format)
    sns.lineplot(data=ov, x="layer", y="cos_mean_words", hue="ρ", style="input of",
                 markers=True, errorbar=None, ax=axes[0])
    axes[0].set(title="input overlap at θ₀ (word tokens)", xlabel="layer",
                ylabel="mean |cos| between tasks")
    axes[0].legend(fontsize=8, ncol=2, loc="lower right", frameon=False)
    lr = df[df.metric == "leak_ratio"].copy()
    lr["fine-tuning"] = [f"{o}, {lam_label(lam)}, ρ={r:g}"
                         for o, lam, r in zip(lr.opt, lr.lam, lr.rho, strict=True)]
    sns.barplot(data=lr, y="fine-tuning", x="value", hue="role", errorbar=None, ax=axes[1])
    axes[1].axvline(1.0, color="0.3", lw=1, ls=":")
    axes[1].set(title="leak / signal, first fine-tuned layer", ylabel="",
                xlabel=r"mean $\|\tau_B x_A\|$ / mean $\|\tau_A x_A\|$")
    axes[1].tick_params(axis="y", labelsize=9)
    axes[1].legend(fontsize=8, title="role", title_fontsize=8, loc="lower right")
    return fig


def stable_rank_figure(df: pd.DataFrame):
    """Stable rank ‖τ‖_F/‖τ‖₂ of the task vectors by role (chapter 6's roles), by λ."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sr = df[(df.metric == "stable_rank") & (df.task.isin(["A", "B0"]))].copy()
    sr["fine-tuning"] = [f"{o}, {lam_label(lam)}" for o, lam in zip(sr.opt, sr.lam, strict=True)]
    fig, ax = plt.subplots(figsize=(7.0, 3.2), layout="constrained")
    sns.barplot(data=sr, x="role", y="value", hue="fine-tuning",
                order=["Q", "K", "V", "O", "M1", "M2"], errorbar=None, ax=ax)
    ax.set(ylabel=r"stable rank $\|\tau\|_F / \|\tau\|_2$",
           xlabel="role (mean over the fine-tuned layers)",
           title="task vectors τ of tasks A and B (ρ = 0), mean over the two")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig
