"""Seaborn figures for the chapters: one function per figure, all on a white face.

Imports matplotlib and seaborn lazily so that the core stays torch + numpy only.
"""

from __future__ import annotations


def book_style() -> None:
    """Seaborn's whitegrid theme with white figure faces, readable in dark mode too."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.facecolor": "white",
            "axes.facecolor": "white",
            "savefig.facecolor": "white",
            "figure.dpi": 100,
            "figure.autolayout": False,
        }
    )


def transformer_spectra(df, title: str = "", baseline: dict | None = None):
    """Figures 1 and 4: stable rank ‖W‖_F/‖W‖_2 and Frobenius norm per layer, by role.

    ``df`` holds tidy rows of ``lowrank.spectra.analyse``; ``baseline`` optionally maps a
    role to the stable rank of a Gaussian matrix of its shape, drawn as dotted lines.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    roles = [r for r in ("Q", "K", "V", "O", "QKV", "M1", "M2") if r in set(df["role"])]
    palette = dict(zip(roles, sns.color_palette("colorblind", len(roles)), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
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
    fig.legend(handles, labels, loc="outside right center", title="role")
    if title:
        fig.suptitle(title)
    return fig


def _lam_label(lam: float) -> str:
    return "λ = 0" if lam == 0 else f"λ = {lam:g}"


def merging_figure3(df, lam_main: float):
    """Figure 3: merged vs individual loss (different/same task), λ sweep, stable ranks."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
    loss = df[df.metric == "loss"]
    main = loss[loss.lam == lam_main]
    for ax, setting, title in zip(
        axes[0], ("different", "same"), ("different tasks (orthogonal inputs)", "same task"),
        strict=True,
    ):
        sns.lineplot(data=main[main.setting == setting], x="step", y="value", hue="model",
                     style="task", errorbar="sd", ax=ax)
        ax.set(title=f"{title}, {_lam_label(lam_main)}", xlabel="GD step",
               ylabel="training logistic loss", yscale="log")
    sweep = loss[loss.setting == "different"].copy()
    sweep["λ"] = sweep.lam.map(_lam_label)
    sns.lineplot(data=sweep, x="step", y="value", hue="λ", style="model", errorbar="sd",
                 ax=axes[1, 0])
    axes[1, 0].set(title="different tasks: λ sweep", xlabel="GD step",
                   ylabel="training logistic loss", yscale="log")
    sr = df[(df.metric == "stable_rank") & (df.setting == "different") & (df.lam == lam_main)]
    sr = sr.assign(matrix="W" + sr.layer.astype(int).astype(str))
    sns.lineplot(data=sr, x="step", y="value", hue="matrix", style="model", errorbar="sd",
                 ax=axes[1, 1])
    axes[1, 1].set(title=rf"stable rank $\|W\|_F/\|W\|_2$, different tasks, {_lam_label(lam_main)}",
                   xlabel="GD step", ylabel="stable rank")
    return fig


def merging_figure5(df):
    """Figure 5 (Appendix D.2): held-out misclassification error, individual vs merged."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained", sharey=True)
    err = df[df.metric == "test_error"]
    for ax, setting, title in zip(
        axes, ("different", "same"), ("different tasks (orthogonal inputs)", "same task"),
        strict=True,
    ):
        sns.lineplot(data=err[err.setting == setting], x="step", y="value", hue="model",
                     style="task", errorbar="sd", ax=ax)
        ax.set(title=title, xlabel="GD step", ylabel="held-out misclassification error")
    return fig


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


# --- Chapters 3 and 4: Lemma 1 (rank one) and Lemma 2 (norm preservation) ---------------


def lemma1_layer_spectra(df):
    """Top singular values of every layer of the λ > 0 member 0 over GD steps (Lemma 1)."""
    import seaborn as sns

    data = df[(df["lam"] > 0) & (df["member"] == 0)].copy()
    data["σ index"] = data["index"].map(lambda j: f"σ{j}")
    g = sns.relplot(
        data=data, x="step", y="sigma", hue="σ index", row="K", col="layer", kind="line",
        height=1.9, aspect=1.2, facet_kws={"margin_titles": True},
    )
    g.set(yscale="log")
    g.set_axis_labels("GD step", "singular value")
    g.figure.suptitle("Singular values of W_k during GD with weight decay", y=1.02)
    return g


def lemma1_sigma_ratio(df):
    """σ₂/σ₁ of every layer and member over GD steps, with and without weight decay (Lemma 1)."""
    import seaborn as sns

    data = df[df["index"] == 1].copy()
    data["λ"] = data["lam"].map(lambda v: f"λ = {v:g}")
    data["curve"] = data["member"].astype(str) + "-" + data["layer"].astype(str)
    g = sns.relplot(
        data=data, x="step", y="ratio", hue="λ", units="curve", estimator=None, col="K",
        kind="line", height=2.6, aspect=1.1, alpha=0.8,
    )
    g.set(yscale="log")
    g.set_axis_labels("GD step", "σ₂/σ₁ of W_k")
    return g


def lemma2_sides_bars(df):
    """Both sides of Lemma 2 per layer at the end of training, one panel per activation."""
    import seaborn as sns

    long = df.melt(
        id_vars=["activation", "layer", "member"], value_vars=["lhs", "rhs"],
        var_name="side", value_name="value",
    )
    long["side"] = long["side"].map(
        {"lhs": "λ‖W_k‖²", "rhs": "H^{K−k} B²"}
    )
    g = sns.catplot(
        data=long, x="layer", y="value", hue="side", col="activation", kind="bar",
        errorbar=None, height=2.8, aspect=1.0, sharey=False,
    )
    g.set_axis_labels("layer k", "value")
    return g


def lemma2_gap_trajectory(df):
    """Lemma 2's relative gap and the per-layer alignment residual along GD (member 0)."""
    import seaborn as sns

    data = df[df["member"] == 0].melt(
        id_vars=["step", "activation", "layer"], value_vars=["gap", "residual"],
        var_name="quantity", value_name="value",
    )
    data["layer"] = data["layer"].map(lambda k: f"W_{k}")
    g = sns.relplot(
        data=data, x="step", y="value", hue="layer", style="quantity", col="activation",
        kind="line", height=2.8, aspect=1.1, facet_kws={"sharex": False},
    )
    g.set(yscale="log")
    g.set_axis_labels("GD step", "relative gap / residual")
    return g


# --- chapters 7-8: the linear warm-up and Lemma 4 ------------------------------------


def warmup_bound_figure(df):
    """Chapter 7: max_x' |⟨θ_t, x'⟩| (solid) under the warm-up bound (dashed), per ε and mode."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    modes = list(dict.fromkeys(df["overlap"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 3.8), sharey=True)
    axes = [axes] if len(modes) == 1 else list(axes)
    for ax, mode in zip(axes, modes, strict=True):
        sub = df[df["overlap"] == mode]
        sns.lineplot(
            data=sub.rename(columns={"eps": "ε"}), x="step", y="value", hue="ε",
            style="quantity", ax=ax, palette="viridis", style_order=["measured", "bound"],
            legend=ax is axes[-1],
        )
        ax.set_yscale("log")
        ax.set_title(f"overlap mode: {mode}")
        ax.set_xlabel("GD step t")
        ax.set_ylabel(r"$\max_{x'} |\langle \theta_t, x'\rangle|$ and its bound")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.tight_layout()
    return fig


def lemma4_norm_figure(df, lam: float):
    """Chapter 8: max ‖W_t x'‖ against Lemma 4's bound over t (left) and their ratio (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = df[(df["lam"] == lam) & (df["side"] == "first")]
    long = sub.melt(
        id_vars=["step", "eps"], value_vars=["norm_max", "norm_bound_max"],
        var_name="quantity", value_name="value",
    )
    long["quantity"] = long["quantity"].map({"norm_max": "measured", "norm_bound_max": "bound"})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    sns.lineplot(
        data=long.rename(columns={"eps": "ε"}), x="step", y="value", hue="ε",
        style="quantity", ax=left, palette="viridis", style_order=["measured", "bound"],
        legend=False,
    )
    left.set_yscale("log")
    left.set_ylabel(r"$\max_{x'} \|W_t x'\|$ and Lemma 4's bound")
    left.set_title(rf"$\lambda = {lam:g}$")
    sns.lineplot(
        data=sub[sub["step"] > 0].rename(columns={"eps": "ε"}), x="step", y="norm_ratio",
        hue="ε", ax=right, palette="viridis",
    )
    right.set_ylim(0, 1.05)
    right.set_ylabel(r"$\max_{x'}\ \|W_t x'\|$ / bound")
    right.set_title("tightness (1 = attained)")
    for ax in (left, right):
        ax.set_xlabel("GD step t")
    right.legend(title="ε (dashed: bound)", fontsize="small", loc="upper left",
                 bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


def lemma4_lambda_figure(df, eps: float):
    """Chapter 8: max ‖W_t x'‖ (solid) and Lemma 4's bound (dashed) for each λ at one ε."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = df[(df["eps"] == eps) & (df["side"] == "first")]
    long = sub.melt(
        id_vars=["step", "lam"], value_vars=["norm_max", "norm_bound_max"],
        var_name="quantity", value_name="value",
    )
    long["quantity"] = long["quantity"].map({"norm_max": "measured", "norm_bound_max": "bound"})
    long["λ"] = long["lam"].map(lambda v: f"{v:g}")
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    sns.lineplot(
        data=long, x="step", y="value", hue="λ", style="quantity", ax=ax,
        style_order=["measured", "bound"],
    )
    ax.set_yscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel(r"$\max_{x'} \|W_t x'\|$")
    ax.set_title(rf"$\varepsilon = {eps:g}$: weight decay removes the initial term")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
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
    fig, axes = plt.subplots(1, len(lams), figsize=(3.8 * len(lams), 3.6), sharey=True)
    axes = [axes] if len(lams) == 1 else list(axes)
    for ax, lam in zip(axes, lams, strict=True):
        sns.lineplot(
            data=long[long["lam"] == lam], x="step", y="loss", hue="quantity",
            style="quantity", ax=ax, legend=ax is axes[-1],
        )
        ax.set_title(rf"$\lambda = {lam:g}$, $\varepsilon = {eps:g}$")
        ax.set_xlabel("GD step t")
    axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


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


def alignment_figure(history):
    """Chapter 2: Eq. (2)'s residual and cos(W_k, −∇_{W_k}L) per layer along GD, per activation.

    ``history``: tidy frame (activation, step, layer, residual, cosine).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = history.assign(one_minus_cos=(1 - history["cosine"]).clip(lower=1e-17))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(
        data=frame, x="step", y="residual", hue="activation", style="layer", ax=axes[0]
    )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("‖λW_k + ∇_{W_k}L‖ / ‖λW_k‖")
    sns.lineplot(
        data=frame, x="step", y="one_minus_cos", hue="activation", style="layer", ax=axes[1],
        legend=False,
    )
    axes[1].set_yscale("log")
    axes[1].set_ylabel("1 − cos(W_k, −∇_{W_k}L)")
    fig.tight_layout()
    return fig


def fashion_merging(df, lam: float):
    """Figure 6 (Appendix D.2): losses of individual and merged nets, λ sweep, stable ranks."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    base = df[df.init_scale == df.init_scale.min()]
    train = base[(base.split == "train") & (base.metric == "loss")]
    at = train[train.lam == lam].copy()
    at["curve"] = at.net + " on " + at.data
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = (
        (axes[0, 0], ["task1", "task2", "merged"], "different tasks: task1 + task2"),
        (axes[0, 1], ["task1", "same", "merged_same"], "same task: task1 + same"),
    )
    for ax, nets, title in panels:
        sel = at[at.net.isin(nets)]
        sns.lineplot(data=sel, x="step", y="value", hue="curve", errorbar=("pi", 100), ax=ax)
        ax.set(yscale="log", ylabel="training loss", title=f"{title} (λ = {lam:g})")
        ax.legend(fontsize="small")
    last = train[train.step == train.step.max()].copy()
    last["net kind"] = last.net.map(
        {"task1": "individual", "task2": "individual", "same": "individual",
         "merged": "merged, different tasks", "merged_same": "merged, same task"}
    )
    sns.pointplot(data=last, x="lam", y="value", hue="net kind", errorbar=("pi", 100), dodge=0.3,
                  ax=axes[1, 0])
    axes[1, 0].set(yscale="log", xlabel="λ", ylabel="final training loss",
                   title="λ sweep (last step)")
    sr = df[(df.metric == "stable_rank") & (df.lam == lam) & (df.layer < df.layer.max())
            & df.net.isin(["task1", "task2", "merged"]) & (df.init_scale == df.init_scale.min())]
    sr = sr.assign(curve=sr.net + ", W_" + sr.layer.astype(str))
    sns.lineplot(data=sr, x="step", y="value", hue="curve", errorbar=("pi", 100), ax=axes[1, 1])
    axes[1, 1].set(ylabel="stable rank ‖W‖_F/‖W‖_2", title=f"stable ranks (λ = {lam:g})")
    axes[1, 1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def lemma3_slack(df):
    """Chapter 5: Lemma 3's LHS/RHS at GD limits against λ, by depth K and degree H."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = df[df["slack"].notna()].assign(
        net=lambda d: "K=" + d["K"].astype(str) + ", H=" + d["H"].astype(str)
    )
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sns.scatterplot(data=data, x="lam", y="slack", hue="K", style="H", s=60, ax=ax,
                    palette="colorblind")
    ax.axhline(1.0, color="0.3", ls="--", lw=1, label="LHS = RHS")
    ax.set(xscale="log", yscale="log", xlabel=r"$\lambda$",
           ylabel="Lemma 3: LHS / RHS", title="Lemma 3 at stationary points (non-zero)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def remark1_proxy(curves, collapse):
    """Chapter 5: g_−(r) − ln 2 around the threshold (left) and where GD ends (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.lineplot(data=curves, x="r", y="gap", hue="lam_over_threshold", ax=axes[0],
                 palette="viridis")
    axes[0].axhline(0.0, color="0.3", lw=1)
    axes[0].set(xlabel=r"$r = \|\theta\|$", ylabel=r"$g_-(r) - \ln 2$",
                title=r"Remark 1's proxy, $K = 3$")
    axes[0].legend(title=r"$\lambda/\lambda^*$", fontsize=8)
    data = collapse.assign(out=collapse["max_abs_output"].clip(lower=1e-30))
    sns.scatterplot(data=data, x="fraction", y="out", hue="K", style="start_scale", s=60,
                    ax=axes[1], palette="colorblind")
    axes[1].axvline(1.0, color="0.3", ls="--", lw=1)
    axes[1].set(xscale="log", yscale="log", xlabel=r"$\lambda / \lambda^*(K)$",
                ylabel=r"$\max_i |f_\theta(x_i)|$ after GD", title="GD: collapse to θ = 0")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def figure2(df):
    """Figure 2: average inverse stable rank, errors and loss against λ (mean ± sd over seeds)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = [("inv_stable_rank", "avg. inverse stable rank\n(non-collapsed members)"),
              ("class_error", "classification error"),
              ("margin_error", r"margin error ($y f < 1$)"), ("loss", "average loss")]
    freqs = sorted(df["frequency"].unique())
    fig, axes = plt.subplots(len(freqs), len(panels), figsize=(13, 3.1 * len(freqs)),
                             squeeze=False)
    for i, a in enumerate(freqs):
        sub = df[df["frequency"] == a]
        collapsed = sub.loc[sub["collapsed"].astype(bool), "lam"]
        for j, (col, label) in enumerate(panels):
            ax = axes[i, j]
            # Collapsed members' stable ranks are those of vanishing weights: left out.
            shown = sub[~sub["collapsed"].astype(bool)] if j == 0 else sub
            sns.lineplot(data=shown, x="lam", y=col, errorbar="sd", marker="o", ax=ax)
            if len(collapsed):
                ax.axvspan(collapsed.min(), sub["lam"].max(), color="0.85", zorder=0,
                           label="a member collapsed to 0")
            ax.set(xscale="log", xlabel=r"$\lambda$", ylabel=label)
            ax.set_title(rf"$f^*(x) = \sin({a:g}\, W^\top x)$", fontsize=10)
        axes[i, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def beyond_overlap_figure(summary, shallow_rows, keep: float = 0.8):
    """Chapter 12: retained fraction R against ε, and the shallow net's ‖W'_t x‖ vs Lemma 4."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    sns.lineplot(data=summary, x="eps", y="retained", hue="model", style="geometry",
                 markers=True, ax=axes[0])
    axes[0].axhline(keep, color="grey", ls=":", lw=1)
    axes[0].set_ylim(-0.5, 1.1)
    axes[0].set_xlabel("cross-task overlap ε")
    axes[0].set_ylabel("retained fraction R")
    rows = shallow_rows.groupby(["geometry", "eps"], as_index=False)[
        ["leak_max", "init_term_max", "eps_term"]
    ].mean()
    rows["bound"] = rows.init_term_max + rows.eps_term
    sns.lineplot(data=rows, x="eps", y="leak_max", hue="geometry", marker="o", ax=axes[1])
    sns.lineplot(data=rows, x="eps", y="bound", color="black", ls="--", ax=axes[1],
                 label="Lemma 4 bound")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("cross-task overlap ε")
    axes[1].set_ylabel(r"shallow net: $\max_i \|W'_t x_i\|$")
    return fig


def beyond_ktasks_figure(df):
    """Chapter 12: loss of the sum of k nets on each of its k tasks, against k, per width."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    long = df.melt(id_vars=["width", "k"], value_vars=["loss_individual", "loss_merged"],
                   var_name="model", value_name="loss")
    long["model"] = long.model.str.replace("loss_", "")
    sns.lineplot(data=long, x="k", y="loss", hue="width", style="model", markers=True,
                 palette="colorblind", ax=ax)
    ax.axhline(0.6931, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("number of merged nets k")
    ax.set_ylabel("training loss per task")
    return fig


def beyond_lambda_figure(table, keep: float = 0.8):
    """Chapter 12: retained fraction R along training per λ, and against (1−ηλ)^t."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    tab = table[table.step > 0].copy()
    tab["λ"] = tab.lam.map(_lam_label)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    sns.lineplot(data=tab, x="step", y="retained", hue="λ", marker="o", ax=axes[0])
    axes[0].axhline(keep, color="grey", ls=":", lw=1)
    axes[0].set_xlabel("GD step t")
    axes[0].set_ylabel("retained fraction R")
    sns.scatterplot(data=tab[tab.lam > 0], x="init_factor", y="retained", hue="λ", ax=axes[1],
                    legend=False)
    axes[1].axhline(keep, color="grey", ls=":", lw=1)
    axes[1].set_xscale("log")
    axes[1].set_xlabel(r"initialisation factor $(1-\eta\lambda)^t$")
    axes[1].set_ylabel("retained fraction R")
    return fig


def beyond_attention_figure(df):
    """Chapter 12: λ‖W‖²/B² per parameter of the argmax and softmax heads (Lemma 2)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True, sharey=True)
    for ax, kind in zip(axes, ("argmax", "softmax"), strict=True):
        sub = df[df.kind == kind].copy()
        sub["λ"] = sub.lam.map(_lam_label)
        sns.barplot(data=sub, x="param", y="ratio", hue="λ", ax=ax)
        ax.set_title(f"{kind} head")
        ax.set_xlabel("parameter")
        ax.set_ylabel(r"$\lambda\|W\|_F^2 / B^2$")
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
