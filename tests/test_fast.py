"""The hand-written backprop trainer agrees with autograd GD (lowrank.train.gd)."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank import fast, train
from lowrank.metrics import loss_and_gradient
from lowrank.nets import init_mlp


def _data(E=3, n=12, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(E, n, d, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.where(torch.randn(E, n, generator=gen) >= 0, 1.0, -1.0).double()
    return x, y


def test_gradient_of_a_tiny_linear_net_by_hand():
    # f(x) = w2 W1 x with W1 = I, w2 = (1, 1), x = e1, y = 1: f = 1, dL/df = -σ(-1)
    w1 = torch.eye(2, dtype=torch.float64)
    w2 = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1.0], dtype=torch.float64)
    loss, (g1, g2) = fast.loss_and_grads([w1, w2], x, y, "linear")
    s = 1 / (1 + math.e)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-15)
    assert torch.allclose(g2, torch.tensor([[-s, 0.0]], dtype=torch.float64), atol=1e-15)
    assert torch.allclose(g1, torch.tensor([[-s, 0.0], [-s, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("activation", ["relu", "linear", "relu2"])
def test_gradients_match_autograd(activation):
    x, y = _data()
    w = init_mlp([6, 9, 4, 1], members=3, seed=1)
    loss_a, grads_a = loss_and_gradient(w, x, y, activation)
    loss_b, grads_b = fast.loss_and_grads(w, x, y, activation)
    assert torch.allclose(loss_a, loss_b, rtol=0, atol=1e-14)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        assert (ga - gb).abs().max() < 1e-14


@pytest.mark.parametrize("activation", ["relu", "linear", "relu2"])
def test_gd_matches_train_gd_to_1e12(activation):
    x, y = _data()
    w = init_mlp([6, 9, 4, 1], members=3, seed=2)
    lam = torch.tensor([0.0, 1e-3, 1e-1], dtype=torch.float64)
    wa, ha = train.gd(w, x, y, lam, 0.5, 60, activation=activation, record_every=20)
    wb, hb = fast.gd(w, x, y, lam, 0.5, 60, activation=activation, record_every=20)
    for a, b in zip(wa, wb, strict=True):
        assert (a - b).abs().max() / a.abs().max() < 1e-12
    assert [r["step"] for r in ha.rows] == [r["step"] for r in hb.rows]
    for ra, rb in zip(ha.rows, hb.rows, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-12)


def test_shared_inputs_and_single_net():
    x, y = _data(E=1)
    w = init_mlp([6, 5, 1], members=2, seed=3)
    wa, _ = train.gd(w, x[0], y[0], 1e-2, 1.0, 10)
    wb, _ = fast.gd(w, x[0], y[0], 1e-2, 1.0, 10)
    assert all((a - b).abs().max() < 1e-13 for a, b in zip(wa, wb, strict=True))
    single = init_mlp([6, 5, 1], seed=3)
    wc, _ = fast.gd(single, x[0], y[0], 1e-2, 1.0, 10)
    wd, _ = train.gd(single, x[0], y[0], 1e-2, 1.0, 10)
    assert all((a - b).abs().max() < 1e-13 for a, b in zip(wc, wd, strict=True))


def test_records_weights_and_loss_of_the_same_step():
    x, y = _data()
    w = init_mlp([6, 5, 1], members=3, seed=4)
    seen = []

    def rec(step, ws, loss):
        seen.append(float((loss - fast.loss_and_grads(ws, x, y)[0]).abs().max()))
        return []

    fast.gd(w, x, y, 1e-2, 1.0, 10, record_every=3, record=rec)
    assert len(seen) == 5 and max(seen) == 0.0


def test_divergence_names_step_and_member():
    x, y = _data()
    x[1] *= 1e3  # only member 1 sees huge inputs and blows up
    w = init_mlp([6, 5, 1], members=3, seed=5)
    with pytest.raises(train.DivergenceError) as info:
        fast.gd(w, x, y, 0.0, 50.0, 200, activation="linear")
    assert info.value.member == 1
    assert "member 1" in str(info.value) and info.value.step > 0


def test_bad_inputs_are_refused():
    x, y = _data()
    w = init_mlp([6, 5, 1], members=3, seed=6)
    with pytest.raises(ValueError, match="activation"):
        fast.gd(w, x, y, 0.0, 1.0, 1, activation="tanh")
    with pytest.raises(ValueError, match="lam"):
        fast.gd(w, x, y, [0.1, 0.2], 1.0, 1)
    with pytest.raises(ValueError, match="eta"):
        fast.gd(w, x, y, 0.0, -1.0, 1)
    with pytest.raises(ValueError, match="x must have shape"):
        fast.gd(w, x[..., :5], y, 0.0, 1.0, 1)
    with pytest.raises(ValueError, match="record_every"):
        fast.gd(w, x, y, 0.0, 1.0, 1, record_every=0)


def test_flops_per_step_by_hand():
    # dims 3-4-1, n = 2: Σ m_k m_{k-1} = 12 + 4 = 16; 2·2·(3·16 − 12) = 144
    assert fast.flops_per_step([3, 4, 1], n=2) == 144.0
    assert fast.flops_per_step([3, 4, 1], n=2, members=5) == 720.0
    with pytest.raises(ValueError, match="dims"):
        fast.flops_per_step([3], n=2)
