"""Chapter 12, beyond the paper: how far merging by summation goes (sections 1 and 2).

The chapter's criterion (:func:`merge_works`), ``beyond-overlap`` (merged vs individual loss
as the cross-task overlap ε grows from 0 to 1, for the shallow net of Eq. (3) and a deep
ReLU MLP, against Lemma 4's terms) and ``beyond-ktasks`` (the sum of k nets trained on k
mutually orthogonal subspaces). The merge rules and weight decay as a knob are
:mod:`lowrank.chapters.ch12_beyond_rules`; the attention head is
:mod:`lowrank.chapters.ch12_beyond_attention`. Every ensemble is trained at once (a leading
member dimension), float64 on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lowrank.config import default_dtype
from lowrank.core.engine import fit, gd
from lowrank.core.losses import empirical_loss
from lowrank.core.metrics import error_rate, stable_rank_squared
from lowrank.core.models import forward, init_mlp, shallow_forward, shallow_net, unit_output_vector
from lowrank.data.synthetic import GEOMETRIES, stack_tasks, subspace_tasks, task_pair
from lowrank.runner.experiment import Experiment

# --- the criterion ----------------------------------------------------------------------------

LN2 = math.log(2.0)


def _f64(values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to(torch.float64)
    return torch.tensor(np.asarray(values, dtype=np.float64))


def retained_fraction(loss_individual, loss_merged) -> torch.Tensor:
    """R = (ln 2 − L(θ+θ')) / (ln 2 − L(θ)): the share of training's gain over f ≡ 0 kept."""
    ind, mer = _f64(loss_individual), _f64(loss_merged)
    return (LN2 - mer) / (LN2 - ind)


def merge_works(loss_individual, loss_merged, keep: float = 0.8, learned: float = 0.5):
    """The chapter's criterion on mean losses: L(θ) ≤ ln2/2 (learned) and R ≥ 0.8 (gain kept)."""
    if not 0 < keep <= 1 or not 0 < learned <= 1:
        raise ValueError(f"keep and learned must lie in (0, 1], got {keep}, {learned}")
    ind = _f64(loss_individual)
    ok = ind <= learned * LN2
    return ok & (retained_fraction(ind, loss_merged) >= keep)


# --- batched models: the shallow net of Eq. (3) and the MLP ------------------------------


def shallow_ensemble_gd(
    w0: torch.Tensor,
    u: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    eta: float,
    steps: int,
) -> torch.Tensor:
    """W ← (1−ηλ)W − η∇_W L (App. C.1) for E nets (E, m, d), each on its own data (E, n, d).

    Returns the last weights; a NaN loss names its first step and member, never a silent NaN.
    """
    return fit(shallow_net(u), [w0], x, y, lam, eta, steps)[0][0]


def mlp_inits(dims, seeds_tasks, init_scale, dtype, device) -> list[torch.Tensor]:
    """One seeded initialisation per (seed, task), stacked as an ensemble (chapter 12's nets)."""
    nets = [init_mlp(dims, seed=20_000 + 97 * s + t, init_scale=init_scale) for s, t in seeds_tasks]
    return [torch.stack([net[k] for net in nets]).to(device, dtype) for k in range(len(dims) - 1)]


def train_mlps(
    dims, seeds_tasks, x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any],
    show_progress: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """GD with weight decay (Section 2) on one seeded MLP per (seed, task), each on its own
    data (E, n, d); ``spec`` gives init_scale, lam, eta and steps. Returns (initial, trained)."""
    ws0 = mlp_inits(dims, seeds_tasks, spec["init_scale"], x.dtype, x.device)
    ws, _ = gd(ws0, x, y, spec["lam"], spec["eta"], spec["steps"], show_progress=show_progress,
               backward=True)
    return ws0, ws


def stack_pairs(pairs, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tasks of every task pair as one ensemble: member 2p is task 1 of pair p, 2p+1 its
    task 2 (inputs (E, n, d), labels (E, n))."""
    return stack_tasks([t for p in pairs for t in (p.first, p.second)], dtype=dtype, device=device)


# --- 1. overlap ε from 0 to 1 --------------------------------------------------------------


def run_overlap(spec: dict[str, Any], device, show_progress: bool = False) -> list[dict]:
    """Merged vs individual loss per ε, geometry, seed, task; Lemma 4's terms (shallow net)."""
    device = torch.device(device)
    dtype = default_dtype(device)
    seeds = range(spec["seeds"])
    combos = [(g, e, s) for g in spec["geometries"] for e in spec["eps"] for s in seeds]
    pairs = [task_pair(g, spec["n"], spec["d"], e, spec["a"], s) for g, e, s in combos]
    x, y = stack_pairs(pairs, dtype, device)
    E, d = x.shape[0], x.shape[2]
    # swap[e] is the partner of member e: member 2p is task 1 of pair p, 2p+1 its task 2
    swap = torch.arange(E, device=device).view(-1, 2).flip(1).reshape(-1)
    rows: list[dict] = []
    # the shallow net of Eq. (3): one fixed u, W_0 ~ N(0, s²/d) drawn per (seed, task)
    m, eta, lam, steps = spec["m"], spec["eta_shallow"], spec["lam_shallow"], spec["steps_shallow"]
    u = unit_output_vector(m, seed=1).to(device, dtype)
    w0 = mlp_inits([d, m, 1], [(s, i % 2) for (_, _, s) in combos for i in range(2)],
                   spec["init_scale"], dtype, device)[0]
    wt = shallow_ensemble_gd(w0, u, x, y, lam, eta, steps)
    ind = y * shallow_forward(wt, u, x)
    mer = y * shallow_forward(wt + wt[swap], u, x)
    # Lemma 4 for the partner net on this task's inputs: ‖W'_t x_i‖ and its two terms
    leak = torch.bmm(x, wt[swap].transpose(1, 2)).norm(dim=-1)  # (E, n)
    init = torch.bmm(x, w0[swap].transpose(1, 2)).norm(dim=-1)
    decay = (1 - eta * lam) ** steps
    eps_term = (1 - decay) / lam if lam > 0 else eta * steps
    shallow = {
        "loss_individual": empirical_loss(ind), "loss_merged": empirical_loss(mer),
        "err_individual": error_rate(ind), "err_merged": error_rate(mer),
        "leak_mean": leak.mean(-1), "leak_max": leak.max(-1).values,
        "init_term_max": decay * init.max(-1).values,
    }  # fmt: skip
    # the deep MLP, every (geometry, ε, seed, task) one member of a single ensemble
    dims = [d, *spec["hidden"], 1]
    _, ws = train_mlps(dims, [(s, i % 2) for (_, _, s) in combos for i in range(2)], x, y, spec,
                       show_progress)
    ind = y * forward(ws, x)
    mer = y * forward([w + w[swap] for w in ws], x)
    mlp = {
        "loss_individual": empirical_loss(ind), "loss_merged": empirical_loss(mer),
        "err_individual": error_rate(ind), "err_merged": error_rate(mer),
    }  # fmt: skip
    for model, vals in (("shallow", shallow), ("mlp", mlp)):
        cols = {k: v.double().cpu().tolist() for k, v in vals.items()}
        for e in range(E):
            g, eps, s = combos[e // 2]
            row = {"model": model, "geometry": g, "eps": eps, "seed": s, "task": e % 2 + 1,
                   "max_overlap": pairs[e // 2].max_overlap}  # fmt: skip
            row.update({k: cols[k][e] for k in cols})
            if model == "shallow":
                row["eps_term"] = eps * eps_term
            rows.append(row)
    _fill_missing(rows)
    return rows


def _fill_missing(rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    for r in rows:
        for k in keys:
            r.setdefault(k, float("nan"))
    rows[:] = [{k: r[k] for k in keys} for r in rows]


def summarise_overlap(df):
    """Per model, geometry and ε: losses averaged over seeds and tasks, R, and the criterion."""
    keys = ["model", "geometry", "eps"]
    out = df.groupby(keys, as_index=False)[["loss_individual", "loss_merged"]].mean()
    ind, mer = out.loss_individual.to_numpy(), out.loss_merged.to_numpy()
    out["retained"] = retained_fraction(ind, mer).numpy()
    out["works"] = merge_works(ind, mer).numpy()
    return out


def works_table(summary, index: str, columns, fmt: str = "{:.2f}"):
    """R of every merge as a page prints it: 'R ✓' where the merge works by the chapter's
    criterion (``works``), 'R ✗' where it does not; ``index`` and ``columns`` as in pivot."""
    marks = [f"{fmt.format(r)} {'✓' if w else '✗'}"
             for r, w in zip(summary.retained, summary.works.astype(bool), strict=True)]
    return summary.assign(R=marks).pivot(index=index, columns=columns, values="R")


def breaking_eps(summary, model: str, geometry: str) -> float:
    """The smallest ε of the grid at which the merge stops working (inf if it never does)."""
    sub = summary[(summary.model == model) & (summary.geometry == geometry)].sort_values("eps")
    failed = sub[~sub.works.astype(bool)]
    return float(failed.eps.iloc[0]) if len(failed) else math.inf


class OverlapExperiment(Experiment):
    """``beyond-overlap``: merging quality as the cross-task overlap ε grows."""

    name = "beyond-overlap"
    description = (
        "Chapter 12: merged vs individual loss as the cross-task overlap ε grows (shallow "
        "net of Eq. (3) and a ReLU MLP), with Lemma 4's terms"
    )
    full_cost = "2x520 nets, 2e4 GD steps"
    #: Lemma 4's bound is checked at equality (ε = 0) up to t·u: TF32's and bf16's u
    #: (5e-4, 4e-3) times 10⁴ steps leave nothing to check, so they are not offered
    precisions = ("fp64", "fp32")

    def quick(self) -> dict[str, Any]:
        """Both geometries, seven ε, two seeds, 64 inputs."""
        return {
            "geometries": list(GEOMETRIES), "eps": [0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0], "seeds": 2,
            "n": 64, "d": 16, "a": 1.0, "init_scale": 1.0,
            "m": 32, "eta_shallow": 10.0, "lam_shallow": 1e-3, "steps_shallow": 400,
            "hidden": [64, 16], "eta": 1.0, "lam": 1e-2, "steps": 400,
        }  # fmt: skip

    def full(self) -> dict[str, Any]:
        """Thirteen ε, ten seeds, the paper's sizes."""
        return {
            **self.quick(),
            "eps": [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0],
            "seeds": 10, "n": 1000, "d": 100, "m": 1000, "steps_shallow": 20_000,
            "hidden": [1000, 100], "lam": 1e-3, "lam_shallow": 1e-3, "steps": 20_000,
        }  # fmt: skip

    def run(self, spec, device, show_progress=False):
        """Train the shallow and the deep ensembles for every geometry, ε and seed."""
        return run_overlap(spec, device, show_progress)


OVERLAP = OverlapExperiment()


# --- 2. many tasks: the sum of k nets on k orthogonal subspaces ---------------------------


def run_ktasks(spec: dict[str, Any], device, show_progress: bool = False) -> list[dict]:
    """Sum the first k of k_max nets (one per orthogonal task) and evaluate it on each of the k."""
    device = torch.device(device)
    dtype = default_dtype(device)
    K, S = int(spec["k_max"]), int(spec["seeds"])
    tasks = [t for s in range(S) for t in subspace_tasks(spec["n"], spec["p"], K, spec["a"], s)]
    x, y = stack_tasks(tasks, dtype=dtype, device=device)  # member e = s K + j
    rows: list[dict] = []
    for width in spec["widths"]:
        dims = [x.shape[2], width, max(1, width // 4), 1]
        _, ws = train_mlps(dims, [(s, j) for s in range(S) for j in range(K)], x, y, spec,
                           show_progress)
        ind = empirical_loss(y * forward(ws, x)).view(S, K)
        ind_err = error_rate(y * forward(ws, x)).view(S, K)
        srank = [stable_rank_squared(w).view(S, K).mean(1) for w in ws[:-1]]
        # merged_k = Σ_{j<k} θ_j for every k at once: a cumulative sum over the task axis
        cums = [w.view(S, K, *w.shape[1:]).cumsum(1) for w in ws]
        for k in spec["ks"]:
            merged = [c[:, k - 1].repeat_interleave(k, 0) for c in cums]  # (S k, out, in)
            xs = x.view(S, K, *x.shape[1:])[:, :k].reshape(S * k, *x.shape[1:])
            ys = y.view(S, K, -1)[:, :k].reshape(S * k, -1)
            marg = ys * forward(merged, xs)
            loss, err = empirical_loss(marg).view(S, k), error_rate(marg).view(S, k)
            msr = [stable_rank_squared(c[:, k - 1]) for c in cums[:-1]]
            for s in range(S):
                for j in range(k):
                    rows.append({
                        "width": width, "seed": s, "k": k, "task": j + 1,
                        "loss_individual": float(ind[s, j]), "loss_merged": float(loss[s, j]),
                        "err_individual": float(ind_err[s, j]), "err_merged": float(err[s, j]),
                        "srank2_layer1": float(srank[0][s]), "srank2_layer2": float(srank[1][s]),
                        "merged_srank2_layer1": float(msr[0][s]),
                        "merged_srank2_layer2": float(msr[1][s]),
                    })  # fmt: skip
    return rows


class KTasksExperiment(Experiment):
    """``beyond-ktasks``: merging k = 1..k_max nets trained on orthogonal subspaces."""

    name = "beyond-ktasks"
    description = (
        "Chapter 12: the sum of k nets trained on k mutually orthogonal input subspaces, "
        "loss on each task against k, for several widths"
    )
    full_cost = "480 nets up to 128-1000-250-1, 2e4 GD steps"

    def quick(self) -> dict[str, Any]:
        """Up to 16 tasks of dimension 2, two widths."""
        return {
            "p": 2, "k_max": 16, "ks": [1, 2, 3, 4, 6, 8, 12, 16], "n": 48, "a": 1.0, "seeds": 2,
            "widths": [16, 64], "init_scale": 1.0, "eta": 1.0, "lam": 1e-2, "steps": 300,
        }  # fmt: skip

    def full(self) -> dict[str, Any]:
        """Tasks of dimension 8, every k up to 16, three widths."""
        return {
            **self.quick(), "p": 8, "ks": list(range(1, 17)), "n": 500, "seeds": 10,
            "widths": [64, 256, 1000], "lam": 1e-3, "steps": 20_000,
        }  # fmt: skip

    def run(self, spec, device, show_progress=False):
        """Train k_max nets per seed and width as one ensemble; merge the first k for each k."""
        return run_ktasks(spec, device, show_progress)


KTASKS = KTasksExperiment()


def legend_right(fig, ax, title: str | None = None) -> None:
    """One legend for every panel, taken from ``ax`` and put right of ``fig``'s axes, so that
    it covers no curve (the panels must share ``ax``'s colours)."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside right upper", title=title, frameon=False,
               fontsize=9, title_fontsize=9)


def beyond_overlap_figure(summary, shallow_rows, keep: float = 0.8):
    """Chapter 12: retained fraction R against ε, and the shallow net's ‖W'_t x‖ vs Lemma 4."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 4.2), constrained_layout=True)
    # one row per (model, geometry, ε): nothing to aggregate, so no error band
    sns.lineplot(data=summary, x="eps", y="retained", hue="model", style="geometry",
                 markers=True, errorbar=None, ax=axes[0])
    axes[0].axhline(keep, color="grey", ls=":", lw=1)
    axes[0].set_ylim(-0.5, 1.1)
    axes[0].set_xlabel("cross-task overlap ε")
    axes[0].set_ylabel("retained fraction R")
    rows = shallow_rows.groupby(["geometry", "eps"], as_index=False)[
        ["leak_max", "init_term_max", "eps_term"]
    ].mean()
    rows["bound"] = rows.init_term_max + rows.eps_term
    sns.lineplot(data=rows, x="eps", y="leak_max", hue="geometry", marker="o", errorbar=None,
                 ax=axes[1])
    sns.lineplot(data=rows, x="eps", y="bound", color="black", ls="--", errorbar=None,
                 ax=axes[1], label="Lemma 4 bound")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("cross-task overlap ε")
    axes[1].set_ylabel(r"shallow net: $\max_i \|W'_t x_i\|$")
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.2), "frameon": False,
             "fontsize": 9}
    sns.move_legend(axes[0], ncol=2, **below)
    sns.move_legend(axes[1], ncol=2, title=None, **below)
    return fig


def beyond_ktasks_figure(df):
    """Chapter 12: loss of the sum of k nets on each of its k tasks, against k, per width."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7.0, 3.8), constrained_layout=True)
    long = df.melt(id_vars=["width", "k"], value_vars=["loss_individual", "loss_merged"],
                   var_name="model", value_name="loss")
    long["model"] = long.model.str.replace("loss_", "")
    # the band: a 95 % bootstrap interval over seeds and tasks, seeded so every build draws alike
    sns.lineplot(data=long, x="k", y="loss", hue="width", style="model", markers=True,
                 palette="colorblind", seed=0, ax=ax)
    ax.axhline(0.6931, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("number of merged nets k")
    ax.set_ylabel("training loss per task")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    return fig
