"""Chapter 4 (Lemma 2): norm preservation, λ‖W_k‖² = H^{K−k} B², along GD.

The chapter's settings (``LEMMA2``; the paper runs no experiment for Lemma 2), its GD runs,
the recorder of Lemma 2's sides and the figures. Lemma 2's sides and gaps themselves are
:mod:`lowrank.theory.identities`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lowrank.chapters.ch03_rank_one_deep_linear import (
    deep_init,
    deep_task,
    small_task,
    stacked_rows,
)
from lowrank.core.engine import gd
from lowrank.core.metrics import alignment_residual, loss_and_gradient
from lowrank.runner.experiment import Experiment
from lowrank.theory.identities import lemma2_sides


def lemma2_recorder(
    x: torch.Tensor, y: torch.Tensor, lam: float, activation: str
) -> Callable[..., list[dict[str, Any]]]:
    """A ``gd`` recorder of Lemma 2's sides, gap and per-layer alignment residual."""

    def record(step: int, weights: list[torch.Tensor], loss: torch.Tensor) -> list[dict]:
        lhs, rhs = lemma2_sides(weights, x, y, lam, activation)
        _, grads = loss_and_gradient(weights, x, y, activation)
        res = alignment_residual(weights, grads, lam, per_layer=True)
        lhs, rhs, res = (t.reshape(-1, t.shape[-1]) for t in (lhs, rhs, res))
        rows = []
        for e in range(lhs.shape[0]):
            for k in range(lhs.shape[1]):
                rows.append(
                    {
                        "step": step,
                        "member": e,
                        "activation": activation,
                        "layer": k + 1,
                        "lhs": float(lhs[e, k]),
                        "rhs": float(rhs[e, k]),
                        "gap": float((lhs[e, k] - rhs[e, k]).abs() / lhs[e, k]),
                        "residual": float(res[e, k]),
                    }
                )
        return rows

    return record


class Lemma2Experiment(Experiment):
    """``lemma2``: depth-3 nets with linear, ReLU and squared-ReLU activations, Lemma 2 recorded."""

    name = "lemma2"
    description = "Chapter 4: Lemma 2's two sides per layer along GD, for H = 1 and H = 2"
    full_cost = "about a minute on a CPU (8 seeds, up to 20,000 GD steps)"

    def quick(self) -> dict[str, Any]:
        """Two seeds of each activation, on chapter 3's small task."""
        return {
            **small_task(),
            "K": 3,
            "seeds": 2,
            "record_every": 100,
            "runs": {
                "linear": {"lam": 0.05, "eta": 0.5, "x_scale": 1.0, "steps": 3000},
                "relu": {"lam": 0.02, "eta": 0.5, "x_scale": 1.0, "steps": 6000},
                "relu2": {"lam": 0.02, "eta": 0.5, "x_scale": 1.5, "steps": 6000},
            },
        }

    def full(self) -> dict[str, Any]:
        """The same sizes (a wider relu2 net collapses to θ = 0 at x_scale 1.5), more seeds
        and, for the two ReLU nets, longer runs."""
        quick = self.quick()
        steps = {"linear": 3000, "relu": 20000, "relu2": 12000}
        runs = {act: {**run, "steps": steps[act]} for act, run in quick["runs"].items()}
        return {**quick, "seeds": 8, "record_every": 200, "runs": runs}

    def run(self, spec, device, show_progress=False) -> list[dict[str, Any]]:
        """The recorded rows of every activation, one table (float64 on the CPU)."""
        return stacked_rows(train_lemma2(act, spec)[3] for act in spec["runs"])


LEMMA2 = Lemma2Experiment()


def train_lemma2(activation: str, spec: dict[str, Any], eta: float | None = None):
    """GD on a depth-K net with ``activation`` under chapter 4's settings, recording Lemma 2.

    Returns (weights, x, y, history frame); ``eta`` overrides the step size.
    """
    run = spec["runs"][activation]
    task = deep_task(spec)
    x = run["x_scale"] * task.x
    init = deep_init(spec, spec["K"], seed=1)
    step = run["eta"] if eta is None else eta
    weights, hist = gd(
        init,
        x,
        task.y,
        run["lam"],
        step,
        run["steps"],
        activation=activation,
        record_every=spec["record_every"],
        record=lemma2_recorder(x, task.y, run["lam"], activation),
    )
    return weights, x, task.y, hist.frame()


def lemma2_sides_bars(df):
    """Both sides of Lemma 2 per layer at the end of training, one panel per activation."""
    import seaborn as sns

    long = df.melt(
        id_vars=["activation", "layer", "member"], value_vars=["lhs", "rhs"],
        var_name="side", value_name="value",
    )
    long["side"] = long["side"].map(
        {"lhs": "λ‖W_k‖²", "rhs": "H^(K−k) B²"}
    )
    g = sns.catplot(
        data=long, x="layer", y="value", hue="side", col="activation", kind="bar",
        errorbar=None, height=2.3, aspect=1.0, sharey=False,
    )
    g.set_titles("{col_name}", size=10)
    g.set_axis_labels("layer k", "value")
    g.tick_params(labelsize=9)
    sns.move_legend(g, "lower center", bbox_to_anchor=(0.5, -0.1), ncol=2, title=None,
                    frameon=False)
    return g


def lemma2_gap_trajectory(df):
    """Lemma 2's relative gap and the per-layer alignment residual along GD (member 0)."""
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    data = df[df["member"] == 0].melt(
        id_vars=["step", "activation", "layer"], value_vars=["gap", "residual"],
        var_name="quantity", value_name="value",
    )
    data["layer"] = data["layer"].map(lambda k: f"W_{k}")
    g = sns.relplot(
        data=data, x="step", y="value", hue="layer", style="quantity", col="activation",
        kind="line", height=2.3, aspect=1.05, facet_kws={"sharex": False},
    )
    g.set(yscale="log")
    g.set_titles("{col_name}", size=10)
    g.set_axis_labels("GD step", "relative gap / residual")
    g.tick_params(labelsize=9)
    for ax in g.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(3))
    sns.move_legend(g, "lower center", bbox_to_anchor=(0.5, -0.12), ncol=7, title=None,
                    frameon=False, fontsize=9, columnspacing=0.8, handlelength=1.6)
    return g
