"""Chapter 5 (Lemma 3, Corollary 1, Remark 1): the low-rank bound at GD stationary points.

Lemma 3 and Corollary 1 at GD limits over a grid of depths K, degrees H and λ
(:func:`lemma3_grid`), and Remark 1's collapse of GD to θ = 0 for large λ
(:func:`remark1_collapse`); each grid is one batched GD call per (K, H). Figure 2 is
:mod:`lowrank.chapters.ch05_low_rank_bound_figure2`; the bounds are
:mod:`lowrank.theory.lemma3`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lowrank.core.engine import gd
from lowrank.core.losses import empirical_loss
from lowrank.core.metrics import (
    alignment_residual,
    frobenius_norms,
    loss_and_gradient,
    weighted_inverse_stable_rank,
)
from lowrank.core.models import ACTIVATION_OF_DEGREE, forward, init_mlp
from lowrank.data.synthetic import sin_task
from lowrank.runner.experiment import Experiment
from lowrank.theory import lemma3
from lowrank.theory.identities import lemma2_residual

# A member whose outputs are all below this in absolute value is the zero network
# for every purpose here (its loss is ln 2 to 9 digits): Lemma 3 excludes it.
ZERO_OUTPUT_TOL = 1e-9


def _settings(exp: Experiment, overrides: dict[str, Any]) -> dict[str, Any]:
    """``exp``'s quick settings with ``overrides``, refusing a key it does not have."""
    spec = exp.quick()
    unknown = set(overrides) - set(spec)
    if unknown:
        raise ValueError(f"{exp.name} has no setting {sorted(unknown)}; known: {sorted(spec)}")
    return spec | overrides


class _SecondsGrid(Experiment):
    """A chapter-5 grid that runs in seconds on a CPU: the same at both scales, run by
    :meth:`rows` (the module function of the same grid) in float64 on the CPU."""

    def full(self) -> dict[str, Any]:
        """The same grid: it runs in seconds."""
        return self.quick()

    def rows(self, **settings: Any) -> list[dict[str, Any]]:
        """The grid's rows for ``settings`` (overrides of :meth:`quick`)."""
        raise NotImplementedError

    def run(self, spec, device, show_progress=False) -> list[dict[str, Any]]:
        """The grid's rows (float64 on the CPU)."""
        return self.rows(**spec)


class Lemma3Grid(_SecondsGrid):
    """``lemma3-grid``: Lemma 3 and Corollary 1 at GD limits, one row per (K, H, λ, seed)."""

    name = "lemma3-grid"
    description = "Chapter 5: Lemma 3 and Corollary 1 at GD limits over depths K, degrees H and λ"
    full_cost = "the quick grid (seconds on a CPU): the paper runs no experiment for Lemma 3"

    def quick(self) -> dict[str, Any]:
        """GD with step eta/H from init_scale[H − 1] on a sin task of radius input_scale."""
        return {
            "Ks": [2, 3, 4],
            "Hs": [1, 2],
            "lambdas": [0.01, 0.02, 0.04, 0.08],
            "seeds": 2,
            "n": 16,
            "d": 8,
            "width": 6,
            "steps": 3000,
            "eta": 0.5,
            "init_scale": [2.5, 1.25],
            "input_scale": 1.0,
        }

    def rows(self, **settings: Any) -> list[dict[str, Any]]:
        """:func:`lemma3_grid`."""
        return lemma3_grid(**settings)


LEMMA3_GRID = Lemma3Grid()


def lemma3_grid(**settings: Any) -> list[dict[str, Any]]:
    """Lemma 3 and Corollary 1 at GD limits: one row per (K, H, λ, seed) member.

    ``settings`` override :meth:`Lemma3Grid.quick`. GD runs with step ``eta / H`` from
    ``init_scale[H − 1]`` (the squared ReLU has larger gradients) on a sin task with inputs
    on the sphere of radius ``input_scale`` (the proof needs ‖x‖ ≤ 1). Corollary 1 takes
    θ₀ = the initialisation.
    """
    spec = _settings(LEMMA3_GRID, settings)
    n, d, width, seeds = spec["n"], spec["d"], spec["width"], spec["seeds"]
    task = sin_task(n, d, a=2.0, seed=0)
    x, y = task.x * spec["input_scale"], task.y
    rows: list[dict[str, Any]] = []
    for K in spec["Ks"]:
        for H in spec["Hs"]:
            act = ACTIVATION_OF_DEGREE[H]
            grid = [(lam, s) for lam in spec["lambdas"] for s in range(seeds)]
            lam = torch.tensor([g[0] for g in grid], dtype=torch.float64)
            dims = [d] + [width] * (K - 1) + [1]
            w0 = init_mlp(dims, len(grid), seed=K, init_scale=spec["init_scale"][H - 1])
            w, _ = gd(w0, x, y, lam, eta=spec["eta"] / H, steps=spec["steps"], activation=act)
            loss, grads = loss_and_gradient(w, x, y, act)
            loss0 = empirical_loss(y * forward(w0, x, act))
            sq0 = frobenius_norms(w0).square().sum(-1)
            sq = frobenius_norms(w).square().sum(-1)
            nonzero = forward(w, x, act).abs().amax(-1) > ZERO_OUTPUT_TOL
            align = alignment_residual(w, grads, lam)
            l2res = lemma2_residual(w, x, y, lam, H)
            for e, (lv, s) in enumerate(grid):
                row: dict[str, Any] = {"K": K, "H": H, "lam": lv, "seed": s}
                row.update(loss=float(loss[e]), sq_norm=float(sq[e]), nonzero=bool(nonzero[e]))
                row.update(alignment_residual=float(align[e]), lemma2_residual=float(l2res[e]))
                if nonzero[e]:
                    lhs = float(weighted_inverse_stable_rank([t[e] for t in w], H))
                    rhs = float(lemma3.lemma3_rhs(lv, loss[e], K, H))
                else:
                    lhs = rhs = float("nan")
                row.update(lhs=lhs, rhs=rhs, slack=lhs / rhs)
                # Footnote 5: L_λ(θ) ≤ L_λ(0) = ln 2 ≤ 1 makes Lemma 3's RHS at least √λ.
                reg = float(loss[e]) + 0.5 * lv * float(sq[e])
                row.update(reg_loss=reg, below_zero_net=reg <= math.log(2))
                # Corollary 1 with θ₀ = the initialisation, where its assumptions hold.
                reg0 = float(loss0[e]) + 0.5 * lv * float(sq0[e])
                applies = float(loss0[e]) >= 1.0 and reg <= reg0
                cor = float(lemma3.corollary1_rhs(lv, loss0[e], sq0[e])) if applies else math.nan
                row.update(loss0=float(loss0[e]), corollary1_applies=applies)
                row.update(corollary1_rhs=cor, corollary1_slack=lhs / cor)
                rows.append(row)
    return rows


class Remark1Collapse(_SecondsGrid):
    """``remark1-collapse``: ReLU GD at λ = fraction × λ*(K) from starts of several scales."""

    name = "remark1-collapse"
    description = "Chapter 5: Remark 1, GD collapses to θ = 0 above the threshold λ*(K)"
    full_cost = "the quick grid (seconds on a CPU): the paper runs no experiment for Remark 1"

    def quick(self) -> dict[str, Any]:
        """Depths 2-5, five fractions of λ*(K), three start scales."""
        return {
            "Ks": [2, 3, 4, 5],
            "fractions": [0.01, 0.1, 0.5, 1.1, 2.0],
            "scales": [0.1, 1.0, 3.0],
            "n": 16,
            "d": 8,
            "width": 6,
            "steps": 1500,
            "eta": 0.2,
        }

    def rows(self, **settings: Any) -> list[dict[str, Any]]:
        """:func:`remark1_collapse`."""
        return remark1_collapse(**settings)


REMARK1_COLLAPSE = Remark1Collapse()


def remark1_collapse(**settings: Any) -> list[dict[str, Any]]:
    """Remark 1: ReLU GD at λ = fraction × λ*(K) from starts of several scales; max |f| at the end.

    ``settings`` override :meth:`Remark1Collapse.quick`. λ*(K) is
    :func:`lowrank.theory.lemma3.remark1_global_threshold`, above which θ = 0 is the unique
    global minimiser of L_λ (for ‖x‖ ≤ 1).
    """
    spec = _settings(REMARK1_COLLAPSE, settings)
    n, d, width = spec["n"], spec["d"], spec["width"]
    task = sin_task(n, d, a=2.0, seed=0)
    rows: list[dict[str, Any]] = []
    for K in spec["Ks"]:
        threshold = lemma3.remark1_global_threshold(K)
        grid = [(fr, sc) for fr in spec["fractions"] for sc in spec["scales"]]
        w0 = init_mlp([d] + [width] * (K - 1) + [1], len(grid), seed=K)
        scale_t = torch.tensor([g[1] for g in grid], dtype=torch.float64).view(-1, 1, 1)
        w0 = [w * scale_t for w in w0]
        lam = torch.tensor([fr * threshold for fr, _ in grid], dtype=torch.float64)
        w, _ = gd(w0, task.x, task.y, lam, eta=spec["eta"], steps=spec["steps"], activation="relu")
        out = forward(w, task.x, "relu").abs().amax(-1)
        loss = empirical_loss(task.y * forward(w, task.x, "relu"))
        for e, (fr, sc) in enumerate(grid):
            rows.append({
                "K": K, "threshold": threshold, "fraction": fr, "lam": float(lam[e]),
                "start_scale": sc, "max_abs_output": float(out[e]), "loss": float(loss[e]),
                "collapsed": bool(out[e] < 1e-3),
            })
    return rows


def lemma3_slack_figure(df):
    """Chapter 5: Lemma 3's LHS/RHS at GD limits against λ, by depth K and degree H."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import FixedLocator, NullLocator

    data = df[df["slack"].notna()]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    sns.scatterplot(data=data, x="lam", y="slack", hue="K", style="H", s=60, ax=ax,
                    palette="colorblind")
    ax.axhline(1.0, color="0.3", ls="--", lw=1, label="LHS = RHS")
    ax.set(xscale="log", yscale="log", xlabel=r"$\lambda$", ylabel="Lemma 3: LHS / RHS")
    lams = sorted(set(data["lam"]))  # one tick per λ of the grid, none in between
    ax.xaxis.set_major_locator(FixedLocator(lams))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{v:g}" for v in lams])
    ax.set_title("Lemma 3 at stationary points (non-zero)", fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    return fig


def remark1_proxy_figure(curves, collapse):
    """Chapter 5: g_−(r) − ln 2 around the threshold (left) and where GD ends (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(7.3, 3.6), constrained_layout=True)
    sns.lineplot(data=curves, x="r", y="gap", hue="lam_over_threshold", ax=axes[0],
                 palette="viridis", legend=False)
    # Direct labels at the right end of each curve instead of a legend over them.
    colours = dict(zip(dict.fromkeys(curves["lam_over_threshold"]), sns.color_palette(
        "viridis", curves["lam_over_threshold"].nunique()), strict=True))
    for label, curve in curves.groupby("lam_over_threshold", sort=False):
        end = curve.loc[curve["r"].idxmax()]
        factor = "" if label == "1" else rf"{label}\,"
        axes[0].annotate(rf"$\lambda = {factor}\lambda^*$", (end["r"], end["gap"]),
                         xytext=(-8, 0), textcoords="offset points", ha="right", va="center",
                         fontsize=9, color=colours[label])
    axes[0].axhline(0.0, color="0.3", lw=1)
    axes[0].set(xlabel=r"$r = \|\theta\|$", ylabel=r"$g_-(r) - \ln 2$")
    axes[0].set_title(r"Remark 1's proxy, $K = 3$", fontsize=11)
    data = collapse.assign(out=collapse["max_abs_output"].clip(lower=1e-30))
    sns.scatterplot(data=data, x="fraction", y="out", hue="K", style="start_scale", s=50,
                    ax=axes[1], palette="colorblind")
    axes[1].axvline(1.0, color="0.3", ls="--", lw=1)
    axes[1].set(xscale="log", yscale="log", xlabel=r"$\lambda / \lambda^*(K)$",
                ylabel=r"$\max_i |f_\theta(x_i)|$ after GD")
    axes[1].set_title("GD: collapse to θ = 0", fontsize=11)
    handles, labels = axes[1].get_legend_handles_labels()
    axes[1].get_legend().remove()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    return fig
