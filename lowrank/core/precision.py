"""Matmul precision: float64, float32, TF32 or bfloat16 matmul inputs, real or emulated.

Weights, their (1 − ηλ) decay and every elementwise operation stay in the training dtype
(float32 for the reduced precisions: in bfloat16, 1 − 10⁻⁴ rounds to 1); only the inputs of
the models' matrix products are reduced. On a GPU, ``tf32`` switches cuBLAS to TF32 and
``bf16`` multiplies bfloat16 copies with float32 accumulation and a bfloat16 result. On the
CPU both are emulated bit by bit: inputs rounded to nearest-even at 10 (TF32) or 7
(bfloat16) explicit mantissa bits, products accumulated in float32, a bf16 result rounded
too, in the backward pass as well. So a CPU run shows what the GPU's precision does to a
chapter's asserted numbers before any GPU is used.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

PRECISIONS = ("fp64", "fp32", "tf32", "bf16")
MANTISSA_BITS = {"tf32": 10, "bf16": 7}
_ACTIVE: contextvars.ContextVar[tuple[str, bool] | None] = contextvars.ContextVar(
    "lowrank_precision", default=None
)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def round_mantissa(t: torch.Tensor, bits: int) -> torch.Tensor:
    """float32 ``t`` rounded to nearest-even at ``bits`` explicit mantissa bits (TF32: 10)."""
    if t.dtype != torch.float32:
        raise TypeError(f"t must be float32 to round its mantissa, got {t.dtype}")
    if not 0 < bits < 23:
        raise ValueError(f"bits must be in 1..22, got {bits}")
    drop = 23 - bits
    i = t.contiguous().view(torch.int32)
    # round half to even on the kept bits: add 0.5 ulp − 1, plus the kept last bit
    i = (i + ((1 << (drop - 1)) - 1) + ((i >> drop) & 1)) & ~((1 << drop) - 1)
    return torch.where(torch.isnan(t), t, i.view(torch.float32))


def active() -> str | None:
    """The precision set by :func:`using`, None outside it (each dtype's own matmul)."""
    state = _ACTIVE.get()
    return None if state is None else state[0]


def emulated() -> bool:
    """True when the reduced precision in force is emulated (always on the CPU)."""
    state = _ACTIVE.get()
    return state is not None and state[1]


def training_dtype(device: torch.device) -> torch.dtype:
    """The dtype experiments train in: float64 at ``fp64``, float32 at the others; unset,
    float64 on the CPU (theory checks) and float32 on a GPU."""
    prec = active()
    if prec is None:
        return torch.float64 if device.type == "cpu" else torch.float32
    return torch.float64 if prec == "fp64" else torch.float32


@contextlib.contextmanager
def using(precision: str, device: torch.device | str = "cpu",
          emulate: bool | None = None) -> Iterator[None]:
    """Run the block's models at ``precision`` on ``device`` (emulated off CUDA, or if asked)."""
    check_precision(precision)
    dev = torch.device(device)
    emul = (dev.type != "cuda") if emulate is None else bool(emulate)
    token = _ACTIVE.set((precision, emul))
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32" and not emul
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32_before
        _ACTIVE.reset(token)


def _reduce(t: torch.Tensor, precision: str) -> torch.Tensor:
    return round_mantissa(t, MANTISSA_BITS[precision])


def _product(a: torch.Tensor, b: torch.Tensor, precision: str, emul: bool) -> torch.Tensor:
    """One reduced-precision product: reduced inputs, float32 accumulation."""
    if not emul:  # bf16 on a GPU (TF32 never reaches here: cuBLAS does it)
        return torch.matmul(a.to(torch.bfloat16), b.to(torch.bfloat16)).to(torch.float32)
    out = torch.matmul(_reduce(a, precision), _reduce(b, precision))
    return _reduce(out, "bf16") if precision == "bf16" else out


class _ReducedMatmul(torch.autograd.Function):
    """a @ b with reduced inputs in the forward pass and in both backward products."""

    @staticmethod
    def forward(ctx, a, b, precision, emul):  # noqa: D102
        ctx.save_for_backward(a, b)
        ctx.precision, ctx.emul = precision, emul
        return _product(a, b, precision, emul)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        a, b = ctx.saved_tensors
        p, e = ctx.precision, ctx.emul
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = _product(g, b.transpose(-1, -2), p, e).sum_to_size(a.shape)
        if ctx.needs_input_grad[1]:
            gb = _product(a.transpose(-1, -2), g, p, e).sum_to_size(b.shape)
        return ga, gb, None, None


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(a, b)`` at the precision in force (float64 operands stay exact)."""
    state = _ACTIVE.get()
    if state is None or state[0] in ("fp64", "fp32") or a.dtype != torch.float32:
        return torch.matmul(a, b)
    precision, emul = state
    if precision == "tf32" and not emul:
        return torch.matmul(a, b)  # allow_tf32 is on inside `using`
    if a.ndim == 1 or b.ndim == 1:
        a2 = a.unsqueeze(0) if a.ndim == 1 else a
        b2 = b.unsqueeze(-1) if b.ndim == 1 else b
        out = _ReducedMatmul.apply(a2, b2, precision, emul)
        if a.ndim == 1 and b.ndim == 1:
            return out.reshape(())
        out = out.squeeze(-1) if b.ndim == 1 else out
        return out.squeeze(-2) if a.ndim == 1 else out
    return _ReducedMatmul.apply(a, b, precision, emul)


#: unit roundoff u (half an ulp of 1) of each precision's matmul inputs
UNIT_ROUNDOFF = {"fp64": 2.0**-53, "fp32": 2.0**-24, "tf32": 2.0**-11, "bf16": 2.0**-8}


def unit_roundoff(precision: str) -> float:
    """u of ``precision``: the relative error of one rounding (fp64 1.1e-16 … bf16 3.9e-3)."""
    return UNIT_ROUNDOFF[check_precision(precision)]
