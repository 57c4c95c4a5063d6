"""Chapter 11, Figure 6 (Appendix D.2): merging ReLU MLPs trained on two Fashion-MNIST tasks.

Classes 0-4 form the label −1 and classes 5-9 the label +1 (the paper's "class 0"
and "class 1"). Task 1 is the image followed by zeros, task 2 is zeros followed by
the image with its label inverted, so inputs of the two tasks are orthogonal and
keep their length. A third net, "same", learns task 1 from the second pool of
images; adding it to the task-1 net is the paper's same-task merge.

Every member (seeds × init scales × λ × {task1, task2, same}) trains in one batched
call of :func:`lowrank.core.engine.gd`; the recorder evaluates the individual nets and the
two merges on the training and held-out sets at every record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowrank import config
from lowrank.core.checks import check_positive
from lowrank.core.engine import gd
from lowrank.core.losses import empirical_loss
from lowrank.core.metrics import error_rate, stable_rank
from lowrank.core.models import forward, init_mlp
from lowrank.data.fashion_mnist import FASHION_FILES, binary_labels, load_features
from lowrank.runner.experiment import Experiment

ROLES = ("task1", "task2", "same")


def pad_task(features: torch.Tensor, side: str) -> torch.Tensor:
    """Task 1 is [x, 0] (``side="left"``), task 2 is [0, x] (``"right"``): orthogonal inputs."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    zeros = torch.zeros_like(features)
    return torch.cat([features, zeros] if side == "left" else [zeros, features], dim=1)


def data_files(folder: Path | str | None = None, split: str = "t10k") -> list[tuple[str, int]]:
    """The IDX files Appendix D.2's tasks are read from (``folder`` defaults to the data folder):
    (official name, bytes), images first, raw before gzip as the loader looks; names, no path."""
    folder = Path(config.data_dir() if folder is None else folder)
    out = []
    for kind in ("images", "labels"):
        stem = FASHION_FILES[kind].format(split=split)
        found = [folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()]
        if not found:
            raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] is not in the data folder")
        out.append((found[0].name, found[0].stat().st_size))
    return out


@dataclass
class Split:
    """Training and held-out inputs and labels of one role."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def split_indices(total: int, n_train: int, n_test: int, seed: int) -> dict[str, torch.Tensor]:
    """Four disjoint index sets from one seeded permutation: pools A and B, train and test."""
    check_positive(n_train, "n_train")
    check_positive(n_test, "n_test")
    if 2 * (n_train + n_test) > total:
        raise ValueError(
            f"n_train and n_test must satisfy 2·(n_train + n_test) <= {total} images, "
            f"got n_train={n_train}, n_test={n_test}"
        )
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    cuts = torch.tensor([n_train, n_train, n_test, n_test]).cumsum(0).tolist()
    a_tr, b_tr, a_te, b_te = (perm[lo:hi] for lo, hi in zip([0, *cuts[:-1]], cuts, strict=True))
    return {"a_train": a_tr, "b_train": b_tr, "a_test": a_te, "b_test": b_te}


def make_tasks(
    features: torch.Tensor, labels: torch.Tensor, n_train: int, n_test: int, seed: int
) -> dict[str, Split]:
    """The three roles of one seed: task1 = pool A left, task2 = pool B right with −y,
    same = pool B left (task 1's distribution, other images)."""
    y = binary_labels(labels)
    idx = split_indices(features.shape[0], n_train, n_test, seed)
    out = {}
    for role, pool, side, sign in (
        ("task1", "a", "left", 1.0),
        ("task2", "b", "right", -1.0),
        ("same", "b", "left", 1.0),
    ):
        tr, te = idx[f"{pool}_train"], idx[f"{pool}_test"]
        out[role] = Split(
            pad_task(features[tr], side), sign * y[tr], pad_task(features[te], side), sign * y[te]
        )
    return out


def _margin_metrics(weights, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    margins = y * forward(weights, x)
    return empirical_loss(margins), error_rate(margins)


def merge_gaps(df, step: int | None = None, split: str = "train", metric: str = "loss"):
    """Merged minus individual loss on each net's own data (Figure 6's first row), per seed.

    ``merge`` is ``different`` (task1 + task2) or ``same`` (task1 + same); ``step``
    defaults to the last one recorded.
    """
    import pandas as pd

    step = int(df.step.max()) if step is None else step
    sel = df[(df.step == step) & (df.split == split) & (df.metric == metric)]
    if sel.empty:
        raise ValueError(f"no {metric!r} rows at step {step} on split {split!r}")
    keys = ["init_scale", "lam", "seed", "data"]
    own = sel[sel.net == sel.data].set_index(keys).value
    out = []
    for merge, net in (("different", "merged"), ("same", "merged_same")):
        m = sel[sel.net == net].set_index(keys).value
        gap = (m - own.reindex(m.index)).rename("gap").reset_index()
        gap["merged"] = m.to_numpy()
        gap["individual"] = own.reindex(m.index).to_numpy()
        gap.insert(2, "merge", merge)
        out.append(gap)
    return pd.concat(out, ignore_index=True)


class Fig6(Experiment):
    """``fig6``: individual vs merged losses, the λ sweep and stable ranks on Fashion-MNIST."""

    name = "fig6"
    description = "Figure 6: merging ReLU MLPs trained on zero-padded Fashion-MNIST tasks"
    full_cost = "120 nets 1568-1000-100-1 (each on its own 784 columns), n = 1000, 1e5 GD steps"

    def quick(self) -> dict[str, Any]:
        """2×2-pooled images, 32 training images per task, small nets, float32."""
        return {
            "pool": 2, "n_train": 32, "n_test": 500, "widths": [64, 32], "eta": 0.1,
            "lams": [0.0, 1e-3, 1e-2], "init_scales": [1.0], "steps": 6000, "record_every": 300,
            "seeds": 4, "dtype": "float32",
        }  # fmt: skip

    def full(self) -> dict[str, Any]:
        """The paper's sizes: full images, 1000 training images, 1000-100 hidden widths."""
        return {
            **Fig6.quick(self), "pool": 1, "n_train": 1000, "n_test": 1000, "widths": [1000, 100],
            "lams": [0.0, 1e-4, 1e-3, 1e-2], "steps": 100_000, "record_every": 2000, "seeds": 10,
        }  # fmt: skip

    def smoke(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The generic cut with one λ, the largest: three members, as each record's SVDs of
        1000×1568 float64 matrices take seconds on a CPU."""
        out = super().smoke(spec)
        return {**out, "lams": out["lams"][-1:]}

    def run(
        self, spec: dict[str, Any], device: torch.device, show_progress: bool = False
    ) -> list[dict]:
        """Train every member in one batched GD call and return tidy rows."""
        dtype = getattr(torch, spec["dtype"])
        feats, labels = load_features(spec["pool"])
        members = []  # (seed, init_scale, lam, role)
        xs, ys, inits = [], [], []
        tests = {}
        dims = [2 * feats.shape[1], *spec["widths"], 1]
        for seed in range(spec["seeds"]):
            tasks = make_tasks(feats, labels, spec["n_train"], spec["n_test"], seed)
            for role in ROLES:
                tests[(seed, role)] = tasks[role]
            for c in spec["init_scales"]:
                nets = {
                    r: init_mlp(dims, seed=10_000 * seed + 10 * ROLES.index(r), init_scale=c)
                    for r in ROLES
                }
                for lam in spec["lams"]:
                    for role in ROLES:
                        members.append((seed, c, lam, role))
                        xs.append(tasks[role].x_train)
                        ys.append(tasks[role].y_train)
                        inits.append(nets[role])
        to = {"dtype": dtype, "device": device}
        x = torch.stack(xs).to(**to)
        y = torch.stack(ys).to(**to)
        xt = torch.stack([tests[(m[0], m[3])].x_test for m in members]).to(**to)
        yt = torch.stack([tests[(m[0], m[3])].y_test for m in members]).to(**to)
        w0 = [torch.stack([w[k] for w in inits]).to(**to) for k in range(len(dims) - 1)]
        lam_t = torch.tensor([m[2] for m in members], **to)
        i1 = torch.arange(0, len(members), 3, device=device)
        i2, i3 = i1 + 1, i1 + 2
        # each member's inputs are zero off its own task's p columns (task2 the right ones):
        # it trains on those only, and the first-layer columns it never sees only decay
        p = feats.shape[1]
        support = torch.stack([
            torch.arange(p, 2 * p) if m[3] == "task2" else torch.arange(p) for m in members
        ]).to(device)
        inactive = torch.ones(len(members), 1, 2 * p, **to).scatter_(-1, support[:, None], 0.0)
        inactive_norm0 = (w0[0] * inactive).norm(dim=(-2, -1))

        def rows_for(step, idx, net, data, split, metric, values, layer=0):
            return [
                {"step": step, "seed": members[e][0], "init_scale": members[e][1],
                 "lam": members[e][2], "net": net, "data": data, "split": split,
                 "metric": metric, "layer": layer, "value": float(v)}
                for e, v in zip(idx.tolist(), values.reshape(-1).tolist(), strict=True)
            ]  # fmt: skip

        def record(step: int, weights: list[torch.Tensor], loss: torch.Tensor) -> list[dict]:
            rows: list[dict] = []
            merged = [w[i1] + w[i2] for w in weights]
            merged_same = [w[i1] + w[i3] for w in weights]
            with torch.no_grad():
                for split, xx, yy in (("train", x, y), ("test", xt, yt)):
                    l_ind, e_ind = _margin_metrics(weights, xx, yy)
                    for idx, role in ((i1, "task1"), (i2, "task2"), (i3, "same")):
                        rows += rows_for(step, idx, role, role, split, "loss", l_ind[idx])
                        rows += rows_for(step, idx, role, role, split, "error", e_ind[idx])
                    for net, ws, pairs in (
                        ("merged", merged, ((i1, "task1"), (i2, "task2"))),
                        ("merged_same", merged_same, ((i1, "task1"), (i3, "same"))),
                    ):
                        for idx, data in pairs:
                            lm, em = _margin_metrics(ws, xx[idx], yy[idx])
                            rows += rows_for(step, i1, net, data, split, "loss", lm)
                            rows += rows_for(step, i1, net, data, split, "error", em)
                all_idx = torch.arange(len(members), device=device)
                for k, w in enumerate(weights):
                    sr = stable_rank(w.double())
                    for idx, role in ((i1, "task1"), (i2, "task2"), (i3, "same")):
                        rows += rows_for(step, idx, role, "-", "-", "stable_rank", sr[idx], k + 1)
                    for net, ws in (("merged", merged), ("merged_same", merged_same)):
                        sr_m = stable_rank(ws[k].double())
                        rows += rows_for(step, i1, net, "-", "-", "stable_rank", sr_m, k + 1)
                # Off-task first-layer weights only decay: ‖·‖(t)/‖·‖(0) = (1−ηλ)^t exactly.
                ratio = (weights[0] * inactive).norm(dim=(-2, -1)) / inactive_norm0
                rows += rows_for(step, all_idx, "-", "-", "-", "inactive_ratio", ratio, 1)
                # Cross-talk: net 2's first-layer response to task-1 inputs, relative to net 1's.
                for a, b in ((i1, i2), (i2, i1)):
                    own = torch.matmul(x[a], weights[0][a].transpose(-1, -2)).norm(dim=-1)
                    other = torch.matmul(x[a], weights[0][b].transpose(-1, -2)).norm(dim=-1)
                    data = members[int(a[0])][3]
                    leak = (other.mean(-1) / own.mean(-1)).reshape(-1)
                    rows += rows_for(step, i1, "merged", data, "train", "leak", leak, 1)
            return rows

        _, history = gd(w0, x, y, lam_t, spec["eta"], spec["steps"],
                        record_every=spec["record_every"], record=record,
                        show_progress=show_progress, backward=True, support=support)
        return history.rows


class Fig6Init(Fig6):
    """``fig6-init``: Figure 6 at initialisation scale 3, where λ = 0 may no longer merge."""

    name = "fig6-init"
    description = "Figure 6 at a larger initialisation scale: does λ = 0 still merge?"
    full_cost = "36 nets 1568-1000-100-1 at init scale 3, n = 1000, 1e5 GD steps"

    def quick(self) -> dict[str, Any]:
        """Init scale 3, λ ∈ {0, 10⁻²}, two seeds."""
        return {**super().quick(), "init_scales": [3.0], "lams": [0.0, 1e-2], "seeds": 2}

    def full(self) -> dict[str, Any]:
        """Init scale 3, three seeds."""
        return {**super().full(), "init_scales": [3.0], "seeds": 3}


FIG6 = Fig6()
FIG6_INIT = Fig6Init()

# Chapter 11's two variants of quick fig6-init (init scale 3, widths 64 and 32, two seeds,
# λ ∈ {0, 10⁻²}): only the number of training images per task and the step count change.
# They record only the first and last step (recording does not change the training).
INIT_SCALE_RUNS: dict[str, dict[str, int]] = {
    "128 images, 3000 steps": {"n_train": 128, "steps": 3000, "record_every": 3000},
    "64 images, 6000 steps": {"n_train": 64, "steps": 6000, "record_every": 6000},
}


class InitScaleRuns(Experiment):
    """``fig6-init-variants``: the last-step merge gaps of two variants of quick fig6-init."""

    name = "fig6-init-variants"
    description = "Chapter 11: claim (3) of Appendix D.2 at init scale 3 on more images or steps"
    full_cost = "two quick fig6-init variants (about a minute on a CPU)"

    def quick(self) -> dict[str, Any]:
        """The variants of INIT_SCALE_RUNS on the quick fig6-init spec."""
        return {"runs": {k: dict(v) for k, v in INIT_SCALE_RUNS.items()},
                "base": FIG6_INIT.quick()}

    def full(self) -> dict[str, Any]:
        """The same as quick: the variants test the quick runs."""
        return self.quick()

    def run(self, spec, device, show_progress=False) -> list[dict[str, Any]]:
        """One row per variant, merge, seed and task."""
        return init_scale_runs(spec["runs"], spec["base"], device).to_dict("records")


INIT_SCALE_VARIANTS = InitScaleRuns()


def init_scale_runs(
    runs: dict[str, dict[str, Any]] | None = None,
    base: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
):
    """Claim (3) of Appendix D.2 at init scale 3: last-step merge gaps of fig6-init variants.

    ``runs`` and ``base`` default to :meth:`InitScaleRuns.quick`.
    """
    import pandas as pd

    defaults = INIT_SCALE_VARIANTS.quick()
    runs = defaults["runs"] if runs is None else runs
    if not runs:
        raise ValueError("runs must name at least one variant of the fig6-init spec")
    base = defaults["base"] if base is None else base
    frames = []
    for name, overrides in runs.items():
        df = pd.DataFrame(FIG6_INIT.run({**base, **overrides}, torch.device(device), False))
        gaps = merge_gaps(df)
        gaps.insert(0, "run", name)
        frames.append(gaps)
    return pd.concat(frames, ignore_index=True)


def stable_rank_table(last):
    """Stable ranks ‖W‖_F/‖W‖_2 of W_1, W_2 per λ (rows): the mean over the individual nets
    (task1, task2, same) and over each merge; ``last`` holds one step's ``stable_rank`` rows."""
    kinds = {"task1": "individual", "task2": "individual", "same": "individual",
             "merged": "merged", "merged_same": "merged same"}
    sel = last[(last.metric == "stable_rank") & (last.layer < last.layer.max())]
    if sel.empty or sel.step.nunique() != 1:
        raise ValueError("last must hold the stable_rank rows of exactly one step")
    sel = sel.assign(matrix="W_" + sel.layer.astype(int).astype(str), kind=sel.net.map(kinds))
    out = sel.pivot_table(index="lam", columns=["matrix", "kind"], values="value", aggfunc="mean")
    return out.rename_axis(index="λ", columns=[None, None])


def fashion_merging(df, lam: float):
    """Figure 6 (Appendix D.2) in the paper's layout: first row, the individual nets and their
    merge on different tasks (left) and on the same task (right); second row, the λ sweep
    (left) and the stable ranks of W_1, W_2 (right). Legends sit under their panels."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    base = df[df.init_scale == df.init_scale.min()]
    train = base[(base.split == "train") & (base.metric == "loss")]
    at = train[train.lam == lam].copy()
    at["curve"] = at.net + " on " + at.data
    fig = plt.figure(figsize=(7.5, 8.4), layout="constrained")
    axes = np.array([row.subplots(1, 2) for row in fig.subfigures(2, 1)])
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.2), "title": None,
             "frameon": False, "fontsize": 9}
    panels = (
        (axes[0, 0], ["task1", "task2", "merged"], "different tasks"),
        (axes[0, 1], ["task1", "same", "merged_same"], "same task"),
    )
    for ax, nets, title in panels:
        sel = at[at.net.isin(nets)]
        sns.lineplot(data=sel, x="step", y="value", hue="curve", errorbar=("pi", 100), seed=0,
                     ax=ax)
        ax.set(yscale="log", xlabel="GD step", ylabel="training loss",
               title=f"{title}, λ = {lam:g}")
        sns.move_legend(ax, ncol=2, **below)
    last = train[train.step == train.step.max()].copy()
    last["net kind"] = last.net.map(
        {"task1": "individual", "task2": "individual", "same": "individual",
         "merged": "merged, different tasks", "merged_same": "merged, same task"}
    )
    sns.pointplot(data=last, x="lam", y="value", hue="net kind", errorbar=("pi", 100), dodge=0.3,
                  seed=0, ax=axes[1, 0])
    axes[1, 0].set(yscale="log", xlabel="λ", ylabel="final training loss",
                   title="λ sweep (last step)")
    sns.move_legend(axes[1, 0], ncol=1, **below)
    sr = df[(df.metric == "stable_rank") & (df.lam == lam) & (df.layer < df.layer.max())
            & df.net.isin(["task1", "task2", "merged"]) & (df.init_scale == df.init_scale.min())]
    sr = sr.assign(curve=sr.net + ", W_" + sr.layer.astype(str))
    sns.lineplot(data=sr, x="step", y="value", hue="curve", errorbar=("pi", 100), seed=0,
                 ax=axes[1, 1])
    axes[1, 1].set(xlabel="GD step", ylabel="stable rank ‖W‖_F/‖W‖_2",
                   title=f"stable ranks, λ = {lam:g}")
    sns.move_legend(axes[1, 1], ncol=2, **below)
    return fig
