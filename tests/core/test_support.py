"""Training on the inputs' support (Figure 6's zero-padded tasks) gives the dense iterates."""

from __future__ import annotations

import pytest
import torch

from lowrank.core import engine
from lowrank.core.models import init_mlp
from lowrank.core.support import check_support, join_first_layer, split_first_layer

P = 7  # columns per task; inputs are 2P wide, zero on the other task's P columns


def _padded(members: int, n: int = 24, seed: int = 0):
    """Per-member inputs on the left or right P columns (alternating), unit norm, ±1 labels."""
    g = torch.Generator().manual_seed(seed)
    support = torch.stack([torch.arange(P) + P * (e % 2) for e in range(members)])
    x = torch.zeros(members, n, 2 * P, dtype=torch.float64)
    for e in range(members):
        x[e][:, support[e]] = torch.randn(n, P, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (members, n), generator=g).double() * 2 - 1
    return x / x.norm(dim=-1, keepdim=True), y, support


@pytest.mark.parametrize("backward", [True, False])
def test_training_on_the_support_gives_the_dense_iterates_bit_for_bit(backward):
    x, y, support = _padded(4)
    w = init_mlp([2 * P, 9, 5, 1], members=4, seed=1)
    lam = torch.tensor([0.0, 1e-3, 1e-2, 1e-1], dtype=torch.float64)
    dense, hd = engine.gd(w, x, y, lam, 0.5, 120, record_every=40, backward=backward)
    sparse, hs = engine.gd(w, x, y, lam, 0.5, 120, record_every=40, backward=backward,
                           support=support)
    for a, b in zip(dense, sparse, strict=True):
        assert torch.equal(a, b)
    assert hd.rows == hs.rows  # the recorder saw whole weights at the same steps


def test_the_off_support_columns_only_decay():
    x, y, support = _padded(2)
    w = init_mlp([2 * P, 6, 1], members=2, seed=2)
    out, _ = engine.gd(w, x, y, 0.1, 0.5, 50, backward=True, support=support)
    for e in range(2):  # member 0 sees the left block, member 1 the right one
        cols = torch.arange(P) + P * (1 - e)
        assert torch.allclose(out[0][e][:, cols], 0.95**50 * w[0][e][:, cols], rtol=1e-12)


def test_a_shared_support_for_shared_inputs_and_a_single_net():
    x, y, _ = _padded(1)
    x, y = x[0], y[0]
    for members in (None, 3):
        w = init_mlp([2 * P, 5, 1], members=members, seed=3)
        dense, _ = engine.gd(w, x, y, 1e-2, 1.0, 30)
        sparse, _ = engine.gd(w, x, y, 1e-2, 1.0, 30, support=list(range(P)))
        for a, b in zip(dense, sparse, strict=True):
            assert torch.equal(a, b)


def test_split_and_join_are_exact_inverses():
    w = init_mlp([2 * P, 4, 1], members=3, seed=4)
    x, _, support = _padded(3)
    on, off = check_support(support, w, x)
    assert off.shape == (3, P)
    parts = split_first_layer(w, on, off)
    assert [tuple(t.shape) for t in parts[:2]] == [(3, 4, P), (3, 4, P)]
    for a, b in zip(join_first_layer(parts, on, off), w, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("support", "match"),
    [
        (torch.arange(P - 1), "x must be zero outside support, but column 6 of input 0"),
        (torch.arange(P) + 0.0, "support must hold integer column indices"),
        (torch.tensor([0, 0, 1]), "support must list distinct columns"),
        (torch.zeros(2, P, dtype=torch.long), r"support must have shape \(b,\) or \(3, b\)"),
        (torch.tensor([2 * P]), r"support must index the 14 input columns \(0..13\)"),
        (torch.zeros(0, dtype=torch.long), "with b >= 1 columns"),
    ],
)
def test_a_support_the_inputs_leave_or_a_malformed_one_is_refused(support, match):
    x, y, _ = _padded(1)
    x, y = x[0], y[0]
    x[:, P:] = 0  # every input on the left block
    w = init_mlp([2 * P, 5, 1], members=3, seed=5)
    with pytest.raises(ValueError, match=match):
        engine.gd(w, x, y, 1e-2, 1.0, 3, support=support)


def test_per_member_support_names_the_member_whose_inputs_leave_it():
    x, y, _ = _padded(2)  # member 1's inputs are on the right block
    w = init_mlp([2 * P, 5, 1], members=2, seed=6)
    with pytest.raises(ValueError, match="column 7 of input 0 of member 1 is not"):
        engine.gd(w, x, y, 1e-2, 1.0, 3, support=torch.arange(P))
