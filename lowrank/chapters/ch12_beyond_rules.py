"""Chapter 12, beyond the paper: other merge rules, and weight decay as a knob (sections 3, 4).

``beyond-rules``: sum, average, task arithmetic and TIES on the same trained pairs;
``beyond-lambda``: the smallest weight decay λ that makes the merge work after t steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lowrank.book import lam_label
from lowrank.chapters.ch10_merging_experiments import run_merging
from lowrank.chapters.ch12_beyond import (
    legend_right,
    merge_works,
    retained_fraction,
    stack_pairs,
    train_mlps,
)
from lowrank.config import default_dtype
from lowrank.core.losses import empirical_loss
from lowrank.core.merge import merge_average, merge_sum, merge_task_arithmetic, merge_ties
from lowrank.core.metrics import error_rate
from lowrank.core.models import forward
from lowrank.data.synthetic import TaskPairDraw, rotated_task_pair
from lowrank.runner.experiment import Experiment

# --- 3. merge rules on the same trained pairs ----------------------------------------------

RULES = ("individual", "sum", "average", "task_arithmetic", "ties")


def run_rules(spec: dict[str, Any], device, show_progress: bool = False) -> list[dict]:
    """Sum, average, task arithmetic and TIES (best scale each) of pairs from one shared init."""
    device = torch.device(device)
    dtype = default_dtype(device)
    combos = [(name, e, s) for name, e in spec["settings"].items() for s in range(spec["seeds"])]
    pairs = [rotated_task_pair(spec["n"], spec["d"], e, spec["a"], s) for _, e, s in combos]
    x, y = stack_pairs(pairs, dtype, device)
    dims = [x.shape[2], *spec["hidden"], 1]
    # both nets of a pair start from the pair's seed's init θ_0: task vectors need one base
    ws0, ws = train_mlps(dims, [(s, 0) for (_, _, s) in combos for _ in range(2)], x, y, spec,
                         show_progress)
    first = [w[0::2] for w in ws]
    second = [w[1::2] for w in ws]
    base = [w[0::2] for w in ws0]
    xp, yp = x.view(-1, 2, *x.shape[1:]), y.view(-1, 2, y.shape[-1])

    def evaluate(merged: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        marg = torch.stack([yp[:, t] * forward(merged, xp[:, t]) for t in range(2)], 1)
        return empirical_loss(marg), error_rate(marg)  # (P, 2)

    found: dict[tuple[str, float], tuple[torch.Tensor, torch.Tensor]] = {}
    marg_ind = y * forward(ws, x)
    found[("individual", 1.0)] = (
        empirical_loss(marg_ind).view(-1, 2), error_rate(marg_ind).view(-1, 2)
    )
    found[("sum", 1.0)] = evaluate(merge_sum(first, second))
    found[("average", 0.5)] = evaluate(merge_average(first, second))
    for scale in spec["scales"]:
        found[("task_arithmetic", scale)] = evaluate(
            merge_task_arithmetic(base, [first, second], scale)
        )
        found[("ties", scale)] = evaluate(merge_ties(base, [first, second], spec["density"], scale))
    rows = []
    for (rule, scale), (loss, err) in found.items():
        for p, (name, eps, s) in enumerate(combos):
            for t in range(2):
                rows.append({
                    "setting": name, "eps": eps, "seed": s, "rule": rule, "scale": scale,
                    "task": t + 1, "loss": float(loss[p, t]), "err": float(err[p, t]),
                })  # fmt: skip
    return rows


def rules_table(df):
    """Mean loss and error per setting and rule, task arithmetic and TIES at their best scale.

    The best scale is chosen per setting by the mean training loss over seeds and
    tasks (a choice made on the training data, as task arithmetic's users do).
    """
    mean = df.groupby(["setting", "rule", "scale"], as_index=False)[["loss", "err"]].mean()
    best = mean.loc[mean.groupby(["setting", "rule"])["loss"].idxmin()]
    return best.reset_index(drop=True)


class RulesExperiment(Experiment):
    """``beyond-rules``: four merge rules on the same trained pairs."""

    name = "beyond-rules"
    description = (
        "Chapter 12: sum, average, task arithmetic and TIES on the same trained pairs "
        "(orthogonal, overlapping and same-task inputs)"
    )
    full_cost = "60 nets 100-1000-100-1, 2e4 GD steps"

    def quick(self) -> dict[str, Any]:
        """Three settings, three seeds, seven scales for task arithmetic and TIES."""
        return {
            "settings": {"orthogonal": 0.0, "overlap 0.5": 0.5, "same": 1.0}, "seeds": 3,
            "n": 64, "d": 16, "a": 1.0, "hidden": [64, 16], "init_scale": 1.0,
            "eta": 1.0, "lam": 1e-2, "steps": 400, "density": 0.2,
            "scales": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
        }  # fmt: skip

    def full(self) -> dict[str, Any]:
        """Ten seeds, the paper's sizes."""
        return {
            **self.quick(), "seeds": 10, "n": 1000, "d": 100, "hidden": [1000, 100],
            "lam": 1e-3, "steps": 20_000,
        }  # fmt: skip

    def run(self, spec, device, show_progress=False):
        """Train every pair from a shared init as one ensemble and merge it by every rule."""
        return run_rules(spec, device, show_progress)


RULES_EXP = RulesExperiment()


# --- 4. weight decay as a knob: the smallest λ that makes the merge work ---------------------


def run_lambda(spec: dict[str, Any], device, show_progress: bool = False) -> list[dict]:
    """Merged and individual loss of orthogonal pairs per λ, recorded along training."""
    draws = []
    for s in range(spec["seeds"]):
        pair = rotated_task_pair(spec["n"], spec["d"], 0.0, spec["a"], s)
        draws.append(TaskPairDraw("orthogonal", s, (pair.first, pair.second)))
    keys = ("hidden", "lams", "eta", "steps", "record_every", "init_scale")
    sub = {k: spec[k] for k in keys} | {"metrics": ["loss"]}
    rows = run_merging(draws, sub, device, show_progress)
    return [{k: r[k] for k in ("lam", "seed", "step", "model", "task", "value")} for r in rows]


def lambda_table(df, eta: float):
    """Per (λ, t): mean losses, R, the criterion and the initialisation factor (1−ηλ)^t."""
    wide = df.pivot_table(index=["lam", "seed", "step", "task"], columns="model", values="value")
    out = wide.reset_index().groupby(["lam", "step"], as_index=False)[["individual", "merged"]]
    out = out.mean()
    ind, mer = out.individual.to_numpy(), out.merged.to_numpy()
    out["retained"] = retained_fraction(ind, mer).numpy()
    out["works"] = merge_works(ind, mer).numpy()
    out["init_factor"] = [(1 - eta * lam) ** t for lam, t in zip(out.lam, out.step, strict=True)]
    return out


def smallest_working_lambda(table):
    """Per step t: the smallest λ of the grid whose merge works (inf when none does)."""
    out = {}
    for step, sub in table.groupby("step"):
        ok = sub[sub.works.astype(bool)]
        out[int(step)] = float(ok.lam.min()) if len(ok) else math.inf
    return out


class LambdaExperiment(Experiment):
    """``beyond-lambda``: the weight decay needed for a working merge after t steps."""

    name = "beyond-lambda"
    description = (
        "Chapter 12: the smallest weight decay λ that makes the merge of orthogonal tasks "
        "work after t GD steps, against the initialisation factor (1−ηλ)^t"
    )
    full_cost = "160 nets 100-1000-100-1, 1e5 GD steps"

    def quick(self) -> dict[str, Any]:
        """Six λ, two seeds, 800 GD steps."""
        return {
            "seeds": 2, "n": 64, "d": 16, "a": 1.0, "hidden": [64, 16], "init_scale": 1.0,
            "eta": 1.0, "lams": [0.0, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], "steps": 800,
            "record_every": 100,
        }  # fmt: skip

    def full(self) -> dict[str, Any]:
        """Eight λ, ten seeds, the paper's sizes."""
        return {
            **self.quick(), "seeds": 10, "n": 1000, "d": 100, "hidden": [1000, 100],
            "lams": [0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "steps": 100_000,
            "record_every": 5000,
        }  # fmt: skip

    def run(self, spec, device, show_progress=False):
        """Train orthogonal pairs for every λ (one ensemble), recording along the way."""
        return run_lambda(spec, device, show_progress)


LAMBDA = LambdaExperiment()


def beyond_lambda_figure(table, keep: float = 0.8):
    """Chapter 12: retained fraction R along training per λ, and against (1−ηλ)^t; one λ
    legend right of both panels, which share its colours."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    tab = table[table.step > 0].copy()
    tab["λ"] = tab.lam.map(lam_label)
    order = [lam_label(lam) for lam in sorted(tab.lam.unique())]
    colours = dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6), constrained_layout=True)
    # one row per (λ, t): nothing to aggregate, so no error band
    sns.lineplot(data=tab, x="step", y="retained", hue="λ", hue_order=order, palette=colours,
                 marker="o", errorbar=None, ax=axes[0])
    axes[0].axhline(keep, color="grey", ls=":", lw=1)
    axes[0].set_xlabel("GD step t")
    axes[0].set_ylabel("retained fraction R")
    sns.scatterplot(data=tab[tab.lam > 0], x="init_factor", y="retained", hue="λ",
                    palette=colours, ax=axes[1], legend=False)
    axes[1].axhline(keep, color="grey", ls=":", lw=1)
    axes[1].set_xscale("log")
    axes[1].set_xlabel(r"initialisation factor $(1-\eta\lambda)^t$")
    axes[1].set_ylabel("retained fraction R")
    legend_right(fig, axes[0], "λ")
    return fig
