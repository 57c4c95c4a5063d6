"""eps_task_pair: unit inputs whose cross-task overlap max |<x_i, x'_j>| is at most ε."""

import pytest
import torch

from lowrank.data import eps_task_pair


def _overlaps(pair):
    return (pair.first.x.double() @ pair.second.x.double().T).abs()


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
