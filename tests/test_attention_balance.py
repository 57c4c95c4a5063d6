"""lowrank.attention_balance: the per-head balance of softmax attention at a stationary point."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank import attention_balance as ab
from lowrank import spectra


@pytest.fixture(scope="module")
def small():
    x, y = ab.signed_pair_task(n=24, tokens=4, d=6, seed=3)
    return x, y, ab.readout_vector(6), ab.init_block(heads=2, d_head=2, d=6, seed=4)


def test_task_is_in_the_unit_ball_and_labelled():
    x, y = ab.signed_pair_task(n=50, tokens=5, d=8, seed=0)
    assert x.shape == (50, 5, 8) and y.shape == (50,)
    assert float(x.norm(dim=-1).max()) <= 1 + 1e-12
    assert set(y.tolist()) == {-1.0, 1.0}
    assert torch.equal(x[:, 0, 0], torch.ones(50, dtype=torch.float64))  # the query token
    assert torch.equal((x[:, 1:, 1] > 0).sum(1), torch.ones(50, dtype=torch.long))  # one A
    with pytest.raises(ValueError, match="tokens"):
        ab.signed_pair_task(n=5, tokens=2)


def test_hand_written_gradient_matches_autograd(small):
    x, y, u, p = small
    loss_a, grad_a = ab.loss_and_grad(p, x, y, u)
    loss_m, grad_m = ab.block_loss_and_grad(p, x, y, u)
    assert math.isclose(loss_a, loss_m, rel_tol=1e-13)
    for r in ab.ROLES:
        torch.testing.assert_close(grad_m[r], grad_a[r], rtol=1e-10, atol=1e-14)


def test_output_is_invariant_under_both_rescalings(small):
    x, _, u, p = small
    gen = torch.Generator().manual_seed(0)
    a = torch.eye(2, dtype=torch.float64) + 0.3 * torch.randn(2, 2, generator=gen,
                                                               dtype=torch.float64)
    moved = {r: p[r].clone() for r in ab.ROLES}
    moved["Q"][1] = a @ p["Q"][1]
    moved["K"][1] = torch.linalg.inv(a).T @ p["K"][1]
    moved["V"][0] = a @ p["V"][0]
    moved["O"][0] = p["O"][0] @ torch.linalg.inv(a)
    torch.testing.assert_close(ab.block_output(moved, x, u), ab.block_output(p, x, u),
                               rtol=1e-12, atol=1e-13)


def test_stacked_layout_is_spectra_layout(small):
    *_, p = small
    q, k, v, o = ab.stacked(p)
    assert q.shape == (4, 6) and o.shape == (6, 4)
    torch.testing.assert_close(q[2:4], p["Q"][1])
    torch.testing.assert_close(o[:, 2:4], p["O"][1])
    direct = spectra.head_balance(q, k, v, o, 2)
    got = ab.head_balance(p)
    for key, val in direct.items():
        torch.testing.assert_close(got[key], val)


def test_gd_reaches_a_balanced_stationary_point_and_the_check_fails_off_it(small):
    x, y, u, p0 = small
    fit = ab.train_gd(p0, x, y, u, lam=0.01, eta=2.0, max_steps=20_000, tol=1e-10)
    assert fit.residual < 1e-10 and fit.steps < 20_000
    assert all(float(fit.params[r].norm(dim=(1, 2)).min()) > 0.1 for r in ab.ROLES)
    bound = ab.balance_bound(fit.params, fit.residual)
    assert ab.balance_residual(fit.params) <= float(bound.max()) + 1e-12
    assert float(bound.max()) < 1e-6
    # the check fails on an unbalanced block: a rescaled head (same f, same L), the
    # initialisation, and the block trained without weight decay
    bad = ab.rescale_values(fit.params, head=1, c=3.0)
    loss_bad, grad_bad = ab.block_loss_and_grad(bad, x, y, u)
    assert math.isclose(loss_bad, fit.loss, rel_tol=1e-12)
    assert ab.balance_residual(bad) > 0.5
    assert ab.alignment_residual(bad, grad_bad, 0.01) > 0.1
    assert ab.balance_residual(p0) > 0.1
    free = ab.train_gd(p0, x, y, u, lam=0.0, eta=2.0, max_steps=fit.steps)
    assert math.isnan(free.residual) and free.steps == fit.steps
    assert ab.balance_residual(free.params) > 0.1
    # the d x d Grams V_hᵀV_h and O_hO_hᵀ are not the identity that holds
    assert float(ab.head_balance(fit.params)["vo_gram_wrong_orientation"].min()) > 0.1


def test_rescaled_head_residual_is_known_exactly(small):
    *_, p = small
    q, k, v, o = (p[r].clone() for r in ab.ROLES)
    v[0] = o[0].T.clone()  # V_0 = O_0ᵀ: V_0V_0ᵀ = O_0ᵀO_0 exactly
    k[0] = q[0].clone()
    bal = {"Q": q, "K": k, "V": v, "O": o}
    assert float(ab.head_balance(bal)["vo_gram_residual"][0]) < 1e-15
    # V → 2V, O → O/2: V Vᵀ grows by 4, OᵀO shrinks by 4, residual |4 − 1/4|/4
    bad = ab.rescale_values(bal, head=0, c=2.0)
    res = ab.head_balance(bad)["vo_gram_residual"][0]
    assert math.isclose(float(res), (4 - 0.25) / 4, rel_tol=1e-12)


def test_refusals(small):
    x, y, u, p = small
    with pytest.raises(ValueError, match="exactly"):
        ab.stacked({"Q": p["Q"]})
    with pytest.raises(ValueError, match="lam"):
        ab.train_gd(p, x, y, u, lam=-1.0, eta=1.0, max_steps=1)
    with pytest.raises(ValueError, match="θ = 0"):
        zero = {r: torch.zeros_like(p[r]) for r in ab.ROLES}
        ab.alignment_residual(zero, zero, 0.1)
    with pytest.raises(ValueError, match="diverged"):
        ab.train_gd(p, x, y, u, lam=0.0, eta=1e200, max_steps=5)
    bad = {**p, "O": p["O"][:, :-1]}
    with pytest.raises(ValueError, match="O must be"):
        ab.stacked(bad)
