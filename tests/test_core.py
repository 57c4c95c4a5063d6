"""config, checks, losses, nets and data."""

import math

import pytest
import torch

from lowrank import checks, config, data, losses, nets


def test_scale_default_and_env(monkeypatch):
    monkeypatch.delenv("LOWRANK_SCALE", raising=False)
    assert config.scale() == "quick"
    monkeypatch.setenv("LOWRANK_SCALE", "full")
    assert config.scale() == "full"
    monkeypatch.setenv("LOWRANK_SCALE", "huge")
    with pytest.raises(ValueError, match="LOWRANK_SCALE"):
        config.scale()


def test_device_override(monkeypatch):
    monkeypatch.setenv("LOWRANK_DEVICE", "cpu")
    assert config.default_device() == torch.device("cpu")
    assert config.default_dtype() == torch.float64
    assert config.default_dtype("cuda") == torch.float32
    monkeypatch.setenv("LOWRANK_DEVICE", "gpu-please")
    with pytest.raises(ValueError, match="LOWRANK_DEVICE must name a torch device"):
        config.default_device()


def test_logistic_values_and_stability():
    z = torch.tensor([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=torch.float64)
    val = losses.logistic(z)
    assert torch.isfinite(val).all()
    assert val[2].item() == pytest.approx(math.log(2))
    assert val[0].item() == pytest.approx(1000.0)
    assert val[-1].item() == pytest.approx(0.0, abs=1e-300)
    d = losses.logistic_prime(z)
    assert d[2].item() == pytest.approx(-0.5)
    assert ((d > -1) & (d < 0) | (d == -1) | (d == 0)).all()


def test_logistic_prime_is_the_derivative():
    z = torch.linspace(-8, 8, 33, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(losses.logistic(z).sum(), z)
    assert torch.allclose(g, losses.logistic_prime(z.detach()), atol=1e-14)


def test_empirical_loss_is_mean():
    m = torch.tensor([[0.0, 0.0], [100.0, 100.0]], dtype=torch.float64)
    out = losses.empirical_loss(m)
    assert out.shape == (2,) and out[0].item() == pytest.approx(math.log(2))


def test_layer_degrees():
    assert nets.layer_degrees(3, 2) == [4, 2, 1]
    assert nets.layer_degrees(4, 1) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="K and H"):
        nets.layer_degrees(0, 1)


def test_activation_degrees_and_homogeneity():
    v = torch.randn(10, dtype=torch.float64)
    for name in nets.ACTIVATIONS:
        h = nets.activation_degree(name)
        sigma = nets.activation_fn(name)
        assert torch.allclose(sigma(3.0 * v), 3.0**h * sigma(v))
    with pytest.raises(ValueError, match="activation must be one of"):
        nets.activation_fn("tanh")


def test_forward_ensemble_matches_members():
    ws = nets.init_mlp([4, 5, 3, 1], members=3, seed=0)
    x = data.unit_sphere(7, 4, seed=1)
    out = nets.forward(ws, x, "relu")
    assert out.shape == (3, 7)
    for e in range(3):
        single = nets.forward([w[e] for w in ws], x, "relu")
        assert torch.allclose(out[e], single)


def test_forward_is_positively_homogeneous():
    ws = nets.init_mlp([4, 5, 3, 1], seed=0)
    x = data.unit_sphere(7, 4, seed=1)
    for name, H in [("linear", 1), ("relu", 1), ("relu2", 2)]:
        c = 1.7
        scaled = [w.clone() for w in ws]
        scaled[0] = c * scaled[0]  # degree H^{K-1} = H^2 in W_1
        expected = c ** (H**2) * nets.forward(ws, x, name)
        assert torch.allclose(nets.forward(scaled, x, name), expected)


def test_init_is_seeded():
    a = nets.init_mlp([4, 3, 1], seed=7)
    b = nets.init_mlp([4, 3, 1], seed=7)
    c = nets.init_mlp([4, 3, 1], seed=8)
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
        nets.init_mlp(**kwargs)


def test_forward_refuses_bad_shapes_and_nan():
    ws = nets.init_mlp([4, 3, 1], seed=0)
    with pytest.raises(ValueError, match="x must have shape"):
        nets.forward(ws, torch.randn(5, 3, dtype=torch.float64))
    bad = [ws[0].clone(), ws[1]]
    bad[0][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"weights\[0\] contains NaN"):
        nets.forward(bad, torch.randn(5, 4, dtype=torch.float64))
    chain = r"weights\[1\] expects 2 inputs but weights\[0\] has 3 outputs"
    with pytest.raises(ValueError, match=chain):
        nets.forward([ws[0], torch.randn(1, 2, dtype=torch.float64)], torch.randn(5, 4))
    with pytest.raises(ValueError, match="2-D"):
        nets.forward([torch.randn(4, dtype=torch.float64)], torch.randn(5, 4))


def test_check_lambda_per_member():
    like = torch.zeros(1, dtype=torch.float64)
    assert checks.check_lambda_per_member(0.1, None, like).ndim == 0
    assert checks.check_lambda_per_member([0.1, 0.2], 2, like).shape == (2, 1, 1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        checks.check_lambda_per_member(-0.1, None, like)
    with pytest.raises(ValueError, match="not an ensemble"):
        checks.check_lambda_per_member([0.1, 0.2], None, like)
    with pytest.raises(ValueError, match="NaN"):
        checks.check_lambda_per_member(float("nan"), None, like)


def test_check_positive():
    assert checks.check_positive(0.5, "eta") == 0.5
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eta must be > 0"):
            checks.check_positive(bad, "eta")


def test_unit_sphere_and_labels():
    x = data.unit_sphere(100, 6, seed=3)
    assert torch.allclose(x.norm(dim=1), torch.ones(100, dtype=torch.float64))
    assert torch.equal(x, data.unit_sphere(100, 6, seed=3))
    w = torch.randn(6, dtype=torch.float64)
    y = data.sin_labels(x, w, a=10.0)
    assert set(y.unique().tolist()) <= {-1.0, 1.0}
    expected = torch.where(torch.sin(10.0 * (x @ w)) >= 0, 1.0, -1.0).double()
    assert torch.equal(y, expected)
    with pytest.raises(ValueError, match="w must have shape"):
        data.sin_labels(x, torch.randn(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="n must be > 0"):
        data.unit_sphere(0, 3)


def test_orthogonal_tasks_are_orthogonal_and_seeded():
    t1, t2 = data.orthogonal_tasks(50, 10, seed=4)
    assert (t1.x @ t2.x.T).abs().max().item() < 1e-14
    assert torch.allclose(t1.x.norm(dim=1), torch.ones(50, dtype=torch.float64))
    s1, _ = data.orthogonal_tasks(50, 10, seed=4)
    assert torch.equal(t1.x, s1.x) and torch.equal(t1.y, s1.y)
    with pytest.raises(ValueError, match="d must be >= 2"):
        data.orthogonal_tasks(5, 1)


def test_logistic_is_accurate_far_in_the_tail():
    # ℓ(z) = −z + ln(1 + e^{z}) for very negative z: compare with the log1p form in float64
    z = torch.tensor([-25.0, -35.0, -45.0], dtype=torch.float64)
    exact = -z + torch.log1p(torch.exp(z))
    assert torch.equal(losses.logistic(z), exact)


def test_logistic_gradient_at_zero_margin():
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(losses.logistic(z).sum(), z)
    assert torch.equal(g, torch.full((3,), -0.5, dtype=torch.float64))


def test_sin_task_is_the_same_task_in_every_dtype():
    a = data.sin_task(200, 100, a=10, seed=0, dtype=torch.float32)
    b = data.sin_task(200, 100, a=10, seed=0)
    assert torch.equal(a.y.double(), b.y)
    assert torch.allclose(a.x.double(), b.x, atol=1e-6)


def test_sin_labels_refuse_a_non_finite_frequency():
    x = data.unit_sphere(4, 3, seed=0)
    with pytest.raises(ValueError, match="a .the frequency"):
        data.sin_labels(x, torch.ones(3, dtype=torch.float64), a=float("nan"))
