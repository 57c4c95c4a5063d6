"""Synthetic tasks: spheres, sin labels, orthogonal, ε-overlap, rotated and sequence tasks."""

from __future__ import annotations

import pytest
import torch

from lowrank.data import synthetic
from lowrank.data.synthetic import eps_task_pair, orthogonal_tasks


def _overlaps(pair):
    return (pair.first.x.double() @ pair.second.x.double().T).abs()


def test_task_is_in_the_unit_ball_and_labelled():
    x, y = synthetic.signed_pair_task(n=50, tokens=5, d=8, seed=0)
    assert x.shape == (50, 5, 8) and y.shape == (50,)
    assert float(x.norm(dim=-1).max()) <= 1 + 1e-12
    assert set(y.tolist()) == {-1.0, 1.0}
    assert torch.equal(x[:, 0, 0], torch.ones(50, dtype=torch.float64))  # the query token
    assert torch.equal((x[:, 1:, 1] > 0).sum(1), torch.ones(50, dtype=torch.long))  # one A
    with pytest.raises(ValueError, match="tokens"):
        synthetic.signed_pair_task(n=5, tokens=2)


@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0])
def test_rotated_pair_overlap_is_bounded_and_same_at_one(eps):
    pair = synthetic.rotated_task_pair(40, 10, eps, seed=2)
    over = (pair.first.x @ pair.second.x.T).abs()
    assert float(over.max()) <= eps + 1e-12
    assert torch.allclose(pair.first.x.norm(dim=1), torch.ones(40, dtype=torch.float64))
    if eps == 1.0:  # one subspace: projecting task 2 onto task 1's span loses nothing
        q, _ = torch.linalg.qr(pair.first.x.T)
        resid = pair.second.x.T - q @ (q.T @ pair.second.x.T)
        assert float(resid.abs().max()) < 1e-12
    with pytest.raises(ValueError, match="eps"):
        synthetic.rotated_task_pair(10, 10, 1.5)


def test_subspace_tasks_are_mutually_orthogonal():
    tasks = synthetic.subspace_tasks(20, 3, 4, seed=1)
    assert len(tasks) == 4 and tasks[0].x.shape == (20, 12)
    for i in range(4):
        for j in range(i + 1, 4):
            assert float((tasks[i].x @ tasks[j].x.T).abs().max()) < 1e-12
    with pytest.raises(ValueError, match="k"):
        synthetic.subspace_tasks(20, 3, 0)


def test_unit_sphere_and_labels():
    x = synthetic.unit_sphere(100, 6, seed=3)
    assert torch.allclose(x.norm(dim=1), torch.ones(100, dtype=torch.float64))
    assert torch.equal(x, synthetic.unit_sphere(100, 6, seed=3))
    w = torch.randn(6, dtype=torch.float64)
    y = synthetic.sin_labels(x, w, a=10.0)
    assert set(y.unique().tolist()) <= {-1.0, 1.0}
    expected = torch.where(torch.sin(10.0 * (x @ w)) >= 0, 1.0, -1.0).double()
    assert torch.equal(y, expected)
    with pytest.raises(ValueError, match="w must have shape"):
        synthetic.sin_labels(x, torch.randn(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="n must be > 0"):
        synthetic.unit_sphere(0, 3)


def test_orthogonal_tasks_are_orthogonal_and_seeded():
    t1, t2 = synthetic.orthogonal_tasks(50, 10, seed=4)
    assert (t1.x @ t2.x.T).abs().max().item() < 1e-14
    assert torch.allclose(t1.x.norm(dim=1), torch.ones(50, dtype=torch.float64))
    s1, _ = synthetic.orthogonal_tasks(50, 10, seed=4)
    assert torch.equal(t1.x, s1.x) and torch.equal(t1.y, s1.y)
    with pytest.raises(ValueError, match="d must be >= 2"):
        synthetic.orthogonal_tasks(5, 1)


def test_sin_task_is_the_same_task_in_every_dtype():
    a = synthetic.sin_task(200, 100, a=10, seed=0, dtype=torch.float32)
    b = synthetic.sin_task(200, 100, a=10, seed=0)
    assert torch.equal(a.y.double(), b.y)
    assert torch.allclose(a.x.double(), b.x, atol=1e-6)


def test_sin_labels_refuse_a_non_finite_frequency():
    x = synthetic.unit_sphere(4, 3, seed=0)
    with pytest.raises(ValueError, match="a .the frequency"):
        synthetic.sin_labels(x, torch.ones(3, dtype=torch.float64), a=float("nan"))


@pytest.mark.parametrize("overlap", ["uniform", "extreme", "label"])
@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.05, 1 / 3, 0.7, 1.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_overlap_never_exceeds_eps(overlap, eps, dtype):
    pair = eps_task_pair(30, 9, eps, overlap=overlap, seed=4, dtype=dtype)
    over = _overlaps(pair)
    assert float(over.max()) <= eps
    assert pair.max_overlap == float(over.max())
    assert pair.eps == eps
    assert pair.first.x.dtype == dtype
    unit = 1e-15 if dtype == torch.float64 else 1e-6
    for task in (pair.first, pair.second):
        assert torch.allclose(task.x.double().norm(dim=1), torch.ones(30, dtype=torch.float64),
                              atol=unit)
        assert set(task.y.unique().tolist()) <= {-1.0, 1.0}


def test_eps_zero_is_exactly_orthogonal_subspaces():
    pair = eps_task_pair(20, 7, 0.0, overlap="extreme", seed=1)
    assert torch.equal(_overlaps(pair), torch.zeros(20, 20, dtype=torch.float64))
    # the blocks are disjoint coordinates: 0..2 for the first task, 3..5 for the second
    assert torch.equal(pair.first.x[:, 3:], torch.zeros(20, 4, dtype=torch.float64))
    assert torch.equal(pair.second.x[:, :3], torch.zeros(20, 3, dtype=torch.float64))


@pytest.mark.parametrize("overlap", ["extreme", "label"])
def test_extreme_modes_reach_eps_for_every_pair(overlap):
    pair = eps_task_pair(15, 11, 0.1, overlap=overlap, seed=2)
    assert torch.allclose(_overlaps(pair), torch.full((15, 15), 0.1, dtype=torch.float64),
                          rtol=1e-14, atol=0)


def test_label_mode_aligns_the_shared_coordinate_with_the_label():
    pair = eps_task_pair(25, 11, 0.09, overlap="label", seed=3)
    inner = pair.first.x @ pair.second.x.T
    # <x_i, x'_j> = ε y_i y'_j: the overlap is coherent with both tasks' labels
    expected = 0.09 * pair.first.y.unsqueeze(1) * pair.second.y.unsqueeze(0)
    assert torch.allclose(inner, expected, rtol=1e-14, atol=0)


def test_uniform_mode_spreads_overlaps_below_eps():
    over = _overlaps(eps_task_pair(40, 11, 0.2, overlap="uniform", seed=5))
    assert float(over.max()) > 0.15 and float(over.min()) < 0.01


def test_seeded_and_same_inputs_across_eps():
    a = eps_task_pair(10, 9, 0.1, seed=7)
    b = eps_task_pair(10, 9, 0.1, seed=7)
    assert torch.equal(a.first.x, b.first.x) and torch.equal(a.second.y, b.second.y)
    c = eps_task_pair(10, 9, 0.0, seed=7, overlap="label")
    # only the shared coordinate changes with ε and the mode: labels are those of the blocks
    assert torch.equal(a.first.y, c.first.y)
    assert not torch.equal(a.first.x, eps_task_pair(10, 9, 0.1, seed=8).first.x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps must be in"),
        ({"eps": 1.5}, "eps must be in"),
        ({"d": 2}, "d must be >= 3"),
        ({"overlap": "max"}, "overlap must be one of"),
        ({"n": 0}, "n must be > 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"n": 5, "d": 7, "eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        eps_task_pair(**args)


def test_different_tasks_are_orthogonal_and_same_tasks_are_not():
    diff = synthetic.synthetic_draw("different", 30, 10, 8, 1.0, seed=3)
    same = synthetic.synthetic_draw("same", 30, 10, 8, 1.0, seed=3)
    assert (diff.train[0].x @ diff.train[1].x.T).abs().max() < 1e-14
    assert (diff.train[0].x @ diff.test[1].x.T).abs().max() < 1e-14
    assert (same.train[0].x @ same.train[1].x.T).abs().max() > 0.5
    for task in (*diff.train, *diff.test, *same.train):
        assert torch.allclose(task.x.norm(dim=1), torch.ones(len(task.x), dtype=torch.float64))
        assert set(task.y.tolist()) <= {-1.0, 1.0}
    assert diff.train[0].x.shape == (30, 8) and diff.test[0].x.shape == (10, 8)


def test_same_task_inputs_lie_in_the_first_subspace():
    # the span of orthogonal_tasks' task-1 inputs is Σ_1's range (d/2 = 4 dimensions)
    span = orthogonal_tasks(50, 8, seed=4)[0].x
    q, _ = torch.linalg.qr(span.T)
    q = q[:, :4]
    for task in synthetic.same_distribution_tasks(20, 8, seed=4):
        resid = task.x - (task.x @ q) @ q.T
        assert resid.abs().max() < 1e-12
