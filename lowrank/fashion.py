"""Figure 6 (Appendix D.2): merging ReLU MLPs trained on two Fashion-MNIST tasks.

Classes 0-4 form the label −1 and classes 5-9 the label +1 (the paper's "class 0"
and "class 1"). Task 1 is the image followed by zeros, task 2 is zeros followed by
the image with its label inverted, so inputs of the two tasks are orthogonal and
keep their length. A third net, "same", learns task 1 from the second pool of
images; adding it to the task-1 net is the paper's same-task merge.

Every member (seeds × init scales × λ × {task1, task2, same}) trains in one batched
call of :func:`lowrank.fast.gd`; the recorder evaluates the individual nets and the
two merges on the training and held-out sets at every record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lowrank import experiments
from lowrank.checks import check_positive
from lowrank.losses import empirical_loss
from lowrank.metrics import stable_rank
from lowrank.nets import forward, init_mlp

ROLES = ("task1", "task2", "same")
FALLBACK_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fashion-mnist"


def data_folder() -> Path:
    """``LOWRANK_DATA`` if set, else ``../shared/data/fashion-mnist`` beside the checkout."""
    env = os.environ.get("LOWRANK_DATA")
    return Path(env) if env else FALLBACK_DATA


def binary_labels(labels: torch.Tensor) -> torch.Tensor:
    """Appendix D.2's grouping: classes 0-4 ↦ −1, classes 5-9 ↦ +1."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or bool((labels < 0).any()) or bool((labels > 9).any()):
        raise ValueError("labels must be a 1-D array of Fashion-MNIST classes 0..9")
    return torch.where(labels >= 5, 1.0, -1.0).to(torch.float64)


def image_features(images: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """Pixels /255, optionally pool×pool average-pooled, flattened and scaled to unit norm."""
    images = torch.as_tensor(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, rows, cols), got {tuple(images.shape)}")
    if int(pool) != pool or pool < 1 or images.shape[1] % pool or images.shape[2] % pool:
        raise ValueError(f"pool must be a positive integer dividing {tuple(images.shape[1:])}")
    x = images.to(torch.float64) / 255.0
    if pool > 1:
        x = torch.nn.functional.avg_pool2d(x.unsqueeze(1), int(pool)).squeeze(1)
    x = x.reshape(x.shape[0], -1)
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("images must not be entirely black (a zero image has no direction)")
    return x / norms


def pad_task(features: torch.Tensor, side: str) -> torch.Tensor:
    """Task 1 is [x, 0] (``side="left"``), task 2 is [0, x] (``"right"``): orthogonal inputs."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    zeros = torch.zeros_like(features)
    return torch.cat([features, zeros] if side == "left" else [zeros, features], dim=1)


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


def load_features(pool: int, folder: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST t10k features (unit norm) and class labels from the data folder."""
    from lowrank.data import load_fashion_mnist

    images, labels = load_fashion_mnist(folder if folder is not None else data_folder(), "t10k")
    return image_features(torch.from_numpy(images), pool), torch.from_numpy(labels.astype("int64"))


def _margin_metrics(weights, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    margins = y * forward(weights, x)
    return empirical_loss(margins), (margins <= 0).to(margins.dtype).mean(-1)


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


class Fig6(experiments.ScaledExperiment):
    """Figure 6: individual vs merged losses, the λ sweep and stable ranks on Fashion-MNIST."""

    def run(self, spec: dict[str, Any], device: torch.device, show_progress: bool) -> list[dict]:
        """Train every member in one batched GD call and return tidy rows."""
        from lowrank import fast

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
        # the first-layer columns each member never sees: left members see [:p], right [p:]
        p = feats.shape[1]
        inactive = torch.zeros(len(members), 1, 2 * p, **to)
        for e, m in enumerate(members):
            if m[3] == "task2":
                inactive[e, 0, :p] = 1
            else:
                inactive[e, 0, p:] = 1
        inactive_norm0 = (w0[0] * inactive).norm(dim=(-2, -1))

        def rows_for(step, idx, net, data, split, metric, values, layer=0):
            return [
                {
                    "step": step,
                    "seed": members[e][0],
                    "init_scale": members[e][1],
                    "lam": members[e][2],
                    "net": net,
                    "data": data,
                    "split": split,
                    "metric": metric,
                    "layer": layer,
                    "value": float(v),
                }
                for e, v in zip(idx.tolist(), values.reshape(-1).tolist(), strict=True)
            ]

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

        _, history = fast.gd(
            w0,
            x,
            y,
            lam_t,
            spec["eta"],
            spec["steps"],
            record_every=spec["record_every"],
            record=record,
            show_progress=show_progress,
        )
        return history.rows


QUICK = {
    "pool": 2,
    "n_train": 32,
    "n_test": 500,
    "widths": [64, 32],
    "eta": 0.1,
    "lams": [0.0, 1e-3, 1e-2],
    "init_scales": [1.0],
    "steps": 6000,
    "record_every": 300,
    "seeds": 4,
    "dtype": "float32",
}
FULL = {
    "pool": 1,
    "n_train": 1000,
    "n_test": 1000,
    "widths": [1000, 100],
    "eta": 0.1,
    "lams": [0.0, 1e-4, 1e-3, 1e-2],
    "init_scales": [1.0],
    "steps": 100_000,
    "record_every": 2000,
    "seeds": 10,
    "dtype": "float32",
}

FIG6 = experiments.register(
    Fig6(
        "fig6",
        "Figure 6: merging ReLU MLPs trained on zero-padded Fashion-MNIST tasks",
        "about 8e16 FLOP: roughly 30-60 min on one H100 (120 members, 1e5 GD steps)",
        QUICK,
        FULL,
    )
)
FIG6_INIT = experiments.register(
    Fig6(
        "fig6-init",
        "Figure 6 at a larger initialisation scale: does λ = 0 still merge?",
        "about 2e16 FLOP: roughly 10-20 min on one H100",
        {**QUICK, "init_scales": [3.0], "lams": [0.0, 1e-2], "seeds": 2},
        {**FULL, "init_scales": [3.0], "seeds": 3},
    )
)

# Chapter 11's two variants of quick fig6-init (init scale 3, widths 64 and 32, two seeds,
# λ ∈ {0, 10⁻²}): only the number of training images per task and the step count change.
# They record only the first and last step (recording does not change the training).
INIT_SCALE_RUNS: dict[str, dict[str, int]] = {
    "128 images, 3000 steps": {"n_train": 128, "steps": 3000, "record_every": 3000},
    "64 images, 6000 steps": {"n_train": 64, "steps": 6000, "record_every": 6000},
}


def init_scale_runs(
    runs: dict[str, dict[str, Any]] | None = None,
    base: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
):
    """Claim (3) of Appendix D.2 at init scale 3: last-step merge gaps of fig6-init variants."""
    import pandas as pd

    runs = INIT_SCALE_RUNS if runs is None else runs
    if not runs:
        raise ValueError("runs must name at least one variant of the fig6-init spec")
    base = FIG6_INIT.spec("quick") if base is None else base
    frames = []
    for name, overrides in runs.items():
        df = pd.DataFrame(FIG6_INIT.run({**base, **overrides}, torch.device(device), False))
        gaps = merge_gaps(df)
        gaps.insert(0, "run", name)
        frames.append(gaps)
    return pd.concat(frames, ignore_index=True)
