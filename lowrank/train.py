"""Gradient descent with weight decay, W ← (1−ηλ)W − η∇L (Section 2), for ensembles.

One autograd call trains every member at once: their losses are independent, so
the gradient of their sum is each member's own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lowrank.checks import check_finite, check_lambda_per_member, check_positive, check_weights
from lowrank.losses import empirical_loss
from lowrank.nets import hidden_preactivations
from lowrank.progress import progress

Recorder = Callable[[int, list[torch.Tensor], torch.Tensor], list[dict[str, Any]]]
LossAndGrads = Callable[
    [list[torch.Tensor], torch.Tensor, torch.Tensor, str],
    tuple[torch.Tensor, Sequence[torch.Tensor]],
]


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss; names the first bad step and member."""

    def __init__(self, step: int, member: int | None, loss: float):
        who = "the network" if member is None else f"member {member}"
        super().__init__(
            f"training diverged: loss of {who} became {loss} at step {step}; "
            "lower the step size eta or the input scale"
        )
        self.step, self.member, self.loss = step, member, loss


@dataclass
class History:
    """Rows recorded during training; ``frame()`` gives a tidy pandas table."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def frame(self):  # -> pandas.DataFrame, imported lazily to keep the core light
        import pandas as pd

        return pd.DataFrame(self.rows)


def record_loss_and_norms(step: int, weights: list[torch.Tensor], loss: torch.Tensor) -> list[dict]:
    """Default recorder: loss and per-layer Frobenius norms of every member."""
    losses = loss.reshape(-1).tolist()
    norms = torch.stack(
        [torch.linalg.matrix_norm(w, ord="fro").reshape(-1) for w in weights], -1
    ).tolist()
    rows = []
    for e, (lv, nv) in enumerate(zip(losses, norms, strict=True)):
        row: dict[str, Any] = {"step": step, "member": e, "loss": lv}
        row.update({f"fro_{k + 1}": v for k, v in enumerate(nv)})
        rows.append(row)
    return rows


def _members(weights: Sequence[torch.Tensor]) -> int | None:
    return weights[0].shape[0] if weights[0].ndim == 3 else None


def _validate(weights, x, y, lam, eta) -> tuple[list[torch.Tensor], torch.Tensor]:
    weights = check_weights(weights)
    check_finite(x, "x")
    check_finite(y, "y")
    check_positive(eta, "eta")
    members = _members(weights)
    if x.ndim not in (2, 3) or x.shape[-1] != weights[0].shape[-1]:
        raise ValueError(
            f"x must have shape (n, {weights[0].shape[-1]}) or (E, n, {weights[0].shape[-1]}), "
            f"got {tuple(x.shape)}"
        )
    if y.shape[-1] != x.shape[-2]:
        raise ValueError(f"y must hold one label per input ({x.shape[-2]}), got {tuple(y.shape)}")
    if weights[-1].shape[-2] != 1:
        raise ValueError(
            f"weights[-1] must have one output row, got shape {tuple(weights[-1].shape)}"
        )
    per_member = "" if members is None else f" or ({members}, n)"
    if x.ndim == 3 and x.shape[0] != members:
        raise ValueError(
            f"x must have shape (n, d){per_member} (one input set per member), "
            f"got {tuple(x.shape)}"
        )
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[0] != members):
        raise ValueError(
            f"y must have shape (n,){per_member} (one label set per member), got {tuple(y.shape)}"
        )
    return weights, check_lambda_per_member(lam, members, weights[0])


class _DivergenceWatch:
    """Remembers, on the device and without a sync, the first non-finite step per member."""

    def __init__(self, shape: torch.Size, device: torch.device, member_dim: bool):
        self.first = torch.full(shape, -1, dtype=torch.long, device=device)
        self.value = torch.zeros(shape, dtype=torch.float64, device=device)
        self.member_dim = member_dim

    def update(self, step: int, loss: torch.Tensor) -> None:
        new = (~torch.isfinite(loss)) & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, step), self.first)
        self.value = torch.where(new, loss.detach().double(), self.value)

    def raise_if_diverged(self) -> None:
        bad = (self.first >= 0).reshape(-1)
        if bool(bad.any()):
            firsts = torch.where(bad, self.first.reshape(-1), self.first.max() + 1)
            member = int(torch.argmin(firsts))
            raise DivergenceError(
                int(firsts[member]),
                member if self.member_dim else None,
                float(self.value.reshape(-1)[member]),
            )


def _unchecked_loss(params, x, y, activation) -> torch.Tensor:
    # inputs were validated once up front; a per-step check would turn a divergence
    # into a "contains NaN" error before the divergence watch could name its step
    return empirical_loss(y * hidden_preactivations(params, x, activation)[1])


def _loss_and_grads(params, x, y, activation) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    loss = _unchecked_loss(params, x, y, activation)
    return loss.detach(), torch.autograd.grad(loss.sum(), params)


def _decay_step(params, grads, lam_t, eta) -> None:
    with torch.no_grad():
        for w, g in zip(params, grads, strict=True):
            w.mul_(1 - eta * lam_t).sub_(eta * g)


def gd(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    eta: float,
    steps: int,
    activation: str = "relu",
    record_every: int | None = None,
    record: Recorder = record_loss_and_norms,
    show_progress: bool = False,
    loss_and_grads: LossAndGrads | None = None,
) -> tuple[list[torch.Tensor], History]:
    """Full-batch GD on L_λ = L + (λ/2)‖θ‖², one λ per member (Section 2's update rule).

    Records ``record(step, weights, loss)`` at step 0, every ``record_every`` steps
    and at the end; the loss recorded at step s is that of the weights at step s.
    Raises :class:`DivergenceError` naming the first step and member whose loss is
    not finite (checked every step on the CPU, at records on a GPU). Gradients come
    from autograd unless ``loss_and_grads(params, x, y, activation)`` is given.
    """
    weights, lam_t = _validate(weights, x, y, lam, eta)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if record_every is not None and (int(record_every) != record_every or record_every < 1):
        raise ValueError(f"record_every must be a positive integer, got {record_every}")
    grad_fn = _loss_and_grads if loss_and_grads is None else loss_and_grads
    params = [w.detach().clone().requires_grad_(loss_and_grads is None) for w in weights]
    history = History()
    watch = _DivergenceWatch(
        weights[0].shape[:-2], weights[0].device, _members(weights) is not None
    )
    on_cpu = weights[0].device.type == "cpu"
    for step in progress(range(steps + 1), steps + 1, "GD", enabled=show_progress):
        if step == steps:
            with torch.no_grad():
                loss, grads = _unchecked_loss(params, x, y, activation), None
        else:
            loss, grads = grad_fn(params, x, y, activation)
        watch.update(step, loss)
        due = record_every is not None and (step % record_every == 0 or step == steps)
        if on_cpu or due or step == steps:
            watch.raise_if_diverged()
        if due:  # weights and loss of the same iterate θ_step, before its update
            history.rows.extend(record(step, [p.detach().clone() for p in params], loss))
        if grads is not None:
            _decay_step(params, grads, lam_t, eta)
    return [p.detach() for p in params], history


def sgd(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    eta: float,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    activation: str = "relu",
    record_every: int | None = None,
    record: Recorder = record_loss_and_norms,
) -> tuple[list[torch.Tensor], History]:
    """Minibatch SGD with weight decay, W ← (1−ηλ)W − η∇L_batch, one λ per member.

    Every epoch visits the n inputs in one seeded random order shared by all
    members; ``record_every`` counts epochs and records the full-batch loss.
    """
    weights, lam_t = _validate(weights, x, y, lam, eta)
    check_positive(epochs, "epochs")
    check_positive(batch_size, "batch_size")
    n = x.shape[-2]
    gen = torch.Generator().manual_seed(seed)
    params = [w.detach().clone().requires_grad_(True) for w in weights]
    history = History()
    watch = _DivergenceWatch(
        weights[0].shape[:-2], weights[0].device, _members(weights) is not None
    )

    def full_loss(epoch: int) -> torch.Tensor:
        # through the watch: the last batch's update can make the returned weights diverge
        with torch.no_grad():
            loss = _unchecked_loss(params, x, y, activation)
        watch.update(epoch, loss)
        watch.raise_if_diverged()
        return loss

    if record_every is not None:
        history.rows.extend(record(0, [p.detach() for p in params], full_loss(0)))
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=gen).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[..., idx, :], y[..., idx]
            loss, grads = _loss_and_grads(params, xb, yb, activation)
            watch.update(epoch, loss)
            _decay_step(params, grads, lam_t, eta)
        watch.raise_if_diverged()
        due = record_every is not None and (epoch % record_every == 0 or epoch == epochs)
        if due or epoch == epochs:
            loss = full_loss(epoch)
            if due:
                history.rows.extend(record(epoch, [p.detach() for p in params], loss))
    return [p.detach() for p in params], history
