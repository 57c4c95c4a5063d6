"""Merging networks given as weight lists: the paper's sum and common alternatives."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lowrank.core.checks import check_finite, check_weights


def check_mergeable(
    a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], names: tuple[str, str] = ("a", "b")
) -> None:
    """Refuse weight lists whose layer count or shapes differ, naming the parameter."""
    check_weights(a, names[0])
    check_weights(b, names[1])
    if len(a) != len(b):
        raise ValueError(f"cannot merge: {names[0]} has {len(a)} layers, {names[1]} has {len(b)}")
    for k, (wa, wb) in enumerate(zip(a, b, strict=True)):
        if wa.shape != wb.shape:
            raise ValueError(
                f"cannot merge parameter W_{k + 1}: {names[0]}[{k}] has shape "
                f"{tuple(wa.shape)} but {names[1]}[{k}] has {tuple(wb.shape)}"
            )


def merge_sum(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The paper's merge θ + θ' (Section 4): add the weight lists layer by layer."""
    check_mergeable(a, b)
    return [wa + wb for wa, wb in zip(a, b, strict=True)]


def _check_all(base: Sequence[torch.Tensor], nets: Sequence[Sequence[torch.Tensor]]) -> None:
    if len(nets) == 0:
        raise ValueError("nets must be a non-empty list of weight lists")
    for i, net in enumerate(nets):
        check_mergeable(base, net, ("base", f"nets[{i}]"))


def merge_average(
    a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], *more: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Weight averaging (Appendix A's contrast to the paper's sum): (θ_1 + ... + θ_k)/k."""
    nets = [a, b, *more]
    _check_all(a, nets[1:])
    return [torch.stack(layer).mean(dim=0) for layer in zip(*nets, strict=True)]


def task_vectors(
    base: Sequence[torch.Tensor], nets: Sequence[Sequence[torch.Tensor]]
) -> list[list[torch.Tensor]]:
    """The task vectors τ_i = θ_i − θ_base of task arithmetic, layer by layer."""
    _check_all(base, nets)
    return [[w - w0 for w, w0 in zip(net, base, strict=True)] for net in nets]


def merge_task_arithmetic(
    base: Sequence[torch.Tensor], nets: Sequence[Sequence[torch.Tensor]], scale: float = 1.0
) -> list[torch.Tensor]:
    """Task arithmetic (Ilharco et al., 2023): θ_base + scale · Σ_i (θ_i − θ_base)."""
    taus = task_vectors(base, nets)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale}")
    summed = [sum(layer) for layer in zip(*taus, strict=True)]
    return [w0 + scale * t for w0, t in zip(base, summed, strict=True)]


def _flat(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    lead = layers[0].shape[:-2]
    return torch.cat([w.reshape(*lead, -1) for w in layers], dim=-1)


def _unflat(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    sizes = [w.shape[-2] * w.shape[-1] for w in like]
    return [p.reshape(w.shape) for p, w in zip(flat.split(sizes, dim=-1), like, strict=True)]


def ties_trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """TIES trim (Yadav et al., 2023): keep the top-density fraction of |τ| along the last axis."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1] (the fraction of entries kept), got {density}")
    check_finite(tau, "tau")
    size = tau.shape[-1]
    keep = max(1, int(density * size))
    # the keep-th largest magnitude; ties at the threshold are all kept, as in the reference code
    threshold = tau.abs().kthvalue(size - keep + 1, dim=-1, keepdim=True).values
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def merge_ties(
    base: Sequence[torch.Tensor],
    nets: Sequence[Sequence[torch.Tensor]],
    density: float = 0.2,
    scale: float = 1.0,
) -> list[torch.Tensor]:
    """TIES merging (Yadav et al., 2023): trim each τ_i, elect a sign, average the agreeing.

    Trimming ranks all entries of one task vector together (per member of an
    ensemble); the elected sign is that of Σ_i τ̂_i; each entry is the mean of
    the trimmed τ̂_i that are non-zero with the elected sign (0 where none is).
    """
    if not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale}")
    taus = task_vectors(base, nets)
    trimmed = torch.stack([ties_trim(_flat(tau), density) for tau in taus])
    elected = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
    count = agree.sum(dim=0).clamp(min=1)
    merged = torch.where(agree, trimmed, torch.zeros_like(trimmed)).sum(dim=0) / count
    return [w0 + scale * t for w0, t in zip(base, _unflat(merged, base), strict=True)]
