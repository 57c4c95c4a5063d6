"""Matmul precision: exact rounding, emulated products forward and backward, the switch."""

from __future__ import annotations

import pytest
import torch

from lowrank import config
from lowrank.core import precision
from lowrank.core.engine import gd
from lowrank.core.models import init_mlp


def test_round_mantissa_bf16_equals_torch_bfloat16():
    t = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 1e3
    t = torch.cat([t, torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-40, 3.4e38])])
    assert torch.equal(precision.round_mantissa(t, 7), t.to(torch.bfloat16).to(torch.float32))


def test_round_mantissa_tf32_keeps_ten_bits_nearest_even():
    one = torch.tensor([1.0])
    ulp = 2.0**-10
    # halfway cases round to the even neighbour; just above halfway rounds up
    assert precision.round_mantissa(one + ulp / 2, 10).item() == 1.0
    assert precision.round_mantissa(one + 1.5 * ulp, 10).item() == 1.0 + 2 * ulp
    assert precision.round_mantissa(one + ulp / 2 + 2.0**-20, 10).item() == 1.0 + ulp
    t = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    r = precision.round_mantissa(t, 10)
    assert ((r - t).abs() <= t.abs() * 2.0**-11).all()  # half an ulp at 10 bits
    assert (r.view(torch.int32) & ((1 << 13) - 1) == 0).all()
    assert torch.isnan(precision.round_mantissa(torch.tensor([float("nan")]), 10)).all()


def test_round_mantissa_refuses_bad_input():
    with pytest.raises(TypeError, match="t must be float32"):
        precision.round_mantissa(torch.ones(2, dtype=torch.float64), 10)
    with pytest.raises(ValueError, match="bits must be"):
        precision.round_mantissa(torch.ones(2), 23)
    with pytest.raises(ValueError, match="precision must be one of"):
        with precision.using("fp16"):
            pass


def test_emulated_matmul_forward_and_backward_are_reduced():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(3, 5, 7, generator=gen, requires_grad=True)
    b = torch.randn(7, 4, generator=gen, requires_grad=True)
    g = torch.randn(3, 5, 4, generator=gen)
    r = lambda t: precision.round_mantissa(t.detach(), 10)  # noqa: E731
    with precision.using("tf32"):
        out = precision.matmul(a, b)
        out.backward(g)
    assert torch.equal(out, r(a) @ r(b))
    assert torch.equal(a.grad, r(g) @ r(b).T)
    assert torch.equal(b.grad, (r(a).transpose(-1, -2) @ r(g)).sum(0))
    assert not torch.equal(out, a.detach() @ b.detach())  # the rounding did something


def test_bf16_rounds_the_product_too_and_fp64_stays_exact():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 6, generator=gen), torch.randn(6, generator=gen)
    with precision.using("bf16"):
        out = precision.matmul(a, b)
        exact = precision.matmul(a.double(), b.double())
    bf = lambda t: t.to(torch.bfloat16).to(torch.float32)  # noqa: E731
    assert out.shape == (4,) and torch.equal(out, bf(bf(a) @ bf(b)))
    assert torch.equal(exact, a.double() @ b.double())


def test_outside_using_and_at_fp32_matmul_is_torch_matmul():
    a, b = torch.randn(5, 3), torch.randn(3, 2)
    assert precision.active() is None
    with precision.using("fp32"):
        assert torch.equal(precision.matmul(a, b), a @ b)
    assert precision.active() is None


def test_training_dtype_follows_the_precision():
    cpu = torch.device("cpu")
    assert precision.training_dtype(cpu) == torch.float64  # the CPU's theory default
    with precision.using("fp64"):
        assert config.default_dtype(cpu) == torch.float64
    for p in ("fp32", "tf32", "bf16"):
        with precision.using(p):
            assert config.default_dtype(cpu) == torch.float32


def test_config_precision(monkeypatch):
    monkeypatch.delenv("LOWRANK_PRECISION", raising=False)
    assert config.precision(device="cpu") == "fp64" and config.precision_is_default()
    monkeypatch.setenv("LOWRANK_PRECISION", "tf32")
    assert config.precision(device="cpu") == "tf32"
    monkeypatch.setenv("LOWRANK_PRECISION", "half")
    with pytest.raises(ValueError, match="LOWRANK_PRECISION"):
        config.precision()


def test_gd_under_tf32_differs_from_fp32_by_rounding_only():
    """A short float32 GD run at emulated TF32 stays near the fp32 run, and is not equal."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(64, 10, generator=gen) / 4
    y = torch.where(x[:, 0] > 0, 1.0, -1.0)
    w0 = init_mlp([10, 32, 16, 1], seed=0, dtype=torch.float32)
    runs = {}
    for p in ("fp32", "tf32", "bf16"):
        for backward in (False, True):
            with precision.using(p):
                runs[p, backward] = gd(w0, x, y, 0.01, 0.5, 50, backward=backward)[0]
    for p, tol in (("tf32", 5e-3), ("bf16", 5e-2)):
        for backward in (False, True):
            diff = max(float((a - b).norm() / b.norm())
                       for a, b in zip(runs[p, backward], runs["fp32", backward], strict=True))
            assert 0 < diff < tol, (p, backward, diff)


def test_unit_roundoff_matches_the_formats():
    assert precision.unit_roundoff("fp64") == torch.finfo(torch.float64).eps / 2
    assert precision.unit_roundoff("fp32") == torch.finfo(torch.float32).eps / 2
    assert precision.unit_roundoff("bf16") == torch.finfo(torch.bfloat16).eps / 2
    one = torch.tensor([1.0 + 1.5 * precision.unit_roundoff("tf32")])
    assert precision.round_mantissa(one, 10).item() == 1.0 + 2 * precision.unit_roundoff("tf32")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.unit_roundoff("fp8")
