"""Where the CPU and a GPU lay out the same products differently, for speed, not results.

On the CPU torch packs transposed operands slower than contiguous ones, so the forward pass
multiplies by a contiguous Wᵀ and a tall weight gradient is formed as (hᵀg)ᵀ: the same bits
(tests/core/test_models.py). cuBLAS takes transposes as flags, so a GPU keeps the views.
:func:`cpu_layouts` is the one switch (``benchmarks/step_kernels.py`` turns it off to count
the operators of a GPU's step on the CPU).
"""

from __future__ import annotations

import torch

from lowrank.core.precision import matmul


def cpu_layouts(device: torch.device) -> bool:
    """Whether the products take the CPU's layouts (contiguous Wᵀ, tall gradients transposed,
    members in cache-sized groups); a GPU keeps views and one batch (cuBLAS transposes by flag)."""
    return device.type == "cpu"


def weight_t(w: torch.Tensor) -> torch.Tensor:
    """Wᵀ of one layer (or of every member's), as the forward pass multiplies by it.

    On the CPU a contiguous copy: torch packs a transposed view of a (1000, 100) weight
    1.3x (one net) to 1.6x (a batch) slower than a contiguous one, for the same bits; cuBLAS
    takes the transpose as a flag, so on a GPU it stays a view (no extra kernel).
    """
    wt = w.transpose(-1, -2)
    return wt.contiguous() if cpu_layouts(wt.device) else wt


def weight_grad(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Σ_i g_i h_iᵀ, the weight gradient gᵀh of one layer (per member), shape (out, in).

    On the CPU a tall result (out > in) is formed as (hᵀg)ᵀ: the same bits, 1.15x faster for
    the paper's (1000, 100) first layer.
    """
    if cpu_layouts(h.device) and g.shape[-1] > h.shape[-1]:
        return matmul(h.transpose(-1, -2), g).transpose(-1, -2)
    return matmul(g.transpose(-1, -2), h)
