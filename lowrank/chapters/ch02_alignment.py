"""Chapter 2 (Eq. (2)): stationary points and alignment along GD, and their figure.

Eq. (2)'s residual per layer along a GD run (:func:`alignment_rows`), a recorder that also
keeps the last iterates for the window certificates of :mod:`lowrank.theory.certificates`
and :mod:`lowrank.theory.subgradient` (:class:`StationarityRecorder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lowrank.core.checks import check_positive, check_single_net
from lowrank.core.metrics import alignment_cosine, alignment_residual, loss_and_gradient


def alignment_rows(
    step: int,
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    activation: str,
) -> list[dict[str, Any]]:
    """Eq. (2)'s residual ‖λW_k + ∇_{W_k}L‖/‖λW_k‖ and cos(W_k, −∇_{W_k}L) per layer, tidy rows.

    One row per layer (``layer`` = 1..K) and one for the whole θ (``layer`` = "all").
    """
    weights = check_single_net(weights, "weights")
    loss, grads = loss_and_gradient(weights, x, y, activation)
    res = alignment_residual(weights, grads, lam, per_layer=True).tolist()
    cos = alignment_cosine(weights, grads, per_layer=True).tolist()
    rows: list[dict[str, Any]] = [
        {"step": step, "layer": str(k + 1), "loss": loss.item(), "residual": r, "cosine": c}
        for k, (r, c) in enumerate(zip(res, cos, strict=True))
    ]
    rows.append(
        {
            "step": step,
            "layer": "all",
            "loss": loss.item(),
            "residual": alignment_residual(weights, grads, lam).item(),
            "cosine": alignment_cosine(weights, grads).item(),
        }
    )
    return rows


@dataclass
class StationarityRecorder:
    """A ``gd`` recorder (use ``record_every=1``): Eq. (2) rows every ``every`` steps,
    and copies of the distinct consecutive iterates of the last ``window`` steps."""

    x: torch.Tensor
    y: torch.Tensor
    lam: float
    activation: str
    steps: int
    every: int = 100
    window: int = 200
    iterates: list[list[torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_positive(self.lam, "lam")
        check_positive(self.every, "every")
        check_positive(self.window, "window")
        if self.window > self.steps + 1:
            raise ValueError(f"window must be <= steps + 1 = {self.steps + 1}, got {self.window}")

    def __call__(
        self, step: int, weights: list[torch.Tensor], loss: torch.Tensor
    ) -> list[dict[str, Any]]:
        last = self.iterates[-1] if self.iterates else None
        fresh = last is None or any(
            not torch.equal(a, b) for a, b in zip(last, weights, strict=True)
        )
        if step > self.steps - self.window and fresh:
            # gd hands over its live parameters, updated in place: keep copies. It may hand
            # the same iterate twice (after the last step and at the end), kept once.
            self.iterates.append([w.clone() for w in weights])
        if step % self.every == 0 or step == self.steps:
            return alignment_rows(step, weights, self.x, self.y, self.lam, self.activation)
        return []


def alignment_figure(history):
    """Chapter 2: Eq. (2)'s residual and cos(W_k, −∇_{W_k}L) per layer along GD, per activation.

    ``history``: tidy frame (activation, step, layer, residual, cosine).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = history.assign(one_minus_cos=(1 - history["cosine"]).clip(lower=1e-17))
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6))
    sns.lineplot(
        data=frame, x="step", y="residual", hue="activation", style="layer", ax=axes[0]
    )
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$\|\lambda W_k + \nabla_{W_k}L\| \,/\, \|\lambda W_k\|$")
    sns.lineplot(
        data=frame, x="step", y="one_minus_cos", hue="activation", style="layer", ax=axes[1],
        legend=False,
    )
    axes[1].set_yscale("log")
    axes[1].set_ylabel(r"$1 - \cos(W_k, -\nabla_{W_k}L)$")
    for ax in axes:
        ax.tick_params(labelsize=10)
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    # one legend for both panels, below them, off the curves
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False,
               fontsize=10, handlelength=1.8, columnspacing=0.9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
