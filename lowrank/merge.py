"""Merging networks given as weight lists: the paper's sum and common alternatives."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lowrank.checks import check_weights


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
