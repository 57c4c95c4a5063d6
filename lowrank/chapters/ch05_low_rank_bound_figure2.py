"""Chapter 5, Figure 2 (Section 5): average inverse stable rank, errors and loss against λ, K = 3.

Every (task, λ, seed) triple is one member of a single ensemble trained by one
batched SGD call: the inputs are shared, the labels differ by task (signs of
sin(10 Wᵀx) or sin(100 Wᵀx)) and λ is given per member. The paper gives neither
the step size nor the batch size; we use η = 0.5 and batches of 100 at both scales.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lowrank.config import default_dtype
from lowrank.core.engine import sgd
from lowrank.core.losses import empirical_loss
from lowrank.core.metrics import lemma3_weights
from lowrank.core.models import forward, init_mlp
from lowrank.core.progress import progress
from lowrank.data.synthetic import sin_task
from lowrank.runner.experiment import Experiment

QUICK_LAMBDAS = [1e-5, 1e-4, 1e-3, 2e-3, 3e-3, 4e-3, 6e-3, 1e-2]


FULL_LAMBDAS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 4e-3, 6e-3, 1e-2, 2e-2]


# A member whose outputs all lie within 1e-3 of 0 has L(θ) = ln 2 to three digits:
# it has fallen into the basin of the stationary point θ = 0 (Remark 1).
COLLAPSE_TOL = 1e-3


def member_grid(spec: dict[str, Any]) -> list[tuple[float, float, int]]:
    """The (frequency a, λ, seed) of every ensemble member: task-major, then λ, then seed."""
    return [
        (float(a), float(lam), s)
        for a in spec["frequencies"]
        for lam in spec["lambdas"]
        for s in range(spec["seeds"])
    ]


def _inverse_stable_ranks(weights: list[torch.Tensor]) -> torch.Tensor:
    # Like metrics.inverse_stable_rank, but a fully collapsed (zero) layer gives NaN
    # instead of an error, so one collapsed member cannot sink the whole table.
    cols = []
    for w in weights:
        fro = torch.linalg.matrix_norm(w.double(), ord="fro")
        spec = torch.linalg.matrix_norm(w.double(), ord=2)
        cols.append(torch.where(fro > 0, spec / fro.clamp_min(1e-300), torch.nan))
    return torch.stack(cols, -1)


def figure2_rows(
    weights: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    grid: list[tuple[float, float, int]],
) -> list[dict[str, Any]]:
    """Per member: Lemma 3's LHS (= the average inverse stable rank for H = 1), errors, loss."""
    with torch.no_grad():
        f = forward(weights, x, "relu").double()
        margins = y.double() * f
        loss = empirical_loss(margins)
        sq_norm = sum(w.double().square().sum(dim=(-2, -1)) for w in weights)
        max_out = f.abs().amax(-1)
        inv = _inverse_stable_ranks(weights)
        coef = lemma3_weights(len(weights), 1)
    rows = []
    for e, (a, lam, seed) in enumerate(grid):
        row: dict[str, Any] = {"frequency": a, "lam": lam, "seed": seed}
        row["inv_stable_rank"] = float((coef * inv[e]).sum())
        row["inv_stable_rank_hidden"] = float(inv[e, :-1].mean())
        row.update({f"inv_sr_{k + 1}": float(v) for k, v in enumerate(inv[e])})
        row["class_error"] = float((margins[e] <= 0).double().mean())
        row["margin_error"] = float((margins[e] < 1).double().mean())
        row["loss"] = float(loss[e])
        row["sq_norm"] = float(sq_norm[e])
        row["max_abs_output"] = float(max_out[e])
        row["collapsed"] = bool(max_out[e] < COLLAPSE_TOL)
        rows.append(row)
    return rows


def trend_test(df, column: str = "inv_stable_rank") -> dict[float, dict[str, float]]:
    """Per task: Spearman's ρ between λ and ``column`` over non-collapsed members, one-sided p."""
    from scipy.stats import spearmanr

    out = {}
    for a, g in df[~df["collapsed"].astype(bool)].groupby("frequency"):
        res = spearmanr(g["lam"], g[column], alternative="greater")
        out[float(a)] = {
            "rho": float(res.statistic),
            "p_value": float(res.pvalue),
            "members": int(len(g)),
            "largest_lam": float(g["lam"].max()),
        }
    return out


class Figure2(Experiment):
    """The registered ``fig2`` experiment (Section 5, Figure 2)."""

    name = "fig2"
    description = "Figure 2: average inverse stable rank, errors and loss vs λ (K = 3, SGD)"
    full_cost = "110 members x 50,000 SGD steps (width-10 nets: launch-bound on a GPU)"

    def _base(self) -> dict[str, Any]:
        return {
            "n": 1000,
            "d": 100,
            "width": 10,
            "hidden_layers": 2,
            "frequencies": [10, 100],
            "eta": 0.5,
            "batch_size": 100,
            "init_scale": 1.0,
            "data_seed": 0,
            "init_seed": 1,
        }

    def quick(self) -> dict[str, Any]:
        """300 epochs, 4 seeds (a 2-core CPU, ~20 s)."""
        return {**self._base(), "lambdas": QUICK_LAMBDAS, "seeds": 4, "epochs": 300}

    def full(self) -> dict[str, Any]:
        """The paper's 5000 epochs."""
        return {**self._base(), "lambdas": FULL_LAMBDAS, "seeds": 5, "epochs": 5000}

    def run(
        self, spec: dict[str, Any], device: torch.device, show_progress: bool
    ) -> list[dict[str, Any]]:
        """Train all members in one batched SGD call and return one row per member."""
        dtype = default_dtype(device)
        grid = member_grid(spec)
        # Same data seed for both tasks: the same inputs and W, only the frequency differs.
        tasks = {
            a: sin_task(spec["n"], spec["d"], a=a, seed=spec["data_seed"])
            for a in spec["frequencies"]
        }
        x = tasks[spec["frequencies"][0]].x.to(dtype=dtype, device=device)
        y = torch.stack([tasks[a].y for a, _, _ in grid]).to(dtype=dtype, device=device)
        lam = torch.tensor([lam for _, lam, _ in grid], dtype=dtype, device=device)
        dims = [spec["d"]] + [spec["width"]] * spec["hidden_layers"] + [1]
        w0 = init_mlp(
            dims,
            members=len(grid),
            seed=spec["init_seed"],
            init_scale=spec["init_scale"],
            dtype=dtype,
            device=device,
        )
        # Whole ensemble, trained in about 50 chunks of epochs so a long run shows progress;
        # chunk i shuffles with its own seed, so results do not depend on show_progress.
        chunk = max(1, math.ceil(spec["epochs"] / 50))
        starts = list(range(0, spec["epochs"], chunk))
        weights = w0
        for i, start in enumerate(progress(starts, len(starts), "fig2", show_progress)):
            weights, _ = sgd(
                weights,
                x,
                y,
                lam,
                eta=spec["eta"],
                epochs=min(chunk, spec["epochs"] - start),
                batch_size=spec["batch_size"],
                seed=1000 * spec["init_seed"] + i,
            )
        return figure2_rows([w.cpu() for w in weights], x.cpu(), y.cpu(), grid)


FIGURE2 = Figure2()

# Other (data seed, initialisation seed) pairs than the spec's (0, 1): chapter 5 re-runs the
# quick sweep on each to show the trend is not a property of one draw.
REPLICATE_SEEDS: tuple[tuple[int, int], ...] = ((1, 2), (2, 3))


class Fig2Replicates(Experiment):
    """``fig2-replicates``: Figure 2's trend test on other data and initialisation seeds."""

    name = "fig2-replicates"
    description = "Chapter 5: Figure 2's trend test (Spearman ρ of λ, Lemma 3's LHS) on other seeds"
    full_cost = "two quick fig2 runs (about a minute on a CPU)"

    def quick(self) -> dict[str, Any]:
        """The quick fig2 sweep on each (data seed, init seed) pair of REPLICATE_SEEDS."""
        return {"pairs": [list(p) for p in REPLICATE_SEEDS], "base": FIGURE2.quick()}

    def full(self) -> dict[str, Any]:
        """The same as quick: the replicates test the quick sweep."""
        return self.quick()

    def run(self, spec, device, show_progress=False) -> list[dict[str, Any]]:
        """One row per pair and task frequency."""
        return seed_replicates(spec["pairs"], spec["base"], device)


FIG2_REPLICATES = Fig2Replicates()


def seed_replicates(
    pairs: tuple[tuple[int, int], ...] | None = None,
    spec: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Figure 2's trend test (Spearman ρ of λ vs Lemma 3's LHS) on other data and init seeds.

    ``pairs`` and ``spec`` default to :meth:`Fig2Replicates.quick`.
    """
    import pandas as pd

    defaults = FIG2_REPLICATES.quick()
    pairs = defaults["pairs"] if pairs is None else pairs
    if not pairs:
        raise ValueError("pairs must name at least one (data_seed, init_seed) pair")
    base = defaults["base"] if spec is None else spec
    rows = []
    for data_seed, init_seed in pairs:
        run_spec = {**base, "data_seed": int(data_seed), "init_seed": int(init_seed)}
        df = pd.DataFrame(FIGURE2.run(run_spec, torch.device(device), False))
        for a, res in trend_test(df).items():
            rows.append({"data_seed": data_seed, "init_seed": init_seed, "frequency": a, **res})
    return rows


# Figure 2's four quantities, in the order its text names them (Section 5).
FIGURE2_PANELS = (
    ("inv_stable_rank", "avg. inverse stable rank\n(non-collapsed members)"),
    ("class_error", "classification error"),
    ("margin_error", r"margin error ($y f < 1$)"),
    ("loss", "average loss"),
)


def figure2_figure(df, frequency: float):
    """Figure 2, one of its plots (a = 10 left, a = 100 right): the average inverse stable
    rank, classification error, margin error and loss against λ (mean ± sd over seeds)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = df[df["frequency"] == frequency]
    if sub.empty:
        have = sorted(set(df["frequency"]))
        raise ValueError(f"no rows for frequency {frequency!r}; the table has {have}")
    collapsed = sub.loc[sub["collapsed"].astype(bool), "lam"]
    fig, axes = plt.subplots(2, 2, figsize=(7.3, 5.4), sharex=True, constrained_layout=True)
    for j, (ax, (col, label)) in enumerate(zip(axes.flat, FIGURE2_PANELS, strict=True)):
        # Collapsed members' stable ranks are those of vanishing weights: left out.
        shown = sub[~sub["collapsed"].astype(bool)] if j == 0 else sub
        sns.lineplot(data=shown, x="lam", y=col, errorbar="sd", marker="o", ax=ax)
        if len(collapsed):
            ax.axvspan(collapsed.min(), sub["lam"].max(), color="0.85", zorder=0,
                       label="a member collapsed to θ = 0")
        ax.set(xscale="log", xlabel=r"$\lambda$" if j >= 2 else "", ylabel=label)
    fig.suptitle(rf"$f^*(x) = \sin({frequency:g}\, W^\top x)$", fontsize=12)
    if len(collapsed):
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", fontsize=9)
    return fig
