"""Chapter 3 (Lemma 1): deep linear nets trained with weight decay become rank one.

The chapter's settings (``LEMMA1``; the paper runs no experiment for Lemma 1, so "full" is
wider, with more data and seeds), its GD runs, the singular-value recorder and the figures.
Lemma 1's formulas themselves are :mod:`lowrank.theory.identities`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lowrank.core.engine import gd
from lowrank.core.models import init_mlp
from lowrank.data.synthetic import sin_task
from lowrank.runner.experiment import Experiment


def small_task() -> dict[str, Any]:
    """The quick-scale task and width of chapters 3 and 4 (Lemmas 1 and 2): ``n`` points on
    the unit sphere of R^``d``, labels sign sin(``a`` wᵀx), hidden layers ``width`` wide."""
    return {"d": 8, "n": 40, "a": 2.0, "width": 20}


def deep_task(spec: dict[str, Any]):
    """The task of a Lemma 1 or Lemma 2 spec (its ``n``, ``d``, ``a``; seed 0)."""
    return sin_task(spec["n"], spec["d"], a=spec["a"], seed=0)


def deep_init(spec: dict[str, Any], K: int, seed: int) -> list[torch.Tensor]:
    """``spec['seeds']`` depth-K nets R^d → R with hidden width ``spec['width']`` (Lemmas 1, 2)."""
    dims = [spec["d"]] + [spec["width"]] * (K - 1) + [1]
    return init_mlp(dims, members=spec["seeds"], seed=seed)


def stacked_rows(frames) -> list[dict[str, Any]]:
    """The rows of several runs' history frames as one tidy table (an Experiment's result)."""
    import pandas as pd

    return pd.concat(frames, ignore_index=True).to_dict("records")


def spectrum_recorder(lam: Sequence[float], top: int = 5) -> Callable[..., list[dict[str, Any]]]:
    """A ``gd`` recorder of the ``top`` singular values of every layer (Lemma 1's figure)."""
    lams = [float(v) for v in lam]

    def record(step: int, weights: list[torch.Tensor], loss: torch.Tensor) -> list[dict]:
        rows = []
        for k, w in enumerate(weights[:-1], start=1):
            s = torch.linalg.svdvals(w if w.ndim == 3 else w.unsqueeze(0))
            for e in range(s.shape[0]):
                for j in range(min(top, s.shape[-1])):
                    rows.append(
                        {
                            "step": step,
                            "member": e,
                            "lam": lams[e],
                            "layer": k,
                            "index": j + 1,
                            "sigma": float(s[e, j]),
                            "ratio": float(s[e, 1] / s[e, 0]),
                        }
                    )
        return rows

    return record


class Lemma1Experiment(Experiment):
    """``lemma1``: GD on deep linear nets of depths K, with λ > 0 and their λ = 0 twins."""

    name = "lemma1"
    description = "Chapter 3: deep linear nets (K = 3, 4, 6) trained by GD become rank one"
    full_cost = "about a minute on a CPU (5 seeds, width 100, 6000 GD steps per depth)"

    def quick(self) -> dict[str, Any]:
        """Small nets that reach the rank-one limit in seconds."""
        return {
            **small_task(),
            "depths": [3, 4, 6],
            "seeds": 2,
            "lam": 0.05,
            "eta": 0.5,
            "steps": 2000,
            "record_every": 50,
        }

    def full(self) -> dict[str, Any]:
        """Wider, with more data, seeds and steps."""
        scaled = {"d": 20, "n": 200, "width": 100, "seeds": 5, "steps": 6000, "record_every": 100}
        return {**self.quick(), **scaled}

    def run(self, spec, device, show_progress=False) -> list[dict[str, Any]]:
        """The recorded singular values of every depth, one table (float64 on the CPU)."""
        return stacked_rows(train_lemma1(K, spec)[3] for K in spec["depths"])


LEMMA1 = Lemma1Experiment()


def train_lemma1(K: int, spec: dict[str, Any]):
    """GD on deep linear nets of depth K, the same inits with λ = spec['lam'] and λ = 0.

    Returns (weights, lams, task, history frame with a ``K`` column); members
    0..seeds−1 have weight decay, the rest are their λ = 0 twins.
    """
    task = deep_task(spec)
    init = [torch.cat([w, w]) for w in deep_init(spec, K, seed=K)]
    lams = [spec["lam"]] * spec["seeds"] + [0.0] * spec["seeds"]
    weights, hist = gd(
        init,
        task.x,
        task.y,
        torch.tensor(lams, dtype=torch.float64),
        spec["eta"],
        spec["steps"],
        activation="linear",
        record_every=spec["record_every"],
        record=spectrum_recorder(lams),
    )
    frame = hist.frame()
    frame["K"] = K
    return weights, lams, task, frame


def lemma1_layer_spectra(df):
    """Top singular values of every layer of the λ > 0 member 0 over GD steps (Lemma 1).

    One panel per (depth, layer), four panels a row, the legend below them.
    """
    import seaborn as sns

    data = df[(df["lam"] > 0) & (df["member"] == 0)].sort_values(["K", "layer"]).copy()
    data["σ index"] = data["index"].map(lambda j: f"σ{j}")
    data["panel"] = [f"K = {K}, W_{k}" for K, k in zip(data["K"], data["layer"], strict=True)]
    g = sns.relplot(
        data=data, x="step", y="sigma", hue="σ index", col="panel", col_wrap=4, kind="line",
        height=1.65, aspect=1.1, facet_kws={"sharey": True},
    )
    g.set(yscale="log")
    g.set_titles("{col_name}", size=10)
    g.set_axis_labels("GD step", "singular value")
    g.tick_params(labelsize=9)
    sns.move_legend(g, "lower center", bbox_to_anchor=(0.5, -0.06), ncol=5, title=None,
                    frameon=False)
    g.figure.suptitle("Singular values of W_k during GD with weight decay", y=1.02, size=11)
    return g


def lemma1_sigma_ratio(df):
    """σ₂/σ₁ of every layer and member over GD steps, with and without weight decay (Lemma 1)."""
    import seaborn as sns

    data = df[df["index"] == 1].copy()
    data["λ"] = data["lam"].map(lambda v: f"λ = {v:g}")
    data["curve"] = data["member"].astype(str) + "-" + data["layer"].astype(str)
    g = sns.relplot(
        data=data, x="step", y="ratio", hue="λ", units="curve", estimator=None, col="K",
        kind="line", height=2.3, aspect=1.05, alpha=0.8,
    )
    g.set(yscale="log")
    g.set_titles("K = {col_name}", size=10)
    g.set_axis_labels("GD step", "σ₂/σ₁ of W_k")
    g.tick_params(labelsize=9)
    sns.move_legend(g, "lower center", bbox_to_anchor=(0.5, -0.1), ncol=2, title=None,
                    frameon=False)
    return g
