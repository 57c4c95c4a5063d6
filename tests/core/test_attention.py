"""The attention head and block: hand-written backward, invariances and degrees."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.core import attention
from lowrank.data import synthetic


@pytest.fixture(scope="module")
def small():
    x, y = synthetic.signed_pair_task(n=24, tokens=4, d=6, seed=3)
    return x, y, attention.readout_vector(6), attention.init_block(heads=2, d_head=2, d=6, seed=4)


def test_hand_written_gradient_matches_autograd(small):
    x, y, u, p = small
    loss_a, grad_a = attention.block_loss_and_grad_autograd(p, x, y, u)
    loss_m, grad_m = attention.block_loss_and_grad(p, x, y, u)
    assert math.isclose(loss_a, loss_m, rel_tol=1e-13)
    for r in attention.BLOCK_ROLES:
        torch.testing.assert_close(grad_m[r], grad_a[r], rtol=1e-10, atol=1e-14)


def test_output_is_invariant_under_both_rescalings(small):
    x, _, u, p = small
    gen = torch.Generator().manual_seed(0)
    a = torch.eye(2, dtype=torch.float64) + 0.3 * torch.randn(2, 2, generator=gen,
                                                               dtype=torch.float64)
    moved = {r: p[r].clone() for r in attention.BLOCK_ROLES}
    moved["Q"][1] = a @ p["Q"][1]
    moved["K"][1] = torch.linalg.inv(a).T @ p["K"][1]
    moved["V"][0] = a @ p["V"][0]
    moved["O"][0] = p["O"][0] @ torch.linalg.inv(a)
    torch.testing.assert_close(attention.block_output(moved, x, u), attention.block_output(p, x, u),
                               rtol=1e-12, atol=1e-13)


def test_attention_argmax_is_degree_zero_in_query_and_key():
    x, y, query, marked = synthetic.marked_token_task(32, 3, 5, seed=0)
    assert x.shape == (32, 3, 5) and set(y.tolist()) <= {-1.0, 1.0}
    params = attention.init_attention(2, 5, 4, seed=1)
    out, _ = attention.attention_forward(params, x, query, "argmax")
    scaled = {**params, "W_Q": 3.0 * params["W_Q"], "W_K": 0.5 * params["W_K"]}
    assert torch.allclose(attention.attention_forward(scaled, x, query, "argmax")[0], out)
    doubled = {**params, "W_V": 2.0 * params["W_V"]}
    assert torch.allclose(attention.attention_forward(doubled, x, query, "argmax")[0], 2 * out)
    # softmax is not invariant under scaling W_Q: the degree-0 claim fails for it
    soft, _ = attention.attention_forward(params, x, query, "softmax")
    soft3, _ = attention.attention_forward(scaled, x, query, "softmax")
    assert not torch.allclose(soft, soft3)
    with pytest.raises(ValueError, match="kind"):
        attention.attention_forward(params, x, query, "hardmax")
