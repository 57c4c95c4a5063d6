"""Input validation shared by every module: clear errors that name the argument."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse a tensor holding NaN or infinity, naming the argument."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return t


def check_matrix(t: torch.Tensor, name: str, batched: bool = True) -> torch.Tensor:
    """Refuse anything but a finite matrix (or a batch of them when ``batched``)."""
    check_finite(t, name)
    if t.ndim < 2 or (not batched and t.ndim != 2):
        expected = "a 2-D matrix (or a batch (..., rows, cols))" if batched else "a 2-D matrix"
        raise ValueError(f"{name} must be {expected}, got shape {tuple(t.shape)}")
    return t


def check_positive(value: float, name: str) -> float:
    """Refuse a step size or count that is not strictly positive."""
    if not (float(value) > 0):
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def check_weights(weights: Sequence[torch.Tensor], name: str = "weights") -> list[torch.Tensor]:
    """Refuse a weight list that is empty, non-finite, or whose layers do not chain."""
    if len(weights) == 0:
        raise ValueError(f"{name} must be a non-empty list of weight tensors")
    out = []
    for k, w in enumerate(weights):
        check_matrix(w, f"{name}[{k}]")
        out.append(w)
    lead = out[0].shape[:-2]
    for k in range(1, len(out)):
        if out[k].shape[:-2] != lead:
            raise ValueError(
                f"{name}[{k}] has ensemble shape {tuple(out[k].shape[:-2])}, "
                f"but {name}[0] has {tuple(lead)}"
            )
        if out[k].shape[-1] != out[k - 1].shape[-2]:
            raise ValueError(
                f"{name}[{k}] expects {out[k].shape[-1]} inputs but {name}[{k - 1}] "
                f"has {out[k - 1].shape[-2]} outputs (shapes {tuple(out[k - 1].shape)} "
                f"and {tuple(out[k].shape)})"
            )
    return out


def check_lambda_per_member(
    lam: float | Sequence[float] | torch.Tensor,
    members: int | None,
    like: torch.Tensor,
    name: str = "lam",
) -> torch.Tensor:
    """Weight-decay strength as a tensor broadcastable over (E, out, in); λ ≥ 0."""
    t = torch.as_tensor(lam, dtype=like.dtype, device=like.device)
    check_finite(t, name)
    if bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0 (weight decay), got {t.tolist()}")
    if t.ndim == 0:
        return t
    if t.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D tensor with one λ per member")
    if members is None:
        raise ValueError(f"{name} has {t.numel()} entries but the network is not an ensemble")
    if t.numel() != members:
        raise ValueError(f"{name} has {t.numel()} entries, expected one per member ({members})")
    return t.view(-1, 1, 1)
