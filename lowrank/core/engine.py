"""The one trainer: W ← (1−ηλ)W − η∇L (Section 2), for every model and every ensemble.

:func:`fit` is full-batch gradient descent on L_λ = L + (λ/2)‖θ‖² with one λ per member,
a recorder and a divergence watch; :func:`fit_sgd` is its minibatch version. Both take a
:class:`~lowrank.core.models.Model`, whose gradients come from its hand-written backward or,
when it has none, from autograd. :func:`_step` is the only place in the package where
weights are updated. The other functions are thin wrappers for the models of the chapters.

One call trains every member of an ensemble at once: their losses are independent, so the
gradient of their sum is each member's own gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lowrank.core.checks import (
    check_count,
    check_lambda_per_member,
    check_pm1_labels,
    check_positive,
    check_steps,
    check_weights,
)
from lowrank.core.models import Model, Params, linear_predictor, mlp, shallow_net
from lowrank.core.progress import progress
from lowrank.core.support import (
    check_support,
    inputs_on_support,
    join_first_layer,
    mlp_on_support,
    split_first_layer,
)

Recorder = Callable[[int, list[torch.Tensor], torch.Tensor], list[dict[str, Any]]]
#: ``stop(step, params, grads) -> bool``: end the run after recording this step
Stop = Callable[[int, Params, Sequence[torch.Tensor | None]], bool]


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
    """Rows recorded during training, the number of steps taken and the last loss.

    ``frame()`` gives the rows as a tidy pandas table.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    steps_taken: int = 0
    final_loss: torch.Tensor | None = None

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


class _DivergenceWatch:
    """Remembers, on the device and without a sync, the first non-finite step per member.

    Its shape is the loss's, taken at the first :meth:`update`: () for one network, (E,)
    for an ensemble, whose members it then names. Three elementwise ops per step: the first
    bad step is the running minimum of ``where(finite, ∞, step)``.
    """

    def __init__(self):
        self.first: torch.Tensor | None = None

    def update(self, step: int, loss: torch.Tensor) -> None:
        if self.first is None:
            self.first = torch.full(loss.shape, math.inf, dtype=torch.float64, device=loss.device)
            self.member_dim = loss.ndim > 0
        self.loss = loss
        self.first = torch.minimum(self.first, torch.where(torch.isfinite(loss), math.inf, step))

    def raise_if_diverged(self) -> None:
        if self.first is None:
            return
        firsts = self.first.reshape(-1)
        member = int(torch.argmin(firsts))
        if math.isfinite(float(firsts[member])):  # the one host sync, at records only on a GPU
            raise DivergenceError(
                int(firsts[member]),
                member if self.member_dim else None,
                float(self.loss.reshape(-1)[member]),
            )


def _finite_weights(params: Sequence[torch.Tensor], param_dims: int) -> torch.Tensor:
    """0 per member whose parameters are all finite, NaN otherwise (a loss for the watch).

    Each parameter is ([E,] *param) with ``param_dims`` trailing parameter dimensions.
    """
    ok = None
    for p in params:
        p_ok = torch.isfinite(p).flatten(start_dim=p.ndim - param_dims).all(dim=-1)
        ok = p_ok if ok is None else ok & p_ok
    return torch.where(ok, 0.0, math.nan)


def syncs_are_cheap(device: torch.device) -> bool:
    """True on the CPU, where reading a value every step costs nothing; on a GPU the step
    loop never waits for the device and the divergence watch is read at records only."""
    return device.type == "cpu"


def _decays(lam_t: torch.Tensor, params: Sequence[torch.Tensor], eta: float) -> list:
    """1 − ηλ per parameter; λ of shape () or one per member, broadcast as (E, 1, …, 1)."""
    flat = lam_t if lam_t.ndim == 0 else lam_t.reshape(-1)
    return [
        1 - eta * (flat if flat.ndim == 0 else flat.reshape(-1, *[1] * (p.ndim - 1)))
        for p in params
    ]


def _step(params: Params, grads: Sequence[torch.Tensor | None], decays: list, scale: float) -> None:
    """W ← (1 − ηλ)W − η∇L (Section 2), in place: fl(fl(d·W) − fl(scale·g)).

    Two roundings, never a fused ``sub_(g, alpha=scale)``; a parameter the loss does not
    reach (g None) only decays.
    """
    with torch.no_grad():
        for p, g, d in zip(params, grads, decays, strict=True):
            p.mul_(d)
            if g is not None:
                p.sub_(scale * g)


def _loss_and_grads(model: Model, params: Params, x: torch.Tensor, y: torch.Tensor):
    """Loss per member and gradients: the model's backward, else autograd of the summed loss."""
    if model.backward is not None:
        return model.backward(params, x, y)
    loss = model.loss(params, x, y)
    return loss.detach(), torch.autograd.grad(loss.sum(), params, allow_unused=True)


def _start(model: Model, params: Sequence[torch.Tensor], x, y, lam, eta: float):
    """Checks once, then trainable copies of ``params`` and their decay factors 1 − ηλ."""
    params = list(params)
    model.check(params, x, y)
    check_positive(eta, "eta")
    lam_t = check_lambda_per_member(lam, model.members(params), params[0])
    ps = [p.detach().clone().requires_grad_(model.backward is None) for p in params]
    return ps, _decays(lam_t, ps, eta)


def fit(
    model: Model,
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    eta: float,
    steps: int,
    *,
    record_every: int | None = None,
    record: Recorder = record_loss_and_norms,
    show_progress: bool = False,
    watch: str = "loss",
    stop: Stop | None = None,
) -> tuple[list[torch.Tensor], History]:
    """Full-batch GD on L_λ = L + (λ/2)‖θ‖², one λ per member (Section 2's update rule).

    Records ``record(step, params, loss)`` at step 0, every ``record_every`` steps and at
    the end; the loss recorded at step s is that of the parameters at step s. With
    ``watch="loss"`` raises :class:`DivergenceError` naming the first step and member whose
    loss is not finite (checked every step on the CPU, at records on a GPU); with
    ``watch="weights"`` it names the first step whose parameters are not finite. ``stop``
    ends the run after a step's record, before its update (the last step counts too).
    """
    if watch not in ("loss", "weights"):
        raise ValueError(f"watch must be 'loss' or 'weights', got {watch!r}")
    ps, decays = _start(model, params, x, y, lam, eta)
    steps = check_steps(steps)
    if record_every is not None:
        check_count(record_every, "record_every", 1)
    scale = eta / x.shape[-2] if model.grad_is_sum else eta
    history = History()
    diverged = _DivergenceWatch()
    on_cpu = syncs_are_cheap(ps[0].device)
    step, loss = 0, None
    for step in progress(range(steps + 1), steps + 1, "GD", enabled=show_progress):
        if watch == "weights" and step > 0:
            diverged.update(step, _finite_weights(ps, model.param_dims))
        if step == steps and stop is None:
            with torch.no_grad():
                loss, grads = model.loss(ps, x, y), None
        else:
            loss, grads = _loss_and_grads(model, ps, x, y)
        due = record_every is not None and (step % record_every == 0 or step == steps)
        if watch == "loss":
            diverged.update(step, loss)
        if on_cpu or due or step == steps:
            diverged.raise_if_diverged()
        if due:  # parameters and loss of the same iterate θ_step, before its update
            history.rows.extend(record(step, [p.detach().clone() for p in ps], loss))
        if stop is not None and (stop(step, ps, grads) or step == steps):
            break
        if grads is not None:
            _step(ps, grads, decays, scale)
    history.steps_taken, history.final_loss = step, loss
    return [p.detach() for p in ps], history


def fit_sgd(
    model: Model,
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    eta: float,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    record_every: int | None = None,
    record: Recorder = record_loss_and_norms,
) -> tuple[list[torch.Tensor], History]:
    """Minibatch SGD with weight decay, W ← (1−ηλ)W − η∇L_batch, one λ per member.

    Every epoch visits the n inputs in one seeded random order shared by all members;
    ``record_every`` counts epochs and records the full-batch loss.
    """
    ps, decays = _start(model, params, x, y, lam, eta)
    check_count(epochs, "epochs", 1)
    check_count(batch_size, "batch_size", 1)
    n = x.shape[-2]
    gen = torch.Generator().manual_seed(seed)
    history = History()
    watch = _DivergenceWatch()

    def full_loss(epoch: int) -> torch.Tensor:
        # through the watch: the last batch's update can make the returned weights diverge
        with torch.no_grad():
            loss = model.loss(ps, x, y)
        watch.update(epoch, loss)
        watch.raise_if_diverged()
        return loss

    if record_every is not None:
        history.rows.extend(record(0, [p.detach() for p in ps], full_loss(0)))
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=gen).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[..., idx, :], y[..., idx]
            loss, grads = _loss_and_grads(model, ps, xb, yb)
            watch.update(epoch, loss)
            _step(ps, grads, decays, eta / xb.shape[-2] if model.grad_is_sum else eta)
        watch.raise_if_diverged()
        due = record_every is not None and (epoch % record_every == 0 or epoch == epochs)
        if due or epoch == epochs:
            loss = full_loss(epoch)
            if due:
                history.rows.extend(record(epoch, [p.detach() for p in ps], loss))
        history.steps_taken, history.final_loss = epoch, loss
    return [p.detach() for p in ps], history


# --- the models' trainers: thin wrappers around fit --------------------------------------


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
    backward: bool = False,
    support: torch.Tensor | Sequence[int] | None = None,
) -> tuple[list[torch.Tensor], History]:
    """Full-batch GD of an MLP (Section 2's update); hand-written backprop with ``backward``.

    Inputs ``x`` are (n, d) (shared) or (E, n, d) (one data set per member), labels
    ``y`` (n,) or (E, n); ``lam`` is a scalar or one λ per member. See :func:`fit`.
    ``support`` (b,) or (E, b) names the only input columns where ``x`` may be nonzero: the
    same iterates, but each step multiplies by b of W₁'s d columns and only decays the rest
    (:func:`~lowrank.core.support.mlp_on_support`); ``record`` still sees whole weights.
    """
    check_pm1_labels(y)
    if support is None:
        return fit(mlp(activation, backward), weights, x, y, lam, eta, steps,
                   record_every=record_every, record=record, show_progress=show_progress)
    weights = check_weights(weights)
    on, off = check_support(support, weights, x)

    def record_whole(step: int, ps: list[torch.Tensor], loss: torch.Tensor) -> list[dict]:
        return record(step, join_first_layer(ps, on, off), loss)

    ps, history = fit(mlp_on_support(activation, backward), split_first_layer(weights, on, off),
                      inputs_on_support(x, on), y, lam, eta, steps, record_every=record_every,
                      record=record_whole, show_progress=show_progress)
    return join_first_layer(ps, on, off), history


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
    """Minibatch SGD of an MLP with weight decay, one λ per member. See :func:`fit_sgd`."""
    check_pm1_labels(y)
    return fit_sgd(mlp(activation), weights, x, y, lam, eta, epochs, batch_size, seed,
                   record_every, record)


def trajectory(
    model: Model,
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    eta: float,
    steps: int,
) -> list[torch.Tensor]:
    """Every iterate θ_0..θ_T of :func:`fit`, stacked per parameter; stops on overflow."""
    kept: list[list[torch.Tensor]] = []

    def keep(step: int, ps: list[torch.Tensor], loss: torch.Tensor) -> list[dict[str, Any]]:
        kept.append(ps)
        return []

    fit(model, params, x, y, lam, eta, steps, record_every=1, record=keep, watch="weights")
    return [torch.stack([k[i] for k in kept]) for i in range(len(kept[0]))]


def linear_gd(
    theta0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lam: float, eta: float, steps: int
) -> torch.Tensor:
    """Section 4's GD θ_{s+1} = (1−λη)θ_s − (η/n) Σ_i ℓ'(y_i⟨θ_s, x_i⟩) x_i y_i; all θ_0..θ_T."""
    return trajectory(linear_predictor(), [theta0], x, y, lam, eta, steps)[0]


def shallow_gd(
    w0: torch.Tensor,
    u: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | Sequence[float] | torch.Tensor,
    eta: float,
    steps: int,
) -> torch.Tensor:
    """W_{s+1} = (1−ηλ)W_s − η∇_W L(W_s) (App. C.1), u fixed; all W_0..W_T, one λ per member."""
    return trajectory(shallow_net(u), [w0], x, y, lam, eta, steps)[0]
