"""Input validation shared by every module: clear errors that name the argument.

Each shape check is written once: :func:`check_mlp_data` for a weight list and its data
(one net or an ensemble), :func:`check_task` for one (n, d) task, :func:`check_single_net`
for functions defined on one network only.
"""

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


def ensemble_size(weights: Sequence[torch.Tensor]) -> int | None:
    """E for an ensemble (3-D layers (E, out, in)), None for one network."""
    return weights[0].shape[0] if weights[0].ndim == 3 else None


def check_mlp_data(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor | None = None
) -> None:
    """Refuse inputs (n, d) or (E, n, d) and labels (n,) or (E, n) that do not fit ``weights``.

    The last layer must have one output row (a scalar f_θ); per-member inputs or labels
    must have one set per member of the ensemble.
    """
    check_finite(x, "x")
    check_same_dtype(x, weights[0], "x", "weights[0]")
    if y is not None:
        check_finite(y, "y")
    d = weights[0].shape[-1]
    if x.ndim not in (2, 3) or x.shape[-1] != d:
        raise ValueError(f"x must have shape (n, {d}) or (E, n, {d}), got {tuple(x.shape)}")
    if y is not None and y.shape[-1] != x.shape[-2]:
        raise ValueError(f"y must hold one label per input ({x.shape[-2]}), got {tuple(y.shape)}")
    if weights[-1].shape[-2] != 1:
        raise ValueError(
            f"weights[-1] must have one output row, got shape {tuple(weights[-1].shape)}"
        )
    members = ensemble_size(weights)
    per_member = "" if members is None else f" or ({members}, n)"
    if x.ndim == 3 and x.shape[0] != members:
        raise ValueError(
            f"x must have shape (n, d){per_member} (one input set per member), "
            f"got {tuple(x.shape)}"
        )
    if y is not None and (y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[0] != members)):
        raise ValueError(
            f"y must have shape (n,){per_member} (one label set per member), got {tuple(y.shape)}"
        )


def check_task(x: torch.Tensor, y: torch.Tensor, d: int | None = None) -> None:
    """Refuse one task unless x is a finite (n, d) matrix and y holds one label per row."""
    check_finite(x, "x")
    check_finite(y, "y")
    if x.ndim != 2 or (d is not None and x.shape[1] != d):
        raise ValueError(f"x must have shape (n, {d if d else 'd'}), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must have shape ({x.shape[0]},) (one label per input), got {tuple(y.shape)}"
        )


def check_single_net(
    weights: Sequence[torch.Tensor], name: str = "weights", scalar_output: bool = False
) -> list[torch.Tensor]:
    """Refuse an ensemble where one network (2-D layers) is needed; optionally one output."""
    weights = check_weights(weights, name)
    if weights[0].ndim != 2:
        raise ValueError(f"{name} must be one network (2-D weight matrices), not an ensemble")
    if scalar_output and weights[-1].shape[0] != 1:
        raise ValueError(f"{name}[-1] must have one output row, got {tuple(weights[-1].shape)}")
    return weights


def check_count(value: int, name: str, minimum: int = 0) -> int:
    """Refuse a count that is not an integer >= ``minimum`` (bools and 2.5 included)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        ok = True
    if not ok or value < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_steps(steps: int) -> int:
    """Refuse a step count that is not a non-negative integer."""
    return check_count(steps, "steps", 0)


def check_same_shapes(
    a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], name_a: str, name_b: str
) -> None:
    """Refuse two tensor lists whose lengths or shapes differ (no broadcasting)."""
    if len(a) != len(b):
        raise ValueError(f"{name_b} must hold one tensor per layer ({len(a)}), got {len(b)}")
    for k, (s, t) in enumerate(zip(a, b, strict=True)):
        if s.shape != t.shape:
            raise ValueError(
                f"{name_b}[{k}] must have the shape of {name_a}[{k}], {tuple(s.shape)}, "
                f"got {tuple(t.shape)}"
            )


def check_same_dtype(t: torch.Tensor, like: torch.Tensor, name: str, like_name: str) -> None:
    """Refuse a tensor whose dtype differs from ``like``'s, naming both."""
    if t.dtype != like.dtype:
        raise TypeError(
            f"{name} must have the dtype of {like_name} ({like.dtype}), got {t.dtype}; "
            f"cast it with .to({like.dtype})"
        )


def check_pm1_labels(y: torch.Tensor, name: str = "y") -> torch.Tensor:
    """Refuse labels outside {−1, +1} (the paper's binary labels, Section 2)."""
    check_finite(y, name)
    if not bool(((y == 1) | (y == -1)).all()):
        bad = y[(y != 1) & (y != -1)].flatten()[:3].tolist()
        raise ValueError(f"{name} must hold labels in {{-1, +1}}, got values such as {bad}")
    return y
