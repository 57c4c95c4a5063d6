"""Lemma 3, Corollary 1 and Remark 1 by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.core.engine import gd
from lowrank.core.metrics import loss_and_gradient
from lowrank.core.models import init_mlp
from lowrank.theory import lemma3
from lowrank.theory.identities import lemma2_residual


def test_z_and_exponent_by_hand():
    assert lemma3.lemma3_z(3, 1) == 3
    assert lemma3.lemma3_z(3, 2) == 7  # 4 + 2 + 1 = (2^3 - 1)/(2 - 1)
    assert lemma3.lemma3_z(4, 3) == (3**4 - 1) // 2
    assert lemma3.lemma3_exponent(2, 1) == pytest.approx(0.5)
    assert lemma3.lemma3_exponent(3, 2) == pytest.approx(0.25 + 1 / 14)


def test_lemma3_rhs_by_hand():
    # √0.04 · 0.5^{-1/2} = 0.2 · √2
    assert float(lemma3.lemma3_rhs(0.04, 0.5, 2, 1)) == pytest.approx(0.2 * math.sqrt(2))
    # K = 3, H = 1: exponent 1/4 + 1/6 = 5/12
    assert float(lemma3.lemma3_rhs(0.09, 0.25, 3, 1)) == pytest.approx(0.3 * 0.25 ** (-5 / 12))
    out = lemma3.lemma3_rhs(torch.tensor([0.01, 0.04]), torch.tensor([1.0, 1.0]), 2, 2)
    assert out.tolist() == pytest.approx([0.1, 0.2])


def test_corollary1_and_c_hk_by_hand():
    assert float(lemma3.corollary1_rhs(0.5, 1.5, 2.0)) == pytest.approx(math.sqrt(0.2))
    for K in (2, 3, 7):
        assert lemma3.c_hk(K, 1) == pytest.approx(1.0)  # every weight is 1/K
    assert lemma3.c_hk(2, 2) == pytest.approx(((2**1.5 + 1) / 3) ** 2)
    assert lemma3.c_hk(3, 2) == pytest.approx(((8 + 2**1.5 + 1) / 7) ** 2)


def test_remark1_proxy_by_hand():
    for sign in (-1, 1):
        assert float(lemma3.remark1_proxy(0.0, 0.3, 3, sign)) == pytest.approx(math.log(2))
    # r = 2, K = 2: s = r²/2 = 2; λr²/2 = 0.2
    assert float(lemma3.remark1_proxy(2.0, 0.1, 2, -1)) == pytest.approx(
        0.2 + math.log1p(math.exp(-2))
    )
    assert float(lemma3.remark1_proxy(2.0, 0.1, 2, 1)) == pytest.approx(0.2 + math.log1p(math.e**2))


@pytest.mark.parametrize("K, expected", [(2, 0.5), (3, 0.25392), (4, 0.20147), (5, 0.17172)])
def test_remark1_global_threshold(K, expected):
    lam = lemma3.remark1_global_threshold(K)
    assert lam == pytest.approx(expected, abs=2e-5)
    r = torch.logspace(-3, 2, 20001, dtype=torch.float64)
    gap_above = lemma3.remark1_proxy(r, lam * 1.01, K) - math.log(2)
    gap_below = lemma3.remark1_proxy(r, lam * 0.99, K) - math.log(2)
    assert float(gap_above.min()) > 0  # 0 is the unique global minimiser
    if K > 2:  # below the threshold some r > 0 beats r = 0 (K = 2: only in the limit r → 0)
        assert float(gap_below.min()) < 0


@pytest.mark.parametrize("K", [3, 4])
def test_remark1_critical_threshold_is_where_stationary_points_appear(K):
    lam = lemma3.remark1_critical_threshold(K)
    assert lam >= lemma3.remark1_global_threshold(K)
    r = torch.logspace(-3, 2, 20001, dtype=torch.float64).requires_grad_(True)
    for factor, sign_change in ((1.001, False), (0.99, True)):
        (g,) = torch.autograd.grad(lemma3.remark1_proxy(r, lam * factor, K).sum(), r)
        assert bool((g < 0).any()) == sign_change


def test_two_point_example_by_hand():
    ex = lemma3.lemma3_two_point_example(0.1, 1.0)
    assert ex["loss"] == pytest.approx(-math.log(0.9))
    assert ex["slack"] == pytest.approx(math.sqrt(-math.log(0.9) / 0.1))
    assert ex["w"] == pytest.approx(math.sqrt(math.log(9)))
    # inputs of norm 2 break the lemma: slack = √(−ln(1 − λ/2)/λ) < 1
    bad = lemma3.lemma3_two_point_example(0.1, 2.0)
    assert bad["slack"] == pytest.approx(math.sqrt(-math.log(0.95) / 0.1)) and bad["slack"] < 1


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_two_point_example_is_the_gd_limit(c):
    x = torch.tensor([[c], [-c]], dtype=torch.float64)
    y = torch.tensor([1.0, -1.0], dtype=torch.float64)
    w0 = [torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([[0.7]], dtype=torch.float64)]
    w, _ = gd(w0, x, y, 0.1, eta=0.5, steps=3000, activation="linear")
    ex = lemma3.lemma3_two_point_example(0.1, c)
    assert float(w[0]) == pytest.approx(ex["w"], rel=1e-8)
    assert float(w[1]) == pytest.approx(ex["w"], rel=1e-8)
    loss, _ = loss_and_gradient(w, x, y, "linear")
    slack = float(lemma3.lemma3_slack(w, 0.1, loss, 1))
    assert slack == pytest.approx(ex["slack"], rel=1e-8)
    assert (slack >= 1) == (c <= 1)
    lam = torch.tensor([0.1], dtype=torch.float64)
    assert float(lemma2_residual([t[None] for t in w], x, y, lam, 1, "linear")) < 1e-8


def test_lemma3_fails_away_from_stationarity():
    # The lemma needs stationarity: a random net with a large λ breaks the inequality.
    w = init_mlp([4, 5, 1], members=3, seed=0)
    x = torch.nn.functional.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.float64), dim=1)
    y = torch.sign(x[:, 0])
    loss, _ = loss_and_gradient(w, x, y, "relu")
    assert bool((lemma3.lemma3_slack(w, 4.0, loss, 1) < 1).all())
    assert bool((lemma2_residual(w, x, y, torch.full((3,), 4.0), 1) > 0.1).all())


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="lam"):
        lemma3.lemma3_rhs(0.0, 0.5, 2, 1)
    with pytest.raises(ValueError, match="loss"):
        lemma3.lemma3_rhs(0.1, -1.0, 2, 1)
    with pytest.raises(ValueError, match="K must"):
        lemma3.lemma3_z(1, 1)
    with pytest.raises(ValueError, match="loss0"):
        lemma3.corollary1_rhs(0.1, 0.5, 1.0)
    with pytest.raises(ValueError, match="sq_norm0"):
        lemma3.corollary1_rhs(0.1, 1.5, -1.0)
    with pytest.raises(ValueError, match="sign"):
        lemma3.remark1_proxy(1.0, 0.1, 3, sign=0)
    with pytest.raises(ValueError, match="lam must be < c/2"):
        lemma3.lemma3_two_point_example(0.6, 1.0)
