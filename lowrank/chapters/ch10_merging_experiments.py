"""Chapter 10: the model merging experiments of Section 5 (Figure 3) and Appendix D.2 (Figure 5).

Two networks are trained by full-batch GD with weight decay, one per task, and
merged by adding their weight lists (:func:`lowrank.core.merge.merge_sum`). Every network
of an experiment (settings × seeds × λ × 2 tasks) is one member of a single
ensemble trained by :func:`lowrank.core.engine.gd` (hand-written backward).

Plugging in other tasks (e.g. Fashion-MNIST, Figure 6): build a list of
:class:`~lowrank.data.synthetic.TaskPairDraw` (one per setting and random draw, all with the
same n and d) and call :func:`run_merging` ``(draws, spec, device, show_progress) -> rows``. The
spec keys it reads are ``hidden`` (hidden widths), ``lams``, ``eta``, ``steps``,
``record_every``, ``activation``, ``init_scale`` and ``metrics`` (a subset of
``loss``, ``train_error``, ``test_error``, ``stable_rank``). Each tidy row has
``setting, lam, seed, step, model, task, layer, metric, value`` where ``model`` is
``individual`` (the net trained on ``task``, evaluated on it) or ``merged`` (the
sum of the pair's two nets, evaluated on ``task``); stable-rank rows carry the
``layer`` k (1-based, hidden layers only: the output layer is a vector of stable
rank 1), with ``task`` 0 for the merged net. Non-layer rows have ``layer`` 0.
"""


from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lowrank.book import lam_label
from lowrank.config import default_dtype
from lowrank.core.engine import gd
from lowrank.core.losses import empirical_loss
from lowrank.core.merge import merge_sum
from lowrank.core.metrics import stable_rank
from lowrank.core.models import forward, init_mlp
from lowrank.data.synthetic import SYNTHETIC_SETTINGS, TaskPairDraw, stack_tasks, synthetic_draw
from lowrank.runner.experiment import Experiment

METRICS = ("loss", "train_error", "test_error", "stable_rank")


def _check_spec(draws: Sequence[TaskPairDraw], spec: dict[str, Any]) -> None:
    missing = {"hidden", "lams", "eta", "steps", "record_every", "metrics"} - set(spec)
    if missing:
        raise ValueError(f"spec lacks {sorted(missing)}")
    unknown = set(spec["metrics"]) - set(METRICS)
    if unknown:
        raise ValueError(f"spec['metrics'] has unknown {sorted(unknown)}; known: {METRICS}")
    if not draws:
        raise ValueError("draws must be a non-empty list of TaskPairDraw")
    shape = tuple(draws[0].train[0].x.shape)
    for i, dr in enumerate(draws):
        for t in dr.train:
            if tuple(t.x.shape) != shape:
                raise ValueError(
                    f"draws[{i}] has a training set of shape {tuple(t.x.shape)}, expected {shape}:"
                    " every task of one ensemble needs the same n and d"
                )
        if "test_error" in spec["metrics"] and dr.test is None:
            raise ValueError(f"draws[{i}] has no test sets but spec['metrics'] asks test_error")


def run_merging(
    draws: Sequence[TaskPairDraw],
    spec: dict[str, Any],
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Train both nets of every draw and λ as one ensemble; tidy rows of Figure 3/5 metrics."""
    _check_spec(draws, spec)
    device = torch.device(device)
    dtype = default_dtype(device)
    lams = [float(v) for v in spec["lams"]]
    d = draws[0].train[0].x.shape[1]
    dims = [d, *spec["hidden"], 1]
    # member e = 2 p + t, pair p = i L + j for draw i and λ index j
    pairs = [(dr, lam) for dr in draws for lam in lams]
    members = [(dr, lam, t) for dr, lam in pairs for t in range(2)]
    x, y = stack_tasks([dr.train[t] for dr, _, t in members], dtype=dtype, device=device)
    test = None
    if "test_error" in spec["metrics"]:
        test = stack_tasks([dr.test[t] for dr, _, t in members], dtype=dtype, device=device)
    # one init per (seed, task), shared across settings and λ: a controlled comparison
    inits = {
        (dr.seed, t): init_mlp(
            dims, seed=10_000 + 2 * dr.seed + t, init_scale=spec.get("init_scale", 1.0)
        )
        for dr, _, t in members
    }
    weights = [
        torch.stack([inits[(dr.seed, t)][k] for dr, _, t in members]).to(device, dtype)
        for k in range(len(dims) - 1)
    ]
    lam_t = torch.tensor([lam for _, lam, _ in members], dtype=dtype, device=device)
    activation = spec.get("activation", "relu")
    rows: list[dict[str, Any]] = []

    def base(p: int, step: int) -> dict[str, Any]:
        dr, lam = pairs[p]
        return {"setting": dr.setting, "lam": lam, "seed": dr.seed, "step": step}

    def record(step: int, ws: list[torch.Tensor], loss: torch.Tensor) -> list[dict[str, Any]]:
        out = _record_merging(ws, loss, x, y, test, spec["metrics"], activation)
        return [{**base(p, step), **r} for p, r in out]

    _, history = gd(
        weights,
        x,
        y,
        lam_t,
        spec["eta"],
        spec["steps"],
        activation=activation,
        record_every=spec["record_every"],
        record=record,
        show_progress=show_progress,
        backward=True,
    )
    rows.extend(history.rows)
    return rows


def _pairs(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0] // 2, 2, *t.shape[1:])


def _record_merging(ws, loss, x, y, test, metrics, activation) -> list[tuple[int, dict]]:
    """Loss, errors and stable ranks of the individual nets and of each pair's sum."""
    P = ws[0].shape[0] // 2
    wp = [_pairs(w) for w in ws]
    merged = merge_sum([w[:, 0] for w in wp], [w[:, 1] for w in wp])
    xp, yp = _pairs(x), _pairs(y)
    found: dict[str, torch.Tensor] = {}  # name -> (P, 2) tensors: individual / merged by task
    if "loss" in metrics or "train_error" in metrics:
        m_marg = torch.stack(
            [yp[:, t] * forward(merged, xp[:, t], activation) for t in range(2)], 1
        )
        if "loss" in metrics:
            found["individual/loss"] = _pairs(loss)
            found["merged/loss"] = empirical_loss(m_marg)
        if "train_error" in metrics:
            found["individual/train_error"] = _pairs(
                (y * forward(ws, x, activation) <= 0).to(x.dtype).mean(-1)
            )
            found["merged/train_error"] = (m_marg <= 0).to(x.dtype).mean(-1)
    if "test_error" in metrics:
        xt, yt = test
        xtp, ytp = _pairs(xt), _pairs(yt)
        found["individual/test_error"] = _pairs(
            (yt * forward(ws, xt, activation) <= 0).to(x.dtype).mean(-1)
        )
        found["merged/test_error"] = torch.stack(
            [
                (ytp[:, t] * forward(merged, xtp[:, t], activation) <= 0).to(x.dtype).mean(-1)
                for t in range(2)
            ],
            1,
        )
    out: list[tuple[int, dict]] = []
    for name, val in found.items():
        model, metric = name.split("/")
        vals = val.double().cpu().tolist()
        for p in range(P):
            for t in range(2):
                row = {"model": model, "task": t + 1, "layer": 0, "metric": metric}
                out.append((p, {**row, "value": vals[p][t]}))
    if "stable_rank" in metrics:
        for k, (w, wm) in enumerate(zip(ws[:-1], merged[:-1], strict=True)):
            ind = _pairs(stable_rank(w)).double().cpu().tolist()
            mer = stable_rank(wm).double().cpu().tolist()
            for p in range(P):
                for t in range(2):
                    row = {"model": "individual", "task": t + 1, "layer": k + 1}
                    out.append((p, {**row, "metric": "stable_rank", "value": ind[p][t]}))
                row = {"model": "merged", "task": 0, "layer": k + 1, "metric": "stable_rank"}
                out.append((p, {**row, "value": mer[p]}))
    return out


def synthetic_draws(spec: dict[str, Any]) -> list[TaskPairDraw]:
    """One synthetic task pair per setting and seed of ``spec`` (Section 5's data)."""
    return [
        synthetic_draw(setting, spec["n"], spec.get("n_test", 0), spec["d"], spec["a"], seed)
        for setting in spec["settings"]
        for seed in range(int(spec["seeds"]))
    ]


def _sizes(
    d: int, hidden: list[int], n: int, steps: int, record_every: int, seeds: int
) -> dict[str, Any]:
    """A Section 5 spec: the given sizes, the paper's η = 1, unit-sphere inputs, ReLU, both
    settings (the keys in the order the specs have always had)."""
    return {
        "d": d, "hidden": hidden, "n": n, "a": 1.0, "eta": 1.0, "steps": steps,
        "record_every": record_every, "seeds": seeds, "init_scale": 1.0, "activation": "relu",
        "settings": list(SYNTHETIC_SETTINGS),
    }  # fmt: skip


class MergingExperiment(Experiment):
    """Figure 3 (train loss, λ sweep, stable ranks) or Figure 5 (held-out error)."""

    def quick(self) -> dict[str, Any]:
        """Small nets on 100 inputs: a 2-core CPU in seconds."""
        return _sizes(d=20, hidden=[64, 16], n=100, steps=1200, record_every=40, seeds=3)

    def full(self) -> dict[str, Any]:
        """The paper's sizes: 100-1000-100-1 nets, 1000 inputs, 10^5 GD steps."""
        return _sizes(d=100, hidden=[1000, 100], n=1000, steps=100_000, record_every=1000,
                      seeds=10)

    def run(
        self, spec: dict[str, Any], device: torch.device, show_progress: bool = False
    ) -> list[dict[str, Any]]:
        """Build the synthetic task pairs of every seed and train them as one ensemble."""
        return run_merging(synthetic_draws(spec), spec, device, show_progress)


class Fig3(MergingExperiment):
    """``fig3``: merged vs individual training loss, a λ sweep and stable ranks."""

    name = "fig3"
    description = (
        "Figure 3: merged vs individual training loss (different vs same task), "
        "a λ sweep, stable ranks of individual and merged nets"
    )
    full_cost = "160 nets 100-1000-100-1, n = 1000, 1e5 GD steps"

    def quick(self) -> dict[str, Any]:
        """Three λ, λ = 10⁻² the main one."""
        return {**super().quick(), "lams": [0.0, 1e-3, 1e-2], "lam_main": 1e-2,
                "metrics": ["loss", "stable_rank"]}

    def full(self) -> dict[str, Any]:
        """The paper's λ sweep, λ = 10⁻⁴ the main one."""
        return {**super().full(), "lams": [0.0, 1e-5, 1e-4, 1e-3], "lam_main": 1e-4,
                "metrics": ["loss", "stable_rank"]}


class Fig5(MergingExperiment):
    """``fig5``: held-out misclassification error of individual and merged nets."""

    name = "fig5"
    description = (
        "Figure 5 (Appendix D.2): held-out misclassification error of individual and "
        "merged nets, different vs same task"
    )
    full_cost = "40 nets 100-1000-100-1, n = 1000, 1e5 GD steps"

    def quick(self) -> dict[str, Any]:
        """λ = 10⁻², 1000 held-out inputs."""
        return {**super().quick(), "lams": [1e-2], "lam_main": 1e-2, "n_test": 1000,
                "metrics": ["train_error", "test_error"]}

    def full(self) -> dict[str, Any]:
        """λ = 10⁻⁴, 1000 held-out inputs."""
        return {**super().full(), "lams": [1e-4], "lam_main": 1e-4, "n_test": 1000,
                "metrics": ["train_error", "test_error"]}


FIG3 = Fig3()
FIG5 = Fig5()


def final_gaps(df, metric: str = "loss"):
    """Last-step table of individual and merged ``metric`` with gap = merged − individual.

    One row per (setting, lam, seed, task); ``df`` is a table of :func:`run_merging`.
    """
    if metric not in METRICS or metric == "stable_rank":
        raise ValueError(f"metric must be one of {METRICS[:3]}, got {metric!r}")
    rows = df[(df.metric == metric) & (df.step == df.step.max())]
    if rows.empty:
        raise ValueError(f"the table has no {metric!r} rows")
    table = rows.pivot_table(
        index=["setting", "lam", "seed", "task"], columns="model", values="value"
    )
    table["gap"] = table["merged"] - table["individual"]
    return table.reset_index()


def first_layer_leak(
    w0: torch.Tensor, wt: torch.Tensor, x_other: torch.Tensor, eta: float, lam: float, t: int
) -> float:
    """max over x' of ‖W_t x' − (1−ηλ)^t W_0 x'‖: zero when ⟨x_i, x'⟩ = 0 (Lemma 4, ε = 0)."""
    if w0.shape != wt.shape or x_other.shape[-1] != w0.shape[-1]:
        raise ValueError(
            f"w0 and wt must share a shape (m, d) and x_other be (n, d); got "
            f"{tuple(w0.shape)}, {tuple(wt.shape)}, {tuple(x_other.shape)}"
        )
    pred = (1 - eta * lam) ** t * (x_other @ w0.T)
    return float((x_other @ wt.T - pred).norm(dim=-1).max())


def _legend_entries(ax) -> tuple[list, list[str]]:
    """A seaborn legend's handles and labels without the hue and style titles ('task 1' for a
    task number); the legend itself is removed and log-axis ticks read as plain numbers."""
    import math

    import matplotlib.ticker as mticker

    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    kept = [(h, f"task {lab}" if lab.isdigit() else lab)
            for h, lab in zip(handles, labels, strict=True)
            if lab not in {"model", "task", "λ", "matrix"}]
    if ax.get_yscale() == "log":
        lo, hi = ax.get_ylim()
        plain = mticker.FuncFormatter(lambda v, _: f"{v:g}")
        if math.log10(hi / lo) < 2:  # under two decades: label 2 and 5 as well
            ax.yaxis.set_minor_locator(mticker.LogLocator(subs=(2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        else:
            ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    return [h for h, _ in kept], [lab for _, lab in kept]


def _legend_below(ax, ncol: int = 4) -> None:
    """Move a seaborn legend under its axes, so that it covers no curve."""
    handles, labels = _legend_entries(ax)
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
              fontsize=9, frameon=False, handlelength=1.8, columnspacing=1.0)


def merging_figure3(df, lam_main: float):
    """Figure 3 in the paper's layout: first row merged vs individual loss on different (left)
    and the same task (right); second row the λ sweep (left) and stable ranks (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig = plt.figure(figsize=(7.2, 7.0), layout="constrained")
    rows = fig.subfigures(2, 1, height_ratios=[1.0, 1.05])
    axes = np.array([row.subplots(1, 2) for row in rows])
    loss = df[df.metric == "loss"]
    main = loss[loss.lam == lam_main]
    for ax, setting, title in zip(
        axes[0], ("different", "same"), ("different tasks", "same task"), strict=True
    ):
        sns.lineplot(data=main[main.setting == setting], x="step", y="value", hue="model",
                     style="task", errorbar="sd", seed=0, ax=ax)
        ax.set(title=f"{title}, {lam_label(lam_main)}", xlabel="GD step",
               ylabel="training logistic loss", yscale="log")
    sweep = loss[loss.setting == "different"].copy()
    sweep["λ"] = sweep.lam.map(lam_label)
    sns.lineplot(data=sweep, x="step", y="value", hue="λ", style="model", errorbar="sd", seed=0,
                 ax=axes[1, 0])
    axes[1, 0].set(title="different tasks: λ sweep", xlabel="GD step",
                   ylabel="training logistic loss", yscale="log")
    sr = df[(df.metric == "stable_rank") & (df.setting == "different") & (df.lam == lam_main)]
    sr = sr.assign(matrix="W" + sr.layer.astype(int).astype(str))
    sns.lineplot(data=sr, x="step", y="value", hue="matrix", style="model", errorbar="sd", seed=0,
                 ax=axes[1, 1])
    axes[1, 1].set(title=f"stable rank, different tasks, {lam_label(lam_main)}",
                   xlabel="GD step", ylabel=r"$\|W\|_F\,/\,\|W\|_2$")
    for ax in axes[0]:
        handles, labels = _legend_entries(ax)  # the same in both panels: one legend below
    rows[0].legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9,
                   frameon=False)
    _legend_below(axes[1, 0], 3)
    _legend_below(axes[1, 1], 4)
    return fig


def merging_figure5(df):
    """Figure 5 (Appendix D.2) in the paper's layout: held-out misclassification error of
    individual and merged nets, orthogonal tasks (left) and the same source (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.6), layout="constrained", sharey=True)
    err = df[df.metric == "test_error"]
    for ax, setting, title in zip(
        axes, ("different", "same"), ("different tasks", "same task"), strict=True
    ):
        sns.lineplot(data=err[err.setting == setting], x="step", y="value", hue="model",
                     style="task", errorbar="sd", seed=0, ax=ax)
        ax.set(title=title, xlabel="GD step", ylabel="held-out misclassification error")
        handles, labels = _legend_entries(ax)  # the same in both panels: one legend below
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9, frameon=False)
    return fig
