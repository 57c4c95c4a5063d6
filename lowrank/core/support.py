"""MLPs whose inputs are zero off a block of coordinates (Figure 6's zero-padded tasks).

``W₁x = W₁[:, S]x_S`` when x vanishes off the support S, so the columns of W₁ off S get no
gradient and only decay. :func:`mlp_on_support` trains [W₁ on S, W₁ off S, W₂, …] on the
inputs' columns S: the same iterates as the dense net, with first-layer products over |S| of
its d columns. :func:`lowrank.core.engine.gd` takes ``support=`` and does the split and join.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowrank.core.checks import check_mlp_data, check_weights, ensemble_size
from lowrank.core.models import Model, Params, activation, mlp_backward_in_chunks, mlp_loss


def _columns(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The columns ``idx`` of the last axis: idx (b,) for every member or (E, b) one row each."""
    if idx.ndim == 1:
        return t[..., idx]
    if t.ndim == 2:  # shared (n, d) inputs, one support per member: (E, n, b)
        return t[:, idx].transpose(0, 1).contiguous()
    return t.gather(-1, idx[:, None, :].expand(t.shape[0], t.shape[1], idx.shape[1]))


def _put_columns(out: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> None:
    if idx.ndim == 1:
        out[..., idx] = values
    else:
        out.scatter_(-1, idx[:, None, :].expand(*values.shape), values)


def check_support(
    support: torch.Tensor | Sequence[int], weights: Sequence[torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The support S of the inputs and its complement, refusing one the inputs leave.

    ``support`` lists b distinct input columns, (b,) for every member or (E, b) one row per
    member; ``x`` must be exactly zero in every other column. Returns (S, S^c) as long tensors
    on the weights' device.
    """
    w0 = weights[0]
    d = w0.shape[-1]
    s = torch.as_tensor(support, device=w0.device)
    members = ensemble_size(weights)
    if s.is_floating_point() or s.is_complex() or s.dtype == torch.bool:
        raise ValueError(f"support must hold integer column indices, got dtype {s.dtype}")
    rows_ok = s.ndim == 1 or (s.ndim == 2 and members is not None and s.shape[0] == members)
    if not rows_ok or s.shape[-1] < 1:
        per_member = "" if members is None else f" or ({members}, b)"
        raise ValueError(
            f"support must have shape (b,){per_member} with b >= 1 columns, got {tuple(s.shape)}"
        )
    s = s.long()
    if s.min() < 0 or s.max() >= d:
        raise ValueError(f"support must index the {d} input columns (0..{d - 1}), "
                         f"got values {int(s.min())}..{int(s.max())}")
    rows = s.reshape(-1, s.shape[-1])
    if (rows.sort(dim=-1).values.diff(dim=-1) == 0).any():
        raise ValueError("support must list distinct columns in each row")
    outside = torch.ones(rows.shape[0], d, dtype=torch.bool, device=s.device)
    outside.scatter_(-1, rows, False)
    complement = torch.arange(d, device=s.device).expand_as(outside)[outside]
    complement = complement.reshape(*s.shape[:-1], d - s.shape[-1])
    check_mlp_data(weights, x)
    leaked = _columns(x, complement.to(x.device)) != 0
    if leaked.any():
        where = leaked.nonzero()[0].tolist()
        row = complement if complement.ndim == 1 else complement[where[0]]
        member = f" of member {where[0]}" if leaked.ndim == 3 else ""
        raise ValueError(
            f"x must be zero outside support, but column {int(row[where[-1]])} of input "
            f"{where[-2]}{member} is not"
        )
    return s, complement


def split_first_layer(
    weights: Sequence[torch.Tensor], support: torch.Tensor, complement: torch.Tensor
) -> Params:
    """[W₁ on S, W₁ off S, W₂, …]: the parameters :func:`mlp_on_support` trains."""
    w0 = weights[0]
    return [_columns(w0, support), _columns(w0, complement), *weights[1:]]


def join_first_layer(params: Sequence[torch.Tensor], support: torch.Tensor,
                     complement: torch.Tensor) -> Params:
    """The weight list [W₁, W₂, …] back from :func:`split_first_layer`'s blocks (no arithmetic)."""
    on, off = params[0], params[1]
    w0 = on.new_empty(*on.shape[:-1], on.shape[-1] + off.shape[-1])
    _put_columns(w0, support, on)
    _put_columns(w0, complement, off)
    return [w0, *params[2:]]


def inputs_on_support(x: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """The inputs' columns S: shared (n, b) for a shared support, else (E, n, b)."""
    return _columns(x, support.to(x.device))


def mlp_on_support(activation_name: str = "relu", backward: bool = False) -> Model:
    """The MLP on inputs x_S, with W₁ split into its columns on S and off S.

    W₁x = W₁[:, S]x_S when x is zero off S, so ∇_{W₁[:, S^c]}L = 0 exactly: that block never
    reaches the loss and the engine only decays it, and each step's first-layer products
    shrink from d to |S| columns (half of them for Figure 6's zero-padded tasks).
    """
    activation(activation_name)

    def net(ps: Params) -> Params:
        return [ps[0], *ps[2:]]

    def loss(ps: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mlp_loss(net(ps), x, y, activation_name)

    def hand(ps: Params, x: torch.Tensor, y: torch.Tensor):
        value, grads = mlp_backward_in_chunks(net(ps), x, y, activation_name)
        return value, [grads[0], None, *grads[1:]]

    def check(ps: Params, x: torch.Tensor, y: torch.Tensor) -> None:
        check_mlp_data(check_weights(net(ps)), x, y)

    return Model(loss, check, ensemble_size, hand if backward else None)
