"""Models: activations, MLP forward and backprop, the shallow net of Eq. (3)."""

from __future__ import annotations

import math

import pytest
import torch
from sphere_data import sphere_data

from lowrank.core import layouts, models
from lowrank.core.metrics import loss_and_gradient
from lowrank.core.models import (
    init_mlp,
    shallow_forward,
    shallow_gradient,
    shallow_loss,
    unit_output_vector,
)
from lowrank.data import synthetic
from lowrank.data.synthetic import eps_task_pair

_data = sphere_data


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def _init(m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=torch.float64) / d**0.5


def test_layer_degrees():
    assert models.layer_degrees(3, 2) == [4, 2, 1]
    assert models.layer_degrees(4, 1) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="K and H"):
        models.layer_degrees(0, 1)


def test_activation_degrees_and_homogeneity():
    v = torch.randn(10, dtype=torch.float64)
    for name in models.ACTIVATIONS:
        h = models.activation_degree(name)
        sigma = models.activation_fn(name)
        assert torch.allclose(sigma(3.0 * v), 3.0**h * sigma(v))
    with pytest.raises(ValueError, match="activation must be one of"):
        models.activation_fn("tanh")


def test_forward_ensemble_matches_members():
    ws = models.init_mlp([4, 5, 3, 1], members=3, seed=0)
    x = synthetic.unit_sphere(7, 4, seed=1)
    out = models.forward(ws, x, "relu")
    assert out.shape == (3, 7)
    for e in range(3):
        single = models.forward([w[e] for w in ws], x, "relu")
        assert torch.allclose(out[e], single)


def test_forward_is_positively_homogeneous():
    ws = models.init_mlp([4, 5, 3, 1], seed=0)
    x = synthetic.unit_sphere(7, 4, seed=1)
    for name, H in [("linear", 1), ("relu", 1), ("relu2", 2)]:
        c = 1.7
        scaled = [w.clone() for w in ws]
        scaled[0] = c * scaled[0]  # degree H^{K-1} = H^2 in W_1
        expected = c ** (H**2) * models.forward(ws, x, name)
        assert torch.allclose(models.forward(scaled, x, name), expected)


def test_init_is_seeded():
    a = models.init_mlp([4, 3, 1], seed=7)
    b = models.init_mlp([4, 3, 1], seed=7)
    c = models.init_mlp([4, 3, 1], seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dims": [4]}, "at least two"),
        ({"dims": [4, 3, 2]}, "end in 1"),
        ({"dims": [4, 1], "init_scale": 0.0}, "init_scale"),
        ({"dims": [4, 1], "members": 0}, "members"),
    ],
)
def test_init_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.init_mlp(**kwargs)


def test_forward_refuses_bad_shapes_and_nan():
    ws = models.init_mlp([4, 3, 1], seed=0)
    with pytest.raises(ValueError, match="x must have shape"):
        models.forward(ws, torch.randn(5, 3, dtype=torch.float64))
    bad = [ws[0].clone(), ws[1]]
    bad[0][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"weights\[0\] contains NaN"):
        models.forward(bad, torch.randn(5, 4, dtype=torch.float64))
    chain = r"weights\[1\] expects 2 inputs but weights\[0\] has 3 outputs"
    with pytest.raises(ValueError, match=chain):
        models.forward([ws[0], torch.randn(1, 2, dtype=torch.float64)], torch.randn(5, 4))
    with pytest.raises(ValueError, match="2-D"):
        models.forward([torch.randn(4, dtype=torch.float64)], torch.randn(5, 4))


def test_gradient_of_a_tiny_linear_net_by_hand():
    # f(x) = w2 W1 x with W1 = I, w2 = (1, 1), x = e1, y = 1: f = 1, dL/df = -σ(-1)
    w1 = torch.eye(2, dtype=torch.float64)
    w2 = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1.0], dtype=torch.float64)
    loss, (g1, g2) = models.mlp_loss_and_grads([w1, w2], x, y, "linear")
    s = 1 / (1 + math.e)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-15)
    assert torch.allclose(g2, torch.tensor([[-s, 0.0]], dtype=torch.float64), atol=1e-15)
    assert torch.allclose(g1, torch.tensor([[-s, 0.0], [-s, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("activation", ["relu", "linear", "relu2"])
def test_gradients_match_autograd(activation):
    x, y = _data()
    w = init_mlp([6, 9, 4, 1], members=3, seed=1)
    loss_a, grads_a = loss_and_gradient(w, x, y, activation)
    loss_b, grads_b = models.mlp_loss_and_grads(w, x, y, activation)
    assert torch.allclose(loss_a, loss_b, rtol=0, atol=1e-14)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        assert (ga - gb).abs().max() < 1e-14


def test_flops_per_step_by_hand():
    # dims 3-4-1, n = 2: Σ m_k m_{k-1} = 12 + 4 = 16; 2·2·(3·16 − 12) = 144
    assert models.flops_per_step([3, 4, 1], n=2) == 144.0
    assert models.flops_per_step([3, 4, 1], n=2, members=5) == 720.0
    with pytest.raises(ValueError, match="dims"):
        models.flops_per_step([3], n=2)


def test_forward_by_hand_and_unit_u():
    w = t([[1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    u = t([0.6, 0.8, 0.0])
    # Wx = (1, −2, 3) → (1, 0, 3) → 0.6
    assert shallow_forward(w, u, t([[1.0, 2.0]])).item() == pytest.approx(0.6)
    assert shallow_loss(w, u, t([[1.0, 2.0]]), t([-1.0])).item() == pytest.approx(
        math.log1p(math.exp(0.6))
    )
    u7 = unit_output_vector(7, seed=1)
    assert float(u7.norm()) <= 1.0 and float(u7.norm()) == pytest.approx(1.0)


def test_closed_form_gradient_matches_autograd():
    pair = eps_task_pair(12, 9, 0.1, seed=0)
    w = _init(6, 9, 1).requires_grad_(True)
    u = unit_output_vector(6, seed=2)
    shallow_loss(w, u, pair.first.x, pair.first.y).backward()
    closed = shallow_gradient(w.detach(), u, pair.first.x, pair.first.y)
    assert torch.allclose(closed, w.grad, atol=1e-15, rtol=1e-13)


def test_cpu_backward_in_member_chunks_equals_the_whole_batch(monkeypatch):
    """Cache-sized member groups give the whole ensemble's loss and gradients (float64)."""
    x, y = _data(E=5, n=12, d=6)
    w = init_mlp([6, 8, 4, 1], seed=1, members=5)
    monkeypatch.setattr(models, "CPU_CHUNK_ELEMENTS", 10**12)  # one group: the whole batch
    whole = models.mlp_backward_in_chunks(w, x, y, "relu")
    for group in (2, 1):  # two members a group, then one net at a time (2-D GEMMs)
        monkeypatch.setattr(models, "CPU_CHUNK_ELEMENTS", group * 12 * 8)
        chunked = models.mlp_backward_in_chunks(w, x, y, "relu")
        assert chunked[0].shape == whole[0].shape
        assert torch.allclose(chunked[0], whole[0], rtol=1e-14, atol=0)
        for a, b in zip(chunked[1], whole[1], strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    shared = models.mlp_backward_in_chunks(w, x[0], y[0], "relu")  # one data set for all
    monkeypatch.setattr(models, "CPU_CHUNK_ELEMENTS", 10**12)
    ref = models.mlp_backward_in_chunks(w, x[0], y[0], "relu")
    for a, b in zip(shared[1], ref[1], strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)


def _layout_run(monkeypatch, dtype, cpu: bool, chunk: int):
    from lowrank.core import engine

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 8, generator=g, dtype=dtype)
    y = torch.where(torch.randn(3, 40, generator=g) > 0, 1.0, -1.0).to(dtype)
    w = init_mlp([8, 32, 4, 1], members=3, seed=1, dtype=dtype)
    monkeypatch.setattr(models, "CPU_CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(layouts, "cpu_layouts", lambda device: cpu)
    return engine.gd(w, x, y, 1e-2, 0.5, 25, backward=True)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cpu_layouts_give_the_gpu_paths_bits(dtype, monkeypatch):
    # contiguous Wᵀ and tall gradients as (hᵀg)ᵀ change the speed, not one bit
    cpu = _layout_run(monkeypatch, dtype, True, 1 << 40)
    gpu = _layout_run(monkeypatch, dtype, False, 1 << 40)
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.equal(a, b)


def test_cpu_member_groups_agree_with_one_batch_to_rounding(monkeypatch):
    # 2-D GEMMs per member and one batched GEMM may sum in another order: not the same bits
    one = _layout_run(monkeypatch, torch.float64, True, 1 << 40)
    groups = _layout_run(monkeypatch, torch.float64, True, 40 * 32)
    for a, b in zip(one, groups, strict=True):
        assert (a - b).abs().max() <= 1e-13 * a.abs().max()
