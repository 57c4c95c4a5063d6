"""Chapter 13's fine-tuning: anchored GD through the engine, and torch's AdamW.

(a) The paper's objective anchored at the pretrained weights, L(θ) + (λ/2)‖θ − θ₀‖²: the
engine trains the task vectors τ = θ − θ₀ (from τ = 0) with its update
τ ← (1 − ηλ)τ − η∇L, so nothing here updates a weight. (b) ``torch.optim.AdamW`` with
decoupled weight decay on θ itself (towards 0, not θ₀), as practitioners fine-tune.
Members (task × λ × optimiser) are one ensemble: the fine-tuned layers' weights carry a
leading dimension E and every member sees its own task's inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lowrank.chapters.ch13_task_arithmetic_bert import LAYER_ROLES, encode, layer_params, mean_pool
from lowrank.core.engine import fit
from lowrank.core.losses import empirical_loss
from lowrank.core.models import Model


@dataclass
class Trainable:
    """Which tensors are fine-tuned: the six role matrices of ``layers`` and a linear head."""

    model: dict
    layers: tuple[int, ...]
    names: list[tuple[int, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [(layer, r) for layer in self.layers for r in LAYER_ROLES]
        self.names += [(-1, "head_w"), (-1, "head_b")]

    def theta0(self) -> list[torch.Tensor]:
        """θ₀ of the fine-tuned tensors: the pretrained role matrices and a zero head."""
        w = self.model["weights"]
        d = w["embeddings.word_embeddings.weight"].shape[1]
        dtype = w["embeddings.word_embeddings.weight"].dtype
        mats = [layer_params(w, layer)[r] for layer, r in self.names[:-2]]
        return [*mats, torch.zeros(1, d, dtype=dtype), torch.zeros(1, 1, dtype=dtype)]

    def logits(self, thetas: Sequence[torch.Tensor], x: torch.Tensor,
               hook: Callable[[int, str, torch.Tensor], None] | None = None) -> torch.Tensor:
        """f_θ on the first fine-tuned layer's inputs ``x`` (E, n, L, d): logits (E, n)."""
        over: dict[int, dict] = {}
        for (layer, role), t in zip(self.names[:-2], thetas[:-2], strict=True):
            over.setdefault(layer, {})[role] = t
        h = encode(None, self.model, range(self.layers[0], self.layers[-1] + 1), x, over, hook)
        w, b = thetas[-2], thetas[-1]  # (E, 1, d), (E, 1, 1)
        return (mean_pool(h) @ w.transpose(-1, -2)).squeeze(-1) + b.reshape(-1, 1)


def task_loss(trainable: Trainable, thetas, x, y) -> torch.Tensor:
    """L(θ) = (1/n) Σ ℓ(y_i f_θ(x_i)) per member, logistic ℓ (Section 2)."""
    return empirical_loss(y * trainable.logits(thetas, x))


class GradientTap:
    """Keeps ∂L/∂(W x_j) of the first fine-tuned layer's Q, K, V (for Lemma 4's ε term)."""

    def __init__(self, layer: int):
        self.layer = layer
        self.grads: dict[str, torch.Tensor] = {}

    def __call__(self, layer: int, name: str, t: torch.Tensor) -> None:
        if layer == self.layer and name in ("Q", "K", "V") and t.requires_grad:
            t.register_hook(lambda g, _n=name: self.grads.__setitem__(_n, g.detach()))


def anchored_gd(
    trainable: Trainable, x: torch.Tensor, y: torch.Tensor, lams: Sequence[float], eta: float,
    steps: int, on_step: Callable[[int, list[torch.Tensor], Sequence], None] | None = None,
    tap: GradientTap | None = None,
) -> list[torch.Tensor]:
    """Objective (a): the engine's GD on τ, τ ← (1 − ηλ)τ − η∇L(θ₀ + τ), from τ = 0.

    Returns the final task vectors τ, each (E, …); ``on_step(step, τ, grads)`` sees every
    step's gradients before its update (the engine's ``stop`` hook, never stopping).
    """
    base = trainable.theta0()
    members = x.shape[0]

    def loss(taus, xx, yy):
        thetas = [b0 + t for b0, t in zip(base, taus, strict=True)]
        return empirical_loss(yy * trainable.logits(thetas, xx, tap))

    def check(taus, xx, yy):
        if xx.shape[0] != members or yy.shape != xx.shape[:2]:
            raise ValueError(f"x must be (E, n, L, d) and y (E, n); got {tuple(xx.shape)}, "
                             f"{tuple(yy.shape)}")

    model = Model(loss=loss, check=check, members=lambda taus: members)
    taus0 = [torch.zeros(members, *b0.shape, dtype=b0.dtype) for b0 in base]

    def stop(step, taus, grads):
        if on_step is not None and step < steps:
            on_step(step, taus, grads)
        return False

    taus, _ = fit(model, taus0, x, y, torch.tensor(lams, dtype=x.dtype), eta, steps, stop=stop)
    return taus


def adamw(
    trainable: Trainable, x: torch.Tensor, y: torch.Tensor, lams: Sequence[float], lr: float,
    steps: int,
) -> list[torch.Tensor]:
    """Objective (b): torch.optim.AdamW, one parameter group per member (its own λ).

    Returns the task vectors θ − θ₀, each (E, …).
    """
    base = trainable.theta0()
    leaves = [[b0.clone().requires_grad_(True) for b0 in base] for _ in lams]
    opt = torch.optim.AdamW(
        [{"params": ps, "weight_decay": float(lam)} for ps, lam in zip(leaves, lams, strict=True)],
        lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        thetas = [torch.stack(col) for col in zip(*leaves, strict=True)]
        task_loss(trainable, thetas, x, y).sum().backward()
        opt.step()
    with torch.no_grad():
        return [torch.stack(col) - b0 for col, b0 in zip(zip(*leaves, strict=True), base,
                                                           strict=True)]
