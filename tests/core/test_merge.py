"""Merging weight lists: sum, average, task arithmetic and TIES."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.core.merge import (
    merge_average,
    merge_sum,
    merge_task_arithmetic,
    merge_ties,
    task_vectors,
    ties_trim,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def net(a, b):
    """A two-layer net: W_1 of shape (3, 1) holding a, W_2 of shape (1, 3) holding b."""
    return [t(a).view(3, 1), t(b).view(1, 3)]


def test_sum_and_average_by_hand():
    a, b, c = net([1, 2, 3], [0, 1, 0]), net([3, 0, -1], [2, 1, 4]), net([2, 1, 1], [1, 1, 2])
    assert torch.equal(merge_sum(a, b)[0], t([[4], [2], [2]]))
    avg = merge_average(a, b, c)
    assert torch.equal(avg[0], t([[2], [1], [1]]))
    assert torch.equal(avg[1], t([[1, 1, 2]]))
    assert torch.equal(merge_average(a, b)[1], t([[1, 1, 2]]))


def test_task_arithmetic_by_hand():
    base = net([1, 1, 1], [0, 0, 0])
    nets = [net([2, 3, 1], [1, 0, 0]), net([4, -1, 1], [0, 2, 0])]
    # τ_1 = (1, 2, 0 | 1, 0, 0), τ_2 = (3, -2, 0 | 0, 2, 0); base + 0.5 (τ_1 + τ_2)
    merged = merge_task_arithmetic(base, nets, scale=0.5)
    assert torch.equal(merged[0], t([[3], [1], [1]]))
    assert torch.equal(merged[1], t([[0.5, 1, 0]]))
    taus = task_vectors(base, nets)
    assert torch.equal(taus[1][0], t([[3], [-2], [0]]))


def test_task_arithmetic_from_zero_is_the_papers_sum():
    a, b = net([1, 2, 3], [0, 1, 0]), net([3, 0, -1], [2, 1, 4])
    zero = [torch.zeros_like(w) for w in a]
    for s, ta in zip(merge_sum(a, b), merge_task_arithmetic(zero, [a, b]), strict=True):
        assert torch.equal(s, ta)


def test_ties_by_hand():
    base = net([0, 0, 0], [0, 0, 0])
    # τ_1 = (3, -1, 0.5 | -2, 0.1, 0), τ_2 = (-1, 2, 0.2 | -3, 0, 0.4); density 1/3 keeps two
    # of six entries, ranked over the whole net: τ̂_1 = (3, 0, 0 | -2, 0, 0),
    # τ̂_2 = (0, 2, 0 | -3, 0, 0); elected signs (+, +, 0 | -, 0, 0); disjoint means below
    nets = [net([3, -1, 0.5], [-2, 0.1, 0]), net([-1, 2, 0.2], [-3, 0, 0.4])]
    merged = merge_ties(base, nets, density=1 / 3, scale=1.0)
    assert torch.equal(merged[0], t([[3], [2], [0]]))
    assert torch.equal(merged[1], t([[-2.5, 0, 0]]))
    halved = merge_ties(base, nets, density=1 / 3, scale=0.5)
    assert torch.equal(halved[1], t([[-1.25, 0, 0]]))


def test_ties_disagreeing_signs_keep_only_the_elected_side():
    base = net([1, 1, 1], [1, 1, 1])
    nets = [net([2, 1, 1], [1, 1, 1]), net([0.5, 1, 1], [1, 1, 1]), net([1.5, 1, 1], [1, 1, 1])]
    # entry 0: τ = 1, -0.5, 0.5; sum 1 > 0, so the mean of 1 and 0.5 is added
    merged = merge_ties(base, nets, density=1.0)
    assert merged[0][0, 0].item() == pytest.approx(1.75)
    assert torch.equal(merged[1], base[1])


def test_ties_trims_each_ensemble_member_separately():
    tau = t([[1, -5, 2, 0.5], [9, 1, -0.7, 0]])
    assert torch.equal(ties_trim(tau, 0.5), t([[0, -5, 2, 0], [9, 1, 0, 0]]))
    assert torch.equal(ties_trim(tau, 1.0), tau)
    # magnitudes tied at the threshold are all kept, as in the reference implementation
    assert torch.equal(ties_trim(t([1, -1, 0.5, 0]), 0.25), t([1, -1, 0, 0]))


def test_mismatched_shapes_name_the_parameter_and_both_shapes():
    a = net([1, 2, 3], [0, 1, 0])
    b = [t([[1], [2]]), t([[1, 2]])]
    with pytest.raises(ValueError, match=r"W_1: a\[0\] has shape \(3, 1\) but b\[0\] has \(2, 1\)"):
        merge_sum(a, b)
    with pytest.raises(ValueError, match=r"W_1: base\[0\] has shape \(3, 1\) but nets\[1\]\[0\]"):
        merge_task_arithmetic(a, [a, b])
    with pytest.raises(ValueError, match=r"nets\[0\]\[0\] has \(2, 1\)"):
        merge_ties(a, [b])
    with pytest.raises(ValueError, match="has 2 layers"):
        merge_average(a, a, [a[0], a[1], t([[1.0]])])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: merge_ties(a, [a], density=0.0), "density must be in"),
        (lambda a: merge_ties(a, [a], density=1.5), "density must be in"),
        (lambda a: merge_ties(a, [a], scale=math.nan), "scale must be a finite"),
        (lambda a: merge_task_arithmetic(a, [a], scale=math.inf), "scale must be a finite"),
        (lambda a: merge_task_arithmetic(a, []), "nets must be a non-empty"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(net([1, 2, 3], [0, 1, 0]))


def test_ties_trim_refuses_non_finite_task_vectors():
    with pytest.raises(ValueError, match="tau contains NaN"):
        ties_trim(torch.tensor([1.0, float("nan")]), 0.5)
